from __future__ import annotations

import math
import statistics
from typing import Any

import anyio
import pytest

from canarykit import (
    Arm,
    ArmStats,
    ConfigError,
    LatencyHistogram,
    Observation,
    TrafficSplit,
    Window,
)
from canarykit.testing import (
    SCENARIOS,
    Regression,
    ScriptedMetrics,
    StepChange,
    _scripted,
    regression,
    step_change,
)

K = 4.0  # Monte-Carlo tolerance, in standard errors: a false failure has odds ~1e-4 per check
BUCKET = 2.0 ** (1 / 8)


def windows(n: int, percent: float, *, length: float = 10.0, start: float = 0.0) -> list[Window]:
    split = TrafficSplit(canary_percent=percent)
    return [
        Window(start=start + length * i, end=start + length * (i + 1), split=split)
        for i in range(n)
    ]


def observe_all(metrics: ScriptedMetrics, ws: list[Window]) -> list[Observation]:
    return [metrics.observe(w) for w in ws]


def pooled(observations: list[Observation], arm: Arm) -> LatencyHistogram:
    total = LatencyHistogram.empty()
    for obs in observations:
        latency = obs.arm(arm).latency
        assert latency is not None
        total = total + latency
    return total


def assert_within(actual: float, expected: float, standard_error: float) -> None:
    assert abs(actual - expected) <= K * standard_error, (actual, expected, standard_error)


def lognormal_quantile(median: float, sigma: float, z: float) -> float:
    return median * math.exp(z * sigma)


@pytest.fixture(scope="module")
def healthy_run() -> list[Observation]:
    """2,000 windows of 10 s at 100 requests/s with the canary at 10%."""
    return observe_all(ScriptedMetrics(seed=11), windows(2000, 10.0))


# -- traffic, errors, latency: Monte-Carlo checks -----------------------------------------


@pytest.mark.parametrize(("arm", "expected"), [(Arm.STABLE, 900.0), (Arm.CANARY, 100.0)])
def test_requests_are_poisson_with_mean_rate_times_duration_times_share(
    healthy_run: list[Observation], arm: Arm, expected: float
) -> None:
    counts = [obs.arm(arm).requests for obs in healthy_run]
    n = len(counts)
    assert_within(statistics.fmean(counts), expected, math.sqrt(expected / n))
    # Poisson: the variance equals the mean (standard error of a variance ~ var * sqrt(2/n)).
    assert_within(statistics.variance(counts), expected, expected * math.sqrt(2 / n))


@pytest.mark.parametrize("arm", [Arm.STABLE, Arm.CANARY])
def test_errors_are_binomial_in_the_requests(healthy_run: list[Observation], arm: Arm) -> None:
    requests = sum(obs.arm(arm).requests for obs in healthy_run)
    errors = [obs.arm(arm).errors for obs in healthy_run]
    assert_within(sum(errors) / requests, 0.01, math.sqrt(0.01 * 0.99 / requests))
    # Binomial thinning of a Poisson count is Poisson again: variance = mean.
    mean = statistics.fmean(errors)
    assert_within(statistics.variance(errors), mean, mean * math.sqrt(2 / len(errors)) + 0.1)


def test_every_latency_histogram_counts_exactly_the_requests(
    healthy_run: list[Observation],
) -> None:
    for obs in healthy_run:
        for arm in (Arm.STABLE, Arm.CANARY):
            stats = obs.arm(arm)
            assert stats.latency is not None
            assert stats.latency.count == stats.requests


@pytest.mark.parametrize(
    ("z", "q"), [(0.0, 0.5), (1.6448536269514722, 0.95), (2.3263478740408408, 0.99)]
)
def test_pooled_latency_quantiles_are_within_one_bucket_of_the_lognormal(
    healthy_run: list[Observation], z: float, q: float
) -> None:
    expected = lognormal_quantile(0.05, 0.25, z)
    for arm in (Arm.STABLE, Arm.CANARY):
        estimate = pooled(healthy_run, arm).quantile(q)
        assert estimate is not None
        assert expected / BUCKET <= estimate <= expected * BUCKET


