# Imports internals on purpose: a decider's helpers.

from __future__ import annotations

import json
import math
import time
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import (
    Arm,
    ConfigError,
    Decider,
    HeaderRoute,
    Judgement,
    Observation,
    Phase,
    TrafficSplit,
    VerdictKind,
    linear,
)
from canarykit.deciders import (
    AllOf,
    Comparison,
    Direction,
    NoDataPolicy,
    RelativeDecider,
    bound,
    compare,
    relative,
    threshold,
)
from canarykit.deciders._relative import at_full_canary
from canarykit.testing import ScriptedMetrics, observation, regression, simulate

PASS, NOT_YET, INCONCLUSIVE, FAIL = (
    VerdictKind.PASS,
    VerdictKind.NOT_YET,
    VerdictKind.INCONCLUSIVE,
    VerdictKind.FAIL,
)


def gauges(canary: float, stable: float, name: str = "cpu") -> Observation:
    return observation(canary_gauges={name: canary}, stable_gauges={name: stable})


def verdict_of(decider: RelativeDecider, seen: Observation) -> Any:
    return decider.judge(decider.initial_state(), seen).verdict


def check(comparison: Comparison, seen: Observation) -> Any:
    result = comparison.check(seen)
    assert result is not None
    return result


# --- ratio and difference, each direction --------------------------------------------


def test_ratio_above_the_allowed_increase_fails_with_a_readable_reason() -> None:
    decider = relative(compare("error_rate", max_ratio=1.2))
    verdict = verdict_of(decider, observation(canary_errors=23, stable_errors=10))
    assert verdict.kind is FAIL
    assert verdict.reason == "error_rate: canary 2.30% vs stable 1.00% = 2.3x > allowed 1.2x"
    assert verdict.metrics[0].value == pytest.approx(0.023)


def test_ratio_equal_to_the_limit_passes_despite_float_rounding() -> None:
    # 12/1000 / (10/1000) is 1.2000000000000002 in floats; the limit is inclusive.
    result = check(compare("error_rate", max_ratio=1.2), observation(canary_errors=12))
    assert result.kind is PASS
    assert result.reason == "canary 1.20% vs stable 1.00% = 1.2x <= allowed 1.2x"


def test_ratio_just_above_the_limit_shows_enough_digits_to_differ() -> None:
    result = check(compare("cpu", max_ratio=1.2), gauges(1.2004, 1.0))
    assert result.kind is FAIL
    assert result.reason == "canary 1.2004 vs stable 1 = 1.2004x > allowed 1.2x"


def test_absolute_increase() -> None:
    comparison = compare("error_rate", max_increase=0.005)
    failing = check(comparison, observation(canary_errors=23))
    assert failing.kind is FAIL
    assert failing.reason == "canary 2.30% vs stable 1.00% = +1.30% > allowed +0.50%"
    passing = check(comparison, observation(canary_errors=15))
    assert passing.kind is PASS
    assert passing.reason == "canary 1.50% vs stable 1.00% = +0.50% <= allowed +0.50%"


def test_ratio_and_difference_together_fail_on_either_and_name_what_broke() -> None:
    comparison = compare("error_rate", max_ratio=1.5, max_increase=0.005)
    ratio_only = check(comparison, observation(canary_errors=4, stable_errors=2))
    assert ratio_only.kind is FAIL
    assert ratio_only.reason == "canary 0.40% vs stable 0.20% = 2x > allowed 1.5x"
    difference_only = check(comparison, observation(canary_errors=130, stable_errors=100))
    assert difference_only.kind is FAIL
    assert difference_only.reason == "canary 13.00% vs stable 10.00% = +3.00% > allowed +0.50%"
    both = check(comparison, observation(canary_errors=30, stable_errors=10))
    assert (
        both.reason == "canary 3.00% vs stable 1.00% = 3x > allowed 1.5x, +2.00% > allowed +0.50%"
    )
    within = check(comparison, observation(canary_errors=12, stable_errors=10))
    assert within.kind is PASS
    assert within.reason == (
        "canary 1.20% vs stable 1.00% = 1.2x <= allowed 1.5x, +0.20% <= allowed +0.50%"
    )


