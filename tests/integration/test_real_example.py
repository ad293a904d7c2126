"""examples/real_canary.py runs for real: nginx, two app versions, Prometheus, traffic."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_real_canary_example_promotes_the_healthy_and_rolls_back_the_faulty(
    nginx_binary, prometheus_binary
):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "real_canary.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "healthy v2: succeeded" in result.stdout
    assert "v2 failing 5% of requests: rolled_back" in result.stdout
    assert "requests sent after the end, by version: {'v1'" in result.stdout
