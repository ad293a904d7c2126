"""Alternate slots (blue/green): each release goes to the idle slot, which is the canary.

How this works. Two slots (say ``blue`` and ``green``) each hold a full set of servers.
One is live (it has the stable traffic); the other is idle, and the next release is
deployed there. `SlotRouter` is given one router per slot, each sending its "stable"
share to that slot and its "canary" share to the other: for a load balancer, the same
include file or backend with the two server groups in swapped roles
(`SlotRouter.swapping` builds the second from the first).

It reads which slot is live from the router (the split in force): the orientation that
reads all traffic on stable names the live slot. It then presents the idle slot as the
canary, so a rollout judges and moves traffic to it as to any canary. After promotion
all traffic is on the idle slot; the roles swap: `swap` re-renders the router in the
other orientation with all traffic on stable, which moves no traffic (the same servers
get it), and the next release sees the new live slot as stable and the old one idle. A
`SlotRouter` made afresh (a new ``canarykit run``) that finds all traffic on the idle
slot makes the same swap before it reports anything, so a promoted release that was
never swapped is still read as "at stable".

What it cannot tell: with a router that records no roles (HAProxy's weights say which
servers get traffic, not which group is "stable"), a split between the slots, met by a
fresh `SlotRouter`, could be either orientation's; it raises `RouterError` rather than
guess. nginx's include file records the roles, so there it is always known.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .._errors import ConfigError, RouterError
from .._protocols import RouterCapabilities, TrafficRouter
from .._safe import check_name
from .._split import FULL_CANARY, STABLE_ONLY, TrafficSplit

__all__ = ["SlotRouter"]


def _percent(split: TrafficSplit | None) -> str:
    return "unknown" if split is None else f"{split.canary_percent:g}% canary"


class SlotRouter:
    """Blue/green over two slots: the idle slot is the canary; after promotion they swap.

    `routers` maps each slot's name to the router that sends stable traffic to that slot
    and canary traffic to the other one (exactly two slots). `live` is the slot with the
    stable traffic (None until the router has been read); `idle` the other one, where
    the next release goes. See the module's documentation for the model.
    """

    def __init__(self, routers: Mapping[str, TrafficRouter]) -> None:
        if not isinstance(routers, Mapping) or len(routers) != 2:
            raise ConfigError("routers", routers, "must map exactly two slot names to routers")
        for name, router in routers.items():
            check_name("routers", name)
            for part in ("apply", "read", "capabilities"):
                if not hasattr(router, part):
                    raise ConfigError(f"routers[{name!r}]", router, f"is not a router (no {part})")
        self.routers = dict(routers)
        self._names = tuple(self.routers)
        self.live: str | None = None

    @classmethod
    def swapping(cls, router: Any, *, slots: tuple[str, str] = ("blue", "green")) -> SlotRouter:
        """A `SlotRouter` from one router whose stable servers are slot `slots[0]`.

        The second slot's router is a copy with its ``stable`` and ``canary`` servers
        swapped (`NginxRouter` and `HAProxyRouter` have both attributes).
        """
        if not (hasattr(router, "stable") and hasattr(router, "canary")):
            raise ConfigError("router", router, "has no stable and canary servers to swap")
        first, second = slots
        other = copy.copy(router)
        other.stable, other.canary = router.canary, router.stable
        return cls({first: router, second: other})

    @property
    def idle(self) -> str | None:
        """The slot that is not live (the canary's), or None until the router was read."""
        if self.live is None:
            return None
        return self._other(self.live)

    def _other(self, slot: str) -> str:
        first, second = self._names
        return second if slot == first else first

    @property
    def capabilities(self) -> RouterCapabilities:
        """Those of the slots' routers."""
        capabilities: RouterCapabilities = self.routers[self._names[0]].capabilities
        return capabilities

    @property
    def traffic_target(self) -> str | None:
        """What the slots' routers control (one load balancer for both orientations)."""
        target: str | None = getattr(self.routers[self._names[0]], "traffic_target", None)
        return target

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split the slots' routers would refuse."""
        for router in self.routers.values():
            check = getattr(router, "check_split", None)
            if check is not None:
                check(split)

    async def find_live(self) -> str:
        """Read the router and settle which slot is live; its name.

        If a promotion left all traffic on the idle slot, swap first (moving nothing).
        `RouterError` when it cannot tell.
        """
        seen: dict[str, TrafficSplit | None] = {}
        errors: dict[str, str] = {}
        for name, router in self.routers.items():
            try:
                seen[name] = await router.read()
            except RouterError as exc:
                errors[name] = str(exc)
        for name, split in seen.items():
            if split is not None and split.is_stable_only:
                self.live = name
                return name
        for name, split in seen.items():
            if split is not None and split == FULL_CANARY:
                # Promoted but not swapped: the other slot has all traffic. Re-rendering
                # it as that slot's stable moves nothing.
                await self.routers[self._other(name)].apply(STABLE_ONLY)
                self.live = self._other(name)
                return self.live
        if len(seen) == 1:
            (name,) = seen
            self.live = name  # the only orientation that reads: a rollout in progress
            return name
        found = ", ".join(f"{name} live: {_percent(split)}" for name, split in seen.items())
        refused = "; ".join(f"{name}: {why}" for name, why in errors.items())
        raise RouterError(
            "cannot tell which slot is live: "
            + (found or "no orientation could be read")
            + (f" ({refused})" if refused else "")
        )

    async def read(self) -> TrafficSplit | None:
        """The split in force, with the idle slot as the canary."""
        if self.live is None:
            await self.find_live()
        assert self.live is not None
        return await self.routers[self.live].read()

    async def apply(self, split: TrafficSplit) -> None:
        """Send `split.canary_percent` of traffic to the idle slot."""
        if self.live is None:
            await self.find_live()
        assert self.live is not None
        await self.routers[self.live].apply(split)

    async def swap(self) -> str:
        """After a promotion: make the idle slot live without moving traffic; its name.

        Refused (`RouterError`) unless the router confirms all traffic on the idle slot.
        """
        if self.live is None:
            await self.find_live()
            return self.live  # type: ignore[return-value]  # set by find_live
        current = await self.routers[self.live].read()
        if current != FULL_CANARY:
            raise RouterError(
                f"not swapping slots: the idle slot {self.idle} does not have all traffic "
                f"(the router reads {_percent(current)})"
            )
        new = self._other(self.live)
        await self.routers[new].apply(STABLE_ONLY)
        self.live = new
        return new

    def __repr__(self) -> str:
        live = "unknown" if self.live is None else self.live
        return f"SlotRouter(slots={list(self._names)!r}, live={live!r})"