def test_latency_sum_estimates_the_lognormal_mean(healthy_run: list[Observation]) -> None:
    h = pooled(healthy_run, Arm.STABLE)
    true_mean = 0.05 * math.exp(0.25**2 / 2)
    true_sd = true_mean * math.sqrt(math.exp(0.25**2) - 1)
    assert h.mean is not None
    assert_within(h.mean, true_mean, true_sd / math.sqrt(h.count))


@pytest.mark.parametrize("percent", [1.0, 5.0, 25.0, 50.0, 90.0])
def test_canary_traffic_is_proportional_to_the_weight(percent: float) -> None:
    observations = observe_all(ScriptedMetrics(seed=5), windows(400, percent))
    n = len(observations)
    canary = 1000.0 * percent / 100
    stable = 1000.0 - canary
    assert_within(
        statistics.fmean(o.canary.requests for o in observations), canary, math.sqrt(canary / n)
    )
    assert_within(
        statistics.fmean(o.stable.requests for o in observations), stable, math.sqrt(stable / n)
    )


def test_no_weight_means_no_traffic_and_an_empty_histogram() -> None:
    obs = ScriptedMetrics().observe(windows(1, 0.0)[0])
    assert obs.canary == ArmStats(requests=0, errors=0, latency=LatencyHistogram.empty())
    assert obs.value(Arm.CANARY, "error_rate") is None
    assert obs.value(Arm.CANARY, "p99") is None
    full = ScriptedMetrics().observe(windows(1, 100.0)[0])
    assert full.stable.requests == 0
    assert full.canary.requests > 0


@pytest.mark.parametrize(
    "metrics",
    [
        ScriptedMetrics(latency_sigma=0.0),
        ScriptedMetrics(requests_per_second=0.05),
        ScriptedMetrics(latency_median=2e-6, latency_sigma=3.0),
        ScriptedMetrics(latency_median=20_000.0, latency_sigma=1.0),
        ScriptedMetrics(error_rate=1.0),
        ScriptedMetrics(error_rate=0.0),
    ],
    ids=["sigma0", "trickle", "clamped-low", "clamped-high", "all-errors", "no-errors"],
)
def test_odd_settings_keep_histogram_totals_and_error_bounds(metrics: ScriptedMetrics) -> None:
    for obs in observe_all(metrics, windows(30, 30.0)):
        for stats in (obs.stable, obs.canary):
            assert stats.latency is not None
            assert stats.latency.count == stats.requests
            assert 0 <= stats.errors <= stats.requests
    if metrics.error_rate == 1.0:
        assert obs.canary.errors == obs.canary.requests
    if metrics.latency_sigma == 0.0:
        assert len(obs.stable.latency.counts) == 1  # type: ignore[union-attr]
        assert obs.stable.mean_latency == pytest.approx(0.05)


def test_very_high_traffic_uses_the_rejection_samplers_and_stays_unbiased() -> None:
    # 100,000 requests/s: buckets expect > 2,500 requests (PTRS), errors n*p*q > 2,500 (BTRS).
    observations = observe_all(
        ScriptedMetrics(requests_per_second=100_000.0, error_rate=0.3, seed=2), windows(40, 10.0)
    )
    n = len(observations)
    assert_within(
        statistics.fmean(o.stable.requests for o in observations), 900_000, math.sqrt(900_000 / n)
    )
    requests = sum(o.stable.requests for o in observations)
    errors = sum(o.stable.errors for o in observations)
    assert_within(errors / requests, 0.3, math.sqrt(0.21 / requests))
    for obs in observations:
        assert obs.stable.latency.count == obs.stable.requests  # type: ignore[union-attr]


# -- determinism ----------------------------------------------------------------------------


def test_a_window_gives_the_same_observation_whatever_was_collected_before() -> None:
    ws = windows(20, 10.0)
    first = observe_all(ScriptedMetrics(seed=3), ws)
    backwards = observe_all(ScriptedMetrics(seed=3), ws[::-1])[::-1]
    assert first == backwards
    # Not even the samplers' caches matter.
    for cached in (_scripted._arm_plan, _scripted._poisson_table, _scripted._binomial_table):
        cached.cache_clear()
    assert observe_all(ScriptedMetrics(seed=3), ws[5:10]) == first[5:10]


