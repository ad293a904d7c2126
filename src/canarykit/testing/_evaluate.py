"""Monte-Carlo evaluation of a deploy policy: how often it rolls back, and how fast.

How it works. `evaluate` runs many seeded rollouts of a plan and a decider through the
real, pure state machine (`transition` / `next_action`) in virtual time, without an
event loop: it answers each `ApplySplit` with `SplitApplied` at once, each
`CollectWindow` with an observation drawn for the split the machine has confirmed, and
each `WaitUntil` with a `Tick` at its deadline, as the runner would with an instant router
and a virtual clock. A window is judged by the runner's own judging step
(`canarykit._judging.WindowJudge`: the step's or the rollout's decider, a judge that
raises or returns something other than a `Judgement` as a failed window with the
runner's reason), so the machine gets the very events a `Rollout` would give it on the
same observations. A run ends when the rollout does (promoted, rolled back, aborted) or
when nothing is due before the horizon (it is then reported as paused or running).

The traffic of a `Scenario`, per analysis window ``[s, e)`` and arm:

* requests: Poisson, with mean the integral of ``requests_per_second * share * cycle(t)``
  over the window, the share being the canary's share of requests under the split
  confirmed by the router (its canary percent; during a header-route stage the routed
  share of the requests a route matches, `header_share` of them, as
  `canarykit.testing._scripted.canary_share` computes; mirrored copies never count), the
  stable arm getting the rest, and ``cycle(t) = 1 + daily_amplitude * sin(2 pi t /
  daily_period + phase)``, the phase drawn at random for each run (1 without a cycle);
* errors: each request fails with probability `error_rate` (binomial given the
  requests; for count-only deciders the equivalent independent Poisson counts of
  failures and successes);
* latency: log-normal per request (`latency_median` seconds, log-scale spread
  `latency_sigma`), counted into the library's histogram buckets with the exact
  samplers of `ScriptedMetrics`. Latency is drawn only when a decider reads it (see
  `reads_latency`; ``Scenario(latency=...)`` overrides), which makes a window about
  three times cheaper for count-only deciders.

An `InjectedRegression` multiplies the canary's error rate or its latency (every quantile: the
median) by `factor` from `at` seconds after the start on; a window that straddles `at`
is drawn in two parts. All draws are exact (no normal approximations).

The shapes of real traffic (see `Scenario`) change these draws on both arms alike:
bursts make the errors a compound Poisson count (each failure counted as 1 to
`error_burst_max` failed requests); a stalled arm's window draws its stalled requests
(thinning: an independent Poisson count) from the exact bucket masses of the
log-normal plus `stall_seconds`; a drift multiplies each window's error rate and median
by its factor at the window's middle; `canary_error_factor` and `canary_latency_factor`
set the canary's baseline, which a regression then multiplies.

What is reported (see `Evaluation`): outcomes; the false-rollback rate (rollbacks of a
healthy canary: in a run with a regression, rollbacks at or before it began); the
detection rate and the time to detect (from the regression's start to the rollback;
median and 90th percentile over the detected runs); bad requests served by the canary
before the rollback or the end of the run (for an error regression the expected
excess errors, ``sum of canary_requests * (regressed_rate - error_rate)`` over the
analysed traffic after the regression began, also counted as ``canary errors -
canary requests * error_rate``; for a latency regression every canary request served
after it began); and the median time to full promotion.

>>> from canarykit.deciders import bound, threshold
>>> plan = hold_plan(10, seconds=600, analysis_interval=10)
>>> decider = threshold(bound("error_rate", max=0.05), failure_limit=2)
>>> bad = Scenario(regression=InjectedRegression("errors", factor=10, at=120))
>>> result = evaluate(plan, decider, bad, runs=20, seed=1)
>>> result.detect_rate, result.false_rollback_rate
(1.0, 0.0)
>>> 0 < result.median_detect_seconds < 120
True
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import accumulate, repeat, starmap
from typing import Any

import attrs

from .._errors import ConfigError
from .._histogram import MAX_INDEX, LatencyHistogram, _make, bucket_bounds, bucket_index
from .._judging import Judged, WindowJudge
from .._machine import (
    ApplySplit,
    CollectWindow,
    Event,
    Phase,
    RolloutState,
    SplitApplied,
    Start,
    Tick,
    WaitUntil,
    next_action,
    transition,
)
from .._observe import (
    _NO_GAUGES,
    Arm,
    Observation,
    _trusted_arm_stats,
    _trusted_observation,
)
from .._plan import Analyze, Pause, Plan, SetWeight
from .._protocols import Decider
from .._split import TrafficSplit
from .._validate import finite
from .._verdict import Judgement
from ..deciders import AllOf, AnyOf
from ._scripted import (
    _HUGE,
    DEFAULT_HEADER_SHARE,
    HeaderShare,
    Rate,
    _arm_plan,
    _ArmPlan,
    _binomial,
    _draw_latency,
    _freeze_header_share,
    _freeze_rates,
    _grid,
    _mass,
    _poisson,
    _poisson_table,
    canary_share,
    gauge_readings,
)

__all__ = [
    "Evaluation",
    "InjectedRegression",
    "RunResult",
    "Scenario",
    "evaluate",
    "hold_plan",
    "parse_regression",
    "reads_latency",
]

LATENCY_METRICS = frozenset({"mean_latency", "p50", "p95", "p99"})
"""Built-in metric names that need latency histograms."""

DEFAULT_EXTRA_HORIZON = 3600.0
"""Without a horizon, a run stops one hour after the plan could have ended."""

_KINDS = ("errors", "latency")
_TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------- scenario


@attrs.frozen
class InjectedRegression:
    """Multiply the canary's error rate (``kind="errors"``) or latency by `factor` from `at`.

    `at` is in seconds from the start of the rollout; a latency factor multiplies every
    quantile (the log-normal's median), so ``1.25`` is "+25% latency".

    >>> InjectedRegression("latency", 1.25, at=600)
    InjectedRegression(kind='latency', factor=1.25, at=600.0)
    >>> str(InjectedRegression("errors", 2))
    'errors x2 from 0:00'
    """

    kind: str
    factor: float
    at: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError("kind", self.kind, "must be 'errors' or 'latency'")
        factor = finite("factor", self.factor)
        if not factor > 0:
            raise ConfigError("factor", self.factor, "must be > 0")
        at = finite("at", self.at)
        if at < 0:
            raise ConfigError("at", self.at, "must be >= 0 seconds")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "at", at)

    def __str__(self) -> str:
        minutes, seconds = divmod(round(self.at), 60)
        return f"{self.kind} x{self.factor:g} from {minutes}:{seconds:02d}"


_REGRESSION_HELP = "must look like errors:2x@600, latency:1.25x@10m, latency:+25%@0 or none"


def parse_regression(text: str, *, field: str = "regression") -> InjectedRegression | None:
    """Read ``KIND:FACTOR@AT`` (``errors:2x@600``, ``latency:+25%@10m``) or ``none``.

    FACTOR is a multiplier (``2x`` or ``2``) or a percent change (``+25%``); AT is
    seconds or a duration such as ``"10m"`` (``@AT`` may be left out: from the start).
    A bad text raises `ConfigError` naming `field`.

    >>> parse_regression("errors:2x@600")
    InjectedRegression(kind='errors', factor=2.0, at=600.0)
    >>> parse_regression("latency:+25%@10m")
    InjectedRegression(kind='latency', factor=1.25, at=600.0)
    >>> parse_regression("none") is None
    True
    """
    from .._durations import parse_duration

    if not isinstance(text, str):
        raise ConfigError(field, text, _REGRESSION_HELP)
    spec = text.strip().lower()
    if spec in ("none", "aa", "a/a", ""):
        return None
    kind, colon, rest = spec.partition(":")
    if not colon or kind not in _KINDS:
        raise ConfigError(field, text, _REGRESSION_HELP)
    factor_text, at_sign, at_text = rest.partition("@")
    factor_text = factor_text.strip()
    try:
        if factor_text.endswith("%"):
            factor = 1.0 + float(factor_text[:-1]) / 100.0
        else:
            factor = float(factor_text.removesuffix("x"))
    except ValueError:
        raise ConfigError(field, text, _REGRESSION_HELP) from None
    at = 0.0
    if at_sign:
        try:
            at = parse_duration(field, at_text.strip(), allow_zero=True)
        except ConfigError:
            raise ConfigError(field, text, _REGRESSION_HELP) from None
    try:
        return InjectedRegression(kind, factor, at)
    except ConfigError as exc:
        raise ConfigError(field, text, f"{exc.field} {exc.problem}") from None


def _check_regression(value: Any) -> InjectedRegression | None:
    if value is not None and not isinstance(value, InjectedRegression):
        raise ConfigError("regression", value, "must be an InjectedRegression or None")
    return value


def _check_latency(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError("latency", value, "must be True, False or None (auto)")
    return value


def _check_burst(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigError("error_burst_max", value, "must be an integer in [1, 1000]")
    return value


def _check_drift_seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = finite("drift_seconds", value)
    if not seconds > 0:
        raise ConfigError("drift_seconds", value, "must be > 0 seconds or None (the plan's length)")
    return seconds


@attrs.frozen(kw_only=True)
class Scenario:
    """The traffic a policy is evaluated against; see the module docstring.

    - `requests_per_second`: total over both arms (at the cycle's mean).
    - `error_rate`: probability that a request fails, both arms alike before a regression.
    - `latency_median` (seconds), `latency_sigma`: the log-normal latency of a request.
    - `daily_amplitude` in [0, 1), `daily_period` (seconds): the traffic is multiplied by
      ``1 + amplitude * sin(2 pi t / period + phase)``, the phase random per run. Any
      period works: set it to the rollout's length for a load that swings once over it.
    - `regression`: an `InjectedRegression` on the canary, or None for A/A runs.
    - `latency`: draw latency histograms (True), do not (False), or only when the decider
      reads latency (None, the default; see `reads_latency`).

    The shapes of real traffic, each on both arms alike (all off by default):

    - `error_burst_max`: failures come in bursts, a retry on a sticky arm or one failure
      logged several times: each failure (at `error_rate` per request, as without
      bursts) counts as ``k`` failed requests of the arm where it happened, ``k``
      uniform in ``1..error_burst_max`` (1: independent failures). The evidence is in
      the failures, not in how often each is logged, so a test that knew the bursts
      would detect as fast as without them; the logged error share grows with
      ``mean(k)``.
    - `stall_fraction`, `stall_share`, `stall_seconds`: in a share `stall_fraction` of
      the windows, for each arm on its own, a share `stall_share` of that arm's requests
      take `stall_seconds` longer (a GC pause, a slow dependency; 0.1, 0.1, 0.3 is "10% of
      windows, 10% of requests, +300 ms").
    - `latency_drift`, `error_drift`: both arms' latency (every quantile) and error rate
      are multiplied by a factor that rises linearly from 1 at the start to this value
      after `drift_seconds` and stays there (a morning ramp; 1.3 is +30%). The factor
      moves in steps of 1/1024 (a staircase no window can tell from the line) and is
      taken at each window's middle. `drift_seconds` None means the plan's nominal
      length (its steps and pauses), or the horizon for a plan without one.
    - `canary_error_factor`, `canary_latency_factor`: differences between the arms that
      are not the release (another host, colder caches): the canary's error rate and
      latency multiplied from the start. A rollback for them is a false rollback; a
      `regression` multiplies on top of them.

    >>> Scenario().requests_per_second, Scenario().error_rate
    (100.0, 0.01)
    >>> Scenario(stall_fraction=0.1).describe().split("; ")[1]
    'stalls in 10% of windows per arm (10% of requests +300 ms)'
    """

    requests_per_second: float = 100.0
    error_rate: float = 0.01
    latency_median: float = 0.05
    latency_sigma: float = 0.25
    daily_amplitude: float = 0.0
    daily_period: float = 86400.0
    regression: InjectedRegression | None = attrs.field(default=None, converter=_check_regression)
    latency: bool | None = attrs.field(default=None, converter=_check_latency)
    error_burst_max: int = attrs.field(default=1, converter=_check_burst)
    stall_fraction: float = 0.0
    stall_share: float = 0.1
    stall_seconds: float = 0.3
    latency_drift: float = 1.0
    error_drift: float = 1.0
    drift_seconds: float | None = attrs.field(default=None, converter=_check_drift_seconds)
    canary_error_factor: float = 1.0
    canary_latency_factor: float = 1.0

    def __attrs_post_init__(self) -> None:
        checks: dict[str, tuple[float, float, bool, bool]] = {
            # name: (low, high, low open, high open)
            "requests_per_second": (0.0, math.inf, True, True),
            "error_rate": (0.0, 1.0, False, False),
            "latency_median": (0.0, math.inf, True, True),
            "latency_sigma": (0.0, 10.0, False, False),
            "daily_amplitude": (0.0, 1.0, False, True),
            "daily_period": (0.0, math.inf, True, True),
            "stall_fraction": (0.0, 1.0, False, False),
            "stall_share": (0.0, 1.0, True, False),
            "stall_seconds": (0.0, 3600.0, False, False),
            "latency_drift": (0.0, 100.0, True, False),
            "error_drift": (0.0, 100.0, True, False),
            "canary_error_factor": (0.0, 100.0, True, False),
            "canary_latency_factor": (0.0, 100.0, True, False),
        }
        for name, (low, high, low_open, high_open) in checks.items():
            value = finite(name, getattr(self, name))
            if (value <= low if low_open else value < low) or (
                value >= high if high_open else value > high
            ):
                left = "(" if low_open else "["
                right = ")" if high_open else "]"
                top = "inf" if high == math.inf else f"{high:g}"
                raise ConfigError(
                    name, getattr(self, name), f"must be in {left}{low:g}, {top}{right}"
                )
            object.__setattr__(self, name, value)
        # The highest error rate each arm reaches must stay a probability.
        highest = self.error_rate * max(1.0, self.error_drift)
        if highest > 1.0:
            raise ConfigError(
                "error_drift",
                self.error_drift,
                f"makes the error rate exceed 1 (error_rate {self.error_rate:g})",
            )
        highest *= self.canary_error_factor
        if highest > 1.0:
            raise ConfigError(
                "canary_error_factor",
                self.canary_error_factor,
                f"makes the canary's error rate exceed 1 (error_rate {self.error_rate:g})",
            )
        regression = self.regression
        if (
            regression is not None
            and regression.kind == "errors"
            and highest * regression.factor > 1.0
        ):
            raise ConfigError(
                "regression.factor",
                regression.factor,
                f"makes the canary's error rate exceed 1 (error_rate {self.error_rate:g})",
            )

    def describe(self) -> str:
        """One line a person reads: traffic, errors, latency, shapes and regression."""
        text = (
            f"{self.requests_per_second:g} requests/s, errors {self.error_rate * 100:.2f}%, "
            f"latency median {self.latency_median * 1000:g} ms (sigma {self.latency_sigma:g})"
        )
        if self.daily_amplitude:
            text += f", daily cycle +-{self.daily_amplitude * 100:g}% every {self.daily_period:g} s"
        shapes = []
        if self.error_burst_max > 1:
            shapes.append(f"errors in bursts of 1 to {self.error_burst_max}")
        if self.stall_fraction:
            shapes.append(
                f"stalls in {self.stall_fraction * 100:g}% of windows per arm "
                f"({self.stall_share * 100:g}% of requests +{self.stall_seconds * 1000:g} ms)"
            )
        drifts = [
            f"{name} x{value:g}"
            for name, value in (("latency", self.latency_drift), ("errors", self.error_drift))
            if value != 1.0
        ]
        if drifts:
            over = "the plan" if self.drift_seconds is None else f"{self.drift_seconds:g} s"
            shapes.append(f"drifting to {' and '.join(drifts)} over {over}")
        bias = [
            f"{name} x{value:g}"
            for name, value in (
                ("latency", self.canary_latency_factor),
                ("errors", self.canary_error_factor),
            )
            if value != 1.0
        ]
        if bias:
            shapes.append(f"canary {' and '.join(bias)} not from the release")
        return "; ".join([text, *shapes]) + f"; regression: {self.regression or 'none (A/A)'}"

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data = attrs.asdict(self, recurse=False)
        regression = self.regression
        data["regression"] = None if regression is None else attrs.asdict(regression)
        return data


def hold_plan(
    percent: float = 10.0, seconds: float = 3 * 3600.0, *, analysis_interval: float = 10.0
) -> Plan:
    """A canary held at `percent` for `seconds`, judged every `analysis_interval`.

    Promotion does not need a pass (``require_pass=False``), so every rollback is the
    decider's doing: the plan for measuring false rollbacks and detection.

    >>> hold_plan(10, 3600).steps
    (SetWeight(percent=10.0), Pause(seconds=3600.0))
    """
    return Plan(
        steps=[SetWeight(percent), Pause(seconds)],
        analysis_interval=analysis_interval,
        require_pass=False,
    )


def reads_latency(decider: Decider) -> bool:
    """Whether `decider` may read latency histograms (so the evaluator must draw them).

    A decider may say so with a boolean attribute ``reads_latency``. Otherwise: the
    sequential error test does not; composites (``deciders``) and wrappers (``decider``)
    do if a member does; deciders listing their metrics (``bounds``, ``comparisons``,
    ``metrics``, each item with a ``metric`` name) do if one is a latency metric
    (``p50``, ``p95``, ``p99``, ``mean_latency``, ``latency``). Any other decider is
    assumed to read latency.

    >>> from canarykit.deciders import bound, threshold
    >>> reads_latency(threshold(bound("error_rate", max=0.02)))
    False
    >>> reads_latency(threshold(bound("error_rate", max=0.02)) & threshold(bound("p99", max=1)))
    True
    """
    flag = getattr(decider, "reads_latency", None)
    if isinstance(flag, bool):
        return flag
    from .. import deciders

    counts_only = getattr(deciders, "SequentialErrors", None)
    if counts_only is not None and isinstance(decider, counts_only):
        return False  # error counts (or a count gauge) per request
    members = getattr(decider, "deciders", None)
    if isinstance(members, tuple) and (
        isinstance(decider, (AllOf, AnyOf)) or all(isinstance(m, Decider) for m in members)
    ):
        return any(reads_latency(member) for member in members)
    inner = getattr(decider, "decider", None)
    if inner is not None and isinstance(inner, Decider):
        return reads_latency(inner)
    for name in ("bounds", "comparisons", "metrics"):
        items = getattr(decider, name, None)
        if isinstance(items, tuple) and items:
            metrics = [getattr(item, "metric", None) for item in items]
            if all(isinstance(metric, str) for metric in metrics):
                return any(m in LATENCY_METRICS or m == "latency" for m in metrics)
    return True


# ---------------------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
class RunResult:
    """One rollout of an evaluation.

    `outcome` is "promoted", "rolled_back", "aborted", or, for a run stopped at the
    horizon, "paused" or "running". `end` is when it ended (the horizon if it did not).
    `detect_seconds` is the time from the regression's start to a rollback after it.
    Counts are over the analysed windows: `exposed_requests` canary requests after the
    regression began, with `excess_errors` (counted) and `expected_excess_errors`
    more failures than the baseline rate; `bad_requests` is the headline figure (the
    expected excess errors for an error regression, the exposed requests for a latency
    one, 0 without a regression).
    """

    index: int
    outcome: str
    end: float
    reason: str
    windows: int
    canary_requests: int
    canary_errors: int
    detect_seconds: float | None
    exposed_requests: int
    excess_errors: float
    expected_excess_errors: float
    bad_requests: float

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return attrs.asdict(self)


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The `q`-quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); (0, 1) with no trials.

    >>> [round(x, 4) for x in wilson_interval(10, 1000)]
    [0.0054, 0.0183]
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@attrs.frozen(kw_only=True)
class Evaluation:
    """What `evaluate` returns: the runs and the figures drawn from them.

    The figures are properties computed from `results`, so evaluations of disjoint
    run ranges (say, from several processes) `combine` into the same figures.
    """

    scenario: Scenario
    seed: int
    horizon: float
    results: tuple[RunResult, ...]
    seconds: float = 0.0

    @property
    def runs(self) -> int:
        """The number of rollouts."""
        return len(self.results)

    def _count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def promoted(self) -> int:
        """Runs that ended promoted."""
        return self._count("promoted")

    @property
    def rolled_back(self) -> int:
        """Runs that ended rolled back (early or not)."""
        return self._count("rolled_back")

    @property
    def aborted(self) -> int:
        """Runs that ended aborted."""
        return self._count("aborted")

    @property
    def unfinished(self) -> int:
        """Runs still paused or running at the horizon."""
        return sum(1 for r in self.results if r.outcome in ("paused", "running"))

    @property
    def windows(self) -> int:
        """Analysis windows judged over all runs."""
        return sum(r.windows for r in self.results)

    @property
    def detected(self) -> int:
        """Runs rolled back after the regression began (0 without a regression)."""
        return sum(1 for r in self.results if r.detect_seconds is not None)

    @property
    def false_rollbacks(self) -> int:
        """Rollbacks of a healthy canary: all of them in A/A, else those before the regression."""
        return self.rolled_back - self.detected

    @property
    def false_rollback_rate(self) -> float:
        """`false_rollbacks` per run."""
        return self.false_rollbacks / self.runs if self.runs else 0.0

    @property
    def detect_rate(self) -> float | None:
        """Detected runs per run; None without a regression."""
        if self.scenario.regression is None:
            return None
        return self.detected / self.runs if self.runs else 0.0

    def _detect_times(self) -> list[float]:
        return [r.detect_seconds for r in self.results if r.detect_seconds is not None]

    @property
    def median_detect_seconds(self) -> float | None:
        """Median time from the regression's start to the rollback, over detected runs."""
        return _quantile(self._detect_times(), 0.5)

    @property
    def p90_detect_seconds(self) -> float | None:
        """90th percentile of the time to detect, over detected runs."""
        return _quantile(self._detect_times(), 0.9)

    @property
    def median_bad_requests(self) -> float | None:
        """Median of `RunResult.bad_requests` over all runs; None without a regression."""
        if self.scenario.regression is None:
            return None
        return _quantile([r.bad_requests for r in self.results], 0.5)

    @property
    def median_promotion_seconds(self) -> float | None:
        """Median time from the start to full promotion, over promoted runs."""
        return _quantile([r.end for r in self.results if r.outcome == "promoted"], 0.5)

    @classmethod
    def combine(cls, parts: Iterable[Evaluation]) -> Evaluation:
        """One evaluation from evaluations of the same scenario over disjoint runs.

        `seconds` adds up (the compute time, not the wall time of parallel parts).
        """
        parts = list(parts)
        if not parts:
            raise ConfigError("parts", parts, "must hold at least one evaluation")
        first = parts[0]
        for part in parts[1:]:
            if (part.scenario, part.seed, part.horizon) != (
                first.scenario,
                first.seed,
                first.horizon,
            ):
                raise ConfigError("parts", part, "must share scenario, seed and horizon")
        results = sorted((r for p in parts for r in p.results), key=lambda r: r.index)
        if len({r.index for r in results}) != len(results):
            raise ConfigError("parts", parts, "must cover disjoint runs")
        return cls(
            scenario=first.scenario,
            seed=first.seed,
            horizon=first.horizon,
            results=tuple(results),
            seconds=sum(p.seconds for p in parts),
        )

    def summary(self) -> dict[str, Any]:
        """The figures as plain data (no per-run results)."""
        regression = self.scenario.regression is not None
        low, high = wilson_interval(self.false_rollbacks, self.runs)
        data: dict[str, Any] = {
            "runs": self.runs,
            "promoted": self.promoted,
            "rolled_back": self.rolled_back,
            "aborted": self.aborted,
            "unfinished": self.unfinished,
            "false_rollbacks": self.false_rollbacks,
            "false_rollback_rate": self.false_rollback_rate,
            "false_rollback_interval_95": [low, high],
            "median_promotion_s": self.median_promotion_seconds,
            "windows": self.windows,
        }
        if regression:
            low, high = wilson_interval(self.detected, self.runs)
            data.update(
                detected=self.detected,
                detect_rate=self.detect_rate,
                detect_interval_95=[low, high],
                median_detect_s=self.median_detect_seconds,
                p90_detect_s=self.p90_detect_seconds,
                median_bad_requests=self.median_bad_requests,
            )
        return data

    def to_json(self, *, results: bool = False) -> dict[str, Any]:
        """The scenario, settings and figures as plain data; with the runs if `results`."""
        data: dict[str, Any] = {
            "scenario": self.scenario.to_json(),
            "seed": self.seed,
            "horizon_s": self.horizon,
            **self.summary(),
            "seconds": self.seconds,
        }
        if results:
            data["results"] = [r.to_json() for r in self.results]
        return data


# ---------------------------------------------------------------------------- sampling


def _small_poisson(uniform: Callable[[], float], mean: float) -> int:
    """Poisson(mean) by sequential inversion; for small means only (a few at most)."""
    u = uniform()
    p = math.exp(-mean)
    total = p
    k = 0
    while u > total and p > 0.0:
        k += 1
        p *= mean / k
        total += p
    return k


class _Sampler:
    """Draws one run's windows for a scenario; holds the caches shared by all runs.

    `duration` is the time over which a drift rises when the scenario does not say.
    """

    def __init__(self, scenario: Scenario, with_latency: bool, duration: float = 1.0) -> None:
        self.rate = scenario.requests_per_second
        self.p = scenario.error_rate
        self.median = scenario.latency_median
        self.sigma = scenario.latency_sigma
        self.amplitude = scenario.daily_amplitude
        self.omega = _TWO_PI / scenario.daily_period
        self.latency = with_latency
        regression = scenario.regression
        self.at = math.inf if regression is None else regression.at
        self.kind = None if regression is None else regression.kind
        factor = 1.0 if regression is None else regression.factor
        # The canary's baseline (differences that are not the release), then the release.
        self.canary_p = self.p * scenario.canary_error_factor
        self.canary_median = self.median * scenario.canary_latency_factor
        self.bad_p = self.canary_p * factor if self.kind == "errors" else self.canary_p
        self.bad_median = (
            self.canary_median * factor if self.kind == "latency" else self.canary_median
        )
        self.steady = self.amplitude == 0.0
        # Bursts: failure events at p per request, each failing k requests.
        self.burst_max = scenario.error_burst_max
        # Stalls only change latency: without latency histograms there is nothing to draw.
        self.stall_fraction = scenario.stall_fraction if with_latency else 0.0
        self.stall_share = scenario.stall_share
        self.stall_seconds = scenario.stall_seconds
        self.stall_tables: dict[float, tuple[int, tuple[float, ...], tuple[float, ...]]] = {}
        self.error_drift = scenario.error_drift - 1.0
        self.latency_drift = scenario.latency_drift - 1.0 if with_latency else 0.0
        self.drifting = bool(self.error_drift or self.latency_drift)
        drift_seconds = scenario.drift_seconds
        self.drift_seconds = duration if drift_seconds is None else drift_seconds
        self.plans: dict[tuple[float, float], _ArmPlan] = {}
        self.count_tables: dict[
            tuple[float, float], tuple[int, tuple[float, ...], int, tuple[float, ...]]
        ] = {}

    def exposure(self, start: float, end: float, phase: float) -> float:
        """Seconds of traffic at the mean rate in [start, end): the cycle integrated."""
        if self.steady:
            return end - start
        omega = self.omega
        swing = (
            self.amplitude
            / omega
            * (math.cos(omega * start + phase) - math.cos(omega * end + phase))
        )
        return end - start + swing

    def drift(self, t: float) -> tuple[float, float]:
        """(error factor, latency factor) at `t`, on a staircase of 1/1024 steps."""
        progress = min(1.0, max(0.0, t / self.drift_seconds))
        # Rounded to a binary grid so that windows share their tables and plans.
        errors = round((1.0 + self.error_drift * progress) * 1024.0) / 1024.0
        latency = round((1.0 + self.latency_drift * progress) * 1024.0) / 1024.0
        return errors, latency

    def window(
        self, rng: random.Random, start: float, end: float, share: float, phase: float
    ) -> tuple[_Arm, _Arm, tuple[int, int, float, float] | None]:
        """Both arms over [start, end) with `share` (0..1) of the requests on the canary.

        Returns (stable, canary, exposed): each arm's (requests, errors, latency or None),
        and for the canary's traffic after the regression began (None before it) its
        requests, its errors, and its expected excess and baseline errors.
        """
        seconds = self.exposure(start, end, phase)
        p, median = self.p, self.median
        canary_p, canary_median = self.canary_p, self.canary_median
        bad_p, bad_median = self.bad_p, self.bad_median
        if self.drifting:
            errors_factor, latency_factor = self.drift((start + end) * 0.5)
            p *= errors_factor
            canary_p *= errors_factor
            bad_p *= errors_factor
            median *= latency_factor
            canary_median *= latency_factor
            bad_median *= latency_factor
        stable_stalls = canary_stalls = False
        stalls = self.stall_fraction
        if stalls:
            uniform = rng.random
            stable_stalls = uniform() < stalls
            canary_stalls = uniform() < stalls
        arm = self.arm
        rate = self.rate
        stable = arm(rng, rate * seconds * (1.0 - share), p, median, stable_stalls)
        at = self.at
        if end <= at:
            canary = arm(rng, rate * seconds * share, canary_p, canary_median, canary_stalls)
            return stable, canary, None
        if start >= at:
            canary = arm(rng, rate * seconds * share, bad_p, bad_median, canary_stalls)
            requests = canary[0]
            exposed = (requests, canary[1], requests * (bad_p - canary_p), requests * canary_p)
            return stable, canary, exposed
        exposure = self.exposure
        before = arm(
            rng, rate * exposure(start, at, phase) * share, canary_p, canary_median, canary_stalls
        )
        after = arm(rng, rate * exposure(at, end, phase) * share, bad_p, bad_median, canary_stalls)
        requests = after[0]
        exposed = (requests, after[1], requests * (bad_p - canary_p), requests * canary_p)
        return stable, _merge(before, after), exposed

    def poisson(self, uniform: Callable[[], float], mean: float) -> int:
        # A steady scenario repeats a few means: exact cached tables. Under a daily cycle
        # every mean is new: draw Poisson(g) from the table of g = the mean rounded down
        # to 8 significant bits, plus Poisson(mean - g) by inversion (a sum of independent
        # Poissons is Poisson), so tables are shared and the draw stays exact.
        if self.steady or mean >= _HUGE or mean <= 0.0:
            return _poisson(uniform, mean)
        grid = _grid(mean)
        lo, cdf = _poisson_table(grid)
        count = lo + bisect_right(cdf, uniform())
        rest = mean - grid
        return count + _small_poisson(uniform, rest) if rest > 0.0 else count

    def burst(self, uniform: Callable[[], float], events: int) -> int:
        """The failed requests of `events` failure events of 1..burst_max requests each."""
        top = self.burst_max
        return events + sum([int(uniform() * top) for _ in range(events)])

    def arm(
        self,
        rng: random.Random,
        mean: float,
        p: float,
        median: float,
        stalled: bool = False,
    ) -> _Arm:
        """(requests, errors, latency or None) of one arm over one stretch of traffic."""
        uniform = rng.random
        if not self.latency:
            # Failures and successes are independent Poisson counts (thinning), so the
            # requests need no binomial: two table look-ups for a steady scenario. With
            # bursts the first count is of failure events, each failing 1..burst_max.
            tables = self.count_tables.get((mean, p))
            if tables is not None:
                lo_errors, errors_cdf, lo_ok, ok_cdf = tables
                errors = lo_errors + bisect_right(errors_cdf, uniform())
                if errors and self.burst_max > 1:
                    errors = self.burst(uniform, errors)
                return errors + lo_ok + bisect_right(ok_cdf, uniform()), errors, None
            bad, good = mean * p, mean * (1.0 - p)
            if self.steady and 0.0 < bad < _HUGE and 0.0 < good < _HUGE:
                if len(self.count_tables) >= 8192:
                    self.count_tables.clear()
                self.count_tables[(mean, p)] = (*_poisson_table(bad), *_poisson_table(good))
                return self.arm(rng, mean, p, median)
            errors = self.poisson(uniform, bad) if p > 0.0 else 0
            if errors and self.burst_max > 1:
                errors = self.burst(uniform, errors)
            if p >= 1.0:
                return errors, errors, None
            return errors + self.poisson(uniform, good), errors, None
        if mean <= 0.0:
            return 0, 0, LatencyHistogram.empty()
        if stalled:
            # Thinning: the stalled requests are an independent Poisson count.
            slow = mean * self.stall_share
            requests, histogram = self.lognormal(rng, mean - slow, median)
            extra = self.poisson(uniform, slow)
            if extra:
                histogram = histogram.merge(self.stalled(uniform, extra, median))
                requests += extra
        else:
            requests, histogram = self.lognormal(rng, mean, median)
        if not requests:
            return 0, 0, histogram
        if self.burst_max > 1:
            events = _binomial(uniform, requests, p)
            errors = min(requests, self.burst(uniform, events)) if events else 0
        else:
            errors = _binomial(uniform, requests, p)
        return requests, errors, histogram

    def lognormal(
        self, rng: random.Random, mean: float, median: float
    ) -> tuple[int, LatencyHistogram]:
        """Poisson(`mean`) requests with log-normal latency: (their count, their histogram)."""
        if mean <= 0.0:
            return 0, LatencyHistogram.empty()
        uniform = rng.random
        rest = 0.0
        key = mean
        if not self.steady and mean < _HUGE:
            key = _grid(mean)
            rest = mean - key
        plan = self.plans.get((key, median))
        if plan is None:
            if len(self.plans) >= 16384:
                self.plans.clear()
            plan = self.plans[(key, median)] = _arm_plan(key, median, self.sigma)
        requests, histogram = _draw_latency(uniform, plan)
        if rest > 0.0:
            extra = _small_poisson(uniform, rest)
            if extra:
                mu, sigma = math.log(median), self.sigma
                values = [rng.lognormvariate(mu, sigma) for _ in range(extra)]
                histogram = _add_samples(histogram, values)
                requests += extra
        return requests, histogram

    def stalled(self, uniform: Callable[[], float], count: int, median: float) -> LatencyHistogram:
        """The histogram of `count` stalled requests: log-normal plus `stall_seconds`."""
        table = self.stall_tables.get(median)
        if table is None:
            table = self.stall_tables[median] = _shifted_buckets(
                median, self.sigma, self.stall_seconds
            )
        low, shares, means = table
        positions = list(
            map(bisect_right, repeat(shares, count), starmap(uniform, repeat((), count)))
        )
        first = min(positions)
        counts = [0] * (max(positions) - first + 1)
        for position in positions:
            counts[position - first] += 1
        total = math.fsum(means[position] for position in positions)
        return _make(low + first, tuple(counts), total)


_Arm = tuple[int, int, LatencyHistogram | None]


def _shifted_buckets(
    median: float, sigma: float, shift: float
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(first bucket index, cumulative shares, E[latency | bucket]) of log-normal + `shift`.

    Exact bucket masses of the shifted log-normal (buckets with less than 1e-13 of the
    mass left out): a stalled request picks its bucket with one uniform.
    """
    if sigma == 0.0:
        return bucket_index(median + shift), (1.0,), (median + shift,)
    mu = math.log(median)
    low = bucket_index(shift + median * math.exp(-8.5 * sigma))
    high = bucket_index(shift + median * math.exp(8.5 * sigma))
    scale = math.exp(mu + sigma * sigma / 2.0)
    masses: list[float] = []
    means: list[float] = []
    for index in range(low, high + 1):
        lower, upper = bucket_bounds(index)
        if index == MAX_INDEX:
            upper = math.inf
        # In the normal's units: z = (ln(x - shift) - mu) / sigma.
        z_low = -math.inf if lower <= shift else (math.log(lower - shift) - mu) / sigma
        z_high = (
            math.inf
            if upper == math.inf
            else (-math.inf if upper <= shift else (math.log(upper - shift) - mu) / sigma)
        )
        mass = _mass(z_low, z_high) if z_high > z_low else 0.0
        partial = scale * _mass(z_low - sigma, z_high - sigma) if mass > 0.0 else 0.0
        masses.append(mass)
        if mass > 1e-300 and partial > 0.0:
            means.append(shift + partial / mass)
        else:  # the middle of the bucket (its lower bound for the last, open one)
            means.append(lower if upper == math.inf else (lower + upper) / 2.0)
    kept = [k for k, mass in enumerate(masses) if mass >= 1e-13]
    start, stop = kept[0], kept[-1] + 1
    shares = list(accumulate(masses[start:stop]))
    total = shares[-1]
    shares = [share / total for share in shares]
    shares[-1] = 1.0  # a uniform in [0, 1) always finds a bucket
    return low + start, tuple(shares), tuple(means[start:stop])


def _add_samples(histogram: LatencyHistogram, values: list[float]) -> LatencyHistogram:
    by_index = dict(histogram.items())
    for value in values:
        index = bucket_index(value)
        by_index[index] = by_index.get(index, 0) + 1
    low = min(by_index)
    dense = [0] * (max(by_index) - low + 1)
    for index, count in by_index.items():
        dense[index - low] = count
    total = (histogram.sum or 0.0) + math.fsum(values)
    return _make(low, tuple(dense), total)


def _merge(
    a: tuple[int, int, LatencyHistogram | None], b: tuple[int, int, LatencyHistogram | None]
) -> tuple[int, int, LatencyHistogram | None]:
    latency = a[2] if b[2] is None else (b[2] if a[2] is None else a[2].merge(b[2]))
    return a[0] + b[0], a[1] + b[1], latency


# ---------------------------------------------------------------------------- routing

_Drawn = tuple[int, int, LatencyHistogram | None]


class _Routing:
    """The canary's share of requests under each split, and the gauges of each window."""

    def __init__(
        self,
        header_share: HeaderShare = DEFAULT_HEADER_SHARE,
        gauges: Mapping[str, Rate] = _NO_GAUGES,
    ) -> None:
        self.header_share = header_share
        self.gauges = gauges
        self.shares: dict[TrafficSplit, float] = {}

    def share(self, split: TrafficSplit) -> float:
        """The share of requests the canary serves under `split` (`canary_share`)."""
        if not split.header_routes:
            return split.canary_percent / 100.0
        share = self.shares.get(split)
        if share is None:
            share = self.shares[split] = canary_share(split, self.header_share)
        return share

    def observation(
        self,
        rng: random.Random,
        start: float,
        end: float,
        share: float,
        stable: _Drawn,
        canary: _Drawn,
        split: TrafficSplit,
    ) -> Observation:
        """The window's observation under `split`, with both arms' gauges read at its midpoint.

        It carries the split, as the runner's observations do once it has filled it in,
        for deciders that weigh an arm by its share of the traffic.
        """
        if not self.gauges:
            return _trusted_observation(
                start, end, _trusted_arm_stats(*stable), _trusted_arm_stats(*canary), split
            )
        t, percent, uniform = (start + end) * 0.5, share * 100.0, rng.random
        stable_gauges = gauge_readings(self.gauges, uniform, t, Arm.STABLE, percent)
        canary_gauges = gauge_readings(self.gauges, uniform, t, Arm.CANARY, percent)
        return _trusted_observation(
            start,
            end,
            _trusted_arm_stats(*stable, stable_gauges),
            _trusted_arm_stats(*canary, canary_gauges),
            split,
        )


# ---------------------------------------------------------------------------- one run


class _CannotEvaluate(ConfigError):
    """The decider cannot be driven without an event loop."""


def _drive(
    judging: WindowJudge, state: RolloutState, action: CollectWindow, judged: Awaitable[Any]
) -> Judged:
    """An async decider's answer, driven without an event loop (one that never waits)."""
    # Most async judges never really wait; one that does cannot run in virtual time
    # without an event loop.
    iterator = judged.__await__()
    try:
        iterator.send(None)
    except StopIteration as stop:
        return judging.settle(stop.value)
    except Exception as exc:  # as when the runner awaits it: a failed window
        return judging.failure(exc)
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    raise _CannotEvaluate(
        "decider",
        judging.decider_for(state, action.kind),
        "waits in judge(); evaluate needs a judge that does not wait",
    )


def _run_key(seed: int, index: int) -> int:
    zigzag = seed * 2 if seed >= 0 else -2 * seed - 1
    return (zigzag << 64) | index


def _run(
    plan: Plan,
    decider: Decider,
    sampler: _Sampler,
    index: int,
    seed: int,
    horizon: float,
    routing: _Routing | None = None,
    events: list[Event] | None = None,
) -> RunResult:
    """One seeded run; `events`, when given, gets every event fed to the machine."""
    routing = _Routing() if routing is None else routing
    rng = random.Random(_run_key(seed, index))
    phase = 0.0 if sampler.steady else rng.random() * _TWO_PI
    at = sampler.at
    kind = sampler.kind
    window = sampler.window
    # The runner's judging step (`canarykit._judging`), on the windows drawn here.
    judging = WindowJudge(plan, decider)
    answer = judging.answer
    window_event = judging.event

    windows = canary_requests = canary_errors = 0
    exposed = exposed_errors = 0
    expected_excess = expected_base = 0.0

    event: Event = Start(now=0.0)
    state = transition(plan, RolloutState(), event)
    if events is not None:
        events.append(event)
    now = 0.0
    while True:
        action = next_action(plan, state, now)
        action_type = type(action)
        if action_type is CollectWindow:
            assert isinstance(action, CollectWindow)
            start, end = action.start, action.end
            split = state.confirmed or state.target
            share = routing.share(split)
            stable, canary, gained = window(rng, start, end, share, phase)
            if gained is not None:
                exposed += gained[0]
                exposed_errors += gained[1]
                expected_excess += gained[2]
                expected_base += gained[3]
            canary_requests += canary[0]
            canary_errors += canary[1]
            observation = routing.observation(rng, start, end, share, stable, canary, split)
            windows += 1
            judged = answer(state, action, observation)  # it carries its split
            if not isinstance(judged, (Judgement, str)):
                judged = _drive(judging, state, action, judged)
            event = window_event(action, now, judged)
        elif action_type is WaitUntil:
            assert isinstance(action, WaitUntil)
            until = action.until
            if until <= now:
                # A deadline has passed: as the runner does, only once the windows due
                # at this moment are collected (next_action puts them first), so a
                # step ends on fresh data and the next split is not judged early.
                event = Tick(now)
            elif until > horizon:
                break
            else:
                now = until
                continue
        elif action_type is ApplySplit:
            assert isinstance(action, ApplySplit)
            event = SplitApplied(now, action.split)
        else:  # Finish
            break
        state = transition(plan, state, event)
        if events is not None:
            events.append(event)

    phase_now = state.phase
    if phase_now is Phase.SUCCEEDED:
        outcome = "promoted"
    elif phase_now is Phase.ROLLED_BACK:
        outcome = "rolled_back"
    elif phase_now is Phase.ABORTED:
        outcome = "aborted"
    elif phase_now is Phase.PAUSED:
        outcome = "paused"
    else:
        outcome = "running"
    end_time = state.finished_at if state.finished_at is not None else max(now, horizon)
    detect = None
    if outcome == "rolled_back" and end_time > at:
        detect = end_time - at
    if kind == "errors":
        bad = expected_excess
    elif kind == "latency":
        bad = float(exposed)
    else:
        bad = 0.0
    return RunResult(
        index=index,
        outcome=outcome,
        end=end_time,
        reason=state.reason,
        windows=windows,
        canary_requests=canary_requests,
        canary_errors=canary_errors,
        detect_seconds=detect,
        exposed_requests=exposed,
        excess_errors=exposed_errors - expected_base,
        expected_excess_errors=expected_excess,
        bad_requests=bad,
    )


def _needs_latency(plan: Plan, decider: Decider) -> bool:
    if reads_latency(decider):
        return True
    return any(
        isinstance(step, Analyze) and step.decider is not None and reads_latency(step.decider)
        for step in plan.steps
    )


def evaluate(
    plan: Plan,
    decider: Decider,
    scenario: Scenario | None = None,
    *,
    runs: int,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
    horizon: float | None = None,
    first_run: int = 0,
    header_share: HeaderShare = DEFAULT_HEADER_SHARE,
    gauges: Mapping[str, Rate] | None = None,
) -> Evaluation:
    """Run `runs` seeded rollouts of `plan` judged by `decider` against `scenario`.

    Run ``i`` (counting from `first_run`) draws its data from a generator seeded by
    (`seed`, ``i``) alone, so splitting the runs over processes (``first_run=0,
    runs=500`` and ``first_run=500, runs=500``) and joining them with
    `Evaluation.combine` gives exactly the figures of one call with ``runs=1000``.
    `progress(done, runs)` is called after every run. A run stops when nothing is due
    before `horizon` seconds (default: one hour after the plan could have ended).

    The decider must judge without waiting (a synchronous judge, or an async one that
    never suspends). A decider that raises makes a failed window, with the reason a real
    rollout gives it.

    `header_share` is the share of requests a header route matches (one number, or per
    header name; see `canarykit.testing._scripted.canary_share`), which sets the canary's
    traffic during header-route stages. `gauges` adds gauges both arms report in every
    window, as for `ScriptedMetrics`: a number, a function ``f(t, arm, canary_percent)``
    or a `ScriptedGauge` (CPU, memory, a leak on the canary), read at the window's
    midpoint.
    """
    if scenario is None:
        scenario = Scenario()
    if not isinstance(plan, Plan):
        raise ConfigError("plan", plan, "must be a Plan")
    if not isinstance(decider, Decider):
        raise ConfigError("decider", decider, "must implement the Decider protocol")
    if not isinstance(scenario, Scenario):
        raise ConfigError("scenario", scenario, "must be a Scenario")
    for name, value, low in (("runs", runs, 1), ("first_run", first_run, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(name, value, f"must be an integer >= {low}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", seed, "must be an integer")
    if horizon is None:
        horizon = plan.nominal_seconds + DEFAULT_EXTRA_HORIZON
    else:
        horizon = finite("horizon", horizon)
        if not horizon > 0:
            raise ConfigError("horizon", horizon, "must be > 0 seconds")
    with_latency = scenario.latency
    if with_latency is None:
        with_latency = _needs_latency(plan, decider)
    duration = plan.nominal_seconds if plan.nominal_seconds > 0 else horizon
    sampler = _Sampler(scenario, with_latency, duration)
    routing = _Routing(_freeze_header_share(header_share), _freeze_rates(gauges or {}))
    started = time.perf_counter()
    results: list[RunResult] = []
    for done, index in enumerate(range(first_run, first_run + runs), start=1):
        results.append(_run(plan, decider, sampler, index, seed, horizon, routing))
        if progress is not None:
            progress(done, runs)
    return Evaluation(
        scenario=scenario,
        seed=seed,
        horizon=horizon,
        results=tuple(results),
        seconds=time.perf_counter() - started,
    )
