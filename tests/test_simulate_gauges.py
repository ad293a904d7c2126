"""Scripted gauges (CPU, memory, a leak on the canary) in simulate, evaluate and policy files."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest

from canarykit import Arm, ConfigError, TrafficSplit, Window
from canarykit.deciders import compare, relative
from canarykit.policy import load_policy
from canarykit.testing import (
    Scenario,
    ScriptedGauge,
    ScriptedMetrics,
    evaluate,
    hold_plan,
    simulate,
)

K = 4.0  # Monte-Carlo tolerance in standard errors
SPLIT = TrafficSplit(canary_percent=10)


def window(i: int, length: float = 60.0) -> Window:
    return Window(start=length * i, end=length * (i + 1), split=SPLIT)


# -- ScriptedGauge -------------------------------------------------------------------------------


def test_a_leak_grows_the_canarys_level_linearly_from_its_start() -> None:
    leak = ScriptedGauge(2e8, canary_per_hour=5e7, at=600)
    assert leak(599.0, Arm.CANARY, 10.0) == 2e8
    assert leak(600.0 + 1800, Arm.CANARY, 10.0) == pytest.approx(2.25e8)
    assert leak(600.0 + 7200, Arm.CANARY, 10.0) == pytest.approx(3e8)
    assert leak(600.0 + 7200, Arm.STABLE, 10.0) == 2e8


def test_a_fixed_increase_multiplies_the_canarys_level() -> None:
    cpu = ScriptedGauge(0.5, canary_factor=1.25, at=300)
    assert [cpu(t, Arm.CANARY, 10.0) for t in (0.0, 300.0, 9000.0)] == [0.5, 0.625, 0.625]
    assert cpu(9000.0, Arm.STABLE, 10.0) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"value": "lots"}, "value"),
        ({"value": math.inf}, "value"),
        ({"value": 1.0, "noise": 1.5}, "noise"),
        ({"value": 1.0, "noise": -0.1}, "noise"),
        ({"value": 1.0, "at": -1}, "at"),
        ({"value": 1.0, "canary_factor": -2}, "canary_factor"),
        ({"value": 1.0, "canary_per_hour": math.nan}, "canary_per_hour"),
        ({"value": True}, "value"),
    ],
)
def test_a_bad_gauge_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ScriptedGauge(**kwargs)
    assert info.value.field == field


def test_noisy_gauge_readings_are_seeded_and_centred_on_the_level() -> None:
    metrics = ScriptedMetrics(
        gauges={"cpu_cores": ScriptedGauge(0.5, canary_factor=1.2, noise=0.1)}, seed=4
    )
    observations = [metrics.observe(window(i)) for i in range(2000)]
    assert metrics.observe(window(7)) == observations[7]  # the same window, the same data
    for arm, level in ((Arm.STABLE, 0.5), (Arm.CANARY, 0.6)):
        readings = [o.arm(arm).gauges["cpu_cores"] for o in observations]
        assert abs(statistics.fmean(readings) - level) <= K * level * 0.1 / math.sqrt(2000)
        # Log-normal with log-scale spread 0.1: its relative deviation is about 0.1.
        assert statistics.stdev(readings) / level == pytest.approx(0.1, rel=0.1)
    stable = [o.stable.gauges["cpu_cores"] for o in observations]
    assert len(set(stable)) == len(stable)  # every window draws its own noise


def test_gauges_without_noise_leave_the_traffic_draws_unchanged() -> None:
    plain = ScriptedMetrics(seed=9)
    with_gauges = ScriptedMetrics(seed=9, gauges={"memory_bytes": ScriptedGauge(2e8)})
    for i in range(20):
        a, b = plain.observe(window(i)), with_gauges.observe(window(i))
        assert (a.stable.requests, a.canary.errors, a.canary.latency) == (
            b.stable.requests,
            b.canary.errors,
            b.canary.latency,
        )
        assert b.canary.gauges["memory_bytes"] == 2e8


# -- the decider sees them -----------------------------------------------------------------------

MEMORY_DECIDER = relative(compare("memory_bytes", max_ratio=1.1))


def test_simulate_rolls_back_a_memory_leak_and_promotes_a_steady_canary() -> None:
    plan = hold_plan(10, 2 * 3600, analysis_interval=60)
    leak = ScriptedGauge(2e8, canary_per_hour=1e8, at=600, noise=0.01)
    outcome = simulate(
        plan, decider=MEMORY_DECIDER, metrics=ScriptedMetrics(gauges={"memory_bytes": leak})
    ).outcome
    assert outcome.rolled_back
    # 10% over 2e8 takes 12 minutes of a leak of 1e8 an hour, from t = 10 min; the
    # readings' 1% noise moves the crossing by a minute or two.
    assert 600 + 8 * 60 <= outcome.finished_at <= 600 + 16 * 60
    steady = ScriptedGauge(2e8, noise=0.01)
    healthy = simulate(
        plan, decider=MEMORY_DECIDER, metrics=ScriptedMetrics(gauges={"memory_bytes": steady})
    ).outcome
    assert healthy.promoted, healthy.reason


def test_evaluate_feeds_gauges_to_the_decider() -> None:
    plan = hold_plan(10, 3600, analysis_interval=60)
    cpu = relative(compare("cpu_cores", max_ratio=1.15))
    healthy = evaluate(
        plan, cpu, Scenario(), runs=20, seed=1, gauges={"cpu_cores": ScriptedGauge(0.5, noise=0.02)}
    )
    assert healthy.false_rollback_rate == 0.0
    hotter = {"cpu_cores": ScriptedGauge(0.5, canary_factor=1.3, at=900, noise=0.02)}
    bad = evaluate(plan, cpu, Scenario(), runs=20, seed=1, gauges=hotter)
    # Every run rolls back in the first window after the change (the gauges are not the
    # scenario's injected regression, so the rollbacks count as early ones).
    assert bad.rolled_back == 20
    assert all(900 < r.end <= 900 + 120 for r in bad.results)


def test_evaluate_without_gauges_draws_the_same_data_as_before() -> None:
    plan = hold_plan(10, 1800, analysis_interval=60)
    decider = relative(compare("error_rate", max_ratio=3.0, min_requests=50))
    a = evaluate(plan, decider, Scenario(), runs=5, seed=3)
    b = evaluate(plan, decider, Scenario(), runs=5, seed=3, gauges={})
    assert [r.canary_errors for r in a.results] == [r.canary_errors for r in b.results]


# -- policy files -------------------------------------------------------------------------------

POLICY = """
[plan]
shape = "weights"
weights = [10, 50]
hold = "30m"
analysis_interval = "1m"