def test_seeds_and_windows_change_the_data() -> None:
    w = windows(2, 10.0)
    assert ScriptedMetrics(seed=1).observe(w[0]) != ScriptedMetrics(seed=2).observe(w[0])
    assert ScriptedMetrics(seed=-1).observe(w[0]) != ScriptedMetrics(seed=1).observe(w[0])
    a, b = ScriptedMetrics(seed=1).observe(w[0]), ScriptedMetrics(seed=1).observe(w[1])
    assert (a.stable.requests, a.stable.latency) != (b.stable.requests, b.stable.latency)


def test_collect_is_the_async_metrics_source_method() -> None:
    metrics = ScriptedMetrics(seed=9)
    window = windows(1, 10.0)[0]

    async def main() -> Observation:
        return await metrics.collect(window)

    assert anyio.run(main) == metrics.observe(window)


# -- rates as functions ---------------------------------------------------------------------


def test_rate_functions_get_the_window_midpoint_arm_and_percent() -> None:
    calls: list[tuple[float, Arm, float]] = []

    def rps(t: float, arm: Arm, percent: float) -> float:
        calls.append((t, arm, percent))
        return 100.0

    ScriptedMetrics(requests_per_second=rps).observe(
        Window(start=290.0, end=300.0, split=TrafficSplit(canary_percent=25))
    )
    assert calls == [(295.0, Arm.STABLE, 25.0), (295.0, Arm.CANARY, 25.0)]


def test_gauges_are_reported_per_arm_without_noise() -> None:
    metrics = ScriptedMetrics(
        gauges={
            "cpu": step_change(at=0.0, before=0.3, after=0.6),
            "weight": lambda t, arm, percent: percent,
            "broken": math.nan,
        }
    )
    obs = metrics.observe(windows(1, 20.0)[0])
    assert obs.value(Arm.CANARY, "cpu") == 0.6
    assert obs.value(Arm.STABLE, "cpu") == 0.3
    assert obs.value(Arm.STABLE, "weight") == 20.0
    assert obs.value(Arm.CANARY, "broken") is None


def test_an_error_rate_regression_shows_in_the_canary_only_after_it_starts() -> None:
    metrics = ScriptedMetrics(error_rate=regression(at=300.0, base=0.01, factor=5.0), seed=4)
    before = observe_all(metrics, windows(30, 10.0))  # midpoints 5..295 s
    after = observe_all(metrics, windows(300, 10.0, start=300.0))
    for observations, canary_rate in ((before, 0.01), (after, 0.05)):
        for arm, rate in ((Arm.CANARY, canary_rate), (Arm.STABLE, 0.01)):
            requests = sum(o.arm(arm).requests for o in observations)
            errors = sum(o.arm(arm).errors for o in observations)
            assert_within(errors / requests, rate, math.sqrt(rate * (1 - rate) / requests))


def test_a_latency_regression_moves_the_canary_median() -> None:
    metrics = SCENARIOS["latency"](seed=8)
    after = observe_all(metrics, windows(200, 10.0, start=300.0))
    canary, stable = (
        pooled(after, Arm.CANARY).quantile(0.5),
        pooled(after, Arm.STABLE).quantile(0.5),
    )
    assert canary is not None and stable is not None
    assert 0.075 / BUCKET <= canary <= 0.075 * BUCKET
    assert 0.05 / BUCKET <= stable <= 0.05 * BUCKET


def test_step_change_switches_one_arm_at_the_given_time() -> None:
    rate = step_change(at=300.0, before=0.01, after=0.05)
    assert rate(299.999, Arm.CANARY, 10.0) == 0.01
    assert rate(300.0, Arm.CANARY, 10.0) == 0.05
    assert rate(1e9, Arm.STABLE, 10.0) == 0.01
    stable_rate = step_change(300, 1, 2, Arm.STABLE)
    assert stable_rate(400.0, Arm.STABLE, 5.0) == 2.0
    assert stable_rate(400.0, Arm.CANARY, 5.0) == 1.0
    assert repr(rate) == "StepChange(at=300.0, before=0.01, after=0.05, arm=Arm.CANARY)"
    assert isinstance(rate, StepChange)


