"""Scripted metrics: a seeded, noisy, fast fake `MetricsSource` for tests and simulations.

Every number is a function of time, arm and canary weight, and the data are drawn with
realistic noise: traffic proportional to the weight (Poisson), errors per request
(binomial) and log-normal latencies counted into the library's histogram buckets. For
example, a canary whose error rate doubles from t = 300 s:

>>> from canarykit._observe import Arm, Window
>>> from canarykit._split import TrafficSplit
>>> metrics = ScriptedMetrics(error_rate=regression(at=300.0, base=0.01, factor=2.0), seed=7)
>>> obs = metrics.observe(Window(start=0.0, end=10.0, split=TrafficSplit(canary_percent=10)))
>>> obs.stable.latency.count == obs.stable.requests
True
>>> metrics.observe(Window(start=0.0, end=10.0, split=TrafficSplit(canary_percent=10))) == obs
True

During a header-route stage the canary serves the requests a route matches (a share of
them set by `header_share`) and the split's percent of the rest; mirrored copies are
served by stable and never counted for the canary (`canary_share`). Gauges such as CPU
and memory are scripted per arm by `ScriptedGauge`, including a leak on the canary:

>>> memory = ScriptedGauge(2e8, canary_per_hour=5e7, at=600)  # +50 MB an hour from 10 min
>>> memory(600 + 3600, Arm.CANARY, 10.0), memory(600 + 3600, Arm.STABLE, 10.0)
(250000000.0, 200000000.0)

The data of a window depend only on the seed and the window's start and end, never on
what was collected before, so a resumed rollout sees the same data as an uninterrupted
one. The samplers are exact (inversion of cached CDF tables; Hörmann's transformed
rejection for counts too large for a table), so Monte-Carlo studies of a decider are not
biased by the fake. A steady scenario costs tens of microseconds per window; rates that
change in every window cost more, as each new rate builds its tables once.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import struct
from bisect import bisect_right
from collections.abc import Callable, Mapping
from itertools import accumulate, repeat, starmap
from operator import add, mul, truediv
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from .._errors import ConfigError
from .._histogram import MAX_INDEX, MIN_INDEX, LatencyHistogram, _make, bucket_index
from .._observe import (
    METRIC_NAMES,
    Arm,
    ArmStats,
    Observation,
    Window,
    _freeze_gauges,
    _trusted_arm_stats,
    _trusted_observation,
)
from .._split import _HEADER_NAME, TrafficSplit
from .._validate import finite

__all__ = [
    "DEFAULT_HEADER_SHARE",
    "SCENARIOS",
    "HeaderShare",
    "Rate",
    "Regression",
    "ScriptedGauge",
    "ScriptedMetrics",
    "StepChange",
    "canary_share",
    "regression",
    "step_change",
]

Rate: TypeAlias = float | Callable[[float, Arm, float], float]
"""A number, or a function of (t in seconds, arm, the canary's percent of requests 0..100)."""

HeaderShare: TypeAlias = float | Mapping[str, float]
"""The share of requests a header route matches: one number for every header, or per header."""

DEFAULT_HEADER_SHARE = 0.5
"""The share of requests a header route matches when nothing says otherwise: one half."""

_EMPTY_LATENCY = LatencyHistogram.empty()
_LN2_8 = math.log(2.0) / 8.0  # ln of a bucket's width ratio
_SQRT1_2 = math.sqrt(0.5)
_Random = random.Random
_pack_window = struct.Struct("<dd").pack
_log = math.log
_lgamma = math.lgamma
_sqrt = math.sqrt
_floor = math.floor
_exp = math.exp


# -- exact samplers ---------------------------------------------------------------------
#
# Everything is drawn by inversion of an exact CDF table (one uniform and one bisection),
# the tables cached by their parameters, so that a steady scenario costs a few hundred
# nanoseconds per draw. Counts too large for a table use Hörmann's transformed rejection
# with squeeze (PTRS for the Poisson, BTRS for the binomial; W. Hörmann, "The
# transformed rejection method for generating Poisson random variables", Insurance:
# Math. & Econ. 12, 1993, and "The generation of binomial random variates", J. Stat.
# Comput. Simul. 46, 1993). There is no normal approximation anywhere; the tables leave
# out tails of less than 1e-13. Which method draws a value depends only on the
# parameters, never on the cache, so the data do not depend on what ran before.
# `uniform` is a bound `random.Random.random`.

_TABLE_SD = 8.5  # tables span the mean +- 8.5 standard deviations (and a little more)
_MAX_TABLE_SD = 50.0  # above this standard deviation, draw by rejection (bounds memory)


def _table(first: float, ratios: Any) -> tuple[float, ...]:
    """Return the CDF table from the first probability and the successive pmf ratios."""
    return tuple(accumulate(accumulate(ratios, mul, initial=first)))


@functools.lru_cache(maxsize=4096)
def _poisson_table(mean: float) -> tuple[int, tuple[float, ...]]:
    """Return (lo, cdf) with ``cdf[j] = P(X <= lo + j)`` for X ~ Poisson(mean), mean > 0."""
    sd = _sqrt(mean)
    lo = max(0, _floor(mean - _TABLE_SD * sd))
    hi = math.ceil(mean + _TABLE_SD * sd + 10.0)
    first = _exp(-mean + lo * _log(mean) - _lgamma(lo + 1))
    return lo, _table(first, map(truediv, repeat(mean), range(lo + 1, hi + 1)))


@functools.lru_cache(maxsize=2048)
def _binomial_table(n: int, p: float) -> tuple[int, tuple[float, ...]]:
    """Return (lo, cdf) with ``cdf[j] = P(X <= lo + j)`` for X ~ Binomial(n, p), 0 < p < 1."""
    mean = n * p
    sd = _sqrt(mean * (1.0 - p))
    lo = max(0, _floor(mean - _TABLE_SD * sd))
    hi = min(n, math.ceil(mean + _TABLE_SD * sd + 10.0))
    log_first = (
        _lgamma(n + 1)
        - _lgamma(lo + 1)
        - _lgamma(n - lo + 1)
        + lo * _log(p)
        + (n - lo) * math.log1p(-p)
    )
    odds = p / (1.0 - p)
    steps = map(truediv, range(n - lo, n - hi, -1), range(lo + 1, hi + 1))
    return lo, _table(_exp(log_first), map(mul, steps, repeat(odds)))


def _poisson(uniform: Callable[[], float], mean: float) -> int:
    """Draw from Poisson(mean), mean >= 0."""
    if mean <= 0.0:
        return 0
    if mean < _MAX_TABLE_SD**2:
        lo, cdf = _poisson_table(mean)
        return lo + bisect_right(cdf, uniform())
    # PTRS, deciding the squeeze from the first uniform alone when it can.
    b = 0.931 + 2.53 * _sqrt(mean)
    a = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2.0)
    urvr = 0.86 * vr
    c = mean + 0.43
    while True:
        v = uniform()
        if v <= urvr:
            u = v / vr - 0.43
            return _floor((2.0 * a / (0.5 - abs(u)) + b) * u + c)
        if v >= vr:
            u = uniform() - 0.5
        else:
            u = v / vr - 0.93
            u = math.copysign(0.5, u) - u
            v = uniform() * vr
        us = 0.5 - abs(u)
        k = _floor((2.0 * a / us + b) * u + c)
        if k < 0 or (us < 0.013 and v > us):
            continue
        inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
        if _log(v * inv_alpha / (a / (us * us) + b)) <= -mean + k * _log(mean) - _lgamma(k + 1):
            return k


