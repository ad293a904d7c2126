"""`observation`: one line builds the `Observation` a decider's test judges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._histogram import LatencyHistogram
from .._observe import ArmStats, Observation
from .._split import TrafficSplit

__all__ = ["observation"]

# Latencies as a test writes them: samples in seconds, a ready histogram, or none.
LatencyLike = Sequence[float] | LatencyHistogram | None


def _histogram(latency: LatencyLike) -> LatencyHistogram | None:
    if latency is None or isinstance(latency, LatencyHistogram):
        return latency
    return LatencyHistogram.from_samples(latency)


def observation(
    *,
    stable_requests: int = 1000,
    stable_errors: int = 10,
    canary_requests: int = 1000,
    canary_errors: int = 10,
    stable_latency: LatencyLike = None,
    canary_latency: LatencyLike = None,
    stable_gauges: Mapping[str, float] | None = None,
    canary_gauges: Mapping[str, float] | None = None,
    start: float = 0.0,
    end: float = 30.0,
    split: TrafficSplit | None = None,
) -> Observation:
    """An `Observation` of both arms over one window, for a decider's unit test.

    Name only what the test is about: by default both arms served 1,000 requests with
    10 errors (1%) from 0 to 30 seconds, without latency or gauges. A latency is a
    sequence of samples in seconds (made into a `LatencyHistogram`) or a histogram;
    gauges map a name to a value. The values are checked as `Observation` checks them,
    so a test cannot judge an observation a metrics source could not produce.

    >>> from canarykit.testing import observation
    >>> seen = observation(canary_errors=50, canary_latency=[0.1, 0.2, 0.3])
    >>> seen.canary.error_rate, seen.stable.error_rate
    (0.05, 0.01)
    >>> seen.canary.latency.count, seen.stable.latency is None
    (3, True)
    >>> observation(start=30, end=60, canary_gauges={"cpu": 0.7}).canary.gauges["cpu"]
    0.7
    """
    return Observation(
        start=start,
        end=end,
        stable=ArmStats(
            requests=stable_requests,
            errors=stable_errors,
            latency=_histogram(stable_latency),
            gauges=stable_gauges or {},
        ),
        canary=ArmStats(
            requests=canary_requests,
            errors=canary_errors,
            latency=_histogram(canary_latency),
            gauges=canary_gauges or {},
        ),
        split=split,
    )
