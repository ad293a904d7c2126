"""No unwatched time: after a resume, the time nobody watched the canary is judged first."""

# Imports internals on purpose: the machine's wording and limits.

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import canarykit as ck
from canarykit._machine import MAX_GAP_WINDOW
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

INTERVAL = 5.0
# The hold at 20% ends at 15: a runner gone from 12 to 22.5 misses its end.
PLAN = ck.Plan(
    steps=[ck.SetWeight(20), ck.Pause(15), ck.SetWeight(50), ck.Pause(15)],
    analysis_interval=INTERVAL,
)


class WatchedMetrics:
    """Records every window asked for; the canary errs in windows that overlap `bad`."""

    def __init__(self, bad=None, down=()):
        self.bad = bad
        self.down = down  # (start, end) of times the source does not answer
        self.windows = []

    async def collect(self, window):
        self.windows.append((window.start, window.end))
        if self.bad is not None:
            low, high = self.bad
            failing = window.start < high and window.end > low
        else:
            failing = False
        errors = 500 if failing else 5
        return ck.Observation(
            start=window.start,
            end=window.end,
            stable=ck.ArmStats(requests=1000, errors=5),
            canary=ck.ArmStats(requests=1000, errors=errors),
        )


class ErrorRateLimit:
    def initial_state(self):
        return None

    def judge(self, state, observation):
        rate = observation.canary.error_rate
        kind = ck.VerdictKind.FAIL if rate > 0.05 else ck.VerdictKind.PASS
        return ck.Judgement(ck.Verdict(kind=kind, reason=f"canary errors {rate:.1%}"))


def unwatched_seconds_unjudged(windows, start, end):
    """Seconds in [start, end) that no collected window covers (holes between windows)."""
    covered, hole = start, 0.0
    for low, high in sorted(windows):
        if low > covered:
            hole += low - covered
        covered = max(covered, high)
    return hole + max(0.0, end - covered)


def rollout(store, metrics, router, start):
    return ck.Rollout(
        PLAN,
        router=router,
        metrics=metrics,
        decider=ErrorRateLimit(),
        clock=VirtualClock(start=start),
        store=store,
    )


async def killed_mid_hold(bad=None):
    """Run to t=12 (windows judged up to 10), drop the runner, resume at 22.5."""
    store, router = ck.stores.MemoryStore(), FakeRouter()
    first_metrics = WatchedMetrics(bad)
    await rollout(store, first_metrics, router, 0.0).run(stop_at=12)  # then "killed"
    applied_before = len(router.applied)
    metrics = WatchedMetrics(bad)
    second = rollout(store, metrics, router, 22.5)
    outcome = await second.run()
    return first_metrics.windows, metrics.windows, router.applied[applied_before:], outcome


async def test_the_first_window_after_a_resume_covers_the_whole_gap():
    before, after, _, outcome = await killed_mid_hold()
    assert before == [(0.0, 5.0), (5.0, 10.0)]
    assert after[0] == (10.0, 22.5)  # from the last judged end to the resume
    assert after[1] == (22.5, 27.5)
    assert outcome.promoted
    windows = before + after
    assert unwatched_seconds_unjudged(windows, 0.0, windows[-1][1]) == 0.0
    [entry] = [e for e in outcome.verdicts if e.window_start == 10.0]
    assert entry.window_end == 22.5


async def test_the_hold_does_not_end_before_the_gap_is_judged():
    _, _, applied, outcome = await killed_mid_hold()
    # The saved hold ended at 15, during the gap; 50% only after the gap's window.
    fifty = next(e for e in outcome.timeline if e.kind == "split" and e.canary_percent == 50)
    gap_verdict = next(e for e in outcome.verdicts if e.window_start == 10.0)
    assert gap_verdict.time <= fifty.time
    assert outcome.timeline.index(gap_verdict) < outcome.timeline.index(fifty)
    assert [s.canary_percent for s in applied] == [50, 100]


