"""Kayenta's judge: Mann-Whitney per metric, labels, weighted group scores, thresholds.

How it works. Netflix's Kayenta judges a canary on data points per arm (per minute in
Kayenta; here one point per arm per window, from ``observation.value(arm, metric)``),
and on the whole latency histogram for the metric ``"latency"``. The decider's state
accumulates them: the last `max_points` points per arm for each scalar metric, and the
cumulative histograms per arm, all JSON-able. Every `judge_every` windows it judges:

1. Per `KayentaMetric`: missing points (None, NaN) are removed or replaced by 0
   (``nan_strategy``; an arm without a single reading has no data either way);
   outliers beyond 3 interquartile ranges are removed per arm
   (``outliers="remove"``, Kayenta's ``IQRDetector(factor=3.0)``; nothing is removed
   when the interquartile range is 0, so a mostly-zero error rate keeps its errors).
   The Mann-Whitney test and the Hodges-Lehmann interval at ``confidence`` (0.98) follow
   (see `canarykit.deciders.mann_whitney`). The label is **High** when the interval
   lies above ``tolerance x |estimate|`` (0.25) and the effect size (mean of canary /
   mean of stable; 1.0 when the stable mean is 0) is at least ``allowed_increase``;
   **Low** likewise below, with ``allowed_decrease``; otherwise **Pass**. Only the
   directions named by ``direction`` are labelled. No data in either arm is
   **Nodata**, or **NodataFailure** when ``must_have_data``. Identical data, or a
   single value across both arms, is a Pass. For latency the shift is in log-latency
   (histogram buckets), so the tolerance applies to it there.
2. A critical metric that is High (effect >= ``critical_increase``), Low (<=
   ``critical_decrease``) or Nodata is a critical failure: the score is 0.
3. Group score = 100 x Pass / (Pass + High + Low + NodataFailure); a group with none of
   those counts 100. The score is the weighted sum (Kayenta's rule: groups without a
   weight share what the given weights leave of 100; then the weights are normalised),
   rounded to 2 decimals. When ``nodata_fail_percent`` (50) or more of the metrics are
   Nodata, the score is 0, as in Kayenta.
4. As Spinnaker reads the score: at or below ``marginal_threshold`` (75) is FAIL, at or
   above ``pass_threshold`` (95) PASS, in between INCONCLUSIVE (a person should look).

Between judgements the verdict is NOT_YET. A judgement waits (NOT_YET, retried every
window) while any metric has data but fewer than `min_points` points in an arm (for
latency: requests in the histogram), and while every metric is Nodata (unless rule 2 or
``nodata_fail_percent`` fails it): no data is never a pass.

>>> judge = kayenta(
...     kayenta_metric("error_rate", direction="increase", critical=True),
...     kayenta_metric("latency", direction="increase"),
...     judge_every=360,
... )
>>> judge.initial_state()["next_judgement"]
360
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from operator import add
from types import MappingProxyType
from typing import Any, Literal

import attrs

from .._errors import ConfigError
from .._histogram import MAX_INDEX, MIN_INDEX, LatencyHistogram
from .._observe import Arm, Observation
from .._validate import MAX_COUNT, finite, printable_name
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._compose import Composable
from ._mannwhitney import (
    ShiftEstimate,
    bucket_ratio,
    hodges_lehmann,
    hodges_lehmann_histograms,
    mann_whitney,
    mann_whitney_histograms,
)
from ._threshold import format_value

__all__ = [
    "Classification",
    "KayentaJudge",
    "KayentaMetric",
    "KayentaScore",
    "kayenta",
    "kayenta_metric",
    "kayenta_score",
]

LATENCY = "latency"
_DIRECTIONS = ("increase", "decrease", "either")
_NAN_STRATEGIES = ("remove", "replace")
_OUTLIERS = ("keep", "remove")
_IQR_FACTOR = 3.0

Label = Literal["Pass", "High", "Low", "Nodata", "NodataFailure"]
_COUNTED = frozenset({"Pass", "High", "Low", "NodataFailure"})
_KIND: Mapping[str, VerdictKind] = MappingProxyType(
    {
        "Pass": VerdictKind.PASS,
        "High": VerdictKind.FAIL,
        "Low": VerdictKind.FAIL,
        "NodataFailure": VerdictKind.FAIL,
        "Nodata": VerdictKind.NOT_YET,
    }
)


def _show(metric: str, value: float) -> str:
    return format_value(metric, value)


def _p(value: float) -> str:
    return "p<0.0001" if value < 1e-4 else f"p={value:.4f}"


@attrs.frozen(kw_only=True)
class Classification:
    """One metric's label and the numbers behind it.

    `critical_failure` says this label fails the whole judgement (score 0). `effect` is
    the mean ratio canary / stable; `shift` the Hodges-Lehmann interval (in buckets for
    latency); `p_value` the two-sided Mann-Whitney p-value.
    """

    metric: str
    label: str
    reason: str
    critical_failure: bool = False
    effect: float | None = None
    shift: ShiftEstimate | None = None
    p_value: float | None = None

    def to_metric_verdict(self) -> MetricVerdict:
        """The per-metric verdict: Pass is PASS, High/Low/NodataFailure FAIL, Nodata NOT_YET."""
        return MetricVerdict(
            metric=self.metric, kind=_KIND[self.label], reason=self.reason, value=self.effect
        )


@attrs.frozen(kw_only=True)
class KayentaMetric:
    """How Kayenta judges one metric (see the module docstring for the rules).

    `metric` is any `Observation.value` metric (compare rates such as ``error_rate``, not
    counts, since the arms get different traffic), or ``"latency"`` for the whole
    latency histogram. `direction` names the bad change. `allowed_increase` /
    `allowed_decrease` are Kayenta's ``allowedIncrease`` / ``allowedDecrease`` (mean
    ratios, 1.0 by default: any significant change counts); `critical_increase` /
    `critical_decrease` (None: 1.0) bound the critical failures. `group` defaults to the
    metric's name.

    >>> m = KayentaMetric(metric="error_rate", direction="increase", allowed_increase=1.2)
    >>> m.group, m.confidence, m.tolerance
    ('error_rate', 0.98, 0.25)
    """

    metric: str
    direction: str = "either"
    allowed_increase: float = 1.0
    allowed_decrease: float = 1.0
    critical: bool = False
    critical_increase: float | None = None
    critical_decrease: float | None = None
    must_have_data: bool = False
    nan_strategy: str = "remove"
    outliers: str = "remove"
    group: str = ""
    confidence: float = 0.98
    tolerance: float = 0.25

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        if self.direction not in _DIRECTIONS:
            raise ConfigError(
                "direction", self.direction, "must be 'increase', 'decrease' or 'either'"
            )
        increase = finite("allowed_increase", self.allowed_increase)
        if increase < 1.0:
            raise ConfigError(
                "allowed_increase", self.allowed_increase, "must be >= 1 (a mean ratio)"
            )
        decrease = finite("allowed_decrease", self.allowed_decrease)
        if not 0.0 < decrease <= 1.0:
            raise ConfigError(
                "allowed_decrease", self.allowed_decrease, "must be in (0, 1] (a mean ratio)"
            )
        object.__setattr__(self, "allowed_increase", increase)
        object.__setattr__(self, "allowed_decrease", decrease)
        for name in ("critical_increase", "critical_decrease"):
            value = getattr(self, name)
            if value is not None:
                number = finite(name, value)
                if number <= 0:
                    raise ConfigError(name, value, "must be a mean ratio > 0")
                object.__setattr__(self, name, number)
        for name in ("critical", "must_have_data"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be True or False")
        if self.nan_strategy not in _NAN_STRATEGIES:
            raise ConfigError("nan_strategy", self.nan_strategy, "must be 'remove' or 'replace'")
        if self.outliers not in _OUTLIERS:
            raise ConfigError("outliers", self.outliers, "must be 'keep' or 'remove'")
        if not isinstance(self.group, str):
            raise ConfigError("group", self.group, "must be a group name")
        if not self.group:
            object.__setattr__(self, "group", self.metric)
        printable_name("group", self.group, "group name")
        confidence = finite("confidence", self.confidence)
        if not 0.0 < confidence < 1.0:
            raise ConfigError("confidence", self.confidence, "must be in (0, 1)")
        object.__setattr__(self, "confidence", confidence)
        tolerance = finite("tolerance", self.tolerance)
        if tolerance < 0:
            raise ConfigError("tolerance", self.tolerance, "must be >= 0")
        object.__setattr__(self, "tolerance", tolerance)

    # -- data preparation -----------------------------------------------------------------

    def clean(self, values: Iterable[float | None]) -> list[float]:
        """One arm's points after the NaN strategy and outlier removal.

        >>> KayentaMetric(metric="cpu", nan_strategy="replace").clean([0.5, None, 0.25])
        [0.5, 0.0, 0.25]
        """
        points: list[float] = []
        for value in values:
            if value is None or not math.isfinite(value):
                if self.nan_strategy == "replace":
                    points.append(0.0)
            else:
                points.append(float(value))
        if self.outliers == "remove" and len(points) >= 4:
            q1, _, q3 = statistics.quantiles(points, n=4, method="exclusive")
            spread = q3 - q1
            if spread > 0:
                low, high = q1 - _IQR_FACTOR * spread, q3 + _IQR_FACTOR * spread
                points = [v for v in points if low <= v <= high]
        return points

    # -- classification -------------------------------------------------------------------

    def classify(
        self, canary: Iterable[float | None], stable: Iterable[float | None]
    ) -> Classification:
        """Label the canary's points against the stable ones (NaN/None handled here).

        >>> m = KayentaMetric(metric="error_rate", direction="increase")
        >>> m.classify([0.05, 0.06, 0.05, 0.07] * 10, [0.01, 0.02, 0.01, 0.015] * 10).label
        'High'
        """
        canary, stable = list(canary), list(stable)
        if not _has_reading(canary) or not _has_reading(stable):
            # "replace" fills gaps; it must not turn an arm without any reading into a
            # run of zeros that passes (Kayenta too labels an empty series Nodata).
            return self._no_data()
        xs, ys = self.clean(canary), self.clean(stable)
        if not xs or not ys:
            return self._no_data()
        if sorted(xs) == sorted(ys):
            return self._pass_identical()
        if len(set(xs) | set(ys)) == 1:
            return self._pass_identical()
        stable_mean = math.fsum(ys) / len(ys)
        effect = 1.0 if stable_mean == 0 else (math.fsum(xs) / len(xs)) / stable_mean
        shift = hodges_lehmann(xs, ys, confidence=self.confidence)
        p_value = mann_whitney(xs, ys).p_value
        show = self.metric
        text = (
            f"shift {_signed(show, shift.estimate)} "
            f"[{_signed(show, shift.lower)}, {_signed(show, shift.upper)}] "
            f"at {self.confidence:.0%}, {_p(p_value)}, {len(xs)} vs {len(ys)} points"
        )
        return self._label(effect, shift, p_value, text)

    def classify_histograms(
        self, canary: LatencyHistogram | None, stable: LatencyHistogram | None
    ) -> Classification:
        """Label the canary's latency histogram against the stable one.

        >>> slow = LatencyHistogram.from_counts({-40: 300, -39: 400, -38: 300})
        >>> fast = LatencyHistogram.from_counts({-42: 300, -41: 400, -40: 300})
        >>> KayentaMetric(metric="latency").classify_histograms(slow, fast).label
        'High'
        """
        if canary is None or stable is None or not canary.counts or not stable.counts:
            return self._no_data()
        if canary.offset == stable.offset and canary.counts == stable.counts:
            return self._pass_identical()
        if len(canary.counts) == 1 and len(stable.counts) == 1 and canary.offset == stable.offset:
            return self._pass_identical()
        stable_mean, canary_mean = stable.mean, canary.mean
        assert stable_mean is not None and canary_mean is not None
        effect = 1.0 if stable_mean == 0 else canary_mean / stable_mean
        shift = hodges_lehmann_histograms(canary, stable, confidence=self.confidence)
        p_value = mann_whitney_histograms(canary, stable).p_value
        text = (
            f"latency x{bucket_ratio(shift.estimate):.3f} "
            f"[x{bucket_ratio(shift.lower):.3f}, x{bucket_ratio(shift.upper):.3f}] "
            f"at {self.confidence:.0%}, {_p(p_value)}, {canary.count} vs {stable.count} requests"
        )
        return self._label(effect, shift, p_value, text)

    def _label(
        self, effect: float, shift: ShiftEstimate, p_value: float, text: str
    ) -> Classification:
        bound = self.tolerance * abs(shift.estimate)
        high = (
            self.direction in ("increase", "either")
            and shift.lower > bound
            and effect >= self.allowed_increase
        )
        low = (
            self.direction in ("decrease", "either")
            and shift.upper < -bound
            and effect <= self.allowed_decrease
        )
        critical = False
        if high:
            label = "High"
            limit = 1.0 if self.critical_increase is None else self.critical_increase
            critical = self.critical and effect >= limit
            allowed = f"allowed {self.allowed_increase:.2f}"
        elif low:
            label = "Low"
            limit = 1.0 if self.critical_decrease is None else self.critical_decrease
            critical = self.critical and effect <= limit
            allowed = f"allowed {self.allowed_decrease:.2f}"
        else:
            label, allowed = "Pass", "no significant change in a bad direction"
        marker = " (critical)" if critical else ""
        reason = f"{label}{marker}: mean ratio {effect:.3f} ({allowed}), {text}"
        return Classification(
            metric=self.metric,
            label=label,
            reason=reason,
            critical_failure=critical,
            effect=effect,
            shift=shift,
            p_value=p_value,
        )

    def _no_data(self) -> Classification:
        if self.must_have_data and not self.critical:
            return Classification(
                metric=self.metric,
                label="NodataFailure",
                reason="NodataFailure: no data, data required",
            )
        critical = " (critical)" if self.critical else ""
        return Classification(
            metric=self.metric,
            label="Nodata",
            reason=f"Nodata{critical}: no data in an arm",
            critical_failure=self.critical,
        )

    def _pass_identical(self) -> Classification:
        return Classification(
            metric=self.metric,
            label="Pass",
            reason="Pass: canary and stable data are identical",
            effect=1.0,
        )


def _signed(metric: str, value: float) -> str:
    text = _show(metric, abs(value))
    return f"-{text}" if value < 0 else f"+{text}"


# -- scoring -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KayentaScore:
    """A judgement's score (0 to 100), its group scores, and why it is 0 when it is."""

    score: float
    groups: Mapping[str, float]
    failure: str | None = None

    def summary(self) -> str:
        """E.g. ``score 83.33 (errors 100, latency 66.67)``."""
        groups = ", ".join(f"{name} {_num(score)}" for name, score in self.groups.items())
        text = f"score {_num(self.score)} ({groups})"
        return f"{text}: {self.failure}" if self.failure else text