def _binomial(uniform: Callable[[], float], n: int, p: float) -> int:
    """Draw from Binomial(n, p), n >= 0, 0 <= p <= 1."""
    if n == 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n * p * (1.0 - p) < _MAX_TABLE_SD**2:
        lo, cdf = _binomial_table(n, p)
        return min(n, lo + bisect_right(cdf, uniform()))
    if p > 0.5:
        return n - _binomial(uniform, n, 1.0 - p)
    # BTRS (p <= 0.5 and n p >= 10), with the same one-uniform squeeze as PTRS above.
    spq = _sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    vr = 0.92 - 4.2 / b
    urvr = 0.86 * vr
    while True:
        v = uniform()
        if v <= urvr:
            u = v / vr - 0.43
            k = _floor((2.0 * a / (0.5 - abs(u)) + b) * u + c)
            if 0 <= k <= n:
                return k
            continue  # pragma: no cover (the squeeze lies inside [0, n] when n p >= 10)
        if v >= vr:
            u = uniform() - 0.5
        else:
            u = v / vr - 0.93
            u = math.copysign(0.5, u) - u
            v = uniform() * vr
        us = 0.5 - abs(u)
        k = _floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        alpha = (2.83 + 5.1 / b) * spq
        m = _floor((n + 1) * p)
        v *= alpha / (a / (us * us) + b)
        bound = (
            _lgamma(m + 1)
            + _lgamma(n - m + 1)
            - _lgamma(k + 1)
            - _lgamma(n - k + 1)
            + (k - m) * _log(p / (1.0 - p))
        )
        if _log(v) <= bound:
            return k


