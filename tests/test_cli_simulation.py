"""``canarykit simulate`` and ``evaluate`` follow the policy's [simulation] table.

Header-route stages give the canary the routed share of the requests a route matches
(``header_share``), and ``[simulation.gauges]`` scripts gauges such as memory, including
a leak on the canary that a decider on that gauge must roll back.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canarykit._cli import main

# The seed's stage "10% of Chrome users", then half of everyone. A window without canary
# data fails (no_data = "fail"), so a canary given no traffic at the Chrome stage rolls
# back: what `evaluate` reported for every run before header routes were simulated.
CHROME_POLICY = """
[plan]
shape = "steps"
analysis_interval = "1m"
[[plan.steps]]
header_route = {header = "User-Agent", regex = ".*Chrome.*", percent = 10}
[[plan.steps]]
pause = "10m"
[[plan.steps]]
clear_header_routes = true
[[plan.steps]]
set_weight = 50
[[plan.steps]]
pause = "5m"

[decider]
kind = "threshold"
failure_limit = 2
no_data = "fail"
[[decider.metrics]]
metric = "error_rate"
max = "5%"

[simulation]
seed = 1
header_share = SHARE
"""

LINEAR = """
[plan]
shape = "linear"
initial = 10
step = 20
hold = "2m"
final_bake = "5m"
analysis_interval = "30s"
"""

# Resident memory of 200 MB on both arms; the canary leaks 200 MB an hour from 3 minutes.
LEAK = """
[simulation]
seed = 1
[simulation.gauges]
memory_bytes = {value = 2e8, canary_per_hour = 2e8, at = "3m", noise = 0.01}
"""

COMPARE = """
[decider]
kind = "relative"
[[decider.metrics]]
metric = "memory_bytes"
max_ratio = 1.1
"""

BOUND = """
[decider]
kind = "threshold"
failure_limit = 1
[[decider.metrics]]
metric = "memory_bytes"
max = 2.2e8
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return str(path)


def evaluated(capsys: pytest.CaptureFixture[str], policy: str, runs: int) -> dict:
    code, out, err = run(capsys, "evaluate", policy, "--runs", str(runs), "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


def test_chrome_stage_evaluates_with_the_policys_header_share(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 60% of requests from Chrome, 10% of them routed: the canary serves 6% of 100
    # requests/s, plenty for a 5% error limit on a 1% error rate.
    data = evaluated(capsys, write(tmp_path, CHROME_POLICY.replace("SHARE", '"60%"')), 200)
    # Measured: 0 of 1000 runs roll back (a window over 5% errors has odds below 1e-9).
    assert (data["false_rollbacks"], data["promoted"]) == (0, 200)
    # The same plan when no request matches the route: no canary data, every run rolls
    # back, which shows the CLI reads header_share from the policy.
    data = evaluated(capsys, write(tmp_path, CHROME_POLICY.replace("SHARE", "0")), 20)
    assert data["false_rollbacks"] == 20


def test_chrome_stage_simulates_canary_traffic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = write(tmp_path, CHROME_POLICY.replace("SHARE", "0.6"))
    code, out, _ = run(capsys, "simulate", policy, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["phase"] == "succeeded"
    first = next(entry for entry in data["timeline"] if entry["kind"] == "verdict")
    assert first["canary_error_rate"] is not None  # the Chrome stage's canary has requests


@pytest.mark.parametrize("decider", [COMPARE, BOUND], ids=["compare", "bound"])
def test_a_scripted_memory_leak_is_rolled_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, decider: str
) -> None:
    policy = write(tmp_path, LINEAR + decider + LEAK)
    code, out, err = run(capsys, "simulate", policy)
    assert (code, err) == (0, "")
    outcome = out.split("\noutcome   ", 1)[1]
    assert outcome.startswith("rolled back at ")
    assert "analysis failed: memory_bytes: canary" in outcome


def test_evaluate_does_not_call_rollbacks_for_a_scripted_leak_false(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = write(tmp_path, LINEAR + COMPARE + LEAK)
    code, out, err = run(capsys, "evaluate", policy, "--runs", "20")
    assert (code, err) == (0, "")
    assert "false rollbacks" not in out
    assert "rollbacks        100.00% (20 of 20;" in out
    assert (
        "not called false: [simulation.gauges] scripts a change in the canary's memory_bytes" in out
    )
    data = evaluated(capsys, policy, 5)
    assert data["gauges_changing_canary"] == ["memory_bytes"]
    # Gauges alike on both arms change nothing on the canary: rollbacks are false again.
    alike = write(tmp_path, LINEAR + COMPARE + LEAK.replace("canary_per_hour = 2e8, ", ""))
    code, out, _ = run(capsys, "evaluate", alike, "--runs", "20")
    assert code == 0
    assert "false rollbacks  0.00% (0 of 20;" in out
    assert evaluated(capsys, alike, 5)["gauges_changing_canary"] == []
