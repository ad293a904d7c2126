"""Header-route stages and mirroring in simulated traffic: who serves which requests."""

from __future__ import annotations

import math
import statistics

import pytest

from canarykit import (
    ConfigError,
    HeaderRoute,
    Pause,
    Plan,
    SetHeaderRoutes,
    SetMirror,
    TrafficSplit,
    Window,
)
from canarykit.deciders import bound, threshold
from canarykit.testing import (
    DEFAULT_HEADER_SHARE,
    InjectedRegression,
    Scenario,
    ScriptedMetrics,
    canary_share,
    evaluate,
    simulate,
)

K = 4.0  # Monte-Carlo tolerance in standard errors

# The seed's Istio stage: 10% of Chrome users to the canary, nobody else.
CHROME = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex", percent=10)
BETA = HeaderRoute(header="X-Beta", value="1")
CHROME_STAGE = TrafficSplit(canary_percent=0, header_routes=[CHROME])


# -- the share of requests the canary serves ---------------------------------------------


@pytest.mark.parametrize(
    ("split", "header_share", "expected"),
    [
        (TrafficSplit(canary_percent=25), 0.6, 0.25),
        (CHROME_STAGE, {"User-Agent": 0.6}, 0.06),
        (CHROME_STAGE, {"user-agent": 0.6}, 0.06),  # header names are case-insensitive
        (CHROME_STAGE, 0.8, 0.08),  # one number for every header
        (CHROME_STAGE, {"X-Other": 0.9}, DEFAULT_HEADER_SHARE * 0.1),  # not listed: default
        # Requests no route matches follow the weight: 50% match and all go to the canary,
        # and 20% of the other half.
        (TrafficSplit(canary_percent=20, header_routes=[BETA]), 0.5, 0.5 + 0.5 * 0.2),
        # Two headers, independent; the first route that matches wins.
        (
            TrafficSplit(header_routes=[BETA, CHROME]),
            {"X-Beta": 0.1, "User-Agent": 0.6},
            0.1 * 1.0 + 0.9 * 0.6 * 0.1,
        ),
        # Mirrored copies are served by stable; the canary's answers to them go nowhere.
        (TrafficSplit(canary_percent=0, mirror_percent=50), 0.5, 0.0),
        (TrafficSplit(canary_percent=10, mirror_percent=100), 0.5, 0.1),
    ],
)
def test_canary_share_routes_the_matching_share_and_never_counts_mirrored_copies(
    split: TrafficSplit, header_share: float | dict[str, float], expected: float
) -> None:
    assert canary_share(split, header_share) == pytest.approx(expected, abs=1e-12)


def test_a_second_route_on_a_routed_header_matches_no_further_requests() -> None:
    # Routers try routes in order: a request the first User-Agent route matches never
    # reaches the second, and the share says how many requests a User-Agent route matches.
    firefox = HeaderRoute(header="User-Agent", value=".*Firefox.*", match="regex")
    both = TrafficSplit(header_routes=[CHROME, firefox])
    assert canary_share(both, 0.6) == canary_share(CHROME_STAGE, 0.6)