# -- log-normal latency in histogram buckets ----------------------------------------------


def _upper_tail(z: float) -> float:
    """Return P(Z > z) for a standard normal Z, accurate in both tails."""
    return 0.5 * math.erfc(z * _SQRT1_2)


def _mass(low: float, high: float) -> float:
    """Return P(low < Z <= high) for a standard normal Z, without cancellation in a tail."""
    if low >= 0.0:
        return _upper_tail(low) - _upper_tail(high)
    return _upper_tail(-high) - _upper_tail(-low)


@functools.lru_cache(maxsize=1024)
def _bucket_probabilities(
    median: float, sigma: float
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Return (first bucket index, P(bucket), E[latency | bucket]) of a log-normal.

    The latency's logarithm is normal with mean ``ln(median)`` and deviation `sigma`;
    buckets beyond 8.5 sigma (less than 1e-16 of the mass) are left out.
    """
    if sigma == 0.0:
        return bucket_index(median), (1.0,), (median,)
    mu = math.log(median)
    reach = 8.5 * sigma
    low = min(MAX_INDEX, max(MIN_INDEX, _floor((mu - reach) / _LN2_8)))
    high = max(low, min(MAX_INDEX, math.ceil((mu + reach) / _LN2_8) + 1))
    shifted = sigma * sigma  # E[X; bucket] is a mass of the normal shifted by sigma**2
    scale = math.exp(mu + shifted / 2.0)
    probs: list[float] = []
    means: list[float] = []
    for index in range(low, high + 1):
        lower = -math.inf if index == MIN_INDEX else (index - 1) * _LN2_8
        upper = math.inf if index == MAX_INDEX else index * _LN2_8
        prob = _mass((lower - mu) / sigma, (upper - mu) / sigma)
        partial = scale * _mass((lower - mu - shifted) / sigma, (upper - mu - shifted) / sigma)
        if prob > 1e-300 and partial > 0.0:
            mean = partial / prob
        else:  # the geometric middle of the bucket
            mean = math.exp((index - 0.5) * _LN2_8)
        probs.append(prob)
        means.append(mean)
    return low, tuple(probs), tuple(means)


_NEGLIGIBLE = 1e-13  # buckets expecting fewer requests than this are left out
_QUIET = 1.0  # buckets expecting fewer requests than this are drawn in the residual group
_GRID_BITS = 8  # a busy bucket's table is for its mean rounded down to 8 significant bits
_HUGE = _MAX_TABLE_SD**2  # buckets expecting more than this are drawn by PTRS
_NO_TABLE: tuple[int, tuple[float, ...]] = (0, (math.inf,))  # always draws 0
_Group = tuple[int, tuple[float, ...], tuple[int, ...], tuple[float, ...]]


def _grid(mean: float) -> float:
    """Round a positive mean down to `_GRID_BITS` significant bits (within 1%, never up)."""
    mantissa, exponent = math.frexp(mean)
    return math.ldexp(_floor(mantissa * (1 << _GRID_BITS)), exponent - _GRID_BITS)


@attrs.frozen
class _ArmPlan:
    """How to draw one arm's latency histogram (and so its requests) for one window.

    Positions count buckets from `low`. The core, positions ``core`` to ``core + len(los)
    - 1``, holds the busy buckets, one CDF table each; `groups` holds at most one group
    for the residual: (lo, cdf) of its Poisson total, its positions, and the cumulative
    shares with which each of its requests picks a position.
    """

    low: int
    core: int
    los: tuple[int, ...]
    cdfs: tuple[tuple[float, ...], ...]
    huge: tuple[tuple[int, float], ...]  # (core offset, mean): beyond tables, drawn by PTRS
    groups: tuple[_Group, ...]
    means: tuple[float, ...]  # E[latency | bucket] by position
    span: int


@functools.lru_cache(maxsize=256)
def _arm_plan(requests: float, median: float, sigma: float) -> _ArmPlan:
    """Plan the draw of Poisson(`requests`) log-normal latencies as per-bucket Poissons.

    Thinning a Poisson count by bucket gives independent Poisson counts per bucket, and
    the arm's requests are their sum. A Poisson count is also the sum of two independent
    Poisson counts whose means add up, which keeps the tables few: a busy bucket with
    mean m draws Poisson(g) from the shared table of g = m rounded down to 8 significant
    bits, by one inversion, and the remainders m - g of all busy buckets join the whole
    means of the quiet buckets (the tails) in one residual group: a Poisson total,
    mostly 0 or a few, whose requests then pick a bucket each in proportion. So a rate
    that changes in every window reuses tables, and a steady one costs one uniform per
    busy bucket and one for the rest.
    """
    first_index, probs, all_means = _bucket_probabilities(median, sigma)
    kept = [k for k, prob in enumerate(probs) if requests * prob >= _NEGLIGIBLE]
    if not kept:  # so few requests expected that none is ever drawn
        return _ArmPlan(low=0, core=0, los=(), cdfs=(), huge=(), groups=(), means=(), span=0)
    start, stop = kept[0], kept[-1] + 1
    expected = [requests * prob for prob in probs[start:stop]]
    busy = [k for k, mean in enumerate(expected) if mean >= _QUIET]
    core_start, core_stop = (busy[0], busy[-1] + 1) if busy else (len(expected), len(expected))
    tables: list[tuple[int, tuple[float, ...]]] = []
    huge: list[tuple[int, float]] = []
    residual: list[tuple[int, float]] = []
    for position, mean in enumerate(expected):
        rest = mean
        if core_start <= position < core_stop:
            if mean >= _HUGE:
                huge.append((position - core_start, mean))
                tables.append(_NO_TABLE)
                continue
            grid = _grid(mean) if mean > 0.0 else 0.0
            tables.append(_poisson_table(grid) if grid > 0.0 else _NO_TABLE)
            rest = mean - grid  # exact: grid is within a factor 2 of mean
        if rest > 0.0:
            residual.append((position, rest))
    groups: tuple[_Group, ...] = ()
    if residual:
        total = math.fsum(rest for _, rest in residual)
        shares = list(accumulate(rest / total for _, rest in residual))
        shares[-1] = 1.0  # a uniform in [0, 1) always finds a position
        lo, cdf = _poisson_table(total)
        groups = ((lo, cdf, tuple(position for position, _ in residual), tuple(shares)),)
    return _ArmPlan(
        low=first_index + start,
        core=core_start,
        los=tuple(lo for lo, _ in tables),
        cdfs=tuple(cdf for _, cdf in tables),
        huge=tuple(huge),
        groups=groups,
        means=all_means[start:stop],
        span=stop - start,
    )


# (mean requests, median, sigma) -> plan, skipping the rounding and the LRU bookkeeping
# for the steady case; the same plan either way, so the data do not depend on it.
_PLANS: dict[tuple[float, float, float], _ArmPlan] = {}


def _plan_key(requests: float) -> float:
    """Round a Poisson mean to 40 significant bits, to share plans between windows.

    Windows whose lengths differ by rounding then share a plan; a relative change of
    1e-12 in a Poisson mean is far below anything a test can see.
    """
    mantissa, exponent = math.frexp(requests)
    return math.ldexp(round(mantissa * 1099511627776.0), exponent - 40)


def _draw_latency(uniform: Callable[[], float], plan: _ArmPlan) -> tuple[int, LatencyHistogram]:
    """Draw one window's latency histogram from `plan`; return (its count, it)."""
    los = plan.los
    # The core: one uniform per busy bucket, inverted by bisection, all in C.
    counts = list(
        map(add, los, map(bisect_right, plan.cdfs, starmap(uniform, repeat((), len(los)))))
    )
    for k, mean in plan.huge:
        counts[k] = _poisson(uniform, mean)
    base = plan.core  # the position of counts[0]
    for lo, cdf, where, shares in plan.groups:
        u = uniform()
        if u < cdf[0] and not lo:
            continue
        size = lo + bisect_right(cdf, u)
        picks = starmap(uniform, repeat((), size))
        extra = list(map(where.__getitem__, map(bisect_right, repeat(shares, size), picks)))
        low, high = min(extra), max(extra) + 1
        if low < base or high > base + len(counts):
            top = max(high, base + len(counts))
            start = min(low, base)
            counts = [0] * (base - start) + counts + [0] * (top - base - len(counts))
            base = start
        for position in extra:
            counts[position - base] += 1
    # Trim to the non-empty range.
    first, stop = 0, len(counts)
    while stop and not counts[stop - 1]:
        stop -= 1
    if not stop:
        return 0, _EMPTY_LATENCY
    while not counts[first]:
        first += 1
    if first or stop < len(counts):
        counts = counts[first:stop]
    base += first
    total = sum(map(mul, counts, plan.means[base : base + len(counts)]))
    return sum(counts), _make(plan.low + base, tuple(counts), total)


# -- rates -------------------------------------------------------------------------------


def _check_rate(field: str, value: Any, low: float, high: float, *, open_low: bool) -> None:
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field, value, "must be a finite number or a function (t, arm, percent)")
    below = value <= low if open_low else value < low
    if below or value > high:
        raise ConfigError(field, value, _range_text(low, high, open_low=open_low))


