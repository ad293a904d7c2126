"""The threshold decider: fixed bounds on one arm's metrics, with a failed-check budget.

How it works: every window, each `Bound` reads one value from the observation
(``observation.value(arm, metric)``) and compares it with its inclusive ``[min, max]``
range, as Flagger's ``thresholdRange`` does (a value equal to ``max`` passes). A window
in which any bound is violated is a *failed check*. Failed checks are counted over the
whole analysis (Flagger's ``threshold``, not "in a row"); the count lives in the
decider's state, ``{"failed_checks": n}``, so it survives a save and a resume.

- While the count is below ``failure_limit``, a failed check gives NOT_YET: the rollout
  carries on but nothing is promoted on it (promotion needs a pass).
- Once the count reaches ``failure_limit`` the verdict is FAIL, and stays FAIL for every
  later window: a decider that has failed does not change its mind.
- A metric without data (``value`` is None: no requests, no latency, a missing gauge) is
  handled by `NoDataPolicy`: FAIL counts the window as a failed check (Flagger's
  behaviour), INCONCLUSIVE makes the verdict INCONCLUSIVE (the rollout pauses), IGNORE
  leaves the metric out. No data is never a silent pass: a window in which every metric
  was ignored is NOT_YET.

Otherwise the verdict is the worst of the per-metric verdicts, each with a reason a
person can read: rates as percents, latencies in milliseconds.

>>> decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.5), failure_limit=2)
>>> decider.initial_state()
{'failed_checks': 0}

Fixed thresholds fire falsely at low traffic (at 60 requests a window and a true 1%
error rate, "error rate > 2%" fires in about 12% of windows); ``failure_limit`` trades
that against a later rollback. The statistical deciders do better; this one is simple.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._errors import ConfigError
from .._observe import Arm, Observation
from .._validate import MAX_COUNT, optional_finite, printable_name, to_enum
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._compose import Composable

__all__ = ["Bound", "NoDataPolicy", "ThresholdDecider", "bound", "format_value", "threshold"]

# Metrics that are fractions in [0, 1]; shown as percents, and a bound outside [0, 1]
# is refused because ``max = 2`` almost always means 2%, not 200%.
_RATES = frozenset({"error_rate", "success_rate"})
# Metrics in seconds; shown in milliseconds.
_LATENCIES = frozenset({"mean_latency", "p50", "p95", "p99"})
_COUNTS = frozenset({"requests", "errors"})


def format_value(metric: str, value: float) -> str:
    """`value` of `metric` as a person reads it: rates in percent, latencies in ms.

    >>> format_value("error_rate", 0.051), format_value("p99", 0.15), format_value("cpu", 0.7)
    ('5.10%', '150 ms', '0.7')
    """
    if metric in _RATES:
        return f"{value * 100:.2f}%"
    if metric in _LATENCIES:
        return f"{_trim(value * 1000)} ms"
    if metric in _COUNTS:
        return f"{value:.0f}"
    if metric == "throughput":
        return f"{_trim(value)}/s"
    return f"{value:.6g}"


def _trim(number: float) -> str:
    # One decimal is enough to read a latency; "150.0 ms" reads worse than "150 ms".
    text = f"{number:.1f}"
    return text[:-2] if text.endswith(".0") else text


class NoDataPolicy(enum.Enum):
    """What a window without data for a metric means.

    - FAIL: a failed check, as Flagger counts "no values found".
    - INCONCLUSIVE: the verdict is INCONCLUSIVE, so the rollout pauses for a person.
    - IGNORE: the metric is left out of this window's verdict (all left out: NOT_YET).
    """

    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    IGNORE = "ignore"

    def __repr__(self) -> str:
        return f"NoDataPolicy.{self.name}"


def _to_no_data(value: Any) -> Any:
    return to_enum(NoDataPolicy, value)


def _check_min(value: Any) -> float | None:
    return optional_finite("min", value)


def _check_max(value: Any) -> float | None:
    return optional_finite("max", value)


def _to_arm(value: Any) -> Any:
    return to_enum(Arm, value)


@attrs.frozen(kw_only=True, repr=False)
class Bound:
    """An inclusive range ``[min, max]`` for one metric of one arm (the canary by default).

    Either end may be None (unbounded) but not both. Rates (``error_rate``,
    ``success_rate``) are fractions, so their bounds must lie in [0, 1].

    >>> b = Bound(metric="error_rate", max=0.02)
    >>> b
    Bound(metric='error_rate', max=0.02)
    >>> str(b)
    'error_rate (canary) <= 2.00%'
    """

    metric: str
    min: float | None = attrs.field(default=None, converter=_check_min)
    max: float | None = attrs.field(default=None, converter=_check_max)
    arm: Arm = attrs.field(default=Arm.CANARY, converter=_to_arm)

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        if self.min is None and self.max is None:
            raise ConfigError("max", None, "a bound needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError("min", self.min, f"must be <= max ({self.max})")
        if self.metric in _RATES:
            for name, limit in (("min", self.min), ("max", self.max)):
                if limit is not None and not 0 <= limit <= 1:
                    raise ConfigError(
                        name,
                        limit,
                        f"{self.metric} is a fraction in [0, 1] (write 0.02 for 2%)",
                    )
        if not isinstance(self.arm, Arm):
            raise ConfigError("arm", self.arm, "must be 'canary' or 'stable'")

    def __repr__(self) -> str:
        parts = [f"metric={self.metric!r}"]
        if self.min is not None:
            parts.append(f"min={self.min!r}")
        if self.max is not None:
            parts.append(f"max={self.max!r}")
        if self.arm is not Arm.CANARY:
            parts.append(f"arm={self.arm!r}")
        return f"Bound({', '.join(parts)})"

    def __str__(self) -> str:
        subject = f"{self.metric} ({_arm_name(self.arm)})"
        if self.min is not None and self.max is not None:
            low, high = self._show(self.min), self._show(self.max)
            return f"{subject} in [{low}, {high}]"
        if self.max is not None:
            return f"{subject} <= {self._show(self.max)}"
        assert self.min is not None
        return f"{subject} >= {self._show(self.min)}"

    def _show(self, value: float) -> str:
        return format_value(self.metric, value)

    def check(self, observation: Observation) -> MetricVerdict | None:
        """PASS or FAIL for this window, with the value and the bound; None when no data."""
        value = observation.value(self.arm, self.metric)
        if value is None or not math.isfinite(value):
            return None
        who = f"{_arm_name(self.arm)} {self._show(value)}"
        # Inclusive on both ends, as Flagger's thresholdRange: a value equal to max passes.
        if self.max is not None and value > self.max:
            kind, reason = VerdictKind.FAIL, f"{who} > max {self._show(self.max)}"
        elif self.min is not None and value < self.min:
            kind, reason = VerdictKind.FAIL, f"{who} < min {self._show(self.min)}"
        elif self.min is not None and self.max is not None:
            low, high = self._show(self.min), self._show(self.max)
            kind, reason = VerdictKind.PASS, f"{who} within [{low}, {high}]"
        elif self.max is not None:
            kind, reason = VerdictKind.PASS, f"{who} <= max {self._show(self.max)}"
        else:
            assert self.min is not None
            kind, reason = VerdictKind.PASS, f"{who} >= min {self._show(self.min)}"
        return MetricVerdict(metric=self.metric, kind=kind, reason=reason, value=value)


def _arm_name(arm: Arm) -> str:
    return str(arm.name).lower()


def _to_bounds(value: Any) -> tuple[Any, ...]:
    if isinstance(value, Bound):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("bounds", value, "must be a sequence of Bound")
    return tuple(value)


def _failed_checks(state: Any) -> int:
    # State comes back from JSON after a resume, so check it rather than trust it.
    if state is None:
        return 0
    count = state.get("failed_checks") if isinstance(state, Mapping) else None
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ConfigError(
            "state", state, "must be a ThresholdDecider state such as {'failed_checks': 0}"
        )
    return count


@attrs.frozen(kw_only=True)
class ThresholdDecider(Composable):
    """Roll back after `failure_limit` windows that violate any of `bounds`.

    Pure and synchronous; its state is ``{"failed_checks": n}``.

    >>> decider = ThresholdDecider(bounds=[Bound(metric="error_rate", max=0.02)])
    >>> decider.failure_limit, decider.no_data
    (1, NoDataPolicy.INCONCLUSIVE)
    """

    bounds: tuple[Bound, ...] = attrs.field(converter=_to_bounds)
    failure_limit: int = 1
    no_data: NoDataPolicy = attrs.field(default=NoDataPolicy.INCONCLUSIVE, converter=_to_no_data)

    def __attrs_post_init__(self) -> None:
        if not self.bounds:
            raise ConfigError("bounds", self.bounds, "must hold at least one bound")
        for index, item in enumerate(self.bounds):
            if not isinstance(item, Bound):
                raise ConfigError(f"bounds[{index}]", item, "must be a Bound")
        limit = self.failure_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError("failure_limit", limit, "must be an integer >= 1")
        if not isinstance(self.no_data, NoDataPolicy):
            raise ConfigError("no_data", self.no_data, "must be 'fail', 'inconclusive' or 'ignore'")

    def __str__(self) -> str:
        bounds = ", ".join(str(b) for b in self.bounds)
        checks = "check" if self.failure_limit == 1 else "checks"
        return (
            f"threshold: {bounds}; roll back after {self.failure_limit} failed {checks}; "
            f"no data: {self.no_data.value}"
        )

    def initial_state(self) -> dict[str, int]:
        """No failed checks yet."""
        return {"failed_checks": 0}

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Judge one more window; return the verdict and the updated failed-check count."""
        failed_before = _failed_checks(state)
        judged: list[MetricVerdict] = []
        ignored: list[str] = []
        for item in self.bounds:
            metric_verdict = item.check(observation)
            if metric_verdict is None:
                metric_verdict = self._no_data(item)
                if metric_verdict is None:
                    ignored.append(item.metric)
                    continue
            judged.append(metric_verdict)
        failing = [m for m in judged if m.kind is VerdictKind.FAIL]
        failed = failed_before + 1 if failing else failed_before
        limit = self.failure_limit
        note = f"failed check {failed} of {limit}"

        if failed >= limit:
            kind = VerdictKind.FAIL
            if failing:
                reason = _describe(failing) + f" ({note})"
            else:
                # The limit was reached in an earlier window: a FAIL is final.
                reason = f"failure limit already reached ({failed} of {limit} failed checks)"
        elif failing:
            # Below the limit a failed check only holds the rollout back (NOT_YET, so it
            # cannot be promoted on); the metric verdicts say NOT_YET too, so that
            # combining them elsewhere cannot roll back before the limit.
            reason = _describe(failing) + f" ({note})"
            judged = [
                attrs.evolve(m, kind=VerdictKind.NOT_YET, reason=f"{m.reason} ({note})")
                if m.kind is VerdictKind.FAIL
                else m
                for m in judged
            ]
            kind = VerdictKind.worst(m.kind for m in judged)
            others = [m for m in judged if m.kind is kind and kind is not VerdictKind.NOT_YET]
            if others:
                reason = f"{_describe(others)}; {reason}"
        elif judged:
            kind = VerdictKind.worst(m.kind for m in judged)
            reason = _describe(m for m in judged if m.kind is kind)
        else:
            # Every metric was ignored for lack of data: never a silent pass.
            kind = VerdictKind.NOT_YET
            reason = "no data for any metric, nothing judged"
        if ignored:
            reason = f"{reason}; no data, ignored: {', '.join(ignored)}"
        # The kind decided above, not the worst metric's: a final FAIL can come with
        # passing metrics.
        verdict = Verdict(kind=kind, reason=reason, metrics=judged)
        return Judgement(verdict, {"failed_checks": failed})

    def _no_data(self, item: Bound) -> MetricVerdict | None:
        missing = f"no {_arm_name(item.arm)} data"
        if self.no_data is NoDataPolicy.IGNORE:
            return None
        if self.no_data is NoDataPolicy.FAIL:
            reason = f"{missing}, counted as a failed check"
            return MetricVerdict(metric=item.metric, kind=VerdictKind.FAIL, reason=reason)
        return MetricVerdict(metric=item.metric, kind=VerdictKind.INCONCLUSIVE, reason=missing)