def test_decrease_direction_by_difference() -> None:
    comparison = compare("success_rate", max_decrease=0.01)
    assert comparison.direction is Direction.DECREASE
    failing = check(comparison, observation(canary_errors=23, stable_errors=10))
    assert failing.kind is FAIL
    assert failing.reason == "canary 97.70% vs stable 99.00% = -1.30% < allowed -1.00%"
    rising = check(comparison, observation(canary_errors=0, stable_errors=10))
    assert rising.kind is PASS
    assert rising.reason == "canary 100.00% vs stable 99.00% = +1.00%, not a decrease"


def test_decrease_direction_by_ratio() -> None:
    comparison = compare("cpu", min_ratio=0.8)
    failing = check(comparison, gauges(canary=0.7, stable=1.0))
    assert failing.kind is FAIL
    assert failing.reason == "canary 0.7 vs stable 1 = 0.7x < allowed 0.8x"
    passing = check(comparison, gauges(canary=0.8, stable=1.0))
    assert passing.kind is PASS
    assert passing.reason == "canary 0.8 vs stable 1 = 0.8x >= allowed 0.8x"


def test_increase_direction_ignores_a_decrease() -> None:
    result = check(compare("error_rate", max_ratio=1.2), observation(canary_errors=1))
    assert result.kind is PASS
    assert result.reason == "canary 0.10% vs stable 1.00% = 0.1x, not an increase"


def test_either_direction_checks_both_ways() -> None:
    comparison = compare("cpu", max_ratio=1.3, min_ratio=0.7, direction="either")
    assert comparison.direction is Direction.EITHER
    assert check(comparison, gauges(0.6, 0.5)).kind is PASS
    assert check(comparison, gauges(0.7, 0.5)).kind is FAIL
    assert check(comparison, gauges(0.3, 0.5)).kind is FAIL
    assert check(comparison, gauges(0.4, 0.5)).kind is PASS
    by_difference = compare("cpu", max_increase=0.1, max_decrease=0.1)
    assert check(by_difference, gauges(0.35, 0.5)).reason == (
        "canary 0.35 vs stable 0.5 = -0.15 < allowed -0.1"
    )


def test_latency_ratio_in_milliseconds() -> None:
    decider = relative(compare("p99", max_ratio=1.2))
    verdict = verdict_of(
        decider, observation(canary_latency=[0.3] * 100, stable_latency=[0.1] * 100)
    )
    assert verdict.kind is FAIL
    assert verdict.reason.startswith("p99: canary ")
    assert " ms vs stable " in verdict.reason and "x > allowed 1.2x" in verdict.reason


def test_equal_values_are_no_change() -> None:
    result = check(compare("error_rate", max_ratio=1.2), observation())
    assert (result.kind, result.reason) == (PASS, "canary 1.00% vs stable 1.00%: no change")


# --- zero baselines and the min_difference floor --------------------------------------


def test_zero_against_zero_passes() -> None:
    comparison = compare("error_rate", max_ratio=1.2)
    result = check(comparison, observation(canary_errors=0, stable_errors=0))
    assert result.kind is PASS


def test_zero_baseline_with_nonzero_canary_is_an_infinite_ratio() -> None:
    result = check(
        compare("error_rate", max_ratio=5), observation(canary_errors=1, stable_errors=0)
    )
    assert result.kind is FAIL
    assert result.reason == "canary 0.10% vs stable 0.00% = infinite ratio > allowed 5x"