def _range_text(low: float, high: float, *, open_low: bool) -> str:
    bracket = "(" if open_low else "["
    top = "inf)" if high == math.inf else f"{high:g}]"
    return f"must be in {bracket}{low:g}, {top}"


def _bad_result(field: str, value: Any, t: float, arm: Arm, percent: float, problem: str) -> None:
    raise ConfigError(
        field, value, f"{problem} (returned at t={t!r}, arm={arm!r}, canary_percent={percent!r})"
    )


def _freeze_rates(value: Any) -> Mapping[str, Rate]:
    if not isinstance(value, Mapping):
        raise ConfigError("gauges", value, "must be a mapping of name to number or function")
    for name, rate in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("gauges", name, "gauge names must be non-empty strings")
        if name in METRIC_NAMES:
            raise ConfigError(
                f"gauges[{name!r}]", rate, "is a built-in metric name; give the gauge another"
            )
        if not callable(rate) and (isinstance(rate, bool) or not isinstance(rate, (int, float))):
            raise ConfigError(
                f"gauges[{name!r}]", rate, "must be a number or a function (t, arm, percent)"
            )
    return MappingProxyType(dict(value))


def _mapping_repr(value: Mapping[str, Rate]) -> str:
    return repr(dict(value))


# -- header routes and mirroring ----------------------------------------------------------