def _num(value: float) -> str:
    return f"{round(value, 2):g}"


def kayenta_score(
    classifications: Sequence[tuple[KayentaMetric, Classification]],
    *,
    group_weights: Mapping[str, float] | None = None,
    nodata_fail_percent: float | None = 50.0,
) -> KayentaScore:
    """Kayenta's weighted-sum score of labelled metrics.

    >>> m, n = KayentaMetric(metric="a", group="g"), KayentaMetric(metric="b", group="g")
    >>> ok = Classification(metric="a", label="Pass", reason="")
    >>> bad = Classification(metric="b", label="High", reason="")
    >>> kayenta_score([(m, ok), (n, bad)]).score
    50.0
    """
    groups: dict[str, list[str]] = {}
    for metric, found in classifications:
        groups.setdefault(metric.group, []).append(found.label)
    group_scores: dict[str, float] = {}
    for name, labels in groups.items():
        counted = [label for label in labels if label in _COUNTED]
        group_scores[name] = 100.0 * counted.count("Pass") / len(counted) if counted else math.nan
    shown = {name: (100.0 if math.isnan(s) else s) for name, s in group_scores.items()}
    critical = [found for _, found in classifications if found.critical_failure]
    if critical:
        return KayentaScore(
            score=0.0, groups=shown, failure=f"critical failure: {critical[0].reason}"
        )
    nodata = sum(1 for _, found in classifications if found.label == "Nodata")
    if (
        nodata_fail_percent is not None
        and classifications
        and nodata * 100.0 / len(classifications) >= nodata_fail_percent
    ):
        return KayentaScore(
            score=0.0,
            groups=shown,
            failure=f"{nodata} of {len(classifications)} metrics have no data",
        )
    weights = _weights(list(shown), group_weights or {})
    total_weight = sum(weights.values())
    score = sum(shown[name] * weights[name] for name in shown) / total_weight
    return KayentaScore(score=round(score, 2), groups=shown)


