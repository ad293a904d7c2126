"""Latency histograms with fixed log-spaced buckets: mergeable, small, and exact to merge.

The buckets are those of Prometheus native histograms at schema 3: the base is
``2 ** (1/8)``, so each bucket is about 9% wide, and bucket index ``i`` holds the
values ``v`` (seconds) with ``2 ** ((i - 1) / 8) < v <= 2 ** (i / 8)``. Data from a
Prometheus native histogram of schema 3 therefore maps onto these buckets one to one,
and two histograms always merge exactly by adding counts. Values at or below
``2 ** -17`` s (about 7.6 microseconds, zero included) are counted in the lowest bucket
`MIN_INDEX`, and values above ``2 ** 14`` s (about 4.5 hours) in the highest, `MAX_INDEX`.

Quantiles, the CDF and rank statistics come from the bucket counts alone, so memory does
not grow with traffic; their error is at most one bucket, a factor of ``2 ** (1/8)``.

>>> h = LatencyHistogram.from_samples([0.010, 0.020, 0.030, 0.040])
>>> h.count, round(h.mean, 3)
(4, 0.025)
>>> 0.017 < h.quantile(0.5) < 0.022
True
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from operator import add
from typing import Any

import attrs

from ._errors import ConfigError
from ._validate import MAX_COUNT, bounded_items, finite

__all__ = [
    "MAX_INDEX",
    "MIN_INDEX",
    "SCHEMA",
    "LatencyHistogram",
    "bucket_bounds",
    "bucket_index",
    "resolution",
    "resolution_of_counts",
]

SCHEMA = 3
"""The Prometheus native-histogram schema of the buckets: ``2 ** SCHEMA`` buckets per doubling."""

MIN_INDEX = -136
"""The lowest bucket index, upper bound ``2 ** -17`` s; smaller values (and zero) land here."""

MAX_INDEX = 112
"""The highest bucket index, upper bound ``2 ** 14`` s; larger values land here."""

_MAX_DENSE = 1_000_000
_PER_OCTAVE = 1 << SCHEMA  # 8 buckets per doubling
_MIN_VALUE = 2.0**-17  # upper bound of MIN_INDEX
_MAX_VALUE = 2.0**14  # upper bound of MAX_INDEX

# Upper bounds of the buckets within one doubling, as fractions in [0.5, 1), used the way
# Prometheus uses its table with math.Frexp: `value = frac * 2**exp`, 0.5 <= frac < 1,
# lands in bucket `bisect_left(_FRACTIONS, frac) + 8 * (exp - 1)`. Every bound below is
# built from this table with ldexp (exact), so `bucket_index(bucket_bounds(i)[1]) == i`
# and `bucket_index(2 ** (i / 8)) == i` for every i. The fractions are the correctly
# rounded 2**(j/8) / 2; client_golang's literals for j = 4, 6, 7 are one ulp lower, so a
# value exactly on one of those bounds is counted one bucket higher there (bucket counts
# read from Prometheus are unaffected: an index is an index).
_FRACTIONS: tuple[float, ...] = tuple(2.0 ** (j / _PER_OCTAVE) / 2.0 for j in range(_PER_OCTAVE))


def _upper(index: int) -> float:
    octave, step = divmod(index, _PER_OCTAVE)
    return math.ldexp(_FRACTIONS[step], octave + 1)


# Bounds and geometric midpoints per index, stored at position `index - MIN_INDEX`.
_UPPER: tuple[float, ...] = tuple(_upper(i) for i in range(MIN_INDEX, MAX_INDEX + 1))
_LOWER: tuple[float, ...] = (_upper(MIN_INDEX - 1), *_UPPER[:-1])
_MIDDLE: tuple[float, ...] = tuple(
    low * 2.0 ** (1.0 / (2 * _PER_OCTAVE)) for low in _LOWER
)  # sqrt(lower * upper)
_LOG_WIDTH = math.log(2.0) / _PER_OCTAVE  # ln(upper / lower), the same for every bucket


def _bad_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def bucket_index(value: float) -> int:
    """Return the index of the bucket holding `value` seconds, clamped to the index range.

    Zero is a legal latency and lands in `MIN_INDEX`; a negative, NaN or infinite value
    raises ConfigError.

    >>> bucket_index(1.0), bucket_index(2.0), bucket_index(2.0 ** (3 / 8)), bucket_index(0.0)
    (0, 8, 3, -136)
    """
    if value <= _MIN_VALUE:
        if value >= 0.0:
            return MIN_INDEX
    elif value <= _MAX_VALUE:
        frac, exp = math.frexp(value)
        return bisect_left(_FRACTIONS, frac) + _PER_OCTAVE * (exp - 1)
    elif value > _MAX_VALUE and value != math.inf:  # not NaN
        return MAX_INDEX
    raise ConfigError("value", value, "must be a finite latency >= 0 seconds")


def bucket_bounds(index: int) -> tuple[float, float]:
    """Return the bounds of bucket `index` in seconds: (lower, exclusive; upper, inclusive).

    These are the nominal bounds; `MIN_INDEX` also holds everything below its lower bound
    and `MAX_INDEX` everything above its upper bound.

    >>> bucket_bounds(8)
    (1.8340080864093424, 2.0)
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError("index", index, "must be an int")
    if not MIN_INDEX <= index <= MAX_INDEX:
        raise ConfigError("index", index, f"must be in [{MIN_INDEX}, {MAX_INDEX}]")
    return _LOWER[index - MIN_INDEX], _UPPER[index - MIN_INDEX]