def test_min_difference_keeps_a_tiny_change_on_a_zero_baseline_from_failing() -> None:
    comparison = compare("error_rate", max_ratio=1.2, min_difference=0.005)
    small = check(comparison, observation(canary_errors=1, stable_errors=0))
    assert small.kind is PASS
    assert small.reason == (
        "canary 0.10% vs stable 0.00%: difference +0.10% within min difference 0.50%"
    )
    at_floor = check(comparison, observation(canary_errors=5, stable_errors=0))
    assert at_floor.kind is PASS
    above = check(comparison, observation(canary_errors=6, stable_errors=0))
    assert above.kind is FAIL


def test_decrease_to_zero_fails_a_min_ratio() -> None:
    result = check(compare("cpu", min_ratio=0.5), gauges(0.0, 0.4))
    assert result.kind is FAIL
    assert result.reason == "canary 0 vs stable 0.4 = 0x < allowed 0.5x"


def test_ratio_of_negative_values_is_inconclusive() -> None:
    result = check(compare("delta", max_ratio=1.2), gauges(1.0, -1.0, name="delta"))
    assert result.kind is INCONCLUSIVE
    assert "ratio is not defined for negative values" in result.reason
    by_difference = check(compare("delta", max_increase=3), gauges(1.0, -1.0, name="delta"))
    assert by_difference.kind is PASS


# --- sample sizes and missing data ------------------------------------------------------


def test_too_few_requests_in_either_arm_is_not_yet() -> None:
    decider = relative(compare("error_rate", max_ratio=1.2, min_requests=100))
    few_canary = verdict_of(decider, observation(canary_requests=50, canary_errors=25))
    assert few_canary.kind is NOT_YET
    assert few_canary.reason == (
        "error_rate: too few requests to judge: canary 50, stable 1000 (need 100 each)"
    )
    few_stable = verdict_of(decider, observation(stable_requests=99, stable_errors=0))
    assert few_stable.kind is NOT_YET
    enough = verdict_of(decider, observation(canary_requests=100, canary_errors=5))
    assert enough.kind is FAIL


def test_min_requests_comes_before_the_no_data_policy() -> None:
    decider = relative(compare("error_rate", max_ratio=1.2, min_requests=10), no_data="fail")
    verdict = verdict_of(decider, observation(canary_requests=0, canary_errors=0))
    assert verdict.kind is NOT_YET


def test_no_data_is_inconclusive_by_default_and_says_which_arm() -> None:
    decider = relative(compare("p99", max_ratio=1.2))
    assert decider.no_data is NoDataPolicy.INCONCLUSIVE
    canary_only = verdict_of(decider, observation(stable_latency=[0.1] * 10))
    assert (canary_only.kind, canary_only.reason) == (INCONCLUSIVE, "p99: no canary data")
    stable_only = verdict_of(decider, observation(canary_latency=[0.1] * 10))
    assert stable_only.reason == "p99: no stable data"
    neither = verdict_of(decider, observation())
    assert neither.reason == "p99: no data for either arm"


def test_no_data_fail_policy() -> None:
    decider = relative(compare("cpu", max_ratio=1.2), no_data=NoDataPolicy.FAIL)
    verdict = verdict_of(decider, observation(stable_gauges={"cpu": 0.5}))
    assert verdict.kind is FAIL
    assert verdict.reason == "cpu: no canary data, counted as a failure"


def test_no_data_ignore_policy_never_passes_silently() -> None:
    decider = relative(
        compare("cpu", max_ratio=1.2), compare("error_rate", max_ratio=1.5), no_data="IGNORE"
    )
    some = verdict_of(decider, observation())
    assert some.kind is PASS
    assert some.reason.endswith("; no data, ignored: cpu")
    only_cpu = relative(compare("cpu", max_ratio=1.2), no_data="ignore")
    nothing = verdict_of(only_cpu, observation())
    assert nothing.kind is NOT_YET
    assert nothing.reason == "no data for any metric, nothing judged; no data, ignored: cpu"


