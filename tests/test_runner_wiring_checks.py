"""`Rollout(...)` refuses a decider that could only wait, as a policy file is refused.

The checks themselves (`check_metric_names`, `check_full_canary_steps`) are pinned
through policy files in test_policy*.py; here, that a rollout built in Python gets them,
with the gauges of the metrics source when the source says which it reports.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import attrs
import pytest

import canarykit as ck
from canarykit import Observation, Window
from canarykit.deciders import bound, compare, relative, threshold
from canarykit.metrics import PrometheusSource
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock, simulate

PLAN = ck.linear(10, 30, hold=120, analysis_interval=30)
BAKED = ck.linear(10, 30, hold=120, final_bake=120, analysis_interval=30)


class AnySource:
    """A source built in Python: it may report any gauge."""

    async def collect(self, window: Window) -> Observation:
        return ScriptedMetrics(seed=1).observe(window)


def build(plan: ck.Plan, decider: ck.Decider | None, metrics: object) -> ck.Rollout:
    return ck.Rollout(plan, router=FakeRouter(), metrics=metrics, decider=decider)


def refused(plan: ck.Plan, decider: ck.Decider | None, metrics: object) -> ck.ConfigError:
    with pytest.raises(ck.ConfigError) as caught:
        build(plan, decider, metrics)
    return caught.value


# ------------------------------------------------------------------------- metric names


def test_a_gauge_the_scripted_source_does_not_script_is_refused_with_a_suggestion() -> None:
    metrics = ScriptedMetrics(gauges={"cpu": 0.4, "memory": 2e9})
    error = refused(PLAN, relative(compare("cpuu", max_ratio=1.2)), metrics)
    assert error.field == "decider.metrics[0].metric"
    assert error.value == "cpuu"
    assert "ScriptedMetrics gauges, from [simulation] gauges in a policy: cpu, memory" in str(error)
    assert "did you mean 'cpu'?" in str(error)
    # The scripted names themselves, and the built-in ones, are accepted.
    build(
        PLAN, relative(compare("cpu", max_ratio=1.2), compare("error_rate", max_ratio=2)), metrics
    )


def test_a_gauge_is_refused_when_the_scripted_source_scripts_none() -> None:
    error = refused(PLAN, threshold(bound("cpu", max=0.8)), ScriptedMetrics())
    assert error.field == "decider.metrics[0].metric"
    assert "ScriptedMetrics gauges, from [simulation] gauges in a policy: none" in str(error)
    assert "every window would have no data" in str(error)


def test_prometheus_source_declares_the_gauges_of_its_queries() -> None:
    metrics = PrometheusSource(url="http://127.0.0.1:9", stable="v1", canary="v2")
    cpu = 'sum(rate(process_cpu_seconds_total{version="{arm}"}[{window}]))'
    metrics = attrs.evolve(metrics, queries=attrs.evolve(metrics.queries, gauges={"cpu": cpu}))
    build(PLAN, threshold(bound("cpu", max=0.8)), metrics)
    error = refused(PLAN, threshold(bound("memory", max=2e9)), metrics)
    assert "PrometheusSource queries.gauges: cpu" in str(error)


def test_a_source_that_does_not_say_may_report_any_gauge_but_not_a_typo() -> None:
    build(PLAN, threshold(bound("cpu", max=0.8)), AnySource())
    error = refused(PLAN, threshold(bound("eror_rate", max=0.02)), AnySource())
    assert error.field == "decider.metrics[0].metric"
    assert "did you mean 'error_rate'?" in str(error)


def test_an_analyze_steps_own_decider_is_checked_under_its_step() -> None:
    plan = ck.Plan(
        steps=[
            ck.SetWeight(10),
            ck.Analyze(seconds=60, interval=30, decider=threshold(bound("p99.9", max=0.5))),
            ck.SetWeight(100),
        ]
    )
    error = refused(plan, None, AnySource())
    assert error.field == "plan.steps[1].decider.metrics[0].metric"
    assert "is not a latency quantile canarykit computes" in str(error)


# ----------------------------------------------------------------- watched 100% stages


def test_a_bound_on_the_stable_arm_at_a_watched_100_percent_is_refused() -> None:
    decider = threshold(bound("error_rate", max=0.05, arm="stable"))
    error = refused(BAKED, decider, ScriptedMetrics())
    assert error.field == "decider.metrics[0].arm"
    assert "the stable version has no traffic at 100%" in str(error)
    build(PLAN, decider, ScriptedMetrics())  # no watched stage at 100%: nothing to refuse


def test_relative_at_100_percent_needs_a_watched_stage_below_it_first() -> None:
    plan = ck.Plan(steps=[ck.SetWeight(100), ck.Pause(120)], analysis_interval=30)
    decider = relative(compare("error_rate", max_ratio=2))
    error = refused(plan, decider, ScriptedMetrics())
    assert error.field == "decider"
    assert "no watched stage below 100% comes first" in str(error)


def test_relative_with_a_final_bake_after_watched_stages_runs_and_promotes() -> None:
    # The final bake is judged against the stable record kept from the stages before.
    decider = relative(compare("error_rate", max_ratio=2))
    metrics = ScriptedMetrics(requests_per_second=200, seed=1)
    outcome = simulate(BAKED, decider=decider, metrics=metrics).outcome
    assert outcome.phase is ck.Phase.SUCCEEDED, outcome.reason


def test_an_analyze_step_at_100_percent_is_refused_for_relative() -> None:
    plan = ck.Plan(
        steps=[
            ck.SetWeight(10),
            ck.Analyze(seconds=60, interval=30),
            ck.SetWeight(100),
            ck.Analyze(seconds=60, interval=30),
        ]
    )
    error = refused(plan, relative(compare("error_rate", max_ratio=2)), ScriptedMetrics())
    assert error.field == "plan.steps[3].analyze"
    assert "starts from a fresh decider state" in str(error)


def test_the_checks_come_before_anything_runs() -> None:
    # Refused at construction: no clock, router or store was touched.
    router = FakeRouter()
    with pytest.raises(ck.ConfigError):
        ck.Rollout(
            PLAN,
            router=router,
            metrics=ScriptedMetrics(),
            decider=threshold(bound("cpu", max=0.8)),
            clock=VirtualClock(),
        )
    assert router.applied == []


SIMULATED_CPU = """
[plan]
shape = "linear"
initial = 10
step = 40
hold = "2m"
analysis_interval = "30s"

