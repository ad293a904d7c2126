"""Anytime-valid sequential deciders: check after every window, pay no extra false rollbacks.

A fixed-sample test re-run on a growing window rolls back healthy canaries far more often
than its nominal level (Netflix saw 66 of 100 A/A streams rejected at 0.05). The two
deciders here are *anytime-valid*: `alpha` bounds the probability of a false rollback
per rollout and per metric over the whole rollout, however often it is checked.

How `SequentialErrors` works. Condition on requests. In a window where the stable arm
served ``n_s`` requests with ``e_s`` errors and the canary ``n_c`` with ``e_c``, and the
two arms have the same error rate per request, the canary's share of the window's
errors is binomial, ``e_c | e_s + e_c ~ Binomial(e_s + e_c, p)`` with
``p = n_c / (n_s + n_c)``, whatever the error rate and whatever the split in other
windows. If the canary's rate is ``theta`` times the stable one, the share is
``q = theta p / (theta p + 1 - p)`` instead, and the window's likelihood ratio is
``theta ** e_c / (1 + p (theta - 1)) ** (e_s + e_c)``. The product over windows is a test
martingale under "same rate"; so is its average over a grid of ``theta`` values above 1
(log-spaced, uniform prior). By Ville's inequality it ever reaches ``1 / alpha`` with
probability at most ``alpha``: that is the rollback rule. The state keeps the running
log-product per grid point, so each window costs O(grid) and the split may change
between windows (each window carries its own ``p``).

Early pass (opt-in) runs the mirror test: the null ``theta = 1 + margin`` against a grid
of alternatives below it. For every ``theta >= 1 + margin`` the same mixture is a
supermartingale (the binomial family has a monotone likelihood ratio), so crossing
``1 / alpha`` rules out a regression beyond the margin at level `alpha`.

How `SequentialLatency` works. Each arm's latency histogram is accumulated over the
analysis. Howard & Ramdas (2022) give a DKW band that holds at every sample size at
once: with probability ``1 - alpha``, for every ``t >= 1``,
``sup_x |F_t(x) - F(x)| <= 0.85 sqrt((ln ln(e t) + 0.8 ln(1612 / alpha)) / t)``. With
``alpha / 2`` per arm, the band bounds every quantile of both arms at once; the decider
fails when, at one of the chosen quantile levels, the canary's lower bound exceeds
``1 + margin`` times the stable's upper bound.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate, repeat
from operator import add, mul, sub
from typing import Any

import attrs

from .._errors import ConfigError
from .._histogram import MAX_INDEX, MIN_INDEX, LatencyHistogram
from .._observe import Observation
from .._validate import MAX_COUNT, bounded_items, printable_name
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._compose import Composable

__all__ = [
    "SequentialErrors",
    "SequentialLatency",
    "band_width",
    "sequential_errors",
    "sequential_latency",
]

_log1p = math.log1p
_exp = math.exp
_log = math.log


def _number(field: str, value: Any, *, low: float, high: float, open_low: bool) -> float:
    """Return `value` as a float in the range, or raise ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    below = number <= low if open_low else number < low
    if math.isnan(number) or below or number > high:
        bracket = "(" if open_low else "["
        top = "inf)" if high == math.inf else f"{high:g}]"
        raise ConfigError(field, value, f"must be in {bracket}{low:g}, {top}")
    return number