async def test_a_regression_only_inside_the_gap_is_caught_before_traffic_moves_on():
    _, after, applied, outcome = await killed_mid_hold(bad=(13.0, 21.0))
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "analysis failed" in outcome.reason
    assert after == [(10.0, 22.5)]
    assert [s.canary_percent for s in applied] == [0]  # straight back, never to 50%


async def test_a_gap_longer_than_the_longest_window_is_judged_in_consecutive_windows():
    store, router = ck.stores.MemoryStore(), FakeRouter()
    await rollout(store, WatchedMetrics(), router, 0.0).run(stop_at=12)
    resume = 10.0 + 2.5 * MAX_GAP_WINDOW
    metrics = WatchedMetrics()
    outcome = await rollout(store, metrics, router, resume).run()
    assert outcome.promoted
    assert metrics.windows[:3] == [
        (10.0, 10.0 + MAX_GAP_WINDOW),
        (10.0 + MAX_GAP_WINDOW, 10.0 + 2 * MAX_GAP_WINDOW),
        (10.0 + 2 * MAX_GAP_WINDOW, resume),
    ]
    assert unwatched_seconds_unjudged(metrics.windows, 10.0, metrics.windows[-1][1]) == 0.0


async def test_a_short_gap_is_covered_by_the_next_regular_window():
    store, router = ck.stores.MemoryStore(), FakeRouter()
    await rollout(store, WatchedMetrics(), router, 0.0).run(stop_at=11)
    metrics = WatchedMetrics()
    await rollout(store, metrics, router, 12.0).run()
    assert metrics.windows[0] == (10.0, 15.0)


def test_a_gap_is_saved_and_read_back():
    machine = ck.machine.RolloutMachine(PLAN)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=20)))
    machine.handle(ck.machine.Recovered(30.0, ck.TrafficSplit(canary_percent=20)))
    assert machine.state.gap_until == 30.0
    assert ck.machine.RolloutState.from_json(machine.state.to_json()) == machine.state


def test_schema_2_states_are_migrated_without_a_release_or_gap():
    data = ck.machine.RolloutState(phase=ck.Phase.PROGRESSING).to_json()
    for name in ("release", "gap_until", "outage_until"):
        del data[name]
    data["schema"] = 2
    state = ck.machine.RolloutState.from_json(data)
    assert (state.release, state.gap_until, state.outage_until) == (None, None, None)


@settings(max_examples=150, deadline=None)
@given(
    kill=st.floats(0.5, 60.0),
    down=st.floats(0.0, 3 * MAX_GAP_WINDOW),
    interval=st.sampled_from([1.0, 5.0, 30.0]),
)
def test_resumed_windows_never_leave_a_hole(kill, down, interval):
    plan = ck.Plan(
        steps=[ck.SetWeight(20), ck.Pause(30), ck.SetWeight(50), ck.Pause(30)],
        analysis_interval=interval,
    )
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0))
    windows = []
    now, killed = 0.0, False
    for _ in range(10_000):
        action = machine.next_action(now)
        if isinstance(action, ck.machine.Finish):
            break
        if not killed and now >= kill:
            killed = True
            now += down  # nobody watched meanwhile
            machine.handle(ck.machine.Recovered(now, machine.state.confirmed))
            continue
        if isinstance(action, ck.machine.ApplySplit):
            machine.handle(ck.machine.SplitApplied(now, action.split))
        elif isinstance(action, ck.machine.CollectWindow):
            windows.append((action.start, action.end))
            verdict = ck.Verdict(kind=ck.VerdictKind.PASS, reason="fine")
            machine.handle(ck.machine.WindowJudged(now, action.kind, action.end, verdict))
        else:
            until = action.until
            if not killed and until > kill:
                until = kill
            now = max(now, until)
            machine.handle(ck.machine.Tick(now))
    assert machine.state.phase is ck.Phase.SUCCEEDED
    assert windows and windows[0][0] == 0.0
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start == end  # no hole, no overlap
    assert all(high - low <= max(MAX_GAP_WINDOW, interval) for low, high in windows)