def _check_share(field: str, value: Any) -> float:
    share = finite(field, value)
    if not 0.0 <= share <= 1.0:
        raise ConfigError(field, value, "must be a share of requests in [0, 1] (0.6 is 60%)")
    return share


def _freeze_header_share(value: Any) -> HeaderShare:
    """`value` as a float in [0, 1] or a read-only mapping of header name to one, or raise."""
    if not isinstance(value, Mapping):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                "header_share", value, "must be a share in [0, 1] or a mapping of header to share"
            )
        return _check_share("header_share", value)
    shares: dict[str, float] = {}
    seen: dict[str, str] = {}
    for name, share in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError("header_share", name, "keys must be HTTP header names")
        lowered = name.lower()
        if lowered in seen:
            # HTTP header names are case-insensitive: two spellings would be two answers.
            raise ConfigError(f"header_share[{name!r}]", share, f"repeats {seen[lowered]!r}")
        seen[lowered] = name
        shares[name] = _check_share(f"header_share[{name!r}]", share)
    return MappingProxyType(shares)


def _share_repr(value: HeaderShare) -> str:
    return repr(value) if isinstance(value, float) else repr(dict(value))


def _share_of(header_share: HeaderShare, header: str) -> float:
    if isinstance(header_share, float):
        return header_share
    lowered = header.lower()
    for name, share in header_share.items():
        if name.lower() == lowered:
            return share
    return DEFAULT_HEADER_SHARE


def canary_share(split: TrafficSplit, header_share: HeaderShare = DEFAULT_HEADER_SHARE) -> float:
    """The share of requests (0 to 1) the canary serves under `split`; stable serves the rest.

    Without header routes this is ``canary_percent / 100``. A header route sends its
    `percent` of the requests it matches to the canary, and the requests no route matches
    follow ``canary_percent``, as the routers do. `header_share` says what share of
    requests a route on each header matches: one number for every header, or a mapping
    of header name (any case) to share, `DEFAULT_HEADER_SHARE` (one half) for a header it
    does not list. Headers are taken as independent, and routes are tried in order as a
    router does, so a request two routes match follows the first; a second route on a
    header already routed matches no further requests. Mirrored copies (``mirror_percent``)
    are served by stable and their copies answered by nobody: they are never counted.

    The seed's stage, 10% of Chrome users, when 60% of requests come from Chrome:

    >>> from canarykit import HeaderRoute, TrafficSplit
    >>> chrome = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex", percent=10)
    >>> round(canary_share(TrafficSplit(header_routes=[chrome]), {"user-agent": 0.6}), 6)
    0.06
    >>> canary_share(TrafficSplit(canary_percent=20, mirror_percent=50))
    0.2
    """
    weighted = split.canary_percent / 100.0
    routes = split.header_routes
    if not routes:
        return weighted
    unmatched = 1.0  # requests no earlier route matched
    canary = 0.0
    routed: set[str] = set()
    for route in routes:
        header = route.header.lower()
        if header in routed:
            continue
        routed.add(header)
        matched = unmatched * _share_of(header_share, header)
        canary += matched * route.percent / 100.0
        unmatched -= matched
    return min(1.0, max(0.0, canary + unmatched * weighted))


