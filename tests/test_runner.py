import logging
import math

import anyio
import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock, regression, simulate

pytestmark = pytest.mark.anyio


class ErrorRateLimit:
    """A minimal decider for these tests: fail when the canary's error rate exceeds a limit."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def initial_state(self):
        return {"windows": 0}

    def judge(self, state, observation):
        rate = observation.canary.error_rate
        state = {"windows": state["windows"] + 1}
        if rate is None:
            kind, reason = ck.VerdictKind.NOT_YET, "no canary requests"
        elif rate > self.limit:
            kind, reason = ck.VerdictKind.FAIL, f"canary error rate {rate:.2%}"
        else:
            kind, reason = ck.VerdictKind.PASS, f"canary error rate {rate:.2%}"
        return ck.Judgement(ck.Verdict(kind=kind, reason=reason), state)


class AsyncApproval:
    """An async decider, as a human approval or a remote judge would be."""

    def __init__(self, verdict: ck.VerdictKind, delay: float = 0.0) -> None:
        self.verdict = verdict
        self.delay = delay

    def initial_state(self):
        return None

    async def judge(self, state, observation):
        await anyio.sleep(self.delay)
        return ck.Judgement(ck.Verdict(kind=self.verdict, reason="approver said so"))


class BrokenMetrics:
    async def collect(self, window):
        raise ConnectionError("prometheus is down")


PLAN = ck.linear(10, 30, hold=120, analysis_interval=30)


async def run(plan=PLAN, **kwargs):
    kwargs.setdefault("clock", VirtualClock())
    kwargs.setdefault("router", FakeRouter())
    rollout = ck.Rollout(plan, **kwargs)
    return rollout, await rollout.run()


async def test_healthy_canary_is_promoted_in_virtual_time(anyio_backend):
    rollout, outcome = await run(metrics=ScriptedMetrics(), decider=ErrorRateLimit(0.05))
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.split == ck.TrafficSplit(canary_percent=100)
    assert rollout.router.applied[-1].is_full_canary
    assert [s.canary_percent for s in rollout.router.applied] == [10, 40, 70, 100, 100]
    assert outcome.finished_at == 360.0
    assert len(outcome.verdicts) == 12


async def test_error_regression_rolls_back_within_one_window(anyio_backend):
    metrics = ScriptedMetrics(error_rate=regression(at=150, base=0.01, factor=10))
    rollout, outcome = await run(metrics=metrics, decider=ErrorRateLimit(0.05))
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert rollout.router.applied[-1].is_stable_only
    assert 150 < outcome.finished_at <= 180 + 30
    assert "analysis failed" in outcome.reason


async def test_async_decider_is_awaited(anyio_backend):
    _, outcome = await run(metrics=ScriptedMetrics(), decider=AsyncApproval(ck.VerdictKind.FAIL))
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "approver said so" in outcome.reason


async def test_hung_async_decider_is_cut_by_its_timeout_and_counts_as_an_error(anyio_backend):
    plan = ck.linear(10, 30, hold=120, analysis_interval=30, consecutive_error_limit=1)
    decider = AsyncApproval(ck.VerdictKind.PASS, delay=math.inf)
    _, outcome = await run(plan, metrics=ScriptedMetrics(), decider=decider, decider_timeout=0.01)
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "decider: timed out after 0.01 s" in outcome.reason


async def test_broken_metrics_roll_back_after_the_consecutive_error_limit(anyio_backend):
    _, outcome = await run(metrics=BrokenMetrics(), decider=ErrorRateLimit(0.05))
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "4 analysis errors in a row" in outcome.reason
    assert "ConnectionError: prometheus is down" in outcome.reason


async def test_router_failures_are_retried_with_backoff(anyio_backend):
    router = FakeRouter(fail_on={2, 3})  # call 1 reads the split; the first two applies fail
    _, outcome = await run(router=router, metrics=ScriptedMetrics(), decider=ErrorRateLimit(0.05))
    assert outcome.phase is ck.Phase.SUCCEEDED
    failures = [e for e in outcome.timeline if e.kind == "error"]
    assert [e.time for e in failures] == [0.0, 1.0]  # backoff 1 s, then 2 s before the third try


async def test_hung_router_call_is_bounded_by_the_call_timeout(anyio_backend):
    router = FakeRouter(hang_on={2})
    with anyio.fail_after(5):
        _, outcome = await run(
            router=router,
            metrics=ScriptedMetrics(),
            decider=ErrorRateLimit(0.05),
            call_timeout=0.05,
        )
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert any("timed out after 0.05 s" in e.reason for e in outcome.timeline)


async def test_router_that_never_works_ends_rolled_back_or_paused_never_unknown(anyio_backend):
    router = FakeRouter(fail_on=range(2, 1000))
    _, outcome = await run(router=router, metrics=ScriptedMetrics(), decider=ErrorRateLimit(0.05))
    assert outcome.phase is ck.Phase.PAUSED
    assert outcome.state.rollback_pending
    assert outcome.split == router.current == ck.TrafficSplit()
    assert "rollback failed" in outcome.reason


async def test_read_back_mismatch_is_a_router_error(anyio_backend):
    class LyingRouter(FakeRouter):
        async def read(self):
            # Truthful before the start (a router not at stable is refused), lying after.
            actual = await super().read()
            if not self.applied:
                return actual
            return ck.TrafficSplit(canary_percent=1)

    router = LyingRouter()
    _, outcome = await run(ck.linear(50, 50, hold=60), router=router)
    assert outcome.phase is ck.Phase.PAUSED  # cannot even confirm the rollback
    assert "read back canary 1%" in outcome.reason


async def test_plan_needing_header_routes_is_refused_before_traffic_moves(anyio_backend):
    router = FakeRouter(capabilities=ck.RouterCapabilities(weights=True))
    route = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    plan = ck.Plan(steps=[ck.SetHeaderRoutes([route]), ck.SetWeight(10)])
    with pytest.raises(ck.UnsupportedPlanError, match="header_routes"):
        ck.Rollout(plan, router=router)
    assert router.calls == []


def test_missing_decider_or_metrics_is_refused_at_construction():
    with pytest.raises(ck.ConfigError, match="metrics"):
        ck.Rollout(PLAN, router=FakeRouter(), decider=ErrorRateLimit(0.1))
    with pytest.raises(ck.ConfigError, match="decider"):
        ck.Rollout(PLAN, router=FakeRouter(), metrics=ScriptedMetrics())
    with pytest.raises(ck.ConfigError, match="router"):
        ck.Rollout(PLAN, router=object(), metrics=ScriptedMetrics(), decider=ErrorRateLimit(0.1))
    with pytest.raises(ck.ConfigError, match="call_timeout"):
        ck.Rollout(ck.linear(50, 50, hold=1), router=FakeRouter(), call_timeout=0)


async def test_operator_controls_from_another_task(anyio_backend):
    clock = VirtualClock()
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion(), ck.SetWeight(50), ck.Pause(600)])
    rollout = ck.Rollout(plan, router=FakeRouter(), clock=clock)

    async def operator():
        await clock.sleep_until(100)
        assert rollout.phase is ck.Phase.PAUSED
        rollout.promote()
        await clock.sleep_until(200)
        rollout.pause("looking at dashboards")
        await clock.sleep_until(300)
        with pytest.raises(ck.InvalidTransition):
            rollout.retry()
        rollout.resume()

    async with anyio.create_task_group() as tg:
        tg.start_soon(operator)
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    # 100 s waiting, then the 600 s pause less the 100 s it was paused for: ends at 800.
    assert outcome.finished_at == 800.0
    commands = [e.reason for e in outcome.timeline if e.kind == "command"]
    assert commands[0] == "promote"
    assert commands[1] == "pause looking at dashboards"
    assert commands[2].startswith("retry refused: retry: only a rolled-back or aborted")
    assert commands[3] == "resume"


async def test_cancelling_the_runner_rolls_back_under_a_shield(anyio_backend):
    router = FakeRouter()
    rollout = ck.Rollout(ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()]), router=router)
    with anyio.move_on_after(0.2):
        await rollout.run()
    assert rollout.phase is ck.Phase.ABORTED
    assert router.applied[-1].is_stable_only
    assert rollout.state.reason == "cancelled while running"


async def test_cancelling_with_leave_keeps_traffic_where_it_is(anyio_backend):
    router = FakeRouter()
    rollout = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()]), router=router, on_cancel="leave"
    )
    with anyio.move_on_after(0.2):
        await rollout.run()
    assert rollout.phase is ck.Phase.PAUSED
    assert router.current.canary_percent == 25


async def test_unexpected_error_in_the_loop_rolls_back_and_propagates(anyio_backend):
    router = FakeRouter()

    class ExplodingClock(VirtualClock):
        async def sleep_until(self, deadline):
            if self.now() >= 60:
                raise RuntimeError("clock broke")
            await super().sleep_until(deadline)

    rollout = ck.Rollout(ck.linear(10, 10, hold=60), router=router, clock=ExplodingClock())
    with pytest.raises(RuntimeError, match="clock broke"):
        await rollout.run()
    assert rollout.phase is ck.Phase.ABORTED
    assert router.applied[-1].is_stable_only


async def test_listeners_get_typed_events_and_their_errors_do_not_stop_the_rollout(
    anyio_backend, caplog
):
    seen = []

    def bad_listener(event):
        raise ValueError("listener bug")

    caplog.set_level(logging.INFO, logger="canarykit")
    _, outcome = await run(
        metrics=ScriptedMetrics(),
        decider=ErrorRateLimit(0.05),
        listeners=[seen.append, bad_listener],
    )
    assert outcome.phase is ck.Phase.SUCCEEDED
    kinds = {type(e).__name__ for e in seen}
    assert {"PhaseChanged", "SplitConfirmed", "VerdictReached"} <= kinds
    assert any(
        isinstance(e, ck.events.VerdictReached) and e.observation.canary.requests > 0 for e in seen
    )
    assert "a listener failed" in caplog.text
    assert "canary 40%" in caplog.text


async def test_state_is_saved_after_every_change(anyio_backend):
    store = ck.stores.MemoryStore()
    _, outcome = await run(
        metrics=ScriptedMetrics(), decider=ErrorRateLimit(0.05), store=store, key="web"
    )
    saved = await store.load("web")
    assert ck.machine.RolloutState.from_json(saved["state"]) == outcome.state
    assert store.saves > 10


async def test_run_stops_at_the_requested_time_leaving_traffic_reported(anyio_backend):
    rollout = ck.Rollout(ck.linear(10, 10, hold=60), router=FakeRouter(), clock=VirtualClock())
    outcome = await rollout.run(stop_at=130)
    assert outcome.phase is ck.Phase.PROGRESSING
    assert outcome.split.canary_percent == 30
    assert outcome.finished_at == 130


def test_simulate_with_paused_rollout_and_no_operator_ends_paused():
    sim = simulate(ck.Plan(steps=[ck.SetWeight(5), ck.WaitForPromotion()]))
    assert sim.outcome.phase is ck.Phase.PAUSED
    assert sim.outcome.split.canary_percent == 5


def test_simulate_runs_scheduled_operator_commands():
    sim = simulate(
        ck.Plan(steps=[ck.SetWeight(5), ck.WaitForPromotion(), ck.SetWeight(50)]),
        commands=[(300, "abort", "changed my mind"), (400, "promote")],
    )
    assert sim.outcome.phase is ck.Phase.ABORTED
    assert sim.outcome.reason == "changed my mind"
    assert sim.outcome.finished_at == 300


class SlowMetrics:
    """A source that really suspends: `delay` seconds on the event loop's clock."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = ScriptedMetrics()

    async def collect(self, window):
        await anyio.sleep(self.delay)
        return self.inner.observe(window)


