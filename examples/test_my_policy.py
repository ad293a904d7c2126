"""Unit tests for a deploy policy: the kind a team keeps next to its deploy tool.

"If the canary's error rate doubles at 10% traffic, do we roll back within 5 minutes?
And do we never roll back a healthy canary?" Each test runs the whole rollout in
virtual time: no cluster, no clock, no network, a few milliseconds per run.

Run it with ``pytest examples/test_my_policy.py`` or ``python examples/test_my_policy.py``.
"""

from __future__ import annotations

import pytest

import canarykit
from canarykit import Phase
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, regression, simulate

# --- the policy under test ------------------------------------------------------------
# 10% for five minutes, then 40%, 70% and 100%, five more minutes watched at 100%.
PLAN = canarykit.linear(10, 30, hold=300, final_bake=300, analysis_interval=30)
# Roll back after two windows with a canary error rate above 1.5% (stable runs at 1%).
DECIDER = threshold(bound("error_rate", max=0.015), failure_limit=2)
# Our service's traffic: at 10% the canary sees about 3,000 requests per 30 s window.
REQUESTS_PER_SECOND = 1000
BASE_ERROR_RATE = 0.01


def run(metrics: ScriptedMetrics, router: FakeRouter | None = None) -> canarykit.RolloutOutcome:
    return simulate(PLAN, decider=DECIDER, metrics=metrics, router=router).outcome


# --- the questions --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_doubled_error_rate_at_10_percent_rolls_back_within_5_minutes(seed: int) -> None:
    # The canary's error rate is twice the stable one's from the first request on.
    metrics = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND,
        error_rate=regression(at=0, base=BASE_ERROR_RATE, factor=2),
        seed=seed,
    )
    simulation = simulate(PLAN, decider=DECIDER, metrics=metrics)
    outcome = simulation.outcome

    assert outcome.phase is Phase.ROLLED_BACK, outcome.reason
    assert outcome.finished_at <= 5 * 60  # traffic is back on stable within 5 minutes
    # ... and the canary never got more than its first 10%.
    router = simulation.router
    assert isinstance(router, FakeRouter)
    assert max(split.canary_percent for split in router.applied) == 10
    assert router.current.is_stable_only


@pytest.mark.parametrize("seed", range(20))
def test_healthy_canary_is_never_rolled_back(seed: int) -> None:
    metrics = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND, error_rate=BASE_ERROR_RATE, seed=seed
    )
    outcome = run(metrics)

    assert outcome.phase is Phase.SUCCEEDED, outcome.reason
    assert outcome.split is not None and outcome.split.canary_percent == 100
    assert outcome.finished_at == PLAN.nominal_seconds  # no pause held it up


def test_operator_abort_rolls_back() -> None:
    metrics = ScriptedMetrics(requests_per_second=REQUESTS_PER_SECOND, seed=1)
    # At 7 minutes (40% traffic) the on-call engineer aborts from the chat bot.
    simulation = simulate(
        PLAN,
        decider=DECIDER,
        metrics=metrics,
        commands=[(420, "abort", "on-call saw 500s in the logs")],
    )
    outcome = simulation.outcome

    assert outcome.phase is Phase.ABORTED
    assert outcome.reason == "on-call saw 500s in the logs"
    assert outcome.finished_at == 420  # the rollback is immediate
    assert isinstance(simulation.router, FakeRouter)
    assert simulation.router.current.is_stable_only


def test_load_balancer_failure_rolls_back() -> None:
    # Calls to the router are numbered from 1 (reads and applies alike): 1 reads the
    # starting split, 2-3 apply and read back 10%, then 4, 5 and 6 are the three attempts
    # to apply 40%, all failing. Traffic must go back to stable, not stay at 10%.
    router = FakeRouter(fail_on={4, 5, 6})
    metrics = ScriptedMetrics(requests_per_second=REQUESTS_PER_SECOND, seed=1)
    outcome = run(metrics, router=router)

    assert outcome.phase is Phase.ROLLED_BACK
    assert "router failed" in outcome.reason
    assert router.current.is_stable_only
    assert [entry.kind for entry in outcome.timeline].count("error") == 3


if __name__ == "__main__":
    # Run as a script, this file has imported canarykit (and so anyio, a pytest plugin)
    # before pytest starts; pytest's notice that it cannot rewrite anyio's asserts is
    # harmless, but a project that turns warnings into errors would fail on it.
    ignore = "ignore::pytest.PytestAssertRewriteWarning"
    raise SystemExit(pytest.main([__file__, "-q", "-W", ignore]))