def test_non_finite_gauge_is_no_data() -> None:
    decider = relative(compare("cpu", max_ratio=1.2))
    verdict = verdict_of(decider, gauges(math.nan, 0.5))
    assert (verdict.kind, verdict.reason) == (INCONCLUSIVE, "cpu: no canary data")


# --- the decider as a whole ------------------------------------------------------------


def test_worst_metric_wins_and_only_its_reasons_are_joined() -> None:
    decider = relative(
        compare("error_rate", max_ratio=1.2),
        compare("cpu", max_ratio=1.1),
        compare("mem", max_ratio=1.1),
    )
    seen = observation(
        canary_gauges={"cpu": 0.9, "mem": 2.0}, stable_gauges={"cpu": 0.5, "mem": 1.0}
    )
    verdict = verdict_of(decider, seen)
    assert verdict.kind is FAIL
    assert [m.metric for m in verdict.metrics] == ["error_rate", "cpu", "mem"]
    assert [m.kind for m in verdict.metrics] == [PASS, FAIL, FAIL]
    assert verdict.reason == (
        "cpu: canary 0.9 vs stable 0.5 = 1.8x > allowed 1.1x; "
        "mem: canary 2 vs stable 1 = 2x > allowed 1.1x"
    )


def test_state_is_the_stable_record_as_json_and_none_is_accepted() -> None:
    decider = relative(compare("error_rate", max_ratio=1.2))
    assert decider.initial_state() == {"record": {}}
    judgement = decider.judge(None, observation())
    assert json.loads(json.dumps(judgement.state)) == {
        "record": {"error_rate": [[30.0, 0.01, 1000.0, 1000]]}
    }
    # A state saved before the record existed ({}) reads as an empty record.
    assert decider.judge({}, observation()).state == judgement.state
    assert json.loads(json.dumps(judgement.verdict.to_json()))["kind"] == "pass"
    with pytest.raises(ConfigError) as info:
        decider.judge([1, 2], observation())
    assert info.value.field == "state"


def test_is_a_composable_decider() -> None:
    decider = relative(compare("error_rate", max_ratio=1.2))
    assert isinstance(decider, Decider)
    both = decider & threshold(bound("error_rate", max=0.5))
    assert isinstance(both, AllOf)
    judgement = both.judge(both.initial_state(), observation(canary_errors=30))
    assert isinstance(judgement, Judgement)
    assert judgement.verdict.kind is FAIL


def test_repr_and_str() -> None:
    comparison = compare("error_rate", max_ratio=1.2, min_difference=0.001, min_requests=50)
    assert repr(comparison) == (
        "Comparison(metric='error_rate', max_ratio=1.2, min_difference=0.001, min_requests=50)"
    )
    assert str(comparison) == (
        "error_rate: canary <= 1.2x stable (changes within 0.10% pass) "
        "(judged from 50 requests per arm)"
    )
    assert str(compare("success_rate", max_decrease=0.01, min_ratio=0.9)) == (
        "success_rate: canary >= 0.9x stable, canary >= stable - 1.00%"
    )
    assert compare("p99", max_ratio=1.2) == compare("p99", max_ratio=1.2)
    assert str(relative(compare("p99", max_ratio=1.2))) == (
        "relative to stable: p99: canary <= 1.2x stable; no data: inconclusive"
    )


