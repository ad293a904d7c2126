"""HAProxy router benchmarks; the last line printed is one JSON object with the figures.

A real HAProxy (``balance roundrobin``, admin stats socket) fronts two DemoApps (v1
stable, v2 canary) on loopback.

- haproxy_apply_ms_median: `HAProxyRouter.apply` from call to return: ``get weight``
  for every server, ``set weight`` on one command line, and ``get weight`` again until
  the read-back confirms the weights. Alternating 10% / 20% splits.
  `haproxy_apply_persist_ms_median` is the same with `persist_config` (it adds writing
  the config file and ``haproxy -c``).
- haproxy_split_error_pct: for targets 1%, 10% and 50% in turn (from the previous one,
  starting at 0%), apply, then 1,000 sequential requests through HAProxy (SplitProbe,
  one keep-alive connection); the distance between the observed canary share and the
  target, in percentage points. `haproxy_split_error_pct_worst` is the worst over
  several starting points: each target applied from 0%, 10%, 50% and 90% after a
  number of requests that leaves the old weights' cycle part-way through.
- haproxy_requests_to_converge: over the same runs (worst case per target), how many
  requests after the apply it takes until the split stays within 1 point:
  `prefix` is the smallest n such that for every m >= n the canary's count among the
  first m requests is within 1 point of the target (or within one request, for m < 100,
  where a point is less than a request; a perfect smooth round-robin scores 0);
  `batches_of_100` is how many requests a SplitProbe in convergence mode with
  100-request batches spends before a batch is within 1 point;
  `first_canary_request` is when the canary first answered (a server brought up from
  weight 0 can wait most of a weight cycle for its first turn).
- haproxy_90_10_to_50_50: v1 / v2 counts of the first 1,000 requests after moving a
  backend from 90/10 to 50/50 part-way through a cycle (REAL_COMPONENTS.md reports
  351 / 649 for that move).

Usage: python benchmarks/haproxy.py [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from canarykit import TrafficSplit
from canarykit.routers import SplitProbe
from canarykit.testing.lab import DemoApp, HAProxyServer, find_binary

TARGETS = (1, 10, 50)
# (canary percent before the apply, requests sent at it first): 37, 123 and 61 are not
# multiples of any cycle length here, so the old cycle is left part-way.
STARTS = ((0, 0), (10, 37), (50, 123), (90, 61))


async def apply_times(server: HAProxyServer, rounds: int) -> list[float]:
    times = []
    for index in range(rounds):
        split = TrafficSplit(canary_percent=10 if index % 2 else 20)
        started = time.perf_counter()
        await server.router.apply(split)
        times.append((time.perf_counter() - started) * 1000)
        assert await server.router.read() == split
    return times


async def sequence(server: HAProxyServer, split: TrafficSplit, requests: int) -> list[bool]:
    """Which of `requests` sequential requests the canary answered, in order."""
    seen: list[bool] = []

    def classify(response: object) -> bool | None:
        version = response.headers.get("X-Version")  # type: ignore[attr-defined]
        if version is None:
            return None
        seen.append(version == "v2")
        return seen[-1]

    probe = SplitProbe(
        url=server.url + "/", requests=requests, classify=classify, timeout=10, deadline=300
    )
    result = await probe.measure(split)
    assert result.unclassified == 0, result.describe()
    return seen


def convergence(seen: list[bool], target: float) -> dict[str, int | None]:
    prefix = 0
    canary = 0
    for count, answered in enumerate(seen, start=1):
        canary += answered
        # Within 1 point, or within one request where a point is less than a request: the
        # first 10 requests at 50% cannot be closer than 10 points to 50%.
        if abs(canary - count * target / 100) > max(count / 100, 1) + 1e-9:
            prefix = count
    batches = None
    for start in range(0, len(seen) - 99, 100):
        if abs(sum(seen[start : start + 100]) - target) <= 1 + 1e-9:
            batches = start
            break
    first = seen.index(True) + 1 if any(seen) else None
    return {"prefix": prefix, "batches_of_100": batches, "first_canary_request": first}


def error_points(seen: list[bool], target: float) -> float:
    return round(abs(100 * sum(seen) / len(seen) - target), 4)


async def split_errors(server: HAProxyServer, requests: int) -> dict[str, object]:
    in_turn = {}
    for percent in TARGETS:
        split = TrafficSplit(canary_percent=percent)
        await server.router.apply(split)
        in_turn[str(percent)] = error_points(await sequence(server, split, requests), percent)
    worst: dict[str, float] = {}
    converge: dict[str, dict[str, int | None]] = {}
    runs = []
    for percent in TARGETS:
        split = TrafficSplit(canary_percent=percent)
        for before, warmup in STARTS:
            if before == percent:
                continue
            old = TrafficSplit(canary_percent=before)
            await server.router.apply(old)
            if warmup:
                await sequence(server, old, warmup)
            await server.router.apply(split)
            seen = await sequence(server, split, requests)
            error = error_points(seen, percent)
            steps = convergence(seen, percent)
            runs.append({"from": before, "to": percent, "error_points": error, **steps})
            key = str(percent)
            worst[key] = max(worst.get(key, 0.0), error)
            mine = converge.setdefault(key, {})
            for name, value in steps.items():
                if value is None or mine.get(name, 0) is None:
                    mine[name] = None
                else:
                    mine[name] = max(mine.get(name) or 0, value)
    return {"in_turn": in_turn, "worst": worst, "converge": converge, "runs": runs}


async def ninety_ten_to_fifty_fifty(server: HAProxyServer, requests: int) -> list[int]:
    before = TrafficSplit(canary_percent=10)
    await server.router.apply(before)
    await sequence(server, before, 537)
    after = TrafficSplit(canary_percent=50)
    await server.router.apply(after)
    seen = await sequence(server, after, requests)
    return [seen.count(False), seen.count(True)]


def main() -> None:
    quick = "--quick" in sys.argv
    rounds = 5 if quick else 51
    requests = 200 if quick else 1000
    binary = find_binary("haproxy", "haproxy")
    directory = Path(tempfile.mkdtemp(prefix="canarykit-haproxy-bench-"))
    with (
        DemoApp(directory, version="v1", latency=0.0) as v1,
        DemoApp(directory, version="v2", latency=0.0) as v2,
        HAProxyServer(
            directory / "haproxy", stable=[v1.address], canary=[v2.address], binary=binary
        ) as server,
        HAProxyServer(
            directory / "persist",
            stable=[v1.address],
            canary=[v2.address],
            binary=binary,
            persist=True,
        ) as persisting,
    ):

        async def run() -> dict[str, object]:
            applies = await apply_times(server, rounds)
            persisted = await apply_times(persisting, 5 if quick else 11)
            errors = await split_errors(server, requests)
            moved = await ninety_ten_to_fifty_fifty(server, requests)
            return {
                "haproxy_apply_ms_median": round(statistics.median(applies), 2),
                "haproxy_apply_ms_min": round(min(applies), 2),
                "haproxy_apply_ms_max": round(max(applies), 2),
                "haproxy_apply_rounds": rounds,
                "haproxy_apply_persist_ms_median": round(statistics.median(persisted), 1),
                "haproxy_split_error_pct": errors["in_turn"],
                "haproxy_split_error_pct_worst": errors["worst"],
                "haproxy_split_requests": requests,
                "haproxy_requests_to_converge": errors["converge"],
                "haproxy_split_runs": errors["runs"],
                "haproxy_90_10_to_50_50": moved,
                "haproxy_version": os.popen(f"{binary} -v 2>&1").readline().strip(),
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }

        figures = anyio.run(run)
    shutil.rmtree(directory, ignore_errors=True)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