[decider]
kind = "relative"
[[decider.metrics]]
metric = "memory_bytes"
max_ratio = 1.1
[[decider.metrics]]
metric = "cpu_cores"
max_ratio = 1.2
"""

GAUGES = """
[simulation]
header_share = {"User-Agent" = 0.6}

[simulation.gauges]
cpu_cores = 0.25
memory_bytes = {value = 2e8, canary_per_hour = 1e8, at = "10m", noise = 0.01}
"""


def test_policy_gauges_are_read_and_written_back() -> None:
    policy = load_policy(POLICY + GAUGES)
    simulation = policy.simulation
    assert dict(simulation.header_share) == {"User-Agent": 0.6}  # type: ignore[arg-type]
    assert simulation.gauges == {
        "cpu_cores": ScriptedGauge(0.25),
        "memory_bytes": ScriptedGauge(2e8, canary_per_hour=1e8, at=600, noise=0.01),
    }
    assert load_policy(policy.to_toml()) == policy


def test_policy_gauges_drive_a_simulation_to_a_rollback() -> None:
    policy = load_policy(POLICY + GAUGES)
    metrics = ScriptedMetrics(
        gauges=policy.simulation.gauges, header_share=policy.simulation.header_share, seed=2
    )
    outcome = simulate(policy.plan, decider=policy.decider, metrics=metrics).outcome
    assert outcome.rolled_back
    assert "memory_bytes" in outcome.reason


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[simulation.gauges]\ncpu = 'x'", "simulation.gauges.cpu"),
        ("[simulation.gauges]\ncpu = {value = 1, noise = 3}", "simulation.gauges.cpu.noise"),
        ("[simulation.gauges]\ncpu = {valu = 1}", "simulation.gauges.cpu.valu"),
        ("[simulation.gauges]\ncpu = {noise = 0.1}", "simulation.gauges.cpu.value"),
        ("[simulation.gauges]\ncpu = {value = 1, at = 'soon'}", "simulation.gauges.cpu.at"),
        ("[simulation.gauges]\np99 = 1", "simulation.gauges.p99"),
        ("[simulation]\ngauges = 3", "simulation.gauges"),
        ("[simulation]\nheader_share = 1.5", "simulation.header_share"),
        ("[simulation]\nheader_share = 'most'", "simulation.header_share"),
        ("[simulation]\nheader_share = {User-Agent = 2}", "simulation.header_share.User-Agent"),
        ("[simulation]\nheader_share = {'a b' = 0.5}", "simulation.header_share"),
        ("[simulation]\nheader_shares = 0.5", "simulation.header_shares"),
    ],
)
def test_bad_simulation_settings_name_the_key(toml: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(POLICY + toml + "\n")
    assert info.value.field == field