[decider]
kind = "threshold"
metrics = [{ metric = "cpu", max = 0.8 }]

[metrics]
kind = "prometheus"
url = "http://127.0.0.1:9"
stable = "v1"
canary = "v2"

[metrics.queries]
requests = 'sum(increase(http_requests_total{version="{arm}"}[{window}]))'
errors = 'sum(increase(http_requests_total{version="{arm}",code=~"5.."}[{window}]))'
gauges = { cpu = 'sum(rate(process_cpu_seconds_total{version="{arm}"}[{window}]))' }
"""


def test_simulating_a_policy_refuses_a_gauge_it_does_not_script(tmp_path, capsys) -> None:
    # The real source declares cpu, so the policy loads; the simulation scripts no cpu,
    # so every window would have none. Scripting it ([simulation.gauges]) is the way.
    from canarykit._cli import main

    policy = tmp_path / "policy.toml"
    policy.write_text(SIMULATED_CPU)
    assert main(["simulate", str(policy)]) != 0
    err = capsys.readouterr().err
    assert "decider.metrics[0].metric" in err
    assert "[simulation] gauges in a policy: none" in err
    policy.write_text(SIMULATED_CPU + "\n[simulation.gauges]\ncpu = 0.4\n")
    assert main(["simulate", str(policy)]) == 0
    assert "promoted" in capsys.readouterr().out


def test_an_analyze_step_with_its_own_decider_at_100_percent_is_not_the_plans_deciders() -> None:
    # The relative decider judges only the background windows there, with its record.
    plan = ck.Plan(
        steps=[
            ck.SetWeight(10),
            ck.Pause(120),
            ck.SetWeight(100),
            ck.Analyze(seconds=60, interval=30, decider=threshold(bound("error_rate", max=0.05))),
        ],
        analysis_interval=30,
    )
    decider = relative(compare("error_rate", max_ratio=2))
    metrics = ScriptedMetrics(requests_per_second=200, seed=1)
    outcome = simulate(plan, decider=decider, metrics=metrics).outcome
    assert outcome.phase is ck.Phase.SUCCEEDED, outcome.reason
