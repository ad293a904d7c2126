from __future__ import annotations

import json
import math
import random

import pytest

from canarykit._errors import ConfigError
from canarykit._histogram import LatencyHistogram
from canarykit._observe import ArmStats, Observation, Window
from canarykit._protocols import Decider
from canarykit._split import TrafficSplit
from canarykit._verdict import VerdictKind
from canarykit.deciders._sequential import (
    SequentialErrors,
    SequentialLatency,
    band_width,
    sequential_errors,
    sequential_latency,
)
from canarykit.testing import ScriptedMetrics, regression

np = pytest.importorskip("numpy")


def observe(
    n_s: int,
    e_s: int,
    n_c: int,
    e_c: int,
    *,
    k: int = 0,
    stable_latency: LatencyHistogram | None = None,
    canary_latency: LatencyHistogram | None = None,
) -> Observation:
    return Observation(
        start=10.0 * k,
        end=10.0 * (k + 1),
        stable=ArmStats(requests=n_s, errors=e_s, latency=stable_latency),
        canary=ArmStats(requests=n_c, errors=e_c, latency=canary_latency),
    )


def direct_log_lr(theta: float, windows: list[tuple[int, int, int, int]]) -> float:
    """ln of the product of binomial likelihood ratios q(theta) vs p, straight from the pmf."""
    total = 0.0
    for n_s, e_s, n_c, e_c in windows:
        p = n_c / (n_s + n_c)
        q = theta * p / (theta * p + 1 - p)
        total += e_c * math.log(q / p) + e_s * math.log((1 - q) / (1 - p))
    return total