def test_regression_is_a_step_change_by_a_factor() -> None:
    rate = regression(at=60.0, base=0.02, factor=3.0)
    same = step_change(60.0, 0.02, 0.02 * 3.0)
    for t in (0.0, 59.0, 60.0, 1000.0):
        for arm in (Arm.STABLE, Arm.CANARY):
            assert rate(t, arm, 10.0) == same(t, arm, 10.0)
    assert repr(rate) == "Regression(at=60.0, base=0.02, factor=3.0, arm=Arm.CANARY)"
    assert isinstance(rate, Regression)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: step_change(math.nan, 1.0, 2.0), "at"),
        (lambda: step_change(0.0, "1", 2.0), "before"),  # type: ignore[arg-type]
        (lambda: step_change(0.0, 1.0, math.inf), "after"),
        (lambda: step_change(0.0, 1.0, 2.0, "canary"), "arm"),  # type: ignore[arg-type]
        (lambda: regression(0.0, 1.0, math.nan), "factor"),
        (lambda: regression(0.0, True, 2.0), "base"),
    ],
)
def test_invalid_rate_helpers_name_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests_per_second": -1.0}, "requests_per_second"),
        ({"requests_per_second": math.inf}, "requests_per_second"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": "1%"}, "error_rate"),
        ({"latency_median": 0.0}, "latency_median"),
        ({"latency_sigma": -0.1}, "latency_sigma"),
        ({"latency_sigma": 11.0}, "latency_sigma"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"gauges": {"cpu": "high"}}, "gauges['cpu']"),
        ({"gauges": {"p99": 0.1}}, "gauges['p99']"),
        ({"gauges": [("cpu", 1.0)]}, "gauges"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ScriptedMetrics(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"error_rate": lambda t, arm, p: 2.0}, "error_rate"),
        ({"requests_per_second": lambda t, arm, p: -5.0}, "requests_per_second"),
        ({"latency_median": lambda t, arm, p: math.nan}, "latency_median"),
        ({"latency_sigma": lambda t, arm, p: -1.0}, "latency_sigma"),
        ({"gauges": {"cpu": lambda t, arm, p: "high"}}, "gauges['cpu']"),
    ],
)
def test_bad_values_from_rate_functions_are_reported_when_observed(
    kwargs: dict[str, Any], field: str
) -> None:
    metrics = ScriptedMetrics(**kwargs)
    with pytest.raises(ConfigError) as info:
        metrics.observe(windows(1, 10.0)[0])
    assert info.value.field == field


def test_observe_refuses_anything_but_a_window() -> None:
    with pytest.raises(ConfigError) as info:
        ScriptedMetrics().observe((0.0, 10.0))  # type: ignore[arg-type]
    assert info.value.field == "window"


def test_repr_is_readable() -> None:
    assert repr(ScriptedMetrics(error_rate=regression(at=300.0, base=0.01, factor=2.0))) == (
        "ScriptedMetrics(requests_per_second=100.0, error_rate=Regression(at=300.0, base=0.01, "
        "factor=2.0, arm=Arm.CANARY), latency_median=0.05, latency_sigma=0.25, gauges={}, "
        "header_share=0.5, seed=0)"
    )


# -- scenarios ---------------------------------------------------------------------------------


def test_scenarios_are_seeded_factories() -> None:
    assert set(SCENARIOS) == {"healthy", "errors", "latency"}
    for factory in SCENARIOS.values():
        metrics = factory(seed=12)
        assert isinstance(metrics, ScriptedMetrics)
        assert metrics.seed == 12


def test_scenarios_describe_the_named_regressions() -> None:
    healthy, errors, latency = (
        SCENARIOS[name](seed=0) for name in ("healthy", "errors", "latency")
    )
    assert healthy.error_rate == 0.01
    assert healthy.latency_median == 0.05
    rate = errors.error_rate
    assert callable(rate)
    assert (rate(299.0, Arm.CANARY, 10.0), rate(300.0, Arm.CANARY, 10.0)) == (0.01, 0.05)
    assert rate(300.0, Arm.STABLE, 10.0) == 0.01
    median = latency.latency_median
    assert callable(median)
    assert median(300.0, Arm.CANARY, 10.0) == pytest.approx(0.075)
    assert median(300.0, Arm.STABLE, 10.0) == 0.05
