"""The baseline-relative decider: each metric of the canary against the stable version.

How it works: every window, each `Comparison` reads one metric from both arms of the
same observation and judges the canary's change against the stable value:

- as a ratio, ``canary / stable``: ``max_ratio=1.2`` lets the canary be up to 20% above
  stable, ``min_ratio=0.9`` up to 10% below;
- as an absolute difference, ``canary - stable``: ``max_increase=0.005`` lets an error
  rate rise by half a percentage point, ``max_decrease`` bounds a fall.

``direction`` says which change is bad: "increase" (error rates, latencies), "decrease"
(success rates, throughput) or "either". It follows from the limits given (increase
limits: ``max_ratio``, ``max_increase``; decrease limits: ``min_ratio``,
``max_decrease``); when given, it must agree with them. A change in the harmless
direction passes. A change fails when it exceeds *any* limit of its direction; a value
equal to a limit passes.

Small numbers make ratios jumpy, and a zero baseline makes them infinite: a stable error
rate of 0% and a canary one of 0.1% is an infinite ratio, which fails any ``max_ratio``.
``min_difference`` is the floor that keeps that from rolling back a healthy canary at
low traffic: a change whose absolute size is at most ``min_difference`` always passes.
Zero against zero is no change (a ratio of 1). A ratio is not defined for negative
values (some gauges); such a window is INCONCLUSIVE for that metric.

``min_requests`` is the sample size each arm needs before the metric is judged: with
fewer requests in either arm the metric says NOT_YET, whatever the no-data policy (too
little traffic is not missing data). A metric without a value in either arm (no latency
histogram, a missing gauge, no requests when ``min_requests`` is 0) is handled by the
decider's `NoDataPolicy`, as in the threshold decider; a window in which every metric
was ignored is NOT_YET, never a silent pass.

The verdict is the worst of the metric verdicts, each with a reason a person can read::

    error_rate: canary 2.30% vs stable 1.00% = 2.3x > allowed 1.2x

Traffic counts (``throughput``, ``requests``, ``errors``) are compared per unit of
traffic share: each arm's count is divided by its share of the window's traffic, so a
healthy canary at 10% and a stable version at 90% both show the service's whole rate::

    throughput: canary 101/s vs stable 99.2/s per unit of share (canary 10% of the split) = 1.02x

The share is the split's canary percent when the observation carries the window's split
(an ``observation.split``) and that split is a plain weight. Otherwise (no split known,
or header routes or mirroring, which send the canary a share no weight states) it is
the measured share of the window's requests, which the reason says; per unit of a
measured share the two arms' counts are equal by construction, so such a window tests
nothing and passes.

At 100% the stable version serves no traffic, so there is nothing to compare the canary
with in the same window. The decider keeps, in its state, each metric's stable values
from the last ``record_windows`` windows that had them (10 by default), and at 100%
judges the canary against that record: the requests-weighted mean of the recorded values
(time-weighted for gauges), with the record's requests as the stable arm's for
``min_requests``. The reason says so and how old the record is::

    error_rate: canary 1.10% vs stable 1.00% = 1.1x <= allowed 1.5x (stable: record of 10
    windows before 100%, the last ended 4m ago)

A window is at 100% when its split says so, or, without a split, when the stable arm had
no requests and the canary some. The record is only as good as the stable version's
behaviour then: a load that changes over a long bake moves the canary and not the
record. A metric with no record (the plan's first watched window at 100%) and no live
stable value has no data (``no_data`` decides); `canarykit.policy.load_policy` refuses such a
plan.

The decider is pure and synchronous; its state is the stable record, plain JSON data.
To roll back only after several failed windows, wrap it:
``limited(relative(...), failure_limit=3)``.

>>> decider = relative(
...     compare("error_rate", max_ratio=1.5, min_difference=0.005, min_requests=100),
...     compare("p99", max_ratio=1.2),
... )
>>> decider.comparisons[0].direction
Direction.INCREASE
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .._durations import format_duration
from .._errors import ConfigError
from .._observe import _BUILT_IN, Observation
from .._split import TrafficSplit
from .._validate import optional_finite, printable_name, to_enum
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._compose import Composable
from ._threshold import NoDataPolicy, _to_no_data, format_value

__all__ = [
    "DEFAULT_RECORD_WINDOWS",
    "Comparison",
    "Direction",
    "RelativeDecider",
    "at_full_canary",
    "compare",
    "relative",
]

_RATES = frozenset({"error_rate", "success_rate"})
_LATENCIES = frozenset({"mean_latency", "p50", "p95", "p99"})
# Counts of traffic, which each arm gets in proportion to its share: compared per share.
_PER_SHARE = frozenset({"requests", "errors", "throughput"})

DEFAULT_RECORD_WINDOWS = 10
"""How many windows of each metric's stable values a `RelativeDecider` keeps for 100%."""
# Limits are inclusive; a relative slack absorbs float rounding (12/1000 / (10/1000) is
# not exactly 1.2) so that a value equal to a limit on paper passes.
_SLACK = 1e-9
_PASS, _NOT_YET, _INCONCLUSIVE, _FAIL = (
    VerdictKind.PASS,
    VerdictKind.NOT_YET,
    VerdictKind.INCONCLUSIVE,
    VerdictKind.FAIL,
)


