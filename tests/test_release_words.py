"""Refusals of operator commands speak the operator's words and say what can be done now."""

# Imports internals on purpose: the machine's wording and limits.

import re

import pytest

import canarykit as ck
from canarykit._machine import describe_where, refusal, shown_step, when
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

PLAN = ck.Plan(steps=[ck.SetWeight(20), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])
EVENT_NAMES = re.compile(
    r"\b(PromoteRequested|FullPromotionRequested|PauseRequested|ResumeRequested|AbortRequested|RetryRequested|SplitApplied|ApplyFailed|"
    r"WindowJudged|WindowFailed|Tick|Recovered|HookAnswered|Start)\b"
)


def at_twenty():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=20)))
    return machine


def refused(machine, event):
    with pytest.raises(ck.InvalidTransition) as caught:
        machine.handle(event)
    return str(caught.value)


def test_resume_while_progressing_says_it_is_not_paused_and_what_can_be_done():
    message = refused(at_twenty(), ck.machine.ResumeRequested(1.0))
    assert message == (
        "resume: the rollout is not paused (it is progressing at 20%, step 2/4); "
        "you can promote, promote --full, pause or abort it"
    )


def test_a_command_to_a_finished_rollout_says_how_it_ended_and_when():
    machine = ck.machine.RolloutMachine(ck.Plan(steps=[ck.SetWeight(100)], require_pass=False))
    machine.handle(ck.machine.Start(1796479000.0))
    full = ck.TrafficSplit(canary_percent=100)
    machine.handle(ck.machine.SplitApplied(1796479000.0, full))
    machine.handle(ck.machine.SplitApplied(1796479390.0, full))
    assert refused(machine, ck.machine.PauseRequested(1796479400.0)) == (
        "pause: the rollout already promoted at 2026-12-05 14:03:10 UTC; nothing to do"
    )
    assert refused(machine, ck.machine.RetryRequested(1796479400.0)).endswith(
        "promoted at 2026-12-05 14:03:10 UTC; nothing to do"
    )


def test_a_command_to_a_rolled_back_rollout_offers_a_retry():
    machine = at_twenty()
    machine.handle(ck.machine.AbortRequested(30.0))
    machine.handle(ck.machine.SplitApplied(31.0, ck.TrafficSplit()))
    message = refused(machine, ck.machine.PromoteRequested(40.0))
    assert message == "promote: the rollout already aborted at t=31 s; you can retry it"


def test_no_refusal_of_an_operator_command_names_an_event_class():
    machines = [at_twenty()]
    rolling_back = at_twenty()
    rolling_back.handle(ck.machine.AbortRequested(5.0))
    machines.append(rolling_back)
    pending = ck.machine.RolloutMachine(PLAN)
    machines.append(pending)
    failed = at_twenty()
    failed.handle(ck.machine.AbortRequested(5.0))
    failed.handle(ck.machine.ApplyFailed(6.0, ck.TrafficSplit(), "router down"))
    machines.append(failed)
    commands = [
        ck.machine.PromoteRequested,
        ck.machine.FullPromotionRequested,
        ck.machine.PauseRequested,
        ck.machine.ResumeRequested,
        ck.machine.AbortRequested,
        ck.machine.RetryRequested,
    ]
    seen = 0
    for machine in machines:
        for command in commands:
            try:
                machine.handle(command(10.0))
            except ck.InvalidTransition as exc:
                seen += 1
                assert not EVENT_NAMES.search(str(exc)), str(exc)
    assert seen >= 8


def test_a_failed_rollback_pending_says_resume_or_abort():
    machine = at_twenty()
    machine.handle(ck.machine.AbortRequested(5.0))
    machine.handle(ck.machine.ApplyFailed(6.0, ck.TrafficSplit(), "router down"))
    message = refused(machine, ck.machine.PromoteRequested(7.0))
    assert message.startswith("promote: not while a failed rollback is pending")
    assert "you can resume or abort" in message


def test_the_step_shown_never_exceeds_the_step_count():
    machine = ck.machine.RolloutMachine(ck.Plan(steps=[ck.SetWeight(100)], require_pass=False))
    machine.handle(ck.machine.Start(0.0))
    full = ck.TrafficSplit(canary_percent=100)
    machine.handle(ck.machine.SplitApplied(0.0, full))
    assert machine.state.step == 1
    assert shown_step(machine.plan, machine.state) == "step 1/1"
    assert describe_where(PLAN, at_twenty().state) == "it is progressing at 20%, step 2/4"


def test_when_shows_wall_clock_times_in_utc_and_virtual_ones_in_seconds():
    assert when(1796479390.0) == "2026-12-05 14:03:10 UTC"
    assert when(42.5) == "t=42.5 s"
    assert when(None) == "an unknown time"


async def test_the_runner_refuses_in_the_same_words_and_records_it():
    rollout = ck.Rollout(PLAN, router=FakeRouter(), clock=VirtualClock())
    await rollout.run(stop_at=10)
    with pytest.raises(ck.InvalidTransition, match=r"^resume: the rollout is not paused"):
        rollout.resume()
    [entry] = [e for e in rollout.timeline if e.kind == "command"]
    assert entry.reason.startswith("resume refused: resume: the rollout is not paused")
    assert refusal(PLAN, rollout.state, ck.machine.ResumeRequested(10.0)) in entry.reason
