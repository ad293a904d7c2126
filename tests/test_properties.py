"""Property-based checks of the whole loop: machine, runner, virtual clock and decider."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import canarykit as ck
from canarykit import machine as M
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, regression, simulate
from helpers.stages import AT, FULL, PLAN, STABLE, TEN, at_stage

ROUTE = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")

steps = st.one_of(
    st.builds(ck.SetWeight, st.floats(0.1, 100)),
    st.builds(ck.Pause, st.floats(1, 900)),
    st.just(ck.WaitForPromotion()),
    st.builds(lambda n, every: ck.Analyze(n * every, every), st.integers(1, 4), st.floats(5, 120)),
    st.builds(ck.SetMirror, st.floats(0, 50)),
    st.builds(ck.SetHeaderRoutes, st.sampled_from([(), (ROUTE,)])),
)

plans = st.builds(
    ck.Plan,
    steps=st.lists(steps, min_size=1, max_size=8),
    analysis_interval=st.one_of(st.none(), st.floats(5, 300)),
    # A finite pause limit guarantees an end even when no operator ever comes back.
    pause_limit=st.floats(60, 7200),
    require_pass=st.booleans(),
    consecutive_error_limit=st.integers(1, 5),
)

metrics = st.builds(
    ScriptedMetrics,
    requests_per_second=st.sampled_from([0.0, 1.0, 20.0, 100.0, 1000.0]),
    error_rate=st.builds(
        regression, at=st.floats(0, 3000), base=st.floats(0, 0.05), factor=st.floats(0.5, 10)
    ),
    latency_median=st.floats(0.005, 1.0),
    seed=st.integers(0, 2**32),
)

deciders = st.builds(
    lambda limit, p99, failures, no_data: threshold(
        bound("error_rate", max=limit),
        bound("p99", max=p99),
        failure_limit=failures,
        no_data=no_data,
    ),
    limit=st.floats(0.001, 0.2),
    p99=st.floats(0.05, 5.0),
    failures=st.integers(1, 3),
    no_data=st.sampled_from(["fail", "inconclusive", "ignore"]),
)

command_names = st.sampled_from(["promote", "promote_full", "pause", "resume", "abort", "retry"])
commands = st.lists(st.tuples(st.floats(0, 6000), command_names), max_size=12)


def terminal_entries(outcome):
    return [e for e in outcome.timeline if e.kind == "phase" and e.phase.is_terminal]


@given(plan=plans, metrics=metrics, decider=deciders, commands=commands)
def test_any_rollout_ends_in_exactly_one_terminal_state_at_0_or_100_percent(
    plan, metrics, decider, commands
):
    router = FakeRouter()
    sim = simulate(
        plan, decider=decider, metrics=metrics, router=router, commands=commands, until=1e5
    )
    outcome = sim.outcome

    assert outcome.phase.is_terminal, outcome.reason
    last = router.applied[-1]
    if outcome.phase is ck.Phase.SUCCEEDED:
        assert last.is_full_canary
    else:
        assert last.is_stable_only
    # The split the router last confirmed is the one the state reports.
    assert outcome.split == router.current == outcome.state.confirmed
    # Each run through the plan ends once; only an accepted retry starts another.
    retries = [e for e in outcome.timeline if e.kind == "command" and e.reason == "retry"]
    assert len(terminal_entries(outcome)) == len(retries) + 1
    assert outcome.timeline[-1].phase is outcome.phase
    assert (
        ck.machine.RolloutState.from_json(json.loads(json.dumps(outcome.state.to_json())))
        == outcome.state
    )


@given(
    plan=plans,
    metrics=metrics,
    decider=deciders,
    commands=commands,
    failing_calls=st.sets(st.integers(1, 40), max_size=15),
)
def test_a_flaky_router_never_leaves_traffic_in_an_unknown_state(
    plan, metrics, decider, commands, failing_calls
):
    router = FakeRouter(fail_on=failing_calls - {1})  # call 1 reads the split before starting
    sim = simulate(
        plan,
        decider=decider,
        metrics=metrics,
        router=router,
        commands=commands,
        until=1e5,
        retry_delay=0.5,
    )
    outcome = sim.outcome
    if outcome.phase.is_terminal:
        assert outcome.split == router.current
        expected = (
            outcome.split.is_full_canary if outcome.promoted else outcome.split.is_stable_only
        )
        assert expected
    else:
        # Even the rollback failed: the rollout says so and where traffic was last confirmed.
        assert outcome.phase is ck.Phase.PAUSED
        assert outcome.state.rollback_pending
        assert "rollback failed" in outcome.reason


# ---------------------------------------------------------------------------- the table

TABLE = M.transition_table()
REASONS = st.sampled_from(["down", "x" * 3])
verdicts = st.builds(
    ck.Verdict, kind=st.sampled_from(list(ck.VerdictKind)), reason=REASONS, early_pass=st.booleans()
)
hook_sets = st.frozensets(st.sampled_from(list(M.HookPoint)), max_size=4)
points = st.sampled_from(list(M.HookPoint))
kinds = st.sampled_from(list(M.AnalysisKind))
# A split by name: the state's own target is only known when the event is made.
split_names = st.sampled_from(["stable", "ten", "full", "target"])
maybe_split_names = st.one_of(st.none(), split_names)


def _split(name, state):
    return {"stable": STABLE, "ten": TEN, "full": FULL}.get(name, state.target)


def _maybe(name, state):
    return None if name is None else _split(name, state)


# Each draws a maker: (now, state, action) -> any event, whether the state expects it or not.
any_event = st.one_of(
    st.builds(
        lambda s, h, a: lambda now, state, _: M.Start(now, _maybe(s, state), h, a),
        maybe_split_names,
        hook_sets,
        st.booleans(),
    ),
    st.builds(lambda s: lambda now, state, _: M.SplitApplied(now, _split(s, state)), split_names),
    st.builds(
        lambda s, r: lambda now, state, _: M.ApplyFailed(now, _split(s, state), r),
        split_names,
        REASONS,
    ),
    st.builds(lambda k, v: lambda now, _, __: M.WindowJudged(now, k, now, v), kinds, verdicts),
    st.builds(
        lambda k, r, o: lambda now, _, __: M.WindowFailed(now, k, now, r, o),
        kinds,
        REASONS,
        st.sampled_from([None, 300.0]),
    ),
    st.just(lambda now, _, __: M.Tick(now)),
    st.sampled_from(
        [M.PromoteRequested, M.FullPromotionRequested, M.ResumeRequested, M.RetryRequested]
    ).map(lambda kind: lambda now, _, __: kind(now)),
    st.sampled_from([M.PauseRequested, M.AbortRequested]).map(
        lambda kind: lambda now, _, __: kind(now, "operator")
    ),
    # A new runner, maybe with other hooks: gates and the rollback hook come into play.
    st.builds(
        lambda s, h: lambda now, state, _: M.Recovered(now, _maybe(s, state), h),
        maybe_split_names,
        st.one_of(st.none(), hook_sets),
    ),
    st.builds(
        lambda p, y, stop: lambda now, _, __: M.HookAnswered(now, p, y, "said", stop=stop),
        points,
        st.booleans(),
        st.booleans(),
    ),
)


def _answer(ok, verdict, yes, stop):
    """What a driver reports after doing the action, succeeding (`ok`) or not."""

    def make(now, _, action):
        if isinstance(action, M.ApplySplit):
            if ok:
                return M.SplitApplied(now, action.split)
            return M.ApplyFailed(now, action.split, "down")
        if isinstance(action, M.CollectWindow):
            return M.WindowJudged(now, action.kind, action.end, verdict)
        if isinstance(action, M.RunHook):
            return M.HookAnswered(now, action.point, yes, stop=stop)
        return M.Tick(now)

    return make


driver_answer = st.builds(_answer, st.booleans(), verdicts, st.booleans(), st.booleans())


@given(
    start=st.sampled_from(list(M.Stage)),
    hooks=st.booleans(),
    moves=st.lists(
        st.tuples(st.sampled_from([0.0, 1.0, 30.0, 90.0, 700.0]), driver_answer | any_event),
        min_size=1,
        max_size=25,
    ),
)
def test_every_event_is_in_the_stages_row_of_the_table_or_refused_changing_nothing(
    start, hooks, moves
):
    machine = at_stage(start, hooks=hooks)  # hooks: gates, the rollback hook, promote-stable
    now = AT
    for later, make in moves:
        now += later
        state = machine.state
        event = make(now, state, M.next_action(PLAN, state, now))
        row = TABLE[state.stage]
        name = type(event).__name__
        if name in row:
            # Accepted: never refused, and the stage it leads to is one the table lists.
            new = M.transition(PLAN, state, event)
            assert new.stage in row[name], (state.stage, name, new.stage)
            assert new.phase is new.stage.phase
            machine.state = new
            continue
        with pytest.raises(ck.InvalidTransition) as refused:
            M.transition(PLAN, state, event)
        assert machine.state is state
        offered = re.search(r"; you can (.*) it", str(refused.value))
        for word in re.split(r", | or ", offered.group(1)) if offered else []:
            # An operator is offered only commands the table accepts here, and that lead
            # somewhere else.
            command = COMMANDS[word]
            assert command in row and row[command] != {state.stage}, (state.stage, word)


COMMANDS = {
    "promote": "PromoteRequested",
    "promote --full": "FullPromotionRequested",
    "pause": "PauseRequested",
    "resume": "ResumeRequested",
    "abort": "AbortRequested",
    "retry": "RetryRequested",
}
