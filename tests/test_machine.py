import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import canarykit as ck
from canarykit import Phase
from canarykit.machine import (
    AbortRequested,
    AnalysisKind,
    ApplyFailed,
    ApplySplit,
    CollectWindow,
    Finish,
    FullPromotionRequested,
    PauseRequested,
    PromoteRequested,
    ResumeRequested,
    RetryRequested,
    RolloutMachine,
    SplitApplied,
    Start,
    Tick,
    WaitUntil,
    WindowFailed,
    WindowJudged,
)

PASS = ck.Verdict(kind=ck.VerdictKind.PASS, reason="ok")
FAIL = ck.Verdict(kind=ck.VerdictKind.FAIL, reason="error rate too high")
INCONCLUSIVE = ck.Verdict(kind=ck.VerdictKind.INCONCLUSIVE, reason="cannot tell")
NOT_YET = ck.Verdict(kind=ck.VerdictKind.NOT_YET, reason="too little data")


def confirm(machine: RolloutMachine, now: float) -> None:
    """Play the router: confirm whatever the machine asks to apply."""
    action = machine.next_action(now)
    assert isinstance(action, ApplySplit), action
    machine.handle(SplitApplied(now, action.split))


def started(plan: ck.Plan) -> RolloutMachine:
    machine = RolloutMachine(plan)
    machine.handle(Start(now=0.0))
    return machine


def test_weight_steps_wait_for_the_routers_confirmation():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.SetWeight(20)]))
    assert machine.next_action(0) == ApplySplit(ck.TrafficSplit(canary_percent=10))
    machine.handle(Tick(50.0))
    assert machine.state.step == 0  # still waiting: time alone does not complete it
    confirm(machine, 50.0)
    assert machine.state.step == 1
    assert machine.next_action(50) == ApplySplit(ck.TrafficSplit(canary_percent=20))


def test_a_plan_runs_to_promotion_and_success():
    machine = started(ck.linear(50, 50, hold=60))
    confirm(machine, 0)
    assert machine.next_action(0) == WaitUntil(until=60.0)
    machine.handle(Tick(60.0))
    confirm(machine, 60)  # 100%
    assert machine.state.phase is Phase.PROMOTING
    confirm(machine, 60)  # the promotion's final apply
    assert machine.state.phase is Phase.SUCCEEDED
    assert machine.next_action(60) == Finish(phase=Phase.SUCCEEDED, reason="promoted")


def test_illegal_event_raises_naming_phase_and_event_and_changes_nothing():
    machine = started(ck.linear(50, 50, hold=60))
    before = machine.state
    with pytest.raises(
        ck.InvalidTransition, match=r"resume: the rollout is not paused \(it is progressing"
    ):
        machine.handle(ResumeRequested(1.0))
    assert machine.state is before
    with pytest.raises(ck.InvalidTransition, match="retry: only a rolled-back"):
        machine.handle(RetryRequested(1.0))
    assert machine.state is before


def test_succeeded_accepts_nothing():
    machine = started(ck.Plan(steps=[ck.SetWeight(100)], require_pass=False))
    confirm(machine, 0)
    confirm(machine, 0)
    assert machine.state.phase is Phase.SUCCEEDED
    for event in (AbortRequested(1), PromoteRequested(1), RetryRequested(1), Tick(1)):
        with pytest.raises(ck.InvalidTransition):
            machine.handle(event)


def test_pause_freezes_the_step_timer_and_resume_keeps_what_was_left():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.Pause(300)]))
    confirm(machine, 0)
    machine.handle(PauseRequested(240.0))
    assert machine.state.phase is Phase.PAUSED
    assert machine.next_action(240) == WaitUntil(until=math.inf)
    machine.handle(ResumeRequested(1000.0))
    assert machine.next_action(1000) == WaitUntil(until=1060.0)


def test_promote_skips_the_rest_of_a_pause_step():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.Pause(3600), ck.SetWeight(50)]))
    confirm(machine, 0)
    machine.handle(PromoteRequested(5.0))
    assert machine.next_action(5) == ApplySplit(ck.TrafficSplit(canary_percent=50))


def test_wait_for_promotion_pauses_until_an_operator_promotes():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion(), ck.SetWeight(40)]))
    confirm(machine, 0)
    assert machine.state.phase is Phase.PAUSED
    assert machine.state.pause_reason == "waiting for promotion"
    machine.handle(Tick(1e6))
    assert machine.state.phase is Phase.PAUSED
    machine.handle(PromoteRequested(1e6))
    assert machine.state.phase is Phase.PROGRESSING
    assert machine.next_action(1e6) == ApplySplit(ck.TrafficSplit(canary_percent=40))


