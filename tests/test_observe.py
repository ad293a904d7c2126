# Imports internals on purpose: the metric names an observation knows.

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from canarykit import (
    Arm,
    ArmStats,
    ConfigError,
    LatencyHistogram,
    Observation,
    TrafficSplit,
    Window,
)
from canarykit._observe import METRIC_NAMES


def latency(*samples: float) -> LatencyHistogram:
    return LatencyHistogram.from_samples(samples)


def example_observation(**overrides: Any) -> Observation:
    """Valid values on every field but the ones a test overrides with its own (or bad) ones."""
    fields: dict[str, Any] = {
        "start": 100.0,
        "end": 110.0,
        "stable": ArmStats(
            requests=900, errors=9, latency=latency(0.05, 0.06, 0.07), gauges={"cpu": 0.4}
        ),
        "canary": ArmStats(
            requests=100,
            errors=4,
            latency=latency(0.08, 0.09),
            gauges={"cpu": 0.7, "memory": math.nan},
        ),
    }
    fields.update(overrides)
    return Observation(**fields)


# -- Arm ---------------------------------------------------------------------------------


def test_arm_values_and_repr() -> None:
    assert Arm("stable") is Arm.STABLE
    assert Arm("canary") is Arm.CANARY
    assert repr(Arm.CANARY) == "Arm.CANARY"


# -- ArmStats ----------------------------------------------------------------------------


def test_rates_are_per_request_and_none_without_requests() -> None:
    stats = ArmStats(requests=200, errors=3)
    assert stats.error_rate == 0.015
    assert stats.success_rate == 0.985
    empty = ArmStats(requests=0)
    assert empty.error_rate is None
    assert empty.success_rate is None


def test_latency_statistics_are_none_without_latency_data() -> None:
    stats = ArmStats(requests=10, errors=0)
    assert (stats.mean_latency, stats.p50, stats.p95, stats.p99) == (None, None, None, None)
    empty = ArmStats(requests=0, latency=LatencyHistogram.empty())
    assert (empty.mean_latency, empty.p50, empty.p95, empty.p99) == (None, None, None, None)


def test_latency_statistics_come_from_the_histogram() -> None:
    h = latency(*[0.01 * k for k in range(1, 101)])
    stats = ArmStats(requests=100, latency=h)
    assert stats.mean_latency == pytest.approx(0.505)
    assert stats.p50 == h.quantile(0.5)
    assert stats.p95 == h.quantile(0.95)
    assert stats.p99 == h.quantile(0.99)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": True}, "requests"),
        ({"requests": 1.0}, "requests"),
        ({"requests": 5, "errors": 6}, "errors"),
        ({"requests": 5, "errors": -1}, "errors"),
        ({"requests": 5, "errors": False}, "errors"),
        ({"requests": 5, "latency": [0.1]}, "latency"),
        ({"requests": 5, "gauges": {"cpu": "high"}}, "gauges['cpu']"),
        ({"requests": 5, "gauges": {"cpu": True}}, "gauges['cpu']"),
        ({"requests": 5, "gauges": {"p99": 0.1}}, "gauges['p99']"),
        ({"requests": 5, "gauges": {"throughput": 3.0}}, "gauges['throughput']"),
        ({"requests": 5, "gauges": {1: 3.0}}, "gauges"),
        ({"requests": 5, "gauges": [("cpu", 1.0)]}, "gauges"),
    ],
)
def test_invalid_arm_stats_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArmStats(**kwargs)
    assert info.value.field == field


def test_gauges_are_an_immutable_copy_and_accept_non_finite_values() -> None:
    source = {"cpu": 1, "memory": math.inf}
    stats = ArmStats(requests=1, gauges=source)
    source["cpu"] = 99
    assert stats.gauges == {"cpu": 1.0, "memory": math.inf}
    assert type(stats.gauges["cpu"]) is float
    with pytest.raises(TypeError):
        stats.gauges["cpu"] = 2.0  # type: ignore[index]
    assert "gauges={'cpu': 1.0, 'memory': inf}" in repr(stats)


def test_arm_stats_are_hashable_and_compare_by_value() -> None:
    a = ArmStats(requests=3, errors=1, gauges={"cpu": 0.5})
    b = ArmStats(requests=3, errors=1, gauges={"cpu": 0.5})
    assert a == b
    assert hash(a) == hash(b)
    assert a != ArmStats(requests=3, errors=1, gauges={"cpu": 0.6})


def test_arm_stats_merge_adds_counts_merges_latency_and_weights_gauges() -> None:
    a = ArmStats(requests=10, errors=1, latency=latency(0.1), gauges={"cpu": 0.2, "a": 1.0})
    b = ArmStats(requests=30, errors=2, latency=latency(0.2), gauges={"cpu": 0.6, "b": 2.0})
    merged = a.merge(b, weight=1.0, other_weight=3.0)
    assert (merged.requests, merged.errors) == (40, 3)
    assert merged.latency == latency(0.1, 0.2)
    assert merged.gauges == {"cpu": pytest.approx(0.5), "a": 1.0, "b": 2.0}
    # One side without latency data contributes none; a non-finite gauge counts as missing.
    c = ArmStats(requests=5, gauges={"cpu": math.nan})
    assert a.merge(c).latency == a.latency
    assert c.merge(a).latency == a.latency
    assert a.merge(c).gauges["cpu"] == 0.2
    assert c.merge(a).gauges["cpu"] == 0.2


