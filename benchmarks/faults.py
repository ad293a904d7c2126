"""Nothing lost: faults at every await, kill -9, fuzzing and cancellation; the last line printed
is one JSON object.

- ``fault_schedules``, ``fault_violations``: hypothesis-drawn fault schedules (a fixed
  seed: the same schedules each time) run through a chain of real `Rollout` runners in
  virtual time, as in tests/test_faults.py: errors, lost answers, slow calls, hangs and
  wrong answers at the router (apply, read), metrics, an async decider, the store (save,
  load), the lease (acquire, renew, release) and the hooks (Python callables, or HTTP
  webhooks to a loopback server: ``fault_webhook_schedules`` counts those), with
  operator commands and restarts.
  Split as the tests split them: 60% on asyncio, 20% on trio, 20% with dense router and
  store faults. A violation is a schedule that broke any invariant (see
  tests/helpers/fault_harness.py); ``fault_faults_injected`` counts the faults that fired.
- ``kill9_trials``, ``kill9_violations``: rollouts on the real clock with a `FileStore`
  and a file-backed router, their runner killed with SIGKILL at random moments (fixed
  seed) and resumed until one finishes, as in tests/test_kill9.py; ``kill9_kills`` counts
  the kills. A violation is a trial that broke any invariant.
- ``fuzz_inputs``, ``fuzz_unclear_errors``: from ``benchmarks/fuzz.py`` (run as a
  subprocess; its last line).
- ``cancel_rollback_ms_p99``: from ``benchmarks/cancel.py`` (run as a subprocess, alone,
  since it measures latency).

Targets: >= 2,000 schedules, >= 30 kill -9 trials, >= 10,000 fuzz inputs, 0 violations,
0 unclear errors, cancel p99 <= 50 ms.

Usage: python benchmarks/faults.py [--schedules N] [--kill9-trials N] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import platform
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import fault_harness as fh  # noqa: E402  (from tests/helpers/, shared with the tests)

KILL9_SEED = 20240605
KILL9_LANES = 3


def fault_schedules(count: int, backend: str, dense: bool, seed: int) -> dict[str, Any]:
    """Run `count` schedules drawn with a fixed seed; count the ones that broke anything."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import Phase as HypothesisPhase
    from hypothesis import seed as hypothesis_seed

    found: dict[str, Any] = {
        "schedules": 0,
        "webhooks": 0,
        "violations": 0,
        "injected": 0,
        "first": [],
    }
    endings: collections.Counter[str] = collections.Counter()

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[HypothesisPhase.explicit, HypothesisPhase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(fh.schedules(dense=dense))
    def run(schedule: fh.Schedule) -> None:
        result = fh.run_schedule(schedule, backend)
        found["schedules"] += 1
        found["webhooks"] += schedule.webhooks
        found["injected"] += result.injected
        endings[result.endings[-1].split(" ")[0]] += 1
        if result.violations:
            found["violations"] += 1
            if len(found["first"]) < 5:
                found["first"].append({"schedule": repr(schedule), "broke": result.violations})

    run()
    found["endings"] = dict(endings.most_common())
    return found


def kill9(trials: int, directory: Path) -> dict[str, Any]:
    """Run `trials` kill -9 trials, three at a time; count the ones that broke anything."""

    def lane(number: int) -> list[fh.Kill9Trial]:
        rng = random.Random(KILL9_SEED + number)
        done = []
        with fh.Kill9Lane() as server:
            for trial in range(number, trials, KILL9_LANES):
                path = directory / f"trial{trial}"
                path.mkdir()
                backend = "trio" if trial % 3 == 2 else "asyncio"
                done.append(fh.run_kill9_trial(server, path, rng, backend))
        return done

    with ThreadPoolExecutor(KILL9_LANES) as pool:
        results = [trial for done in pool.map(lane, range(KILL9_LANES)) for trial in done]
    broken = [trial for trial in results if trial.violations]
    return {
        "kill9_trials": len(results),
        "kill9_violations": len(broken),
        "kill9_kills": sum(trial.kills for trial in results),
        "kill9_runners": sum(trial.runs for trial in results),
        "kill9_kills_at_applies": dict(
            sorted(collections.Counter(a for t in results for a in t.killed_at_applies).items())
        ),
        "kill9_first_violations": [t.violations for t in broken[:3]],
    }


def last_json_line(command: list[str], timeout: float) -> dict[str, Any]:
    """Run a benchmark script and read the JSON object on its last line."""
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent, check=False
    )
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        raise RuntimeError(
            f"{command[1]} failed ({finished.returncode}): {finished.stderr[-2000:]}"
        )
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=2500)
    parser.add_argument("--kill9-trials", type=int, default=30)
    parser.add_argument("--fuzz-inputs", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=20240604)
    parser.add_argument("--quick", action="store_true", help="a tenth of everything")
    options = parser.parse_args()
    if options.quick:
        options.schedules //= 10
        options.kill9_trials = max(3, options.kill9_trials // 10)
        options.fuzz_inputs //= 10
    logging.disable(logging.CRITICAL)  # the runners log every injected fault
    started = time.perf_counter()
    figures: dict[str, Any] = {}

    bulk = options.schedules * 3 // 5
    parts = [("asyncio", False, bulk), ("trio", False, options.schedules // 5)]
    parts.append(("asyncio", True, options.schedules - bulk - parts[1][2]))
    schedules = webhooks = violations = injected = 0
    first: list[Any] = []
    endings: collections.Counter[str] = collections.Counter()
    for index, (backend, dense, count) in enumerate(parts):
        part_started = time.perf_counter()
        found = fault_schedules(count, backend, dense, options.seed + index)
        schedules += found["schedules"]
        webhooks += found["webhooks"]
        violations += found["violations"]
        injected += found["injected"]
        first += found["first"]
        endings.update(found["endings"])
        print(
            f"faults {backend}{' dense' if dense else ''}: {found['schedules']} schedules, "
            f"{found['violations']} violations, {time.perf_counter() - part_started:.1f} s",
            flush=True,
        )
    figures.update(
        fault_schedules=schedules,
        fault_webhook_schedules=webhooks,
        fault_violations=violations,
        fault_faults_injected=injected,
        fault_endings=dict(endings.most_common()),
        fault_first_violations=first[:5],
    )

    part_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="canarykit-kill9-") as directory:
        figures.update(kill9(options.kill9_trials, Path(directory)))
    print(
        f"kill -9: {figures['kill9_trials']} trials, {figures['kill9_kills']} kills, "
        f"{figures['kill9_violations']} violations, {time.perf_counter() - part_started:.1f} s",
        flush=True,
    )

    fuzz = last_json_line(
        [sys.executable, str(HERE / "fuzz.py"), "--inputs", str(options.fuzz_inputs)], 600
    )
    figures["fuzz_inputs"] = fuzz["fuzz_inputs"]
    figures["fuzz_unclear_errors"] = fuzz["fuzz_unclear_errors"]
    print(f"fuzz: {fuzz['fuzz_inputs']} inputs, {fuzz['fuzz_unclear_errors']} unclear", flush=True)

    cancel_command = [sys.executable, str(HERE / "cancel.py")]
    if options.quick:
        cancel_command.append("--quick")
    cancel = last_json_line(cancel_command, 600)
    figures["cancel_rollback_ms_p99"] = cancel["cancel_rollback_ms_p99"]
    print(f"cancel: p99 {cancel['cancel_rollback_ms_p99']} ms", flush=True)

    figures["targets"] = {
        "fault_schedules": ">= 2000",
        "kill9_trials": ">= 30",
        "fuzz_inputs": ">= 10000",
        "violations and unclear errors": 0,
        "cancel_rollback_ms_p99": "<= 50",
    }
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["python"] = platform.python_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