class Direction(enum.Enum):
    """Which change of a metric is bad: a rise, a fall, or either."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"

    def __repr__(self) -> str:
        return f"Direction.{self.name}"


def _to_direction(value: Any) -> Any:
    return to_enum(Direction, value)


def _check_max_ratio(value: Any) -> float | None:
    number = optional_finite("max_ratio", value)
    if number is not None and number < 1:
        raise ConfigError(
            "max_ratio", value, "must be >= 1 (canary / stable; write 1.2 for up to 20% above)"
        )
    return number


def _check_min_ratio(value: Any) -> float | None:
    number = optional_finite("min_ratio", value)
    if number is not None and not 0 < number <= 1:
        raise ConfigError(
            "min_ratio", value, "must be in (0, 1] (canary / stable; write 0.9 for up to 10% below)"
        )
    return number


def _check_non_negative(field: str, value: Any) -> float | None:
    number = optional_finite(field, value)
    if number is not None and number < 0:
        raise ConfigError(field, value, "must be >= 0")
    return number


def _check_max_increase(value: Any) -> float | None:
    return _check_non_negative("max_increase", value)


def _check_max_decrease(value: Any) -> float | None:
    return _check_non_negative("max_decrease", value)


def _check_min_difference(value: Any) -> float:
    number = _check_non_negative("min_difference", value)
    if number is None:
        raise ConfigError("min_difference", value, "must be a number >= 0")
    return number


def _implied(*, rises: bool, falls: bool) -> Direction:
    """The direction that limits on a rise and/or a fall imply."""
    if rises and falls:
        return Direction.EITHER
    return Direction.INCREASE if rises else Direction.DECREASE


def _exceeds(value: float, limit: float) -> bool:
    """`value` > `limit`, beyond float rounding (an infinite value exceeds any limit)."""
    return value > limit and value - limit > _SLACK * abs(limit)


def _precise(metric: str, value: float) -> str:
    """`value` in the unit `format_value` uses, with six significant digits."""
    if metric in _RATES:
        return f"{value * 100:.6g}%"
    if metric in _LATENCIES:
        return f"{value * 1000:.6g} ms"
    if metric == "throughput":
        return f"{value:.6g}/s"
    return f"{value:.6g}"


def _show_ratio(ratio: float) -> str:
    if math.isinf(ratio):
        return "infinite ratio"
    return f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def _window_split(observation: Observation) -> TrafficSplit | None:
    """The split in force during the window, when the observation carries it."""
    split = getattr(observation, "split", None)
    return split if isinstance(split, TrafficSplit) else None


def at_full_canary(observation: Observation) -> bool:
    """Whether the window was at 100%: no traffic for the stable version to compare.

    By the window's split when the observation carries one (``observation.split``);
    otherwise when the stable arm had no requests and the canary some.

    >>> from canarykit._observe import ArmStats
    >>> at_full_canary(Observation(start=0, end=10, stable=ArmStats(requests=0),
    ...                            canary=ArmStats(requests=50)))
    True
    """
    split = _window_split(observation)
    if split is not None:
        return split.canary_percent >= 100
    return observation.stable.requests == 0 and observation.canary.requests > 0


def _shares(observation: Observation) -> tuple[float, float, str]:
    """(canary share, stable share, how it was found) of the window's traffic.

    The split's canary percent when the window's split is a plain weight; with header
    routes or mirroring (no weight states the canary's share) or no split known, the
    measured share of the window's requests.
    """
    split = _window_split(observation)
    if split is not None and not split.header_routes and split.mirror_percent == 0:
        share = split.canary_percent / 100.0
        return share, 1.0 - share, f"canary {split.canary_percent:g}% of the split"
    canary, stable = observation.canary.requests, observation.stable.requests
    total = canary + stable
    if not total:
        return 0.0, 0.0, "no requests"
    return canary / total, stable / total, f"canary {100.0 * canary / total:.3g}% of requests"


def _reader(metric: str) -> Callable[[Observation], tuple[float | None, float | None]]:
    """A function reading `metric` from both arms, (canary, stable), as `Observation.value`.

    The same computations as `Observation.value` without its per-call dispatch; a
    non-finite gauge comes back as is and counts as no data. Traffic counts come per
    unit of each arm's share (`_shares`); an arm with no share has no value.
    """
    compute = _BUILT_IN.get(metric)
    if compute is not None and metric in _PER_SHARE:
        count = compute

        def read_per_share(observation: Observation) -> tuple[float | None, float | None]:
            duration = observation.end - observation.start
            canary = count(observation.canary, duration)
            stable = count(observation.stable, duration)
            canary_share, stable_share, _ = _shares(observation)
            return (
                None if canary is None or canary_share <= 0 else canary / canary_share,
                None if stable is None or stable_share <= 0 else stable / stable_share,
            )

        return read_per_share
    if compute is not None:
        built_in = compute

        def read_built_in(observation: Observation) -> tuple[float | None, float | None]:
            duration = observation.end - observation.start
            return built_in(observation.canary, duration), built_in(observation.stable, duration)

        return read_built_in

    def read_gauge(observation: Observation) -> tuple[float | None, float | None]:
        return observation.canary.gauges.get(metric), observation.stable.gauges.get(metric)

    return read_gauge


# One recorded stable window of a metric: (window end, value, weight, requests). The
# weight is the stable arm's requests for a built-in metric and the window's length for a
# gauge; requests stand in for the stable arm's at 100% (``min_requests``).
_Entry = tuple[float, float, float, int]


@attrs.frozen
class _Record:
    """A metric's recorded stable windows, summed up for a window at 100%."""

    value: float
    requests: int
    windows: int
    last_end: float

    @classmethod
    def of(cls, entries: list[_Entry]) -> _Record:
        weight = sum(entry[2] for entry in entries)
        if weight > 0:
            value = sum(entry[1] * entry[2] for entry in entries) / weight
        else:
            value = sum(entry[1] for entry in entries) / len(entries)
        requests = sum(entry[3] for entry in entries)
        return cls(value=value, requests=requests, windows=len(entries), last_end=entries[-1][0])

    def describe(self, now: float) -> str:
        windows = "1 window" if self.windows == 1 else f"{self.windows} windows"
        age = format_duration(float(max(0, round(now - self.last_end))))
        return f" (stable: record of {windows} before 100%, the last ended {age} ago)"


def _read_record(state: Any) -> dict[str, list[_Entry]]:
    """The stable record in a `RelativeDecider` state, checked (it may come from JSON)."""
    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise ConfigError("state", state, "must be a RelativeDecider state ({'record': {...}})")
    record = state.get("record", {})
    if not isinstance(record, Mapping):
        raise ConfigError("state['record']", record, "must map metric names to lists")
    checked: dict[str, list[_Entry]] = {}
    for metric, entries in record.items():
        if not isinstance(entries, list):
            raise ConfigError(f"state['record'][{metric!r}]", entries, "must be a list")
        rows: list[_Entry] = []
        for entry in entries:
            if (
                not isinstance(entry, (list, tuple))
                or len(entry) != 4
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in entry)
                or not all(math.isfinite(x) for x in entry)
                or isinstance(entry[3], float)
            ):
                raise ConfigError(
                    f"state['record'][{metric!r}]",
                    entry,
                    "must hold [end, value, weight, requests] entries",
                )
            rows.append((float(entry[0]), float(entry[1]), float(entry[2]), int(entry[3])))
        checked[str(metric)] = rows
    return checked