def _integer(field: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(field, value, f"must be an int >= {low}")
    return int(value)


# The canary share of a window is rounded to a multiple of 1 / _SHARE_STEPS (outwards,
# conservatively) before use; see SequentialErrors._fail_terms.
_SHARE_STEPS = 4096


def _log_mean_exp(logs: list[float], log_size: float) -> float:
    """ln(mean(exp(logs))) without overflow: the log of a uniform mixture."""
    try:
        # The common case in one pass; exp overflows only past e**709.
        total = sum(map(_exp, logs))
        if total > 0.0:
            return _log(total) - log_size
    except OverflowError:
        pass
    top = max(logs)
    return top + _log(sum(map(_exp, map(sub, logs, repeat(top))))) - log_size


def _show_evidence(log_value: float) -> str:
    if log_value > 690.0:  # beyond a float's range; any such value is overwhelming
        return "> 1e299"
    return f"{_exp(log_value):.3g}"


def _numbers(values: Any, size: int) -> bool:
    """Whether saved `values` is a list of `size` numbers, none of them NaN (state check)."""
    return (
        isinstance(values, list)
        and len(values) == size
        and all((type(v) is int and -MAX_COUNT <= v <= MAX_COUNT) or _not_nan(v) for v in values)
    )


def _not_nan(value: Any) -> bool:
    return type(value) is float and value == value


def _counts_list(values: Any) -> bool:
    """Whether saved `values` is a list of ints >= 0 (a histogram's counts in a state)."""
    return isinstance(values, list) and all(type(v) is int and 0 <= v <= MAX_COUNT for v in values)


def _bad_state(kind: str, state: Any, example: str) -> ConfigError:
    return ConfigError("state", state, f"must be a {kind} state such as {example}")


# -- errors ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SequentialErrors(Composable):
    """Roll back once the canary's error rate is shown higher than the stable one's.

    An anytime-valid test (see the module docstring): `alpha` is the probability of a
    false rollback per rollout for this metric, over the whole rollout, however many
    windows are judged. The evidence is a mixture of likelihood ratios over a grid of
    rate ratios ``theta`` (canary rate / stable rate), `points` values log-spaced from
    `min_ratio` to `max_ratio`, uniform prior; FAIL once it reaches ``1 / alpha``, and
    FAIL from then on. Each window is conditioned on its own requests, so the test stays
    valid when the split changes between windows.

    - `metric`: ``"errors"``, or the name of a gauge holding a count of events per window
      (compared per request, like errors).
    - `min_errors`: below this many events in both arms together, NOT_YET.
    - `early_pass` with `margin`: PASS with ``early_pass=True`` once a canary rate more
      than ``1 + margin`` times the stable one is ruled out at level `alpha`.

    Verdicts: NOT_YET before both arms have served a request (no data is never a pass)
    or before `min_errors`; FAIL as above; otherwise PASS with the current evidence.

    At 100 requests/s, a 10% canary, 1% errors and 10 s windows (``alpha=0.01``),
    2,000 simulated 3-hour A/A rollouts rolled back falsely 0.2% of the time (0.35%
    with the split stepping 1, 5, 10, 25, 50% every 10 minutes); a doubled error rate
    was caught at a median of 2.8 minutes (p90 6.0), a fivefold one at 0.3 minutes
    (``benchmarks/sequential_check.py``). 30 grid points detect as fast as 60 at half
    the cost. Each window's canary share is rounded outwards to a multiple of 1/4096
    before use (see `_fail_terms`): conservative, and it lets the logarithms be cached.
    Evidence accumulates over the whole analysis: after a long healthy stretch, a
    regression that starts late is caught more slowly than one present from the start.

    >>> decider = SequentialErrors(alpha=0.01)
    >>> decider
    SequentialErrors(metric='errors', alpha=0.01, min_ratio=1.05, max_ratio=20.0, points=30, \
min_errors=0, early_pass=False, margin=0.2)
    >>> len(decider.initial_state()["log_fail"])
    30
    """

    metric: str = "errors"
    alpha: float = 0.01
    min_ratio: float = 1.05
    max_ratio: float = 20.0
    points: int = 30
    min_errors: int = 0
    early_pass: bool = False
    margin: float = 0.2
    _log_theta: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _theta_less_1: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _pass_log_theta: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _pass_theta_less_1: tuple[float, ...] = attrs.field(init=False, repr=False, eq=False)
    _log_points: float = attrs.field(init=False, repr=False, eq=False)
    _log_threshold: float = attrs.field(init=False, repr=False, eq=False)
    # Per-window terms by rounded canary share: a cache, not state (the same values
    # whether computed now or earlier), so judging stays a pure function of its inputs.
    _cache: dict[int, tuple[float, ...]] = attrs.field(
        init=False, repr=False, eq=False, hash=False, factory=dict
    )
    _gains: dict[int, tuple[float, ...]] = attrs.field(
        init=False, repr=False, eq=False, hash=False, factory=dict
    )
    _needed: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        alpha = _number("alpha", self.alpha, low=0.0, high=0.5, open_low=True)
        low = _number("min_ratio", self.min_ratio, low=1.0, high=math.inf, open_low=True)
        high = _number("max_ratio", self.max_ratio, low=low, high=1e6, open_low=True)
        points = _integer("points", self.points, low=1)
        if points > 10_000:
            raise ConfigError("points", points, "must be at most 10000")
        _integer("min_errors", self.min_errors, low=0)
        if not isinstance(self.early_pass, bool):
            raise ConfigError("early_pass", self.early_pass, "must be True or False")
        margin = _number("margin", self.margin, low=0.0, high=100.0, open_low=False)
        for name, value in (("alpha", alpha), ("min_ratio", low), ("max_ratio", high)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "margin", margin)
        thetas = _log_grid(low, high, points)
        set_ = object.__setattr__
        set_(self, "_log_theta", tuple(map(_log, thetas)))
        set_(self, "_theta_less_1", tuple(theta - 1.0 for theta in thetas))
        # Early pass: alternatives from 1 / max_ratio up to (not including) 1 + margin,
        # each tested against the null 1 + margin; stored relative to the null.
        null = 1.0 + margin
        below = _log_grid(1.0 / high, null, points + 1)[:-1]
        set_(self, "_pass_log_theta", tuple(_log(theta / null) for theta in below))
        set_(self, "_pass_theta_less_1", tuple(theta - 1.0 for theta in below))
        set_(self, "_log_points", _log(points))
        set_(self, "_log_threshold", -_log(alpha))
        set_(self, "_needed", f"{1 / alpha:.3g}")

    def __str__(self) -> str:
        text = (
            f"sequential {self.metric}: roll back when the canary's rate is shown higher "
            f"(alpha {self.alpha:g}, ratios {self.min_ratio:g} to {self.max_ratio:g})"
        )
        if self.early_pass:
            text += f"; early pass when over {1 + self.margin:g}x is ruled out"
        return text

    def initial_state(self) -> dict[str, Any]:
        """No evidence yet: log-products of 0 and no requests or events counted."""
        state: dict[str, Any] = {
            "failed": False,
            "stable": [0, 0],
            "canary": [0, 0],
            "log_fail": [0.0] * self.points,
        }
        if self.early_pass:
            state["log_pass"] = [0.0] * self.points
        return state

    def _read_state(self, state: Any) -> tuple[bool, list[Any], list[Any], list[Any], Any]:
        if state is None:
            state = self.initial_state()
        try:
            failed = state["failed"]
            stable, canary = state["stable"], state["canary"]
            log_fail = state["log_fail"]
            log_pass = state.get("log_pass") if self.early_pass else None
            ok = (
                isinstance(failed, bool)
                and _numbers(stable, 2)
                and _numbers(canary, 2)
                and _numbers(log_fail, self.points)
                and (log_pass is None) is not self.early_pass
                and (log_pass is None or _numbers(log_pass, self.points))
            )
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise _bad_state("SequentialErrors", state, "the one initial_state() returns") from None
        return failed, stable, canary, log_fail, log_pass

    def _counts(self, observation: Observation) -> tuple[int, float, int, float] | None:
        stable, canary = observation.stable, observation.canary
        if self.metric == "errors":
            return stable.requests, stable.errors, canary.requests, canary.errors
        gauge_s = stable.gauges.get(self.metric)
        gauge_c = canary.gauges.get(self.metric)
        if gauge_s is None or gauge_c is None:
            return None
        if not (0.0 <= gauge_s < math.inf and 0.0 <= gauge_c < math.inf):
            return None
        return stable.requests, gauge_s, canary.requests, gauge_c

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Fold one more window into the evidence; return the verdict and the new state."""
        failed, stable, canary, log_fail, log_pass = self._read_state(state)
        counts = self._counts(observation)
        if counts is not None:
            n_s, e_s, n_c, e_c = counts
            stable = [stable[0] + n_s, stable[1] + e_s]
            canary = [canary[0] + n_c, canary[1] + e_c]
            events = e_s + e_c
            # A window where either arm served nothing says nothing about the ratio (its
            # likelihood ratio is 1 for every theta), nor does one without events. After
            # a FAIL the evidence is frozen: the verdict cannot change any more.
            if n_s and n_c and events:
                share = n_c / (n_s + n_c)
                if not failed:
                    # ln LR(theta) = e_c ln(theta) - (e_s + e_c) ln(1 + p (theta - 1))
                    log_fail = list(
                        map(
                            add,
                            log_fail,
                            map(
                                sub,
                                self._fail_gain(e_c),
                                map(mul, self._fail_terms(share), repeat(events)),
                            ),
                        )
                    )
                if log_pass is not None:
                    # Against the null theta0 = 1 + margin: ln LR = e_c ln(theta / theta0)
                    # - (e_s + e_c) [ln(1 + p (theta - 1)) - ln(1 + p (theta0 - 1))].
                    log_pass = list(
                        map(
                            add,
                            log_pass,
                            map(
                                sub,
                                map(mul, self._pass_log_theta, repeat(e_c)),
                                map(mul, self._pass_terms(share), repeat(events)),
                            ),
                        )
                    )
        log_evidence = _log_mean_exp(log_fail, self._log_points)
        failed = failed or log_evidence >= self._log_threshold
        new_state: dict[str, Any] = {
            "failed": failed,
            "stable": stable,
            "canary": canary,
            "log_fail": log_fail,
        }
        if log_pass is not None:
            new_state["log_pass"] = log_pass
        return Judgement(self._verdict(failed, stable, canary, log_evidence, log_pass), new_state)

    def _fail_gain(self, events: Any) -> Any:
        """``e_c ln(theta)`` per grid point; cached for the small counts seen most."""
        if type(events) is int and 0 <= events < 64:
            gains = self._gains.get(events)
            if gains is None:
                gains = self._gains[events] = tuple(x * events for x in self._log_theta)
            return gains
        return map(mul, self._log_theta, repeat(events))

    def _fail_terms(self, share: float) -> tuple[float, ...]:
        """``ln(1 + p (theta - 1))`` per grid point, at the canary share `p` rounded up.

        Rounding `p` up to a multiple of ``1 / 4096`` makes each window's likelihood
        ratio slightly smaller (the term grows with `p` when theta > 1), so the evidence
        stays a valid supermartingale; the terms of a rounded share are computed once
        and cached, which saves a logarithm per grid point per window.
        """
        key = math.ceil(share * _SHARE_STEPS)
        terms = self._cache.get(key)
        if terms is None:
            p = min(key, _SHARE_STEPS) / _SHARE_STEPS
            terms = tuple(_log1p(p * x) for x in self._theta_less_1)
            self._remember(key, terms)
        return terms

    def _pass_terms(self, share: float) -> tuple[float, ...]:
        """``ln(1 + p (theta - 1)) - ln(1 + p margin)`` per alternative, `p` rounded down.

        For theta below the null ``1 + margin`` the term falls as `p` grows, so rounding
        `p` down keeps the early-pass evidence conservative, as above.
        """
        key = -1 - math.floor(share * _SHARE_STEPS)  # negative keys: the pass terms
        terms = self._cache.get(key)
        if terms is None:
            p = max(-1 - key, 0) / _SHARE_STEPS
            null = _log1p(p * self.margin)
            terms = tuple(_log1p(p * x) - null for x in self._pass_theta_less_1)
            self._remember(key, terms)
        return terms

    def _remember(self, key: int, terms: tuple[float, ...]) -> None:
        cache = self._cache
        if len(cache) >= 2 * _SHARE_STEPS + 2:  # every key at most once; a bound anyway
            cache.clear()
        cache[key] = terms

    def _verdict(
        self,
        failed: bool,
        stable: list[Any],
        canary: list[Any],
        log_evidence: float,
        log_pass: list[Any] | None,
    ) -> Verdict:
        metric = self.metric
        n_s, e_s = stable
        n_c, e_c = canary
        ratio = (e_c * n_s) / (n_c * e_s) if n_c and e_s else None
        shown = "n/a" if ratio is None else f"~{ratio:.3g}"
        early = False
        if failed:
            kind = VerdictKind.FAIL
            reason = (
                f"canary/stable rate ratio {shown}, shown above 1 (evidence "
                f"{_show_evidence(log_evidence)} of {self._needed} needed; "
                f"{e_c:g}/{n_c} canary, {e_s:g}/{n_s} stable)"
            )
        elif not n_c or not n_s:
            # Without both arms there is nothing to compare: no data is never a pass.
            kind = VerdictKind.NOT_YET
            reason = f"no {'canary' if not n_c else 'stable'} requests yet"
        elif e_s + e_c < self.min_errors:
            kind = VerdictKind.NOT_YET
            reason = (
                f"{e_s + e_c:g} {metric} so far, {self.min_errors} needed "
                f"({e_c:g}/{n_c} canary, {e_s:g}/{n_s} stable)"
            )
        else:
            kind = VerdictKind.PASS
            reason = (
                f"canary/stable rate ratio {shown}, evidence {_show_evidence(log_evidence)} "
                f"of {self._needed} needed ({e_c:g}/{n_c} canary, {e_s:g}/{n_s} stable)"
            )
            if log_pass is not None:
                log_pass_evidence = _log_mean_exp(log_pass, self._log_points)
                early = log_pass_evidence >= self._log_threshold
                if early:
                    reason += (
                        f"; over {1 + self.margin:g}x ruled out "
                        f"(evidence {_show_evidence(log_pass_evidence)})"
                    )
        item = MetricVerdict(metric=metric, kind=kind, reason=reason, value=ratio)
        return Verdict(kind=kind, reason=f"{metric}: {reason}", metrics=(item,), early_pass=early)


def _log_grid(low: float, high: float, points: int) -> list[float]:
    """`points` values log-spaced from `low` to `high` inclusive (just `low` for one)."""
    if points == 1:
        return [low]
    step = (_log(high) - _log(low)) / (points - 1)
    return [low * _exp(step * k) for k in range(points)]


def sequential_errors(
    *,
    alpha: float = 0.01,
    metric: str = "errors",
    min_ratio: float = 1.05,
    max_ratio: float = 20.0,
    points: int = 30,
    min_errors: int = 0,
    early_pass: bool = False,
    margin: float = 0.2,
) -> SequentialErrors:
    """Make a `SequentialErrors`: roll back when the canary's error rate is shown higher.

    `alpha` is the false-rollback probability per rollout for this metric, over the
    whole rollout however often it is checked.

    >>> decider = sequential_errors(alpha=0.01, early_pass=True, margin=0.2)
    >>> decider.early_pass, decider.margin
    (True, 0.2)
    """
    return SequentialErrors(
        alpha=alpha,
        metric=metric,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        points=points,
        min_errors=min_errors,
        early_pass=early_pass,
        margin=margin,
    )


# -- latency -----------------------------------------------------------------------------

_LOG_WIDTH = math.log(2.0) / 8  # ln of a bucket's width: 2 ** (1/8), about 9%


def _lower_edge(index: int) -> float:
    return math.pow(2.0, (index - 1) / 8)


def band_width(samples: int, alpha: float) -> float:
    """The Howard & Ramdas (2022) time-uniform DKW half-width at `samples` samples.

    With probability ``1 - alpha`` the empirical CDF stays within this distance of the
    true one, uniformly in x and at every sample size at once.

    >>> round(band_width(10_000, 0.005), 3)
    0.03
    """
    t = float(samples)
    return 0.85 * math.sqrt((_log(_log(math.e * t)) + 0.8 * _log(1612.0 / alpha)) / t)


def _quantile_bound(
    cumulative: list[int], offset: int, total: int, level: float, *, upper: bool, interpolate: bool
) -> float:
    """The `level`-quantile of the accumulated histogram, as a bound in seconds.

    Below level 0 the bound is 0, above level 1 it is infinite (too few samples to bound).
    Without interpolation the bucket's lower edge (for a lower bound) or upper edge (for
    an upper bound) is used, which is conservative whatever the shape inside the bucket.
    """
    if level <= 0.0:
        return 0.0
    if level > 1.0:
        return math.inf
    rank = level * total
    k = min(bisect_left(cumulative, rank), len(cumulative) - 1)
    low = _lower_edge(offset + k)
    if not interpolate:
        return low * 2.0**0.125 if upper else low
    below = cumulative[k - 1] if k else 0
    count = cumulative[k] - below
    fraction = min(max((rank - below) / count, 0.0), 1.0) if count else 1.0
    return low * _exp(fraction * _LOG_WIDTH)


def _show_ms(seconds: float) -> str:
    if seconds == math.inf:
        return "unbounded"
    ms = seconds * 1000.0
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def _level_name(q: float) -> str:
    text = f"{q * 100:.10g}"
    return f"p{text}"


def _to_quantiles(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)  # the validator checks it
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value  # the validator names the field
    return bounded_items("quantiles", value, _MAX_QUANTILES, "quantiles")


_MAX_QUANTILES = 100


@attrs.frozen(kw_only=True)
class SequentialLatency(Composable):
    """Roll back once a latency quantile of the canary is shown slower than the stable's.

    An anytime-valid test (see the module docstring): `alpha` is the probability of a
    false rollback per rollout for latency, over the whole rollout, however many
    windows are judged; each arm's band gets ``alpha / 2`` and one band covers every
    quantile at once, so the `quantiles` share `alpha`. Both arms' histograms are
    accumulated over the analysis. At each level ``q`` in `quantiles`:

    - FAIL when the canary's lower bound exceeds ``1 + margin`` times the stable's upper
      bound (and FAIL from then on);
    - with `early_pass`, PASS with ``early_pass=True`` when at every level the canary's
      upper bound is at most ``1 + margin`` times the stable's lower bound;
    - NOT_YET while either arm has fewer than `min_samples` latencies.

    Bucket interpolation (`interpolate`, the default): quantile bounds interpolate
    log-linearly inside a 9% bucket. Interpolating each arm's empirical CDF between the
    bucket edges, where it is exact, keeps the band valid for the interpolated true CDF
    (the interpolation is the same linear map for both), so with identical arms (A/A)
    the false-rollback bound `alpha` holds exactly. With ``interpolate=False`` bounds
    use bucket edges, valid for any shape inside a bucket, but they cost up to a bucket
    on each side: a +10% slowdown is about one bucket and is then barely detectable.
    The margin is then exact only up to the difference in shape inside a bucket.

    Measured (100 requests/s, 10% canary, 10 s windows, log-normal latency with median
    100 ms and sigma 0.5, ``alpha=0.01``): no false rollback in 300 one-hour A/A runs;
    +25% latency caught at a median of 0.8 minutes with the default ``margin=0`` (1.3
    with ``margin=0.05``); +10% at 4.4 minutes (p90 6.3) with ``margin=0``, but 19
    minutes with ``margin=0.05``: the slowdown beyond the margin is then under half a
    bucket, and the band must shrink below it. With
    bucket edges instead of interpolation +25% took 3.2 minutes and +10% was never caught.

    Caveats: the histograms are pooled over time, so when traffic has a daily cycle and
    the split changes, the canary's samples come from different hours than the stable
    arm's; keep analyses short relative to the cycle, or keep the split fixed while
    analysing. High quantiles need many samples: the band is about ``3 / sqrt(n)``
    wide, so p99 can only be bounded from about 100,000 samples per arm.

    >>> decider = sequential_latency(quantiles=(0.5, 0.95), margin=0.05)
    >>> decider
    SequentialLatency(alpha=0.01, quantiles=(0.5, 0.95), margin=0.05, min_samples=100)
    """

    alpha: float = 0.01
    quantiles: tuple[float, ...] = attrs.field(default=(0.5, 0.95, 0.99), converter=_to_quantiles)
    # No tolerated slowdown by default, as Kayenta's allowedIncrease of 1.0: alpha still
    # bounds false rollbacks when the versions are alike, and +10% is caught in minutes.
    margin: float = 0.0
    min_samples: int = 100
    early_pass: bool = attrs.field(default=False, repr=False)
    interpolate: bool = attrs.field(default=True, repr=False)
    _arm_alpha: float = attrs.field(init=False, repr=False, eq=False)
    _names: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        alpha = _number("alpha", self.alpha, low=0.0, high=0.5, open_low=True)
        object.__setattr__(self, "alpha", alpha)
        quantiles = self.quantiles
        if not isinstance(quantiles, tuple) or not quantiles:
            raise ConfigError("quantiles", quantiles, "must be a non-empty sequence of levels")
        if len(quantiles) > _MAX_QUANTILES:
            raise ConfigError("quantiles", quantiles, f"must hold at most {_MAX_QUANTILES} levels")
        for index, q in enumerate(quantiles):
            level = _number(f"quantiles[{index}]", q, low=0.0, high=math.inf, open_low=True)
            if level >= 1.0:
                raise ConfigError(f"quantiles[{index}]", q, "must be in (0, 1)")
        object.__setattr__(self, "quantiles", tuple(float(q) for q in quantiles))
        margin = _number("margin", self.margin, low=0.0, high=100.0, open_low=False)
        object.__setattr__(self, "margin", margin)
        _integer("min_samples", self.min_samples, low=1)
        if not isinstance(self.early_pass, bool):
            raise ConfigError("early_pass", self.early_pass, "must be True or False")
        if not isinstance(self.interpolate, bool):
            raise ConfigError("interpolate", self.interpolate, "must be True or False")
        object.__setattr__(self, "_arm_alpha", alpha / 2.0)
        names = tuple(f"latency {_level_name(q)}" for q in self.quantiles)
        object.__setattr__(self, "_names", names)

    def __str__(self) -> str:
        levels = ", ".join(_level_name(q) for q in self.quantiles)
        return (
            f"sequential latency: roll back when the canary's {levels} is shown more than "
            f"{self.margin:.0%} slower (alpha {self.alpha:g})"
        )

    def initial_state(self) -> dict[str, Any]:
        """No latencies yet: empty histograms for both arms, not failed."""
        return {"failed": "", "offset": 0, "stable": [], "canary": []}

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Add the window's histograms to the totals; return the verdict and the new state."""
        if state is None:
            state = self.initial_state()
        try:
            failed = state["failed"]
            offset, stable, canary = state["offset"], state["stable"], state["canary"]
            ok = (
                isinstance(failed, str)
                and type(offset) is int
                and _counts_list(stable)
                and _counts_list(canary)
                and len(stable) == len(canary)
                and (not stable or MIN_INDEX <= offset <= MAX_INDEX - len(stable) + 1)
            )
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise _bad_state(
                "SequentialLatency",
                state,
                "{'failed': '', 'offset': 0, 'stable': [], 'canary': []}",
            )
        offset, stable, canary = _accumulate(
            offset, stable, canary, observation.stable.latency, observation.canary.latency
        )
        verdict, failed = self._verdict(failed, offset, stable, canary)
        new_state = {"failed": failed, "offset": offset, "stable": stable, "canary": canary}
        return Judgement(verdict, new_state)

    def _verdict(
        self, failed: str, offset: int, stable: list[int], canary: list[int]
    ) -> tuple[Verdict, str]:
        cum_s = list(accumulate(stable))
        cum_c = list(accumulate(canary))
        total_s = cum_s[-1] if cum_s else 0
        total_c = cum_c[-1] if cum_c else 0
        counted = f"{total_c} canary, {total_s} stable latencies"
        if total_s < self.min_samples or total_c < self.min_samples:
            if failed:
                return self._failed_again(failed), failed
            reason = f"{counted}, {self.min_samples} per arm needed"
            items = [
                MetricVerdict(metric=name, kind=VerdictKind.NOT_YET, reason=reason)
                for name in self._names
            ]
            return Verdict(kind=VerdictKind.NOT_YET, reason=f"latency: {reason}", metrics=items), ""
        eps_s = band_width(total_s, self._arm_alpha)
        eps_c = band_width(total_c, self._arm_alpha)
        factor = 1.0 + self.margin
        interpolate = self.interpolate
        items = []
        failing = []
        all_clear = True
        for q, name in zip(self.quantiles, self._names, strict=True):
            c_low = _quantile_bound(
                cum_c, offset, total_c, q - eps_c, upper=False, interpolate=interpolate
            )
            c_high = _quantile_bound(
                cum_c, offset, total_c, q + eps_c, upper=True, interpolate=interpolate
            )
            s_low = _quantile_bound(
                cum_s, offset, total_s, q - eps_s, upper=False, interpolate=interpolate
            )
            s_high = _quantile_bound(
                cum_s, offset, total_s, q + eps_s, upper=True, interpolate=interpolate
            )
            value = c_low / s_high if s_high != math.inf and s_high > 0 else None
            if c_low > factor * s_high:
                kind = VerdictKind.FAIL
                reason = f"canary >= {_show_ms(c_low)} > {factor:g} x stable <= {_show_ms(s_high)}"
                failing.append(f"{name}: {reason}")
            else:
                kind = VerdictKind.PASS
                reason = (
                    f"canary {_show_ms(c_low)} to {_show_ms(c_high)}, "
                    f"stable {_show_ms(s_low)} to {_show_ms(s_high)}"
                )
                if not c_high <= factor * s_low:
                    all_clear = False
            items.append(MetricVerdict(metric=name, kind=kind, reason=reason, value=value))
        if failing:
            failed = "; ".join(failing)
            reason = f"{failed} ({counted})"
            return Verdict(kind=VerdictKind.FAIL, reason=reason, metrics=items), failed
        if failed:
            return self._failed_again(failed, items), failed
        early = self.early_pass and all_clear
        reason = "; ".join(f"{m.metric}: {m.reason}" for m in items) + f" ({counted})"
        if early:
            reason += f"; no slowdown beyond {self.margin:.0%} at any level"
        verdict = Verdict(kind=VerdictKind.PASS, reason=reason, metrics=items, early_pass=early)
        return verdict, ""

    def _failed_again(self, failed: str, items: list[MetricVerdict] | None = None) -> Verdict:
        # A FAIL is final: later windows repeat it whatever they show.
        reason = f"failed earlier: {failed}"
        metrics = [
            MetricVerdict(metric=name, kind=VerdictKind.FAIL, reason=reason) for name in self._names
        ]
        return Verdict(kind=VerdictKind.FAIL, reason=f"latency {reason}", metrics=items or metrics)


