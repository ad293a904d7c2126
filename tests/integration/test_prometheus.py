"""PrometheusSource against a real Prometheus scraping two real demo apps.

One traffic window is shared by the tests: v1 healthy, v2 with 10% errors and +200 ms.
The test knows exactly what it sent; Prometheus only sees counters at scrape times.

Tolerance, derived: traffic is sent only inside [start + I + 0.5, end - I - 0.5] for a
window of W seconds scraped every I seconds, so the first and last samples in the window
bracket all of it and the raw counter increase equals what was sent. `increase()` then
scales it from the sampled span (at least W - 2I) up to at most the whole window, so the
reported count lies in [sent, sent * W / (W - 2I)], plus one for rounding: with W = 15
and I = 1, at most 15.4% above, never below.
"""

# Imports internals on purpose: the bucket layout under LatencyHistogram.

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import attrs
import pytest

from canarykit import MetricsError, NoDataError, TrafficSplit, Window
from canarykit._histogram import bucket_bounds, bucket_index
from canarykit.metrics import PrometheusSource
from canarykit.testing.lab import DemoApp, PrometheusServer

pytestmark = pytest.mark.anyio

SCRAPE_INTERVAL = 1.0
WINDOW = 15.0
EXTRA_LATENCY = 0.2
MAX_PER_THREAD = 2_000


@attrs.frozen
class Traffic:
    prometheus: PrometheusServer
    window: Window
    sent: dict[str, Counter[int]]


def send_until(url: str, stop_at: float, pause: float, tally: Counter[int]) -> None:
    """Send GET requests one after another until `stop_at`; count the status codes."""
    for _ in range(MAX_PER_THREAD):
        if time.time() >= stop_at:
            return
        try:
            with urllib.request.urlopen(f"{url}/checkout", timeout=5) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        tally[code] += 1
        time.sleep(pause)


@pytest.fixture(scope="module")
def traffic(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    directory: Path = tmp_path_factory.mktemp("prometheus")
    with (
        DemoApp(directory, version="v1") as v1,
        DemoApp(directory, version="v2", error_rate=0.1) as v2,
        PrometheusServer(
            directory,
            targets=[v1.address, v2.address],
            scrape_interval=SCRAPE_INTERVAL,
            binary=prometheus_binary,
        ) as prometheus,
    ):
        prometheus.wait_for_target(v1.address)
        prometheus.wait_for_target(v2.address)
        v2.set_fault(error_rate=0.1, extra_latency=EXTRA_LATENCY)
        start = time.time()
        end = start + WINDOW
        begin_at = start + SCRAPE_INTERVAL + 0.5
        stop_at = end - SCRAPE_INTERVAL - 0.5
        sent: dict[str, Counter[int]] = {"v1": Counter(), "v2": Counter()}
        plan = [(v1.url, 0.03, "v1"), (v2.url, 0.0, "v2"), (v2.url, 0.0, "v2")]
        tallies = [Counter[int]() for _ in plan]
        threads = [
            threading.Thread(target=send_until, args=(url, stop_at, pause, tally))
            for (url, pause, _), tally in zip(plan, tallies, strict=True)
        ]
        time.sleep(max(0.0, begin_at - time.time()))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for (_, _, version), tally in zip(plan, tallies, strict=True):
            sent[version].update(tally)
        window = Window(start=start, end=end, split=TrafficSplit(canary_percent=50))
        time.sleep(max(0.0, end - time.time()))
        yield Traffic(prometheus=prometheus, window=window, sent=sent)


def source(prometheus: PrometheusServer, **kwargs: object) -> PrometheusSource:
    settings: dict[str, object] = {"stable": "v1", "canary": "v2", "settle": 0.5}
    settings.update(kwargs)
    return PrometheusSource(url=prometheus.url, **settings)  # type: ignore[arg-type]


def within_extrapolation(reported: int, sent: int) -> bool:
    ceiling = sent * WINDOW / (WINDOW - 2 * SCRAPE_INTERVAL) + 1
    return sent <= reported <= ceiling


async def test_requests_and_errors_match_what_was_sent(traffic):
    observation = await source(traffic.prometheus).collect(traffic.window)
    v1, v2 = traffic.sent["v1"], traffic.sent["v2"]
    assert v1[500] == 0 and v2[500] > 0 and sum(v1.values()) > 100
    assert within_extrapolation(observation.stable.requests, sum(v1.values()))
    assert observation.stable.errors == 0
    assert within_extrapolation(observation.canary.requests, sum(v2.values()))
    assert within_extrapolation(observation.canary.errors, v2[500])


async def test_canary_latency_lands_in_the_right_bucket(traffic):
    observation = await source(traffic.prometheus).collect(traffic.window)
    stable, canary = observation.stable, observation.canary
    assert stable.latency is not None and canary.latency is not None
    # Every v2 request took 0.2 s and a little more: the classic bucket (0.1, 0.25], which
    # maps to the native bucket holding 0.25.
    low, high = bucket_bounds(bucket_index(0.25))
    assert low < canary.p99 <= high
    assert EXTRA_LATENCY <= canary.mean_latency < 0.25  # exact mean, from _sum
    assert stable.p99 < canary.p99 / 2
    assert stable.p50 <= 0.01


async def test_a_label_value_without_series_is_no_data(traffic):
    with pytest.raises(NoDataError, match=r"canary \('v3'\)"):
        await source(traffic.prometheus, canary="v3").collect(traffic.window)


async def test_range_query_follows_the_counter(traffic):
    window = traffic.window
    series = await source(traffic.prometheus).query_range(
        'sum(http_requests_total{version="v1"})', start=window.start, end=window.end, step=1
    )
    values = [value for _, value in series[0].points]
    assert len(values) >= WINDOW - 1
    assert values == sorted(values)
    assert values[-1] - values[0] == sum(traffic.sent["v1"].values())


async def test_a_bad_query_is_refused_quoting_prometheus(traffic):
    with pytest.raises(MetricsError, match=r"HTTP 400.*bad_data.*parse error"):
        await source(traffic.prometheus).query("sum(http_requests_total")
