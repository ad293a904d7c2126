"""nginx router benchmarks; the last line printed is one JSON object with the figures.

A real nginx (one worker) fronts two DemoApps (v1 stable, v2 canary) on loopback.

- nginx_apply_ms_median: `NginxRouter.apply` from call to return: write the include
  file atomically, `nginx -T`, SIGHUP to the master, and wait until every old worker
  has stopped accepting and a new one runs (so every new connection gets the new
  weights). Alternating 10% / 20% splits. `nginx_apply_ms_phases_median` splits that
  into the router's own work (write + validate), nginx starting new workers after the
  signal, and the old workers being told to stop: the master sleeps 100 ms between the
  last two ("allow new processes to start", src/os/unix/ngx_process_cycle.c).
- nginx_split_error_pct: for targets 1%, 10% and 50%, apply, then 1,000 sequential
  requests through nginx (SplitProbe, one keep-alive connection); the distance between
  the observed canary share and the target, in percentage points.

Usage: python benchmarks/nginx.py [--quick]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from canarykit import TrafficSplit
from canarykit._binaries import router_binary
from canarykit.routers import SplitProbe
from canarykit.routers._nginx import _children, _is_worker, _retiring
from canarykit.testing.lab import DemoApp, NginxServer, find_binary


async def apply_times(server: NginxServer, rounds: int) -> list[float]:
    times = []
    for index in range(rounds):
        split = TrafficSplit(canary_percent=10 if index % 2 else 20)
        started = time.perf_counter()
        await server.router.apply(split)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def phase_times(server: NginxServer, rounds: int) -> dict[str, float]:
    """The same steps as apply, timed one by one (private helpers, for the breakdown)."""
    router = server.router
    binary = router_binary(router.nginx, "nginx", "nginx-light")
    own, started_ms, retired_ms = [], [], []
    for index in range(rounds):
        split = TrafficSplit(canary_percent=30 if index % 2 else 40)
        begin = time.perf_counter()
        await anyio.to_thread.run_sync(router._swap_in, router.render(split))
        await router._validate(binary, split)
        master = router._master_pid()
        old = {
            p for p, t in (_children(master) or {}).items() if _is_worker(t) and not _retiring(t)
        }
        own.append((time.perf_counter() - begin) * 1000)
        signalled = time.perf_counter()
        os.kill(master, signal.SIGHUP)
        new_seen = None
        while True:
            now = _children(master) or {}
            if new_seen is None and any(
                p not in old and _is_worker(t) and not _retiring(t) for p, t in now.items()
            ):
                new_seen = time.perf_counter()
            if new_seen and all(p not in now or _retiring(now[p]) for p in old):
                break
            await anyio.sleep(0.0005)
        started_ms.append((new_seen - signalled) * 1000)
        retired_ms.append((time.perf_counter() - signalled) * 1000)
    return {
        "write_and_validate": round(statistics.median(own), 1),
        "signal_to_new_worker": round(statistics.median(started_ms), 1),
        "signal_to_old_workers_retired": round(statistics.median(retired_ms), 1),
    }


async def split_errors(server: NginxServer, requests: int) -> dict[str, dict[str, float]]:
    out = {}
    for percent in (1, 10, 50):
        split = TrafficSplit(canary_percent=percent)
        await server.router.apply(split)
        probe = SplitProbe(url=server.url + "/", requests=requests, timeout=10, deadline=300)
        result = await probe.measure(split)
        out[str(percent)] = {
            "canary": result.canary,
            "requests": result.sent,
            "error_points": round(result.error_points, 4),
        }
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    rounds = 5 if quick else 21
    requests = 200 if quick else 1000
    binary = find_binary("nginx", "nginx-light")
    directory = Path(tempfile.mkdtemp(prefix="canarykit-nginx-bench-"))
    with (
        DemoApp(directory, version="v1", latency=0.0) as v1,
        DemoApp(directory, version="v2", latency=0.0) as v2,
        NginxServer(
            directory / "nginx", stable=[v1.address], canary=[v2.address], binary=binary
        ) as server,
    ):

        async def run() -> dict[str, object]:
            applies = await apply_times(server, rounds)
            phases = await phase_times(server, rounds)
            errors = await split_errors(server, requests)
            return {
                "nginx_apply_ms_median": round(statistics.median(applies), 1),
                "nginx_apply_ms_min": round(min(applies), 1),
                "nginx_apply_ms_max": round(max(applies), 1),
                "nginx_apply_rounds": rounds,
                "nginx_apply_ms_phases_median": phases,
                "nginx_split_error_pct": {k: v["error_points"] for k, v in errors.items()},
                "nginx_split_error_pct_max": max(v["error_points"] for v in errors.values()),
                "nginx_split_counts": errors,
                "nginx_version": os.popen(f"{binary} -v 2>&1").read().strip(),
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }

        figures = anyio.run(run)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
