"""One window's latency comparison: the probability that a canary request is slower.

On canarykit's log buckets (8 per doubling), a latency ``(1 + margin)`` times slower is
a shift of ``8 log2(1 + margin)`` buckets. The canary's histogram is shifted down by
that much and compared with the stable one's by the Mann-Whitney AUC: the probability
that a canary request is slower than a stable one, ties counted half. A fractional
shift spreads each bucket's mass uniformly over its width (the same model the quantile
interpolation uses), which gives, for a canary bucket ``j`` buckets above a stable one
and a fractional shift ``f``: 1 when ``j >= 2``, ``1 - f**2 / 2`` when ``j = 1``,
``(1 - f)**2 / 2`` when ``j = 0`` and 0 below.

Why ``x = AUC - 1/2`` can be bet on with a sharp variance. Suppose that within the
window the canary's (shifted) latencies and the stable ones are exchangeable: the null
"no slower than the margin", at its boundary. Break ties at random; then the canary's
ranks among the window's ``N`` latencies are ``n_c`` draws without replacement from
``1..N``. Hoeffding (1963, theorem 4) bounds the moment generating function of such a
sum by that of draws with replacement, and a discrete uniform variable is strictly
sub-Gaussian (``sinh(N a) / (N sinh a) <= exp((N**2 - 1) a**2 / 6)``, from the product
formula of ``sinh``). So ``E exp(lam x) <= exp(lam**2 v / 2)`` for every ``lam``, with
``v = (N**2 - 1) / (12 n_c n_s n_big)`` (``n_big`` the larger arm; either arm's ranks
may be taken as the draws). The midrank AUC is the average over the random tie-breaks,
so by Jensen's inequality the bound holds for it too; a canary that is faster only
lowers ``x``. ``v`` is at most ``1 + n_small / n_big`` times the exact null variance of
the AUC, against about 3 times for Hoeffding's bound for U-statistics.
"""

from __future__ import annotations

import math
from itertools import accumulate
from operator import mul

from .._histogram import LatencyHistogram

__all__ = ["BUCKETS_PER_DOUBLING", "above", "shift_of", "window_auc"]

BUCKETS_PER_DOUBLING = 8
_LOG_BUCKET = math.log(2.0) / BUCKETS_PER_DOUBLING


def shift_of(margin: float, *, whole: bool = False) -> tuple[int, float]:
    """The buckets a ``(1 + margin)`` slowdown spans: (whole buckets, fraction).

    With `whole`, rounded up to whole buckets: conservative for the failing test
    whatever the shape inside a bucket.

    >>> shift_of(0.03)
    (0, 0.341...)
    >>> shift_of(0.03, whole=True)
    (1, 0.0)
    """
    buckets = math.log1p(margin) / _LOG_BUCKET
    if whole:
        return math.ceil(buckets - 1e-9), 0.0
    integer = math.floor(buckets)
    return integer, buckets - integer


def window_auc(
    stable: LatencyHistogram, canary: LatencyHistogram, shift: tuple[int, float]
) -> tuple[float, float, int, int]:
    """``(AUC - 1/2, v, n_c, n_s)`` of the canary shifted down by `shift` buckets.

    `v` is the sub-Gaussian variance of the module docstring.
    """
    n_s, n_c = stable.count, canary.count
    whole, fraction = shift
    k0 = (1.0 - fraction) ** 2 / 2.0
    k1 = 1.0 - fraction * fraction / 2.0
    counts = stable.counts
    size = len(counts)
    # earned[j]: what a canary latency lands on in stable bucket j earns (see the
    # docstring): all stable latencies two or more buckets below, k1 of those one
    # below, k0 of those in the same bucket; j runs to `size` (just above them all).
    below = list(accumulate(counts, initial=0))
    edge = [0, *counts]  # edge[j] = counts[j - 1], 0 below the first bucket
    inside = [*counts, 0]  # inside[j] = counts[j], 0 above the last
    earned = [b + k1 * e + k0 * c for b, e, c in zip([0, *below[:-1]], edge, inside, strict=True)]
    more = canary.counts
    start = canary.offset - whole - stable.offset  # stable bucket of canary bucket 0
    # canary buckets below every stable one earn 0; above them all, every stable one
    low = max(0, -start)
    high = min(len(more), size + 1 - start)
    total = 0.0
    if low < high:
        total = sum(map(mul, more[low:high], earned[start + low : start + high]))
    if high < len(more):
        total += n_s * sum(more[max(high, 0) :])
    pairs = n_c * n_s
    n = n_c + n_s
    variance = (n * n - 1.0) / (12.0 * pairs * max(n_c, n_s))
    return total / pairs - 0.5, variance, n_c, n_s


def above(histogram: LatencyHistogram, index: float) -> float:
    """The count above the point `index` (in bucket units), mass spread inside buckets."""
    counts = histogram.counts
    start = index - histogram.offset
    if start <= 0:
        return float(histogram.count)
    whole = math.floor(start)
    if whole >= len(counts):
        return 0.0
    fraction = start - whole
    return counts[whole] * (1.0 - fraction) + sum(counts[whole + 1 :])
