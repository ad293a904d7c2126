# Imports internals on purpose: the bucket layout under LatencyHistogram.

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarykit import ConfigError, LatencyHistogram
from canarykit._histogram import MAX_INDEX, MIN_INDEX, SCHEMA, bucket_bounds, bucket_index

WIDTH = 2.0 ** (1 / 8)  # one bucket, as a ratio
# Latencies well inside the clamped range, so every sample sits in its own bucket.
latencies = st.floats(min_value=1e-5, max_value=1e4, allow_nan=False, allow_infinity=False)
sample_lists = st.lists(latencies, min_size=1, max_size=200)


def exact_quantile(samples: list[float], q: float) -> float:
    """The smallest sample x with (samples <= x) / n >= q: the inverted-CDF definition."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# -- buckets ----------------------------------------------------------------------------


def test_schema_3_has_eight_buckets_per_doubling() -> None:
    assert SCHEMA == 3
    assert (MIN_INDEX, MAX_INDEX) == (-136, 112)
    assert bucket_index(1.0) == 0
    assert bucket_index(2.0) == 8
    assert bucket_index(0.5) == -8
    assert bucket_index(1.0000001) == 1


def test_every_upper_bound_lands_in_its_own_bucket_and_just_above_it_in_the_next() -> None:
    for i in range(MIN_INDEX, MAX_INDEX + 1):
        upper = 2.0 ** (i / 8)
        assert bucket_index(upper) == i
        assert bucket_bounds(i) == (2.0 ** ((i - 1) / 8), upper)
        if i < MAX_INDEX:
            assert bucket_index(math.nextafter(upper, math.inf)) == i + 1


# prometheus/client_golang nativeHistogramBounds[3]: bucket upper bounds as fractions of a
# power of two (value = fraction * 2**exp, 0.5 <= fraction < 1, as math.Frexp gives).
CLIENT_GOLANG_SCHEMA_3 = [0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
                          0.7071067811865475, 0.7711054127039704, 0.8408964152537144,
                          0.9170040432046711]  # fmt: skip


def test_bounds_agree_with_prometheus_client_golang_to_one_ulp() -> None:
    ours = [bucket_bounds(i)[1] for i in range(-8, 0)]  # 2**(j/8) / 2 for j in 0..7
    for mine, theirs in zip(ours, CLIENT_GOLANG_SCHEMA_3, strict=True):
        assert abs(mine - theirs) <= math.ulp(theirs)
    # Ours are the correctly rounded 2**(j/8) / 2; three of Go's literals are one ulp lower,
    # so only a value exactly on those three bounds is counted one bucket apart.
    assert [m != t for m, t in zip(ours, CLIENT_GOLANG_SCHEMA_3, strict=True)].count(True) == 3


def test_zero_and_tiny_values_clamp_to_the_lowest_bucket_and_huge_to_the_highest() -> None:
    assert bucket_index(0.0) == MIN_INDEX
    assert bucket_index(2.0**-17) == MIN_INDEX
    assert bucket_index(1e-300) == MIN_INDEX
    assert bucket_index(math.nextafter(2.0**-17, 1.0)) == MIN_INDEX + 1
    assert bucket_index(2.0**14) == MAX_INDEX
    assert bucket_index(1e300) == MAX_INDEX


@pytest.mark.parametrize("bad", [-1.0, -1e-12, math.nan, math.inf, -math.inf])
def test_negative_nan_and_infinite_latencies_are_refused(bad: float) -> None:
    with pytest.raises(ConfigError) as info:
        bucket_index(bad)
    assert info.value.field == "value"


@pytest.mark.parametrize("bad", [MIN_INDEX - 1, MAX_INDEX + 1, 1.0, True])
def test_bucket_bounds_refuses_indexes_out_of_range(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        bucket_bounds(bad)  # type: ignore[arg-type]
    assert info.value.field == "index"


# -- construction and validation -------------------------------------------------------


def test_from_samples_counts_and_sums_exactly() -> None:
    h = LatencyHistogram.from_samples([1.0, 1.0, 2.0, 0.0])
    assert h.count == 4
    assert h.sum == 4.0
    assert dict(h.items()) == {MIN_INDEX: 1, 0: 2, 8: 1}


def test_from_samples_names_the_bad_sample() -> None:
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_samples([0.1, -0.2])
    assert info.value.field == "samples[1]"
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_samples([0.1, 0.2, math.nan])
    assert info.value.field == "samples[2]"
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_samples(["0.1"])  # type: ignore[list-item]
    assert info.value.field == "samples[0]"


def test_construction_trims_zeros_so_equal_histograms_compare_equal() -> None:
    assert LatencyHistogram(offset=3, counts=(0, 0, 2, 0, 1, 0)) == LatencyHistogram(
        offset=5, counts=(2, 0, 1)
    )
    assert LatencyHistogram(offset=7, counts=(0, 0)) == LatencyHistogram()
    assert LatencyHistogram().offset == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"counts": (1, -1)}, "counts[1]"),
        ({"counts": (1, 1.5)}, "counts[1]"),
        ({"counts": (True,)}, "counts[0]"),
        ({"counts": (1,), "sum": math.nan}, "sum"),
        ({"counts": (1,), "sum": -1.0}, "sum"),
        ({"counts": (1,), "sum": math.inf}, "sum"),
        ({"counts": (), "sum": 2.0}, "sum"),
        ({"offset": MAX_INDEX, "counts": (1, 1)}, "offset"),
        ({"offset": MIN_INDEX - 1, "counts": (1,)}, "offset"),
        ({"offset": 1.0, "counts": (1,)}, "offset"),
    ],
)
def test_invalid_histograms_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        LatencyHistogram(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_from_counts_accepts_zero_counts_and_names_bad_entries() -> None:
    h = LatencyHistogram.from_counts({-10: 2, -9: 0, -7: 1}, sum=0.5)
    assert (h.offset, h.counts, h.sum) == (-10, (2, 0, 0, 1), 0.5)
    assert LatencyHistogram.from_counts({}) == LatencyHistogram()
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_counts({3: -1})
    assert info.value.field == "counts[3]"
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_counts({MAX_INDEX + 1: 1})
    assert info.value.field == f"counts[{MAX_INDEX + 1}]"
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_counts({1: 1}, sum=math.nan)
    assert info.value.field == "sum"


# -- statistics --------------------------------------------------------------------------


def test_empty_histogram_has_no_statistics() -> None:
    h = LatencyHistogram.empty()
    assert h.count == 0
    assert h.sum == 0.0
    assert h.mean is None
    assert h.quantile(0.5) is None
    assert h.cdf(1.0) == 0.0
    assert list(h.items()) == []


@settings(max_examples=200, deadline=None)
@given(samples=sample_lists, q=st.floats(min_value=0.0, max_value=1.0))
def test_quantile_is_within_one_bucket_of_the_exact_sample_quantile(
    samples: list[float], q: float
) -> None:
    estimate = LatencyHistogram.from_samples(samples).quantile(q)
    assert estimate is not None
    exact = exact_quantile(samples, q)
    assert exact / WIDTH * (1 - 1e-12) <= estimate <= exact * WIDTH * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(samples=sample_lists, q=st.floats(min_value=0.001, max_value=0.999))
def test_cdf_inverts_quantile(samples: list[float], q: float) -> None:
    h = LatencyHistogram.from_samples(samples)
    x = h.quantile(q)
    assert x is not None
    assert h.cdf(x) == pytest.approx(q, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(samples=sample_lists, xs=st.lists(latencies, min_size=2, max_size=10))
def test_cdf_is_monotone_and_within_one_bucket_of_the_empirical_cdf(
    samples: list[float], xs: list[float]
) -> None:
    h = LatencyHistogram.from_samples(samples)
    values = [h.cdf(x) for x in sorted(xs)]
    assert values == sorted(values)
    n = len(samples)
    for x in xs:
        below = sum(s <= x / WIDTH for s in samples) / n
        above = sum(s <= x * WIDTH for s in samples) / n
        assert below - 1e-12 <= h.cdf(x) <= above + 1e-12


def test_cdf_edges() -> None:
    h = LatencyHistogram.from_samples([0.01, 0.02, 0.04])
    assert h.cdf(-1.0) == 0.0
    assert h.cdf(0.001) == 0.0
    assert h.cdf(bucket_bounds(bucket_index(0.04))[1]) == 1.0
    assert 2 / 3 < h.cdf(0.04) < 1.0
    assert h.cdf(math.inf) == 1.0
    assert h.cdf(1e300) == 1.0
    with pytest.raises(ConfigError) as info:
        h.cdf(math.nan)
    assert info.value.field == "x"


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan, "0.5", True])
def test_quantile_outside_0_1_is_refused(q: object) -> None:
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_samples([0.1]).quantile(q)  # type: ignore[arg-type]
    assert info.value.field == "q"


def test_quantile_0_and_1_are_the_outer_bounds_of_the_occupied_buckets() -> None:
    h = LatencyHistogram.from_samples([0.01, 0.5])
    assert h.quantile(0.0) == bucket_bounds(bucket_index(0.01))[0]
    assert h.quantile(1.0) == pytest.approx(bucket_bounds(bucket_index(0.5))[1])


def test_mean_is_sum_over_count_when_the_sum_is_known() -> None:
    h = LatencyHistogram.from_samples([0.01, 0.02, 0.06])
    assert h.mean == pytest.approx(0.03)


def test_mean_without_sum_uses_geometric_bucket_midpoints() -> None:
    mid = math.sqrt(bucket_bounds(-20)[0] * bucket_bounds(-20)[1])
    h = LatencyHistogram.from_counts({-20: 3, -19: 1})
    mid2 = math.sqrt(bucket_bounds(-19)[0] * bucket_bounds(-19)[1])
    assert h.sum is None
    assert h.mean == pytest.approx((3 * mid + mid2) / 4)


def test_mean_of_lognormal_samples_without_sum_is_close_to_the_true_mean() -> None:
    rng = random.Random(4)
    samples = [rng.lognormvariate(math.log(0.05), 0.3) for _ in range(20_000)]
    h = LatencyHistogram.from_samples(samples)
    unknown = LatencyHistogram(offset=h.offset, counts=h.counts)
    assert unknown.mean == pytest.approx(sum(samples) / len(samples), rel=0.01)


# -- merging -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(a=st.lists(latencies, max_size=100), b=st.lists(latencies, max_size=100))
def test_merge_equals_from_samples_of_the_concatenation(a: list[float], b: list[float]) -> None:
    ha, hb = LatencyHistogram.from_samples(a), LatencyHistogram.from_samples(b)
    both = LatencyHistogram.from_samples(a + b)
    merged = ha.merge(hb)
    assert (merged.offset, merged.counts) == (both.offset, both.counts)
    assert merged.sum == pytest.approx(both.sum, rel=1e-12, abs=1e-300)
    assert (ha + hb).counts == (hb + ha).counts == both.counts


def test_merge_with_an_unknown_sum_loses_the_sum() -> None:
    known = LatencyHistogram.from_samples([0.1])
    unknown = LatencyHistogram.from_counts({0: 1})
    assert known.merge(unknown).sum is None
    assert unknown.merge(known).sum is None
    assert known.merge(LatencyHistogram.empty()) == known
    assert LatencyHistogram.empty().merge(known) == known
    assert known.merge(LatencyHistogram()).sum is None


def test_merge_of_disjoint_ranges_fills_the_gap_with_zeros() -> None:
    h = LatencyHistogram.from_counts({-30: 1}) + LatencyHistogram.from_counts({-27: 2})
    assert (h.offset, h.counts) == (-30, (1, 0, 0, 2))


def test_merge_refuses_other_types() -> None:
    with pytest.raises(ConfigError):
        LatencyHistogram.empty().merge([1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        LatencyHistogram.empty() + 1  # type: ignore[operator]


# -- serialisation -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(latencies, max_size=50), keep_sum=st.booleans())
def test_json_round_trip_is_exact(samples: list[float], keep_sum: bool) -> None:
    h = LatencyHistogram.from_samples(samples)
    if not keep_sum and h.count:
        h = LatencyHistogram(offset=h.offset, counts=h.counts)
    text = json.dumps(h.to_json(), allow_nan=False)
    assert LatencyHistogram.from_json(json.loads(text)) == h


def test_from_json_refuses_another_schema() -> None:
    with pytest.raises(ConfigError) as info:
        LatencyHistogram.from_json({"schema": 4, "offset": 0, "counts": [1], "sum": None})
    assert info.value.field == "schema"


def test_histograms_are_hashable_and_immutable() -> None:
    h = LatencyHistogram.from_samples([0.1, 0.2])
    assert hash(h) == hash(LatencyHistogram.from_samples([0.1, 0.2]))
    with pytest.raises(AttributeError):
        h.offset = 3  # type: ignore[misc]