def test_arm_stats_json_round_trip_is_strict_json() -> None:
    stats = ArmStats(
        requests=7,
        errors=2,
        latency=latency(0.1, 0.3),
        gauges={"cpu": 0.5, "up": math.inf, "down": -math.inf},
    )
    text = json.dumps(stats.to_json(), allow_nan=False)
    assert ArmStats.from_json(json.loads(text)) == stats
    nan = ArmStats(requests=1, gauges={"memory": math.nan})
    back = ArmStats.from_json(json.loads(json.dumps(nan.to_json(), allow_nan=False)))
    assert math.isnan(back.gauges["memory"])
    with pytest.raises(ConfigError) as info:
        ArmStats.from_json({"requests": 1, "gauges": {"cpu": "lots"}})
    assert info.value.field == "gauges['cpu']"


# -- Window ------------------------------------------------------------------------------


def test_window_duration_and_split() -> None:
    split = TrafficSplit(canary_percent=10)
    window = Window(start=60, end=70.5, split=split)
    assert window.duration == 10.5
    assert window.start == 60.0
    assert type(window.start) is float
    assert window.split is split
    assert Window.from_json(json.loads(json.dumps(window.to_json()))) == window


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": 10.0, "end": 10.0}, "end"),
        ({"start": 10.0, "end": 5.0}, "end"),
        ({"start": math.nan, "end": 5.0}, "start"),
        ({"start": 0.0, "end": math.inf}, "end"),
        ({"start": "0", "end": 1.0}, "start"),
        ({"start": 0.0, "end": 1.0, "split": 10}, "split"),
    ],
)
def test_invalid_windows_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("split", TrafficSplit(canary_percent=10))
    with pytest.raises(ConfigError) as info:
        Window(**kwargs)
    assert info.value.field == field


# -- Observation -------------------------------------------------------------------------


def test_metric_names_are_the_built_in_ones() -> None:
    assert {
        "requests",
        "errors",
        "error_rate",
        "success_rate",
        "mean_latency",
        "p50",
        "p95",
        "p99",
        "throughput",
    } == METRIC_NAMES


def test_value_gives_every_built_in_metric_per_arm() -> None:
    obs = example_observation()
    assert obs.duration == 10.0
    assert obs.arm(Arm.CANARY) is obs.canary
    assert obs.arm(Arm.STABLE) is obs.stable
    assert obs.value(Arm.STABLE, "requests") == 900.0
    assert obs.value(Arm.CANARY, "errors") == 4.0
    assert obs.value(Arm.CANARY, "error_rate") == 0.04
    assert obs.value(Arm.CANARY, "success_rate") == 0.96
    assert obs.value(Arm.STABLE, "throughput") == 90.0
    assert obs.value(Arm.CANARY, "mean_latency") == pytest.approx(0.085)
    for name in ("p50", "p95", "p99"):
        assert obs.value(Arm.CANARY, name) == getattr(obs.canary, name)


def test_value_is_none_when_there_is_no_data() -> None:
    obs = example_observation(canary=ArmStats(requests=0, gauges={"cpu": math.inf}))
    assert obs.value(Arm.CANARY, "error_rate") is None
    assert obs.value(Arm.CANARY, "success_rate") is None
    assert obs.value(Arm.CANARY, "p99") is None
    assert obs.value(Arm.CANARY, "mean_latency") is None
    assert obs.value(Arm.CANARY, "throughput") == 0.0
    assert obs.value(Arm.CANARY, "cpu") is None  # not finite
    assert obs.value(Arm.CANARY, "memory") is None  # absent
    assert obs.value(Arm.STABLE, "no_such_metric") is None


def test_value_reads_gauges_and_treats_nan_as_missing() -> None:
    obs = example_observation()
    assert obs.value(Arm.STABLE, "cpu") == 0.4
    assert obs.value(Arm.CANARY, "cpu") == 0.7
    assert obs.value(Arm.CANARY, "memory") is None
    assert obs.value(Arm.STABLE, "memory") is None


def test_arm_refuses_other_values() -> None:
    with pytest.raises(ConfigError) as info:
        example_observation().arm("canary")  # type: ignore[arg-type]
    assert info.value.field == "arm"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"end": 100.0}, "end"),
        ({"start": math.nan}, "start"),
        ({"stable": None}, "stable"),
        ({"canary": {"requests": 1}}, "canary"),
    ],
)
def test_invalid_observations_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        example_observation(**overrides)
    assert info.value.field == field


def test_merge_spans_both_windows_and_weights_gauges_by_duration() -> None:
    first = example_observation()
    second = example_observation(
        start=110.0,
        end=140.0,
        stable=ArmStats(requests=100, errors=1, gauges={"cpu": 0.8}),
    )
    merged = first.merge(second)
    assert (merged.start, merged.end) == (100.0, 140.0)
    assert merged.stable.requests == 1000
    assert merged.stable.errors == 10
    assert merged.stable.latency == first.stable.latency  # the second had no latency data
    assert merged.stable.gauges["cpu"] == pytest.approx((0.4 * 10 + 0.8 * 30) / 40)
    assert merged.canary.latency == first.canary.latency.merge(second.canary.latency)  # type: ignore[union-attr, arg-type]
    assert merged.value(Arm.STABLE, "throughput") == 25.0


def test_observation_json_round_trip() -> None:
    obs = example_observation()
    text = json.dumps(obs.to_json(), allow_nan=False)
    back = Observation.from_json(json.loads(text))
    assert back.stable == obs.stable
    assert (back.start, back.end) == (obs.start, obs.end)
    assert back.canary.latency == obs.canary.latency
    assert math.isnan(back.canary.gauges["memory"])
    finite = example_observation(canary=ArmStats(requests=3, errors=1, gauges={"cpu": 0.1}))
    assert Observation.from_json(json.loads(json.dumps(finite.to_json()))) == finite
