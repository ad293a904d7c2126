"""Metrics outage policy: roll back (the default) or pause, holding traffic, with a limit."""

import itertools

import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

PLAN = ck.Plan(
    steps=[ck.SetWeight(20), ck.Pause(300), ck.SetWeight(50), ck.Pause(60)],
    analysis_interval=30,
    consecutive_error_limit=2,
)


class FlakyMetrics:
    """Healthy windows, except that the source is down for windows ending in [down, up)."""

    def __init__(self, down, up):
        self.down, self.up = down, up
        self.asked = []

    async def collect(self, window):
        self.asked.append((window.start, window.end))
        if self.down <= window.end < self.up:
            raise ConnectionError("prometheus is down")
        return ck.Observation(
            start=window.start,
            end=window.end,
            stable=ck.ArmStats(requests=1000, errors=5),
            canary=ck.ArmStats(requests=1000, errors=5),
        )


class Fine:
    def initial_state(self):
        return None

    def judge(self, state, observation):
        return ck.Judgement(ck.Verdict(kind=ck.VerdictKind.PASS, reason="fine"))


def rollout(metrics, router, **options):
    return ck.Rollout(
        PLAN, router=router, metrics=metrics, decider=Fine(), clock=VirtualClock(), **options
    )


def phases(outcome):
    return [(e.time, e.phase, e.reason) for e in outcome.timeline if e.kind == "phase"]


async def test_by_default_an_outage_rolls_back_at_the_error_limit():
    router = FakeRouter()
    outcome = await rollout(FlakyMetrics(down=60, up=10_000), router).run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.reason.startswith("2 analysis errors in a row")
    assert outcome.finished_at == 90.0


async def test_pause_holds_traffic_through_an_outage_and_resumes_when_metrics_return():
    router = FakeRouter()
    metrics = FlakyMetrics(down=60, up=200)
    outcome = await rollout(
        metrics, router, on_metrics_outage="pause", metrics_outage_limit=600
    ).run()
    assert outcome.promoted
    assert [s.canary_percent for s in router.applied] == [20, 50, 100]  # held, no rollback
    changes = phases(outcome)
    paused = next(c for c in changes if c[1] is ck.Phase.PAUSED)
    assert paused[0] == 90.0
    assert paused[2].startswith("metrics outage: 2 analysis errors in a row")
    assert "holding traffic at 20% canary, rolling back after 600 s" in paused[2]
    resumed = next(c for c in changes if c[2] == "metrics back: resumed")
    assert resumed[0] == 210.0 and resumed[1] is ck.Phase.PROGRESSING
    # Windows were asked for all through the outage, none skipped.
    for (_, end), (start, _) in itertools.pairwise(metrics.asked):
        assert start == end
    # The hold kept what was left of it: 300 s less the 90 s before the pause.
    fifty = next(e for e in outcome.timeline if e.kind == "split" and e.canary_percent == 50)
    assert fifty.time == 210.0 + 210.0


async def test_pause_rolls_back_once_the_outage_outlasts_its_limit():
    router = FakeRouter()
    outcome = await rollout(
        FlakyMetrics(down=60, up=10_000),
        router,
        on_metrics_outage="pause",
        metrics_outage_limit=120,
    ).run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.reason.startswith("metrics outage lasted 120 s, past its limit")
    assert outcome.finished_at == 210.0  # paused at 90, limit 120
    assert outcome.split == router.current == ck.TrafficSplit()


async def test_the_pause_limit_does_not_cut_an_outage_pause_short():
    plan = ck.Plan(
        steps=PLAN.steps, analysis_interval=30, consecutive_error_limit=2, pause_limit=60
    )
    router = FakeRouter()
    outcome = await ck.Rollout(
        plan,
        router=router,
        metrics=FlakyMetrics(down=60, up=200),
        decider=Fine(),
        clock=VirtualClock(),
        on_metrics_outage="pause",
        metrics_outage_limit=600,
    ).run()
    assert outcome.promoted


def test_an_operator_pause_during_an_outage_is_not_resumed_by_the_metrics():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=20)))
    kind = ck.machine.AnalysisKind.BACKGROUND
    for end in (30.0, 60.0):
        machine.handle(ck.machine.WindowFailed(end, kind, end, "down", outage_limit=600))
    assert machine.state.phase is ck.Phase.PAUSED and machine.state.outage_until == 660.0
    machine.handle(ck.machine.PauseRequested(70.0, "looking into it"))
    verdict = ck.Verdict(kind=ck.VerdictKind.PASS, reason="fine")
    machine.handle(ck.machine.WindowJudged(90.0, kind, 90.0, verdict))
    assert machine.state.phase is ck.Phase.PAUSED
    assert machine.state.outage_until is None
    assert machine.state.reason == "looking into it"


def test_a_failed_verdict_during_an_outage_pause_rolls_back():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=20)))
    kind = ck.machine.AnalysisKind.BACKGROUND
    for end in (30.0, 60.0):
        machine.handle(ck.machine.WindowFailed(end, kind, end, "down", outage_limit=600))
    machine.handle(
        ck.machine.WindowJudged(
            90.0, kind, 90.0, ck.Verdict(kind=ck.VerdictKind.FAIL, reason="bad")
        )
    )
    assert machine.state.phase is ck.Phase.ROLLING_BACK
