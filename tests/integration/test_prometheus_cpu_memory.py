"""The CPU and memory queries of docs/adapters.md, run by PrometheusSource on a real Prometheus.

An exporter in this process serves, per pod, the process metrics a client library
exports (labelled with the version, as a relabelling rule would) and the cAdvisor and
kube-state-metrics series a Kubernetes cluster has: CPU counters that grow at known
rates and memory at known levels, plus the series the queries must leave out (a pause
container, the pod-level total, a sidecar, another namespace). Prometheus scrapes it
every second; the test reads one window through the templates exactly as the page gives
them (the Python ones quoted, the TOML block parsed from the page) and checks each
version's average per pod.

Tolerance: the counters are linear in time, so ``rate()`` is exact up to the few
milliseconds between a scrape's timestamp and the moment the exporter read its clock:
5% is generous. Memory levels are constant, so their averages are exact.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from canarykit import TrafficSplit, Window
from canarykit.metrics import PrometheusSource, http_queries
from canarykit.policy import load_policy
from canarykit.testing.lab import PrometheusServer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
SCRAPE_INTERVAL = 1.0
WINDOW = 6.0

# The page's templates for process metrics, quoted: the test fails if the page changes them.
CPU_PROCESS = 'avg(rate(process_cpu_seconds_total{job="shop",version="{arm}"}[{window}]))'
MEMORY_PROCESS = (
    'avg(avg_over_time(process_resident_memory_bytes{job="shop",version="{arm}"}[{window}]))'
)

# pod: (version, CPU cores, resident bytes); v1 runs two pods, v2 one.
PODS = {"v1-a": ("v1", 0.2, 1.0e8), "v1-b": ("v1", 0.3, 1.2e8), "v2-a": ("v2", 0.5, 2.0e8)}
EXPECTED = {"v1": (0.25, 1.1e8), "v2": (0.5, 2.0e8)}


def exposition(now: float, started: float) -> str:
    elapsed = now - started
    lines = []
    for pod, (version, cores, resident) in PODS.items():
        used = cores * elapsed
        lines += [
            f'http_requests_total{{version="{version}",code="200"}} {100 * elapsed:.3f}',
            f'process_cpu_seconds_total{{version="{version}",pod="{pod}"}} {used:.6f}',
            f'process_resident_memory_bytes{{version="{version}",pod="{pod}"}} {resident:.0f}',
            f'kube_pod_labels{{namespace="shop",pod="{pod}",label_version="{version}"}} 1',
        ]
        # The app's container, and what the queries must leave out: the pause container,
        # a sidecar and the pod-level total without a container label.
        for container, share in (("app", 1.0), ("POD", 0.01), ("istio-proxy", 0.2), ("", 1.21)):
            labels = f'namespace="shop",pod="{pod}",container="{container}"'
            lines += [
                f"container_cpu_usage_seconds_total{{{labels}}} {used * share:.6f}",
                f"container_memory_working_set_bytes{{{labels}}} {resident * share:.0f}",
            ]
    # A pod of another namespace with the same version label.
    lines += [
        'kube_pod_labels{namespace="other",pod="v2-a",label_version="v2"} 1',
        'container_cpu_usage_seconds_total{namespace="other",pod="v2-a",container="app"} '
        f"{9.0 * elapsed:.6f}",
        'container_memory_working_set_bytes{namespace="other",pod="v2-a",container="app"} 9e9',
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def scraped(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusServer, Window]]:
    started = time.time()

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(time.time(), started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        directory = tmp_path_factory.mktemp("prometheus-cpu")
        with PrometheusServer(
            directory,
            targets=[address],
            job="shop",
            scrape_interval=SCRAPE_INTERVAL,
            binary=prometheus_binary,
        ) as prometheus:
            prometheus.wait_for_target(address)
            time.sleep(WINDOW + SCRAPE_INTERVAL)
            end = time.time()
            window = Window(start=end - WINDOW, end=end, split=TrafficSplit(canary_percent=50))
            yield prometheus, window
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def check(observation_gauges: dict[str, dict[str, float]]) -> None:
    for version, (cores, resident) in EXPECTED.items():
        gauges = observation_gauges[version]
        assert gauges["cpu_cores"] == pytest.approx(cores, rel=0.05), version
        assert gauges["memory_bytes"] == pytest.approx(resident, rel=1e-9), version


def test_the_process_templates_are_the_pages() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"'{CPU_PROCESS}'" in text
    assert f"'{MEMORY_PROCESS}'" in text


async def test_process_metric_templates_read_each_versions_cpu_and_memory(
    scraped: tuple[PrometheusServer, Window],
) -> None:
    prometheus, window = scraped
    queries = http_queries(
        arm_label="version",
        matchers={"job": "shop"},
        latency_metric=None,
        gauges={"cpu_cores": CPU_PROCESS, "memory_bytes": MEMORY_PROCESS},
    )
    source = PrometheusSource(url=prometheus.url, stable="v1", canary="v2", queries=queries)
    observation = await source.collect(window)
    check({"v1": dict(observation.stable.gauges), "v2": dict(observation.canary.gauges)})


def kubernetes_block() -> str:
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"```toml\n(\[metrics\.http\.gauges\]\n.*?)```", text, re.S)
    assert found is not None, "the page's [metrics.http.gauges] block"
    return found.group(1)


async def test_kubernetes_templates_from_the_page_read_each_versions_pods(
    scraped: tuple[PrometheusServer, Window],
) -> None:
    prometheus, window = scraped
    block = kubernetes_block()
    assert set(tomllib.loads(block)["metrics"]["http"]["gauges"]) == {"cpu_cores", "memory_bytes"}
    policy = load_policy(
        f"""
[plan]
shape = "weights"
weights = [50]
hold = "1m"
analysis_interval = "6s"

[decider]
kind = "relative"
[[decider.metrics]]
metric = "cpu_cores"
max_ratio = 1.2

[metrics]
kind = "prometheus"
url = "{prometheus.url}"
stable = "v1"
canary = "v2"

[metrics.http]
arm_label = "version"
matchers = {{job = "shop"}}
latency_metric = false

{block}
"""
    )
    source = policy.deployment.build_metrics()
    observation = await source.collect(window)
    check({"v1": dict(observation.stable.gauges), "v2": dict(observation.canary.gauges)})