def _fine_ratio(ratio: float) -> str:
    return _show_ratio(ratio) if math.isinf(ratio) else f"{ratio:.6g}x"


@attrs.frozen(kw_only=True, repr=False)
class Comparison:
    """How far one metric of the canary may move from the stable version's.

    Give at least one limit: ``max_ratio`` (>= 1) or ``max_increase`` (>= 0) bound a
    rise, ``min_ratio`` (in (0, 1]) or ``max_decrease`` (>= 0) bound a fall.
    ``direction`` defaults to what the limits imply. ``min_difference`` is an absolute
    floor below which a change never fails; ``min_requests`` the requests each arm needs
    before the metric is judged (NOT_YET below). Rate limits are fractions (0.005 is
    half a percentage point).

    >>> c = Comparison(metric="error_rate", max_ratio=1.2, min_difference=0.001)
    >>> c
    Comparison(metric='error_rate', max_ratio=1.2, min_difference=0.001)
    >>> str(c)
    'error_rate: canary <= 1.2x stable (changes within 0.10% pass)'
    """

    metric: str
    max_ratio: float | None = attrs.field(default=None, converter=_check_max_ratio)
    min_ratio: float | None = attrs.field(default=None, converter=_check_min_ratio)
    max_increase: float | None = attrs.field(default=None, converter=_check_max_increase)
    max_decrease: float | None = attrs.field(default=None, converter=_check_max_decrease)
    direction: Direction = attrs.field(default=None, converter=_to_direction)
    min_difference: float = attrs.field(default=0.0, converter=_check_min_difference)
    min_requests: int = 0
    # Derived once, for speed: how to read both values, and the limits as text.
    _read: Callable[[Observation], tuple[float | None, float | None]] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _texts: dict[str, str] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        rises = self.max_ratio is not None or self.max_increase is not None
        falls = self.min_ratio is not None or self.max_decrease is not None
        if not rises and not falls:
            raise ConfigError(
                "max_ratio",
                None,
                "a comparison needs a limit: max_ratio, max_increase, min_ratio or max_decrease",
            )
        direction = self.direction
        if direction is None:
            object.__setattr__(self, "direction", _implied(rises=rises, falls=falls))
        elif not isinstance(direction, Direction):
            raise ConfigError("direction", direction, "must be 'increase', 'decrease' or 'either'")
        elif direction is Direction.INCREASE and falls:
            field = "min_ratio" if self.min_ratio is not None else "max_decrease"
            raise ConfigError(
                field, getattr(self, field), "limits a decrease, but direction is 'increase'"
            )
        elif direction is Direction.DECREASE and rises:
            field = "max_ratio" if self.max_ratio is not None else "max_increase"
            raise ConfigError(
                field, getattr(self, field), "limits an increase, but direction is 'decrease'"
            )
        elif direction is Direction.EITHER and not (rises and falls):
            field, need = (
                ("min_ratio", "min_ratio or max_decrease")
                if rises
                else ("max_ratio", "max_ratio or max_increase")
            )
            raise ConfigError(field, None, f"direction 'either' needs a limit each way; add {need}")
        if self.metric in _RATES:
            for field in ("max_increase", "max_decrease", "min_difference"):
                limit = getattr(self, field)
                if limit is not None and limit > 1:
                    raise ConfigError(
                        field,
                        limit,
                        f"{self.metric} is a fraction in [0, 1] (write 0.005 for 0.5%)",
                    )
        count = self.min_requests
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError("min_requests", count, "must be an integer >= 0")
        object.__setattr__(self, "_read", _reader(self.metric))
        texts = {}
        for name in ("max_ratio", "min_ratio"):
            limit = getattr(self, name)
            if limit is not None:
                texts[name] = _show_ratio(limit)
        for name in ("max_increase", "max_decrease", "min_difference"):
            limit = getattr(self, name)
            if limit is not None:
                texts[name] = format_value(self.metric, limit)
        object.__setattr__(self, "_texts", texts)

    def __repr__(self) -> str:
        parts = [f"metric={self.metric!r}"]
        for name in ("max_ratio", "min_ratio", "max_increase", "max_decrease"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        # The direction always agrees with the limits (validation sees to it): not shown.
        if self.min_difference:
            parts.append(f"min_difference={self.min_difference!r}")
        if self.min_requests:
            parts.append(f"min_requests={self.min_requests!r}")
        return f"Comparison({', '.join(parts)})"

    def __str__(self) -> str:
        texts = self._texts
        rules = []
        if self.max_ratio is not None:
            rules.append(f"canary <= {texts['max_ratio']} stable")
        if self.max_increase is not None:
            rules.append(f"canary <= stable + {texts['max_increase']}")
        if self.min_ratio is not None:
            rules.append(f"canary >= {texts['min_ratio']} stable")
        if self.max_decrease is not None:
            rules.append(f"canary >= stable - {texts['max_decrease']}")
        text = f"{self.metric}: {', '.join(rules)}"
        if self.min_difference:
            text += f" (changes within {texts['min_difference']} pass)"
        if self.min_requests:
            text += f" (judged from {self.min_requests} requests per arm)"
        return text

    def check(self, observation: Observation) -> MetricVerdict | None:
        """The metric's verdict for one window; None when either arm has no value for it.

        NOT_YET when either arm has fewer than ``min_requests`` requests; otherwise PASS
        or FAIL against the limits (INCONCLUSIVE for a ratio of negative values). Both
        arms come from this window (`RelativeDecider` also uses its stable record at 100%).
        """
        verdict, _ = self._check(observation, None)
        return verdict

    def _check(
        self, observation: Observation, record: _Record | None
    ) -> tuple[MetricVerdict | None, _Entry | None]:
        """The verdict, and the stable value to record from this window (or None).

        With a `record` (given for windows at 100% only) the stable arm is the record.
        """
        canary, stable = self._read(observation)
        stable_n = observation.stable.requests
        note = ""
        entry: _Entry | None = None
        if record is not None:
            stable, stable_n = record.value, record.requests
            note = record.describe(observation.end)
        elif stable is not None and math.isfinite(stable):
            built_in = self.metric in _BUILT_IN
            weight = float(stable_n) if built_in else observation.end - observation.start
            entry = (observation.end, stable, weight, stable_n)
        if self.min_requests:
            canary_n = observation.canary.requests
            if canary_n < self.min_requests or stable_n < self.min_requests:
                reason = (
                    f"too few requests to judge: canary {canary_n}, stable {stable_n} "
                    f"(need {self.min_requests} each){note}"
                )
                return MetricVerdict(metric=self.metric, kind=_NOT_YET, reason=reason), entry
        if canary is None or stable is None or not math.isfinite(canary + stable):
            return None, entry
        unit = ""
        if self.metric in _PER_SHARE:
            unit = f" per unit of share ({_shares(observation)[2]})"
        kind, reason = self._judge_values(canary, stable, unit)
        verdict = MetricVerdict(metric=self.metric, kind=kind, reason=reason + note, value=canary)
        return verdict, entry

    def _judge_values(
        self, canary: float, stable: float, unit: str = ""
    ) -> tuple[VerdictKind, str]:
        metric = self.metric
        both = (
            f"canary {format_value(metric, canary)} vs stable {format_value(metric, stable)}{unit}"
        )
        difference = canary - stable
        if difference == 0:
            return _PASS, f"{both}: no change"
        size = -difference if difference < 0 else difference
        floor = self.min_difference
        if floor and not _exceeds(size, floor):
            shown, allowed = self._against(size, floor, self._texts["min_difference"], False)
            sign = "-" if difference < 0 else "+"
            return _PASS, f"{both}: difference {sign}{shown} within min difference {allowed}"
        rising = difference > 0
        if rising:
            if self.direction is Direction.DECREASE:
                return _PASS, f"{both} = {self._change(canary, stable)}, not a decrease"
            ratio_limit, difference_limit = self.max_ratio, self.max_increase
            ratio_text = self._texts.get("max_ratio", "")
            difference_text = self._texts.get("max_increase", "")
            sign, worse, better = "+", " > allowed ", " <= allowed "
        else:
            if self.direction is Direction.INCREASE:
                return _PASS, f"{both} = {self._change(canary, stable)}, not an increase"
            ratio_limit, difference_limit = self.min_ratio, self.max_decrease
            ratio_text = self._texts.get("min_ratio", "")
            difference_text = self._texts.get("max_decrease", "")
            sign, worse, better = "-", " < allowed ", " >= allowed "
        failed = False
        parts = []
        if ratio_limit is not None:
            if canary < 0 or stable < 0:
                return _INCONCLUSIVE, f"{both}: a ratio is not defined for negative values"
            ratio = canary / stable if stable > 0 else (math.inf if canary > 0 else 1.0)
            bad = _exceeds(ratio, ratio_limit) if rising else _exceeds(ratio_limit, ratio)
            shown, allowed = self._against(ratio, ratio_limit, ratio_text, True)
            parts.append(shown + (worse if bad else better) + allowed)
            failed = bad
        if difference_limit is not None:
            bad = _exceeds(size, difference_limit)
            shown, allowed = self._against(size, difference_limit, difference_text, False)
            if bad and not failed:
                parts.clear()  # a failure's reason names only the limits it breaks
            if bad or not failed:
                parts.append(f"{sign}{shown}{worse if bad else better}{sign}{allowed}")
            failed = failed or bad
        return (_FAIL if failed else _PASS), f"{both} = {', '.join(parts)}"

    def _change(self, canary: float, stable: float) -> str:
        """The change from stable to canary as a ratio (if ratios are judged) or difference."""
        by_ratio = self.max_ratio is not None or self.min_ratio is not None
        if by_ratio and canary >= 0 and stable >= 0:
            return _show_ratio(canary / stable if stable > 0 else math.inf)
        difference = canary - stable
        return ("-" if difference < 0 else "+") + format_value(self.metric, abs(difference))

    def _against(self, value: float, limit: float, limit_text: str, ratio: bool) -> tuple[str, str]:
        """Texts for `value` and `limit` that differ whenever the numbers really do."""
        shown = _show_ratio(value) if ratio else format_value(self.metric, value)
        # Equal texts for unequal numbers read wrong ("1.2x > allowed 1.2x"); values equal
        # but for float rounding keep the short texts.
        if shown == limit_text and (_exceeds(value, limit) or _exceeds(limit, value)):
            if ratio:
                return _fine_ratio(value), _fine_ratio(limit)
            return _precise(self.metric, value), _precise(self.metric, limit)
        return shown, limit_text

    def missing(self, observation: Observation) -> str:
        """Which arm lacks a value, as words: "no canary data", "no data for either arm"."""
        canary, stable = self._read(observation)
        canary = None if canary is None or not math.isfinite(canary) else canary
        stable = None if stable is None or not math.isfinite(stable) else stable
        if canary is None and stable is None:
            return "no data for either arm"
        return "no canary data" if canary is None else "no stable data"


def _to_comparisons(value: Any) -> tuple[Any, ...]:
    if isinstance(value, Comparison):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("comparisons", value, "must be a sequence of Comparison")
    return tuple(value)


@attrs.frozen(kw_only=True)
class RelativeDecider(Composable):
    """Judge each metric of the canary against the stable version in the same window.

    Pure and synchronous; the verdict is the worst of the `comparisons`' verdicts.
    ``no_data`` says what a metric without a value means (INCONCLUSIVE by default: the
    rollout pauses). The state is the stable record: each metric's stable values from the
    last `record_windows` windows that had them, against which a window at 100% is
    judged (see the module's documentation).

    >>> decider = RelativeDecider(comparisons=[Comparison(metric="p99", max_ratio=1.2)])
    >>> decider.no_data, decider.record_windows
    (NoDataPolicy.INCONCLUSIVE, 10)
    """

    comparisons: tuple[Comparison, ...] = attrs.field(converter=_to_comparisons)
    no_data: NoDataPolicy = attrs.field(default=NoDataPolicy.INCONCLUSIVE, converter=_to_no_data)
    record_windows: int = DEFAULT_RECORD_WINDOWS

    def __attrs_post_init__(self) -> None:
        windows = self.record_windows
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            raise ConfigError("record_windows", windows, "must be an integer >= 1")
        if not self.comparisons:
            raise ConfigError("comparisons", self.comparisons, "must hold at least one comparison")
        for index, item in enumerate(self.comparisons):
            if not isinstance(item, Comparison):
                raise ConfigError(f"comparisons[{index}]", item, "must be a Comparison")
        if not isinstance(self.no_data, NoDataPolicy):
            raise ConfigError("no_data", self.no_data, "must be 'fail', 'inconclusive' or 'ignore'")

    def __str__(self) -> str:
        comparisons = "; ".join(str(c) for c in self.comparisons)
        return f"relative to stable: {comparisons}; no data: {self.no_data.value}"

    def initial_state(self) -> dict[str, Any]:
        """An empty stable record."""
        return {"record": {}}

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Judge one window: each metric of the canary against the stable version's.

        At 100% (`at_full_canary`) the stable version's values are those of the record.
        """
        record = _read_record(state)
        full = at_full_canary(observation)
        judged: list[MetricVerdict] = []
        ignored: list[str] = []
        recorded: dict[str, _Entry] = {}
        policy = self.no_data
        for item in self.comparisons:
            entries = record.get(item.metric) if full else None
            summary = _Record.of(entries) if entries else None
            metric_verdict, entry = item._check(observation, summary)
            if entry is not None:
                recorded[item.metric] = entry
            if metric_verdict is None:
                if policy is NoDataPolicy.IGNORE:
                    ignored.append(item.metric)
                    continue
                missing = item.missing(observation)
                if full and summary is None:
                    missing += " (at 100%, and no stable record from before)"
                if policy is NoDataPolicy.FAIL:
                    metric_verdict = MetricVerdict(
                        metric=item.metric, kind=_FAIL, reason=f"{missing}, counted as a failure"
                    )
                else:
                    metric_verdict = MetricVerdict(
                        metric=item.metric, kind=_INCONCLUSIVE, reason=missing
                    )
            judged.append(metric_verdict)
        if judged:
            kind = VerdictKind.worst(m.kind for m in judged)
            shown = [m for m in judged if m.kind is kind]
            reason = "; ".join(f"{m.metric}: {m.reason}" for m in shown)
            notes = {m.reason[m.reason.rfind(" (stable: record") :] for m in shown}
            if full and len(notes) == 1:
                # The same record note after every metric: said once, at the end.
                (note,) = notes
                if note.startswith(" (stable: record"):
                    body = "; ".join(f"{m.metric}: {m.reason.removesuffix(note)}" for m in shown)
                    reason = body + note
        else:
            # Every metric was ignored for lack of data: never a silent pass.
            kind, reason = _NOT_YET, "no data for any metric, nothing judged"
        if ignored:
            reason = f"{reason}; no data, ignored: {', '.join(ignored)}"
        keep = self.record_windows
        for metric, entry in recorded.items():
            record[metric] = [*record.get(metric, ()), entry][-keep:]
        state_out = {"record": {metric: [list(e) for e in rows] for metric, rows in record.items()}}
        return Judgement(Verdict(kind=kind, reason=reason, metrics=judged), state_out)


def compare(
    metric: str,
    *,
    max_ratio: float | None = None,
    min_ratio: float | None = None,
    max_increase: float | None = None,
    max_decrease: float | None = None,
    direction: Direction | str | None = None,
    min_difference: float = 0.0,
    min_requests: int = 0,
) -> Comparison:
    """Make a `Comparison` of `metric`, canary against stable.

    >>> compare("error_rate", max_ratio=1.2, max_increase=0.005)
    Comparison(metric='error_rate', max_ratio=1.2, max_increase=0.005)
    >>> compare("throughput", min_ratio=0.8).direction
    Direction.DECREASE
    >>> compare("cpu", max_ratio=1.3, min_ratio=0.7).direction
    Direction.EITHER
    """
    return Comparison(
        metric=metric,
        max_ratio=max_ratio,
        min_ratio=min_ratio,
        max_increase=max_increase,
        max_decrease=max_decrease,
        direction=direction,  # None: implied by the limits
        min_difference=min_difference,
        min_requests=min_requests,
    )


def relative(
    *comparisons: Comparison,
    no_data: NoDataPolicy | str = NoDataPolicy.INCONCLUSIVE,
    record_windows: int = DEFAULT_RECORD_WINDOWS,
) -> RelativeDecider:
    """Make a `RelativeDecider` over `comparisons`.

    >>> decider = relative(compare("p99", max_ratio=1.2), no_data="ignore")
    >>> str(decider)
    'relative to stable: p99: canary <= 1.2x stable; no data: ignore'
    """
    return RelativeDecider(comparisons=comparisons, no_data=no_data, record_windows=record_windows)
