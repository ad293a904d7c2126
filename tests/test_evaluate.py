"""The Monte-Carlo evaluator: exact figures on small cases, stated tolerances on random ones."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

import canarykit as ck
from canarykit import ConfigError, Observation

# Imports internals on purpose: the command line (canarykit._cli is private).
from canarykit._cli._main import main
from canarykit._verdict import Judgement, Verdict, VerdictKind
from canarykit.deciders import bound, threshold
from canarykit.testing._evaluate import (
    Evaluation,
    InjectedRegression,
    Scenario,
    evaluate,
    hold_plan,
    parse_regression,
    reads_latency,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "policy.toml"


def _pois(k: int, mean: float) -> float:
    return math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1))


def window_fail_probability(mean: float, p: float, limit: float) -> float:
    """P(errors / requests > limit) for Poisson(mean) requests each failing with p."""
    bad, good = mean * p, mean * (1 - p)
    total = 0.0
    for e in range(0, int(bad + 20 * math.sqrt(bad) + 20)):
        pe = _pois(e, bad)
        for s in range(0, int(good + 20 * math.sqrt(good) + 20)):
            n = e + s
            if n and e / n > limit:
                total += pe * _pois(s, good)
    return total


@attrs.define
class Recorder:
    """A decider that records what it saw and fails from `fail_at` (a window end) on."""

    fail_at: float = math.inf
    reads_latency: bool = False
    seen: list[Observation] = attrs.field(factory=list)

    def initial_state(self) -> Any:
        return 0

    def judge(self, state: Any, observation: Observation) -> Judgement:
        self.seen.append(observation)
        kind = VerdictKind.FAIL if observation.end >= self.fail_at else VerdictKind.PASS
        return Judgement(Verdict(kind=kind, reason="scripted"), state + 1)


# ---------------------------------------------------------------------------- statistics


def test_aa_threshold_rolls_back_at_the_binomial_rate() -> None:
    # 100 canary requests a window at 1% errors; "error rate > 2%" fails a window with
    # probability q; 10 windows are judged in 100 s (the 10th ends with the hold and is
    # judged before it ends, as the runner does).
    plan = hold_plan(10, 100, analysis_interval=10)
    decider = threshold(bound("error_rate", max=0.02))
    result = evaluate(plan, decider, Scenario(), runs=3000, seed=3)
    q = window_fail_probability(100.0, 0.01, 0.02)
    windows = max(r.windows for r in result.results)
    assert windows == 10
    expected = 1 - (1 - q) ** windows
    sd = math.sqrt(expected * (1 - expected) / result.runs)
    assert abs(result.false_rollback_rate - expected) < 4 * sd
    assert result.rolled_back + result.promoted == result.runs
    assert result.detect_rate is None and result.median_bad_requests is None
    # Promotion comes when the hold ends.
    assert result.median_promotion_seconds == 100.0
    # Each window judged before a rollback passed with probability 1 - q: the windows
    # judged per run are a truncated geometric count.
    mean_windows = result.windows / result.runs
    expected_windows = sum((1 - q) ** k for k in range(windows))
    assert mean_windows == pytest.approx(expected_windows, rel=0.03)


def test_traffic_matches_the_scenario_with_a_daily_cycle() -> None:
    # Latency drawn and a strong daily cycle: requests still average the scenario's rate
    # (whole periods), and the errors are 1% of them.
    recorder = Recorder(reads_latency=True)
    scenario = Scenario(daily_amplitude=0.8, daily_period=600.0)
    plan = hold_plan(25, 600, analysis_interval=10)
    evaluate(plan, recorder, scenario, runs=40, seed=5, horizon=590)
    canary = sum(o.canary.requests for o in recorder.seen)
    stable = sum(o.stable.requests for o in recorder.seen)
    errors = sum(o.canary.errors + o.stable.errors for o in recorder.seen)
    # Each run covers [0, 590): the cycle's integral over it is known exactly per run
    # only with its phase, so allow for the missing 10 s (at most 1.8% of the traffic).
    total = 40 * 100.0 * 590
    assert canary + stable == pytest.approx(total, rel=0.03)
    assert canary / (canary + stable) == pytest.approx(0.25, abs=0.005)
    assert errors / (canary + stable) == pytest.approx(0.01, rel=0.05)
    assert all(o.canary.latency is not None for o in recorder.seen)
    assert all(o.canary.latency.count == o.canary.requests for o in recorder.seen)  # type: ignore[union-attr]
    # The rate swings with the cycle: windows differ far more than Poisson noise alone.
    counts = [o.stable.requests + o.canary.requests for o in recorder.seen[:59]]
    assert max(counts) > 1.6 * 1000 and min(counts) < 0.4 * 1000


def test_fivefold_error_regression_is_detected() -> None:
    plan = hold_plan(10, 1800, analysis_interval=10)
    decider = threshold(bound("error_rate", max=0.04), failure_limit=2)
    scenario = Scenario(regression=InjectedRegression("errors", 5, at=60))
    result = evaluate(plan, decider, scenario, runs=300, seed=11)
    assert result.detect_rate is not None and result.detect_rate > 0.95
    assert result.median_detect_seconds is not None and result.median_detect_seconds <= 60
    assert result.p90_detect_seconds is not None
    assert result.median_detect_seconds <= result.p90_detect_seconds <= 120
    assert result.false_rollback_rate < 0.03
    # Bad requests: about 4% extra errors on the ~10 canary requests a second until caught.
    assert 0 < result.median_bad_requests < 0.04 * 10 * 60  # type: ignore[operator]


def test_latency_regression_is_drawn_and_detected() -> None:
    plan = hold_plan(10, 1200, analysis_interval=30)
    decider = threshold(bound("p50", max=0.06), failure_limit=2)
    assert reads_latency(decider)
    scenario = Scenario(regression=InjectedRegression("latency", 1.5, at=0))
    result = evaluate(plan, decider, scenario, runs=50, seed=2)
    assert result.detect_rate == 1.0
    assert result.median_detect_seconds == 60.0  # two failed windows of 30 s
    # For a latency regression every canary request after it began is a bad one.
    assert all(r.bad_requests == r.exposed_requests > 0 for r in result.results)


# ---------------------------------------------------------------------------- accounting


def test_bad_requests_match_a_hand_computation() -> None:
    # Baseline 50% errors; from 20 s on the canary fails every request (factor 2), so the
    # canary's errors after 20 s are exactly its requests, and a scripted decider fails
    # the window ending at 50 s.
    recorder = Recorder(fail_at=50.0)
    scenario = Scenario(error_rate=0.5, regression=InjectedRegression("errors", 2.0, at=20))
    result = evaluate(hold_plan(10, 600, analysis_interval=10), recorder, scenario, runs=1)
    [run] = result.results
    assert [(o.start, o.end) for o in recorder.seen] == [
        (0, 10),
        (10, 20),
        (20, 30),
        (30, 40),
        (40, 50),
    ]
    after = [o for o in recorder.seen if o.start >= 20]
    assert all(o.canary.errors == o.canary.requests for o in after)
    exposed = sum(o.canary.requests for o in after)
    assert run.outcome == "rolled_back" and run.end == 50.0
    assert run.detect_seconds == 30.0
    assert run.windows == 5
    assert run.exposed_requests == exposed
    assert run.expected_excess_errors == pytest.approx(exposed * (1.0 - 0.5))
    assert run.excess_errors == pytest.approx(exposed - exposed * 0.5)
    assert run.bad_requests == run.expected_excess_errors
    assert run.canary_requests == sum(o.canary.requests for o in recorder.seen)
    assert run.canary_errors == sum(o.canary.errors for o in recorder.seen)
    # Count-only decider: no latency drawn.
    assert all(o.canary.latency is None for o in recorder.seen)


def test_window_straddling_the_regression_is_drawn_in_two_parts() -> None:
    recorder = Recorder(fail_at=30.0)
    scenario = Scenario(error_rate=0.0, regression=InjectedRegression("errors", 2.0, at=15))
    result = evaluate(hold_plan(10, 600, analysis_interval=10), recorder, scenario, runs=1)
    [run] = result.results
    # The baseline rate is 0, so no error anywhere, and nothing is "excess".
    assert run.canary_errors == 0 and run.bad_requests == 0.0
    in_windows = sum(o.canary.requests for o in recorder.seen if o.end > 15)
    # About half of the [10, 20) window plus all of [20, 30): ~150 requests of ~200.
    assert 0 < run.exposed_requests < in_windows
    assert run.detect_seconds == 15.0


def test_rollback_before_the_regression_is_a_false_rollback() -> None:
    recorder = Recorder(fail_at=10.0)
    scenario = Scenario(regression=InjectedRegression("errors", 3.0, at=100))
    result = evaluate(hold_plan(10, 600, analysis_interval=10), recorder, scenario, runs=3)
    assert result.rolled_back == 3 and result.detected == 0
    assert result.false_rollback_rate == 1.0 and result.detect_rate == 0.0
    assert result.median_detect_seconds is None


def test_horizon_stops_paused_runs() -> None:
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion()], analysis_interval=60)
    result = evaluate(plan, Recorder(), runs=2, horizon=600)
    assert [r.outcome for r in result.results] == ["paused", "paused"]
    assert all(r.end == 600 and r.windows == 10 for r in result.results)
    assert result.unfinished == 2


def test_async_judge_that_does_not_wait_is_driven() -> None:
    @attrs.define
    class Async:
        reads_latency = False

        def initial_state(self) -> Any:
            return None

        async def judge(self, state: Any, observation: Observation) -> Judgement:
            return Judgement(Verdict(kind=VerdictKind.PASS, reason="ok"))

    result = evaluate(hold_plan(10, 60), Async(), runs=2)
    assert result.promoted == 2


def test_a_raising_decider_makes_failed_windows() -> None:
    @attrs.define
    class Broken:
        reads_latency = False

        def initial_state(self) -> Any:
            return None

        def judge(self, state: Any, observation: Observation) -> Judgement:
            raise RuntimeError("boom")

    result = evaluate(hold_plan(10, 600), Broken(), runs=1)
    [run] = result.results
    assert run.outcome == "rolled_back" and "boom" in run.reason
    assert run.end == 40.0  # consecutive_error_limit = 4 windows of 10 s


# ---------------------------------------------------------------------------- API


def test_progress_is_reported_after_every_run() -> None:
    calls: list[tuple[int, int]] = []
    evaluate(hold_plan(10, 60), Recorder(), runs=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_split_runs_combine_to_the_same_figures() -> None:
    plan = hold_plan(10, 300, analysis_interval=10)
    decider = threshold(bound("error_rate", max=0.02))
    scenario = Scenario(regression=InjectedRegression("errors", 2.0, at=60), daily_amplitude=0.3)
    whole = evaluate(plan, decider, scenario, runs=40, seed=9)
    parts = [
        evaluate(plan, decider, scenario, runs=15, seed=9),
        evaluate(plan, decider, scenario, runs=25, seed=9, first_run=15),
    ]
    combined = Evaluation.combine(parts)
    assert combined.results == whole.results
    assert combined.summary() == whole.summary()
    other_seed = evaluate(plan, decider, scenario, runs=40, seed=10)
    assert other_seed.results != whole.results
    data = json.loads(json.dumps(whole.to_json(results=True)))
    assert data["runs"] == 40 and len(data["results"]) == 40
    assert data["scenario"]["regression"] == {"kind": "errors", "factor": 2.0, "at": 60.0}


def test_reads_latency() -> None:
    errors = threshold(bound("error_rate", max=0.02))
    latency = threshold(bound("p99", max=0.5))
    assert not reads_latency(errors)
    assert reads_latency(latency)
    assert reads_latency(errors | latency)
    assert not reads_latency(Recorder())
    from canarykit.deciders._sequential import sequential_errors, sequential_latency

    assert not reads_latency(sequential_errors(alpha=0.01))
    assert reads_latency(sequential_latency(alpha=0.01))
    assert reads_latency(sequential_errors(alpha=0.01) & sequential_latency(alpha=0.01))
    from canarykit.deciders import compare, kayenta, kayenta_metric, limited, relative

    assert not reads_latency(limited(errors, consecutive_failures=2))
    assert reads_latency(limited(latency, consecutive_failures=2))
    assert not reads_latency(kayenta(kayenta_metric("error_rate")))
    assert reads_latency(kayenta(kayenta_metric("error_rate"), kayenta_metric("latency")))
    assert not reads_latency(relative(compare("error_rate", max_ratio=2)))
    assert reads_latency(relative(compare("p99", max_ratio=1.2)))
    assert reads_latency(Recorder(reads_latency=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("errors:2x@600", InjectedRegression("errors", 2.0, 600.0)),
        ("errors:5", InjectedRegression("errors", 5.0, 0.0)),
        ("latency:1.25x@10m", InjectedRegression("latency", 1.25, 600.0)),
        ("latency:+10%@0", InjectedRegression("latency", 1.1, 0.0)),
        ("none", None),
    ],
)
def test_parse_regression(text: str, expected: InjectedRegression | None) -> None:
    assert parse_regression(text) == expected


@pytest.mark.parametrize(
    "text", ["cpu:2x@1", "errors", "errors:two", "errors:2x@soon", "errors:-1"]
)
def test_parse_regression_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^regression: "):
        parse_regression(text)


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^runs:"):
        evaluate(hold_plan(), Recorder(), runs=0)
    with pytest.raises(ConfigError, match=r"^error_rate:"):
        Scenario(error_rate=1.5)
    with pytest.raises(ConfigError, match=r"^regression.factor:"):
        Scenario(error_rate=0.5, regression=InjectedRegression("errors", 3))
    with pytest.raises(ConfigError, match=r"^kind:"):
        InjectedRegression("cpu", 2)
    with pytest.raises(ConfigError, match=r"^horizon:"):
        evaluate(hold_plan(), Recorder(), runs=1, horizon=-1)


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and 0.03 < high < 0.04
    assert wilson_interval(0, 0) == (0.0, 1.0)


# ---------------------------------------------------------------------------- CLI


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_evaluate_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "evaluate", str(EXAMPLE), "--runs", "50", "--regression", "errors:5x@300"
    )
    assert (code, err) == (0, "")
    assert "runs             50 (seed 1)" in out
    assert "regression: errors x5 from 5:00" in out
    assert "detected         " in out and "time to detect   median " in out
    assert "bad requests     median " in out


def test_cli_evaluate_json_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", str(EXAMPLE), "--runs", "20", "--json", "--progress")
    assert code == 0
    data = json.loads(out)
    assert data["runs"] == 20 and data["seed"] == 1
    assert data["scenario"]["regression"] is None
    assert data["promoted"] + data["rolled_back"] + data["aborted"] + data["unfinished"] == 20
    assert "evaluated 20/20 runs" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--regression", "errors:2y@10"], "--regression"),
        (["--regression", "errors:200x"], "--regression"),
        (["--runs", "0"], "--runs"),
        (["--error-rate", "1.5"], "--error-rate"),
        (["--horizon", "-5"], "--horizon"),
    ],
)
def test_cli_evaluate_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    code, out, err = run(capsys, "evaluate", str(EXAMPLE), *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"canarykit: error: {named}: ")


def test_cli_evaluate_bad_policy_names_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(EXAMPLE.read_text().replace("hold = ", "hodl = "))
    code, _, err = run(capsys, "evaluate", str(policy), "--runs", "5")
    assert code == 2
    assert "plan.hodl" in err and "Traceback" not in err


def test_analyze_steps_use_their_own_decider() -> None:
    step_decider = Recorder(fail_at=30.0)
    background = Recorder()
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Analyze(60, 10, decider=step_decider)],
        analysis_interval=None,
    )
    result = evaluate(plan, background, runs=1)
    [run] = result.results
    assert run.outcome == "rolled_back" and run.end == 30.0
    assert len(step_decider.seen) == 3 and background.seen == []


# ---------------------------------------------------------------------------- traffic shapes


def test_split_runs_with_traffic_shapes_combine_to_the_same_figures() -> None:
    # The benchmark splits runs over processes: with every shape on, a run's data still
    # depend only on (seed, index), never on the sampler's caches or the runs before it.
    plan = hold_plan(20, 300, analysis_interval=10)
    decider = Recorder(fail_at=250.0, reads_latency=True)
    scenario = Scenario(
        error_burst_max=5,
        stall_fraction=0.3,
        latency_drift=1.3,
        error_drift=1.2,
        daily_amplitude=0.5,
        daily_period=300,
        canary_latency_factor=1.03,
        canary_error_factor=1.05,
        regression=InjectedRegression("errors", 2.0, at=100),
    )
    whole = evaluate(plan, decider, scenario, runs=12, seed=9)
    parts = [
        evaluate(plan, decider, scenario, runs=5, seed=9, first_run=7),
        evaluate(plan, decider, scenario, runs=7, seed=9),
    ]
    combined = Evaluation.combine(parts)
    assert combined.results == whole.results
    assert combined.summary() == whole.summary()
    data = json.loads(json.dumps(whole.to_json()))
    assert data["scenario"]["error_burst_max"] == 5
    assert data["scenario"]["canary_latency_factor"] == 1.03


def _benchmark() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "deciders_benchmark", ROOT / "benchmarks" / "deciders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_oracles_are_walds_expected_times() -> None:
    bench = _benchmark()
    # Latency: +25% at margin 0, sigma 0.5, 10 canary requests/s, alpha 0.01.
    kl = math.log(1.25) ** 2 / (2 * 0.25)
    expected = math.log(100) / (kl * 10)
    assert bench.wald_latency_seconds(1.25, 0.0, 0.5, 10.0, 0.01) == pytest.approx(expected)
    # Beyond a 3% margin the shift is ln(1.10 / 1.03): 53 s for +10%.
    assert bench.wald_latency_seconds(1.10, 0.03, 0.5, 10.0, 0.01) == pytest.approx(53.3, abs=0.1)
    # Within the margin there is nothing to detect.
    assert bench.wald_latency_seconds(1.03, 0.03, 0.5, 10.0, 0.01) is None
    # Errors, 2x at 100 rps, canary 10%, 1% errors: q = 0.2 / 1.1 of the errors are the
    # canary's, 1.1 errors/s in all.
    q = 0.2 / 1.1
    kl = q * math.log(q / 0.1) + (1 - q) * math.log((1 - q) / 0.9)
    expected = math.log(100) / (kl * 1.1)
    assert bench.wald_errors_seconds(2.0, 0.1, 0.01, 100.0, 0.01) == pytest.approx(expected)
    # The low-traffic case: 30 rps, canary 5%, 0.5% errors: about 28 minutes.
    assert bench.wald_errors_seconds(2.0, 0.05, 0.005, 30.0, 0.01) == pytest.approx(1698, abs=1)


def test_benchmark_cases_are_the_stated_traffic() -> None:
    bench = _benchmark()
    hold = 3 * 3600.0
    plan, traffic = bench.case("step_drift", hold)
    weights = [s.percent for s in plan.steps if isinstance(s, ck.SetWeight)]
    pauses = [s.seconds for s in plan.steps if isinstance(s, ck.Pause)]
    assert weights == [1, 5, 10, 25, 50] and pauses == [2160.0] * 5
    assert plan.nominal_seconds == hold and not plan.require_pass
    assert traffic.latency_drift == 1.3 and traffic.drift_seconds is None
    _, traffic = bench.case("daily_cycle", hold)
    assert (traffic.daily_amplitude, traffic.daily_period) == (0.7, hold)
    _, traffic = bench.case("bursts_errors_2x", hold)
    assert traffic.error_burst_max == 10 and traffic.regression.factor == 2.0
    _, traffic = bench.case("near_equal", hold)
    assert (traffic.canary_latency_factor, traffic.canary_error_factor) == (1.03, 1.05)
    assert traffic.regression is None
    _, traffic = bench.case("stalls", hold)
    assert (traffic.stall_fraction, traffic.stall_share, traffic.stall_seconds) == (0.1, 0.1, 0.3)
    plan, traffic = bench.case("low_traffic", hold)
    assert plan.steps[0].percent == 5.0
    assert (traffic.requests_per_second, traffic.error_rate) == (30.0, 0.005)
    for name in ("bursts_aa", "daily_cycle", "step_drift", "stalls", "near_equal"):
        _, traffic = bench.case(name, hold)
        assert (traffic.requests_per_second, traffic.error_rate) == (100.0, 0.01)
        assert (traffic.latency_median, traffic.latency_sigma) == (0.1, 0.5)
