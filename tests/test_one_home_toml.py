"""Durations are written to TOML by one function, with the text the plan writer had."""

# Imports internals on purpose: the policy layer's helpers.

from __future__ import annotations

import json

import pytest

from canarykit.policy import load_policy
from canarykit.policy._deployment import duration_value
from canarykit.policy._load import _toml_duration


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (90.0, '"1m30s"'),
        (0.0, '"0s"'),
        (3600.0, '"1h"'),
        (0.25, '"250ms"'),
        (1e300, "1e+300"),  # no duration string reads back exactly: plain seconds
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_a_plan_duration_is_written_as_before(seconds, written):
    assert _toml_duration(seconds) == written


@pytest.mark.parametrize("seconds", [90.0, 0.0, 0.25, 1e300, 0.1 + 0.2, 7 * 86400.0])
def test_plan_and_deployment_durations_are_written_alike(seconds):
    value = duration_value(seconds)
    expected = json.dumps(value) if isinstance(value, str) else repr(value)
    assert _toml_duration(seconds) == expected


POLICY = """
[plan]
shape = "linear"
initial = 10
step = 30
hold = "1m30s"
analysis_interval = 0.30000000000000004

[rollout]
call_timeout = "45s"
metrics_outage_limit = 0.30000000000000004

[decider]
kind = "threshold"
metrics = [{ metric = "error_rate", max = 0.02 }]
"""


def test_durations_of_the_plan_and_the_deployment_are_written_and_read_back_alike():
    policy = load_policy(POLICY)
    text = policy.to_toml()
    assert "analysis_interval = 0.30000000000000004" in text
    assert "metrics_outage_limit = 0.30000000000000004" in text
    assert 'call_timeout = "45s"' in text
    assert load_policy(text) == policy
