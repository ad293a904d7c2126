"""Progress deadline: a step that cannot complete ends by policy, rolled back or paused."""

import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, RouterFault, ScriptedMetrics, VirtualClock

pytestmark = pytest.mark.anyio


class RefusingRouter(FakeRouter):
    """Never confirms a canary weight (stable works): a load balancer that ignores us."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.refuse = True

    async def apply(self, split):
        if self.refuse and not split.is_stable_only:
            self.calls.append("apply")
            raise RouterFault(f"weight {split.canary_percent:g}% not accepted")
        await super().apply(split)


class NoMetrics:
    async def collect(self, window):
        raise ck.MetricsError("connection refused")


class Passes:
    def initial_state(self):
        return None

    def judge(self, state, observation):
        return ck.Judgement(ck.Verdict(kind=ck.VerdictKind.PASS, reason="fine"))


STUCK_WEIGHT = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])


async def test_a_weight_the_router_never_confirms_rolls_back_at_the_deadline(anyio_backend):
    router = RefusingRouter()
    router.refuse = False
    clock = VirtualClock()
    # 10% goes through; from 60 s the router refuses 50%, retried with backoff.
    clock.call_at(30, lambda: setattr(router, "refuse", True))
    rollout = ck.Rollout(STUCK_WEIGHT, router=router, clock=clock, apply_attempts=1000)
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.reason == (
        "progress deadline: step 3 (set weight 50%) did not complete within 600 s: "
        "the router has not confirmed canary 50%"
    )
    assert outcome.finished_at == 660.0  # the step began at 60
    assert router.current.is_stable_only


async def test_with_the_pause_policy_the_rollout_holds_and_an_operator_can_retry(anyio_backend):
    plan = ck.Plan(steps=STUCK_WEIGHT.steps, on_progress_deadline="pause", progress_deadline=300)
    router = RefusingRouter()
    clock = VirtualClock()
    rollout = ck.Rollout(plan, router=router, clock=clock, apply_attempts=1000)
    held = await rollout.run(stop_at=1000)
    assert held.phase is ck.Phase.PAUSED
    assert held.reason.startswith("progress deadline: step 1 (set weight 10%)")
    assert held.state.paused_at == 300.0
    # Holds what the router last confirmed, and stops retrying while paused.
    assert held.split == router.current == held.state.target == ck.TrafficSplit()
    attempts = router.calls.count("apply")
    assert attempts == len([e for e in held.timeline if e.kind == "error"])

    # The load balancer is fixed; the operator resumes: the step runs again from the top.
    router.refuse = False
    clock.call_at(1100, rollout.resume)
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert [s.canary_percent for s in router.applied] == [10, 50, 100]
    assert outcome.finished_at == 1100.0 + 120


async def test_metrics_that_never_arrive_end_an_analysis_step_at_its_deadline(anyio_backend):
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Analyze(300, 60), ck.SetWeight(50)],
        consecutive_error_limit=1000,  # so only the deadline can end it
    )
    rollout = ck.Rollout(
        plan, router=FakeRouter(), metrics=NoMetrics(), decider=Passes(), clock=VirtualClock()
    )
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.finished_at == 900.0  # 300 s of analysis + 600 s
    assert "step 2 (analyze 300 s)" in outcome.reason
    assert "0 of its 5 analysis windows judged" in outcome.reason


async def test_the_pause_policy_pauses_a_stuck_analysis_and_keeps_watching(anyio_backend):
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Analyze(300, 60), ck.SetWeight(50)],
        analysis_interval=60,
        consecutive_error_limit=1000,
        on_progress_deadline="pause",
    )
    rollout = ck.Rollout(
        plan, router=FakeRouter(), metrics=NoMetrics(), decider=Passes(), clock=VirtualClock()
    )
    outcome = await rollout.run(stop_at=2000)
    assert outcome.phase is ck.Phase.PAUSED
    assert outcome.state.paused_at == 900.0
    assert outcome.split.canary_percent == 10
    errors_after = [e for e in outcome.timeline if e.kind == "error" and e.time > 900]
    assert errors_after  # background analysis still tries to watch the canary


async def test_a_healthy_rollout_never_meets_its_deadline(anyio_backend):
    plan = ck.linear(10, 30, hold=900, analysis_interval=60, progress_deadline=60)
    rollout = ck.Rollout(
        plan,
        router=FakeRouter(),
        metrics=ScriptedMetrics(),
        decider=Passes(),
        clock=VirtualClock(),
    )
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED  # long holds are the plan, not a stall


async def test_the_deadline_resumes_from_its_saved_time(anyio_backend):
    store = ck.stores.MemoryStore()
    router = RefusingRouter()
    first = ck.Rollout(
        STUCK_WEIGHT, router=router, clock=VirtualClock(), store=store, apply_attempts=1000
    )
    await first.run(stop_at=400)  # still retrying 10% when the process stops
    assert first.state.progress_deadline_at == 600.0
    second = ck.Rollout(
        STUCK_WEIGHT,
        router=router,
        clock=VirtualClock(start=450),
        store=store,
        apply_attempts=1000,
    )
    outcome = await second.run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.finished_at == 600.0  # not 450 + 600


# ---------------------------------------------------------------------------- the machine


def test_paused_time_does_not_count_towards_the_deadline():
    machine = ck.machine.RolloutMachine(ck.Plan(steps=[ck.SetWeight(10)], progress_deadline=100))
    machine.handle(ck.machine.Start(0.0))
    assert machine.state.progress_deadline_at == 100.0
    machine.handle(ck.machine.PauseRequested(50.0))
    assert machine.state.progress_deadline_at is None
    machine.handle(ck.machine.ResumeRequested(1000.0))
    assert machine.state.progress_deadline_at == 1100.0
    assert machine.next_action(1100.0) == ck.machine.WaitUntil(until=1100.0)  # before any apply
    machine.handle(ck.machine.Tick(1100.0))
    assert machine.state.phase is ck.Phase.ROLLING_BACK


def test_a_pause_step_gets_its_own_length_before_the_deadline_counts():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(1000)], progress_deadline=30)
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(5.0, ck.TrafficSplit(canary_percent=10)))
    assert machine.state.step == 1
    assert machine.state.progress_deadline_at == 5.0 + 1000 + 30
    assert machine.next_action(5.0) == ck.machine.WaitUntil(until=1005.0)


def test_no_deadline_when_it_is_turned_off():
    machine = ck.machine.RolloutMachine(ck.Plan(steps=[ck.SetWeight(10)], progress_deadline=None))
    machine.handle(ck.machine.Start(0.0))
    assert machine.state.progress_deadline_at is None
    machine.handle(ck.machine.Tick(1e9))
    assert machine.state.phase is ck.Phase.PROGRESSING


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"progress_deadline": 0}, "progress_deadline"),
        ({"progress_deadline": -5}, "progress_deadline"),
        ({"progress_deadline": "10m"}, "progress_deadline"),
        ({"progress_deadline": float("nan")}, "progress_deadline"),
        ({"on_progress_deadline": "abort"}, "on_progress_deadline"),
        ({"on_progress_deadline": None}, "on_progress_deadline"),
    ],
)
def test_bad_deadline_settings_are_refused_naming_the_field(options, field):
    with pytest.raises(ck.ConfigError) as caught:
        ck.Plan(steps=[ck.SetWeight(10)], **options)
    assert caught.value.field == field


POLICY = """
[plan]
shape = "linear"
initial = 10
step = 30
hold = "1m"
analysis_interval = "30s"
{extra}

[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = 0.02
"""


def test_the_policy_file_sets_the_deadline_and_its_policy():
    policy = ck.policy.load_policy(
        POLICY.format(extra='progress_deadline = "5m"\non_progress_deadline = "pause"')
    )
    assert policy.plan.progress_deadline == 300.0
    assert policy.plan.on_progress_deadline == "pause"
    assert ck.policy.load_policy(policy.to_toml()) == policy
    default = ck.policy.load_policy(POLICY.format(extra=""))
    assert default.plan.progress_deadline == 600.0
    assert default.plan.on_progress_deadline == "rollback"
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy(POLICY.format(extra='on_progress_deadline = "explode"'))
    assert caught.value.field == "plan.on_progress_deadline"
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy(POLICY.format(extra='progress_deadline = "soon"'))
    assert caught.value.field == "plan.progress_deadline"
