"""What a metrics source reports: per-arm counts, latency and gauges for one time window.

An `Observation` always carries both arms, the stable version and the canary, measured
over the same window, so a decider compares like with like.

>>> from canarykit._split import TrafficSplit
>>> obs = Observation(
...     start=0.0,
...     end=10.0,
...     stable=ArmStats(requests=900, errors=9),
...     canary=ArmStats(requests=100, errors=3, gauges={"cpu": 0.4}),
... )
>>> obs.value(Arm.CANARY, "error_rate"), obs.value(Arm.CANARY, "throughput")
(0.03, 10.0)
>>> obs.value(Arm.CANARY, "cpu"), obs.value(Arm.STABLE, "cpu")
(0.4, None)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import ConfigError
from ._histogram import LatencyHistogram
from ._split import TrafficSplit, _keys
from ._validate import count, finite, printable_name

__all__ = ["METRIC_NAMES", "Arm", "ArmStats", "Observation", "Window"]


class Arm(enum.Enum):
    """One side of the comparison: the stable (baseline) version or the canary."""

    STABLE = "stable"
    CANARY = "canary"

    def __repr__(self) -> str:
        return f"Arm.{self.name}"


_NO_GAUGES: Mapping[str, float] = MappingProxyType({})


def _freeze_gauges(value: Any) -> Mapping[str, float]:
    """Copy gauges into a read-only mapping of str to float, or raise ConfigError."""
    if not value:
        if isinstance(value, Mapping):
            return _NO_GAUGES
        raise ConfigError("gauges", value, "must be a mapping of name to number")
    if not isinstance(value, Mapping):
        raise ConfigError("gauges", value, "must be a mapping of name to number")
    frozen: dict[str, float] = {}
    for name, number in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("gauges", name, "gauge names must be non-empty strings")
        printable_name("gauges", name, "gauge name")
        if name in METRIC_NAMES:
            raise ConfigError(
                f"gauges[{name!r}]", number, "is a built-in metric name; give the gauge another"
            )
        if type(number) is not float:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ConfigError(f"gauges[{name!r}]", number, "must be a number")
            try:
                number = float(number)
            except OverflowError:  # an int beyond the float range
                raise ConfigError(f"gauges[{name!r}]", number, "is too large") from None
        frozen[name] = number
    return MappingProxyType(frozen)


def _gauge_to_json(value: float) -> float | str:
    # Strict JSON has no NaN or infinities: write them as strings (they mean "no data").
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _gauge_from_json(name: str, value: Any) -> float:
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return float(value)
        raise ConfigError(f"gauges[{name!r}]", value, "must be a number")
    return value  # type: ignore[no-any-return]  # ArmStats validates it


def _weighted(a: float, wa: float, b: float, wb: float) -> float:
    """Average two gauge readings; a non-finite one counts as missing."""
    a_ok, b_ok = math.isfinite(a), math.isfinite(b)
    if a_ok and b_ok:
        total = wa + wb
        return (a * wa + b * wb) / total if total > 0 else (a + b) / 2
    return b if b_ok else a


@attrs.frozen(kw_only=True)
class ArmStats:
    """What one arm did in a window: requests, errors, latency and named gauges.

    `requests` and `errors` are ints from 0 to 2**53, errors at most requests; anything
    else (a negative or NaN count, more errors than requests) is refused here.
    `gauges` holds any other readings by name ("cpu", "memory", a business metric);
    NaN or an infinity is accepted and means "no reading", which no decider counts as a
    pass. Gauge names are printable and may not be built-in metric names (see
    `METRIC_NAMES`).

    >>> s = ArmStats(requests=200, errors=3, gauges={"cpu": 0.5})
    >>> s.error_rate, s.success_rate, s.p99
    (0.015, 0.985, None)
    """

    requests: int
    errors: int = 0
    latency: LatencyHistogram | None = None
    gauges: Mapping[str, float] = attrs.field(
        default=_NO_GAUGES, converter=_freeze_gauges, hash=False, repr=lambda g: repr(dict(g))
    )

    def __attrs_post_init__(self) -> None:
        requests = count("requests", self.requests)
        errors = count("errors", self.errors)
        if errors > requests:
            raise ConfigError("errors", errors, f"must not exceed requests ({requests})")
        if self.latency is not None and not isinstance(self.latency, LatencyHistogram):
            raise ConfigError("latency", self.latency, "must be a LatencyHistogram or None")

    @property
    def error_rate(self) -> float | None:
        """Errors per request; None when there were no requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        """Successful requests per request; None when there were no requests."""
        return (self.requests - self.errors) / self.requests if self.requests else None

    @property
    def mean_latency(self) -> float | None:
        """Mean latency in seconds; None without latency data."""
        return None if self.latency is None else self.latency.mean

    @property
    def p50(self) -> float | None:
        """Median latency in seconds; None without latency data."""
        return None if self.latency is None else self.latency.quantile(0.5)

    @property
    def p95(self) -> float | None:
        """95th-percentile latency in seconds; None without latency data."""
        return None if self.latency is None else self.latency.quantile(0.95)

    @property
    def p99(self) -> float | None:
        """99th-percentile latency in seconds; None without latency data."""
        return None if self.latency is None else self.latency.quantile(0.99)

    def merge(self, other: ArmStats, *, weight: float = 1.0, other_weight: float = 1.0) -> ArmStats:
        """Return the stats of both periods together.

        Counts add and latency histograms merge (one side without latency data
        contributes none). A gauge present on both sides becomes their average weighted
        by `weight` and `other_weight` (for example the windows' durations); a missing or
        non-finite reading on one side leaves the other.
        """
        if not isinstance(other, ArmStats):
            raise ConfigError("other", other, "must be an ArmStats")
        if self.latency is None:
            latency = other.latency
        elif other.latency is None:
            latency = self.latency
        else:
            latency = self.latency.merge(other.latency)
        gauges = dict(self.gauges)
        for name, value in other.gauges.items():
            mine = gauges.get(name)
            gauges[name] = value if mine is None else _weighted(mine, weight, value, other_weight)
        return ArmStats(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=latency,
            gauges=gauges,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON (non-finite gauges as the strings "NaN", "Infinity")."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": None if self.latency is None else self.latency.to_json(),
            "gauges": {name: _gauge_to_json(value) for name, value in self.gauges.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArmStats:
        """Inverse of `to_json`."""
        (requests,) = _keys("stats", data, "requests")
        latency = data.get("latency")
        gauges = data.get("gauges") or {}
        if not isinstance(gauges, Mapping):
            raise ConfigError("gauges", gauges, "must be a mapping of name to number")
        return cls(
            requests=requests,
            errors=data.get("errors", 0),
            latency=None if latency is None else LatencyHistogram.from_json(latency),
            gauges={str(k): _gauge_from_json(str(k), v) for k, v in gauges.items()},
        )


def _check_span(start: Any, end: Any) -> None:
    for field, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, value, "must be a number of seconds")
        finite(field, value)
    if not end > start:
        raise ConfigError("end", end, f"must be after start ({start!r})")


@attrs.frozen(kw_only=True)
class Window:
    """A time span [start, end) in seconds to observe, with the split in force during it.

    >>> Window(start=60.0, end=70.0, split=TrafficSplit(canary_percent=10)).duration
    10.0
    """

    start: float
    end: float
    split: TrafficSplit

    def __attrs_post_init__(self) -> None:
        _check_span(self.start, self.end)
        if not isinstance(self.split, TrafficSplit):
            raise ConfigError("split", self.split, "must be a TrafficSplit")
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "end", float(self.end))

    @property
    def duration(self) -> float:
        """The window's length in seconds."""
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"start": self.start, "end": self.end, "split": self.split.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """Inverse of `to_json`."""
        start, end, split = _keys("window", data, "start", "end", "split")
        return cls(start=start, end=end, split=TrafficSplit.from_json(split))


