from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import (
    ArmStats,
    ConfigError,
    Decider,
    Judgement,
    MetricVerdict,
    Observation,
    Verdict,
    VerdictKind,
    linear,
)
from canarykit.deciders import AllOf, Limits, bound, compare, limited, relative, threshold
from canarykit.testing import ScriptedMetrics, regression, simulate

PASS, NOT_YET, INCONCLUSIVE, FAIL = (
    VerdictKind.PASS,
    VerdictKind.NOT_YET,
    VerdictKind.INCONCLUSIVE,
    VerdictKind.FAIL,
)
KINDS = [PASS, NOT_YET, INCONCLUSIVE, FAIL]
OBSERVATION = Observation(
    start=0.0,
    end=30.0,
    stable=ArmStats(requests=1000, errors=10),
    canary=ArmStats(requests=1000, errors=10),
)


@attrs.frozen
class Scripted:
    """An inner decider answering a fixed sequence of kinds; its state is the window index."""

    kinds: tuple[VerdictKind, ...]
    early: bool = False

    def initial_state(self) -> int:
        return 0

    def judge(self, state: Any, observation: Observation) -> Judgement:
        kind = self.kinds[state]
        metric = MetricVerdict(metric="error_rate", kind=kind, reason=f"window {state}", value=0.01)
        verdict = Verdict(
            kind=kind,
            reason=f"error_rate: window {state} {kind.value}",
            metrics=[metric],
            early_pass=self.early and kind is PASS,
        )
        return Judgement(verdict, state + 1)


@attrs.frozen
class AsyncScripted:
    """The same, answering with an awaitable."""

    inner: Scripted

    def initial_state(self) -> int:
        return 0

    def judge(self, state: Any, observation: Observation) -> Awaitable[Judgement]:
        async def later() -> Judgement:
            await anyio.sleep(0)
            return self.inner.judge(state, observation)

        return later()


def run(decider: Decider, windows: int, *, json_round_trip: bool = False) -> list[Verdict]:
    state = decider.initial_state()
    verdicts = []
    for _ in range(windows):
        if json_round_trip:
            state = json.loads(json.dumps(state))
        judgement = decider.judge(state, OBSERVATION)
        assert isinstance(judgement, Judgement)
        state = judgement.state
        verdicts.append(judgement.verdict)
    return verdicts


def kinds_of(
    inner: Sequence[VerdictKind], *, json_round_trip: bool = False, **limits: Any
) -> list[VerdictKind]:
    decider = limited(Scripted(tuple(inner)), **limits)
    return [v.kind for v in run(decider, len(inner), json_round_trip=json_round_trip)]


# --- failure limits ------------------------------------------------------------------


def test_default_passes_every_verdict_through() -> None:
    inner = [PASS, NOT_YET, INCONCLUSIVE, PASS, FAIL]
    assert kinds_of(inner) == inner
    verdicts = run(limited(Scripted(tuple(inner))), len(inner))
    assert verdicts[0].reason == "error_rate: window 0 pass"
    assert verdicts[2].reason == "error_rate: window 2 inconclusive (inconclusive window 1 of 1)"
    assert verdicts[4].reason == "error_rate: window 4 fail (failed window 1 of 1)"


def test_failure_limit_counts_failed_windows_over_the_whole_analysis() -> None:
    inner = (FAIL, PASS, FAIL, PASS, FAIL)
    verdicts = run(limited(Scripted(inner), failure_limit=3), 5)
    assert [v.kind for v in verdicts] == [NOT_YET, PASS, NOT_YET, PASS, FAIL]
    assert verdicts[0].reason == "error_rate: window 0 fail (failed window 1 of 3)"
    # Below the limit the metric verdicts are lowered too, with the count in the reason.
    assert verdicts[0].metrics[0].kind is NOT_YET
    assert verdicts[0].metrics[0].reason == "window 0 (failed window 1 of 3)"
    assert verdicts[4].reason == "error_rate: window 4 fail (failed window 3 of 3)"
    assert verdicts[4].metrics[0].kind is FAIL


def test_consecutive_failures_alone_needs_a_run() -> None:
    decider = limited(Scripted((FAIL, PASS, FAIL, FAIL, FAIL)), consecutive_failures=3)
    assert decider.failure_limit is None
    verdicts = run(decider, 5)
    assert [v.kind for v in verdicts] == [NOT_YET, PASS, NOT_YET, NOT_YET, FAIL]
    assert verdicts[3].reason == "error_rate: window 3 fail (2 of 3 in a row)"


