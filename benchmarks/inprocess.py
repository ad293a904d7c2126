"""In-process router and recorder benchmarks; the last line printed is one JSON object.

- inprocess_picks_per_second: `WeightedRouter.pick()` at 10% in a plain loop, the best of
  five runs of 1,000,000 (the loop's own cost included). `..._with_headers` is the same
  with a header route in force and request headers that do not match it;
  `sticky_picks_per_second` is `pick_for(key)` over 100,000 distinct keys.
- inprocess_max_prefix_deviation: the largest |canary picks - n * percent / 100| over
  every prefix n of 100,000 picks (ten periods or more), for each of the percents 0.5, 1,
  10, 33.3, 50 and 99; smooth weighted round-robin promises < 1.
- sticky_monotonicity_violations: 100,000 keys, the percent stepping 1, 2, ..., 100; a
  violation is a key on the canary at one step and on stable at a later one (must be 0).
  sticky_max_share_error_pct: the largest |share of keys on the canary - percent| over
  those steps, in percentage points.
- recorder_records_per_second: `Recorder.record(arm, ok, latency)` with the wall clock,
  latencies drawn beforehand (log-normal, median 50 ms), the best of five runs of
  1,000,000. `recorder_measure_per_second`: `with recorder.measure(arm):` around nothing.
  `recorder_observe_ms`: collecting a 60 s window after 300 s of recorded traffic.

Usage: python benchmarks/inprocess.py [--quick]
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from itertools import repeat

import anyio

import canarykit as ck
from canarykit import Arm
from canarykit.metrics import Recorder
from canarykit.routers import WeightedRouter

PREFIX_PERCENTS = (0.5, 1.0, 10.0, 33.3, 50.0, 99.0)
CHROME = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")


def _apply(router: WeightedRouter, percent: float, **split: object) -> None:
    anyio.run(router.apply, ck.TrafficSplit(canary_percent=percent, **split))  # type: ignore[arg-type]


def picks_per_second(count: int, repeats: int, *, headers: bool) -> float:
    router = WeightedRouter()
    if headers:
        _apply(router, 10, header_routes=[CHROME])
        request = {"User-Agent": "curl/8.5", "Accept": "*/*", "Host": "shop.internal"}
        pick = router.pick
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in repeat(None, count):
                pick(request)
            best = min(best, time.perf_counter() - started)
        return count / best
    _apply(router, 10)
    pick = router.pick
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in repeat(None, count):
            pick()
        best = min(best, time.perf_counter() - started)
    return count / best


def sticky_picks_per_second(keys: list[str], repeats: int) -> float:
    router = WeightedRouter(salt="bench")
    _apply(router, 10)
    pick_for = router.pick_for
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for key in keys:
            pick_for(key)
        best = min(best, time.perf_counter() - started)
    return len(keys) / best


def max_prefix_deviation(picks: int) -> dict[str, float]:
    """Exact, in integers: with share a/b, the deviation is |canary * b - n * a| / b."""
    worst: dict[str, float] = {}
    for percent in PREFIX_PERCENTS:
        router = WeightedRouter()
        _apply(router, percent)
        # The target is the percent itself, as a fraction of integers.
        a, b = round(percent * 100), 10_000
        canary = deviation = 0
        pick = router.pick
        for n in range(1, picks + 1):
            canary += pick() is Arm.CANARY
            deviation = max(deviation, abs(canary * b - n * a))
        worst[f"{percent:g}"] = deviation / b
    return worst


def sticky_stepping(keys: list[str]) -> tuple[int, float]:
    router = WeightedRouter(salt="rollout-2024-06-01")
    on_canary = [False] * len(keys)
    violations = 0
    worst_error = 0.0
    pick_for = router.pick_for
    for percent in range(1, 101):
        _apply(router, percent)
        count = 0
        for i, key in enumerate(keys):
            now = pick_for(key) is Arm.CANARY
            if on_canary[i] and not now:
                violations += 1
            on_canary[i] = now
            count += now
        worst_error = max(worst_error, abs(100.0 * count / len(keys) - percent))
    return violations, worst_error


def records_per_second(count: int, repeats: int) -> float:
    draw = random.Random(1)
    latencies = [draw.lognormvariate(-3.0, 0.5) for _ in range(4096)]
    arms = [Arm.CANARY if draw.random() < 0.1 else Arm.STABLE for _ in range(4096)]
    oks = [draw.random() >= 0.01 for _ in range(4096)]
    rounds = count // 4096
    best = float("inf")
    for _ in range(repeats):
        recorder = Recorder()
        record = recorder.record
        started = time.perf_counter()
        for _ in repeat(None, rounds):
            for arm, ok, latency in zip(arms, oks, latencies, strict=True):
                record(arm, ok, latency)
        best = min(best, time.perf_counter() - started)
    return rounds * 4096 / best


def measure_per_second(count: int) -> float:
    recorder = Recorder()
    measure = recorder.measure
    started = time.perf_counter()
    for _ in repeat(None, count):
        with measure(Arm.CANARY):
            pass
    return count / (time.perf_counter() - started)


def observe_ms() -> float:
    """Collect a 60 s window after 300 s of 1,000 requests a second (virtual time)."""
    now = [0.0]
    recorder = Recorder(clock=lambda: now[0])
    draw = random.Random(2)
    for second in range(300):
        for i in range(1000):
            now[0] = second + i / 1000
            arm = Arm.CANARY if i % 10 == 0 else Arm.STABLE
            recorder.record(arm, draw.random() >= 0.01, draw.lognormvariate(-3.0, 0.5))
    window = ck.Window(start=240, end=300, split=ck.TrafficSplit(canary_percent=10))
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        observation = recorder.observe(window)
        best = min(best, time.perf_counter() - started)
    assert observation.stable.requests + observation.canary.requests == 60_000
    return best * 1000


def main() -> None:
    quick = "--quick" in sys.argv
    count = 200_000 if quick else 1_000_000
    repeats = 2 if quick else 5
    keys = [f"user-{i}" for i in range(10_000 if quick else 100_000)]
    deviations = max_prefix_deviation(20_000 if quick else 100_000)
    violations, share_error = sticky_stepping(keys)
    figures = {
        "inprocess_picks_per_second": round(picks_per_second(count, repeats, headers=False)),
        "inprocess_picks_per_second_with_headers": round(
            picks_per_second(count // 4, repeats, headers=True)
        ),
        "sticky_picks_per_second": round(sticky_picks_per_second(keys, repeats)),
        "inprocess_max_prefix_deviation": round(max(deviations.values()), 4),
        "inprocess_prefix_deviation_by_percent": deviations,
        "sticky_monotonicity_violations": violations,
        "sticky_max_share_error_pct": round(share_error, 3),
        "sticky_keys": len(keys),
        "recorder_records_per_second": round(records_per_second(count, repeats)),
        "recorder_measure_per_second": round(measure_per_second(count // 4)),
        "recorder_observe_ms": round(observe_ms(), 3),
        "quick": quick,
        "python": platform.python_version(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
