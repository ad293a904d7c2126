"""How long 2,000 three-hour A/A rollouts take through the state machine and a decider.

The canary is held at 10% of 100 requests/s for 3 hours, judged every 10 s (1,080
windows a run), both versions alike (1% errors). One process, one core; the figure is
the CPU time. The last line printed is one JSON object.

Usage: python benchmarks/aa_runtime.py [--runs N] [--latency]
  --latency  judge with sequential_errors & sequential_latency (draws latency too);
             the default is sequential_errors alone.
"""

from __future__ import annotations

import argparse
import json
import time

from canarykit.deciders import sequential_errors, sequential_latency
from canarykit.testing import Scenario, evaluate, hold_plan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args()
    decider = sequential_errors(alpha=0.01)
    if args.latency:
        decider = decider & sequential_latency(alpha=0.01)
    scenario = Scenario(
        requests_per_second=100, error_rate=0.01, latency_median=0.1, latency_sigma=0.5
    )
    cpu, wall = time.process_time(), time.perf_counter()
    evaluation = evaluate(
        hold_plan(10, 3 * 3600, analysis_interval=10), decider, scenario, runs=args.runs, seed=1
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        json.dumps(
            {
                "decider": repr(decider),
                "runs": evaluation.runs,
                "windows": evaluation.windows,
                "false_rollback_rate": evaluation.false_rollback_rate,
                "cpu_seconds": round(cpu, 1),
                "wall_seconds": round(wall, 1),
                "microseconds_per_window": round(cpu / evaluation.windows * 1e6, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
