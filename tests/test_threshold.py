from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import (
    Arm,
    ConfigError,
    Decider,
    Observation,
    Verdict,
    VerdictKind,
)
from canarykit.deciders import (
    Bound,
    NoDataPolicy,
    ThresholdDecider,
    bound,
    format_value,
    threshold,
)
from canarykit.testing import observation


def judge_all(decider: ThresholdDecider, observations: list[Observation]) -> list[Verdict]:
    state = decider.initial_state()
    verdicts = []
    for seen in observations:
        judgement = decider.judge(state, seen)
        state = judgement.state
        verdicts.append(judgement.verdict)
    return verdicts


ERRORS_MAX_2 = threshold(bound("error_rate", max=0.02))


# --- bounds -----------------------------------------------------------------------------


def test_value_equal_to_max_passes() -> None:
    verdict = ERRORS_MAX_2.judge(
        ERRORS_MAX_2.initial_state(), observation(canary_errors=20)
    ).verdict
    assert verdict.kind is VerdictKind.PASS
    assert verdict.reason == "error_rate: canary 2.00% <= max 2.00%"


def test_value_equal_to_min_passes() -> None:
    decider = threshold(bound("success_rate", min=0.98))
    verdict = decider.judge(decider.initial_state(), observation(canary_errors=20)).verdict
    assert verdict.kind is VerdictKind.PASS
    assert verdict.metrics[0].value == pytest.approx(0.98)


def test_value_above_max_fails_with_value_and_bound_in_reason() -> None:
    judgement = ERRORS_MAX_2.judge(ERRORS_MAX_2.initial_state(), observation(canary_errors=51))
    assert judgement.verdict.kind is VerdictKind.FAIL
    assert judgement.verdict.reason == "error_rate: canary 5.10% > max 2.00% (failed check 1 of 1)"
    assert judgement.state == {"failed_checks": 1}


def test_value_below_min_fails() -> None:
    decider = threshold(bound("success_rate", min=0.99))
    verdict = decider.judge(decider.initial_state(), observation(canary_errors=51)).verdict
    assert verdict.kind is VerdictKind.FAIL
    assert "canary 94.90% < min 99.00%" in verdict.reason


def test_range_with_both_ends_reports_the_range() -> None:
    decider = threshold(bound("cpu", min=0.1, max=0.8))
    verdict = decider.judge(None, observation(canary_gauges={"cpu": 0.8})).verdict
    assert verdict.kind is VerdictKind.PASS
    assert verdict.reason == "cpu: canary 0.8 within [0.1, 0.8]"


def test_latency_reasons_are_in_milliseconds() -> None:
    decider = threshold(bound("p99", max=0.1))
    slow = observation(canary_latency=[0.3] * 200)
    verdict = decider.judge(None, slow).verdict
    assert verdict.kind is VerdictKind.FAIL
    assert " ms > max 100 ms" in verdict.reason
    fast = observation(canary_latency=[0.02] * 200)
    assert decider.judge(None, fast).verdict.kind is VerdictKind.PASS


def test_stable_arm_bound_checks_the_stable_value() -> None:
    decider = threshold(bound("error_rate", max=0.02, arm="stable"))
    verdict = decider.judge(None, observation(stable_errors=50, canary_errors=0)).verdict
    assert verdict.kind is VerdictKind.FAIL
    assert "stable 5.00% > max 2.00%" in verdict.reason


def test_all_metric_verdicts_are_kept_and_worst_wins() -> None:
    decider = threshold(bound("error_rate", max=0.02), bound("cpu", max=0.5))
    verdict = decider.judge(None, observation(canary_gauges={"cpu": 0.9})).verdict
    assert [m.metric for m in verdict.metrics] == ["error_rate", "cpu"]
    assert [m.kind for m in verdict.metrics] == [VerdictKind.PASS, VerdictKind.FAIL]
    assert verdict.kind is VerdictKind.FAIL
    assert verdict.reason == "cpu: canary 0.9 > max 0.5 (failed check 1 of 1)"


def test_pass_reason_lists_every_metric() -> None:
    decider = threshold(bound("error_rate", max=0.02), bound("cpu", max=0.5))
    verdict = decider.judge(None, observation(canary_gauges={"cpu": 0.25})).verdict
    assert verdict.kind is VerdictKind.PASS
    assert verdict.reason == "error_rate: canary 1.00% <= max 2.00%; cpu: canary 0.25 <= max 0.5"