def test_consecutive_failures_with_a_budget_rolls_back_on_whichever_comes_first() -> None:
    inner = (FAIL, PASS, FAIL, PASS, FAIL)
    assert kinds_of(inner, failure_limit=3, consecutive_failures=2)[-1] is FAIL
    verdicts = run(limited(Scripted(inner), failure_limit=3, consecutive_failures=2), 5)
    assert verdicts[4].reason == (
        "error_rate: window 4 fail (failed window 3 of 3, 1 of 2 in a row)"
    )
    assert kinds_of((FAIL, FAIL), failure_limit=5, consecutive_failures=2) == [NOT_YET, FAIL]


def test_a_rollback_is_final() -> None:
    inner = (FAIL, PASS, INCONCLUSIVE)
    verdicts = run(limited(Scripted(inner)), 3)
    assert [v.kind for v in verdicts] == [FAIL, FAIL, FAIL]
    assert verdicts[1].reason == (
        "failure limit already reached (failed window 1 of 1); "
        "this window: pass: error_rate: window 1 pass"
    )


# --- inconclusive and success limits -------------------------------------------------


def test_inconclusive_limit_pauses_only_once_reached() -> None:
    inner = (INCONCLUSIVE, PASS, INCONCLUSIVE, INCONCLUSIVE)
    verdicts = run(limited(Scripted(inner), inconclusive_limit=2), 4)
    assert [v.kind for v in verdicts] == [NOT_YET, PASS, INCONCLUSIVE, INCONCLUSIVE]
    assert verdicts[0].reason.endswith("(inconclusive window 1 of 2)")
    assert verdicts[0].metrics[0].kind is NOT_YET


def test_consecutive_success_limit_passes_only_after_a_run() -> None:
    inner = (PASS, PASS, NOT_YET, PASS, PASS, PASS, PASS)
    verdicts = run(limited(Scripted(inner), consecutive_success_limit=3), 7)
    assert [v.kind for v in verdicts] == [
        NOT_YET,
        NOT_YET,
        NOT_YET,
        NOT_YET,
        NOT_YET,
        PASS,
        PASS,
    ]
    assert verdicts[1].reason == "error_rate: window 1 pass (pass 2 of 3 in a row)"
    assert verdicts[6].reason == "error_rate: window 6 pass (pass 3 of 3 in a row)"


def test_early_pass_only_once_the_wrapper_passes() -> None:
    decider = limited(Scripted((PASS, PASS), early=True), consecutive_success_limit=2)
    first, second = run(decider, 2)
    assert (first.kind, first.early_pass) == (NOT_YET, False)
    assert (second.kind, second.early_pass) == (PASS, True)


# --- dry run --------------------------------------------------------------------------


def test_dry_run_reports_but_never_acts() -> None:
    inner = (FAIL, INCONCLUSIVE, NOT_YET, PASS)
    verdicts = run(limited(Scripted(inner, early=True), dry_run=True), 4)
    assert [v.kind for v in verdicts] == [PASS] * 4
    assert not any(v.early_pass for v in verdicts)
    assert verdicts[0].reason == ("dry run: fail: error_rate: window 0 fail (failed window 1 of 1)")
    metric = verdicts[0].metrics[0]
    assert metric.kind is PASS
    assert metric.reason == "dry run: fail: window 0"
    assert str(metric) == "error_rate: pass (dry run: fail: window 0)"


def test_dry_run_in_an_all_of_does_not_mask_the_real_decider() -> None:
    real = threshold(bound("error_rate", max=0.5))
    dry = limited(threshold(bound("error_rate", max=0.001)), dry_run=True)
    both = real & dry
    judgement = both.judge(both.initial_state(), OBSERVATION)
    assert isinstance(judgement, Judgement)
    assert judgement.verdict.kind is PASS
    assert "dry run: fail: error_rate: canary 1.00% > max 0.10%" in judgement.verdict.reason
    assert [m.kind for m in judgement.verdict.metrics] == [PASS, PASS]


# --- properties -----------------------------------------------------------------------

sequences = st.lists(st.sampled_from(KINDS), min_size=1, max_size=30)
optional_limit = st.none() | st.integers(min_value=1, max_value=5)


def expected_kinds(
    inner: Sequence[VerdictKind],
    failure_limit: int | None,
    consecutive_failures: int | None,
    inconclusive_limit: int,
    consecutive_success_limit: int,
) -> list[VerdictKind]:
    """The rule, written out directly over prefixes of the inner verdicts."""
    if failure_limit is None and consecutive_failures is None:
        failure_limit = 1

    def run_length(prefix: Sequence[VerdictKind], kind: VerdictKind) -> int:
        length = 0
        for item in reversed(prefix):
            if item is not kind:
                break
            length += 1
        return length

    result = []
    for index, kind in enumerate(inner):
        prefixes = [inner[: j + 1] for j in range(index + 1)]
        failed = any(
            p[-1] is FAIL
            and (
                (failure_limit is not None and p.count(FAIL) >= failure_limit)
                or (
                    consecutive_failures is not None and run_length(p, FAIL) >= consecutive_failures
                )
            )
            for p in prefixes
        )
        prefix = inner[: index + 1]
        if failed:
            result.append(FAIL)
        elif kind is FAIL:
            result.append(NOT_YET)
        elif kind is INCONCLUSIVE:
            enough = prefix.count(INCONCLUSIVE) >= inconclusive_limit
            result.append(INCONCLUSIVE if enough else NOT_YET)
        elif kind is PASS:
            enough = run_length(prefix, PASS) >= consecutive_success_limit
            result.append(PASS if enough else NOT_YET)
        else:
            result.append(NOT_YET)
    return result


