"""Hooks: gates that hold a rollout, checks and lifecycle calls, approvals, and resuming."""

import logging
import math
import subprocess
import sys

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import canarykit as ck
from canarykit.events import GateOpened, GateWaiting, HookRan
from canarykit.hooks import Approval, FileApproval, HookAnswer, HookCall, Hooks
from canarykit.machine import HookAnswered, HookPoint, RunHook
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock, regression

pytestmark = pytest.mark.anyio

P = HookPoint
PLAN = ck.from_weights([10, 50], hold=60)  # 10% for 60 s, 50% for 60 s, then promote


class ErrorRateLimit:
    """Fail when the canary's error rate exceeds `limit`; pass otherwise."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def initial_state(self):
        return None

    def judge(self, state, observation):
        rate = observation.canary.error_rate
        if rate is None:
            return ck.Judgement(ck.Verdict(kind=ck.VerdictKind.NOT_YET, reason="no data"))
        kind = ck.VerdictKind.FAIL if rate > self.limit else ck.VerdictKind.PASS
        return ck.Judgement(ck.Verdict(kind=kind, reason=f"canary error rate {rate:.2%}"))


class Recorder:
    """Hooks that record each call (point, time, canary weight at the router) and answer."""

    def __init__(self, router, clock):
        self.router = router
        self.clock = clock
        self.calls = []

    def hook(self, name, answer=None):
        async def call(hook_call):
            self.calls.append((name, self.clock.now(), self.router.current.canary_percent))
            return answer(hook_call) if callable(answer) else answer

        call.__qualname__ = name
        return call

    @property
    def names(self):
        return [name for name, _, _ in self.calls]


def percents(router):
    return [split.canary_percent for split in router.applied]


async def run(plan=PLAN, *, hooks, clock=None, router=None, **options):
    clock = clock or VirtualClock()
    router = router or FakeRouter()
    events = []
    rollout = ck.Rollout(
        plan, router=router, clock=clock, hooks=hooks, listeners=[events.append], **options
    )
    with anyio.fail_after(10):
        outcome = await rollout.run()
    return rollout, outcome, events


def of_type(events, kind):
    return [event for event in events if isinstance(event, kind)]


# ---------------------------------------------------------------------------- gates


async def test_confirm_rollout_holds_everything_until_it_opens(anyio_backend):
    clock = VirtualClock()
    router = FakeRouter()
    approval = Approval("release manager")
    seen = []
    clock.call_at(150, lambda: seen.append((rollout.state.phase, rollout.state.gate)))
    clock.call_at(200, lambda: approval.approve(by="ana"))
    hooks = Hooks(confirm_rollout=approval, interval=60)
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks)
    outcome = await rollout.run()
    assert seen == [(ck.Phase.PENDING, P.CONFIRM_ROLLOUT)]  # waiting, visibly
    assert outcome.phase is ck.Phase.SUCCEEDED
    # Asked at 0, 60, 120, 180 (no) and 240 (yes): nothing moved before 240.
    first_split = next(e for e in outcome.timeline if e.kind == "split" and e.canary_percent > 0)
    assert first_split.time == 240.0
    assert outcome.finished_at == 240.0 + 120.0
    gate_lines = [e.reason for e in outcome.timeline if e.kind == "gate"]
    assert gate_lines == [
        "waiting for confirm-rollout: release manager has not decided",
        "confirm-rollout opened after 240 s: approved by ana",
    ]


async def test_a_gate_announces_its_wait_once_however_often_it_is_asked(anyio_backend):
    asked = []

    def gate(call):
        asked.append(call.time)
        return call.time >= 300

    _, outcome, events = await run(hooks=Hooks(confirm_promotion=gate, interval=30))
    assert asked == [120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0]
    [waiting] = of_type(events, GateWaiting)
    [opened] = of_type(events, GateOpened)
    assert (waiting.gate, waiting.since, waiting.time) == ("confirm-promotion", 120.0, 120.0)
    assert (opened.gate, opened.waited) == ("confirm-promotion", 180.0)
    assert outcome.phase is ck.Phase.SUCCEEDED and outcome.finished_at == 300.0


async def test_confirm_traffic_increase_is_asked_before_every_increase(anyio_backend):
    clock = VirtualClock()
    router = FakeRouter()
    approval = Approval("canary watcher", once=True)  # one approval per increase
    told = []

    async def gate(call):
        told.append((call.time, call.weight, call.next_weight))
        return await approval(call)

    for when in (100, 400):
        clock.call_at(when, lambda: approval.approve(by="bo"))
    hooks = Hooks(confirm_traffic_increase=gate, interval=50)
    _, outcome, _ = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router) == [10, 50, 100]
    applied_at = [e.time for e in outcome.timeline if e.kind == "split" and e.canary_percent > 0]
    # Asked at 0, 50, 100 (approved at 100); after the 60 s hold, at 160, 210, ..., 410.
    assert applied_at == [100.0, 410.0, 470.0]  # each increase only after its approval
    # The gate is told the weight in force and the one it would set.
    assert told[0] == (0.0, 0.0, 10.0)
    assert told[-1] == (410.0, 10.0, 50.0)


async def test_confirm_promotion_holds_while_analysis_keeps_watching(anyio_backend):
    clock = VirtualClock()
    router = FakeRouter()
    approval = Approval("release manager")
    clock.call_at(1000, approval.approve)
    # A short progress deadline and pause limit: neither may end a wait at a gate.
    plan = ck.from_weights(
        [10, 50], hold=60, analysis_interval=30, progress_deadline=30, pause_limit=30
    )
    hooks = Hooks(confirm_promotion=approval, interval=60)
    _, outcome, events = await run(
        plan,
        hooks=hooks,
        clock=clock,
        router=router,
        metrics=ScriptedMetrics(seed=3),
        decider=ErrorRateLimit(0.05),
    )
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.finished_at == 1020.0  # asked at 120, 180, ..., 960 (no), 1020 (yes)
    verdicts_while_waiting = [e for e in outcome.verdicts if 120 < e.time < 1020]
    # A window judged every 30 s while it waited.
    assert [e.time for e in verdicts_while_waiting] == [150.0 + 30 * i for i in range(29)]
    assert not of_type(events, ck.events.AnalysisFailed)
    assert percents(router) == [10, 50, 100]


async def test_a_regression_while_waiting_at_a_gate_still_rolls_back(anyio_backend):
    plan = ck.from_weights([10, 50], hold=60, analysis_interval=30)
    metrics = ScriptedMetrics(error_rate=regression(at=300, base=0.01, factor=20), seed=1)
    hooks = Hooks(confirm_promotion=Approval("nobody"), interval=60)
    rollout, outcome, _ = await run(
        plan, hooks=hooks, metrics=metrics, decider=ErrorRateLimit(0.05)
    )
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert 300 < outcome.finished_at <= 360
    assert "analysis failed" in outcome.reason
    assert rollout.router.current.is_stable_only
    assert rollout.state.gate is None


async def test_a_failing_gate_is_a_no_it_waits_and_never_fails_the_rollout(anyio_backend, caplog):
    calls = []

    def flaky(call):
        calls.append(call.time)
        if len(calls) <= 3:
            raise ConnectionError("approval service down")
        return True

    caplog.set_level(logging.WARNING, logger="canarykit")
    hooks = Hooks(confirm_promotion=flaky, interval=10)
    _, outcome, events = await run(hooks=hooks)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert calls == [120.0, 130.0, 140.0, 150.0]
    assert not of_type(events, ck.events.AnalysisFailed)
    [waiting] = of_type(events, GateWaiting)
    assert "ConnectionError: approval service down" in waiting.reason
    failures = [r for r in caplog.records if "confirm-promotion hook failed" in r.getMessage()]
    assert len(failures) == 3


async def test_a_hung_gate_is_cut_by_the_call_timeout_and_counts_as_a_no(anyio_backend):
    calls = []

    async def hangs_once(call):
        calls.append(call.time)
        if len(calls) == 1:
            await anyio.sleep_forever()
        return True

    hooks = Hooks(confirm_promotion=hangs_once, interval=10, call_timeout=0.05)
    _, outcome, events = await run(hooks=hooks)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert calls == [120.0, 130.0]
    [waiting] = of_type(events, GateWaiting)
    assert "timed out after 0.05 s" in waiting.reason


async def test_gate_timeout_aborts_and_sends_traffic_back(anyio_backend):
    router = FakeRouter()
    hooks = Hooks(confirm_promotion=Approval("nobody"), interval=60, gate_timeout=300)
    _, outcome, _ = await run(hooks=hooks, router=router)
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.finished_at == 420.0  # waiting since 120; still closed at 420
    assert "confirm-promotion: did not open within 300 s" in outcome.reason
    assert router.current.is_stable_only
    assert percents(router) == [10, 50, 0]


async def test_a_denial_aborts_the_rollout(anyio_backend):
    clock = VirtualClock()
    router = FakeRouter()
    approval = Approval("release manager")
    clock.call_at(200, lambda: approval.deny("error budget spent", by="cy"))
    hooks = Hooks(confirm_promotion=approval, interval=60)
    _, outcome, _ = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.reason == "confirm-promotion: denied by cy: error budget spent"
    assert router.current.is_stable_only


async def test_a_denial_at_confirm_rollout_aborts_without_moving_traffic(anyio_backend, tmp_path):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    (tmp_path / "web.approval").write_text("deny freeze until Monday\n")
    hooks = Hooks(
        confirm_rollout=FileApproval(tmp_path / "web.approval"),
        post_rollout=rec.hook("post-rollout"),
    )
    _, outcome, _ = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.reason.startswith("confirm-rollout: denied in ")
    assert outcome.reason.endswith(": freeze until Monday")
    assert router.applied == []
    assert rec.names == ["post-rollout"]


async def test_cancelling_a_rollout_stuck_in_a_gate_call_rolls_back(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()

    async def hangs(call):
        await anyio.sleep_forever()

    hooks = Hooks(confirm_promotion=hangs, call_timeout=3600)
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rollout.run)
            while rollout.state.gate is not P.CONFIRM_PROMOTION:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert rollout.phase is ck.Phase.ABORTED
    assert router.current.is_stable_only


async def test_an_operator_promote_opens_the_gate_it_waits_at(anyio_backend):
    clock = VirtualClock()
    hooks = Hooks(confirm_traffic_increase=Approval("nobody"), interval=60)
    rollout = ck.Rollout(PLAN, router=FakeRouter(), clock=clock, hooks=hooks)
    clock.call_at(30, rollout.promote)
    outcome = await rollout.run(stop_at=31)
    # The first increase went through at 30; the next one waits at its gate again.
    assert percents(rollout.router) == [10]
    assert rollout.state.gate is None  # in the 60 s pause after 10%
    outcome = await rollout.run(stop_at=200)
    assert rollout.state.gate is P.CONFIRM_TRAFFIC_INCREASE
    assert rollout.state.gate_since == 90.0
    assert outcome.phase is ck.Phase.PROGRESSING


async def test_pausing_at_a_gate_leaves_it_and_resuming_asks_again(anyio_backend):
    clock = VirtualClock()
    asked = []

    def gate(call):
        asked.append(call.time)
        return call.time >= 500

    rollout = ck.Rollout(
        PLAN, router=FakeRouter(), clock=clock, hooks=Hooks(confirm_promotion=gate, interval=60)
    )
    clock.call_at(150, rollout.pause)
    clock.call_at(500, rollout.resume)
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert asked == [120.0, 500.0]  # not asked while paused; at once on resuming


# ---------------------------------------------------------------------------- checks and lifecycle


async def test_lifecycle_hooks_run_in_order_around_a_promotion(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    hooks = Hooks(
        confirm_rollout=rec.hook("confirm-rollout", True),
        create_canary=rec.hook("create-canary"),
        pre_rollout=rec.hook("pre-rollout"),
        confirm_promotion=rec.hook("confirm-promotion", True),
        retire_stable=rec.hook("retire-stable"),
        retire_canary=rec.hook("retire-canary"),
        post_rollout=rec.hook("post-rollout"),
    )
    _, outcome, events = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert rec.calls == [
        ("confirm-rollout", 0.0, 0.0),
        ("create-canary", 0.0, 0.0),  # the canary's instances exist before any traffic
        ("pre-rollout", 0.0, 0.0),
        ("confirm-promotion", 120.0, 50.0),
        ("retire-stable", 120.0, 100.0),  # the old version retired after promotion
        ("post-rollout", 120.0, 100.0),
    ]
    assert [(e.hook, e.ok) for e in of_type(events, HookRan)] == [
        ("create-canary", True),
        ("pre-rollout", True),
        ("retire-stable", True),
        ("post-rollout", True),
    ]


async def test_after_a_rollback_the_canary_is_retired_then_post_rollout_runs(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    plan = ck.from_weights([10, 50], hold=60, analysis_interval=30)
    metrics = ScriptedMetrics(error_rate=regression(at=60, base=0.01, factor=20), seed=2)
    hooks = Hooks(
        create_canary=rec.hook("create-canary"),
        retire_stable=rec.hook("retire-stable"),
        retire_canary=rec.hook("retire-canary"),
        post_rollout=rec.hook("post-rollout", lambda call: call.phase.value),
    )
    _, outcome, _ = await run(
        plan,
        hooks=hooks,
        clock=clock,
        router=router,
        metrics=metrics,
        decider=ErrorRateLimit(0.05),
    )
    assert outcome.phase is ck.Phase.ROLLED_BACK
    names = rec.names
    assert names == ["create-canary", "retire-canary", "post-rollout"]
    # Retired only once traffic was back on stable.
    assert rec.calls[1][2] == 0.0 and rec.calls[1][1] == outcome.finished_at


async def test_a_failed_pre_rollout_check_aborts_before_any_traffic_moves(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)

    async def smoke_test(call):
        rec.calls.append(("pre-rollout", clock.now(), router.current.canary_percent))
        raise AssertionError("GET /health answered 503")

    hooks = Hooks(
        create_canary=rec.hook("create-canary"),
        pre_rollout=smoke_test,
        confirm_traffic_increase=rec.hook("confirm-traffic-increase", True),
        retire_canary=rec.hook("retire-canary"),
        post_rollout=rec.hook("post-rollout"),
    )
    _, outcome, events = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.ABORTED
    assert router.applied == []  # no traffic moved, not even a split to apply
    assert "pre-rollout hook failed" in outcome.reason
    assert "AssertionError: GET /health answered 503" in outcome.reason
    assert "aborted before any traffic moved" in outcome.reason
    assert rec.names == ["create-canary", "pre-rollout", "retire-canary", "post-rollout"]
    ran = of_type(events, HookRan)
    assert [(e.hook, e.ok) for e in ran][:2] == [("create-canary", True), ("pre-rollout", False)]


async def test_a_failed_create_canary_aborts_and_retires_what_it_left(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    hooks = Hooks(
        create_canary=rec.hook("create-canary", False),  # False: the task failed
        pre_rollout=rec.hook("pre-rollout"),
        retire_canary=rec.hook("retire-canary"),
        post_rollout=rec.hook("post-rollout"),
    )
    _, outcome, _ = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.ABORTED
    assert "create-canary hook failed" in outcome.reason
    assert router.applied == []
    assert rec.names == ["create-canary", "retire-canary", "post-rollout"]


async def test_an_abort_at_confirm_rollout_retires_nothing_but_runs_post_rollout(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    hooks = Hooks(
        confirm_rollout=Approval("nobody"),
        create_canary=rec.hook("create-canary"),
        retire_canary=rec.hook("retire-canary"),
        post_rollout=rec.hook("post-rollout"),
    )
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks)
    clock.call_at(90, lambda: rollout.abort("change freeze"))
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert router.applied == []
    assert rec.names == ["post-rollout"]  # the canary was never created


async def test_failures_after_the_end_are_reported_and_never_change_the_outcome(
    anyio_backend, caplog
):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)

    def retire(call):
        rec.calls.append(("retire-stable", clock.now(), router.current.canary_percent))
        raise RuntimeError("scale-down refused")

    caplog.set_level(logging.WARNING, logger="canarykit")
    hooks = Hooks(retire_stable=retire, post_rollout=[rec.hook("post-rollout", False)])
    _, outcome, events = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.reason == "promoted"
    assert rec.names == ["retire-stable", "post-rollout"]  # post-rollout still runs, once
    ran = {e.hook: e for e in of_type(events, HookRan)}
    assert not ran["retire-stable"].ok and "scale-down refused" in ran["retire-stable"].reason
    assert not ran["post-rollout"].ok
    errors = [e.reason for e in outcome.timeline if e.kind == "error"]
    assert any("retire-stable hook failed" in line for line in errors)
    assert any("scale-down refused" in r.getMessage() for r in caplog.records)


async def test_the_rollback_hook_forces_a_rollback_when_it_says_yes(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    asked = []

    def rollback(call):
        asked.append((call.time, call.phase))
        return HookAnswer(call.time >= 90, "on-call pressed the big red button")

    plan = ck.from_weights([10, 50], hold=120)
    _, outcome, events = await run(
        plan, hooks=Hooks(rollback=rollback, interval=30), clock=clock, router=router
    )
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.reason == (
        "the rollback hook asked for a rollback: on-call pressed the big red button"
    )
    assert [t for t, _ in asked] == [0.0, 30.0, 60.0, 90.0]
    assert router.current.is_stable_only
    assert [e.hook for e in of_type(events, HookRan)] == ["rollback"]


async def test_a_failing_rollback_hook_never_rolls_back(anyio_backend):
    def broken(call):
        raise TimeoutError("rollback service unreachable")

    _, outcome, _ = await run(hooks=Hooks(rollback=broken, interval=30))
    assert outcome.phase is ck.Phase.SUCCEEDED


async def test_hooks_at_one_point_are_asked_in_order_and_all_must_agree(anyio_backend):
    order = []

    def gate(name, opens_at):
        def call(hook_call):
            order.append((name, hook_call.time))
            return hook_call.time >= opens_at

        return call

    hooks = Hooks(confirm_promotion=[gate("a", 0), gate("b", 200)], interval=50)
    _, outcome, _ = await run(hooks=hooks)
    assert outcome.finished_at == 220.0
    assert order == [
        ("a", 120.0),
        ("b", 120.0),
        ("a", 170.0),
        ("b", 170.0),
        ("a", 220.0),
        ("b", 220.0),
    ]


async def test_retry_after_an_abort_runs_the_hooks_before_traffic_again(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    rec = Recorder(router, clock)
    attempts = []

    def pre(call):
        attempts.append(call.time)
        return len(attempts) > 1  # fails the first time only

    hooks = Hooks(create_canary=rec.hook("create-canary"), pre_rollout=pre)
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks)
    first = await rollout.run()
    assert first.phase is ck.Phase.ABORTED
    clock.advance(10)
    rollout.retry()
    second = await rollout.run()
    assert second.phase is ck.Phase.SUCCEEDED
    assert rec.names == ["create-canary", "create-canary"]
    assert attempts == [0.0, 10.0]


# ---------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_a_rollout_killed_while_waiting_at_a_gate_resumes_waiting(
    anyio_backend, tmp_path, store_kind
):
    store = (
        ck.stores.MemoryStore()
        if store_kind == "memory"
        else ck.stores.FileStore(tmp_path / "state")
    )
    router = FakeRouter()
    approval = Approval("release manager")
    hooks = Hooks(confirm_promotion=approval, interval=60)
    first = ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks, store=store)
    await first.run(stop_at=400)  # the process dies while waiting
    saved = ck.machine.RolloutState.from_json((await store.load("rollout"))["state"])
    assert saved.gate is P.CONFIRM_PROMOTION and saved.gate_since == 120.0
    assert saved.gate_ask_at == 420.0

    clock = VirtualClock(start=1000)
    clock.call_at(1100, approval.approve)
    events = []
    second = ck.Rollout(
        PLAN, router=router, clock=clock, hooks=hooks, store=store, listeners=[events.append]
    )
    outcome = await second.run()
    assert second.resumed
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router) == [10, 50, 100]  # nothing applied twice
    [waiting] = of_type(events, GateWaiting)
    assert waiting.since == 120.0  # the wait goes on from when it began
    [opened] = of_type(events, GateOpened)
    assert opened.waited == outcome.finished_at - 120.0


async def test_a_rollout_killed_at_confirm_rollout_resumes_pending_and_moves_nothing(
    anyio_backend,
):
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    rec = Recorder(router, VirtualClock())
    approval = Approval("release manager")
    hooks = Hooks(confirm_rollout=approval, create_canary=rec.hook("create-canary"))
    first = ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks, store=store)
    outcome = await first.run(stop_at=100)
    assert outcome.phase is ck.Phase.PENDING and first.state.gate is P.CONFIRM_ROLLOUT
    clock = VirtualClock(start=500)
    clock.call_at(600, approval.approve)
    second = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks, store=store)
    outcome = await second.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.started_at == 0.0  # the same rollout, started before the crash
    assert rec.names == ["create-canary"]
    gates = [e.reason for e in outcome.timeline if e.kind == "gate"]
    # Asked at 0 and 60 before the crash, at 500 and 560 after it, open at 620: the
    # wait counts from when it began, before the crash.
    assert gates[-1].startswith("confirm-rollout opened after 620 s")


async def test_resuming_a_gate_wait_without_its_hook_is_refused_before_traffic_moves(
    anyio_backend,
):
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    hooks = Hooks(confirm_promotion=Approval("release manager"))
    await ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks, store=store).run(
        stop_at=200
    )
    applied = list(router.applied)
    later = ck.Rollout(PLAN, router=router, clock=VirtualClock(start=300), store=store)
    with pytest.raises(ck.ConfigError, match="waiting at confirm-promotion") as info:
        await later.run()
    assert info.value.field == "hooks"
    assert router.applied == applied


async def test_hooks_due_after_the_end_run_once_even_across_a_restart(anyio_backend):
    # A rollout that ended just before its process died, its post-rollout not yet called.
    plan = ck.Plan(steps=[ck.SetWeight(100)])
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, hook_points={P.POST_ROLLOUT}))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=100)))
    machine.handle(ck.machine.SplitApplied(1.0, ck.TrafficSplit(canary_percent=100)))
    assert machine.state.phase is ck.Phase.SUCCEEDED
    assert machine.next_action(1.0) == RunHook(point=P.POST_ROLLOUT)
    store = ck.stores.MemoryStore()
    await store.save("rollout", {"state": machine.state.to_json()})
    called = []
    hooks = Hooks(post_rollout=lambda call: called.append(call.phase))
    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=100))
    outcome = await ck.Rollout(
        plan, router=router, clock=VirtualClock(start=5), hooks=hooks, store=store
    ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    # Its hooks done, the finished rollout is only reported: nothing runs again.
    with pytest.raises(ck.ReleaseFinishedError, match="promoted"):
        await ck.Rollout(
            plan, router=router, clock=VirtualClock(start=5), hooks=hooks, store=store
        ).run()
    assert called == [ck.Phase.SUCCEEDED]
    assert router.applied == []


# ---------------------------------------------------------------------------- the machine


def test_without_hooks_the_saved_state_has_no_hook_fields():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0))
    data = machine.state.to_json()
    assert not {"hook_points", "gate", "gate_since", "hooks_done"} & set(data)


def test_a_state_waiting_at_a_gate_round_trips_through_json():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0, hook_points={P.CONFIRM_ROLLOUT, P.CREATE_CANARY}))
    assert machine.next_action(0.0) == RunHook(point=P.CONFIRM_ROLLOUT)
    machine.handle(HookAnswered(0.0, P.CONFIRM_ROLLOUT, False, "not yet", ask_again_at=60.0))
    assert machine.next_action(10.0) == ck.machine.WaitUntil(until=60.0)
    data = machine.state.to_json()
    assert data["gate"] == "confirm-rollout" and data["hook_points"] == [
        "confirm-rollout",
        "create-canary",
    ]
    assert ck.machine.RolloutState.from_json(data) == machine.state


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gate", "confirm-lunch", "gate: must be null or one of"),
        ("hook_points", "rollback", "hook_points: must be a list"),
        ("hooks_done", ["nope"], "hooks_done: must list only"),
        ("gate_since", "noon", "gate_since: must be a number"),
    ],
)
def test_damaged_hook_fields_are_refused_naming_the_field(field, value, message):
    data = ck.machine.RolloutState().to_json()
    data[field] = value
    with pytest.raises(ck.CorruptStateError, match=message):
        ck.machine.RolloutState.from_json(data)


def test_neither_the_progress_deadline_nor_the_pause_limit_runs_at_a_gate():
    plan = ck.Plan(steps=[ck.SetWeight(10)], progress_deadline=5, pause_limit=5)
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, hook_points={P.CONFIRM_PROMOTION}))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=10)))
    assert machine.state.gate is P.CONFIRM_PROMOTION
    assert machine.state.progress_deadline_at is None
    machine.handle(HookAnswered(0.0, P.CONFIRM_PROMOTION, False, ask_again_at=math.inf))
    assert machine.next_action(1e6) == ck.machine.WaitUntil(until=math.inf)
    machine.handle(ck.machine.Tick(1e6))
    assert machine.state.phase is ck.Phase.PROGRESSING and machine.state.gate is not None


def test_a_late_answer_from_a_gate_the_rollout_has_left_changes_nothing():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0, hook_points={P.CONFIRM_TRAFFIC_INCREASE}))
    assert machine.state.gate is P.CONFIRM_TRAFFIC_INCREASE
    machine.handle(ck.machine.PromoteRequested(5.0))  # the operator opened it meanwhile
    before = machine.state
    machine.handle(HookAnswered(6.0, P.CONFIRM_TRAFFIC_INCREASE, True))
    assert machine.state == before


ALL_POINTS = frozenset(HookPoint)


@settings(max_examples=200)
@given(script=st.lists(st.sampled_from(["yes", "no", "stop", "fail", "late"]), max_size=60))
def test_traffic_moves_only_past_open_gates(script):
    # Whatever the hooks answer, in whatever order: no traffic before the hooks before
    # traffic all said yes, no weight increase without its gate's yes, no promotion
    # without confirm-promotion's yes, every answer accepted, every state saveable.
    plan = ck.from_weights([10, 50], hold=60)
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, hook_points=ALL_POINTS))
    now = 0.0
    answers = iter(script)
    for _ in range(200):
        action = machine.next_action(now)
        before = machine.state
        if isinstance(action, ck.machine.Finish):
            break
        if isinstance(action, RunHook):
            said = next(answers, "yes")
            if said == "late":  # an answer for a point the rollout is not at
                event = HookAnswered(now, P.CONFIRM_PROMOTION, True)
            else:
                event = HookAnswered(
                    now,
                    action.point,
                    said == "yes",
                    said,
                    ask_again_at=now + 10,
                    stop=said == "stop",
                )
        elif isinstance(action, ck.machine.ApplySplit):
            event = ck.machine.SplitApplied(now, action.split)
        else:
            now = max(now, min(action.until, now + 100))
            event = ck.machine.Tick(now)
        machine.handle(event)
        after = machine.state
        if after.target.canary_percent > 0:
            assert {P.CONFIRM_ROLLOUT, P.CREATE_CANARY, P.PRE_ROLLOUT} <= after.hooks_done
        opened = isinstance(event, HookAnswered) and event.yes and event.point is before.gate
        if after.target.canary_percent > before.target.canary_percent:
            assert opened and event.point in (P.CONFIRM_TRAFFIC_INCREASE, P.CONFIRM_PROMOTION)
        if after.phase is ck.Phase.PROMOTING and before.phase is not ck.Phase.PROMOTING:
            assert opened and event.point is P.CONFIRM_PROMOTION
        assert ck.machine.RolloutState.from_json(after.to_json()) == after


def test_hook_answered_appears_in_the_transition_table():
    table = ck.machine.transition_table()
    for stage in ck.machine.Stage:
        assert "HookAnswered" in table[stage], stage


# ---------------------------------------------------------------------------- the API


def test_hooks_are_validated_naming_the_field():
    with pytest.raises(ck.ConfigError) as info:
        Hooks(confirm_promotion="https://example.com/approve")
    assert info.value.field == "confirm_promotion"
    with pytest.raises(ck.ConfigError) as info:
        Hooks(pre_rollout=[lambda call: True, 42])
    assert info.value.field == "pre_rollout[1]"
    for field, value in [("interval", 0), ("gate_timeout", -1), ("call_timeout", math.nan)]:
        with pytest.raises(ck.ConfigError) as info:
            Hooks(**{field: value})
        assert info.value.field == field
    with pytest.raises(ck.ConfigError) as info:
        ck.Rollout(PLAN, router=FakeRouter(), hooks={"confirm_promotion": print})
    assert info.value.field == "hooks"
    with pytest.raises(ck.ConfigError):
        HookAnswer(True, stop=True)


def test_hooks_repr_names_only_the_points_given():
    hooks = Hooks(confirm_promotion=Approval("release manager"), post_rollout=[print, len])
    assert repr(hooks) == (
        "Hooks(confirm_promotion=Approval('release manager'), post_rollout=[print, len])"
    )
    assert hooks.points == {P.CONFIRM_PROMOTION, P.POST_ROLLOUT}


async def test_an_approval_answers_by_the_operators_decision(anyio_backend):
    call = HookCall(
        hook=P.CONFIRM_PROMOTION,
        rollout="web",
        phase=ck.Phase.PROGRESSING,
        step=2,
        steps=2,
        weight=50.0,
        time=0.0,
    )
    approval = Approval("release manager", once=True)
    assert not await approval(call)
    approval.approve(by="ana", reason="dashboards fine")
    answer = await approval(call)
    assert answer == HookAnswer(True, "approved by ana: dashboards fine")
    assert not await approval(call)  # once: the next gate needs its own approval
    approval.deny("too late")
    assert (await approval(call)).stop


async def test_a_file_approval_reads_the_operators_word(anyio_backend, tmp_path):
    path = tmp_path / "web.approval"
    call = HookCall(
        hook=P.CONFIRM_ROLLOUT,
        rollout="web",
        phase=ck.Phase.PENDING,
        step=0,
        steps=2,
        weight=0.0,
        time=0.0,
    )
    approval = FileApproval(path)
    assert not await approval(call)
    path.write_text("maybe later\n")
    assert not await approval(call)
    path.write_text("approve ana: dashboards look fine\n")
    answer = await approval(call)
    assert answer.yes and answer.reason.endswith(": ana: dashboards look fine")
    path.write_text("DENY bad canary\n")
    answer = await approval(call)
    assert not answer.yes and answer.stop


async def test_another_process_approves_a_waiting_rollout_through_a_file(anyio_backend, tmp_path):
    # Real time and a real second process: the rollout waits until the file says approve.
    path = tmp_path / "web.approval"
    writer = (
        "import pathlib, sys, time; time.sleep(0.3); "
        "pathlib.Path(sys.argv[1]).write_text('approve ci-bot\\n')"
    )
    router = FakeRouter()
    hooks = Hooks(confirm_rollout=FileApproval(path), interval=0.05)
    plan = ck.Plan(steps=[ck.SetWeight(10)])
    process = subprocess.Popen([sys.executable, "-c", writer, str(path)])
    try:
        with anyio.fail_after(20):
            outcome = await ck.Rollout(plan, router=router, hooks=hooks).run()
    finally:
        process.wait(timeout=20)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert process.returncode == 0
    waited = [e.reason for e in outcome.timeline if e.kind == "gate"]
    assert waited[0].startswith("waiting for confirm-rollout")
    assert "approved in" in waited[-1] and waited[-1].endswith(": ci-bot")


async def test_a_hook_that_raises_config_error_is_asked_once_and_rolls_back(anyio_backend):
    asked = []

    def misconfigured(call):
        asked.append(call.hook)
        raise ck.ConfigError("gate.url", "htp://x", "must be an http:// or https:// URL")

    router = FakeRouter()
    rollout = ck.Rollout(
        PLAN,
        router=router,
        clock=VirtualClock(),
        hooks=Hooks(confirm_traffic_increase=misconfigured, interval=60),
    )
    with anyio.fail_after(10), pytest.raises(ck.ConfigError, match=r"gate\.url"):
        await rollout.run()
    assert asked == [P.CONFIRM_TRAFFIC_INCREASE]  # never asked again: it cannot succeed
    assert router.current.is_stable_only
    assert rollout.phase in (ck.Phase.ROLLED_BACK, ck.Phase.ABORTED)
