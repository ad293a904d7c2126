"""An in-process metrics source: the application records every request, the rollout reads windows.

How this works. Time is cut into slots of `resolution` seconds (1 s by default), aligned
to multiples of it on the recorder's clock. `record()` adds one request to the current
slot: a request count, an error count, a count in the request's latency bucket (the
buckets of `LatencyHistogram`) and the latency to a running sum, per arm. That is O(1)
and stores no samples. When time moves to a new slot, the old one is sealed into two
small immutable histograms; slots older than `retention` are dropped.

`collect(window)` adds up the slots of the window. A slot belongs to the window in which
it ends: the window [start, end) gets the slots that end in (start, end], which is the
records made in [start, end) with both ends rounded down to a multiple of the
resolution. So consecutive windows share no record and lose none, and a window is
complete once its end has passed. With the default resolution and windows that start
and end on whole seconds (as a rollout's do when it starts on one), the window is exact.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._errors import ConfigError, MetricsError, NoDataError
from .._histogram import (
    _LOWER,
    _MAX_VALUE,
    _MIN_VALUE,
    _UPPER,
    MAX_INDEX,
    MIN_INDEX,
    SCHEMA,
    LatencyHistogram,
    _make,
    bucket_index,
)
from .._observe import Arm, ArmStats, Observation, Window
from .._protocols import Clock
from .._validate import finite

__all__ = ["Measurement", "Recorder"]

_BUCKETS = MAX_INDEX - MIN_INDEX + 1
_STABLE = Arm.STABLE
_CANARY = Arm.CANARY
_floor = math.floor
_perf_counter = time.perf_counter
_ceil = math.ceil
_log2 = math.log2
_PER_OCTAVE = float(1 << SCHEMA)


class _ArmCounts:
    """One arm's counts in the live slot (mutated under the recorder's lock)."""

    __slots__ = ("buckets", "errors", "latency_sum", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_sum = 0.0
        self.buckets = [0] * _BUCKETS  # by bucket index - MIN_INDEX

    def seal(self) -> _ArmSealed | None:
        if not self.requests:
            return None
        return _ArmSealed(self.requests, self.errors, _histogram(self.buckets, self.latency_sum))


class _ArmSealed:
    """One arm's counts in a past slot: a few ints and a trimmed histogram."""

    __slots__ = ("errors", "latency", "requests")

    def __init__(self, requests: int, errors: int, latency: LatencyHistogram | None) -> None:
        self.requests = requests
        self.errors = errors
        self.latency = latency