@pytest.mark.parametrize(
    ("header_share", "field"),
    [
        (1.5, "header_share"),
        (-0.1, "header_share"),
        (math.nan, "header_share"),
        ("60%", "header_share"),
        (True, "header_share"),
        ({"User-Agent": 2.0}, "header_share['User-Agent']"),
        ({"bad header": 0.5}, "header_share"),
        ({"User-Agent": 0.5, "user-agent": 0.6}, "header_share['user-agent']"),
    ],
)
def test_a_bad_header_share_names_the_field(header_share: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ScriptedMetrics(header_share=header_share)
    assert info.value.field == field


# -- ScriptedMetrics -------------------------------------------------------------------------


def _requests(metrics: ScriptedMetrics, split: TrafficSplit, n: int) -> tuple[list[int], list[int]]:
    observations = [
        metrics.observe(Window(start=10.0 * i, end=10.0 * (i + 1), split=split)) for i in range(n)
    ]
    return [o.stable.requests for o in observations], [o.canary.requests for o in observations]


def test_scripted_metrics_give_the_canary_the_matching_share_of_a_chrome_stage() -> None:
    metrics = ScriptedMetrics(requests_per_second=1000, header_share={"User-Agent": 0.6}, seed=3)
    stable, canary = _requests(metrics, CHROME_STAGE, 500)
    # 1,000 requests/s for 10 s: 6% (60% of requests match, 10% of those) to the canary.
    expected = 10_000 * 0.06
    assert abs(statistics.fmean(canary) - expected) <= K * math.sqrt(expected / 500)
    assert abs(statistics.fmean(stable) - (10_000 - expected)) <= K * math.sqrt(10_000 / 500)


def test_scripted_metrics_count_no_mirrored_copy_for_the_canary() -> None:
    metrics = ScriptedMetrics(requests_per_second=1000, seed=3)
    stable, canary = _requests(metrics, TrafficSplit(mirror_percent=30), 50)
    assert canary == [0] * 50
    # Stable still serves every request.
    assert abs(statistics.fmean(stable) - 10_000) <= K * math.sqrt(10_000 / 50)


def test_rate_functions_see_the_canarys_percent_of_requests_during_a_header_stage() -> None:
    seen: list[float] = []

    def error_rate(t: float, arm: object, percent: float) -> float:
        seen.append(percent)
        return 0.01

    metrics = ScriptedMetrics(error_rate=error_rate, header_share=0.6)
    metrics.observe(Window(start=0.0, end=10.0, split=CHROME_STAGE))
    assert seen and all(p == pytest.approx(6.0) for p in seen)


def test_simulated_rollout_through_a_chrome_stage_judges_canary_traffic() -> None:
    plan = Plan(
        steps=[SetHeaderRoutes([CHROME]), Pause(600)], analysis_interval=60, require_pass=True
    )
    decider = threshold(bound("error_rate", max=0.05), no_data="fail")
    metrics = ScriptedMetrics(requests_per_second=1000, header_share={"User-Agent": 0.6}, seed=1)
    outcome = simulate(plan, decider=decider, metrics=metrics).outcome
    assert outcome.promoted, outcome.reason
    verdicts = [e for e in outcome.timeline if e.kind == "verdict"]
    assert len(verdicts) == 10
    assert all(e.canary_error_rate is not None for e in verdicts)


# -- evaluate ----------------------------------------------------------------------------------

CHROME_PLAN = Plan(
    steps=[SetHeaderRoutes([CHROME]), Pause(3600)], analysis_interval=60, require_pass=False
)
# A canary without data fails: before header stages were simulated, every run of this
# policy was a false rollback.
NO_DATA_FAILS = threshold(bound("error_rate", max=0.05), no_data="fail")


def test_evaluate_chrome_stage_a_a_has_no_false_rollbacks_and_the_matching_share() -> None:
    runs = 40
    result = evaluate(
        CHROME_PLAN,
        NO_DATA_FAILS,
        Scenario(requests_per_second=100),
        runs=runs,
        seed=5,
        header_share={"User-Agent": 0.6},
    )
    # With 360 canary requests a minute at 1% errors, a window above 5% has odds ~1e-9.
    assert result.false_rollback_rate == 0.0
    assert result.promoted == runs
    for run in result.results:
        expected = 100 * 0.06 * 60 * run.windows
        assert abs(run.canary_requests - expected) <= K * math.sqrt(expected)
    total = sum(r.canary_requests for r in result.results)
    expected_total = sum(100 * 0.06 * 60 * r.windows for r in result.results)
    assert abs(total - expected_total) <= K * math.sqrt(expected_total)


def test_evaluate_chrome_stage_catches_an_error_regression_on_the_routed_requests() -> None:
    bad = Scenario(regression=InjectedRegression("errors", 10.0, at=600))
    result = evaluate(CHROME_PLAN, NO_DATA_FAILS, bad, runs=20, seed=2, header_share=0.6)
    assert result.false_rollback_rate == 0.0
    assert result.detect_rate == 1.0
    assert result.median_detect_seconds is not None and result.median_detect_seconds <= 120


def test_evaluate_mirroring_gives_the_canary_no_requests() -> None:
    plan = Plan(steps=[SetMirror(50), Pause(600)], analysis_interval=60, require_pass=False)
    decider = threshold(bound("error_rate", max=0.05), no_data="ignore")
    result = evaluate(plan, decider, Scenario(), runs=5, seed=1)
    assert [r.canary_requests for r in result.results] == [0] * 5
    assert all(r.windows >= 9 for r in result.results)  # judged all along, on stable alone


def test_evaluate_refuses_a_bad_header_share_by_name() -> None:
    with pytest.raises(ConfigError) as info:
        evaluate(CHROME_PLAN, NO_DATA_FAILS, runs=1, header_share=3.0)
    assert info.value.field == "header_share"
