"""PrometheusSource against a real Prometheus and two demo apps: count accuracy, latency.

Run: python benchmarks/prometheus_source.py  (needs the prometheus binary; about 80 s)

Each round sends a known number of requests inside a 15 s window (v1 healthy; v2 with
10% errors and +200 ms) and compares with what `collect` reports. Then it times plain
instant queries and whole collections. The last line is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import anyio

from canarykit import TrafficSplit, Window
from canarykit.metrics import PrometheusSource
from canarykit.testing.lab import DemoApp, PrometheusServer

INTERVAL, WINDOW, ROUNDS = 1.0, 15.0, 3


def send_until(url: str, stop_at: float, pause: float, tally: Counter[int]) -> None:
    for _ in range(5_000):
        if time.time() >= stop_at:
            return
        try:
            with urllib.request.urlopen(f"{url}/checkout", timeout=5) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        tally[code] += 1
        time.sleep(pause)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="canarykit-prom-") as directory:
        run(Path(directory))


def run(directory: Path) -> None:
    result: dict[str, object] = {"window_s": WINDOW, "scrape_interval_s": INTERVAL}
    with (
        DemoApp(directory, version="v1") as v1,
        DemoApp(directory, version="v2") as v2,
        PrometheusServer(directory, targets=[v1.address, v2.address]) as prometheus,
    ):
        began = time.time()
        prometheus.wait_for_target(v1.address)
        prometheus.wait_for_target(v2.address)
        result["first_sample_s"] = round(time.time() - began, 1)
        v2.set_fault(error_rate=0.1, extra_latency=0.2)
        source = PrometheusSource(url=prometheus.url, stable="v1", canary="v2")
        excess: list[float] = []
        window = None
        for round_number in range(ROUNDS):
            start = time.time()
            end = start + WINDOW
            tallies = {"v1": Counter[int](), "v2": Counter[int](), "v2b": Counter[int]()}
            time.sleep(INTERVAL + 0.5)
            stop_at = end - INTERVAL - 0.5
            threads = [
                threading.Thread(target=send_until, args=(v1.url, stop_at, 0.03, tallies["v1"])),
                threading.Thread(target=send_until, args=(v2.url, stop_at, 0.0, tallies["v2"])),
                threading.Thread(target=send_until, args=(v2.url, stop_at, 0.0, tallies["v2b"])),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            tallies["v2"].update(tallies.pop("v2b"))
            time.sleep(max(0.0, end - time.time()))
            window = Window(start=start, end=end, split=TrafficSplit(canary_percent=50))
            observation = anyio.run(source.collect, window)
            for name, arm in (("v1", observation.stable), ("v2", observation.canary)):
                sent, sent_errors = sum(tallies[name].values()), tallies[name][500]
                excess.append(100 * (arm.requests / sent - 1))
                print(
                    f"round {round_number} {name}: sent {sent} requests, {sent_errors} errors; "
                    f"reported {arm.requests}, {arm.errors}; p99 {arm.p99:.4f} s, "
                    f"mean {arm.mean_latency:.4f} s"
                )
        assert window is not None
        result["requests_excess_pct_min"] = round(min(excess), 1)
        result["requests_excess_pct_max"] = round(max(excess), 1)
        result["requests_excess_pct_bound"] = round(100 * 2 * INTERVAL / (WINDOW - 2 * INTERVAL), 1)

        async def timings() -> tuple[list[float], list[float]]:
            queries, collections = [], []
            for _ in range(30):
                started = time.perf_counter()
                await source.query('sum(increase(http_requests_total{version="v1"}[15s]))')
                queries.append((time.perf_counter() - started) * 1000)
            for _ in range(10):
                started = time.perf_counter()
                await source.collect(window)
                collections.append((time.perf_counter() - started) * 1000)
            return queries, collections

        for backend in ("asyncio", "trio"):
            queries, collections = anyio.run(timings, backend=backend)
            result[f"{backend}_query_ms_median"] = round(statistics.median(queries), 1)
            result[f"{backend}_collect_ms_median"] = round(statistics.median(collections), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
