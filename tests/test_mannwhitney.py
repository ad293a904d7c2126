# Imports internals on purpose: a decider's helpers.

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarykit import ConfigError, LatencyHistogram
from canarykit.deciders import (
    bucket_ratio,
    hodges_lehmann,
    hodges_lehmann_histograms,
    mann_whitney,
    mann_whitney_histograms,
)
from canarykit.deciders._mannwhitney import _select

scipy_stats = pytest.importorskip("scipy.stats")

ALTERNATIVES = ["two-sided", "greater", "less"]


def scipy_p(canary: list[float], stable: list[float], alternative: str) -> tuple[float, float]:
    result = scipy_stats.mannwhitneyu(
        canary, stable, alternative=alternative, method="asymptotic", use_continuity=True
    )
    return float(result.statistic), float(result.pvalue)


def expand(histogram: LatencyHistogram) -> list[float]:
    return [float(index) for index, count in histogram.items() for _ in range(count)]


def brute_median(canary: list[float], stable: list[float]) -> float:
    return statistics.median(a - b for a in canary for b in stable)


# --- the test agrees with scipy ---------------------------------------------------------

samples_with_ties = st.lists(st.integers(0, 12), min_size=1, max_size=40)
samples_without_ties = st.lists(
    st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40, unique=True
)


@settings(max_examples=150, deadline=None)
@given(
    canary=samples_with_ties, stable=samples_with_ties, alternative=st.sampled_from(ALTERNATIVES)
)
def test_p_value_matches_scipy_with_ties(canary, stable, alternative):
    if len(set(canary) | set(stable)) == 1:
        return  # scipy divides 0 by 0 there; ours says p = 1 (tested below)
    u, p = scipy_p(canary, stable, alternative)
    result = mann_whitney(canary, stable, alternative=alternative)
    assert result.u == u
    assert result.p_value == pytest.approx(p, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    canary=samples_without_ties,
    stable=samples_without_ties,
    alternative=st.sampled_from(ALTERNATIVES),
)
def test_p_value_matches_scipy_without_ties(canary, stable, alternative):
    u, p = scipy_p(canary, stable, alternative)
    result = mann_whitney(canary, stable, alternative=alternative)
    assert result.u == u
    assert result.p_value == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_p_value_matches_scipy_on_seeded_samples(alternative):
    rng = random.Random(7)
    for _ in range(40):
        canary = [rng.lognormvariate(0.1, 1) for _ in range(rng.randint(5, 400))]
        stable = [rng.lognormvariate(0.0, 1) for _ in range(rng.randint(5, 400))]
        _, p = scipy_p(canary, stable, alternative)
        assert mann_whitney(canary, stable, alternative=alternative).p_value == pytest.approx(
            p, abs=1e-6
        )


histograms = st.dictionaries(st.integers(-60, -30), st.integers(1, 50), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None)
@given(canary=histograms, stable=histograms, alternative=st.sampled_from(ALTERNATIVES))
def test_histogram_test_is_the_test_on_bucket_indexes(canary, stable, alternative):
    c, s = LatencyHistogram.from_counts(canary), LatencyHistogram.from_counts(stable)
    if len(set(canary) | set(stable)) == 1:
        return
    u, p = scipy_p(expand(c), expand(s), alternative)
    result = mann_whitney_histograms(c, s, alternative=alternative)
    assert result.u == u
    assert result.p_value == pytest.approx(p, abs=1e-6)
    assert result.n_canary == c.count and result.n_stable == s.count


def test_all_values_tied_gives_p_value_one():
    assert mann_whitney([1.0, 1.0], [1.0, 1.0, 1.0]).p_value == 1.0
    one = LatencyHistogram.from_counts({-40: 5})
    assert mann_whitney_histograms(one, one).p_value == 1.0


# --- Hodges-Lehmann on raw samples ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    canary=st.lists(st.integers(-50, 50), min_size=1, max_size=30),
    stable=st.lists(st.integers(-50, 50), min_size=1, max_size=30),
)
def test_estimate_is_the_median_of_pairwise_differences(canary, stable):
    shift = hodges_lehmann(canary, stable)
    assert shift.estimate == brute_median(canary, stable)
    assert shift.lower <= shift.estimate <= shift.upper


@pytest.mark.parametrize("decimals", [0, 2, 9])
def test_selection_matches_sorting_on_large_samples(decimals):
    # 150 x 170 differences: the selection path, with and without heavy ties.
    rng = random.Random(decimals)
    canary = sorted(round(rng.gauss(0.2, 3), decimals) for _ in range(150))
    stable = sorted(round(rng.gauss(0.0, 3), decimals) for _ in range(170))
    differences = sorted(a - b for a in canary for b in stable)
    ranks = [0, 1, 4000, len(differences) // 2, len(differences) - 1]
    assert _select(canary, stable, ranks) == [differences[k] for k in ranks]
    assert hodges_lehmann(canary, stable).estimate == statistics.median(differences)


def test_interval_is_the_set_of_shifts_the_test_does_not_reject():
    rng = random.Random(3)
    canary = [rng.gauss(1.0, 1) for _ in range(25)]
    stable = [rng.gauss(0.0, 1) for _ in range(30)]
    shift = hodges_lehmann(canary, stable, confidence=0.95)
    alpha = 0.05

    def p_at(d: float) -> float:
        return mann_whitney([x - d for x in canary], stable).p_value

    eps = 1e-9
    assert p_at(shift.lower + eps) >= alpha
    assert p_at(shift.upper - eps) >= alpha
    assert p_at(shift.lower - eps) < alpha
    assert p_at(shift.upper + eps) < alpha


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0]), min_size=2, max_size=60),
    st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.0, 1.0]), min_size=2, max_size=60),
)
def test_an_end_is_open_exactly_when_scipy_rejects_the_shift_there(canary, stable):
    # Tied samples (mostly zeros, like per-window error rates): the ends are pairwise
    # differences, and an end is open when the one-sided test at the end rejects it
    # (scipy, tie-corrected at that shift, each side at half the two-sided level).
    shift = hodges_lehmann(canary, stable, confidence=0.95)
    for end, alternative, is_open in (
        (shift.lower, "greater", shift.lower_open),
        (shift.upper, "less", shift.upper_open),
    ):
        _, p_value = scipy_p([x - end for x in canary], stable, alternative)
        if not math.isclose(p_value, 0.025, rel_tol=1e-9):
            assert is_open is (p_value < 0.025)