class FutureMetrics:
    """A source whose collect() returns an awaitable that is not a coroutine."""

    def __init__(self) -> None:
        self.inner = ScriptedMetrics()

    def collect(self, window):
        observation = self.inner.observe(window)

        class Ready:
            def __await__(self):
                yield from anyio.sleep(0).__await__()
                return observation

        return Ready()


async def test_metrics_that_suspend_are_awaited_to_the_end(anyio_backend):
    _, outcome = await run(
        ck.linear(50, 50, hold=60, analysis_interval=30),
        metrics=SlowMetrics(0.001),
        decider=ErrorRateLimit(0.05),
    )
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert len(outcome.verdicts) == 2


async def test_metrics_returning_another_awaitable_work(anyio_backend):
    _, outcome = await run(
        ck.linear(50, 50, hold=60, analysis_interval=30),
        metrics=FutureMetrics(),
        decider=ErrorRateLimit(0.05),
    )
    assert outcome.phase is ck.Phase.SUCCEEDED


async def test_slow_metrics_time_out_after_suspending(anyio_backend):
    plan = ck.linear(50, 50, hold=60, analysis_interval=30, consecutive_error_limit=1)
    with anyio.fail_after(5):
        _, outcome = await run(
            plan, metrics=SlowMetrics(10), decider=ErrorRateLimit(0.05), call_timeout=0.02
        )
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "metrics: timed out after 0.02 s" in outcome.reason


