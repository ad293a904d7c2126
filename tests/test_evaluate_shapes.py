"""The traffic shapes of `Scenario`: bursts, stalls, drift, differences that are not the release.

Each test draws windows through `evaluate` with a recording decider and checks the drawn
traffic against the shape's definition, with fixed seeds and stated tolerances.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import attrs
import pytest

import canarykit as ck
from canarykit import ConfigError, Observation

# Imports internals on purpose: the latency histogram's bucket layout.
from canarykit._histogram import MAX_INDEX, bucket_bounds, bucket_index
from canarykit._verdict import Judgement, Verdict, VerdictKind
from canarykit.testing import Scenario as PublicScenario
from canarykit.testing._evaluate import (
    InjectedRegression,
    Scenario,
    _shifted_buckets,
    evaluate,
    hold_plan,
)


@attrs.define
class Recorder:
    """Records every observation; fails the window ending at `fail_at` and later ones."""

    fail_at: float = math.inf
    reads_latency: bool = False
    seen: list[Observation] = attrs.field(factory=list)

    def initial_state(self) -> int:
        return 0

    def judge(self, state: Any, observation: Observation) -> Judgement:
        self.seen.append(observation)
        kind = VerdictKind.FAIL if observation.end >= self.fail_at else VerdictKind.PASS
        return Judgement(Verdict(kind=kind, reason="scripted"), state + 1)


def _windows(
    scenario: Scenario,
    *,
    latency: bool,
    runs: int,
    seconds: float = 600.0,
    percent: float = 50.0,
    seed: int = 1,
) -> list[Observation]:
    recorder = Recorder(reads_latency=latency)
    plan = hold_plan(percent, seconds, analysis_interval=10)
    evaluate(plan, recorder, scenario, runs=runs, seed=seed)
    return recorder.seen


def _mean_latency(arm: Any) -> float:
    return float(arm.latency.sum / arm.latency.count)


# ---------------------------------------------------------------------------- public


def test_scenario_is_public_with_the_shapes() -> None:
    assert PublicScenario is Scenario
    fields = attrs.fields_dict(Scenario)
    for name in (
        "error_burst_max",
        "stall_fraction",
        "stall_share",
        "stall_seconds",
        "latency_drift",
        "error_drift",
        "drift_seconds",
        "canary_error_factor",
        "canary_latency_factor",
    ):
        assert name in fields
        assert f"`{name}`" in (Scenario.__doc__ or "")


def test_shapes_off_draw_exactly_what_the_evaluator_drew_before_them() -> None:
    # Seeded figures from the evaluator before the shapes existed: a scenario with every
    # shape off must consume the generator in the same order, so old seeds still hold.
    # (Taken once the evaluator, like the runner, collects the window that ends with the
    # hold: 20 windows in 200 s, one more than before, drawn after the same 19.)
    expected = {
        (False, False): ([(2015, 31), (2104, 20)], 36005, 359),
        (False, True): ([(2389, 22), (1722, 13)], 35853, 345),
        (True, False): ([(2013, 18), (1963, 23)], 36178, 380),
        (True, True): ([(2360, 29), (1619, 14)], 35919, 361),
    }
    for (latency, cycled), (runs, stable_requests, stable_errors) in expected.items():
        scenario = (
            Scenario(
                daily_amplitude=0.5,
                daily_period=300,
                regression=InjectedRegression("latency", 1.2, at=95),
            )
            if cycled
            else Scenario()
        )
        recorder = Recorder(reads_latency=latency)
        result = evaluate(hold_plan(10, 200), recorder, scenario, runs=2, seed=7)
        assert [(r.canary_requests, r.canary_errors) for r in result.results] == runs
        assert sum(o.stable.requests for o in recorder.seen) == stable_requests
        assert sum(o.stable.errors for o in recorder.seen) == stable_errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("error_burst_max", 0),
        ("error_burst_max", 2.5),
        ("error_burst_max", True),
        ("error_burst_max", 1001),
        ("stall_fraction", -0.1),
        ("stall_fraction", 1.5),
        ("stall_share", 0.0),
        ("stall_share", 2.0),
        ("stall_seconds", -1.0),
        ("stall_seconds", math.nan),
        ("latency_drift", 0.0),
        ("error_drift", -1.0),
        ("error_drift", math.inf),
        ("drift_seconds", 0.0),
        ("drift_seconds", "1h"),
        ("canary_error_factor", 0.0),
        ("canary_latency_factor", -2.0),
    ],
)
def test_bad_shapes_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        Scenario(**{field: value})
    assert caught.value.field == field


def test_error_rates_above_one_are_refused_naming_what_pushed_them() -> None:
    with pytest.raises(ConfigError) as caught:
        Scenario(error_rate=0.5, error_drift=3.0)
    assert caught.value.field == "error_drift"
    with pytest.raises(ConfigError) as caught:
        Scenario(error_rate=0.5, error_drift=1.5, canary_error_factor=1.5)
    assert caught.value.field == "canary_error_factor"
    with pytest.raises(ConfigError) as caught:
        Scenario(
            error_rate=0.4,
            canary_error_factor=1.2,
            regression=InjectedRegression("errors", 2.5),
        )
    assert caught.value.field == "regression.factor"
    # A drift below 1 never raises the rate: only the start counts.
    Scenario(error_rate=1.0, error_drift=0.5)


def test_describe_and_to_json_carry_the_shapes() -> None:
    scenario = Scenario(
        error_burst_max=10,
        stall_fraction=0.1,
        latency_drift=1.3,
        canary_latency_factor=1.03,
        canary_error_factor=1.05,
    )
    text = scenario.describe()
    assert "errors in bursts of 1 to 10" in text
    assert "stalls in 10% of windows per arm (10% of requests +300 ms)" in text
    assert "drifting to latency x1.3 over the plan" in text
    assert "canary latency x1.03 and errors x1.05 not from the release" in text
    assert text.endswith("regression: none (A/A)")
    data = scenario.to_json()
    assert data["error_burst_max"] == 10 and data["latency_drift"] == 1.3
    assert data["drift_seconds"] is None and data["canary_error_factor"] == 1.05
    assert "bursts" not in Scenario().describe() and "stalls" not in Scenario().describe()


# ---------------------------------------------------------------------------- bursts


@pytest.mark.parametrize("latency", [False, True])
def test_bursts_count_each_failure_several_times(latency: bool) -> None:
    # Failures are Poisson at p per request, each counted as k ~ U{1..10} failed
    # requests: the errors of an arm in a window are compound Poisson, with 5.5 p failed
    # requests per original request (a share 5.5 p / (1 + 4.5 p) of all requests) and
    # variance / mean = E[k^2] / E[k] = 38.5 / 5.5 = 7 (1 without bursts).
    # 6,000 windows per arm: the dispersion's standard error is about 5%.
    seen = _windows(Scenario(error_burst_max=10), latency=latency, runs=100)
    for arm in ("stable", "canary"):
        errors = [getattr(o, arm).errors for o in seen]
        requests = sum(getattr(o, arm).requests for o in seen)
        assert sum(errors) / requests == pytest.approx(0.055 / 1.045, rel=0.06)
        assert statistics.variance(errors) / statistics.mean(errors) == pytest.approx(7, rel=0.2)
        assert all(getattr(o, arm).errors <= getattr(o, arm).requests for o in seen)
    # Bursts happen on the arm where they began: the arms' counts stay uncorrelated.
    pairs = [(o.stable.errors, o.canary.errors) for o in seen]
    assert abs(statistics.correlation(*zip(*pairs, strict=True))) < 0.05
    plain = _windows(Scenario(), latency=latency, runs=100)
    canary = [o.canary.errors for o in plain]
    assert statistics.variance(canary) / statistics.mean(canary) == pytest.approx(1, rel=0.1)


def test_burst_sizes_are_uniform_from_one_to_the_maximum() -> None:
    # At a tiny rate (0.02 events a window) a window holds at most one event but
    # rarely, so its error count is one k. About 1,100 events: the shares' standard
    # error is 0.013.
    scenario = Scenario(error_rate=0.00004, error_burst_max=4)
    seen = _windows(scenario, latency=False, runs=1000, seconds=300)
    sizes = [a.errors for o in seen for a in (o.stable, o.canary) if a.errors]
    assert len(sizes) > 800
    counts = [sizes.count(k) for k in range(1, 6)]
    assert counts[4] <= len(sizes) * 0.02  # two events in one window, rarely
    share = [c / len(sizes) for c in counts[:4]]
    assert share == pytest.approx([0.25] * 4, abs=0.05)


def test_an_error_regression_under_bursts_doubles_the_events() -> None:
    scenario = Scenario(error_burst_max=10, regression=InjectedRegression("errors", 2.0))
    seen = _windows(scenario, latency=False, runs=100)
    stable = sum(o.stable.errors for o in seen) / sum(o.stable.requests for o in seen)
    canary = sum(o.canary.errors for o in seen) / sum(o.canary.requests for o in seen)
    assert canary / stable == pytest.approx(2.0, rel=0.1)


# ---------------------------------------------------------------------------- stalls


def test_stalls_slow_a_share_of_requests_in_a_share_of_windows_per_arm() -> None:
    # A narrow latency (50 ms, sigma 0.1: never above 100 ms in practice) makes stalled
    # requests (+300 ms) plain to see: in a stalled window about 20% of the arm's
    # requests are over 250 ms, elsewhere none.
    scenario = Scenario(
        latency_median=0.05,
        latency_sigma=0.1,
        stall_fraction=0.3,
        stall_share=0.2,
        stall_seconds=0.3,
    )
    seen = _windows(scenario, latency=True, runs=40)
    flags: dict[str, list[bool]] = {"stable": [], "canary": []}
    for observation in seen:
        for arm in ("stable", "canary"):
            stats = getattr(observation, arm)
            histogram = stats.latency
            assert histogram.count == stats.requests
            slow = sum(c for i, c in histogram.items() if bucket_bounds(i)[0] >= 0.25)
            share = slow / stats.requests
            assert share < 0.45
            assert slow == 0 or share > 0.05  # a window stalls whole, or not at all
            flags[arm].append(slow > 0)
    windows = len(seen)  # 2,360: the share of stalled windows within 0.03 of 0.3
    for arm in ("stable", "canary"):
        assert sum(flags[arm]) / windows == pytest.approx(0.3, abs=0.03)
    both = sum(s and c for s, c in zip(flags["stable"], flags["canary"], strict=True))
    assert both / windows == pytest.approx(0.09, abs=0.025)  # independent per arm
    stalled = [o.stable for o, s in zip(seen, flags["stable"], strict=True) if s]
    slow = sum(sum(c for i, c in a.latency.items() if bucket_bounds(i)[0] >= 0.25) for a in stalled)
    assert slow / sum(a.requests for a in stalled) == pytest.approx(0.2, rel=0.05)
    # The sum of latencies counts the extra 300 ms of each stalled request.
    mean = 0.05 * math.exp(0.005)
    total = sum(a.latency.sum for a in stalled)
    requests = sum(a.requests for a in stalled)
    assert total == pytest.approx(requests * mean + slow * 0.3, rel=0.01)


def test_stalled_bucket_shares_match_direct_draws_of_latency_plus_the_stall() -> None:
    median, sigma, shift = 0.1, 0.5, 0.3
    low, shares, means = _shifted_buckets(median, sigma, shift)
    rng = random.Random(3)
    draws = 200_000
    counts: dict[int, int] = {}
    sums: dict[int, float] = {}
    for _ in range(draws):
        value = shift + rng.lognormvariate(math.log(median), sigma)
        index = bucket_index(value)
        counts[index] = counts.get(index, 0) + 1
        sums[index] = sums.get(index, 0.0) + value
    previous = 0.0
    for position, cumulative in enumerate(shares):
        index = low + position
        mass = cumulative - previous
        previous = cumulative
        expected = mass * draws
        observed = counts.get(index, 0)
        assert abs(observed - expected) < 5 * math.sqrt(expected) + 2
        lower, upper = bucket_bounds(index)
        assert lower - 1e-12 <= means[position] <= upper + 1e-12
        if observed > 1000:
            assert sums[index] / observed == pytest.approx(means[position], rel=2e-3)
    assert shares[-1] == 1.0
    assert sum(counts.values()) == draws
    assert min(counts) >= low and max(counts) < low + len(shares)
    # Without spread every stalled request lands in one bucket.
    assert _shifted_buckets(0.05, 0.0, 0.3) == (bucket_index(0.35), (1.0,), (0.35,))
    # The last bucket is open: it holds everything above its lower bound.
    last_low, last_shares, _ = _shifted_buckets(20000.0, 0.5, 1.0)
    assert last_low + len(last_shares) - 1 == MAX_INDEX
    floor = bucket_bounds(MAX_INDEX)[0] - 1.0
    above = 0.5 * math.erfc(math.log(floor / 20000.0) / 0.5 / math.sqrt(2))
    assert 1.0 - last_shares[-2] == pytest.approx(above, rel=1e-6)


def test_stalls_do_not_touch_error_counts() -> None:
    plain = _windows(Scenario(), latency=False, runs=5)
    stalled = _windows(Scenario(stall_fraction=1.0), latency=False, runs=5)
    assert [(o.canary.requests, o.canary.errors) for o in plain] == [
        (o.canary.requests, o.canary.errors) for o in stalled
    ]


# ---------------------------------------------------------------------------- drift


def _factor(observation: Observation, drift: float, seconds: float) -> float:
    middle = (observation.start + observation.end) / 2
    return 1 + (drift - 1) * min(1.0, middle / seconds)


def test_drift_rises_linearly_over_the_plan_in_both_arms() -> None:
    # Over a 1-hour hold both arms' latency and error rate rise to 1.3x, each window
    # drawn at the factor of its middle: the first 5 minutes average about 1.0125, the
    # last 5 about 1.287. 300,000 requests a part and arm: the mean latency's standard
    # error is 0.1%, the error rate's 1.8%.
    scenario = Scenario(latency_median=0.1, latency_sigma=0.5, latency_drift=1.3, error_drift=1.3)
    seen = _windows(scenario, latency=True, runs=20, seconds=3600, percent=50)
    early = [o for o in seen if o.end <= 300]
    late = [o for o in seen if o.start >= 3290]
    mean = 0.1 * math.exp(0.125)
    for arm in ("stable", "canary"):
        for part in (early, late):
            requests = sum(getattr(o, arm).requests for o in part)
            factor = sum(getattr(o, arm).requests * _factor(o, 1.3, 3600) for o in part) / requests
            latency = sum(getattr(o, arm).latency.sum for o in part)
            errors = sum(getattr(o, arm).errors for o in part)
            assert latency / requests == pytest.approx(mean * factor, rel=0.01)
            assert errors / requests == pytest.approx(0.01 * factor, rel=0.08)
    assert _factor(late[-1], 1.3, 3600) > 1.28


def test_drift_stops_rising_after_drift_seconds() -> None:
    scenario = Scenario(latency_median=0.1, latency_drift=1.5, drift_seconds=600)
    seen = _windows(scenario, latency=True, runs=20, seconds=1800, percent=50)
    mean = 0.1 * math.exp(0.25**2 / 2)
    after = [o for o in seen if o.start >= 600]
    latency = sum(o.stable.latency.sum + o.canary.latency.sum for o in after)
    requests = sum(o.stable.requests + o.canary.requests for o in after)
    assert latency / requests == pytest.approx(mean * 1.5, rel=0.005)


def test_drift_without_a_plan_length_spans_the_horizon() -> None:
    plan = ck.Plan(steps=[ck.SetWeight(50), ck.WaitForPromotion()], analysis_interval=10)
    recorder = Recorder(reads_latency=True)
    scenario = Scenario(latency_median=0.1, latency_drift=2.0)
    evaluate(plan, recorder, scenario, runs=10, seed=2, horizon=1000)
    mean = 0.1 * math.exp(0.25**2 / 2)
    last = [o for o in recorder.seen if o.start >= 900]
    requests = sum(o.stable.requests for o in last)
    factor = sum(o.stable.requests * _factor(o, 2.0, 1000) for o in last) / requests
    assert factor > 1.9
    ratio = sum(o.stable.latency.sum for o in last) / requests
    assert ratio == pytest.approx(mean * factor, rel=0.01)


# ---------------------------------------------------------------------------- not the release


def test_canary_differences_that_are_not_the_release() -> None:
    scenario = Scenario(
        latency_median=0.1, latency_sigma=0.5, canary_latency_factor=1.03, canary_error_factor=1.5
    )
    seen = _windows(scenario, latency=True, runs=60)

    def rate(arm: str) -> float:
        return sum(getattr(o, arm).errors for o in seen) / sum(
            getattr(o, arm).requests for o in seen
        )

    def latency(arm: str) -> float:
        total = sum(getattr(o, arm).latency.sum for o in seen)
        return total / sum(getattr(o, arm).requests for o in seen)

    assert rate("canary") / rate("stable") == pytest.approx(1.5, rel=0.06)
    assert latency("canary") / latency("stable") == pytest.approx(1.03, abs=0.006)


def test_a_rollback_for_a_difference_that_is_not_the_release_is_false() -> None:
    scenario = Scenario(canary_latency_factor=1.03, canary_error_factor=1.05)
    result = evaluate(hold_plan(10, 600), Recorder(fail_at=60.0), scenario, runs=4, seed=1)
    assert result.rolled_back == 4 and result.false_rollbacks == 4
    assert result.detect_rate is None


def test_a_regression_multiplies_on_top_of_the_canary_difference() -> None:
    # Baseline 25%, the canary's own difference 2x (50%), the release 2x on top (100%):
    # after 20 s every canary request fails; excess errors count from the canary's 50%.
    recorder = Recorder(fail_at=50.0)
    scenario = Scenario(
        error_rate=0.25,
        canary_error_factor=2.0,
        regression=InjectedRegression("errors", 2.0, at=20),
    )
    result = evaluate(hold_plan(50, 600), recorder, scenario, runs=1)
    [run] = result.results
    after = [o for o in recorder.seen if o.start >= 20]
    assert all(o.canary.errors == o.canary.requests for o in after)
    exposed = sum(o.canary.requests for o in after)
    assert run.exposed_requests == exposed
    assert run.expected_excess_errors == pytest.approx(exposed * 0.5)
    assert run.excess_errors == pytest.approx(exposed - exposed * 0.5)
    before = [o for o in recorder.seen if o.end <= 20]
    errors = sum(o.canary.errors for o in before)
    requests = sum(o.canary.requests for o in before)
    assert 0.3 < errors / requests < 0.7


# ---------------------------------------------------------------------------- daily cycle


def test_a_daily_cycle_as_long_as_the_rollout_swings_the_load_over_it() -> None:
    # Period = the 3-hour hold: each run sees the whole cycle once (its phase random),
    # so its traffic totals the mean rate, and the per-window counts follow
    # 1 + 0.7 sin(2 pi t / 3 h + phase): fitted, the amplitude comes back as 0.7.
    hold = 10800.0
    scenario = Scenario(daily_amplitude=0.7, daily_period=hold)
    recorder = Recorder()
    evaluate(hold_plan(10, hold), recorder, scenario, runs=3, seed=4)
    runs: list[list[Observation]] = [[]]
    for observation in recorder.seen:
        if runs[-1] and observation.start < runs[-1][-1].start:
            runs.append([])
        runs[-1].append(observation)
    assert len(runs) == 3
    omega = 2 * math.pi / hold
    for windows in runs:
        counts = [o.stable.requests + o.canary.requests for o in windows]
        # The judged windows cover [0, 10790): all but the last 10 s of the period.
        assert sum(counts) == pytest.approx(100 * hold, rel=0.01)
        mids = [(o.start + o.end) / 2 for o in windows]
        a = 2 * sum(c * math.sin(omega * t) for c, t in zip(counts, mids, strict=True))
        b = 2 * sum(c * math.cos(omega * t) for c, t in zip(counts, mids, strict=True))
        amplitude = math.hypot(a, b) / sum(counts)
        assert amplitude == pytest.approx(0.7, abs=0.02)
        assert max(counts) > 1.6 * 1000 and min(counts) < 0.4 * 1000
