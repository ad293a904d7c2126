"""A fake traffic router that records every split and fails or hangs when told to."""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from .._protocols import RouterCapabilities
from .._split import STABLE_ONLY, TrafficSplit

__all__ = ["FakeRouter", "RouterFault"]


class RouterFault(Exception):
    """The error a `FakeRouter` raises on the calls it was told to fail."""


class FakeRouter:
    """A `TrafficRouter` for tests: records every split, can fail or hang on chosen calls.

    Calls are numbered from 1 across `apply` and `read` alike (`calls` lists them).
    `fail_on={3}` makes the third call raise `RouterFault`; `hang_on={2}` makes the second
    never return, so the runner's call timeout must cut it short. `applied` holds every
    split the router accepted, in order; `current` the one in force. `traffic_target`
    names what it pretends to drive, so that two rollouts given fakes of the same target
    meet in the lease as two on one load balancer would.

    >>> router = FakeRouter()
    >>> router.current.canary_percent
    0.0
    """

    def __init__(
        self,
        *,
        capabilities: RouterCapabilities | None = None,
        fail_on: Iterable[int] = (),
        hang_on: Iterable[int] = (),
        initial: TrafficSplit = STABLE_ONLY,
        traffic_target: str | None = None,
    ) -> None:
        self._capabilities = capabilities or RouterCapabilities(
            weights=True, header_routes=True, mirroring=True, read_back=True
        )
        self.fail_on = set(fail_on)
        self.hang_on = set(hang_on)
        self.current = initial
        self.applied: list[TrafficSplit] = []
        self.calls: list[str] = []
        self._target = traffic_target

    @property
    def traffic_target(self) -> str | None:
        """What this fake claims to control (see `TrafficRouter`): as given, None by default."""
        return self._target

    @property
    def capabilities(self) -> RouterCapabilities:
        """What this fake claims to support (everything, unless told otherwise)."""
        return self._capabilities

    async def _misbehave(self, call: str) -> None:
        self.calls.append(call)
        number = len(self.calls)
        if number in self.hang_on:
            await anyio.sleep_forever()
        if number in self.fail_on:
            raise RouterFault(f"{call} failed (call {number}, as scripted)")

    async def apply(self, split: TrafficSplit) -> None:
        """Record `split` and make it current, unless this call is scripted to fail or hang."""
        await self._misbehave("apply")
        self.current = split
        self.applied.append(split)

    async def read(self) -> TrafficSplit | None:
        """The current split (or None when the fake was built without read-back)."""
        await self._misbehave("read")
        return self.current if self._capabilities.read_back else None

    def __repr__(self) -> str:
        return f"<FakeRouter at {self.current.canary_percent:g}%, {len(self.applied)} applied>"
