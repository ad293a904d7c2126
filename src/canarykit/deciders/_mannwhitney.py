"""The Mann-Whitney U test and the Hodges-Lehmann shift, on raw samples and on histograms.

How this works.

*The test.* ``U`` for the canary counts the (canary, stable) pairs in which the canary
value is larger, a tie counting one half. Its mean under "no difference" is
``n_c n_s / 2`` and its variance, with the tie correction, is
``n_c n_s / 12 * ((n + 1) - sum_t (t^3 - t) / (n (n - 1)))`` (``t`` the sizes of the
groups of tied values, ``n = n_c + n_s``). The p-value is the normal approximation with
a continuity correction of one half, exactly as
``scipy.stats.mannwhitneyu(canary, stable, method="asymptotic", use_continuity=True)``:
"greater" asks whether the canary is larger, "less" smaller, "two-sided" either. On
`LatencyHistogram` s both arms share the same buckets, so every bucket is a group of tied
values and ``U = sum_b c_b (S_<b + S_b / 2)`` (``c`` canary counts, ``S`` stable counts):
the test on a histogram is *exactly* the test on samples placed at their bucket indexes,
computed in time linear in the number of buckets.

*The shift on raw samples.* The Hodges-Lehmann estimate is the median of the pairwise
differences ``canary_i - stable_j``; computed exactly, by selection over the two sorted
samples (no list of all ``n_c n_s`` differences). Its confidence interval inverts the
test: the shifts ``d`` for which "canary - d versus stable" is not rejected. ``U(d)`` is
a step function that drops at the pairwise differences, so the bounds are two order
statistics of the differences, found by the same selection. The variance used is the one
at a shift that is not itself a pairwise difference (only ties *within* an arm remain),
which is what R's ``wilcox.test(conf.int=TRUE)`` (ported by Kayenta) evaluates next to its
roots; the interval is therefore R's up to R's root-finding tolerance.

*The shift on histograms.* With log-spaced buckets (``2 ** (1/8)`` apart) a
multiplicative change of latency is a shift of bucket index. Inside a bucket the
values are taken as spread evenly on the log scale (the same log-linear interpolation
`LatencyHistogram.quantile` uses), which makes ``U(k)``, the statistic after moving the
canary down by ``k`` buckets, a continuous, decreasing, piecewise-quadratic function of
``k``; at whole ``k`` it equals the tied-index statistic above. The estimate is the ``k``
where ``U(k)`` crosses its mean and the bounds are where the continuity-corrected
statistic crosses the normal critical value (with the untied variance, the variance of
values spread inside buckets). Shifts are reported in buckets and as latency ratios
``2 ** (k / 8)``. This is approximate in one way only: the spread of values inside a
bucket is assumed, not observed (the error is at most a bucket, about 9%, and far less
when many buckets are occupied); given that assumption the roots are exact to 1e-9
buckets.

>>> result = mann_whitney([3.1, 4.2, 5.0, 6.3], [1.0, 2.2, 2.9, 3.1])
>>> result.u, round(result.p_value, 4)
(15.5, 0.0421)
>>> hodges_lehmann([3.0, 4.0, 5.0], [1.0, 2.0], confidence=0.9).estimate
2.5
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, repeat
from operator import add, mul, sub
from statistics import NormalDist
from typing import Literal

import attrs

from .._errors import ConfigError
from .._histogram import LatencyHistogram
from .._validate import bounded_items, finite

__all__ = [
    "Alternative",
    "MannWhitneyResult",
    "ShiftEstimate",
    "bucket_ratio",
    "hodges_lehmann",
    "hodges_lehmann_histograms",
    "mann_whitney",
    "mann_whitney_histograms",
]

Alternative = Literal["two-sided", "greater", "less"]
"""Which difference the test looks for: the canary larger ("greater"), smaller, or either."""

_ALTERNATIVES = ("two-sided", "greater", "less")
_BUCKETS_PER_DOUBLING = 8
_SQRT2 = math.sqrt(2.0)
# Above this many pairwise differences the selection algorithm beats sorting them all.
_BRUTE_FORCE_PAIRS = 2048
# Selection lists and sorts what is left once at most this many differences are.
_LIST_AT_MOST = 512


@attrs.frozen(kw_only=True)
class MannWhitneyResult:
    """The outcome of a Mann-Whitney U test of the canary against the stable arm.

    `u` is the canary's statistic (pairs where the canary is larger, ties half), `mean`
    and `variance` its null moments (tie-corrected), `z` the continuity-corrected
    standard score used for the p-value, as in scipy.
    """

    u: float
    n_canary: int
    n_stable: int
    mean: float
    variance: float
    z: float
    p_value: float
    alternative: str

    @property
    def cles(self) -> float:
        """The common-language effect size: the share of pairs in which the canary is larger.

        ``U / (n_canary n_stable)``, ties counting one half (Vargha and Delaney's A, as
        Kayenta's ``EffectSizes.cles``): 0.5 means no difference, 1.0 that every canary
        value is larger than every stable one.

        >>> mann_whitney([5, 6, 7], [1, 2, 6]).cles
        0.8333333333333334
        """
        return self.u / (self.n_canary * self.n_stable)


@attrs.frozen(kw_only=True)
class ShiftEstimate:
    """A Hodges-Lehmann shift of the canary against the stable arm, with its interval.

    For raw samples the unit is the samples'; for histograms it is buckets (a factor of
    ``2 ** (1/8)`` each, see `bucket_ratio`). Positive means the canary is larger.

    `lower_open` / `upper_open` say that the test rejects the shift at that end itself,
    so the interval holds only shifts strictly inside it. That happens on samples with
    many tied values, where the end is a jump of the test statistic: 210 mostly-zero
    points per arm with more nonzero canary points give ``[0, 0]`` with both ends open
    (no shift of 0 is plausible, only shifts just above it).
    """

    estimate: float
    lower: float
    upper: float
    confidence: float
    lower_open: bool = False
    upper_open: bool = False

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero.

        >>> ShiftEstimate(estimate=0.0, lower=0.0, upper=0.0, confidence=0.95).excludes_zero()
        False
        >>> ShiftEstimate(
        ...     estimate=0.0, lower=0.0, upper=0.0, confidence=0.95, lower_open=True
        ... ).excludes_zero()
        True
        """
        return (
            self.lower > 0
            or self.upper < 0
            or (self.lower == 0 and self.lower_open)
            or (self.upper == 0 and self.upper_open)
        )


