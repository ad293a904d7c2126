"""canarykit.testing holds the fakes; canarykit.testing.lab the real servers; the old names warn.

Also `canarykit.testing.observation`, the one observation builder the tests share.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import canarykit as ck
import canarykit.testing
import canarykit.testing.lab
from canarykit.testing import observation

# The names that were in canarykit.testing before the split, kept there for one release.
MOVED = [
    "BinaryNotFound",
    "DemoApp",
    "HAProxyServer",
    "LoadGenerator",
    "ManagedProcess",
    "NginxServer",
    "PrometheusServer",
    "Response",
    "find_binary",
    "free_port",
    "http_ok",
]


def test_the_fakes_and_the_real_servers_are_two_sets_of_names() -> None:
    fakes, lab = set(canarykit.testing.__all__), set(canarykit.testing.lab.__all__)
    assert fakes & lab == set()
    assert set(MOVED) < lab
    assert {"EtcdCluster", "PostgresServer", "TcpProxy"} < lab
    assert {"FakeRouter", "VirtualClock", "ScriptedGauge", "simulate", "evaluate"} < fakes


@pytest.mark.parametrize("name", canarykit.testing.lab.__all__)
def test_a_lab_name_says_it_lives_in_the_lab(name: str) -> None:
    module = getattr(getattr(canarykit.testing.lab, name), "__module__", None)
    assert module == "canarykit.testing.lab"


@pytest.mark.parametrize("name", MOVED)
def test_an_old_name_still_works_for_a_release_with_a_warning_naming_the_new_place(
    name: str,
) -> None:
    testing = importlib.import_module("canarykit.testing")
    with pytest.warns(DeprecationWarning, match=rf"use canarykit\.testing\.lab\.{name}$"):
        old = getattr(testing, name)
    assert old is getattr(canarykit.testing.lab, name)


def test_the_lab_loads_when_first_named_without_being_imported() -> None:
    code = (
        "import sys, canarykit.testing as t;"
        "assert 'canarykit.testing._etcd_server' not in sys.modules;"
        "print(t.lab.EtcdCluster.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "canarykit.testing.lab"), result.stderr


def test_a_name_that_never_was_in_testing_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'EtcdCluster'"):
        canarykit.testing.EtcdCluster  # noqa: B018  (new in the lab: no old name to keep)


def test_observation_defaults_are_two_healthy_arms_over_thirty_seconds() -> None:
    seen = observation()
    assert (seen.start, seen.end, seen.split) == (0.0, 30.0, None)
    for arm in (seen.stable, seen.canary):
        assert (arm.requests, arm.errors, arm.latency, dict(arm.gauges)) == (1000, 10, None, {})


def test_observation_takes_latency_as_samples_or_as_a_histogram() -> None:
    histogram = ck.LatencyHistogram.from_samples([0.05, 0.06])
    seen = observation(canary_latency=[0.1, 0.2, 0.4], stable_latency=histogram)
    assert seen.stable.latency is histogram
    assert seen.canary.latency == ck.LatencyHistogram.from_samples([0.1, 0.2, 0.4])


def test_observation_carries_gauges_and_the_split() -> None:
    split = ck.TrafficSplit(canary_percent=10)
    seen = observation(canary_gauges={"cpu": 0.7}, stable_gauges={"cpu": 0.4}, split=split)
    assert (seen.canary.gauges["cpu"], seen.stable.gauges["cpu"], seen.split) == (0.7, 0.4, split)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"canary_errors": 2000}, "errors"),
        ({"start": 30.0, "end": 0.0}, "end"),
        ({"stable_requests": -1}, "requests"),
        ({"canary_latency": [-0.1]}, "samples"),
    ],
)
def test_observation_refuses_what_no_metrics_source_could_produce(
    fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ck.ConfigError) as caught:
        observation(**fields)  # type: ignore[arg-type]
    assert caught.value.field.startswith(field)