def _weights(groups: list[str], given: Mapping[str, float]) -> dict[str, float]:
    # Kayenta: groups without a weight share what the given weights leave of 100.
    missing = [name for name in groups if name not in given]
    left = max(100.0 - sum(given.values()), 0.0)
    weights = {
        name: float(given.get(name, left / len(missing) if missing else 0.0)) for name in groups
    }
    if sum(weights.values()) <= 0:
        return dict.fromkeys(groups, 1.0)
    return weights


# -- the decider -----------------------------------------------------------------------------


def _to_metrics(value: Any) -> tuple[Any, ...]:
    if isinstance(value, KayentaMetric):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("metrics", value, "must be a sequence of KayentaMetric")
    return tuple(value)


def _to_weights(value: Any) -> Mapping[str, float]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigError("group_weights", value, "must be a mapping of group name to weight")
    weights: dict[str, float] = {}
    for name, weight in value.items():
        number = finite(f"group_weights[{name!r}]", weight)
        if number < 0:
            raise ConfigError(f"group_weights[{name!r}]", weight, "must be >= 0")
        weights[str(name)] = number
    return MappingProxyType(weights)


def _positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, value, "must be an integer >= 1")
    if value > MAX_COUNT:
        raise ConfigError(field, value, "must be at most 2**53")


