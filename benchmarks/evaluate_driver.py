"""The evaluator's cost per window, decider and sampling included; the last line is JSON.

`evaluate` on A/A runs (100 requests/s, canary 10%, 10 s windows, 30 minutes held) with a
cheap decider (`threshold` on the error rate, no latency drawn: the driver's own work is
then a large share of each window) and with the sequential pair the deciders benchmark
uses. Each figure is the best of `--repeats` (5) timings, in microseconds of this
process's CPU time per window: other work on a busy machine then adds little noise, and
only upwards.

Usage: python benchmarks/evaluate_driver.py [--repeats N]
"""

from __future__ import annotations

import json
import math
import sys
import time

from canarykit.deciders import bound, threshold
from canarykit.deciders._sequential import sequential_errors, sequential_latency
from canarykit.testing import Scenario, evaluate, hold_plan


def best_microseconds(decider: object, runs: int, repeats: int) -> tuple[float, int]:
    plan = hold_plan(10, seconds=1800, analysis_interval=10)
    traffic = Scenario(
        requests_per_second=100, error_rate=0.01, latency_median=0.1, latency_sigma=0.5
    )
    best = math.inf
    windows = 0
    for _ in range(repeats):
        started = time.process_time()
        result = evaluate(plan, decider, traffic, runs=runs, seed=7)  # type: ignore[arg-type]
        best = min(best, time.process_time() - started)
        windows = result.windows
    return best / windows * 1e6, windows


def main() -> None:
    repeats = 5
    if "--repeats" in sys.argv:
        repeats = int(sys.argv[sys.argv.index("--repeats") + 1])
    cheap = threshold(bound("error_rate", max=0.05), failure_limit=3, no_data="ignore")
    both = sequential_errors(alpha=0.01) & sequential_latency(alpha=0.01)
    threshold_us, threshold_windows = best_microseconds(cheap, 40, repeats)
    sequential_us, sequential_windows = best_microseconds(both, 20, repeats)
    print(
        json.dumps(
            {
                "threshold_microseconds_per_window": round(threshold_us, 2),
                "threshold_windows": threshold_windows,
                "sequential_microseconds_per_window": round(sequential_us, 2),
                "sequential_windows": sequential_windows,
                "repeats": repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
