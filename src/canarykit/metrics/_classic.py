"""Classic Prometheus histogram buckets mapped into canarykit's native (schema 3) buckets.

How the mapping works: a classic bucket ``le`` counts the observations at or below
``le``; consecutive differences give the count in each interval ``(previous le, le]``.
Each interval's count is put, whole, in the native bucket that holds its upper bound
``le`` (`bucket_index(le)`); observations above the highest finite bound (the ``+Inf``
bucket) go in the native bucket just above that bound.

The bias, stated once: inside an interval the true values are unknown, and this puts them
all at its top. A quantile read from the result lies in the native bucket holding the
``le`` of the classic bucket where the true quantile lies: never more than one native
bucket (a factor ``2 ** (1/8)``, about 9%) below the true value nor above ``le``
by more than that factor, and up to the interval's ratio ``le / previous le`` above the
true value (2.5x between the buckets 0.1 and 0.25). It is a conservative, upper estimate:
a canary is never judged faster than it is by more than 9%. The mean is exact when the
histogram's ``_sum`` is given. Observations in the ``+Inf`` bucket are only known to
exceed the top bound, and read as just above it, as Prometheus' `histogram_quantile` does.

Counts from ``increase()`` are floats and the buckets' extrapolations differ slightly, so
the cumulative counts are rounded and made non-decreasing (a running maximum, as
Prometheus' `histogram_quantile` does) before the differences are taken.

>>> h = histogram_from_classic({0.1: 90, 0.25: 99, float("inf"): 100}, sum=9.5)
>>> h.count, h.sum
(100, 9.5)
>>> 0.229 < h.quantile(0.95) <= 0.25
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import ConfigError
from .._histogram import MAX_INDEX, LatencyHistogram, bucket_index

__all__ = ["histogram_from_classic"]


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    return float(value)


def histogram_from_classic(
    buckets: Mapping[float, float] | Iterable[tuple[float, float]],
    *,
    sum: float | None = None,
) -> LatencyHistogram:
    """Map classic cumulative buckets (upper bound ``le`` in seconds -> count) into a
    `LatencyHistogram`; see the module docs for the mapping and its bias.

    `buckets` may include ``float("inf")`` for the ``+Inf`` bucket and need not be sorted.
    Counts may be floats (from ``increase()``): they are rounded. `sum` is the total of the
    observed values in seconds (a histogram's ``_sum``), or None if unknown; it is
    recorded as 0 when the rounded count is 0.
    """  # noqa: D205 (the summary needs two lines)
    pairs = list(buckets.items()) if isinstance(buckets, Mapping) else list(buckets)
    bounds: dict[float, float] = {}
    for position, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ConfigError(f"buckets[{position}]", pair, "must be a (le, count) pair")
        le = _number("le", pair[0])
        count = _number(f"buckets[{le!r}]", pair[1])
        if math.isnan(le) or le < 0:
            raise ConfigError("le", pair[0], "must be a bound >= 0 seconds or +Inf")
        if not math.isfinite(count) or count < 0:
            raise ConfigError(f"buckets[{le!r}]", pair[1], "must be a finite count >= 0")
        if le in bounds:
            raise ConfigError("le", pair[0], "appears twice")
        bounds[le] = count
    total = None
    if sum is not None:
        total = _number("sum", sum)
        if not math.isfinite(total) or total < 0:
            raise ConfigError("sum", sum, "must be a finite number of seconds >= 0")
    finite_bounds = sorted(le for le in bounds if le != math.inf)
    if not finite_bounds:
        if not bounds:
            return LatencyHistogram.empty()
        raise ConfigError("buckets", pairs, "need at least one finite upper bound")
    by_index: dict[int, int] = {}
    below = 0
    for le in [*finite_bounds, *([math.inf] if math.inf in bounds else [])]:
        # Rounded, and never below the bucket under it: later buckets' extrapolations can
        # come out a little lower than earlier ones.
        cumulative = max(below, round(bounds[le]))
        if cumulative > below:
            if le == math.inf:
                index = min(bucket_index(finite_bounds[-1]) + 1, MAX_INDEX)
            else:
                index = bucket_index(le)
            by_index[index] = by_index.get(index, 0) + cumulative - below
        below = cumulative
    if below == 0:
        return LatencyHistogram.empty()
    return LatencyHistogram.from_counts(by_index, sum=total)