# --- failed checks ----------------------------------------------------------------------


def test_failed_check_below_the_limit_is_not_yet_never_pass() -> None:
    decider = threshold(bound("error_rate", max=0.02), failure_limit=3)
    judgement = decider.judge(decider.initial_state(), observation(canary_errors=51))
    assert judgement.verdict.kind is VerdictKind.NOT_YET
    assert judgement.verdict.reason == "error_rate: canary 5.10% > max 2.00% (failed check 1 of 3)"
    # The metric verdict is demoted too, so combining metric verdicts cannot roll back early.
    assert judgement.verdict.metrics[0].kind is VerdictKind.NOT_YET
    assert judgement.state == {"failed_checks": 1}


def test_failed_checks_count_cumulatively_not_consecutively() -> None:
    decider = threshold(bound("error_rate", max=0.02), failure_limit=2)
    bad, good = observation(canary_errors=50), observation(canary_errors=5)
    kinds = [v.kind for v in judge_all(decider, [bad, good, good, bad])]
    assert kinds == [VerdictKind.NOT_YET, VerdictKind.PASS, VerdictKind.PASS, VerdictKind.FAIL]


def test_fail_is_final_once_the_limit_is_reached() -> None:
    decider = threshold(bound("error_rate", max=0.02))
    bad, good = observation(canary_errors=50), observation(canary_errors=5)
    verdicts = judge_all(decider, [bad, good])
    last = verdicts[-1]
    assert last.kind is VerdictKind.FAIL
    assert last.reason == "failure limit already reached (1 of 1 failed checks)"


def test_state_is_json_data_and_resumes() -> None:
    decider = threshold(bound("error_rate", max=0.02), failure_limit=2)
    first = decider.judge(decider.initial_state(), observation(canary_errors=50))
    saved = json.loads(json.dumps(first.state))
    second = decider.judge(saved, observation(canary_errors=50))
    assert second.verdict.kind is VerdictKind.FAIL


@pytest.mark.parametrize("state", [{"failed_checks": -1}, {"failed_checks": "2"}, [], {}])
def test_malformed_state_is_refused(state: object) -> None:
    with pytest.raises(ConfigError, match=r"^state:"):
        ERRORS_MAX_2.judge(state, observation())


# --- no data ----------------------------------------------------------------------------

NO_CANARY_TRAFFIC = observation(canary_requests=0, canary_errors=0)


def test_no_data_inconclusive_pauses_by_default() -> None:
    verdict = ERRORS_MAX_2.judge(None, NO_CANARY_TRAFFIC).verdict
    assert ERRORS_MAX_2.no_data is NoDataPolicy.INCONCLUSIVE
    assert verdict.kind is VerdictKind.INCONCLUSIVE
    assert verdict.reason == "error_rate: no canary data"


def test_no_data_fail_counts_a_failed_check() -> None:
    decider = threshold(bound("error_rate", max=0.02), no_data="fail", failure_limit=2)
    first = decider.judge(decider.initial_state(), NO_CANARY_TRAFFIC)
    assert first.verdict.kind is VerdictKind.NOT_YET
    assert first.verdict.reason == (
        "error_rate: no canary data, counted as a failed check (failed check 1 of 2)"
    )
    second = decider.judge(first.state, NO_CANARY_TRAFFIC)
    assert second.verdict.kind is VerdictKind.FAIL


def test_no_data_ignore_leaves_the_metric_out() -> None:
    decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.5), no_data="ignore")
    verdict = decider.judge(None, observation()).verdict  # errors but no latency data
    assert verdict.kind is VerdictKind.PASS
    assert [m.metric for m in verdict.metrics] == ["error_rate"]
    assert verdict.reason.endswith("; no data, ignored: p99")


def test_no_data_ignore_is_never_a_silent_pass() -> None:
    decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.5), no_data="ignore")
    verdict = decider.judge(None, NO_CANARY_TRAFFIC).verdict
    assert verdict.kind is VerdictKind.NOT_YET
    assert verdict.metrics == ()
    assert "no data for any metric" in verdict.reason


def test_missing_gauge_is_no_data() -> None:
    decider = threshold(bound("cpu", max=0.8))
    assert decider.judge(None, observation()).verdict.kind is VerdictKind.INCONCLUSIVE
    nan = observation(canary_gauges={"cpu": math.nan})
    assert decider.judge(None, nan).verdict.kind is VerdictKind.INCONCLUSIVE