def _describe(metrics: Iterable[MetricVerdict]) -> str:
    return "; ".join(f"{m.metric}: {m.reason}" for m in metrics)


def bound(
    metric: str,
    *,
    # min and max shadow the builtins on purpose: they are Flagger's thresholdRange names.
    min: float | None = None,
    max: float | None = None,
    arm: Arm | str = Arm.CANARY,
) -> Bound:
    """Make a `Bound` on `metric`: ``bound("error_rate", max=0.02)``, ``bound("p99", max=0.5)``.

    >>> bound("success_rate", min=0.99, arm="stable")
    Bound(metric='success_rate', min=0.99, arm=Arm.STABLE)
    """
    return Bound(metric=metric, min=min, max=max, arm=arm)


def threshold(
    *bounds: Bound,
    failure_limit: int = 1,
    no_data: NoDataPolicy | str = NoDataPolicy.INCONCLUSIVE,
) -> ThresholdDecider:
    """Make a `ThresholdDecider` over `bounds`, e.g. Flagger's two built-in checks.

    >>> decider = threshold(bound("success_rate", min=0.99), bound("p99", max=0.5))
    >>> [str(b) for b in decider.bounds]
    ['success_rate (canary) >= 99.00%', 'p99 (canary) <= 500 ms']
    """
    return ThresholdDecider(bounds=bounds, failure_limit=failure_limit, no_data=no_data)