def test_mostly_zero_samples_give_a_zero_interval_open_below():
    canary = ([0.0] * 11 + [0.02] * 9) * 10
    stable = ([0.0] * 19 + [0.02]) * 10
    shift = hodges_lehmann(canary, stable, confidence=0.98)
    assert (shift.lower, shift.estimate, shift.upper) == (0.0, 0.0, 0.0)
    assert (shift.lower_open, shift.upper_open) == (True, False)
    assert shift.excludes_zero()
    assert scipy_p(canary, stable, "greater")[1] < 1e-10


@settings(max_examples=100, deadline=None)
@given(samples_with_ties, samples_with_ties)
def test_cles_is_scipys_u_over_the_pairs(canary, stable):
    u, _ = scipy_p([float(v) for v in canary], [float(v) for v in stable], "two-sided")
    expected = u / (len(canary) * len(stable))
    assert mann_whitney(canary, stable).cles == pytest.approx(expected)


def test_interval_covers_the_true_shift_about_as_often_as_promised():
    # 300 seeded runs at 98%: binomial sd is 0.8%, so [0.95, 1.0] is a loose band.
    rng = random.Random(11)
    covered = 0
    runs = 300
    for _ in range(runs):
        canary = [rng.expovariate(1.0) + 0.3 for _ in range(40)]
        stable = [rng.expovariate(1.0) for _ in range(50)]
        shift = hodges_lehmann(canary, stable, confidence=0.98)
        covered += shift.lower <= 0.3 <= shift.upper
    assert 0.95 <= covered / runs <= 1.0


# --- Hodges-Lehmann on histograms -------------------------------------------------------


def test_histogram_shift_recovers_a_whole_bucket_shift():
    stable = LatencyHistogram.from_counts({-42: 10, -41: 40, -40: 60, -39: 30, -38: 5})
    canary = LatencyHistogram.from_counts({-37: 10, -36: 40, -35: 60, -34: 30, -33: 5})
    shift = hodges_lehmann_histograms(canary, stable)
    assert shift.estimate == pytest.approx(5.0, abs=1e-6)
    assert shift.lower < 5.0 < shift.upper
    assert bucket_ratio(8.0) == 2.0


def test_identical_histograms_have_no_shift():
    histogram = LatencyHistogram.from_counts({-42: 10, -41: 40, -40: 60, -39: 30})
    shift = hodges_lehmann_histograms(histogram, histogram)
    assert shift.estimate == pytest.approx(0.0, abs=1e-6)
    assert shift.lower < 0 < shift.upper
    assert shift.lower == pytest.approx(-shift.upper, abs=1e-6)


def test_histogram_interval_ends_are_where_the_test_crosses_the_critical_value():
    rng = random.Random(5)
    stable = LatencyHistogram.from_samples(rng.lognormvariate(-3, 0.5) for _ in range(2000))
    canary = LatencyHistogram.from_samples(rng.lognormvariate(-2.9, 0.5) for _ in range(300))
    shift = hodges_lehmann_histograms(canary, stable, confidence=0.98)
    # Past the whole-bucket points around each end, the tied-index test rejects.
    outside_low, outside_high = math.floor(shift.lower), math.ceil(shift.upper)
    for k in (outside_low, outside_high):
        moved = LatencyHistogram.from_counts({i - k: n for i, n in canary.items()})
        assert mann_whitney_histograms(moved, stable).p_value < 0.02 * 1.5


def test_histogram_interval_covers_a_latency_ratio():
    # Lognormal latencies, canary 20% slower; the interval (as a ratio) covers 1.2.
    rng = random.Random(2)
    covered, runs = 0, 100
    for _ in range(runs):
        stable = LatencyHistogram.from_samples(rng.lognormvariate(-3, 0.6) for _ in range(800))
        canary = LatencyHistogram.from_samples(
            1.2 * rng.lognormvariate(-3, 0.6) for _ in range(200)
        )
        shift = hodges_lehmann_histograms(canary, stable, confidence=0.98)
        covered += bucket_ratio(shift.lower) <= 1.2 <= bucket_ratio(shift.upper)
    assert covered / runs >= 0.93


# --- validation -------------------------------------------------------------------------


def test_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match="alternative"):
        mann_whitney([1.0], [2.0], alternative="bigger")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"canary\[1\]"):
        mann_whitney([1.0, math.nan], [2.0])
    with pytest.raises(ConfigError, match="stable"):
        mann_whitney([1.0], [])
    with pytest.raises(ConfigError, match="confidence"):
        hodges_lehmann([1.0], [2.0], confidence=1.5)
    with pytest.raises(ConfigError, match="canary"):
        mann_whitney_histograms(LatencyHistogram.empty(), LatencyHistogram.from_samples([0.1]))