def test_failed_check_with_missing_data_elsewhere_pauses() -> None:
    # A failed check below the limit is NOT_YET, but another metric without data makes
    # the window INCONCLUSIVE: the worse of the two wins and both reasons are given.
    decider = threshold(bound("error_rate", max=0.02), bound("cpu", max=0.8), failure_limit=3)
    verdict = decider.judge(None, observation(canary_errors=50)).verdict
    assert verdict.kind is VerdictKind.INCONCLUSIVE
    assert verdict.reason == (
        "cpu: no canary data; error_rate: canary 5.00% > max 2.00% (failed check 1 of 3)"
    )


# --- construction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric": "error_rate"}, "max"),
        ({"metric": "cpu", "min": 2.0, "max": 1.0}, "min"),
        ({"metric": "cpu", "max": math.inf}, "max"),
        ({"metric": "cpu", "max": "1"}, "max"),
        ({"metric": "error_rate", "max": 2}, "max"),
        ({"metric": "success_rate", "min": -0.1}, "min"),
        ({"metric": "", "max": 1.0}, "metric"),
        ({"metric": "cpu", "max": 1.0, "arm": "baseline"}, "arm"),
    ],
)
def test_bad_bounds_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Bound(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bounds": ()}, "bounds"),
        ({"bounds": ("error_rate",)}, "bounds[0]"),
        ({"bounds": (Bound(metric="cpu", max=1),), "failure_limit": 0}, "failure_limit"),
        ({"bounds": (Bound(metric="cpu", max=1),), "failure_limit": True}, "failure_limit"),
        ({"bounds": (Bound(metric="cpu", max=1),), "no_data": "skip"}, "no_data"),
    ],
)
def test_bad_deciders_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ThresholdDecider(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_reprs_are_readable() -> None:
    decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.5, arm="stable"))
    assert repr(decider) == (
        "ThresholdDecider(bounds=(Bound(metric='error_rate', max=0.02), "
        "Bound(metric='p99', max=0.5, arm=Arm.STABLE)), failure_limit=1, "
        "no_data=NoDataPolicy.INCONCLUSIVE)"
    )
    assert str(bound("p99", min=0.001, max=0.5)) == "p99 (canary) in [1 ms, 500 ms]"


def test_values_and_equality() -> None:
    assert bound("error_rate", max=0.02) == Bound(metric="error_rate", max=0.02, arm=Arm.CANARY)
    assert threshold(bound("cpu", max=1), no_data="ignore").no_data is NoDataPolicy.IGNORE
    assert isinstance(ERRORS_MAX_2, Decider)


def test_public_names_report_the_public_module() -> None:
    for obj in (Bound, NoDataPolicy, ThresholdDecider, bound, threshold, format_value):
        assert obj.__module__ == "canarykit.deciders"


def test_format_value() -> None:
    assert format_value("error_rate", 0.051) == "5.10%"
    assert format_value("p99", 0.1234) == "123.4 ms"
    assert format_value("requests", 300.0) == "300"
    assert format_value("throughput", 12.5) == "12.5/s"


# --- properties -------------------------------------------------------------------------


@given(
    limit=st.integers(min_value=1, max_value=5),
    windows=st.lists(
        st.tuples(st.integers(0, 60), st.booleans()),  # (canary errors of 1000, has data)
        min_size=1,
        max_size=25,
    ),
    no_data=st.sampled_from(list(NoDataPolicy)),
)
def test_verdict_is_fail_exactly_when_failed_checks_reach_the_limit(
    limit: int, windows: list[tuple[int, bool]], no_data: NoDataPolicy
) -> None:
    decider = threshold(bound("error_rate", max=0.02), failure_limit=limit, no_data=no_data)
    state = decider.initial_state()
    failed = 0
    for errors, has_data in windows:
        seen = (
            observation(canary_errors=errors)
            if has_data
            else observation(canary_requests=0, canary_errors=0)
        )
        violated = errors > 20 if has_data else no_data is NoDataPolicy.FAIL
        failed += violated
        judgement = decider.judge(state, seen)
        state = judgement.state
        kind = judgement.verdict.kind
        assert state == {"failed_checks": failed}
        assert (kind is VerdictKind.FAIL) == (failed >= limit)
        # Never a pass on a window that broke a bound or had no data.
        if violated or not has_data:
            assert kind is not VerdictKind.PASS
        elif failed < limit:
            assert kind is VerdictKind.PASS