def run_errors(
    decider: SequentialErrors,
    seed: int,
    windows: int,
    factor: float = 1.0,
    percents: tuple[float, ...] = (10.0,),
) -> tuple[int | None, int | None]:
    """(first FAIL window, first early pass window), at 100 requests/s and 1% errors."""
    rng = np.random.default_rng(seed)
    share = np.array([percents[k * len(percents) // windows] for k in range(windows)]) / 100
    n_c = rng.poisson(1000 * share)
    n_s = rng.poisson(1000 * (1 - share))
    e_c = rng.binomial(n_c, 0.01 * factor)
    e_s = rng.binomial(n_s, 0.01)
    state = decider.initial_state()
    early = None
    for k in range(windows):
        obs = observe(int(n_s[k]), int(e_s[k]), int(n_c[k]), int(e_c[k]), k=k)
        judgement = decider.judge(state, obs)
        state = judgement.state
        if judgement.verdict.early_pass and early is None:
            early = k + 1
        if judgement.verdict.kind is VerdictKind.FAIL:
            return k + 1, early
    return None, early


# -- SequentialErrors: units -------------------------------------------------------------


def test_errors_is_a_decider_with_readable_repr() -> None:
    decider = sequential_errors()
    assert isinstance(decider, Decider)
    assert repr(decider) == (
        "SequentialErrors(metric='errors', alpha=0.01, min_ratio=1.05, max_ratio=20.0, "
        "points=30, min_errors=0, early_pass=False, margin=0.2)"
    )
    assert "alpha 0.01" in str(decider)


def test_errors_update_matches_direct_binomial_likelihood_ratio() -> None:
    # Canary shares that are multiples of 1/4096 are used exactly (no rounding).
    windows = [(3072, 20, 1024, 12), (2048, 5, 2048, 9), (3584, 30, 512, 4)]
    decider = SequentialErrors(points=7)
    state = decider.initial_state()
    for k, counts in enumerate(windows):
        state = decider.judge(state, observe(*counts, k=k)).state
    thetas = [1.05 * (20 / 1.05) ** (i / 6) for i in range(7)]
    for theta, value in zip(thetas, state["log_fail"], strict=True):
        assert value == pytest.approx(direct_log_lr(theta, windows), rel=1e-9, abs=1e-9)


def test_errors_rounding_of_the_split_is_conservative() -> None:
    windows = [(901, 9, 99, 3), (887, 12, 113, 2), (913, 7, 97, 1)]
    decider = SequentialErrors(points=10)
    state = decider.initial_state()
    for k, counts in enumerate(windows):
        state = decider.judge(state, observe(*counts, k=k)).state
    thetas = [1.05 * (20 / 1.05) ** (i / 9) for i in range(10)]
    for theta, value in zip(thetas, state["log_fail"], strict=True):
        exact = direct_log_lr(theta, windows)
        assert value <= exact + 1e-12
        # At most (e_s + e_c) (theta - 1) / 4096 / (1 + p (theta - 1)) lost per window.
        assert value == pytest.approx(exact, abs=0.03)


def test_errors_statistic_is_invariant_to_how_windows_split_traffic() -> None:
    # The same windows in another order, i.e. the split moving differently over time,
    # give the same evidence: each window is conditioned on its own split.
    windows = [(3072, 10, 1024, 6), (4000 - 2048, 8, 2048, 12), (4096 - 128, 40, 128, 3)]
    decider = SequentialErrors()
    forward = decider.initial_state()
    backward = decider.initial_state()
    for k, counts in enumerate(windows):
        forward = decider.judge(forward, observe(*counts, k=k)).state
    for k, counts in enumerate(reversed(windows)):
        backward = decider.judge(backward, observe(*counts, k=k)).state
    assert forward["log_fail"] == pytest.approx(backward["log_fail"], rel=1e-12)


def test_errors_window_without_canary_traffic_adds_no_evidence() -> None:
    decider = SequentialErrors()
    state = decider.judge(None, observe(1000, 10, 0, 0)).state
    assert state["log_fail"] == [0.0] * 30
    state = decider.judge(state, observe(0, 0, 1000, 30)).state  # canary at 100%
    assert state["log_fail"] == [0.0] * 30


def test_errors_no_data_is_not_yet_never_a_pass() -> None:
    decider = SequentialErrors()
    verdict = decider.judge(decider.initial_state(), observe(0, 0, 0, 0)).verdict
    assert verdict.kind is VerdictKind.NOT_YET
    assert "no canary requests" in verdict.reason
    verdict = decider.judge(None, observe(1000, 10, 0, 0)).verdict
    assert verdict.kind is VerdictKind.NOT_YET


def test_errors_min_errors_holds_back_a_verdict() -> None:
    decider = SequentialErrors(min_errors=20)
    judgement = decider.judge(None, observe(900, 5, 100, 1))
    assert judgement.verdict.kind is VerdictKind.NOT_YET
    assert "6 errors so far, 20 needed" in judgement.verdict.reason
    judgement = decider.judge(judgement.state, observe(900, 12, 100, 2, k=1))
    assert judgement.verdict.kind is VerdictKind.PASS


def test_errors_pass_reason_shows_ratio_and_evidence() -> None:
    verdict = SequentialErrors().judge(None, observe(900, 9, 100, 1)).verdict
    assert verdict.kind is VerdictKind.PASS
    assert not verdict.early_pass
    assert verdict.reason.startswith("errors: canary/stable rate ratio ~1, evidence ")
    assert "of 100 needed (1/100 canary, 9/900 stable)" in verdict.reason
    (metric,) = verdict.metrics
    assert metric.metric == "errors"
    assert metric.value == pytest.approx(1.0)


def test_errors_fail_is_sticky() -> None:
    decider = SequentialErrors()
    judgement = decider.judge(None, observe(900, 9, 100, 30))
    assert judgement.verdict.kind is VerdictKind.FAIL
    assert "shown above 1" in judgement.verdict.reason
    state = judgement.state
    for k in range(1, 30):
        judgement = decider.judge(state, observe(900, 9, 100, 0, k=k))
        state = judgement.state
        assert judgement.verdict.kind is VerdictKind.FAIL


def test_errors_state_round_trips_through_json() -> None:
    decider = SequentialErrors(early_pass=True)
    state = decider.initial_state()
    rng = random.Random(5)
    for k in range(20):
        counts = (900 + rng.randrange(50), rng.randrange(15), 100 + rng.randrange(20), 1)
        state = decider.judge(state, observe(*counts, k=k)).state
        reloaded = json.loads(json.dumps(state))
        assert reloaded == state
        obs = observe(905, 8, 104, 2, k=99)
        assert decider.judge(reloaded, obs) == decider.judge(state, obs)


def test_errors_counts_a_gauge_metric_per_request() -> None:
    decider = SequentialErrors(metric="timeouts")
    obs = Observation(
        start=0.0,
        end=10.0,
        stable=ArmStats(requests=900, gauges={"timeouts": 5.0}),
        canary=ArmStats(requests=100, gauges={"timeouts": 40.0}),
    )
    verdict = decider.judge(None, obs).verdict
    assert verdict.kind is VerdictKind.FAIL
    assert verdict.metrics[0].metric == "timeouts"
    # A window without the gauge is no data, never a pass.
    verdict = decider.judge(None, observe(900, 0, 100, 0)).verdict
    assert verdict.kind is VerdictKind.PASS or verdict.kind is VerdictKind.NOT_YET
    assert decider.judge(None, observe(0, 0, 0, 0)).verdict.kind is VerdictKind.NOT_YET


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": "0.01"}, "alpha"),
        ({"min_ratio": 1.0}, "min_ratio"),
        ({"max_ratio": 1.01}, "max_ratio"),
        ({"points": 0}, "points"),
        ({"points": 2.5}, "points"),
        ({"min_errors": -1}, "min_errors"),
        ({"margin": -0.1}, "margin"),
        ({"metric": ""}, "metric"),
        ({"early_pass": "yes"}, "early_pass"),
    ],
)
def test_errors_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SequentialErrors(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_errors_rejects_a_foreign_state() -> None:
    with pytest.raises(ConfigError) as caught:
        SequentialErrors().judge({"failed_checks": 0}, observe(900, 9, 100, 1))
    assert caught.value.field == "state"
    with pytest.raises(ConfigError):
        SequentialErrors(early_pass=True).judge(
            SequentialErrors().initial_state(), observe(900, 9, 100, 1)
        )


# -- SequentialErrors: Monte-Carlo -------------------------------------------------------


def test_errors_aa_false_rollbacks_stay_bounded() -> None:
    # 300 A/A rollouts of 30 minutes (180 windows) at alpha 0.01: the expected count is
    # at most 3; 9 or more has probability below 0.4% under Binomial(300, 0.01).
    decider = SequentialErrors()
    fails = sum(run_errors(decider, seed, 180)[0] is not None for seed in range(300))
    assert fails <= 8


def test_errors_aa_with_a_stepping_split_stays_bounded() -> None:
    decider = SequentialErrors()
    steps = (1.0, 5.0, 10.0, 25.0, 50.0)
    fails = sum(
        run_errors(decider, 1000 + s, 300, percents=steps)[0] is not None for s in range(150)
    )
    assert fails <= 6  # Binomial(150, 0.01): P(>= 7) < 0.1%


def test_errors_fivefold_rate_is_caught_within_minutes() -> None:
    decider = SequentialErrors()
    found = [run_errors(decider, 2000 + seed, 60, factor=5.0)[0] for seed in range(40)]
    assert all(k is not None for k in found)
    minutes = sorted(k * 10 / 60 for k in found if k is not None)
    assert minutes[len(minutes) // 2] <= 1.0
    assert minutes[-1] <= 5.0


def test_errors_doubled_rate_is_caught_in_most_runs() -> None:
    decider = SequentialErrors()
    found = [run_errors(decider, 3000 + seed, 90, factor=2.0)[0] for seed in range(40)]
    caught = sorted(k * 10 / 60 for k in found if k is not None)
    assert len(caught) >= 34  # within 15 minutes
    assert caught[len(found) // 2] <= 4.0


def test_errors_early_pass_on_aa_with_a_generous_margin() -> None:
    decider = SequentialErrors(early_pass=True, margin=1.0)
    early = [run_errors(decider, 4000 + seed, 180)[1] for seed in range(20)]
    assert sum(k is not None for k in early) >= 18


def test_errors_never_early_passes_a_doubled_rate() -> None:
    decider = SequentialErrors(early_pass=True, margin=0.5)
    for seed in range(40):
        assert run_errors(decider, 5000 + seed, 180, factor=2.0)[1] is None


# -- SequentialLatency -------------------------------------------------------------------


def histogram(samples: list[float]) -> LatencyHistogram:
    return LatencyHistogram.from_samples(samples)


def lognormal(rng: random.Random, n: int, median: float, sigma: float = 0.5) -> list[float]:
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


def test_band_width_matches_the_formula() -> None:
    t, alpha = 5000, 0.005
    expected = 0.85 * math.sqrt((math.log(math.log(math.e * t)) + 0.8 * math.log(1612 / alpha)) / t)
    assert band_width(t, alpha) == pytest.approx(expected)


def test_latency_is_a_decider_with_readable_repr() -> None:
    decider = sequential_latency()
    assert isinstance(decider, Decider)
    assert repr(decider) == (
        "SequentialLatency(alpha=0.01, quantiles=(0.5, 0.95, 0.99), margin=0.0, min_samples=100)"
    )


def test_latency_no_data_and_too_few_samples_are_not_yet() -> None:
    decider = SequentialLatency()
    verdict = decider.judge(decider.initial_state(), observe(0, 0, 0, 0)).verdict
    assert verdict.kind is VerdictKind.NOT_YET
    obs = observe(
        900, 0, 50, 0, stable_latency=histogram([0.1] * 900), canary_latency=histogram([0.1] * 50)
    )
    verdict = decider.judge(None, obs).verdict
    assert verdict.kind is VerdictKind.NOT_YET
    assert "50 canary, 900 stable latencies, 100 per arm needed" in verdict.reason


def test_latency_accumulates_histograms_on_a_common_range() -> None:
    decider = SequentialLatency()
    a = LatencyHistogram.from_counts({-30: 2, -28: 1})
    b = LatencyHistogram.from_counts({-25: 4})
    state = decider.judge(None, observe(3, 0, 4, 0, stable_latency=a, canary_latency=b)).state
    assert state["offset"] == -30
    assert state["stable"] == [2, 0, 1, 0, 0, 0]
    assert state["canary"] == [0, 0, 0, 0, 0, 4]
    c = LatencyHistogram.from_counts({-32: 1, -27: 1})
    state = decider.judge(state, observe(2, 0, 0, 0, stable_latency=c)).state
    assert state["offset"] == -32
    assert state["stable"] == [1, 0, 2, 0, 1, 1, 0, 0]
    assert state["canary"] == [0, 0, 0, 0, 0, 0, 0, 4]


def test_latency_clear_slowdown_fails_and_stays_failed() -> None:
    rng = random.Random(1)
    decider = SequentialLatency(quantiles=(0.5,))
    stable = histogram(lognormal(rng, 5000, 0.1))
    canary = histogram(lognormal(rng, 2000, 0.2))
    judgement = decider.judge(
        None, observe(5000, 0, 2000, 0, stable_latency=stable, canary_latency=canary)
    )
    assert judgement.verdict.kind is VerdictKind.FAIL
    assert judgement.verdict.reason.startswith("latency p50: canary >= ")
    assert judgement.verdict.metrics[0].metric == "latency p50"
    same = histogram(lognormal(rng, 2000, 0.1))
    for k in range(1, 5):
        judgement = decider.judge(
            judgement.state,
            observe(5000, 0, 2000, 0, k=k, stable_latency=same, canary_latency=same),
        )
        assert judgement.verdict.kind is VerdictKind.FAIL
    # Even once the pooled data no longer shows a slowdown, the FAIL stands.
    fast = histogram(lognormal(rng, 50_000, 0.05))
    judgement = decider.judge(
        judgement.state, observe(5000, 0, 50_000, 0, k=9, stable_latency=same, canary_latency=fast)
    )
    assert judgement.verdict.kind is VerdictKind.FAIL
    assert "failed earlier" in judgement.verdict.reason


def test_latency_identical_arms_pass_and_early_pass_with_enough_data() -> None:
    rng = random.Random(2)
    decider = SequentialLatency(quantiles=(0.5, 0.9), early_pass=True, margin=0.1)
    stable = histogram(lognormal(rng, 200_000, 0.1))
    canary = histogram(lognormal(rng, 100_000, 0.1))
    verdict = decider.judge(
        None, observe(200_000, 0, 100_000, 0, stable_latency=stable, canary_latency=canary)
    ).verdict
    assert verdict.kind is VerdictKind.PASS
    assert verdict.early_pass
    few = decider.judge(
        None,
        observe(
            900,
            0,
            500,
            0,
            stable_latency=histogram(lognormal(rng, 900, 0.1)),
            canary_latency=histogram(lognormal(rng, 500, 0.1)),
        ),
    ).verdict
    assert few.kind is VerdictKind.PASS
    assert not few.early_pass


def test_latency_bucket_edges_are_more_conservative_than_interpolation() -> None:
    rng = random.Random(3)
    stable = histogram(lognormal(rng, 50_000, 0.1))
    canary = histogram(lognormal(rng, 20_000, 0.115))
    obs = observe(50_000, 0, 20_000, 0, stable_latency=stable, canary_latency=canary)
    ratio = {}
    for interpolate in (True, False):
        decider = SequentialLatency(quantiles=(0.5,), interpolate=interpolate, margin=0.0)
        value = decider.judge(None, obs).verdict.metrics[0].value
        assert value is not None
        ratio[interpolate] = value
    assert ratio[False] < ratio[True]


def test_latency_state_round_trips_through_json() -> None:
    metrics = ScriptedMetrics(latency_median=0.1, latency_sigma=0.5, seed=4)
    split = TrafficSplit(canary_percent=10)
    decider = SequentialLatency(early_pass=True)
    state = decider.initial_state()
    for k in range(12):
        obs = metrics.observe(Window(start=10.0 * k, end=10.0 * (k + 1), split=split))
        state = decider.judge(state, obs).state
        reloaded = json.loads(json.dumps(state))
        assert reloaded == state
        assert decider.judge(reloaded, obs) == decider.judge(state, obs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"quantiles": ()}, "quantiles"),
        ({"quantiles": (0.5, 1.0)}, "quantiles[1]"),
        ({"quantiles": "p99"}, "quantiles"),
        ({"margin": -1}, "margin"),
        ({"min_samples": 0}, "min_samples"),
        ({"interpolate": 1}, "interpolate"),
    ],
)
def test_latency_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SequentialLatency(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_latency_rejects_a_foreign_state() -> None:
    with pytest.raises(ConfigError) as caught:
        SequentialLatency().judge([1, 2], observe(1, 0, 1, 0))
    assert caught.value.field == "state"


def latency_detection(factor: float, seed: int, windows: int) -> int | None:
    metrics = ScriptedMetrics(
        latency_median=regression(at=0.0, base=0.1, factor=factor),
        latency_sigma=0.5,
        seed=seed,
    )
    split = TrafficSplit(canary_percent=10)
    decider = SequentialLatency()
    state = decider.initial_state()
    for k in range(windows):
        obs = metrics.observe(Window(start=10.0 * k, end=10.0 * (k + 1), split=split))
        judgement = decider.judge(state, obs)
        state = judgement.state
        if judgement.verdict.kind is VerdictKind.FAIL:
            return k + 1
    return None


def test_latency_aa_has_no_false_rollbacks() -> None:
    # 20 A/A rollouts of 30 minutes; at alpha 0.01 a false rollback here has probability
    # below 20%, and two below 2%.
    fails = sum(latency_detection(1.0, 100 + seed, 180) is not None for seed in range(20))
    assert fails <= 1


def test_latency_plus_25_percent_is_caught_within_minutes() -> None:
    found = [latency_detection(1.25, 200 + seed, 36) for seed in range(20)]
    assert all(k is not None for k in found)
    minutes = sorted(k * 10 / 60 for k in found if k is not None)
    assert minutes[len(minutes) // 2] <= 1.5


# -- integration -------------------------------------------------------------------------


def test_sequential_deciders_roll_back_a_bad_canary_in_a_simulated_rollout() -> None:
    import canarykit as ck
    from canarykit.testing import simulate

    decider = SequentialErrors() & SequentialLatency()
    metrics = ScriptedMetrics(error_rate=regression(at=0.0, base=0.01, factor=5.0), seed=1)
    plan = ck.linear(10, 10, hold=600, analysis_interval=10)
    outcome = simulate(plan, decider=decider, metrics=metrics).outcome
    assert outcome.phase is ck.Phase.ROLLED_BACK