def bucket_ratio(shift: float) -> float:
    """The latency ratio a shift of `shift` histogram buckets means: ``2 ** (shift / 8)``.

    >>> bucket_ratio(8.0), round(bucket_ratio(1.0), 4)
    (2.0, 1.0905)
    """
    return float(2.0 ** (shift / _BUCKETS_PER_DOUBLING))


# -- checks ------------------------------------------------------------------------------


# Raw samples beyond this belong in a histogram (`mann_whitney_histograms`).
_MAX_SAMPLES = 10_000_000


def _samples(name: str, values: Iterable[float]) -> list[float]:
    items = bounded_items(name, values, _MAX_SAMPLES, "numbers")
    out = [finite(f"{name}[{index}]", value) for index, value in enumerate(items)]
    if not out:
        raise ConfigError(name, values, "must hold at least one value")
    return out


def _histogram(name: str, value: object) -> LatencyHistogram:
    if not isinstance(value, LatencyHistogram):
        raise ConfigError(name, value, "must be a LatencyHistogram")
    if not value.counts:
        raise ConfigError(name, value, "must hold at least one observation")
    return value


def _alternative(value: object) -> str:
    if value not in _ALTERNATIVES:
        raise ConfigError("alternative", value, "must be 'two-sided', 'greater' or 'less'")
    return str(value)


def _confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("confidence", value, "must be a number in (0, 1)")
    if not 0.0 < value < 1.0:
        raise ConfigError("confidence", value, "must be a number in (0, 1)")
    return float(value)


# -- the test ----------------------------------------------------------------------------


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / _SQRT2)


def _result(u: float, n_c: int, n_s: int, tie_term: float, alternative: str) -> MannWhitneyResult:
    n = n_c + n_s
    mean = n_c * n_s / 2.0
    variance = n_c * n_s / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if alternative == "greater":
        statistic, factor = u, 1.0
    elif alternative == "less":
        statistic, factor = n_c * n_s - u, 1.0
    else:
        statistic, factor = max(u, n_c * n_s - u), 2.0
    numerator = statistic - mean - 0.5
    if variance > 0:
        z = numerator / math.sqrt(variance)
    else:  # every value tied: scipy's z is -inf here and the p-value 1
        z = -math.inf if numerator < 0 else math.inf
    p_value = min(1.0, max(0.0, factor * _normal_sf(z)))
    return MannWhitneyResult(
        u=u,
        n_canary=n_c,
        n_stable=n_s,
        mean=mean,
        variance=variance,
        z=z,
        p_value=p_value,
        alternative=alternative,
    )