def _to_counts(value: Iterable[int]) -> tuple[int, ...]:
    if isinstance(value, tuple):
        return value
    # Leading and trailing zeros are trimmed later, so a valid sequence may be longer
    # than the index range.
    return bounded_items("counts", value, _MAX_DENSE, "counts")


def _check_sum(value: Any, count: int) -> float | None:
    if value is None:
        return None
    if _bad_number(value):
        raise ConfigError("sum", value, "must be a number or None")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ConfigError("sum", value, "must be finite and >= 0")
    if count == 0 and number != 0:
        raise ConfigError("sum", value, "must be 0 for an empty histogram")
    return number


@attrs.frozen(kw_only=True)
class LatencyHistogram:
    """Counts of latencies (seconds) in fixed log-spaced buckets; see the module docstring.

    Storage is dense over the occupied range: ``counts[k]`` is the count of bucket
    ``offset + k``. Construction trims leading and trailing zero counts (so equal
    histograms compare equal), and an empty histogram has ``offset == 0`` and no counts.
    `sum` is the exact total of the observed values in seconds when known (from raw
    samples, or a Prometheus ``_sum``), else None. Instances are immutable; merging
    returns a new one.

    >>> LatencyHistogram.from_counts({-56: 3, -54: 1}, sum=0.031)
    LatencyHistogram(offset=-56, counts=(3, 0, 1), sum=0.031)
    """

    offset: int = 0
    counts: tuple[int, ...] = attrs.field(default=(), converter=_to_counts)
    sum: float | None = None

    def __attrs_post_init__(self) -> None:
        counts = self.counts
        for k, count in enumerate(counts):
            if type(count) is not int and (isinstance(count, bool) or not isinstance(count, int)):
                raise ConfigError(f"counts[{k}]", count, "must be an int >= 0")
            if count < 0:
                raise ConfigError(f"counts[{k}]", count, "must be an int >= 0")
            if count > MAX_COUNT:
                raise ConfigError(f"counts[{k}]", count, "must be at most 2**53")
        offset = self.offset
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ConfigError("offset", offset, "must be an int")
        start, stop = 0, len(counts)
        while start < stop and counts[start] == 0:
            start += 1
        while stop > start and counts[stop - 1] == 0:
            stop -= 1
        if start == stop:
            counts, offset = (), 0
        else:
            counts = tuple(map(int, counts[start:stop]))  # also drops int subclasses
            offset = int(offset) + start
            if offset < MIN_INDEX or offset + len(counts) - 1 > MAX_INDEX:
                raise ConfigError(
                    "offset",
                    self.offset,
                    f"occupied buckets must lie in [{MIN_INDEX}, {MAX_INDEX}]",
                )
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "sum", _check_sum(self.sum, sum(counts)))

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def empty(cls) -> LatencyHistogram:
        """Return a histogram with no observations (and a known sum of 0)."""
        return _EMPTY

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> LatencyHistogram:
        """Count raw latencies in seconds; zero is legal, negative or non-finite ones are not.

        >>> LatencyHistogram.from_samples([1.0, 1.0, 2.0])
        LatencyHistogram(offset=0, counts=(2, 0, 0, 0, 0, 0, 0, 0, 1), sum=4.0)
        """
        if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Iterable):
            raise ConfigError("samples", samples, "must be a sequence of latencies in seconds")
        by_index: dict[int, int] = {}
        values: list[float] = []
        for position, value in enumerate(samples):
            if _bad_number(value):
                raise ConfigError(f"samples[{position}]", value, "must be a number")
            try:
                index = bucket_index(finite(f"samples[{position}]", value))
            except ConfigError:
                raise ConfigError(
                    f"samples[{position}]", value, "must be a finite latency >= 0 seconds"
                ) from None
            by_index[index] = by_index.get(index, 0) + 1
            values.append(value)
        if not by_index:
            return _EMPTY
        return cls._from_index_counts(by_index, math.fsum(values))

    @classmethod
    def from_counts(
        cls, counts: Mapping[int, int], *, sum: float | None = None
    ) -> LatencyHistogram:
        """Build from a mapping of bucket index to count; zero counts are allowed and dropped.

        `sum` is the total of the observed values in seconds, if known.
        """
        if not isinstance(counts, Mapping):
            raise ConfigError("counts", counts, "must be a mapping of bucket index to count")
        clean: dict[int, int] = {}
        for index, count in counts.items():
            if isinstance(index, bool) or not isinstance(index, int):
                raise ConfigError("counts", index, "bucket indexes must be ints")
            if not MIN_INDEX <= index <= MAX_INDEX:
                raise ConfigError(
                    f"counts[{index}]", index, f"bucket index must be in [{MIN_INDEX}, {MAX_INDEX}]"
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"counts[{index}]", count, "must be an int >= 0")
            if count > MAX_COUNT:
                raise ConfigError(f"counts[{index}]", count, "must be at most 2**53")
            if count:
                clean[int(index)] = int(count)
        total = _check_sum(sum, 1 if clean else 0)
        if not clean:
            return _EMPTY if total is not None else _EMPTY_UNKNOWN_SUM
        return cls._from_index_counts(clean, total)

    @classmethod
    def _from_index_counts(cls, by_index: dict[int, int], total: float | None) -> LatencyHistogram:
        low = min(by_index)
        dense = [0] * (max(by_index) - low + 1)
        for index, count in by_index.items():
            dense[index - low] = count
        return _make(low, tuple(dense), total)

    # -- combining ----------------------------------------------------------------------

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Return the histogram of both sets of observations; exact. `sum` is None if either is."""
        if not isinstance(other, LatencyHistogram):
            raise ConfigError("other", other, "must be a LatencyHistogram")
        total = None if self.sum is None or other.sum is None else self.sum + other.sum
        a, b = self.counts, other.counts
        if not b:
            return self if total == self.sum else _make(self.offset, a, total)
        if not a:
            return other if total == other.sum else _make(other.offset, b, total)
        a_off, b_off = self.offset, other.offset
        if a_off == b_off and len(a) == len(b):
            return _make(a_off, tuple(map(add, a, b)), total)
        if b_off < a_off:  # make `a` the one that starts first
            a, b, a_off, b_off = b, a, b_off, a_off
        stop = max(a_off + len(a), b_off + len(b))
        merged = list(a)
        merged.extend([0] * (stop - a_off - len(a)))
        at = b_off - a_off
        merged[at : at + len(b)] = map(add, merged[at : at + len(b)], b)
        return _make(a_off, tuple(merged), total)

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        """Return ``a.merge(b)``."""
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.merge(other)

    # -- statistics ---------------------------------------------------------------------

    @property
    def count(self) -> int:
        """The number of observations."""
        return sum(self.counts)

    @property
    def mean(self) -> float | None:
        """The mean latency in seconds, None when empty.

        It is `sum / count` when the sum is known, else the count-weighted mean of the
        buckets' geometric midpoints.
        """
        counts = self.counts
        if not counts:
            return None
        count = sum(counts)
        if self.sum is not None:
            return self.sum / count
        start = self.offset - MIN_INDEX
        return sum(map(float.__mul__, _MIDDLE[start : start + len(counts)], counts)) / count

    def quantile(self, q: float) -> float | None:
        """Return the `q`-quantile in seconds, q in [0, 1]; None when empty.

        Finds the bucket holding rank ``q * count`` and interpolates log-linearly inside
        it, so the answer is within one bucket (a factor ``2 ** (1/8)``) of the sample
        quantile.
        """
        if (type(q) is not float and _bad_number(q)) or not 0.0 <= q <= 1.0:
            raise ConfigError("q", q, "must be a number in [0, 1]")
        counts = self.counts
        if not counts:
            return None
        total = sum(counts)
        rank = q * total
        base = self.offset - MIN_INDEX
        if q > 0.5:
            # High quantiles (p95, p99: the common ones) are found sooner from the top.
            # The answer is the same bucket: the first whose count reaches past `rank`.
            above = 0
            for k in range(len(counts) - 1, -1, -1):
                count = counts[k]
                below = total - above - count
                if count and below < rank:
                    fraction = (rank - below) / count
                    return _LOWER[base + k] * math.exp(fraction * _LOG_WIDTH)
                above += count
        below = 0
        for k, count in enumerate(counts):
            if count and below + count >= rank:
                fraction = (rank - below) / count
                return _LOWER[base + k] * math.exp(fraction * _LOG_WIDTH)
            below += count
        return _UPPER[base + len(counts) - 1]  # pragma: no cover (rounding)

    def cdf(self, x: float) -> float:
        """Return the fraction of observations <= `x` seconds, log-linear inside x's bucket.

        An empty histogram gives 0.0.
        """
        if _bad_number(x) or math.isnan(x):
            raise ConfigError("x", x, "must be a number")
        counts = self.counts
        if not counts or x < 0:
            return 0.0
        if x == math.inf:
            return 1.0
        index = bucket_index(x)
        k = index - self.offset
        if k < 0:
            return 0.0
        total = sum(counts)
        if k >= len(counts):
            return 1.0
        below = sum(counts[:k])
        lower = _LOWER[index - MIN_INDEX]
        fraction = math.log(x / lower) / _LOG_WIDTH if x > lower else 0.0
        return (below + counts[k] * min(fraction, 1.0)) / total

    def cumulative(self) -> tuple[int, ...]:
        """Return running totals of `counts`: entry k counts buckets up to ``offset + k``."""
        return tuple(accumulate(self.counts))

    def items(self) -> Iterator[tuple[int, int]]:
        """Yield (bucket index, count) for every non-empty bucket, lowest index first."""
        offset = self.offset
        for k, count in enumerate(self.counts):
            if count:
                yield offset + k, count

    # -- serialisation ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON; `from_json` restores an equal histogram."""
        return {
            "schema": SCHEMA,
            "offset": self.offset,
            "counts": list(self.counts),
            "sum": self.sum,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Inverse of `to_json`."""
        if not isinstance(data, Mapping):
            raise ConfigError("latency", data, "must be a mapping")
        schema = data.get("schema", SCHEMA)
        if isinstance(schema, bool) or schema != SCHEMA:
            raise ConfigError("schema", schema, f"must be {SCHEMA}")
        counts = data.get("counts", ())
        if not isinstance(counts, (list, tuple)):
            raise ConfigError("counts", counts, "must be a list of counts")
        return cls(offset=data.get("offset", 0), counts=tuple(counts), sum=data.get("sum"))


_set_offset = vars(LatencyHistogram)["offset"].__set__  # the slot descriptors, bypassing frozen
_set_counts = vars(LatencyHistogram)["counts"].__set__
_set_sum = vars(LatencyHistogram)["sum"].__set__
_new = object.__new__


def _make(offset: int, counts: tuple[int, ...], total: float | None) -> LatencyHistogram:
    """Build a histogram from trusted parts (trimmed, in range, valid), skipping validation.

    Writes the slots directly: about a third of the cost of the validating constructor's
    bookkeeping, which matters because every analysis window builds and merges several.
    """
    histogram: LatencyHistogram = _new(LatencyHistogram)
    _set_offset(histogram, offset)
    _set_counts(histogram, counts)
    _set_sum(histogram, total)
    return histogram


def resolution(histogram: LatencyHistogram, q: float) -> float | None:
    """How finely `histogram` resolves latencies around its `q`-quantile, as a ratio.

    The answer is ``upper / lower`` of the interval the `q`-quantile is known to lie in:
    from the upper bound of the next occupied bucket below to the upper bound of the
    bucket holding the quantile (the same bucket `LatencyHistogram.quantile` reads).
    Inside that interval the counts cannot place a value: a slowdown much smaller than
    the interval moves only the few requests near its edges across it, so a 3% margin
    needs buckets of about 1.1x to 1.2x, not the 2x to 2.5x of prometheus_client's
    default buckets.

    Data from native histograms (schema 3) occupy neighbouring buckets wherever the mass
    is, so the answer is ``2 ** (1/8)``, about 1.09. Data mapped from classic buckets
    (`canarykit.metrics.histogram_from_classic`) occupy only the buckets of their
    ``le`` bounds, so the answer is the ratio of the classic bounds around the quantile,
    rounded to whole native buckets (a factor ``2 ** (1/8)``): 2.38 for the default
    bounds 0.1 and 0.25. It is ``inf`` when the quantile lies in the lowest occupied
    bucket, since nothing below it bounds the interval (a classic ``(0, le]`` bucket,
    or a narrow distribution), and None for an empty histogram.

    It reads occupied buckets only, so it cannot tell an empty classic bucket from a
    gap in sparse data: on a few dozen observations spread thinly, gaps between them
    read as coarse buckets. Ask it of a histogram with enough observations near the
    quantile (both arms merged, or a longer span).

    >>> from canarykit import LatencyHistogram
    >>> native = LatencyHistogram.from_samples([0.010 * 1.01**k for k in range(100)])
    >>> round(resolution(native, 0.5), 2)
    1.09
    >>> from canarykit.metrics import histogram_from_classic
    >>> classic = histogram_from_classic({0.1: 40, 0.25: 90, 0.5: 100, float("inf"): 100})
    >>> round(resolution(classic, 0.5), 2), resolution(classic, 0.2)
    (2.38, inf)
    """
    if (type(q) is not float and _bad_number(q)) or not 0.0 <= q <= 1.0:
        raise ConfigError("q", q, "must be a number in [0, 1]")
    if not isinstance(histogram, LatencyHistogram):
        raise ConfigError("histogram", histogram, "must be a LatencyHistogram")
    return resolution_of_counts(histogram.counts, q)


def resolution_of_counts(counts: Sequence[int], q: float) -> float | None:
    """`resolution` of bucket `counts` (at any offset), without checking its inputs.

    For callers that keep running counts rather than a `LatencyHistogram`.
    """
    if not counts:
        return None
    rank = q * sum(counts)
    below = 0
    previous: int | None = None  # position of the last occupied bucket seen
    for k, count in enumerate(counts):
        if count and below + count >= rank:
            if previous is None:
                return math.inf
            return float(2.0 ** ((k - previous) / _PER_OCTAVE))
        if count:
            previous = k
        below += count
    return float(2.0 ** (1 / _PER_OCTAVE))  # pragma: no cover (rounding: rank beyond the total)


_EMPTY = LatencyHistogram(sum=0.0)
_EMPTY_UNKNOWN_SUM = LatencyHistogram()
