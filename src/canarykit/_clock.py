"""The wall clock the runner uses unless given another (`canarykit.Clock`)."""

from __future__ import annotations

import time

import anyio

__all__ = ["SystemClock"]


class SystemClock:
    """Wall-clock time (`time.time()`), so saved deadlines mean the same in a new process."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the wall clock reaches `deadline`."""
        if deadline == float("inf"):
            await anyio.sleep_forever()
        # Re-check after waking: the wall clock can be stepped while we sleep.
        while (remaining := deadline - time.time()) > 0:
            await anyio.sleep(remaining)

    def __repr__(self) -> str:
        return "SystemClock()"