@given(
    inner=sequences,
    failure_limit=optional_limit,
    consecutive_failures=optional_limit,
    inconclusive_limit=st.integers(min_value=1, max_value=5),
    consecutive_success_limit=st.integers(min_value=1, max_value=5),
    json_round_trip=st.booleans(),
)
def test_wrapper_follows_the_rule_for_any_sequence(
    inner: list[VerdictKind],
    failure_limit: int | None,
    consecutive_failures: int | None,
    inconclusive_limit: int,
    consecutive_success_limit: int,
    json_round_trip: bool,
) -> None:
    limits: dict[str, Any] = {
        "failure_limit": failure_limit,
        "consecutive_failures": consecutive_failures,
        "inconclusive_limit": inconclusive_limit,
        "consecutive_success_limit": consecutive_success_limit,
    }
    got = kinds_of(inner, json_round_trip=json_round_trip, **limits)
    assert got == expected_kinds(inner, **limits)


@given(inner=sequences, failure_limit=st.integers(min_value=1, max_value=5))
def test_fails_exactly_when_failed_windows_reach_the_limit(
    inner: list[VerdictKind], failure_limit: int
) -> None:
    got = kinds_of(inner, failure_limit=failure_limit)
    for index, kind in enumerate(got):
        assert (kind is FAIL) == (inner[: index + 1].count(FAIL) >= failure_limit)


@given(
    inner=sequences,
    failure_limit=optional_limit,
    consecutive_failures=optional_limit,
    inconclusive_limit=st.integers(min_value=1, max_value=3),
)
def test_dry_run_never_fails_pauses_or_holds_promotion(
    inner: list[VerdictKind],
    failure_limit: int | None,
    consecutive_failures: int | None,
    inconclusive_limit: int,
) -> None:
    decider = limited(
        Scripted(tuple(inner), early=True),
        failure_limit=failure_limit,
        consecutive_failures=consecutive_failures,
        inconclusive_limit=inconclusive_limit,
        dry_run=True,
    )
    for verdict in run(decider, len(inner)):
        assert verdict.kind is PASS and not verdict.early_pass
        assert verdict.reason.startswith("dry run: ")
        assert all(m.kind is PASS and m.reason.startswith("dry run: ") for m in verdict.metrics)


@given(inner=sequences)
def test_metric_verdicts_are_never_worse_than_the_wrapper(inner: list[VerdictKind]) -> None:
    decider = limited(Scripted(tuple(inner)), failure_limit=3, inconclusive_limit=2)
    for verdict in run(decider, len(inner)):
        assert all(m.kind.severity <= verdict.kind.severity for m in verdict.metrics)


# --- state, async, composition ---------------------------------------------------------


def test_state_is_json_and_resumes_where_it_left_off() -> None:
    decider = limited(Scripted((FAIL, FAIL, FAIL)), failure_limit=3)
    first = decider.judge(decider.initial_state(), OBSERVATION)
    assert isinstance(first, Judgement)
    saved = json.dumps(first.state)
    assert json.loads(saved) == {
        "inner": 1,
        "failures": 1,
        "failure_run": 1,
        "inconclusives": 0,
        "success_run": 0,
        "failed": False,
    }
    second = decider.judge(json.loads(saved), OBSERVATION)
    assert isinstance(second, Judgement)
    third = decider.judge(json.loads(json.dumps(second.state)), OBSERVATION)
    assert isinstance(third, Judgement)
    assert third.verdict.kind is FAIL
    assert third.state["failed"] is True