def _u_sorted(canary: Sequence[float], stable_sorted: list[float]) -> float:
    below = sum(map(bisect_left, repeat(stable_sorted), canary))
    below_or_tied = sum(map(bisect_right, repeat(stable_sorted), canary))
    return (below + below_or_tied) / 2.0


def _tie_term(counts: Iterable[int]) -> int:
    return sum(t * t * t - t for t in counts if t > 1)


def mann_whitney(
    canary: Iterable[float], stable: Iterable[float], *, alternative: Alternative = "two-sided"
) -> MannWhitneyResult:
    """Mann-Whitney U test of raw `canary` samples against `stable` ones.

    Agrees with ``scipy.stats.mannwhitneyu(canary, stable, method="asymptotic")``.

    >>> mann_whitney([5, 6, 7], [1, 2, 3], alternative="greater").u
    9.0
    """
    alt = _alternative(alternative)
    xs, ys = _samples("canary", canary), _samples("stable", stable)
    ys.sort()
    tie_term = _tie_term(Counter(xs + ys).values())
    return _result(_u_sorted(xs, ys), len(xs), len(ys), tie_term, alt)


def mann_whitney_histograms(
    canary: LatencyHistogram, stable: LatencyHistogram, *, alternative: Alternative = "two-sided"
) -> MannWhitneyResult:
    """Mann-Whitney U test of two latency histograms, each bucket a group of tied values.

    Exactly the test on samples placed at their bucket indexes, in time linear in the
    number of buckets.

    >>> from canarykit import LatencyHistogram
    >>> slow = LatencyHistogram.from_samples([0.2, 0.25, 0.3])
    >>> fast = LatencyHistogram.from_samples([0.1, 0.12, 0.2])
    >>> mann_whitney_histograms(slow, fast, alternative="greater").u
    8.5
    """
    alt = _alternative(alternative)
    c, s = _histogram("canary", canary), _histogram("stable", stable)
    low = min(c.offset, s.offset)
    high = max(c.offset + len(c.counts), s.offset + len(s.counts))
    dense_c = [0] * (high - low)
    dense_s = [0] * (high - low)
    dense_c[c.offset - low : c.offset - low + len(c.counts)] = c.counts
    dense_s[s.offset - low : s.offset - low + len(s.counts)] = s.counts
    twice_u = 0  # 2U as an int, exact
    stable_below = 0
    for count_c, count_s in zip(dense_c, dense_s, strict=True):
        if count_c:
            twice_u += count_c * (2 * stable_below + count_s)
        stable_below += count_s
    tie_term = _tie_term(map(add, dense_c, dense_s))
    return _result(twice_u / 2.0, sum(c.counts), stable_below, tie_term, alt)


# -- Hodges-Lehmann on raw samples -------------------------------------------------------


def _critical_value(confidence: float) -> float:
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def _pairwise_order_statistics(x: list[float], y: list[float], ranks: Sequence[int]) -> list[float]:
    """The `ranks`-th smallest (from 0) of the differences ``x_i - y_j``; `x`, `y` sorted.

    When the samples have few distinct values (rates, counts: the usual case for
    per-window points) every distinct difference is listed once with its multiplicity
    and sorted. Otherwise each rank is selected with `_select`.
    """
    distinct_x, distinct_y = Counter(x), Counter(y)
    if len(distinct_x) * len(distinct_y) <= _BRUTE_FORCE_PAIRS:
        pairs = sorted(
            (a - b, count_a * count_b)
            for a, count_a in distinct_x.items()
            for b, count_b in distinct_y.items()
        )
        ends = list(accumulate(weight for _, weight in pairs))
        return [pairs[bisect_right(ends, rank)][0] for rank in ranks]
    return _select(x, y, ranks)


