"""A virtual clock that jumps to the next deadline, on asyncio and trio alike.

How this works. Sleepers register a deadline in a heap; every registration, wake-up and
return bumps the clock's `_version`. Each sleeper yields to the event loop a few times
and, if the version did not change meanwhile, votes that the clock is quiet. When every
live sleeper has voted for the same version (so none is being woken, cancelled or is
about to register again), every task using the clock is asleep: time jumps to the
earliest deadline, waking that sleeper (or running a callback scheduled with
`call_at`). So a 3-hour plan runs in milliseconds, and tasks that share the clock still
wake in deadline order.

Work that waits on real I/O is invisible to the clock: virtual time is for fakes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import anyio
import anyio.lowlevel

from .._errors import ClockStalled

__all__ = ["VirtualClock"]

# How many times a sleeper yields before voting that every other task is asleep. Two,
# because trio runs a task spawned during one scheduling batch only in the next one.
_QUIET_CHECKPOINTS = 2


class _Entry:
    __slots__ = ("callback", "deadline", "event", "live", "order", "voted")

    def __init__(
        self,
        deadline: float,
        order: int,
        event: anyio.Event | None,
        callback: Callable[[], object] | None,
    ) -> None:
        self.deadline = deadline
        self.order = order
        self.event = event
        self.callback = callback
        self.live = True
        self.voted = -1  # the clock version this sleeper last voted quiet for

    def __lt__(self, other: _Entry) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class VirtualClock:
    """A `Clock` whose time moves only when every task using it is asleep.

    >>> clock = VirtualClock(start=100.0)
    >>> clock.now()
    100.0

    Schedule something at a virtual time with `call_at`, e.g. an operator's command:
    ``clock.call_at(600, rollout.promote)``. `sleep_until(math.inf)` with nothing else
    scheduled raises `ClockStalled`, since nothing could ever wake it.

    With ``solo=True`` the caller promises that one task at a time sleeps on the clock
    (everything else arrives through `call_at`): time then jumps without yielding to the
    event loop first, which makes long simulations several times faster. `simulate`
    uses such a clock.
    """

    def __init__(self, start: float = 0.0, *, solo: bool = False) -> None:
        self._now = float(start)
        self._solo = solo
        self._heap: list[_Entry] = []
        self._order = 0
        self._version = 0
        self._sleepers = 0  # live sleepers, each of which must vote before time jumps
        self._votes = 0  # quiet votes cast for the current version
        self._votes_version = -1

    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> None:
        """Run `callback()` when virtual time reaches `when`."""
        self._push(when, None, callback)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` at once (callbacks due on the way are not run)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    async def sleep_until(self, deadline: float) -> None:
        """Return once virtual time reaches `deadline`."""
        if self._solo:
            await self._sleep_alone(deadline)
            return
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = self._push(deadline, event, None)
        self._sleepers += 1
        try:
            while not event.is_set():
                version = self._version
                for _ in range(_QUIET_CHECKPOINTS):
                    await anyio.lowlevel.checkpoint()
                if event.is_set() or version != self._version or entry.voted == version:
                    continue
                entry.voted = version
                if self._votes_version != version:
                    self._votes_version, self._votes = version, 0
                self._votes += 1
                if self._votes >= self._sleepers:
                    self._jump()
        finally:
            entry.live = False
            self._sleepers -= 1
            self._version += 1

    async def _sleep_alone(self, deadline: float) -> None:
        if self._sleepers:
            raise RuntimeError("a solo VirtualClock is being slept on by two tasks at once")
        self._sleepers = 1
        try:
            # Nobody else sleeps here, so time can jump at once: run the callbacks due by
            # `deadline` in order, yielding after each so that what it did (an operator's
            # command cancelling this very sleep, say) takes effect at its own time.
            while self._heap and self._heap[0].deadline <= deadline:
                entry = heapq.heappop(self._heap)
                if entry.live and entry.callback is not None:
                    self._now = max(self._now, entry.deadline)
                    entry.live = False
                    entry.callback()
                    await anyio.lowlevel.checkpoint()
            if deadline == math.inf:
                raise ClockStalled(
                    f"waiting for ever at virtual time {self._now:g} with nothing scheduled"
                )
            self._now = max(self._now, deadline)
        finally:
            self._sleepers = 0

    def _push(
        self, deadline: float, event: anyio.Event | None, callback: Callable[[], object] | None
    ) -> _Entry:
        self._order += 1
        self._version += 1
        entry = _Entry(deadline, self._order, event, callback)
        heapq.heappush(self._heap, entry)
        return entry

    def _jump(self) -> None:
        while self._heap and not self._heap[0].live:
            heapq.heappop(self._heap)
        if not self._heap or self._heap[0].deadline == math.inf:
            raise ClockStalled(
                f"every task is waiting for ever at virtual time {self._now:g}; "
                "nothing is scheduled that could wake it"
            )
        entry = heapq.heappop(self._heap)
        entry.live = False
        self._version += 1
        self._now = max(self._now, entry.deadline)
        if entry.event is not None:
            entry.event.set()
        elif entry.callback is not None:
            entry.callback()

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g})"