def test_judging_is_fast() -> None:
    decider = relative(
        compare("error_rate", max_ratio=1.2, min_difference=0.001, min_requests=100),
        compare("success_rate", max_decrease=0.01),
        compare("cpu", max_ratio=1.3, min_ratio=0.7),
    )
    seen = observation(canary_gauges={"cpu": 0.6}, stable_gauges={"cpu": 0.5})
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        decider.judge(None, seen)
    per_metric = (time.perf_counter() - started) / runs / 3
    # A few microseconds on a laptop; the bound is loose for slow, shared CI machines.
    assert per_metric < 100e-6


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric": "", "max_ratio": 1.2}, "metric"),
        ({"metric": "p99"}, "max_ratio"),
        ({"metric": "p99", "max_ratio": 0.8}, "max_ratio"),
        ({"metric": "p99", "max_ratio": "1.2"}, "max_ratio"),
        ({"metric": "p99", "max_ratio": math.inf}, "max_ratio"),
        ({"metric": "p99", "min_ratio": 1.5}, "min_ratio"),
        ({"metric": "p99", "min_ratio": 0}, "min_ratio"),
        ({"metric": "p99", "max_increase": -0.1}, "max_increase"),
        ({"metric": "p99", "max_decrease": True}, "max_decrease"),
        ({"metric": "p99", "max_ratio": 1.2, "min_difference": -1}, "min_difference"),
        ({"metric": "p99", "max_ratio": 1.2, "min_difference": None}, "min_difference"),
        ({"metric": "p99", "max_ratio": 1.2, "min_requests": -1}, "min_requests"),
        ({"metric": "p99", "max_ratio": 1.2, "min_requests": 1.5}, "min_requests"),
        ({"metric": "p99", "max_ratio": 1.2, "direction": "up"}, "direction"),
        ({"metric": "p99", "max_ratio": 1.2, "direction": "decrease"}, "max_ratio"),
        ({"metric": "p99", "max_increase": 1, "direction": "decrease"}, "max_increase"),
        ({"metric": "p99", "min_ratio": 0.8, "direction": "increase"}, "min_ratio"),
        ({"metric": "p99", "max_decrease": 1, "direction": "increase"}, "max_decrease"),
        ({"metric": "p99", "max_ratio": 1.2, "direction": "either"}, "min_ratio"),
        ({"metric": "p99", "min_ratio": 0.8, "direction": "either"}, "max_ratio"),
        ({"metric": "error_rate", "max_increase": 2}, "max_increase"),
        ({"metric": "error_rate", "max_ratio": 2, "min_difference": 5}, "min_difference"),
    ],
)
def test_invalid_comparisons_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Comparison(**kwargs)
    assert info.value.field == field


def test_invalid_deciders_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        relative()
    assert info.value.field == "comparisons"
    with pytest.raises(ConfigError) as info:
        RelativeDecider(comparisons=[compare("p99", max_ratio=2), "p99"])
    assert info.value.field == "comparisons[1]"
    with pytest.raises(ConfigError) as info:
        relative(compare("p99", max_ratio=2), no_data="skip")
    assert info.value.field == "no_data"
    with pytest.raises(ConfigError) as info:
        RelativeDecider(comparisons="p99")
    assert info.value.field == "comparisons"


def test_a_single_comparison_is_accepted() -> None:
    decider = RelativeDecider(comparisons=compare("p99", max_ratio=2))
    assert len(decider.comparisons) == 1


# --- properties -----------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=2000)


@given(
    canary_errors=counts,
    stable_errors=counts,
    max_ratio=st.floats(min_value=1.0, max_value=10.0),
)
def test_ratio_rule_fails_exactly_when_the_canary_exceeds_the_allowed_ratio(
    canary_errors: int, stable_errors: int, max_ratio: float
) -> None:
    comparison = compare("error_rate", max_ratio=max_ratio)
    seen = observation(
        canary_requests=2000,
        canary_errors=canary_errors,
        stable_requests=2000,
        stable_errors=stable_errors,
    )
    result = check(comparison, seen)
    # Exact arithmetic on the counts: fail iff canary / stable > max_ratio (0/0 is no change).
    if stable_errors == 0:
        expected = canary_errors > 0
    else:
        expected = canary_errors / stable_errors > max_ratio * (1 + 1e-9)
    assert (result.kind is FAIL) == expected