def _accumulate(
    offset: int,
    stable: list[int],
    canary: list[int],
    more_stable: LatencyHistogram | None,
    more_canary: LatencyHistogram | None,
) -> tuple[int, list[int], list[int]]:
    """Add the window's histograms to the running counts, on one common index range."""
    extra = [h for h in (more_stable, more_canary) if h is not None and h.counts]
    if not extra:
        return offset, stable, canary
    lows = [h.offset for h in extra]
    highs = [h.offset + len(h.counts) for h in extra]
    if stable:
        lows.append(offset)
        highs.append(offset + len(stable))
    low, high = min(lows), max(highs)
    size = high - low
    merged = []
    for old, more in ((stable, more_stable), (canary, more_canary)):
        if len(old) == size and low == offset:
            counts = list(old)
        else:
            counts = [0] * size
            if old:
                at = offset - low
                counts[at : at + len(old)] = old
        if more is not None and more.counts:
            at = more.offset - low
            stop = at + len(more.counts)
            counts[at:stop] = map(add, counts[at:stop], more.counts)
        merged.append(counts)
    return low, merged[0], merged[1]


def sequential_latency(
    *,
    alpha: float = 0.01,
    quantiles: Iterable[float] = (0.5, 0.95, 0.99),
    margin: float = 0.0,
    min_samples: int = 100,
    early_pass: bool = False,
    interpolate: bool = True,
) -> SequentialLatency:
    """Make a `SequentialLatency`: roll back when a latency quantile is shown slower.

    `alpha` is the false-rollback probability per rollout for latency, over the whole
    rollout however often it is checked; `margin` is the relative slowdown tolerated.

    >>> decider = sequential_latency(quantiles=[0.5, 0.99], margin=0.1, early_pass=True)
    >>> decider.quantiles, decider.early_pass
    ((0.5, 0.99), True)
    """
    return SequentialLatency(
        alpha=alpha,
        quantiles=quantiles,  # the converter makes a tuple
        margin=margin,
        min_samples=min_samples,
        early_pass=early_pass,
        interpolate=interpolate,
    )
