"""A machine brought to each stage of the transition table, by the events that get there.

`at_stage(stage)` returns a `RolloutMachine` on `PLAN` in `stage` at time `AT` (100 s):
the property tests start their random events from every stage, so the rare ones (a
rollback held after the router failed) are explored as much as the common ones. With
``hooks=True`` the rollout has hooks at every point, and PROGRESSING waits at the gate
before its first traffic increase.
"""

from __future__ import annotations

import canarykit as ck
from canarykit.machine import (
    AbortRequested,
    AnalysisKind,
    ApplyFailed,
    FullPromotionRequested,
    HookAnswered,
    HookPoint,
    PauseRequested,
    RolloutMachine,
    SplitApplied,
    Stage,
    Start,
    WindowJudged,
)

PLAN = ck.Plan(
    steps=[ck.SetWeight(10), ck.Pause(60), ck.WaitForPromotion(), ck.SetWeight(50)],
    analysis_interval=30,
    pause_limit=600,
    consecutive_error_limit=2,
)
TEN = ck.TrafficSplit(canary_percent=10)
STABLE = ck.TrafficSplit()
FULL = ck.TrafficSplit(canary_percent=100)
FAIL = ck.Verdict(kind=ck.VerdictKind.FAIL, reason="error rate too high")
AT = 100.0


ALL_HOOKS = frozenset(HookPoint)


def _yes(machine: RolloutMachine, now: float, *points: HookPoint) -> None:
    for point in points:
        machine.handle(HookAnswered(now=now, point=point, yes=True))


def _progressing(hooks: bool, *, at_gate: bool = False) -> RolloutMachine:
    machine = RolloutMachine(PLAN)
    if not hooks:
        machine.handle(Start(now=0.0))
    else:
        machine.handle(Start(now=0.0, hook_points=ALL_HOOKS))
        _yes(machine, 0.0, HookPoint.CONFIRM_ROLLOUT, HookPoint.CREATE_CANARY)
        _yes(machine, 0.0, HookPoint.PRE_ROLLOUT)
        if at_gate:
            return machine  # waiting at confirm-traffic-increase
        _yes(machine, 0.0, HookPoint.CONFIRM_TRAFFIC_INCREASE)
    machine.handle(SplitApplied(now=1.0, split=TEN))
    return machine


def at_stage(stage: Stage, *, hooks: bool = False) -> RolloutMachine:
    """A machine on `PLAN` in `stage`, having handled events up to time `AT`."""
    if stage is Stage.PENDING:
        machine = RolloutMachine(PLAN)
        points = ALL_HOOKS if hooks else frozenset({HookPoint.CONFIRM_ROLLOUT})
        machine.handle(Start(now=0.0, hook_points=points))
        machine.handle(HookAnswered(now=AT, point=HookPoint.CONFIRM_ROLLOUT, yes=False))
    elif stage is Stage.PROGRESSING:
        machine = _progressing(hooks, at_gate=True)
    elif stage is Stage.PAUSED:
        machine = _progressing(hooks)
        machine.handle(PauseRequested(now=AT))
    elif stage in (Stage.PROMOTING, Stage.SUCCEEDED):
        machine = _progressing(hooks)
        machine.handle(FullPromotionRequested(now=AT))
        if stage is Stage.SUCCEEDED:
            machine.handle(SplitApplied(now=AT, split=FULL))
            if hooks:  # stable is upgraded, then traffic goes back to it
                _yes(machine, AT, HookPoint.PROMOTE_STABLE)
                machine.handle(SplitApplied(now=AT, split=STABLE))
    elif stage in (Stage.ROLLING_BACK, Stage.ROLLBACK_PENDING, Stage.ROLLED_BACK):
        machine = _progressing(hooks)
        machine.handle(WindowJudged(now=31.0, kind=AnalysisKind.BACKGROUND, end=31.0, verdict=FAIL))
    else:
        machine = _progressing(hooks)
        machine.handle(AbortRequested(now=31.0))
    if stage in (Stage.ROLLBACK_PENDING, Stage.ABORT_PENDING):
        machine.handle(ApplyFailed(now=AT, split=STABLE, reason="router down"))
    elif stage in (Stage.ROLLED_BACK, Stage.ABORTED):
        machine.handle(SplitApplied(now=AT, split=STABLE))
    assert machine.state.stage is stage, (stage, machine.state.stage)
    return machine
