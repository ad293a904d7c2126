"""Several routers driven as one: every member applies, every member confirms.

How this works. `FanOutRouter.apply` applies the split to every member at once and reads
each one back (when it reads back). Only when every member confirmed does the split
become the fan-out's `confirmed`. When any member fails, every member is put back to
`confirmed`, the last split they all confirmed: a member that reads back that split
already is left alone (one whose apply failed before changing anything), the others get
it applied and read back; then the apply raises `RouterError` naming each member that
failed and what it said, which the runner retries or answers with a rollback like any
router failure. A member's `ConfigError` (a split it can never apply) is raised as it is
after the put-back, so the runner does not retry it.

Before its first apply the fan-out reads every member: if they all report one split,
that split is `confirmed`, the one a partial failure returns to. If they disagree (or
cannot be read) there is nothing to return to, and a partial failure leaves each member
where it is; the error says so, and `read` refuses to pick one of the splits until an
apply puts them all on the same one.

The put-back runs shielded from cancellation (a runner's call timeout must not stop it
half way) and bounded by `restore_timeout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from .._errors import ConfigError, RouterError
from .._protocols import RouterCapabilities, TrafficRouter
from .._split import TrafficSplit
from .._validate import finite

__all__ = ["FanOutRouter"]

_FIELDS = ("weights", "header_routes", "mirroring", "read_back")


def _target(router: Any) -> str:
    target = getattr(router, "traffic_target", None)
    return target if isinstance(target, str) and target else repr(router)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class FanOutRouter:
    """Drive several routers as one: apply to all, confirm all, put all back on a failure.

    For one service behind several load balancers (two HAProxy instances, an nginx pair
    for high availability, nginx on each of three hosts): the rollout sees one router.

    - `routers`: the members, at least two, each a `TrafficRouter` (each with its own
      `traffic_target`, when it has one, different from the others').
    - `restore_timeout`: seconds allowed for putting every member back after a partial
      failure (shielded from cancellation).

    `capabilities` are what every member can do; `traffic_target` names every member's
    target, so the rollout's lease covers them together; `confirmed` is the last split
    every member confirmed. A `check_split` of a member refuses a split for the fan-out.
    Applies do not overlap (one rollout drives a router at a time).

    >>> from canarykit.testing import FakeRouter
    >>> both = FanOutRouter([FakeRouter(traffic_target="lb-b"), FakeRouter(traffic_target="lb-a")])
    >>> both.traffic_target
    'fanout:lb-a + lb-b'
    """

    def __init__(self, routers: Sequence[TrafficRouter], *, restore_timeout: float = 60.0) -> None:
        if isinstance(routers, (str, bytes)) or not isinstance(routers, Sequence):
            raise ConfigError("routers", routers, "must be a list of routers")
        members = tuple(routers)
        if len(members) < 2:
            raise ConfigError("routers", routers, "must hold at least two routers")
        targets: dict[str, int] = {}
        for index, router in enumerate(members):
            if not isinstance(router, TrafficRouter):
                raise ConfigError(
                    f"routers[{index}]", router, "must implement the TrafficRouter protocol"
                )
            target = getattr(router, "traffic_target", None)
            if target is not None:
                if target in targets:
                    raise ConfigError(
                        f"routers[{index}]",
                        router,
                        f"drives {target}, as routers[{targets[target]}] does",
                    )
                targets[target] = index
        if finite("restore_timeout", restore_timeout) <= 0:
            raise ConfigError("restore_timeout", restore_timeout, "must be a positive number")
        self.routers = members
        self.restore_timeout = float(restore_timeout)
        self.confirmed: TrafficSplit | None = None
        self._lock = anyio.Lock()

    @property
    def capabilities(self) -> RouterCapabilities:
        """What every member can do (the intersection of their capabilities)."""
        each = [router.capabilities for router in self.routers]
        return RouterCapabilities(
            **{field: all(getattr(c, field) for c in each) for field in _FIELDS}
        )

    @property
    def traffic_target(self) -> str:
        """``fanout:`` and every member's target (in sorted order), joined by `` + ``."""
        return "fanout:" + " + ".join(sorted(_target(router) for router in self.routers))

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split any member's ``check_split`` refuses."""
        for router in self.routers:
            check = getattr(router, "check_split", None)
            if callable(check):
                check(split)

    async def apply(self, split: TrafficSplit) -> None:
        """Apply `split` to every member and read each back; on a failure, put all back.

        Raises `RouterError` naming the members that failed (or a member's `ConfigError`)
        once every member is back at `confirmed`, or says which could not be put back.
        """
        if not isinstance(split, TrafficSplit):
            raise ConfigError("split", split, "must be a TrafficSplit")
        async with self._lock:
            if self.confirmed is None:
                self.confirmed = await self._common_split()
            try:
                failures = await self._each(self._apply_one, split)
            except BaseException:
                # Cancelled part way (the runner's call timeout): some members may hold
                # the new split, so all go back before the cancellation goes on.
                await self._put_back()
                raise
            if not failures:
                self.confirmed = split
                return
            stuck = await self._put_back()
            self._raise(split, failures, stuck)

    async def read(self) -> TrafficSplit | None:
        """The split every member reports; `RouterError` when they differ.

        None when no member can tell.
        """
        splits = await self._read_all()
        known = {split for split in splits if split is not None}
        if not known:
            return None
        if len(known) > 1 or None in splits:
            raise RouterError(f"the routers report different splits: {self._show(splits)}")
        return known.pop()

    def __repr__(self) -> str:
        return f"FanOutRouter([{', '.join(repr(router) for router in self.routers)}])"

    # -- the steps --

    async def _apply_one(self, router: TrafficRouter, split: TrafficSplit) -> None:
        await router.apply(split)
        if router.capabilities.read_back:
            seen = await router.read()
            if seen is not None and seen != split:
                raise RouterError(
                    f"read back canary {seen.canary_percent:g}% after applying "
                    f"{split.canary_percent:g}%"
                )

    async def _restore_one(self, router: TrafficRouter, split: TrafficSplit) -> None:
        if router.capabilities.read_back:
            try:
                if await router.read() == split:
                    return  # untouched by the failed apply: nothing to undo
            except Exception:  # unreadable: applying is the way back
                pass
        await self._apply_one(router, split)

    async def _put_back(self) -> dict[int, BaseException]:
        """Every member back at `confirmed`, shielded, within `restore_timeout`."""
        if self.confirmed is None:
            return {}
        stuck: dict[int, BaseException] = {}
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.restore_timeout
            stuck = await self._each(self._restore_one, self.confirmed)
        if scope.cancelled_caught and not stuck:
            stuck = {-1: TimeoutError(f"not done within {self.restore_timeout:g} s")}
        return stuck

    async def _each(self, step: Any, split: TrafficSplit) -> dict[int, BaseException]:
        """Run `step(router, split)` for every member at once; the failures by index."""
        failures: dict[int, BaseException] = {}

        async def one(index: int, router: TrafficRouter) -> None:
            try:
                await step(router, split)
            except Exception as exc:  # each member's failure is reported
                failures[index] = exc

        async with anyio.create_task_group() as group:
            for index, router in enumerate(self.routers):
                group.start_soon(one, index, router)
        return dict(sorted(failures.items()))

    async def _read_all(self) -> list[TrafficSplit | None]:
        """Every member's split, read at once; `RouterError` naming each one that failed."""
        splits: list[TrafficSplit | None] = [None] * len(self.routers)
        failures: dict[int, BaseException] = {}

        async def one(index: int, router: TrafficRouter) -> None:
            try:
                splits[index] = await router.read()
            except Exception as exc:  # each member's failure is reported
                failures[index] = exc

        async with anyio.create_task_group() as group:
            for index, router in enumerate(self.routers):
                group.start_soon(one, index, router)
        if failures:
            raise RouterError(
                "cannot read "
                + "; ".join(
                    f"{_target(self.routers[index])}: {_why(exc)}"
                    for index, exc in sorted(failures.items())
                )
            )
        return splits

    async def _common_split(self) -> TrafficSplit | None:
        """The split every member reports before the first apply, or None."""
        if not self.capabilities.read_back:
            return None
        try:
            splits = await self._read_all()
        except Exception:  # no common split to return to, said on failure
            return None
        first = splits[0]
        return first if all(split == first for split in splits) else None

    def _show(self, splits: Sequence[TrafficSplit | None]) -> str:
        return ", ".join(
            f"{_target(router)}: "
            + ("cannot tell" if split is None else f"canary {split.canary_percent:g}%")
            for router, split in zip(self.routers, splits, strict=True)
        )

    def _raise(
        self,
        split: TrafficSplit,
        failures: dict[int, BaseException],
        stuck: dict[int, BaseException],
    ) -> None:
        failed = "; ".join(
            f"{_target(self.routers[index])}: {_why(exc)}" for index, exc in failures.items()
        )
        head = (
            f"{len(failures)} of {len(self.routers)} routers failed to apply canary "
            f"{split.canary_percent:g}% ({failed})"
        )
        if self.confirmed is None:
            raise RouterError(
                f"{head}; the routers had no split in common before, so each is left where it is"
            )
        back = f"canary {self.confirmed.canary_percent:g}%"
        if stuck:
            names = "; ".join(
                f"{'the put-back' if index < 0 else _target(self.routers[index])}: {_why(exc)}"
                for index, exc in stuck.items()
            )
            raise RouterError(f"{head}; putting every router back to {back} failed too ({names})")
        config = next((exc for exc in failures.values() if isinstance(exc, ConfigError)), None)
        if config is not None:
            raise config
        raise RouterError(f"{head}; every router is back at {back}, the split they all confirmed")