def test_promote_full_goes_straight_to_100_percent_without_routes_or_mirror():
    route = ck.HeaderRoute(header="X-Canary", value="1")
    machine = started(
        ck.Plan(
            steps=[ck.SetHeaderRoutes([route]), ck.SetMirror(10), ck.SetWeight(5), ck.Pause(60)]
        )
    )
    for _ in range(3):
        confirm(machine, 0)
    assert machine.state.confirmed.header_routes == (route,)
    machine.handle(FullPromotionRequested(1.0))
    assert machine.state.phase is Phase.PROMOTING
    assert machine.next_action(1) == ApplySplit(ck.TrafficSplit(canary_percent=100))


def test_abort_rolls_back_to_stable_only_and_ends_aborted_with_the_reason():
    route = ck.HeaderRoute(header="X-Canary", value="1")
    machine = started(ck.Plan(steps=[ck.SetHeaderRoutes([route]), ck.SetWeight(5), ck.Pause(60)]))
    confirm(machine, 0)
    confirm(machine, 0)
    machine.handle(AbortRequested(3.0, "bad dashboards"))
    assert machine.state.phase is Phase.ROLLING_BACK
    assert machine.next_action(3) == ApplySplit(ck.TrafficSplit())
    confirm(machine, 3)
    assert machine.state.phase is Phase.ABORTED
    assert machine.state.reason == "bad dashboards"


def test_retry_after_abort_starts_again_from_the_first_step():
    machine = started(ck.linear(50, 50, hold=60))
    confirm(machine, 0)
    machine.handle(AbortRequested(3.0))
    confirm(machine, 3)
    machine.handle(RetryRequested(10.0))
    assert machine.state.phase is Phase.PROGRESSING
    assert machine.state.step == 0
    assert machine.next_action(10) == ApplySplit(ck.TrafficSplit(canary_percent=50))


def test_a_late_confirmation_after_abort_is_recorded_then_corrected():
    machine = started(ck.linear(50, 50, hold=60))
    machine.handle(AbortRequested(0.5))  # while the 50% apply is in flight
    machine.handle(SplitApplied(1.0, ck.TrafficSplit(canary_percent=50)))
    assert machine.state.phase is Phase.ROLLING_BACK
    assert machine.state.confirmed.canary_percent == 50
    assert machine.next_action(1) == ApplySplit(ck.TrafficSplit())


def test_router_failure_rolls_back_and_a_failed_rollback_pauses_at_the_confirmed_split():
    machine = started(ck.linear(50, 50, hold=60))
    confirm(machine, 0)
    machine.handle(Tick(60))
    machine.handle(ApplyFailed(61, ck.TrafficSplit(canary_percent=100), "connection refused"))
    assert machine.state.phase is Phase.ROLLING_BACK
    machine.handle(ApplyFailed(62, ck.TrafficSplit(), "connection refused"))
    assert machine.state.phase is Phase.PAUSED
    assert machine.state.rollback_pending
    assert "canary traffic last confirmed at 50%" in machine.state.reason
    assert machine.next_action(62) == WaitUntil(until=math.inf)  # no spinning on a dead router
    for event in (PromoteRequested(90), FullPromotionRequested(90)):
        with pytest.raises(ck.InvalidTransition, match="failed rollback is pending"):
            machine.handle(event)
    machine.handle(ResumeRequested(100))  # the operator asks to try the rollback again
    assert machine.state.phase is Phase.ROLLING_BACK
    confirm(machine, 100)
    assert machine.state.phase is Phase.ROLLED_BACK


def test_background_analysis_starts_at_the_first_shift_and_runs_during_pauses():
    machine = started(
        ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion()], analysis_interval=30)
    )
    assert machine.next_action(0) == ApplySplit(ck.TrafficSplit(canary_percent=10))
    confirm(machine, 5.0)
    assert machine.state.phase is Phase.PAUSED
    assert machine.next_action(10) == WaitUntil(until=35.0)
    action = machine.next_action(35)
    assert action == CollectWindow(kind=AnalysisKind.BACKGROUND, start=5.0, end=35.0)
    machine.handle(WindowJudged(35, AnalysisKind.BACKGROUND, 35.0, FAIL, {"n": 1}))
    assert machine.state.phase is Phase.ROLLING_BACK
    assert "error rate too high" in machine.state.reason


def test_inconclusive_background_verdict_pauses():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.Pause(600)], analysis_interval=30))
    confirm(machine, 0)
    machine.handle(WindowJudged(30, AnalysisKind.BACKGROUND, 30.0, INCONCLUSIVE))
    assert machine.state.phase is Phase.PAUSED
    assert "inconclusive" in machine.state.reason


def test_promotion_requires_a_passing_background_verdict():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.Pause(30)], analysis_interval=30))
    confirm(machine, 0)
    machine.handle(WindowJudged(30, AnalysisKind.BACKGROUND, 30.0, NOT_YET))
    machine.handle(Tick(30))
    assert machine.state.phase is Phase.PAUSED
    assert "has not passed" in machine.state.reason
    machine.handle(PromoteRequested(40))  # an operator may still promote
    assert machine.state.phase is Phase.PROMOTING


