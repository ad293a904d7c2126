# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from canarykit import __version__
from canarykit._cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "policy.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_healthy_scenario_promotes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "simulate", str(EXAMPLE), "--scenario", "healthy")
    assert (code, err) == (0, "")
    assert "outcome   promoted at 15:00" in out
    # One line per timeline entry: times as m:ss, the canary weight, both arms' numbers.
    assert " 0:30  progressing     10%  " in out
    assert "pass: error_rate: canary" in out
    assert "split: canary 100%" in out


@pytest.mark.parametrize("scenario", ["errors", "latency"])
def test_regressions_roll_back(capsys: pytest.CaptureFixture[str], scenario: str) -> None:
    code, out, err = run(capsys, "simulate", str(EXAMPLE), "--scenario", scenario)
    assert (code, err) == (0, "")  # a rollback is a result, not an error
    outcome = out.split("\noutcome   ", 1)[1]
    assert outcome.startswith("rolled back at ")
    metric = "error_rate" if scenario == "errors" else "p99"
    assert f"analysis failed: {metric}: canary" in outcome
    assert "canary left at 0%" in outcome


@pytest.mark.parametrize(
    ("scenario", "phase"),
    [("healthy", "succeeded"), ("errors", "rolled_back"), ("latency", "rolled_back")],
)
def test_json_output(capsys: pytest.CaptureFixture[str], scenario: str, phase: str) -> None:
    code, out, _ = run(capsys, "simulate", str(EXAMPLE), "--scenario", scenario, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["phase"] == phase
    assert data["simulation"] == {
        "policy": str(EXAMPLE),
        "scenario": scenario,
        "seed": 1,
        "requests_per_second": 100.0,
    }
    verdicts = [entry for entry in data["timeline"] if entry["kind"] == "verdict"]
    assert verdicts and verdicts[0]["canary_error_rate"] is not None
    assert data["finished_at"] > data["started_at"]


def test_seed_changes_the_noise_not_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for seed in ("2", "3"):
        code, out, _ = run(capsys, "simulate", str(EXAMPLE), "--seed", seed, "--json")
        assert code == 0
        outs.append(json.loads(out))
    assert [o["phase"] for o in outs] == ["succeeded", "succeeded"]
    assert [o["simulation"]["seed"] for o in outs] == [2, 3]
    assert outs[0]["timeline"] != outs[1]["timeline"]


def test_same_seed_same_output(capsys: pytest.CaptureFixture[str]) -> None:
    first = run(capsys, "simulate", str(EXAMPLE), "--scenario", "errors")
    second = run(capsys, "simulate", str(EXAMPLE), "--scenario", "errors")
    assert first == second


def test_bad_key_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("final_bake =", "final_bak ="))
    code, out, err = run(capsys, "simulate", str(bad), "--scenario", "healthy")
    assert code == 2
    assert out == ""
    assert (
        err == "canarykit: error: plan.final_bak: is not a known key (did you mean 'final_bake'?)\n"
    )


def test_bad_value_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('hold = "2m"', 'hold = "abc"'))
    code, _, err = run(capsys, "simulate", str(bad))
    assert code == 2
    assert err.startswith("canarykit: error: plan.hold: must be a duration such as 90")
    assert "Traceback" not in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "simulate", str(tmp_path / "missing.toml"))
    assert code == 2
    assert "cannot read the policy file" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "simulate", str(EXAMPLE), "--scenario", "meteor")
    assert code == 2
    assert "invalid choice: 'meteor'" in err
    code, _, err = run(capsys, "simulate", str(EXAMPLE), "--requests-per-second", "0")
    assert code == 2
    assert "canarykit: error: --requests-per-second" in err
    assert run(capsys)[0] == 2


def test_requests_per_second_override(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", str(EXAMPLE), "--requests-per-second", "1000", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["simulation"]["requests_per_second"] == 1000.0
    assert data["phase"] == "succeeded"


def test_waiting_for_a_person_stops_at_until(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "manual.toml"
    policy.write_text(
        """
        [plan]
        shape = "steps"
        analysis_interval = "1m"
        [[plan.steps]]
        set_weight = 10
        [[plan.steps]]
        wait_for_promotion = true
        [decider]
        kind = "threshold"
        failure_limit = 1000
        [[decider.metrics]]
        metric = "error_rate"
        max = 0.5
        """.replace("        ", "")
    )
    code, out, _ = run(capsys, "simulate", str(policy), "--until", "3600")
    assert code == 0
    assert "outcome   paused at 60:00" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out == f"canarykit {__version__}\n"


def test_python_dash_m_runs_the_example() -> None:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    result = subprocess.run(
        [sys.executable, "-m", "canarykit", "simulate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "outcome   promoted at 15:00" in result.stdout


def test_evaluate_same_seed_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("evaluate", str(EXAMPLE), "--runs", "30", "--regression", "latency:1.5x@5m", "--json")
    outputs = []
    for _ in range(2):
        code, out, _err = run(capsys, *argv)
        assert code == 0
        data = json.loads(out)
        del data["seconds"]  # wall time, the one figure that is not reproducible
        outputs.append(data)
    assert outputs[0] == outputs[1]
    data = outputs[0]
    assert data["scenario"]["regression"] == {"kind": "latency", "factor": 1.5, "at": 300.0}
    assert data["detected"] + data["false_rollbacks"] == data["rolled_back"]
    assert data["median_detect_s"] is not None


def test_evaluate_seed_and_traffic_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "evaluate",
        str(EXAMPLE),
        "--runs",
        "10",
        "--seed",
        "4",
        "--requests-per-second",
        "1000",
        "--horizon",
        "600",
    )
    assert (code, err) == (0, "")
    assert "runs             10 (seed 4); each stops by 10m of virtual time" in out
    assert "scenario         1000 requests/s" in out
    assert "unfinished 10" in out  # the 15-minute plan cannot end within 10 minutes


def test_evaluate_unknown_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", str(EXAMPLE), "--runz", "5")
    assert code == 2
    assert "--runz" in err


def test_python_dash_m_evaluates_the_example() -> None:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    result = subprocess.run(
        [sys.executable, "-m", "canarykit", "evaluate", str(EXAMPLE), "--runs", "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "false rollbacks  " in result.stdout
    assert result.stderr == ""  # no progress line when stderr is not a terminal


def test_simulate_plot_draws_the_rollout(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    picture = tmp_path / "rollout.svg"
    assert main(["simulate", str(EXAMPLE), "--scenario", "errors", "--plot", str(picture)]) == 0
    assert ET.parse(picture).getroot().tag.endswith("svg")
    assert main(["simulate", str(EXAMPLE), "--plot", str(tmp_path / "rollout.gif")]) == 2
    assert "--plot" in capsys.readouterr().err
    assert main(["simulate", str(EXAMPLE), "--plot", str(tmp_path / "missing" / "r.png")]) == 1