def _select(x: list[float], y: list[float], ranks: Sequence[int]) -> list[float]:
    """The `ranks`-th smallest (from 0) of ``x_i - y_j``, without listing them all.

    Row i of the implicit matrix holds ``x_i - y_j``, ascending in ``n - 1 - j``. For a
    pivot value one C-level bisection per row counts, row by row, the differences below
    it. Each rank keeps two counted pivots around it (a bracket) and narrows it by
    interpolating the rank between them (regula falsi on the count); when that stalls,
    as with many tied differences, it pivots on a difference in play, which either is
    the answer or halves the bracket on average. Once a few hundred differences are
    left they are listed and sorted. Counted pivots are shared between the ranks, which
    lie close together (the median and the interval ends). About a dozen counts per
    rank, each O(n log n) in C. The random pivots are seeded: answers and timings
    are reproducible.
    """
    n_x, n_y = len(x), len(y)
    total = n_x * n_y
    rng = random.Random(total)
    # Counted pivots: (value, differences counted below or at it, per-row counts).
    counted: list[tuple[float, int, list[int]]] = [
        (x[0] - y[-1], 0, [0] * n_x),
        (math.nextafter(x[-1] - y[0], math.inf), total, [n_y] * n_x),
    ]

    def count(pivot: float, strict: bool) -> tuple[float, int, list[int]]:
        # In row i, x_i - y_j < pivot  <=>  y_j > x_i - pivot (<= when not strict).
        find = bisect_right if strict else bisect_left
        rows = [n_y - k for k in map(find, repeat(y), [a - pivot for a in x])]
        return pivot, sum(rows), rows

    answers: dict[int, float] = {}
    for rank in sorted(set(ranks)):
        low = max((c for c in counted if c[1] <= rank), key=lambda c: (c[1], c[0]))
        high = min((c for c in counted if c[1] > rank), key=lambda c: (c[1], c[0]))
        stalls = 0
        while True:
            in_play = high[1] - low[1]
            if in_play <= _LIST_AT_MOST:
                left = [
                    x[i] - y[n_y - 1 - m]
                    for i in range(n_x)
                    for m in range(low[2][i], max(low[2][i], high[2][i]))
                ]
                left.sort()
                answers[rank] = left[min(max(rank - low[1], 0), len(left) - 1)]
                break
            if stalls < 2:
                share = (rank + 0.5 - low[1]) / in_play
                pivot = low[0] + share * (high[0] - low[0])
                found = count(pivot, True)
            else:
                # A difference in play: row i with probability proportional to its part.
                widths = list(map(sub, high[2], low[2]))
                ends = list(accumulate(max(w, 0) for w in widths))
                row = min(bisect_right(ends, rng.random() * ends[-1]), n_x - 1)
                column = low[2][row] + int(rng.random() * widths[row])
                pivot = x[row] - y[n_y - 1 - column]
                below, at_most = count(pivot, True), count(pivot, False)
                counted.append(below)
                if below[1] <= rank < at_most[1]:
                    answers[rank] = pivot
                    break
                found = at_most if at_most[1] <= rank else below
            counted.append(found)
            if found[1] <= rank:
                low = found
            else:
                high = found
            stalls = 0 if high[1] - low[1] <= in_play / 2 else stalls + 1
    return [answers[rank] for rank in ranks]


