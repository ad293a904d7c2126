"""How fast a cancelled rollout puts traffic back on stable; the last line is one JSON object.

- cancel_rollback_ms_p99: the 99th percentile, over 200 rollouts cancelled at random
  moments, of the time from the cancellation (the caller's cancel scope cancelled) to
  the stable-only split applied by the router (a `FakeRouter` timing its applies), on
  asyncio with the real clock. Each rollout runs 5% -> 10% -> 25% -> 50% with 20 ms
  holds and a 20 ms bake, background analysis every 10 ms (`ScriptedMetrics` and a
  threshold decider), and saves its state to a `FileStore` on local disk, fsync and
  all, under its `FileLease`: the setup of a real deploy tool, so a cancellation can
  land in a router call, a metrics collection, a wait or a save (a save under way in its
  worker thread finishes first: it cannot be abandoned halfway).
- `..._no_store`: the same without a store or lease.
- `cancel_rollback_ms_p50`, `..._max`; `cancelled` counts the rollouts whose cancellation
  found traffic to roll back; `finished_first` those that had ended before it came,
  `before_traffic` those cancelled before their first apply (nothing to roll back).

Usage: python benchmarks/cancel.py [--quick] [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics

PLAN = ck.from_weights([5, 10, 25, 50], hold=0.02, final_bake=0.02, analysis_interval=0.01)
DECIDER = threshold(bound("error_rate", max=0.5), failure_limit=3)


class TimingRouter(FakeRouter):
    """A FakeRouter that notes when each stable-only split was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.stable_at: list[float] = []

    async def apply(self, split: ck.TrafficSplit) -> None:
        await super().apply(split)
        if split.is_stable_only:
            self.stable_at.append(time.perf_counter())


async def one_trial(rng: random.Random, directory: Path | None, key: str) -> tuple[str, float]:
    """Run one rollout, cancel it at a random moment: ("cancelled", ms) or why not."""
    router = TimingRouter()
    rollout = ck.Rollout(
        PLAN,
        router=router,
        metrics=ScriptedMetrics(seed=rng.randrange(2**32)),
        decider=DECIDER,
        clock=ck.SystemClock(),
        store=directory,
        key=key,
    )
    delay = rng.uniform(0.0, PLAN.nominal_seconds * 1.2)
    cancelled_at = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(rollout.run)
        await anyio.sleep(delay)
        cancelled_at = time.perf_counter()
        tg.cancel_scope.cancel()
    if rollout.phase is ck.Phase.SUCCEEDED:
        return "finished_first", 0.0
    after = [t for t in router.stable_at if t >= cancelled_at]
    if not after:
        assert not router.applied, router.applied  # nothing moved: nothing to roll back
        return "before_traffic", 0.0
    assert rollout.phase is ck.Phase.ABORTED, rollout.phase
    assert router.current.is_stable_only
    return "cancelled", (after[0] - cancelled_at) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure(trials: int, seed: int, with_store: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    counts = {"cancelled": 0, "finished_first": 0, "before_traffic": 0}
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        for index in range(trials):
            directory = Path(tmp) if with_store else None
            kind, ms = await one_trial(rng, directory, f"trial-{index}")
            counts[kind] += 1
            if kind == "cancelled":
                latencies.append(ms)
    return {
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 trials instead of 200")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    trials = args.trials or (40 if args.quick else 200)
    store = anyio.run(measure, trials, args.seed, True, backend="asyncio")
    bare = anyio.run(measure, trials, args.seed, False, backend="asyncio")
    figures = {
        "cancel_rollback_ms_p99": round(store["p99"], 3),
        "cancel_rollback_ms_p50": round(store["p50"], 3),
        "cancel_rollback_ms_max": round(store["max"], 3),
        "cancel_rollback_ms_p99_no_store": round(bare["p99"], 3),
        "cancel_rollback_ms_p50_no_store": round(bare["p50"], 3),
        "trials": trials,
        "cancelled": store["cancelled"],
        "finished_first": store["finished_first"],
        "before_traffic": store["before_traffic"],
        "target_ms": 50,
        "python": platform.python_version(),
    }
    for name, value in figures.items():
        if name != "python":
            print(f"{name:34} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