@given(
    canary=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    stable=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    floor=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_a_change_within_min_difference_never_fails(
    canary: float, stable: float, floor: float
) -> None:
    comparison = compare("g", max_ratio=1.0, min_ratio=1.0, min_difference=floor)
    result = check(comparison, gauges(canary, stable, name="g"))
    if abs(canary - stable) <= floor:
        assert result.kind is PASS
    assert result.kind in (PASS, FAIL)


@given(value=st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_a_canary_equal_to_stable_always_passes(value: float) -> None:
    comparison = compare("g", max_ratio=1.0, min_ratio=1.0, max_increase=0, max_decrease=0)
    assert check(comparison, gauges(value, value, name="g")).kind is PASS


# --- integration ----------------------------------------------------------------------

PLAN = linear(10, 30, hold=120, analysis_interval=30)
DECIDER = relative(compare("error_rate", max_ratio=1.5, min_difference=0.01, min_requests=500))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_3x_error_regression_rolls_back(seed: int) -> None:
    metrics = ScriptedMetrics(
        requests_per_second=1000,
        error_rate=regression(at=150, base=0.01, factor=3),
        seed=seed,
    )
    outcome = simulate(PLAN, decider=DECIDER, metrics=metrics).outcome
    assert outcome.rolled_back
    assert outcome.finished_at <= 210  # within two windows of the regression
    assert outcome.reason.startswith("analysis failed: error_rate: canary ")
    assert "x > allowed 1.5x" in outcome.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_healthy_canary_is_promoted(seed: int) -> None:
    metrics = ScriptedMetrics(requests_per_second=1000, error_rate=0.01, seed=seed)
    outcome = simulate(PLAN, decider=DECIDER, metrics=metrics).outcome
    assert outcome.promoted
    verdicts = [entry.verdict for entry in outcome.verdicts]
    assert verdicts and all(v is PASS for v in verdicts)


# --- traffic counts per unit of share ------------------------------------------------


@attrs.frozen(kw_only=True)
class SplitObservation(Observation):
    """An observation that carries its window's split, which the decider reads if present."""

    split: TrafficSplit


def with_split(seen: Observation, split: TrafficSplit) -> SplitObservation:
    return SplitObservation(
        start=seen.start,
        end=seen.end,
        stable=seen.stable,
        canary=seen.canary,
        split=split,
    )


def test_throughput_is_compared_per_unit_of_the_splits_share() -> None:
    # A healthy canary at 10% gets a ninth of stable's requests: the same rate per share.
    decider = relative(compare("throughput", min_ratio=0.8))
    healthy = with_split(
        observation(canary_requests=300, stable_requests=2700), TrafficSplit(canary_percent=10)
    )
    verdict = verdict_of(decider, healthy)
    assert verdict.kind is PASS
    assert verdict.reason == (
        "throughput: canary 100/s vs stable 100/s per unit of share "
        "(canary 10% of the split): no change"
    )
    # Half the requests its share should bring (the others failing before they are counted).
    starved = with_split(
        observation(canary_requests=150, stable_requests=2700), TrafficSplit(canary_percent=10)
    )
    verdict = verdict_of(decider, starved)
    assert verdict.kind is FAIL
    assert verdict.reason == (
        "throughput: canary 50/s vs stable 100/s per unit of share "
        "(canary 10% of the split) = 0.5x < allowed 0.8x"
    )


def test_request_and_error_counts_are_per_share_too() -> None:
    split = TrafficSplit(canary_percent=25)
    seen = with_split(
        observation(canary_requests=250, canary_errors=5, stable_requests=750, stable_errors=15),
        split,
    )
    for metric in ("requests", "errors"):
        result = check(compare(metric, max_ratio=1.1), seen)
        assert result.kind is PASS, result.reason
        assert "per unit of share (canary 25% of the split)" in result.reason


def test_without_a_plain_weight_the_share_is_the_measured_one() -> None:
    # Header routes send the canary a share no weight states: the measured share is used,
    # and per unit of it both arms are the same rate, which the reason says.
    route = HeaderRoute(header="User-Agent", value="Chrome", match="prefix", percent=10)
    seen = with_split(
        observation(canary_requests=40, stable_requests=960),
        TrafficSplit(canary_percent=0, header_routes=[route]),
    )
    result = check(compare("throughput", min_ratio=0.8), seen)
    assert result.kind is PASS
    assert "per unit of share (canary 4% of requests)" in result.reason
    # An observation without a split: the same rule.
    result = check(compare("throughput", min_ratio=0.8), observation(canary_requests=100))
    assert result.kind is PASS
    assert "(canary 9.09% of requests)" in result.reason


# --- at 100%: the stable record ------------------------------------------------------


def at(end: float, **arms: Any) -> Observation:
    base = observation(**arms)
    return Observation(start=end - 30.0, end=end, stable=base.stable, canary=base.canary)


def run(decider: RelativeDecider, observations: list[Observation]) -> list[Any]:
    state = decider.initial_state()
    verdicts = []
    for seen in observations:
        judgement = decider.judge(json.loads(json.dumps(state)), seen)
        state = judgement.state
        verdicts.append(judgement.verdict)
    return verdicts


def test_at_100_percent_the_canary_is_judged_against_the_stable_record_with_its_age() -> None:
    decider = relative(compare("error_rate", max_ratio=1.5), compare("cpu", max_ratio=1.2))
    before = [
        at(30.0 * i, stable_errors=10 + i, stable_gauges={"cpu": 0.5}, canary_gauges={"cpu": 0.5})
        for i in (1, 2, 3)
    ]
    full = at(
        330.0, stable_requests=0, stable_errors=0, canary_errors=12, canary_gauges={"cpu": 0.5}
    )
    last = run(decider, [*before, full])[-1]
    assert last.kind is PASS
    # Requests-weighted: (11 + 12 + 13) / 3000 = 1.2%.
    assert last.reason == (
        "error_rate: canary 1.20% vs stable 1.20%: no change; "
        "cpu: canary 0.5 vs stable 0.5: no change "
        "(stable: record of 3 windows before 100%, the last ended 4m ago)"
    )
    bad = at(
        330.0, stable_requests=0, stable_errors=0, canary_errors=40, canary_gauges={"cpu": 0.5}
    )
    failed = run(decider, [*before, bad])[-1]
    assert failed.kind is FAIL
    assert failed.reason == (
        "error_rate: canary 4.00% vs stable 1.20% = 3.33x > allowed 1.5x "
        "(stable: record of 3 windows before 100%, the last ended 4m ago)"
    )


def test_the_record_keeps_the_last_record_windows_and_nothing_from_100_percent() -> None:
    decider = relative(compare("cpu", max_ratio=1.2), record_windows=2)
    windows = [
        at(30.0, stable_gauges={"cpu": 0.1}, canary_gauges={"cpu": 0.1}),
        at(60.0, stable_gauges={"cpu": 0.5}, canary_gauges={"cpu": 0.5}),
        at(90.0, stable_gauges={"cpu": 0.7}, canary_gauges={"cpu": 0.7}),
        # At 100% an idle stable version still reports its CPU: never recorded, not used.
        at(
            120.0,
            stable_requests=0,
            stable_errors=0,
            stable_gauges={"cpu": 0.01},
            canary_gauges={"cpu": 0.6},
        ),
    ]
    state = decider.initial_state()
    for seen in windows:
        judgement = decider.judge(state, seen)
        state = judgement.state
    assert state == {"record": {"cpu": [[60.0, 0.5, 30.0, 1000], [90.0, 0.7, 30.0, 1000]]}}
    assert judgement.verdict.kind is PASS
    assert judgement.verdict.reason.startswith("cpu: canary 0.6 vs stable 0.6: no change")


def test_at_100_percent_without_a_record_a_metric_has_no_data_and_says_why() -> None:
    decider = relative(compare("error_rate", max_ratio=1.5))
    verdict = verdict_of(decider, observation(stable_requests=0, stable_errors=0))
    assert verdict.kind is INCONCLUSIVE
    assert verdict.reason == (
        "error_rate: no stable data (at 100%, and no stable record from before)"
    )


def test_at_100_percent_min_requests_counts_the_records_requests() -> None:
    decider = relative(compare("error_rate", max_ratio=1.5, min_requests=1500))
    verdicts = run(
        decider,
        [at(30.0, stable_requests=1000), at(60.0, stable_requests=0, stable_errors=0)],
    )
    assert verdicts[0].kind is NOT_YET
    assert verdicts[1].kind is NOT_YET
    assert "stable 1000 (need 1500 each) (stable: record of 1 window" in verdicts[1].reason
    verdicts = run(
        decider,
        [
            at(30.0, stable_requests=1000),
            at(60.0, stable_requests=1000),
            at(90.0, stable_requests=0, stable_errors=0, canary_requests=2000, canary_errors=20),
        ],
    )
    assert verdicts[-1].kind is PASS


def test_a_window_is_at_100_percent_by_its_split_when_the_observation_has_one() -> None:
    assert at_full_canary(with_split(observation(), TrafficSplit(canary_percent=100)))
    assert not at_full_canary(
        with_split(observation(stable_requests=0, stable_errors=0), TrafficSplit(canary_percent=50))
    )
    assert at_full_canary(observation(stable_requests=0, stable_errors=0))
    assert not at_full_canary(
        observation(stable_requests=0, stable_errors=0, canary_requests=0, canary_errors=0)
    )


@pytest.mark.parametrize(
    "state",
    [
        [1, 2],
        {"record": []},
        {"record": {"cpu": "x"}},
        {"record": {"cpu": [[1, 2, 3]]}},
        {"record": {"cpu": [[1, 2, 3, 4.5]]}},
        {"record": {"cpu": [[1, math.nan, 3, 4]]}},
    ],
)
def test_a_malformed_saved_state_is_refused_naming_it(state: Any) -> None:
    with pytest.raises(ConfigError) as info:
        relative(compare("cpu", max_ratio=1.2)).judge(state, observation())
    assert info.value.field.startswith("state")


def test_record_windows_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError) as info:
            relative(compare("cpu", max_ratio=1.2), record_windows=bad)  # type: ignore[arg-type]
        assert info.value.field == "record_windows"


FULL_BAKE = linear(25, 25, hold=60, final_bake=300, analysis_interval=30)
JUDGE = relative(
    compare("error_rate", max_ratio=2, min_difference=0.01),
    compare("p99", max_ratio=1.3),
    compare("throughput", min_ratio=0.8),
)


def test_a_healthy_canary_is_promoted_through_a_watched_100_percent_step() -> None:
    outcome = simulate(
        FULL_BAKE, decider=JUDGE, metrics=ScriptedMetrics(requests_per_second=200, seed=1)
    ).outcome
    assert outcome.phase is Phase.SUCCEEDED
    full = [e for e in outcome.timeline if e.kind == "verdict" and e.canary_percent == 100]
    assert len(full) == 10  # the 5 minutes at 100% were judged, window by window
    assert all(e.verdict is PASS for e in full)
    assert "(stable: record of 6 windows before 100%, the last ended 5m ago)" in full[-1].reason


def test_a_canary_bad_only_at_100_percent_is_rolled_back_there() -> None:
    def errors(_t: float, arm: Arm, percent: float) -> float:
        return 0.08 if arm is Arm.CANARY and percent >= 100 else 0.01

    outcome = simulate(
        FULL_BAKE,
        decider=JUDGE,
        metrics=ScriptedMetrics(requests_per_second=200, error_rate=errors, seed=1),
    ).outcome
    assert outcome.phase is Phase.ROLLED_BACK
    assert outcome.reason.startswith("analysis failed: error_rate: canary 8.15% vs stable 0.86%")
    assert outcome.reason.endswith(
        "(stable: record of 6 windows before 100%, the last ended 30s ago)"
    )
