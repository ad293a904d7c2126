import json

import anyio
import pytest

import canarykit as ck
from canarykit.deciders import AllOf, AnyOf, Composable, all_of, any_of, bound, threshold
from canarykit.testing import ScriptedMetrics, regression, simulate

K = ck.VerdictKind


class Fixed(Composable):
    """Says the same thing every window and counts the windows it has seen."""

    def __init__(self, kind, reason="", early_pass=False):
        self.kind, self.reason, self.early_pass = kind, reason or kind.value, early_pass

    def initial_state(self):
        return 0

    def judge(self, state, observation):
        verdict = ck.Verdict(kind=self.kind, reason=self.reason, early_pass=self.early_pass)
        return ck.Judgement(verdict, state + 1)

    def __repr__(self):
        return f"Fixed({self.kind.value})"


class AsyncFixed(Fixed):
    async def judge(self, state, observation):
        await anyio.sleep(0)
        return super().judge(state, observation)


OBS = ck.Observation(
    start=0.0,
    end=10.0,
    stable=ck.ArmStats(requests=100, errors=1),
    canary=ck.ArmStats(requests=10, errors=0),
)


@pytest.mark.parametrize(
    ("kinds", "worst", "best"),
    [
        ((K.PASS, K.FAIL), K.FAIL, K.PASS),
        ((K.NOT_YET, K.INCONCLUSIVE), K.INCONCLUSIVE, K.NOT_YET),
        ((K.PASS, K.NOT_YET, K.PASS), K.NOT_YET, K.PASS),
    ],
)
def test_and_takes_the_worst_verdict_and_or_the_best(kinds, worst, best):
    members = [Fixed(kind) for kind in kinds]
    both = members[0]
    either = members[0]
    for member in members[1:]:
        both = both & member
        either = either | member
    assert both.judge(both.initial_state(), OBS).verdict.kind is worst
    assert either.judge(either.initial_state(), OBS).verdict.kind is best


def test_nested_composites_flatten_and_keep_one_state_per_member():
    a, b, c = Fixed(K.PASS), Fixed(K.PASS), Fixed(K.FAIL, "c failed")
    combined = a & b & c
    assert isinstance(combined, AllOf) and len(combined.deciders) == 3
    judged = combined.judge(combined.initial_state(), OBS)
    assert judged.state == [1, 1, 1]
    assert judged.verdict.reason == "c failed"
    again = combined.judge(json.loads(json.dumps(judged.state)), OBS)
    assert again.state == [2, 2, 2]
    assert isinstance(any_of(a, b) | c, AnyOf)
    assert repr(all_of(a, c)) == "Fixed(pass) & Fixed(fail)"


def test_early_pass_only_when_every_deciding_member_says_so():
    sure, unsure = Fixed(K.PASS, early_pass=True), Fixed(K.PASS)
    assert (sure & sure).judge(None, OBS).verdict.early_pass
    assert not (sure & unsure).judge(None, OBS).verdict.early_pass


def test_async_members_make_the_composite_async():
    combined = Fixed(K.PASS) & AsyncFixed(K.INCONCLUSIVE, "waiting for a person")

    async def main():
        result = combined.judge(combined.initial_state(), OBS)
        return await result

    judged = anyio.run(main)
    assert judged.verdict.kind is K.INCONCLUSIVE
    assert judged.verdict.reason == "waiting for a person"


def test_composite_needs_two_deciders_and_a_valid_state():
    with pytest.raises(ck.ConfigError, match="deciders"):
        all_of(Fixed(K.PASS))
    with pytest.raises(ck.ConfigError, match="deciders\\[1\\]"):
        all_of(Fixed(K.PASS), "not a decider")
    with pytest.raises(ck.ConfigError, match="state"):
        all_of(Fixed(K.PASS), Fixed(K.PASS)).judge([0], OBS)


def test_threshold_deciders_compose_in_a_rollout():
    errors = threshold(bound("error_rate", max=0.03), failure_limit=2)
    latency = threshold(bound("p99", max=0.5))
    sim = simulate(
        ck.linear(10, 30, hold=120, analysis_interval=30),
        decider=errors & latency,
        metrics=ScriptedMetrics(error_rate=regression(at=200, base=0.01, factor=8)),
    )
    assert sim.outcome.phase is ck.Phase.ROLLED_BACK
    assert "error_rate" in sim.outcome.reason


def test_early_pass_ends_a_hold_before_its_time():
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Pause(3600), ck.SetWeight(50), ck.Pause(3600)],
        analysis_interval=60,
    )
    sim = simulate(
        plan, decider=Fixed(K.PASS, "clearly fine", early_pass=True), metrics=ScriptedMetrics()
    )
    assert sim.outcome.promoted
    assert sim.outcome.finished_at == 120.0  # one window per hold instead of an hour each
    assert [e.time for e in sim.timeline if e.kind == "split"][1:] == [0.0, 60.0, 120.0]


def test_early_pass_ends_an_inline_analysis_before_its_last_window():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Analyze(600, 60), ck.SetWeight(50)])
    sim = simulate(plan, decider=Fixed(K.PASS, early_pass=True), metrics=ScriptedMetrics())
    assert sim.outcome.promoted
    assert sim.outcome.finished_at == 60.0


def test_without_early_pass_a_hold_runs_its_full_time():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(600)], analysis_interval=60)
    sim = simulate(plan, decider=Fixed(K.PASS), metrics=ScriptedMetrics())
    assert sim.outcome.finished_at == 600.0
