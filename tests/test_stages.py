"""The stages that split a phase: rows of their own in the transition table.

A rollback held after the router failed (ROLLBACK_PENDING, ABORT_PENDING) and an
abort's rollback (ABORTING) behave differently from the rest of their phase; the table
says how, and outcomes keep showing the phase.
"""

import pytest

import canarykit as ck
from canarykit.machine import (
    AbortRequested,
    ApplyFailed,
    ApplySplit,
    FullPromotionRequested,
    PauseRequested,
    PromoteRequested,
    ResumeRequested,
    RetryRequested,
    SplitApplied,
    Stage,
    Tick,
    transition_table,
)
from helpers.stages import AT, STABLE, TEN, at_stage

HELD = [Stage.ROLLBACK_PENDING, Stage.ABORT_PENDING]


def refused(machine, event):
    with pytest.raises(ck.InvalidTransition) as info:
        machine.handle(event)
    return str(info.value)


def test_each_stage_belongs_to_one_phase_and_the_split_ones_say_which():
    assert {stage: stage.phase for stage in Stage if stage.value != stage.phase.value} == {
        Stage.ABORTING: ck.Phase.ROLLING_BACK,
        Stage.ROLLBACK_PENDING: ck.Phase.PAUSED,
        Stage.ABORT_PENDING: ck.Phase.PAUSED,
    }
    assert [stage for stage in Stage if stage.is_terminal] == [
        Stage.SUCCEEDED,
        Stage.ROLLED_BACK,
        Stage.ABORTED,
    ]


@pytest.mark.parametrize("stage", HELD)
def test_a_held_rollback_refuses_promotion_in_the_table_itself(stage):
    row = transition_table()[stage]
    assert "PromoteRequested" not in row and "FullPromotionRequested" not in row
    machine = at_stage(stage)
    before = machine.state
    for event in (PromoteRequested(AT), FullPromotionRequested(AT), RetryRequested(AT)):
        message = refused(machine, event)
        assert "not while a failed rollback is pending" in message
        assert message.endswith("you can resume or abort it to try the rollback again")
    assert machine.state is before


@pytest.mark.parametrize(
    ("stage", "rolling"),
    [(Stage.ROLLBACK_PENDING, Stage.ROLLING_BACK), (Stage.ABORT_PENDING, Stage.ABORTING)],
)
def test_resuming_a_held_rollback_tries_it_again_and_it_ends_as_it_began(stage, rolling):
    machine = at_stage(stage)
    machine.handle(PauseRequested(AT + 1))  # held already: nothing changes
    assert machine.state.stage is stage
    assert machine.state.reason.startswith("rollback failed (router down)")
    machine.handle(ResumeRequested(AT + 2))
    assert machine.state.stage is rolling
    assert machine.next_action(AT + 2) == ApplySplit(STABLE)
    machine.handle(SplitApplied(AT + 3, STABLE))
    ended = ck.Phase.ABORTED if rolling is Stage.ABORTING else ck.Phase.ROLLED_BACK
    assert machine.state.phase is ended


@pytest.mark.parametrize("stage", HELD)
def test_no_pause_limit_runs_while_a_rollback_is_held(stage):
    plain = at_stage(Stage.PAUSED)  # the plan's pause limit is 600 s
    plain.handle(Tick(AT + 10_000))
    assert plain.state.stage is Stage.ROLLING_BACK
    machine = at_stage(stage)
    machine.handle(Tick(AT + 10_000))
    assert machine.state.stage is stage


def test_an_abort_makes_a_held_rollback_an_aborts_and_a_running_rollback_too():
    for stage in (Stage.ROLLBACK_PENDING, Stage.ROLLING_BACK):
        machine = at_stage(stage)
        machine.handle(AbortRequested(AT + 1))
        assert machine.state.stage is Stage.ABORTING
        machine.handle(SplitApplied(AT + 2, STABLE))
        assert machine.state.phase is ck.Phase.ABORTED


def test_an_aborts_rollback_that_fails_is_held_as_an_abort():
    machine = at_stage(Stage.ABORTING)
    machine.handle(ApplyFailed(AT + 1, STABLE, "router down"))
    assert machine.state.stage is Stage.ABORT_PENDING
    assert machine.state.phase is ck.Phase.PAUSED and machine.state.rollback_pending
    assert machine.state.target == TEN  # traffic held where the router last confirmed


def test_an_aborting_rollout_offers_no_command_that_would_change_nothing():
    message = refused(at_stage(Stage.ABORTING), PromoteRequested(AT))
    assert message == (
        "promote: not while the rollout is rolling back (it is rolling back for an abort "
        "(canary at 10%)); no command helps now: wait for it"
    )
    # A plain rollback can still become an abort.
    assert refused(at_stage(Stage.ROLLING_BACK), PromoteRequested(AT)).endswith("you can abort it")


def test_a_paused_rollout_is_not_offered_another_pause():
    message = refused(at_stage(Stage.PAUSED), RetryRequested(AT))
    assert message.endswith("you can promote, promote --full, resume or abort it")


def test_an_event_a_stage_does_not_accept_names_the_stage_in_words():
    message = refused(at_stage(Stage.ABORT_PENDING), ck.machine.Start(AT))
    assert message.startswith(
        "Start is not allowed while the rollout is held after the failed rollback of an abort"
    )


def test_resuming_after_promote_stable_failed_on_a_full_promotion_promotes_again():
    # The operator promoted fully during a Pause step; the stable upgrade failed, and the
    # resume went back into the Pause it had left, without its timer (an AssertionError).
    plan = ck.Plan(steps=[ck.SetWeight(20), ck.Pause(30)])
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, hook_points={ck.machine.HookPoint.PROMOTE_STABLE}))
    machine.handle(SplitApplied(1.0, ck.TrafficSplit(canary_percent=20)))
    machine.handle(FullPromotionRequested(10.0))
    full = ck.TrafficSplit(canary_percent=100)
    machine.handle(SplitApplied(11.0, full))
    stable_upgrade = ck.machine.HookPoint.PROMOTE_STABLE
    assert machine.next_action(11.0) == ck.machine.RunHook(stable_upgrade)
    machine.handle(ck.machine.HookAnswered(12.0, stable_upgrade, yes=False, reason="disk full"))
    assert machine.state.phase is ck.Phase.PAUSED and machine.state.target == full

    machine.handle(ResumeRequested(20.0))
    assert machine.state.phase is ck.Phase.PROMOTING
    machine.handle(SplitApplied(21.0, full))
    machine.handle(ck.machine.HookAnswered(22.0, stable_upgrade, yes=True))
    machine.handle(SplitApplied(23.0, STABLE))
    assert machine.state.phase is ck.Phase.SUCCEEDED


def test_started_again_without_the_hook_it_waited_at_the_rollout_goes_on_without_it():
    # A runner stopped at create-canary; the next one has no such hook. The rollout
    # asked the old hook forever, then, once it answered, fell back to PENDING from
    # PROGRESSING, a step outside the table.
    points = ck.machine.HookPoint
    plan = ck.Plan(steps=[ck.SetWeight(10)])
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, hook_points={points.CREATE_CANARY, points.PRE_ROLLOUT}))
    assert machine.state.gate is points.CREATE_CANARY
    machine.handle(ck.machine.Start(5.0, hook_points={points.PRE_ROLLOUT}))
    assert machine.state.gate is points.PRE_ROLLOUT
    machine.handle(ck.machine.Start(6.0))
    assert machine.state.stage is Stage.PROGRESSING and machine.state.gate is None
    assert machine.next_action(6.0) == ApplySplit(TEN)