_EMPTY_HISTOGRAM: dict[str, Any] = {"offset": 0, "counts": [], "sum": 0.0}
_STATE_KEYS = 5


@attrs.frozen(kw_only=True)
class KayentaJudge(Composable):
    """Kayenta's canary judge as a decider; see the module docstring.

    State (JSON-able): ``{"windows", "next_judgement", "points": {metric: {"canary": [...],
    "stable": [...]}}, "latency": {"canary": hist, "stable": hist} | None, "last_score"}``,
    a histogram as ``{"offset", "counts", "sum"}``.

    >>> judge = KayentaJudge(metrics=[KayentaMetric(metric="error_rate")], judge_every=60)
    >>> judge.marginal_threshold, judge.pass_threshold, judge.min_points
    (75.0, 95.0, 50)
    """

    metrics: tuple[KayentaMetric, ...] = attrs.field(converter=_to_metrics)
    group_weights: Mapping[str, float] = attrs.field(
        default=None, converter=_to_weights, repr=lambda w: repr(dict(w))
    )
    marginal_threshold: float = 75.0
    pass_threshold: float = 95.0
    judge_every: int = 60
    min_points: int = 50
    max_points: int = 360
    nodata_fail_percent: float | None = 50.0
    # Derived once: the scalar metric names (state keys) and whether latency is judged.
    _scalar_names: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)
    _has_latency: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError("metrics", self.metrics, "must hold at least one KayentaMetric")
        for index, item in enumerate(self.metrics):
            if not isinstance(item, KayentaMetric):
                raise ConfigError(f"metrics[{index}]", item, "must be a KayentaMetric")
        groups = {m.group for m in self.metrics}
        for name in self.group_weights:
            if name not in groups:
                raise ConfigError(
                    f"group_weights[{name!r}]", name, f"is not a metric group {sorted(groups)}"
                )
        marginal = finite("marginal_threshold", self.marginal_threshold)
        passing = finite("pass_threshold", self.pass_threshold)
        if not 0 <= marginal <= 100:
            raise ConfigError("marginal_threshold", self.marginal_threshold, "must be in [0, 100]")
        if not marginal <= passing <= 100:
            raise ConfigError(
                "pass_threshold", self.pass_threshold, f"must be in [marginal ({marginal:g}), 100]"
            )
        object.__setattr__(self, "marginal_threshold", marginal)
        object.__setattr__(self, "pass_threshold", passing)
        _positive_int("judge_every", self.judge_every)
        _positive_int("min_points", self.min_points)
        _positive_int("max_points", self.max_points)
        if self.max_points < self.min_points:
            raise ConfigError(
                "max_points", self.max_points, f"must be >= min_points ({self.min_points})"
            )
        if self.nodata_fail_percent is not None:
            percent = finite("nodata_fail_percent", self.nodata_fail_percent)
            if not 0 < percent <= 100:
                raise ConfigError(
                    "nodata_fail_percent", self.nodata_fail_percent, "must be in (0, 100] or None"
                )
            object.__setattr__(self, "nodata_fail_percent", percent)
        names = tuple(dict.fromkeys(m.metric for m in self.metrics if m.metric != LATENCY))
        object.__setattr__(self, "_scalar_names", names)
        object.__setattr__(self, "_has_latency", any(m.metric == LATENCY for m in self.metrics))

    def initial_state(self) -> dict[str, Any]:
        """No windows seen; the first judgement after `judge_every` windows."""
        has_latency = self._has_latency
        return {
            "windows": 0,
            "next_judgement": self.judge_every,
            "points": {name: {"canary": [], "stable": []} for name in self._scalar_names},
            "latency": (
                {"canary": dict(_EMPTY_HISTOGRAM), "stable": dict(_EMPTY_HISTOGRAM)}
                if has_latency
                else None
            ),
            "last_score": None,
        }

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Add the window's points; judge when the schedule says so, else NOT_YET."""
        state = self._checked(state)
        cap = self.max_points
        points: dict[str, dict[str, list[Any]]] = {}
        old_points = state["points"]
        for name in self._scalar_names:
            arms = old_points[name]
            canary, stable = arms["canary"], arms["stable"]
            if len(canary) >= cap:
                canary = canary[len(canary) - cap + 1 :]
            if len(stable) >= cap:
                stable = stable[len(stable) - cap + 1 :]
            points[name] = {
                "canary": [*canary, observation.value(Arm.CANARY, name)],
                "stable": [*stable, observation.value(Arm.STABLE, name)],
            }
        latency = state["latency"]
        if latency is not None:
            latency = {
                "canary": _merge(latency["canary"], observation.canary.latency),
                "stable": _merge(latency["stable"], observation.stable.latency),
            }
        windows = state["windows"] + 1
        due = state["next_judgement"]
        new_state = {
            "windows": windows,
            "next_judgement": due,
            "points": points,
            "latency": latency,
            "last_score": state["last_score"],
        }
        if windows < due:
            last = state["last_score"]
            after = "" if last is None else f"; last score {_num(last)}"
            reason = f"next judgement after window {due} (now {windows}){after}"
            return Judgement(Verdict(kind=VerdictKind.NOT_YET, reason=reason), new_state)
        return self._judgement(new_state)

    def _judgement(self, state: dict[str, Any]) -> Judgement:
        latency = state["latency"]
        histograms: dict[str, LatencyHistogram | None] = {}
        if latency is not None:
            for arm in ("canary", "stable"):
                data = latency[arm]
                histograms[arm] = (
                    LatencyHistogram(
                        offset=data["offset"], counts=tuple(data["counts"]), sum=data["sum"]
                    )
                    if data["counts"]
                    else None
                )
        waiting: list[str] = []
        results: list[tuple[KayentaMetric, Classification]] = []
        for metric in self.metrics:
            if metric.metric == LATENCY:
                canary_h, stable_h = histograms["canary"], histograms["stable"]
                sizes = [0 if h is None else h.count for h in (canary_h, stable_h)]
                if any(sizes) and min(sizes) < self.min_points:
                    waiting.append(f"{metric.metric} {min(sizes)} of {self.min_points} requests")
                    continue
                results.append((metric, metric.classify_histograms(canary_h, stable_h)))
            else:
                arms = state["points"][metric.metric]
                # An arm without a single reading has no points, whatever the NaN
                # strategy: the judgement waits for data instead of passing on zeros.
                canary, stable = (
                    metric.clean(arms[arm]) if _has_reading(arms[arm]) else []
                    for arm in ("canary", "stable")
                )
                sizes = [len(canary), len(stable)]
                if any(sizes) and min(sizes) < self.min_points:
                    waiting.append(f"{metric.metric} {min(sizes)} of {self.min_points} points")
                    continue
                results.append((metric, _classify_clean(metric, canary, stable)))
        if waiting:
            reason = f"judgement due, waiting for data: {', '.join(waiting)}"
            return Judgement(Verdict(kind=VerdictKind.NOT_YET, reason=reason), state)
        score = kayenta_score(
            results, group_weights=self.group_weights, nodata_fail_percent=self.nodata_fail_percent
        )
        if score.failure is None and not any(found.label in _COUNTED for _, found in results):
            # Every metric is Nodata and no rule made that a failure: the score of 100
            # would be a pass on no evidence at all. Wait, as for too few points.
            reason = f"judgement due, no metric has data ({score.summary()})"
            return Judgement(Verdict(kind=VerdictKind.NOT_YET, reason=reason), state)
        if score.score <= self.marginal_threshold:
            kind = VerdictKind.FAIL
        elif score.score >= self.pass_threshold:
            kind = VerdictKind.PASS
        else:
            kind = VerdictKind.INCONCLUSIVE
        reason = (
            f"{score.summary()}; marginal {_num(self.marginal_threshold)}, "
            f"pass {_num(self.pass_threshold)}"
        )
        next_due, windows = state["next_judgement"], state["windows"]
        if next_due <= windows:  # the first due judgement after this window
            next_due += ((windows - next_due) // self.judge_every + 1) * self.judge_every
        new_state = {**state, "next_judgement": next_due, "last_score": score.score}
        metrics = [found.to_metric_verdict() for _, found in results]
        return Judgement(Verdict(kind=kind, reason=reason, metrics=metrics), new_state)

    def _checked(self, state: Any) -> dict[str, Any]:
        # State comes back from JSON after a resume: check its shape rather than trust it.
        if state is None:
            return self.initial_state()
        try:
            points, latency, last = state["points"], state["latency"], state["last_score"]
            valid = (
                type(state["windows"]) is int
                and 0 <= state["windows"] <= MAX_COUNT
                and type(state["next_judgement"]) is int
                and 1 <= state["next_judgement"] <= MAX_COUNT
                and isinstance(points, Mapping)
                and len(points) == len(self._scalar_names)
                and all(_saved_points(points.get(name)) for name in self._scalar_names)
                and (latency is not None) is self._has_latency
                and (latency is None or _saved_latency(latency))
                and (last is None or (type(last) in (int, float) and last == last))
                and len(state) == _STATE_KEYS
            )
        except (TypeError, KeyError, AttributeError):
            valid = False
        if not valid:
            raise ConfigError(
                "state", state, "must be a state of this KayentaJudge (see initial_state)"
            )
        return state  # type: ignore[no-any-return]


def _has_reading(values: Iterable[float | None]) -> bool:
    """Whether `values` holds at least one finite number (None and NaN are no reading)."""
    return any(value is not None and math.isfinite(value) for value in values)


def _saved_points(arms: Any) -> bool:
    """Whether a saved state's points of one metric are lists of numbers or None."""
    return isinstance(arms, Mapping) and all(
        isinstance(values, list)
        and all(v is None or type(v) is float or type(v) is int for v in values)
        for values in (arms.get("canary"), arms.get("stable"))
    )


def _saved_latency(latency: Any) -> bool:
    """Whether a saved state's latency is two histograms as plain data (see `_merge`)."""
    if not isinstance(latency, Mapping):
        return False
    for arm in ("canary", "stable"):
        data = latency.get(arm)
        if not isinstance(data, Mapping) or len(data) != len(_EMPTY_HISTOGRAM):
            return False
        offset, counts, total = data.get("offset"), data.get("counts"), data.get("sum")
        if type(offset) is not int or not isinstance(counts, list):
            return False
        if counts and not MIN_INDEX <= offset <= MAX_INDEX - len(counts) + 1:
            return False
        if not all(type(c) is int and 0 <= c <= MAX_COUNT for c in counts):
            return False
        if total is not None and (type(total) not in (int, float) or not 0 <= total < math.inf):
            return False
    return True


def _classify_clean(
    metric: KayentaMetric, canary: list[float], stable: list[float]
) -> Classification:
    # The points are cleaned already; classify must not clean them twice.
    unchanged = attrs.evolve(metric, outliers="keep")
    return unchanged.classify(canary, stable)


def _merge(total: Mapping[str, Any], window: LatencyHistogram | None) -> dict[str, Any]:
    """Add a window's histogram to a cumulative one kept as plain data."""
    if window is None or not window.counts:
        return dict(total)
    counts: list[int] = list(total["counts"])
    if not counts:
        return {"offset": window.offset, "counts": list(window.counts), "sum": window.sum}
    offset = total["offset"]
    start = min(offset, window.offset)
    if start < offset:
        counts[:0] = [0] * (offset - start)
    end = window.offset + len(window.counts) - start
    if end > len(counts):
        counts.extend([0] * (end - len(counts)))
    at = window.offset - start
    stop = at + len(window.counts)
    counts[at:stop] = map(add, counts[at:stop], window.counts)
    known = total["sum"] is not None and window.sum is not None
    return {"offset": start, "counts": counts, "sum": total["sum"] + window.sum if known else None}


def kayenta_metric(
    metric: str,
    *,
    direction: Literal["increase", "decrease", "either"] = "either",
    allowed_increase: float = 1.0,
    allowed_decrease: float = 1.0,
    critical: bool = False,
    critical_increase: float | None = None,
    critical_decrease: float | None = None,
    must_have_data: bool = False,
    nan_strategy: Literal["remove", "replace"] = "remove",
    outliers: Literal["keep", "remove"] = "remove",
    group: str = "",
    confidence: float = 0.98,
    tolerance: float = 0.25,
) -> KayentaMetric:
    """Make a `KayentaMetric`: ``kayenta_metric("error_rate", direction="increase")``.

    >>> kayenta_metric("latency", direction="increase", allowed_increase=1.1).allowed_increase
    1.1
    """
    return KayentaMetric(
        metric=metric,
        direction=direction,
        allowed_increase=allowed_increase,
        allowed_decrease=allowed_decrease,
        critical=critical,
        critical_increase=critical_increase,
        critical_decrease=critical_decrease,
        must_have_data=must_have_data,
        nan_strategy=nan_strategy,
        outliers=outliers,
        group=group,
        confidence=confidence,
        tolerance=tolerance,
    )


def kayenta(
    *metrics: KayentaMetric,
    group_weights: Mapping[str, float] | None = None,
    marginal_threshold: float = 75.0,
    pass_threshold: float = 95.0,
    judge_every: int = 60,
    min_points: int = 50,
    max_points: int = 360,
    nodata_fail_percent: float | None = 50.0,
) -> KayentaJudge:
    """Make a `KayentaJudge`; ``judge_every=360`` is Kayenta's hourly judgement at 10 s windows.

    >>> judge = kayenta(kayenta_metric("error_rate"), kayenta_metric("latency"), judge_every=360)
    >>> [m.group for m in judge.metrics]
    ['error_rate', 'latency']
    """
    return KayentaJudge(
        metrics=metrics,
        group_weights=group_weights,
        marginal_threshold=marginal_threshold,
        pass_threshold=pass_threshold,
        judge_every=judge_every,
        min_points=min_points,
        max_points=max_points,
        nodata_fail_percent=nodata_fail_percent,
    )