class _Live:
    __slots__ = ("arms", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.arms = (_ArmCounts(), _ArmCounts())  # stable, canary


class _Sealed:
    __slots__ = ("canary", "index", "stable")

    def __init__(self, index: int, stable: _ArmSealed | None, canary: _ArmSealed | None) -> None:
        self.index = index
        self.stable = stable
        self.canary = canary


def _histogram(buckets: list[int], latency_sum: float) -> LatencyHistogram | None:
    """The histogram of dense bucket counts, or None when no request had a latency."""
    low = 0
    while low < _BUCKETS and not buckets[low]:
        low += 1
    if low == _BUCKETS:
        return None
    high = _BUCKETS
    while not buckets[high - 1]:
        high -= 1
    # A sum of huge latencies can overflow; the histogram then estimates the mean instead.
    total = latency_sum if math.isfinite(latency_sum) else None
    return _make(MIN_INDEX + low, tuple(buckets[low:high]), total)


class _Totals:
    """Adds up one arm over the slots of a window."""

    __slots__ = ("buckets", "errors", "latency_sum", "requests", "timed")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.timed = False
        self.latency_sum: float | None = 0.0
        self.buckets = [0] * _BUCKETS

    def add(self, arm: _ArmSealed | None) -> None:
        if arm is None:
            return
        self.requests += arm.requests
        self.errors += arm.errors
        latency = arm.latency
        if latency is None:
            return
        self.timed = True
        if self.latency_sum is not None:
            self.latency_sum = None if latency.sum is None else self.latency_sum + latency.sum
        at = latency.offset - MIN_INDEX
        buckets = self.buckets
        for k, count in enumerate(latency.counts, at):
            buckets[k] += count

    def stats(self) -> ArmStats:
        latency = None
        if self.timed:
            total = self.latency_sum
            if total is not None and not math.isfinite(total):
                total = None
            latency = LatencyHistogram(offset=MIN_INDEX, counts=tuple(self.buckets), sum=total)
        return ArmStats(requests=self.requests, errors=self.errors, latency=latency)


def _now_function(clock: Any) -> Callable[[], float]:
    if clock is None:
        return time.time
    if isinstance(clock, Clock):
        return clock.now
    if callable(clock):
        return clock  # type: ignore[no-any-return]
    raise ConfigError("clock", clock, "must be a Clock or a function returning seconds")


def _arm_number(arm: Any) -> int:
    if arm is _CANARY or arm == "canary":
        return 1
    if arm is _STABLE or arm == "stable":
        return 0
    raise ConfigError("arm", arm, "must be Arm.STABLE or Arm.CANARY")


def _bucket(latency: Any) -> int:
    """The dense position of `latency`'s bucket, or ConfigError naming the field."""
    if isinstance(latency, bool) or not isinstance(latency, (int, float)):
        raise ConfigError("latency", latency, "must be a number of seconds or None")
    try:
        return bucket_index(latency) - MIN_INDEX
    except ConfigError:
        raise ConfigError("latency", latency, "must be a finite latency >= 0 seconds") from None


class Recorder:
    """A `MetricsSource` fed by the application itself, one request at a time.

    >>> from canarykit import Arm, TrafficSplit, Window
    >>> now = [100.0]
    >>> recorder = Recorder(clock=lambda: now[0])
    >>> recorder.record(Arm.STABLE, True, 0.020)
    >>> recorder.record(Arm.CANARY, False, 0.350)
    >>> now[0] = 101.5
    >>> recorder.record(Arm.CANARY, True, 0.030)
    >>> obs = recorder.observe(Window(start=100, end=102, split=TrafficSplit(canary_percent=50)))
    >>> obs.stable.requests, obs.canary.requests, obs.canary.errors
    (1, 2, 1)
    >>> round(obs.canary.mean_latency, 3)
    0.19

    - `record(arm, ok, latency)`: one request served by `arm`; `ok` False counts it as
      an error; `latency` in seconds, or None when unknown (the request and its outcome
      still count). A latency that is negative, NaN or infinite, an `ok` that is not a
      bool or an unknown arm is a bug in the caller: ConfigError, and nothing recorded.
    - `measure(arm)`: a context manager that times the block with `time.perf_counter`
      and records it when it ends: as an error if it raises an `Exception` or calls
      `fail()`, not at all if it is cancelled (a `BaseException` such as
      `asyncio.CancelledError`: the request's fate is unknown).
    - `collect(window)` / `observe(window)`: both arms' requests, errors and latency
      histogram for the window (see the module docstring for how slots fall into
      windows). Raises `NoDataError` when neither arm recorded a request in it, and
      `MetricsError` when part of the window is older than `retention` and was dropped.
      An arm with requests but no latencies has ``latency=None``.

    `clock` must tell the same time as the rollout's: a `Clock` (such as a
    `VirtualClock`) or a function returning seconds; the default, `time.time`, matches
    `SystemClock`. If the clock steps backwards, records go into the latest slot.
    `resolution` (1 s) is the slot length, `retention` (3600 s) how far back windows can
    reach. Memory is about 1 kB per slot of time kept in which requests were recorded
    (about 4 MB for an hour of busy slots), however many requests there were.

    Threads: `record` and `measure` may be called from any thread (a lock guards the
    live slot: recording stays O(1) and costs about a microsecond).
    """

    def __init__(
        self,
        *,
        clock: Clock | Callable[[], float] | None = None,
        resolution: float = 1.0,
        retention: float = 3600.0,
    ) -> None:
        self._now = _now_function(clock)
        self._resolution = finite("resolution", resolution)
        if not self._resolution > 0:
            raise ConfigError("resolution", resolution, "must be > 0 seconds")
        self._retention = finite("retention", retention)
        if not self._retention >= self._resolution:
            raise ConfigError("retention", retention, f"must be >= resolution ({resolution!r})")
        self._kept_slots = math.ceil(self._retention / self._resolution)
        self._lock = threading.Lock()
        self._live = _Live(self._slot(self._now()))
        self._sealed: collections.deque[_Sealed] = collections.deque()
        self._dropped_before: int | None = None  # slots before this index may be gone

    @property
    def resolution(self) -> float:
        """The length of a slot in seconds."""
        return self._resolution

    @property
    def retention(self) -> float:
        """How far back, in seconds, a window may reach."""
        return self._retention

    def _slot(self, now: float) -> int:
        return _floor(now / self._resolution)

    # -- recording ----------------------------------------------------------------------

    def record(self, arm: Arm, ok: bool = True, latency: float | None = None) -> None:
        """Count one request served by `arm`: an error unless `ok`, taking `latency` seconds."""
        # On every request, so everything is inlined. The common case, a float latency
        # within the histogram's range, finds its bucket from log2 (twice as fast as
        # `bucket_index`'s frexp and bisect) and corrects a rounding at a bucket's edge
        # against the exact bounds, so the bucket is always the one `bucket_index` gives.
        number = 1 if arm is _CANARY else 0 if arm is _STABLE else _arm_number(arm)
        if ok is not True and ok is not False:
            raise ConfigError("ok", ok, "must be True or False")
        if type(latency) is float and _MIN_VALUE < latency <= _MAX_VALUE:
            bucket = _ceil(_log2(latency) * _PER_OCTAVE) - MIN_INDEX
            if latency > _UPPER[bucket]:
                bucket += 1
            elif latency <= _LOWER[bucket]:
                bucket -= 1
            seconds: float = latency
        elif latency is None:
            bucket = -1
            seconds = 0.0
        else:
            bucket = _bucket(latency)
            seconds = latency
        slot = _floor(self._now() / self._resolution)
        lock = self._lock
        lock.acquire()  # a third cheaper than `with` on CPython 3.11
        try:
            live = self._live
            if slot > live.index:
                live = self._rotate(slot)
            counts = live.arms[number]
            counts.requests += 1
            if not ok:
                counts.errors += 1
            if bucket >= 0:
                counts.buckets[bucket] += 1
                counts.latency_sum += seconds
        finally:
            lock.release()

    def measure(self, arm: Arm) -> Measurement:
        """Time a block and record it for `arm` when it ends (see the class docstring).

        >>> from canarykit import Arm
        >>> recorder = Recorder()
        >>> with recorder.measure(Arm.CANARY) as request:
        ...     status = 503
        ...     if status >= 500:
        ...         request.fail()
        """
        _arm_number(arm)
        return Measurement(self, arm)

    def _rotate(self, slot: int) -> _Live:
        """Seal the live slot and start `slot`; called with the lock held."""
        old = self._live
        stable, canary = old.arms[0].seal(), old.arms[1].seal()
        if stable is not None or canary is not None:
            self._sealed.append(_Sealed(old.index, stable, canary))
        self._drop_old(slot)
        live = self._live = _Live(slot)
        return live

    def _drop_old(self, slot: int) -> None:
        keep_from = slot - self._kept_slots
        sealed = self._sealed
        while sealed and sealed[0].index < keep_from:
            sealed.popleft()
            self._dropped_before = keep_from

    # -- the MetricsSource protocol -----------------------------------------------------

    async def collect(self, window: Window) -> Observation:
        """Both arms over `window`; NoDataError when neither recorded a request in it."""
        return self.observe(window)

    def observe(self, window: Window) -> Observation:
        """`collect`, for synchronous code."""
        if not isinstance(window, Window):
            raise ConfigError("window", window, "must be a Window")
        first, stop = self._slot(window.start), self._slot(window.end)
        stable, canary = _Totals(), _Totals()
        with self._lock:
            self._drop_old(max(self._slot(self._now()), self._live.index))
            dropped_before = self._dropped_before
            if dropped_before is not None and first < dropped_before:
                raise MetricsError(
                    f"window [{window.start:g}, {window.end:g}) reaches back past the "
                    f"recorder's retention ({self.retention:g} s): records before "
                    f"{dropped_before * self.resolution:g} were dropped"
                )
            for sealed in self._sealed:
                if first <= sealed.index < stop:
                    stable.add(sealed.stable)
                    canary.add(sealed.canary)
            live = self._live
            if first <= live.index < stop:
                # Still filling when the window is collected before it has ended.
                stable.add(live.arms[0].seal())
                canary.add(live.arms[1].seal())
        if not stable.requests and not canary.requests:
            raise NoDataError(
                f"no requests recorded in [{window.start:g}, {window.end:g}) "
                f"(slots of {self.resolution:g} s)"
            )
        return Observation(
            start=window.start, end=window.end, stable=stable.stats(), canary=canary.stats()
        )

    def __repr__(self) -> str:
        return (
            f"<Recorder resolution={self.resolution:g}s retention={self.retention:g}s, "
            f"{len(self._sealed)} past slots>"
        )


class Measurement:
    """One request being timed by `Recorder.measure`; call `fail()` to count it as an error."""

    __slots__ = ("_arm", "_recorder", "_started", "ok")

    def __init__(self, recorder: Recorder, arm: Arm) -> None:
        self._recorder = recorder
        self._arm = arm
        self._started = 0.0
        self.ok = True

    def fail(self) -> None:
        """Count this request as an error (a 5xx response, a wrong answer) when it ends."""
        self.ok = False

    def __enter__(self) -> Measurement:
        self._started = _perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        latency = _perf_counter() - self._started
        if exc_type is None:
            self._recorder.record(self._arm, self.ok, latency)
        elif issubclass(exc_type, Exception):
            self._recorder.record(self._arm, False, latency)
        # Other BaseExceptions (cancellation, KeyboardInterrupt): the outcome is unknown.