async def test_abort_interrupts_a_slow_collection(anyio_backend):
    clock = VirtualClock()
    rollout = ck.Rollout(
        ck.linear(50, 50, hold=60, analysis_interval=30),
        router=FakeRouter(),
        metrics=SlowMetrics(30),
        decider=ErrorRateLimit(0.05),
        clock=clock,
        call_timeout=60,
    )

    async def operator():
        await anyio.sleep(0.05)  # real time: the rollout is stuck in collect()
        rollout.abort("enough waiting")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(operator)
            outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.reason == "enough waiting"
    assert not any(e.kind == "verdict" for e in outcome.timeline)


async def test_cancelling_the_run_during_a_slow_collection_rolls_back(anyio_backend):
    router = FakeRouter()
    rollout = ck.Rollout(
        ck.linear(50, 50, hold=60, analysis_interval=30),
        router=router,
        metrics=SlowMetrics(30),
        decider=ErrorRateLimit(0.05),
        clock=VirtualClock(),
        call_timeout=60,
    )
    with anyio.move_on_after(0.1):
        await rollout.run()
    assert rollout.phase is ck.Phase.ABORTED
    assert router.applied[-1].is_stable_only


class NoDataSource:
    """A source that answers, but has no series for the window (an idle canary)."""

    async def collect(self, window):
        raise ck.NoDataError("no series matched")


