"""How finely latency buckets resolve: `resolution` of a histogram, `classic_interval` of
classic buckets; what the coarse-bucket warnings and the verdicts' resolution rest on.
"""

# Imports internals on purpose: the bucket layout under LatencyHistogram; the metrics source's
# helpers.

from __future__ import annotations

import math
import random
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import ConfigError, LatencyHistogram
from canarykit._histogram import bucket_index
from canarykit.metrics import histogram_from_classic, resolution
from canarykit.metrics._classic import classic_interval

NATIVE = 2.0 ** (1 / 8)  # one schema-3 bucket, about 1.09
INF = float("inf")
# prometheus_client's default buckets, with the cumulative counts of 1,000 requests
# whose median is 11 ms (most between 5 and 25 ms).
DEFAULT = {0.005: 20, 0.01: 420, 0.025: 940, 0.05: 985, 0.075: 993, 0.1: 996, 0.25: 999,
           0.5: 1000, 0.75: 1000, 1.0: 1000, 2.5: 1000, 5.0: 1000, 7.5: 1000, 10.0: 1000,
           INF: 1000}  # fmt: skip


def lognormal(median: float, sigma: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9, 0.99])
def test_native_data_resolve_one_bucket_where_the_mass_is(q):
    histogram = LatencyHistogram.from_samples(lognormal(0.011, 0.5, 20_000, seed=1))
    assert resolution(histogram, q) == pytest.approx(NATIVE)


def test_default_classic_buckets_resolve_their_bounds_ratio_in_whole_native_buckets():
    histogram = histogram_from_classic(DEFAULT)
    # The median lies in (0.01, 0.025]: 2.5x, read as a whole number of native buckets.
    at_median = resolution(histogram, 0.5)
    assert at_median == 2.0 ** ((bucket_index(0.025) - bucket_index(0.01)) / 8)
    assert 2.5 / NATIVE < at_median < 2.5 * NATIVE
    # The p98 lies in (0.025, 0.05]: 2x; the p99 in (0.05, 0.075]: 1.5x.
    assert resolution(histogram, 0.98) == pytest.approx(2.0)
    assert resolution(histogram, 0.99) == 2.0 ** ((bucket_index(0.075) - bucket_index(0.05)) / 8)


def test_an_empty_classic_bucket_below_widens_the_interval():
    # Nothing between 0.01 and 0.025: the median's interval runs from 0.005 to 0.05.
    histogram = histogram_from_classic({0.005: 100, 0.01: 100, 0.025: 100, 0.05: 300})
    assert resolution(histogram, 0.5) == 2.0 ** ((bucket_index(0.05) - bucket_index(0.005)) / 8)


def test_a_quantile_in_the_lowest_occupied_bucket_is_unbounded():
    # Prometheus' (0, 0.005] bucket: no lower edge; and a single occupied bucket.
    assert resolution(histogram_from_classic({0.005: 60, 0.01: 100}), 0.5) == INF
    assert resolution(LatencyHistogram.from_samples([0.2] * 10), 0.5) == INF
    assert resolution(histogram_from_classic(DEFAULT), 0.0) == INF


def test_an_empty_histogram_has_no_resolution():
    assert resolution(LatencyHistogram.empty(), 0.5) is None


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan, "0.5", None, True])
def test_bad_quantiles_are_refused(q):
    with pytest.raises(ConfigError, match=r"^q:"):
        resolution(LatencyHistogram.from_samples([0.1, 0.2]), q)


def test_only_histograms_are_measured():
    with pytest.raises(ConfigError, match=r"^histogram:"):
        resolution([0.1, 0.2], 0.5)  # type: ignore[arg-type]


@given(
    factors=st.lists(st.floats(1.2, 4.0), min_size=2, max_size=12),
    counts=st.lists(st.integers(1, 1000), min_size=12, max_size=12),
    q=st.floats(0.0, 1.0),
)
def test_mapped_resolution_is_the_classic_ratio_within_a_native_bucket(factors, counts, q):
    # Every classic bucket occupied, bounds at least 1.2x apart (two native buckets), so
    # each bound has its own native bucket and the occupied neighbours are the classic ones.
    bounds = [0.001]
    for factor in factors:
        bounds.append(bounds[-1] * factor)
    cumulative = dict(zip(bounds, accumulate(counts), strict=False))
    lower, upper = classic_interval(cumulative, q)
    mapped = resolution(histogram_from_classic(cumulative), q)
    if lower == 0.0:
        assert mapped == INF
    else:
        assert upper / lower / NATIVE <= mapped <= upper / lower * NATIVE


# -- classic_interval ---------------------------------------------------------------------


def test_classic_interval_finds_the_bucket_holding_the_quantile():
    assert classic_interval(DEFAULT, 0.5) == (0.01, 0.025)
    assert classic_interval(DEFAULT, 0.98) == (0.025, 0.05)
    assert classic_interval(DEFAULT, 0.99) == (0.05, 0.075)
    assert classic_interval(DEFAULT, 0.01) == (0.0, 0.005)
    assert classic_interval(DEFAULT, 1.0) == (0.25, 0.5)


def test_classic_interval_knows_the_bounds_of_empty_buckets():
    # Unlike the mapped histogram, which only has the occupied buckets.
    buckets = {0.005: 10, 0.01: 10, 0.025: 10, 0.05: 100}
    assert classic_interval(buckets, 0.5) == (0.025, 0.05)


def test_classic_interval_of_the_overflow_bucket_is_open_above():
    assert classic_interval({0.1: 10, INF: 100}, 0.5) == (0.1, INF)


def test_classic_interval_rounds_and_orders_counts_as_the_mapping_does():
    # increase() gives floats whose extrapolations may dip: rounded, made monotone.
    buckets = [(0.25, 99.7), (0.1, 49.6), (INF, 99.2), (0.05, 50.4)]
    assert classic_interval(buckets, 0.5) == (0.0, 0.05)  # 50 of 100 at or below 0.05
    assert classic_interval(buckets, 0.51) == (0.1, 0.25)


def test_classic_interval_of_no_observations_is_none():
    assert classic_interval({0.1: 0.4, INF: 0.0}, 0.5) is None
    assert classic_interval({}, 0.5) is None


@pytest.mark.parametrize(
    ("buckets", "q", "field"),
    [({0.1: 1}, 1.5, "q"), ({0.1: 1}, "0.5", "q"), ({-1.0: 1}, 0.5, "le"),
     ({0.1: -1.0}, 0.5, "buckets[0.1]")],
)  # fmt: skip
def test_classic_interval_refuses_what_the_mapping_refuses(buckets, q, field):
    with pytest.raises(ConfigError) as caught:
        classic_interval(buckets, q)
    assert caught.value.field == field
