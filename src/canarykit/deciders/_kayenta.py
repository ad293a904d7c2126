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
_OUTLIERS = ("keep", "remove", "ksigma")
_EFFECT_SIZES = ("mean_ratio", "cles")
_CLASSIFIERS = ("mann_whitney", "mean_inequality")

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
    the mean ratio canary / stable (None when either mean is 0: it cannot be computed,
    and the ratio checks are skipped, as in Kayenta); `effect_size` the measure the
    allowed and critical thresholds were compared with (the mean ratio, or the CLES);
    `shift` the Hodges-Lehmann interval (in buckets for latency); `p_value` the
    two-sided Mann-Whitney p-value. `muted` metrics are reported but not scored.
    """

    metric: str
    label: str
    reason: str
    critical_failure: bool = False
    effect: float | None = None
    effect_size: float | None = None
    shift: ShiftEstimate | None = None
    p_value: float | None = None
    muted: bool = False

    def to_metric_verdict(self) -> MetricVerdict:
        """The per-metric verdict: Pass is PASS, High/Low/NodataFailure FAIL, Nodata NOT_YET."""
        return MetricVerdict(
            metric=self.metric, kind=_KIND[self.label], reason=self.reason, value=self.effect
        )


def _neutral(metric: KayentaMetric) -> float:
    """The effect size of no change: a mean ratio of 1, a CLES of 0.5."""
    return 0.5 if metric.effect_size == "cles" else 1.0


def _to_groups(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        raise ConfigError("groups", value, "must be a sequence of group names")
    return tuple(dict.fromkeys(value))


@attrs.frozen(kw_only=True)
class KayentaMetric:
    """How Kayenta judges one metric (see the module docstring for the rules).

    `metric` is any `Observation.value` metric (compare rates such as ``error_rate``, not
    counts, since the arms get different traffic), or ``"latency"`` for the whole
    latency histogram. `direction` names the bad change.

    `effect_size` is Kayenta's ``effectSize.measure``: ``"mean_ratio"`` (canary mean /
    stable mean) or ``"cles"`` (the common-language effect size, the share of (canary,
    stable) pairs in which the canary is larger; 0.5 is no difference).
    `allowed_increase` / `allowed_decrease` are Kayenta's ``allowedIncrease`` /
    ``allowedDecrease`` in that measure (by default the neutral value, 1.0 or 0.5: any
    significant change counts); `critical_increase` / `critical_decrease` (None: the
    neutral value) bound the critical failures.

    `outliers`: ``"remove"`` drops points outside Kayenta's fences (the 25th and 75th
    percentiles, R-7, widened by `outlier_factor` interquartile ranges, and never
    inside the 1st and 99th percentiles), ``"ksigma"`` those more than `outlier_factor`
    standard deviations from the mean, ``"keep"`` none. `classifier` is
    ``"mann_whitney"`` (Kayenta's judge) or ``"mean_inequality"`` (High whenever the
    canary mean is larger, Low whenever smaller; Kayenta's benchmarking classifier).

    A `muted` metric is classified and reported but not scored. `group` defaults to the
    metric's name; `groups` puts the metric in several groups (its label counts in
    each group's score), and `group` is then the first of them.

    >>> m = KayentaMetric(metric="error_rate", direction="increase", allowed_increase=1.2)
    >>> m.group, m.groups, m.confidence, m.tolerance
    ('error_rate', ('error_rate',), 0.98, 0.25)
    >>> KayentaMetric(metric="cpu", effect_size="cles").allowed_increase
    0.5
    """

    metric: str
    direction: str = "either"
    effect_size: str = "mean_ratio"
    allowed_increase: float = attrs.field(default=attrs.Factory(_neutral, takes_self=True))
    allowed_decrease: float = attrs.field(default=attrs.Factory(_neutral, takes_self=True))
    critical: bool = False
    critical_increase: float | None = None
    critical_decrease: float | None = None
    must_have_data: bool = False
    nan_strategy: str = "remove"
    outliers: str = "remove"
    outlier_factor: float = 3.0
    classifier: str = "mann_whitney"
    muted: bool = False
    group: str = ""
    groups: tuple[str, ...] = attrs.field(default=(), converter=_to_groups)
    confidence: float = 0.98
    tolerance: float = 0.25

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        if self.direction not in _DIRECTIONS:
            raise ConfigError(
                "direction", self.direction, "must be 'increase', 'decrease' or 'either'"
            )
        if self.effect_size not in _EFFECT_SIZES:
            raise ConfigError("effect_size", self.effect_size, "must be 'mean_ratio' or 'cles'")
        cles = self.effect_size == "cles"
        increase = finite("allowed_increase", self.allowed_increase)
        decrease = finite("allowed_decrease", self.allowed_decrease)
        if cles:
            if not 0.5 <= increase <= 1.0:
                raise ConfigError(
                    "allowed_increase", self.allowed_increase, "must be in [0.5, 1] (a CLES)"
                )
            if not 0.0 <= decrease <= 0.5:
                raise ConfigError(
                    "allowed_decrease", self.allowed_decrease, "must be in [0, 0.5] (a CLES)"
                )
        else:
            if increase < 1.0:
                raise ConfigError(
                    "allowed_increase", self.allowed_increase, "must be >= 1 (a mean ratio)"
                )
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
                if cles and not 0.0 <= number <= 1.0:
                    raise ConfigError(name, value, "must be a CLES in [0, 1]")
                if not cles and number <= 0:
                    raise ConfigError(name, value, "must be a mean ratio > 0")
                object.__setattr__(self, name, number)
        for name in ("critical", "must_have_data", "muted"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be True or False")
        if self.nan_strategy not in _NAN_STRATEGIES:
            raise ConfigError("nan_strategy", self.nan_strategy, "must be 'remove' or 'replace'")
        if self.outliers not in _OUTLIERS:
            raise ConfigError("outliers", self.outliers, "must be 'keep', 'remove' or 'ksigma'")
        factor = finite("outlier_factor", self.outlier_factor)
        if factor <= 0:
            raise ConfigError("outlier_factor", self.outlier_factor, "must be > 0")
        object.__setattr__(self, "outlier_factor", factor)
        if self.classifier not in _CLASSIFIERS:
            raise ConfigError(
                "classifier", self.classifier, "must be 'mann_whitney' or 'mean_inequality'"
            )
        if not isinstance(self.group, str):
            raise ConfigError("group", self.group, "must be a group name")
        for index, name in enumerate(self.groups):
            printable_name(f"groups[{index}]", name, "group name")
        if self.groups:
            if self.group and self.group != self.groups[0]:
                raise ConfigError("group", self.group, "give group or groups, not both")
            object.__setattr__(self, "group", self.groups[0])
        if not self.group:
            object.__setattr__(self, "group", self.metric)
        printable_name("group", self.group, "group name")
        if not self.groups:
            object.__setattr__(self, "groups", (self.group,))
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
        """One arm's points after the NaN strategy and outlier removal, in their order.

        >>> KayentaMetric(metric="cpu", nan_strategy="replace").clean([0.5, None, 0.25])
        [0.5, 0.0, 0.25]
        >>> KayentaMetric(metric="cpu", outlier_factor=1.5).clean([21, 23, 24, 25, 50, 29])
        [21.0, 23.0, 24.0, 25.0, 29.0]
        """
        points: list[float] = []
        for value in values:
            if value is None or not math.isfinite(value):
                if self.nan_strategy == "replace":
                    points.append(0.0)
            else:
                points.append(float(value))
        if self.outliers == "keep" or not points:
            return points
        low, high = self.fences(points)
        return [v for v in points if low <= v <= high]

    def fences(self, points: Sequence[float]) -> tuple[float, float]:
        """The range of `points` that outlier removal keeps (inclusive), per `outliers`.

        Kayenta's ``IQRDetector(outlier_factor, reduceSensitivity=true)``: the quartiles
        by R-7 interpolation, ``outlier_factor`` interquartile ranges beyond them, and at
        least out to the 1st and 99th percentiles, so a mostly-zero metric (interquartile
        range 0) loses only what lies beyond its 99th percentile. For ``"ksigma"``:
        ``mean +- outlier_factor x`` the population standard deviation.

        >>> KayentaMetric(metric="cpu").fences([0.0] * 8 + [1.0, 2.0])
        (0.0, 1.91)
        """
        if not points:
            raise ConfigError("points", points, "must hold at least one value")
        factor = self.outlier_factor
        if self.outliers == "ksigma":
            mean = math.fsum(points) / len(points)
            spread = factor * math.sqrt(math.fsum((v - mean) ** 2 for v in points) / len(points))
            return mean - spread, mean + spread
        ordered = sorted(points)
        q1, q3 = _percentile(ordered, 25), _percentile(ordered, 75)
        iqr = q3 - q1
        low = min(_percentile(ordered, 1), q1 - factor * iqr)
        high = max(_percentile(ordered, 99), q3 + factor * iqr)
        return low, high

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
        canary_mean, stable_mean = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
        effect = _mean_ratio(canary_mean, stable_mean)
        sizes = f"{len(xs)} vs {len(ys)} points"
        if self.classifier == "mean_inequality":
            return self._by_means(canary_mean, stable_mean, effect, sizes)
        test = mann_whitney(xs, ys)
        shift = hodges_lehmann(xs, ys, confidence=self.confidence)
        show = self.metric
        text = (
            f"shift {_signed(show, shift.estimate)} "
            f"{_interval(_signed(show, shift.lower), _signed(show, shift.upper), shift)} "
            f"at {self.confidence:.0%}, {_p(test.p_value)}, {sizes}"
        )
        return self._label(effect, test.cles, shift, test.p_value, text)

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
        effect = _mean_ratio(canary_mean, stable_mean)
        sizes = f"{canary.count} vs {stable.count} requests"
        if self.classifier == "mean_inequality":
            return self._by_means(canary_mean, stable_mean, effect, sizes)
        shift = hodges_lehmann_histograms(canary, stable, confidence=self.confidence)
        test = mann_whitney_histograms(canary, stable)
        text = (
            f"latency x{bucket_ratio(shift.estimate):.3f} "
            f"[x{bucket_ratio(shift.lower):.3f}, x{bucket_ratio(shift.upper):.3f}] "
            f"at {self.confidence:.0%}, {_p(test.p_value)}, {sizes}"
        )
        return self._label(effect, test.cles, shift, test.p_value, text)

    @property
    def _neutral_size(self) -> float:
        return _neutral(self)

    def _made(self, label: str, reason: str, **numbers: Any) -> Classification:
        muted = "muted, not scored: " if self.muted else ""
        return Classification(
            metric=self.metric, label=label, reason=muted + reason, muted=self.muted, **numbers
        )

    def _label(
        self, effect: float | None, cles: float, shift: ShiftEstimate, p_value: float, text: str
    ) -> Classification:
        # Kayenta's rule: the whole interval beyond tolerance x |estimate| (an end the test
        # itself rejects is open: the interval lies strictly beyond it), and the effect
        # size past the allowed one, unless it cannot be computed (a mean of 0).
        size = cles if self.effect_size == "cles" else effect
        bound = self.tolerance * abs(shift.estimate)
        above = shift.lower > bound or (shift.lower == bound and shift.lower_open)
        below = shift.upper < -bound or (shift.upper == -bound and shift.upper_open)
        high = (
            self.direction in ("increase", "either")
            and above
            and (size is None or size >= self.allowed_increase)
        )
        low = (
            self.direction in ("decrease", "either")
            and below
            and (size is None or size <= self.allowed_decrease)
        )
        critical = False
        if high:
            label = "High"
            limit = self._neutral_size if self.critical_increase is None else self.critical_increase
            critical = self.critical and (size is None or size >= limit)
            allowed = f"allowed {self.allowed_increase:.2f}"
        elif low:
            label = "Low"
            limit = self._neutral_size if self.critical_decrease is None else self.critical_decrease
            critical = self.critical and (size is None or size <= limit)
            allowed = f"allowed {self.allowed_decrease:.2f}"
        else:
            label, allowed = "Pass", "no significant change in a bad direction"
        marker = " (critical)" if critical else ""
        ratio = "n/a (a mean is 0)" if effect is None else f"{effect:.3f}"
        measure = f"CLES {cles:.3f}, " if self.effect_size == "cles" else ""
        reason = f"{label}{marker}: {measure}mean ratio {ratio} ({allowed}), {text}"
        return self._made(
            label,
            reason,
            critical_failure=critical,
            effect=effect,
            effect_size=size,
            shift=shift,
            p_value=p_value,
        )

    def _by_means(
        self, canary_mean: float, stable_mean: float, effect: float | None, sizes: str
    ) -> Classification:
        # Kayenta's MeanInequalityClassifier: any difference of the means in a bad
        # direction, critical whenever the metric is.
        if self.direction in ("increase", "either") and canary_mean > stable_mean:
            label = "High"
        elif self.direction in ("decrease", "either") and canary_mean < stable_mean:
            label = "Low"
        else:
            label = "Pass"
        critical = self.critical and label != "Pass"
        marker = " (critical)" if critical else ""
        reason = (
            f"{label}{marker}: canary mean {_show(self.metric, canary_mean)}, "
            f"stable mean {_show(self.metric, stable_mean)}, {sizes}"
        )
        return self._made(
            label, reason, critical_failure=critical, effect=effect, effect_size=effect
        )

    def _no_data(self) -> Classification:
        if self.must_have_data and not self.critical:
            return self._made("NodataFailure", "NodataFailure: no data, data required")
        critical = " (critical)" if self.critical else ""
        return self._made(
            "Nodata", f"Nodata{critical}: no data in an arm", critical_failure=self.critical
        )

    def _pass_identical(self) -> Classification:
        return self._made(
            "Pass",
            "Pass: canary and stable data are identical",
            effect=1.0,
            effect_size=self._neutral_size,
        )


def _mean_ratio(canary_mean: float, stable_mean: float) -> float | None:
    """Canary mean / stable mean; None when either is 0 (Kayenta's NaN)."""
    if canary_mean == 0 or stable_mean == 0:
        return None
    return canary_mean / stable_mean


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """The `percent` percentile of sorted data by linear interpolation (R-7, numpy's default)."""
    position = (len(ordered) - 1) * percent / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _interval(lower: str, upper: str, shift: ShiftEstimate) -> str:
    return f"{'(' if shift.lower_open else '['}{lower}, {upper}{')' if shift.upper_open else ']'}"


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

    Muted metrics are left out; a metric in several groups counts in each of them.

    >>> m, n = KayentaMetric(metric="a", group="g"), KayentaMetric(metric="b", group="g")
    >>> ok = Classification(metric="a", label="Pass", reason="")
    >>> bad = Classification(metric="b", label="High", reason="")
    >>> kayenta_score([(m, ok), (n, bad)]).score
    50.0
    """
    classifications = [(m, found) for m, found in classifications if not m.muted]
    if not classifications:
        return KayentaScore(score=0.0, groups={}, failure="no metric is scored (all are muted)")
    groups: dict[str, list[str]] = {}
    for metric, found in classifications:
        for group in metric.groups:
            groups.setdefault(group, []).append(found.label)
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
        if all(m.muted for m in self.metrics):
            raise ConfigError("metrics", self.metrics, "must hold a metric that is not muted")
        groups = {group for m in self.metrics for group in m.groups}
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
        scored = [found for metric, found in results if not metric.muted]
        if score.failure is None and not any(found.label in _COUNTED for found in scored):
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
    effect_size: Literal["mean_ratio", "cles"] = "mean_ratio",
    allowed_increase: float | None = None,
    allowed_decrease: float | None = None,
    critical: bool = False,
    critical_increase: float | None = None,
    critical_decrease: float | None = None,
    must_have_data: bool = False,
    nan_strategy: Literal["remove", "replace"] = "remove",
    outliers: Literal["keep", "remove", "ksigma"] = "remove",
    outlier_factor: float = 3.0,
    classifier: Literal["mann_whitney", "mean_inequality"] = "mann_whitney",
    muted: bool = False,
    group: str = "",
    groups: Sequence[str] = (),
    confidence: float = 0.98,
    tolerance: float = 0.25,
) -> KayentaMetric:
    """Make a `KayentaMetric`: ``kayenta_metric("error_rate", direction="increase")``.

    `allowed_increase` / `allowed_decrease` left as None are the neutral effect size
    (1.0 for the mean ratio, 0.5 for the CLES).

    >>> kayenta_metric("latency", direction="increase", allowed_increase=1.1).allowed_increase
    1.1
    >>> kayenta_metric("cpu", effect_size="cles", allowed_increase=0.8).allowed_decrease
    0.5
    """
    allowed: dict[str, float] = {}
    if allowed_increase is not None:
        allowed["allowed_increase"] = allowed_increase
    if allowed_decrease is not None:
        allowed["allowed_decrease"] = allowed_decrease
    return KayentaMetric(
        metric=metric,
        direction=direction,
        effect_size=effect_size,
        critical=critical,
        critical_increase=critical_increase,
        critical_decrease=critical_decrease,
        must_have_data=must_have_data,
        nan_strategy=nan_strategy,
        outliers=outliers,
        outlier_factor=outlier_factor,
        classifier=classifier,
        muted=muted,
        group=group,
        groups=groups,
        confidence=confidence,
        tolerance=tolerance,
        **allowed,
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