def test_none_state_means_initial() -> None:
    decider = limited(Scripted((FAIL,)), failure_limit=2)
    judgement = decider.judge(None, OBSERVATION)
    assert isinstance(judgement, Judgement)
    assert judgement.verdict.kind is NOT_YET


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ([0], "state"),
        ({"failures": 0}, "state"),
        ({"inner": 0, "failures": -1}, "state['failures']"),
        ({"inner": 0, "success_run": True}, "state['success_run']"),
        ({"inner": 0, "failed": "no"}, "state['failed']"),
    ],
)
def test_bad_state_names_the_field(state: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        limited(Scripted((PASS,))).judge(state, OBSERVATION)
    assert info.value.field == field


def test_async_inner_decider_works_through_the_wrapper() -> None:
    decider = limited(AsyncScripted(Scripted((FAIL, FAIL, PASS))), failure_limit=2)

    async def main() -> list[VerdictKind]:
        state = decider.initial_state()
        kinds = []
        for _ in range(3):
            result = decider.judge(state, OBSERVATION)
            assert not isinstance(result, Judgement)
            judgement = await result
            state = judgement.state
            kinds.append(judgement.verdict.kind)
        return kinds

    assert anyio.run(main) == [NOT_YET, FAIL, FAIL]


def test_async_inner_inside_a_composite() -> None:
    decider = limited(AsyncScripted(Scripted((PASS,)))) & relative(
        compare("error_rate", max_ratio=1.2)
    )
    assert isinstance(decider, AllOf)

    async def main() -> Judgement:
        result = decider.judge(decider.initial_state(), OBSERVATION)
        assert not isinstance(result, Judgement)
        return await result

    assert anyio.run(main).verdict.kind is PASS


def test_wrappers_stack_and_compose() -> None:
    inner = Scripted((FAIL, FAIL, FAIL, FAIL))
    decider = limited(limited(inner, failure_limit=2), failure_limit=2)
    # The inner wrapper fails from the second window on; the outer counts two of those.
    assert [v.kind for v in run(decider, 4)] == [NOT_YET, NOT_YET, FAIL, FAIL]
    assert isinstance(decider, Decider)


def test_inner_judge_returning_garbage_is_an_error() -> None:
    @attrs.frozen
    class Broken:
        def initial_state(self) -> None:
            return None

        def judge(self, state: Any, observation: Observation) -> Any:
            return "pass"

    with pytest.raises(TypeError, match="returned str"):
        limited(Broken()).judge(None, OBSERVATION)


# --- validation, repr -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_limit": 0}, "failure_limit"),
        ({"failure_limit": True}, "failure_limit"),
        ({"failure_limit": 1.5}, "failure_limit"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"inconclusive_limit": 0}, "inconclusive_limit"),
        ({"inconclusive_limit": None}, "inconclusive_limit"),
        ({"consecutive_success_limit": -2}, "consecutive_success_limit"),
        ({"dry_run": "yes"}, "dry_run"),
    ],
)
def test_invalid_limits_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        limited(Scripted((PASS,)), **kwargs)
    assert info.value.field == field


def test_a_non_decider_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Limits(decider="threshold")  # type: ignore[arg-type]
    assert info.value.field == "decider"


def test_repr_and_str() -> None:
    inner = Scripted((PASS,))
    assert repr(limited(inner)) == f"limited({inner!r})"
    assert repr(limited(inner, failure_limit=3, dry_run=True)) == (
        f"limited({inner!r}, failure_limit=3, dry_run=True)"
    )
    assert repr(limited(inner, consecutive_failures=2)) == (
        f"limited({inner!r}, consecutive_failures=2)"
    )
    decider = limited(
        threshold(bound("p99", max=0.5)),
        failure_limit=2,
        inconclusive_limit=3,
        consecutive_success_limit=2,
        dry_run=True,
    )
    assert str(decider).endswith(
        "roll back after 2 failed windows, pause after 3 inconclusive windows, "
        "pass after 2 passes in a row"
    )
    assert str(decider).startswith("dry run of threshold: ")
    assert str(limited(inner, consecutive_failures=1)).endswith(
        "roll back after 1 failed window in a row"
    )


# --- integration ----------------------------------------------------------------------

PLAN = linear(10, 30, hold=120, analysis_interval=30)


def test_simulated_regression_rolls_back_after_the_failure_limit() -> None:
    decider = limited(
        relative(compare("error_rate", max_ratio=1.5, min_difference=0.01, min_requests=500)),
        failure_limit=2,
    )
    metrics = ScriptedMetrics(
        requests_per_second=1000, error_rate=regression(at=150, base=0.01, factor=3), seed=1
    )
    outcome = simulate(PLAN, decider=decider, metrics=metrics).outcome
    assert outcome.rolled_back
    assert "(failed window 2 of 2)" in outcome.reason
    assert outcome.finished_at <= 240


def test_simulated_dry_run_metric_never_blocks_a_promotion() -> None:
    real = relative(compare("error_rate", max_ratio=1.5, min_difference=0.01, min_requests=500))
    dry = limited(threshold(bound("error_rate", max=0.001)), dry_run=True)
    metrics = ScriptedMetrics(requests_per_second=1000, error_rate=0.01, seed=2)
    outcome = simulate(PLAN, decider=real & dry, metrics=metrics).outcome
    assert outcome.promoted
    reasons = [entry.reason for entry in outcome.verdicts]
    assert reasons and all("dry run: fail" in r for r in reasons)
