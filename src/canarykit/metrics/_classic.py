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

__all__ = ["classic_interval", "histogram_from_classic"]


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    return float(value)


def _checked(
    buckets: Mapping[float, float] | Iterable[tuple[float, float]],
) -> tuple[list[tuple[float, float]], dict[float, float]]:
    """The (le, count) pairs as given, and the checked bounds: le -> cumulative count."""
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
    return pairs, bounds


def _monotone(bounds: dict[float, float]) -> list[tuple[float, int]]:
    """(le, cumulative count) in order of le, +Inf last: rounded, and never below the
    bucket under it (later buckets' extrapolations can come out a little lower).
    """  # noqa: D205 (the summary needs two lines)
    finite_bounds = sorted(le for le in bounds if le != math.inf)
    order = [*finite_bounds, *([math.inf] if math.inf in bounds else [])]
    below = 0
    cumulative: list[tuple[float, int]] = []
    for le in order:
        below = max(below, round(bounds[le]))
        cumulative.append((le, below))
    return cumulative


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
    pairs, bounds = _checked(buckets)
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
    for le, cumulative in _monotone(bounds):
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


def classic_interval(
    buckets: Mapping[float, float] | Iterable[tuple[float, float]], q: float
) -> tuple[float, float] | None:
    """The classic bucket ``(lower, upper]`` in seconds that holds the `q`-quantile.

    `buckets` are as for `histogram_from_classic` (counts rounded and made monotone the
    same way); unlike a mapped histogram, this knows the bounds of empty buckets too.
    `lower` is 0.0 for the first bucket and `upper` is ``inf`` for the ``+Inf`` bucket,
    so ``upper / lower`` is the resolution the buckets give there: ``inf`` when the
    quantile lies below the lowest bound or above the highest. None when there are no
    observations.

    >>> default = {0.005: 0, 0.01: 30, 0.025: 90, 0.05: 99, 0.075: 100, float("inf"): 100}
    >>> classic_interval(default, 0.5), classic_interval(default, 0.99)
    ((0.01, 0.025), (0.025, 0.05))
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise ConfigError("q", q, "must be a number in [0, 1]")
    _, bounds = _checked(buckets)
    cumulative = _monotone(bounds)
    if not cumulative or cumulative[-1][1] == 0:
        return None
    rank = q * cumulative[-1][1]
    lower = 0.0
    below = 0
    for le, count in cumulative:
        if count > below and count >= rank:
            return lower, le
        lower, below = le, count
    return None  # pragma: no cover (the last bucket holds the total)