# -- gauges ------------------------------------------------------------------------------

_NORMAL = statistics.NormalDist()
_TINY = 2.0**-60  # keeps a uniform of exactly 0 off the normal's infinite tail


def _gauge_number(field: str, value: Any, low: float | None, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    number = finite(field, value)
    if (low is not None and number < low) or (high is not None and number > high):
        top = "inf)" if high is None else f"{high:g}]"
        raise ConfigError(field, value, f"must be in [{low:g}, {top}")
    return number


_GAUGE_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "value": (None, None),
    "canary_factor": (0.0, None),
    "canary_per_hour": (None, None),
    "at": (0.0, None),
    "noise": (0.0, 1.0),
}


@attrs.frozen
class ScriptedGauge:
    """A gauge both arms report, such as CPU or memory: a level, a change on the canary, noise.

    - `value`: both arms' level (for instance CPU cores in use, or resident bytes).
    - `canary_factor`: from `at` on, the canary's level is `value` times this (a fixed
      increase: ``1.2`` is 20% more CPU).
    - `canary_per_hour`: from `at` on, the canary's level also grows by this much per hour
      (a leak: ``5e7`` is 50 MB more every hour).
    - `at`: seconds from the start at which the canary's change begins (default 0).
    - `noise`: the relative spread of each window's reading (log-normal around the level,
      its mean the level); 0, the default, reports the level exactly.

    Called as a `Rate`, it returns the level without noise; `ScriptedMetrics` and
    `canarykit.testing.evaluate` add the noise from their seeded draws.

    >>> from canarykit import Arm
    >>> cpu = ScriptedGauge(0.25, canary_factor=1.2)
    >>> cpu(60.0, Arm.CANARY, 10.0), cpu(60.0, Arm.STABLE, 10.0)
    (0.3, 0.25)
    """

    value: float
    canary_factor: float = attrs.field(default=1.0, kw_only=True)
    canary_per_hour: float = attrs.field(default=0.0, kw_only=True)
    at: float = attrs.field(default=0.0, kw_only=True)
    noise: float = attrs.field(default=0.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        for field, (low, high) in _GAUGE_BOUNDS.items():
            number = _gauge_number(field, getattr(self, field), low, high)
            object.__setattr__(self, field, number)

    def __call__(self, t: float, arm: Arm, canary_percent: float) -> float:
        """Return the level at time `t` for `arm`, without noise (the percent does not matter)."""
        if arm is not Arm.CANARY or t < self.at:
            return self.value
        return self.value * self.canary_factor + self.canary_per_hour * (t - self.at) / 3600.0


def gauge_readings(
    gauges: Mapping[str, Rate],
    uniform: Callable[[], float],
    t: float,
    arm: Arm,
    percent: float,
) -> Mapping[str, float]:
    """One window's readings of `gauges` for `arm` at midpoint `t`, noise drawn by `uniform`.

    Draws one uniform per noisy `ScriptedGauge`, in the gauges' order, and none otherwise.
    """
    readings: dict[str, Any] = {}
    for name, rate in gauges.items():
        if not callable(rate):
            readings[name] = rate
            continue
        level = rate(t, arm, percent)  # checked by _freeze_gauges, naming the gauge
        if isinstance(rate, ScriptedGauge) and rate.noise:
            z = _NORMAL.inv_cdf(min(max(uniform(), _TINY), 1.0 - _TINY))
            level *= _exp(rate.noise * z - rate.noise * rate.noise / 2.0)
        readings[name] = level
    return _freeze_gauges(readings)


@attrs.frozen(kw_only=True)
class ScriptedMetrics:
    """A fake metrics source: seeded, noisy data from rates that may change over time.

    Each rate is a number or a function ``f(t, arm, canary_percent)`` of the window's
    midpoint ``t`` (seconds), the `Arm` and the canary's percent of the requests (0..100:
    the split's canary percent, or during a header-route stage the share `canary_share`
    gives), such as `step_change` or `regression`. For each window and arm:

    * requests ~ Poisson(requests_per_second * duration * share), where the canary's
      share is `canary_share` of the window's split (``canary_percent / 100`` without
      header routes; the routed share of the requests a route matches, `header_share`
      of them, with them; mirrored copies never count) and the stable arm's the rest;
    * errors ~ Binomial(requests, error_rate);
    * latency: each request's latency is log-normal with median `latency_median`
      seconds and log-scale spread `latency_sigma` (0 to 10); the histogram counts every request
      (its total is exactly `requests`) and its `sum` is the expected total given the
      bucket counts;
    * gauges: ``{name: rate}``, each reported as the rate's value, without noise unless
      it is a `ScriptedGauge` with `noise` (CPU, memory, a leak on the canary).

    The result depends only on `seed` and the window's start and end. Use it as the
    `MetricsSource` of a rollout (`collect`) or call `observe` directly.

    >>> ScriptedMetrics(error_rate=0.02, seed=1)
    ScriptedMetrics(requests_per_second=100.0, error_rate=0.02, latency_median=0.05, \
latency_sigma=0.25, gauges={}, header_share=0.5, seed=1)
    """

    requests_per_second: Rate = 100.0
    error_rate: Rate = 0.01
    latency_median: Rate = 0.05
    latency_sigma: Rate = 0.25
    gauges: Mapping[str, Rate] = attrs.field(
        factory=dict, converter=_freeze_rates, hash=False, repr=_mapping_repr
    )
    header_share: HeaderShare = attrs.field(
        default=DEFAULT_HEADER_SHARE, converter=_freeze_header_share, hash=False, repr=_share_repr
    )
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        inf = math.inf
        _check_rate("requests_per_second", self.requests_per_second, 0.0, inf, open_low=False)
        _check_rate("error_rate", self.error_rate, 0.0, 1.0, open_low=False)
        _check_rate("latency_median", self.latency_median, 0.0, inf, open_low=True)
        _check_rate("latency_sigma", self.latency_sigma, 0.0, 10.0, open_low=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError("seed", self.seed, "must be an int")

    async def collect(self, window: Window) -> Observation:
        """Return the observation for `window` (the `MetricsSource` protocol)."""
        return self.observe(window)

    def observe(self, window: Window) -> Observation:
        """Return the observation for `window`; the same window always gives the same one."""
        if not isinstance(window, Window):
            raise ConfigError("window", window, "must be a Window")
        start, end = window.start, window.end
        seed = self.seed
        # An exact, platform-independent key: zigzag(seed) above the bits of start and end.
        key = (seed * 2 if seed >= 0 else -2 * seed - 1) << 128
        uniform = _Random(key | int.from_bytes(_pack_window(start, end), "little")).random
        t = (start + end) * 0.5
        duration = end - start
        split = window.split
        if split.header_routes:
            share = canary_share(split, self.header_share)
            percent = share * 100.0
        else:
            percent = split.canary_percent
            share = percent / 100.0
        stable = self._arm(uniform, t, Arm.STABLE, percent, duration * (1.0 - share))
        canary = self._arm(uniform, t, Arm.CANARY, percent, duration * share)
        # The window checked start < end.
        return _trusted_observation(start, end, stable, canary, split)

    def _arm(
        self, uniform: Callable[[], float], t: float, arm: Arm, percent: float, exposure: float
    ) -> ArmStats:
        rate = self.requests_per_second
        if callable(rate):
            rate = rate(t, arm, percent)
            if not 0.0 <= rate < math.inf:
                _bad_result("requests_per_second", rate, t, arm, percent, "must be in [0, inf)")
        mean_requests = rate * exposure
        if mean_requests > 0.0:
            median = self.latency_median
            if callable(median):
                median = median(t, arm, percent)
                if not 0.0 < median < math.inf:
                    _bad_result("latency_median", median, t, arm, percent, "must be in (0, inf)")
            sigma = self.latency_sigma
            if callable(sigma):
                sigma = sigma(t, arm, percent)
                if not 0.0 <= sigma <= 10.0:
                    _bad_result("latency_sigma", sigma, t, arm, percent, "must be in [0, 10]")
            key = (mean_requests, median, sigma)
            plan = _PLANS.get(key)
            if plan is None:
                if len(_PLANS) >= 512:
                    _PLANS.clear()
                plan = _PLANS[key] = _arm_plan(
                    _plan_key(mean_requests), float(median), float(sigma)
                )
            requests, latency = _draw_latency(uniform, plan)
        else:
            latency = _EMPTY_LATENCY
            requests = 0
        error_rate = self.error_rate
        if callable(error_rate):
            error_rate = error_rate(t, arm, percent)
            if not 0.0 <= error_rate <= 1.0:
                _bad_result("error_rate", error_rate, t, arm, percent, "must be in [0, 1]")
        errors = _binomial(uniform, requests, error_rate) if requests else 0
        if self.gauges:
            gauges = gauge_readings(self.gauges, uniform, t, arm, percent)
            return _trusted_arm_stats(requests, errors, latency, gauges)
        return _trusted_arm_stats(requests, errors, latency)


# -- scenario helpers ------------------------------------------------------------------


def _check_change(change: Any, fields: tuple[str, ...]) -> None:
    """Validate a scripted change's numbers (made floats) and its arm."""
    for field in fields:
        object.__setattr__(change, field, finite(field, getattr(change, field)))
    if not isinstance(change.arm, Arm):
        raise ConfigError("arm", change.arm, "must be an Arm")


@attrs.frozen(kw_only=True)
class StepChange:
    """A rate that is `before` everywhere except on `arm` from time `at` on, where it is `after`.

    >>> from canarykit import Arm
    >>> rate = step_change(at=300.0, before=0.01, after=0.05)
    >>> rate(299.0, Arm.CANARY, 10.0), rate(300.0, Arm.CANARY, 10.0), rate(400.0, Arm.STABLE, 10.0)
    (0.01, 0.05, 0.01)
    """

    at: float
    before: float
    after: float
    arm: Arm = Arm.CANARY

    def __attrs_post_init__(self) -> None:
        _check_change(self, ("at", "before", "after"))

    def __call__(self, t: float, arm: Arm, canary_percent: float) -> float:
        """Return the rate at time `t` for `arm` (the percent does not matter)."""
        return self.after if arm is self.arm and t >= self.at else self.before


@attrs.frozen(kw_only=True)
class Regression:
    """A rate `base` that `arm` multiplies by `factor` from time `at` on.

    >>> regression(at=300.0, base=0.01, factor=5.0)
    Regression(at=300.0, base=0.01, factor=5.0, arm=Arm.CANARY)
    """

    at: float
    base: float
    factor: float
    arm: Arm = Arm.CANARY

    def __attrs_post_init__(self) -> None:
        _check_change(self, ("at", "base", "factor"))

    def __call__(self, t: float, arm: Arm, canary_percent: float) -> float:
        """Return the rate at time `t` for `arm` (the percent does not matter)."""
        return self.base * self.factor if arm is self.arm and t >= self.at else self.base


def step_change(at: float, before: float, after: float, arm: Arm = Arm.CANARY) -> StepChange:
    """Return a rate that `arm` changes from `before` to `after` at time `at` (t >= at).

    Every other arm, and `arm` before `at`, keeps `before`.
    """
    return StepChange(at=at, before=before, after=after, arm=arm)


def regression(at: float, base: float, factor: float, arm: Arm = Arm.CANARY) -> Regression:
    """Return a rate `base` that `arm` multiplies by `factor` from time `at` on.

    The same as ``step_change(at, base, base * factor, arm)``, with a repr that says so.
    """
    return Regression(at=at, base=base, factor=factor, arm=arm)


def _healthy(*, seed: int = 0) -> ScriptedMetrics:
    """Return a source where both arms are alike: 100 requests/s, 1% errors, median 50 ms."""
    return ScriptedMetrics(error_rate=0.01, latency_median=0.05, seed=seed)


def _errors(*, seed: int = 0) -> ScriptedMetrics:
    """Return a source where the canary's error rate rises fivefold (1% to 5%) at t = 300 s."""
    return ScriptedMetrics(error_rate=regression(at=300.0, base=0.01, factor=5.0), seed=seed)


def _latency_regression(*, seed: int = 0) -> ScriptedMetrics:
    """Return a source where the canary's median latency rises by half (50 to 75 ms) at 300 s."""
    return ScriptedMetrics(latency_median=regression(at=300.0, base=0.05, factor=1.5), seed=seed)


SCENARIOS: dict[str, Callable[..., ScriptedMetrics]] = {
    "healthy": _healthy,
    "errors": _errors,
    "latency": _latency_regression,
}
"""Named example sources for the command line: name -> factory(*, seed=0) -> ScriptedMetrics."""
