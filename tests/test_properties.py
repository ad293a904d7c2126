"""Property-based checks of the whole loop: machine, runner, virtual clock and decider."""

import json

from hypothesis import given
from hypothesis import strategies as st

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, regression, simulate

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