@pytest.mark.parametrize(
    ("no_data", "phase", "reason"),
    [
        ("inconclusive", ck.Phase.PAUSED, "analysis inconclusive: error_rate: no canary data"),
        ("fail", ck.Phase.ROLLED_BACK, "analysis failed: error_rate: no canary data"),
        # Ignored windows never pass, so the plan is held before promotion.
        ("ignore", ck.Phase.PAUSED, "analysis has not passed before promotion"),
    ],
)
async def test_no_data_is_the_deciders_call_not_a_metrics_failure(
    anyio_backend, no_data, phase, reason
):
    from canarykit.deciders import bound, threshold

    plan = ck.linear(50, 50, hold=60, analysis_interval=30, consecutive_error_limit=1)
    router = FakeRouter()
    rollout = ck.Rollout(
        plan,
        router=router,
        metrics=NoDataSource(),
        decider=threshold(bound("error_rate", max=0.02), no_data=no_data),
        clock=VirtualClock(),
    )
    outcome = await rollout.run(stop_at=10_000)
    assert outcome.phase is phase, outcome.reason
    assert outcome.reason.startswith(reason)
    # A window without data is judged, never reported as an analysis error.
    assert not [e for e in outcome.timeline if e.kind == "error"]
    if phase is ck.Phase.PAUSED:
        assert outcome.split == router.current  # held where the router confirmed it
