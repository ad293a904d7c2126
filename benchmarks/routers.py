"""Router and source benchmarks in one run; the last line printed is one JSON object.

Runs the per-adapter benchmarks (each a script beside this one that prints its own JSON
object last) and adds the end-to-end figures:

- from `nginx.py`: nginx_apply_ms_median, nginx_split_error_pct (at 1%, 10%, 50%);
- from `haproxy.py`: haproxy_apply_ms_median, haproxy_split_error_pct and the requests
  HAProxy needs before the split converges;
- from `inprocess.py`: inprocess_picks_per_second, inprocess_max_prefix_deviation,
  sticky_monotonicity_violations, sticky_max_share_error_pct, recorder_records_per_second;
- e2e_rollback_s and e2e_bad_requests: a `CanaryLab` with nginx, two demo app versions
  and Prometheus (1 s scrapes); real traffic at 120 requests/s through nginx; v2 starts
  failing 5% of its requests as soon as it gets its first 10%. e2e_rollback_s runs from
  the fault's onset to the last request v2 answered; e2e_bad_requests counts the 5xx
  answers users got meanwhile. Median over `--e2e-runs` runs (3; 1 with --quick).

Usage: python benchmarks/routers.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import CanaryLab, Fault

HERE = Path(__file__).parent
PARTS = ("nginx.py", "haproxy.py", "inprocess.py")


def run_part(script: str, quick: bool) -> dict[str, object]:
    args = [sys.executable, str(HERE / script), *(["--quick"] if quick else [])]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return {f"{script}_failed": done.stderr.strip().splitlines()[-3:]}
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    figures[f"{script.removesuffix('.py')}_benchmark_s"] = round(time.perf_counter() - started, 1)
    return figures


def end_to_end(runs: int) -> dict[str, object]:
    plan = ck.from_weights([10, 50], hold=6, final_bake=6, analysis_interval=3)
    decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.1))
    seconds, bad, phases = [], [], []
    with tempfile.TemporaryDirectory() as tmp, CanaryLab(tmp, proxy="nginx") as lab:
        for _ in range(runs):
            report = anyio.run(lambda: lab.rehearse(plan, decider, Fault(error_rate=0.05)))
            phases.append(report.outcome.phase.value)
            if report.seconds_to_rollback is not None:
                seconds.append(report.seconds_to_rollback)
            bad.append(report.bad_requests)
    return {
        "e2e_runs": runs,
        "e2e_outcomes": phases,
        "e2e_rollback_s": round(statistics.median(seconds), 2) if seconds else None,
        "e2e_rollback_s_each": [round(s, 2) for s in seconds],
        "e2e_bad_requests": statistics.median(bad),
        "e2e_bad_requests_each": bad,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    figures: dict[str, object] = {}
    for part in PARTS:
        figures.update(run_part(part, quick))
    figures.update(end_to_end(1 if quick else 3))
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