def hodges_lehmann(
    canary: Iterable[float], stable: Iterable[float], *, confidence: float = 0.98
) -> ShiftEstimate:
    """The Hodges-Lehmann shift of `canary` over `stable` and its `confidence` interval.

    The estimate is the median of all differences ``canary_i - stable_j`` (exact). The
    interval is the set of shifts the asymptotic two-sided test (continuity-corrected)
    does not reject; its ends are pairwise differences.

    >>> shift = hodges_lehmann([10.0, 11.0, 12.0, 13.0], [1.0, 2.0, 3.0, 4.0], confidence=0.9)
    >>> shift.estimate, shift.lower, shift.upper
    (9.0, 7.0, 11.0)
    """
    level = _confidence(confidence)
    xs, ys = _samples("canary", canary), _samples("stable", stable)
    xs.sort()
    ys.sort()
    n_x, n_y = len(xs), len(ys)
    total = n_x * n_y
    n = n_x + n_y
    tie_term = _tie_term(Counter(xs).values()) + _tie_term(Counter(ys).values())
    variance = total / 12.0 * ((n + 1) - (tie_term / (n * (n - 1)) if n > 1 else 0.0))
    # U(d) >= threshold (with the continuity correction) rejects "shift <= d" from above.
    threshold = total / 2.0 + 0.5 + _critical_value(level) * math.sqrt(max(variance, 0.0))
    low_rank = min(max(math.floor(total - threshold), 0), total - 1)
    high_rank = min(max(math.ceil(threshold) - 1, 0), total - 1)
    # The median: the middle difference, or the mean of the two middle ones.
    middle = [(total - 1) // 2, total // 2]
    lower, middle_low, middle_high, upper = _pairwise_order_statistics(
        xs, ys, [low_rank, *middle, high_rank]
    )
    # The ends are pairwise differences, where U jumps. With many ties the test at the
    # end itself (tie-corrected there, as R evaluates it) can reject that shift: then
    # the interval is open at that end (Kayenta's root finder lands just inside it).
    critical = _critical_value(level)
    lower_open = mann_whitney([x - lower for x in xs], ys, alternative="greater").z > critical
    upper_open = mann_whitney([x - upper for x in xs], ys, alternative="less").z > critical
    return ShiftEstimate(
        estimate=(middle_low + middle_high) / 2.0,
        lower=lower,
        upper=upper,
        confidence=level,
        lower_open=lower_open,
        upper_open=upper_open,
    )


# -- Hodges-Lehmann on histograms --------------------------------------------------------


def _shift_statistic(
    canary: LatencyHistogram, stable: LatencyHistogram
) -> Callable[[float], float]:
    """``U(k)``: the canary's statistic after moving it down by `k` buckets.

    Values spread evenly inside their buckets, so a canary value of bucket b minus a
    stable value of bucket a is ``b - a`` plus a triangular (-1, 1) variable.
    ``cross[j]`` counts the pairs with ``b - a == first + j``.
    """
    c, s = canary.counts, stable.counts
    first = canary.offset - (stable.offset + len(s) - 1)
    cross = [0] * (len(c) + len(s) - 1)
    stable_reversed = s[::-1]
    width = len(s)
    for i, count in enumerate(c):
        if count:
            cross[i : i + width] = map(
                add, cross[i : i + width], map(mul, repeat(count), stable_reversed)
            )
    # tail[j] = pairs with difference index >= j
    tail = [*accumulate(reversed(cross))][::-1]
    tail.append(0)
    size = len(cross)

    def pairs_at(j: int) -> int:
        return cross[j] if 0 <= j < size else 0

    def pairs_from(j: int) -> int:
        if j <= 0:
            return tail[0]
        return tail[j] if j < size else 0

    def statistic(k: float) -> float:
        whole = math.floor(k)
        fraction = k - whole
        j = whole - first
        return (
            pairs_from(j + 2)
            + pairs_at(j + 1) * (1.0 - fraction * fraction / 2.0)
            + pairs_at(j) * (1.0 - fraction) ** 2 / 2.0
        )

    return statistic


def _crossing(statistic: Callable[[float], float], target: float, low: float, high: float) -> float:
    """The middle of ``{k : statistic(k) == target}`` for a decreasing `statistic`."""

    def first_at_or_below(strict: bool) -> float:
        a, b = low, high
        for _ in range(80):
            middle = (a + b) / 2.0
            value = statistic(middle)
            if value < target or (not strict and value == target):
                b = middle
            else:
                a = middle
            if b - a < 1e-10:
                break
        return (a + b) / 2.0

    return (first_at_or_below(False) + first_at_or_below(True)) / 2.0


def hodges_lehmann_histograms(
    canary: LatencyHistogram, stable: LatencyHistogram, *, confidence: float = 0.98
) -> ShiftEstimate:
    """The shift, in buckets, that lines the canary's latencies up with the stable ones.

    The Hodges-Lehmann estimate for log-latency, in buckets of ``2 ** (1/8)``, and its
    `confidence` interval by inverting the test; `bucket_ratio` turns each into a latency
    ratio (see the module docstring for the model).

    >>> from canarykit import LatencyHistogram
    >>> stable = LatencyHistogram.from_counts({-40: 30, -39: 40, -38: 30})
    >>> canary = LatencyHistogram.from_counts({-36: 30, -35: 40, -34: 30})
    >>> shift = hodges_lehmann_histograms(canary, stable)
    >>> round(shift.estimate, 6), round(bucket_ratio(shift.estimate), 4)
    (4.0, 1.4142)
    """
    level = _confidence(confidence)
    c, s = _histogram("canary", canary), _histogram("stable", stable)
    n_c, n_s = sum(c.counts), sum(s.counts)
    total = n_c * n_s
    mean = total / 2.0
    margin = 0.5 + _critical_value(level) * math.sqrt(total * (n_c + n_s + 1) / 12.0)
    statistic = _shift_statistic(c, s)
    # U is `total` at or below the smallest difference minus one, 0 at the largest plus one.
    low = float(c.offset - (s.offset + len(s.counts) - 1) - 1)
    high = float(c.offset + len(c.counts) - 1 - s.offset + 1)

    def crossing(target: float) -> float:
        if target >= total:
            return low
        if target <= 0:
            return high
        return _crossing(statistic, target, low, high)

    return ShiftEstimate(
        estimate=crossing(mean),
        lower=crossing(mean + margin),
        upper=crossing(mean - margin),
        confidence=level,
    )