def _throughput(stats: ArmStats, duration: float) -> float | None:
    return stats.requests / duration


_BUILT_IN: dict[str, Callable[[ArmStats, float], float | None]] = {
    "requests": lambda s, _d: float(s.requests),
    "errors": lambda s, _d: float(s.errors),
    "error_rate": lambda s, _d: s.error_rate,
    "success_rate": lambda s, _d: s.success_rate,
    "mean_latency": lambda s, _d: s.mean_latency,
    "p50": lambda s, _d: s.p50,
    "p95": lambda s, _d: s.p95,
    "p99": lambda s, _d: s.p99,
    "throughput": _throughput,
}

METRIC_NAMES: frozenset[str] = frozenset(_BUILT_IN)
"""The metric names `Observation.value` computes itself; any other name is a gauge."""


@attrs.frozen(kw_only=True)
class Observation:
    """Both arms' stats over the same window [start, end), in seconds.

    This is what a `MetricsSource` returns and what a decider judges. `split` is the
    traffic split in force during the window, or None when it is not known: a source
    need not set it, as the runner (and `canarykit.testing.evaluate`) fills in the
    window's split. A decider that weighs an arm by its share of the traffic, as
    ``compare("throughput")`` does, reads it.
    """

    start: float
    end: float
    stable: ArmStats
    canary: ArmStats
    split: TrafficSplit | None = None

    def __attrs_post_init__(self) -> None:
        _check_span(self.start, self.end)
        if not isinstance(self.stable, ArmStats):
            raise ConfigError("stable", self.stable, "must be an ArmStats")
        if not isinstance(self.canary, ArmStats):
            raise ConfigError("canary", self.canary, "must be an ArmStats")
        if self.split is not None and not isinstance(self.split, TrafficSplit):
            raise ConfigError("split", self.split, "must be a TrafficSplit or None")
        if type(self.start) is not float:
            object.__setattr__(self, "start", float(self.start))
        if type(self.end) is not float:
            object.__setattr__(self, "end", float(self.end))

    @property
    def duration(self) -> float:
        """The window's length in seconds."""
        return self.end - self.start

    def arm(self, arm: Arm) -> ArmStats:
        """Return the stats of one arm."""
        if arm is Arm.CANARY:
            return self.canary
        if arm is Arm.STABLE:
            return self.stable
        raise ConfigError("arm", arm, "must be Arm.STABLE or Arm.CANARY")

    def value(self, arm: Arm, metric: str) -> float | None:
        """Return one number for one arm, or None when there is no data for it.

        `metric` is a built-in name (`METRIC_NAMES`: "requests", "errors", "error_rate",
        "success_rate", "mean_latency", "p50", "p95", "p99", "throughput" in requests per
        second) or a gauge name. None means no data: no requests for a rate, no latency
        histogram (or an empty one), a gauge that is absent or not finite, or a name that
        is neither built in nor a gauge.
        """
        stats = self.arm(arm)
        compute = _BUILT_IN.get(metric)
        if compute is not None:
            return compute(stats, self.end - self.start)
        gauge = stats.gauges.get(metric)
        if gauge is None or not math.isfinite(gauge):
            return None
        return gauge

    def merge(self, other: Observation) -> Observation:
        """Return one observation spanning both windows (and any gap between them).

        Counts add and histograms merge; gauges average weighted by window duration.
        The split is kept when both windows had the same one; otherwise no single split
        was in force, and the merged observation has none.
        """
        if not isinstance(other, Observation):
            raise ConfigError("other", other, "must be an Observation")
        mine, theirs = self.end - self.start, other.end - other.start
        return Observation(
            start=min(self.start, other.start),
            end=max(self.end, other.end),
            stable=self.stable.merge(other.stable, weight=mine, other_weight=theirs),
            canary=self.canary.merge(other.canary, weight=mine, other_weight=theirs),
            split=self.split if self.split == other.split else None,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON (``"split"`` only when the split is known)."""
        data: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "stable": self.stable.to_json(),
            "canary": self.canary.to_json(),
        }
        if self.split is not None:
            data["split"] = self.split.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Observation:
        """Inverse of `to_json`; data without ``"split"`` (as older versions wrote) has none."""
        start, end, stable, canary = _keys("observation", data, "start", "end", "stable", "canary")
        split = data.get("split")
        return cls(
            start=start,
            end=end,
            stable=ArmStats.from_json(stable),
            canary=ArmStats.from_json(canary),
            split=None if split is None else TrafficSplit.from_json(split),
        )


_new = object.__new__
_set_requests = vars(ArmStats)["requests"].__set__  # slot descriptors, bypassing frozen
_set_errors = vars(ArmStats)["errors"].__set__
_set_latency = vars(ArmStats)["latency"].__set__
_set_gauges = vars(ArmStats)["gauges"].__set__
_set_start = vars(Observation)["start"].__set__
_set_end = vars(Observation)["end"].__set__
_set_stable = vars(Observation)["stable"].__set__
_set_canary = vars(Observation)["canary"].__set__
_set_split = vars(Observation)["split"].__set__


def _trusted_arm_stats(
    requests: int,
    errors: int,
    latency: LatencyHistogram | None,
    gauges: Mapping[str, float] = _NO_GAUGES,
) -> ArmStats:
    """Build ArmStats from parts already known valid (gauges already frozen), unchecked.

    For sources that build thousands of observations a second, such as the scripted fake.
    """
    stats: ArmStats = _new(ArmStats)
    _set_requests(stats, requests)
    _set_errors(stats, errors)
    _set_latency(stats, latency)
    _set_gauges(stats, gauges)
    return stats


def _trusted_observation(
    start: float,
    end: float,
    stable: ArmStats,
    canary: ArmStats,
    split: TrafficSplit | None = None,
) -> Observation:
    """Build an Observation from parts already known valid (float start < end), unchecked."""
    observation: Observation = _new(Observation)
    _set_start(observation, start)
    _set_end(observation, end)
    _set_stable(observation, stable)
    _set_canary(observation, canary)
    _set_split(observation, split)
    return observation
