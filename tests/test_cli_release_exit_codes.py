"""``canarykit run``'s exit codes, one scenario each: they say only what the router confirmed.

The table (docs/cli.md): 0 promoted, 1 other failures (a release in progress, a router
not at stable), 2 bad input, 3 rolled back with the router confirmed at stable, 4 paused,
5 nothing to do (the release already finished), 6 the split unknown or not confirmed at
stable, 130 interrupted.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import io
import signal

import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit._cli._run import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_NOT_AT_STABLE,
    EXIT_NOTHING_TO_DO,
    EXIT_PAUSED,
    EXIT_PROMOTED,
    EXIT_ROLLED_BACK,
    execute,
    exit_code,
)
from canarykit.deciders import bound, threshold
from canarykit.policy import Deployment
from canarykit.testing import FakeRouter, RouterFault, ScriptedMetrics, VirtualClock, regression
from helpers.policies import (
    ERROR_RATE,
    PROMETHEUS,
    WEIGHTS_PLAN,
    haproxy_router,
    policy,
    rollout_table,
)

# Each test gets its own traffic-target locks (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("lock_dir")

PLAN = ck.from_weights([10, 50], hold=60, final_bake=60, analysis_interval=30)
WAITING = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion()])
# An inline analysis and no background one: once paused, nothing wakes the rollout in
# virtual time, so run() returns it paused.
ANALYZED = ck.Plan(steps=[ck.SetWeight(10), ck.Analyze(60, interval=30), ck.SetWeight(50)])
DECIDER = threshold(bound("error_rate", max=0.02))
FAILING = ScriptedMetrics(error_rate=regression(at=0, base=0.01, factor=10))


class NeverStable(FakeRouter):
    """A router that refuses every move back to stable: a rollback it never confirms."""

    async def apply(self, split):
        if split.is_stable_only and self.applied:
            self.calls.append("apply")
            raise RouterFault("the load balancer refused the change")
        await super().apply(split)


class SignalAt(FakeRouter):
    async def apply(self, split):
        await super().apply(split)
        if split.canary_percent == 10:
            signal.raise_signal(signal.SIGINT)


def rollout(router, metrics=None, plan=PLAN, **options):
    return ck.Rollout(
        plan,
        router=router,
        metrics=metrics or ScriptedMetrics(),
        decider=DECIDER,
        clock=VirtualClock(start=1_800_000_000.0),
        key="web",
        **options,
    )


def run(router, metrics=None, plan=PLAN, **options):
    lines = io.StringIO()
    code = execute(rollout(router, metrics, plan, **options), out=lines, lines=lines)
    return code, lines.getvalue().splitlines()


# Each scenario: the exit code, what the router did, and what the last line says.
SCENARIOS = {
    "promoted": (EXIT_PROMOTED, lambda: run(FakeRouter()), "canary traffic at 100%"),
    "rolled back, stable confirmed": (
        EXIT_ROLLED_BACK,
        lambda: run(FakeRouter(), FAILING),
        "canary traffic at 0%",
    ),
    "paused": (EXIT_PAUSED, lambda: run(FakeRouter(), plan=WAITING), "canary traffic at 20%"),
    "rollback not confirmed": (
        EXIT_NOT_AT_STABLE,
        lambda: run(NeverStable(), FAILING, ANALYZED, apply_attempts=1),
        "traffic NOT confirmed on stable: the router last confirmed canary 10%",
    ),
    "interrupted": (EXIT_INTERRUPTED, lambda: run(SignalAt()), "canary traffic at 0%"),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_ending_has_its_exit_code_and_says_where_traffic_is(name):
    expected, scenario, last = SCENARIOS[name]
    code, lines = scenario()
    assert code == expected, lines
    assert code in EXIT_CODES
    assert lines[-1].strip().startswith(last), lines


def outcome(phase, split):
    state = ck.machine.RolloutState(phase=phase, confirmed=split, finished_at=1_800_000_000.0)
    return ck.RolloutOutcome(
        phase=phase,
        reason="",
        split=split,
        started_at=None,
        finished_at=1_800_000_000.0,
        timeline=(),
        state=state,
    )


@pytest.mark.parametrize(
    ("phase", "split", "expected"),
    [
        (ck.Phase.ABORTED, ck.TrafficSplit(canary_percent=0), EXIT_ROLLED_BACK),
        (ck.Phase.ROLLED_BACK, ck.TrafficSplit(canary_percent=0), EXIT_ROLLED_BACK),
        # The case: saved as aborted while the router's file sent 10% to v2.
        (ck.Phase.ABORTED, None, EXIT_NOT_AT_STABLE),
        (ck.Phase.ABORTED, ck.TrafficSplit(canary_percent=10), EXIT_NOT_AT_STABLE),
        (ck.Phase.ROLLED_BACK, None, EXIT_NOT_AT_STABLE),
        (ck.Phase.ROLLING_BACK, ck.TrafficSplit(canary_percent=10), EXIT_NOT_AT_STABLE),
        (ck.Phase.PAUSED, None, EXIT_NOT_AT_STABLE),
        (ck.Phase.PAUSED, ck.TrafficSplit(canary_percent=20), EXIT_PAUSED),
        (ck.Phase.SUCCEEDED, ck.TrafficSplit(canary_percent=100), EXIT_PROMOTED),
    ],
)
def test_exit_3_needs_stable_confirmed_by_the_router(phase, split, expected):
    assert exit_code(outcome(phase, split)) == expected
    assert exit_code(outcome(phase, split), "SIGINT") == EXIT_INTERRUPTED


def test_a_rollback_the_router_never_confirmed_is_not_reported_as_traffic_on_stable():
    code, lines = run(NeverStable(), FAILING, ANALYZED, apply_attempts=1)
    assert code == EXIT_NOT_AT_STABLE
    assert not any("canary traffic at 0%" in line for line in lines), lines


# ------------------------------------------------------------------ through the command


POLICY = policy(
    WEIGHTS_PLAN, ERROR_RATE, rollout_table(), haproxy_router("{state}/hap.sock"), PROMETHEUS
)


@pytest.fixture
def command(tmp_path, monkeypatch):
    """``canarykit run`` on the policy, with a fake router and scripted metrics in place."""
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=tmp_path / "state"))
    routers = [FakeRouter()]
    monkeypatch.setattr(Deployment, "build_router", lambda self: routers[0])
    monkeypatch.setattr(Deployment, "build_metrics", lambda self: ScriptedMetrics())

    def invoke(*argv, router=None):
        if router is not None:
            routers[0] = router
        return main(["run", str(policy), "--no-status", *argv])

    return invoke


def finish(tmp_path, release=None):
    """A promoted rollout of `release` saved under "web", as a first run leaves it."""
    options = {} if release is None else {"release": release}
    store = ck.stores.FileStore(tmp_path / "state")
    done = execute(
        rollout(FakeRouter(), store=store, **options), out=io.StringIO(), lines=io.StringIO()
    )
    assert done == EXIT_PROMOTED


def test_a_rerun_of_a_finished_release_exits_5_and_never_says_promoted(tmp_path, command, capsys):
    finish(tmp_path, release="v41")
    router = FakeRouter()
    assert command("--release", "v41", router=router) == EXIT_NOTHING_TO_DO
    out = capsys.readouterr().out
    assert "release v41 finished: promoted at " in out and "nothing to do" in out, out
    assert "outcome" not in out
    assert router.applied == []  # no traffic moved


def test_a_rerun_without_a_release_id_after_a_finished_one_exits_5(tmp_path, command, capsys):
    finish(tmp_path)
    assert command() == EXIT_NOTHING_TO_DO
    out = capsys.readouterr().out
    assert "finished: promoted at " in out and "outcome" not in out, out


def test_a_router_not_at_stable_exits_1_and_says_what_it_found(command, capsys):
    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=100))
    assert command("--release", "v42", router=router) == 1
    err = capsys.readouterr().err
    assert "100%" in err and "--adopt" in err and "canarykit init" in err, err
    assert router.applied == []


def test_adopt_starts_from_the_current_split_instead_of_refusing():
    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=10))
    lines = io.StringIO()
    code = execute(rollout(router, release="v42", adopt=True), out=lines, lines=lines)
    assert code == EXIT_PROMOTED, lines.getvalue()
    assert router.applied[0].canary_percent >= 10  # never back to 0 first


def test_a_bad_release_id_exits_2_naming_the_option(command, capsys):
    assert command("--release", "v1\n14:00:00 forged") == 2
    err = capsys.readouterr().err
    assert err.startswith("canarykit: error: --release: must be a release id")
    assert err.count("\n") == 1