def test_decider_state_is_carried_between_windows():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.Pause(600)], analysis_interval=30))
    confirm(machine, 0)
    machine.handle(WindowJudged(30, AnalysisKind.BACKGROUND, 30.0, PASS, {"failed": 1}))
    action = machine.next_action(60)
    assert action == CollectWindow(AnalysisKind.BACKGROUND, 30.0, 60.0, {"failed": 1})


def test_inline_analysis_must_pass_to_go_on():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Analyze(90, 30), ck.SetWeight(50)])
    machine = started(plan)
    confirm(machine, 0)
    for end in (30.0, 60.0):
        action = machine.next_action(end)
        assert action == CollectWindow(
            AnalysisKind.STEP, end - 30, end, None if end == 30 else {"w": 1}
        )
        machine.handle(WindowJudged(end, AnalysisKind.STEP, end, NOT_YET, {"w": 1}))
        assert machine.state.step == 1
    machine.handle(WindowJudged(90, AnalysisKind.STEP, 90.0, PASS, {"w": 2}))
    assert machine.next_action(90) == ApplySplit(ck.TrafficSplit(canary_percent=50))


def test_inline_analysis_that_ends_without_a_pass_pauses():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Analyze(30, 30), ck.SetWeight(50)])
    machine = started(plan)
    confirm(machine, 0)
    machine.handle(WindowJudged(30, AnalysisKind.STEP, 30.0, NOT_YET))
    assert machine.state.phase is Phase.PAUSED
    assert "did not pass" in machine.state.reason


def test_consecutive_analysis_errors_roll_back_at_the_limit():
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Pause(600)], analysis_interval=30, consecutive_error_limit=2
    )
    machine = started(plan)
    confirm(machine, 0)
    machine.handle(WindowFailed(30, AnalysisKind.BACKGROUND, 30.0, "prometheus timed out"))
    machine.handle(WindowJudged(60, AnalysisKind.BACKGROUND, 60.0, PASS))
    machine.handle(WindowFailed(90, AnalysisKind.BACKGROUND, 90.0, "prometheus timed out"))
    assert machine.state.phase is Phase.PROGRESSING  # the pass in between reset the count
    machine.handle(WindowFailed(120, AnalysisKind.BACKGROUND, 120.0, "prometheus timed out"))
    assert machine.state.phase is Phase.ROLLING_BACK
    assert "2 analysis errors in a row" in machine.state.reason


def test_pause_limit_rolls_back_a_forgotten_pause():
    machine = started(ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion()], pause_limit=600))
    confirm(machine, 0)
    assert machine.next_action(0) == WaitUntil(until=600.0)
    machine.handle(Tick(600))
    assert machine.state.phase is Phase.ROLLING_BACK
    assert "pause limit" in machine.state.reason


def test_every_stage_appears_in_the_transition_table_and_every_phase_has_its_stage():
    Stage = ck.machine.Stage
    table = ck.machine.transition_table()
    assert list(table) == list(Stage)
    reachable = {target for row in table.values() for targets in row.values() for target in targets}
    assert reachable | {Stage.PENDING} == set(Stage)
    assert {stage.phase for stage in Stage} == set(Phase)


event_strategy = st.one_of(
    st.builds(Tick, st.floats(0, 1e4)),
    st.builds(PromoteRequested, st.floats(0, 1e4)),
    st.builds(FullPromotionRequested, st.floats(0, 1e4)),
    st.builds(PauseRequested, st.floats(0, 1e4)),
    st.builds(ResumeRequested, st.floats(0, 1e4)),
    st.builds(AbortRequested, st.floats(0, 1e4)),
    st.builds(RetryRequested, st.floats(0, 1e4)),
)


@given(events=st.lists(event_strategy, max_size=30))
def test_state_round_trips_through_json_after_any_operator_events(events):
    import json

    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Pause(60), ck.WaitForPromotion(), ck.SetWeight(50)],
        analysis_interval=30,
    )
    machine = started(plan)
    for event in events:
        action = machine.next_action(event.now)
        if isinstance(action, ApplySplit):
            machine.handle(SplitApplied(event.now, action.split))
        with contextlib.suppress(ck.InvalidTransition):
            machine.handle(event)
        data = json.loads(json.dumps(machine.state.to_json()))
        assert ck.machine.RolloutState.from_json(data) == machine.state


def test_state_from_another_schema_version_is_refused_with_a_clear_message():
    data = ck.machine.RolloutState().to_json()
    data["schema"] = 99
    with pytest.raises(ck.CanaryError, match="schema version 99"):
        ck.machine.RolloutState.from_json(data)
