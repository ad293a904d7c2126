"""PrometheusSource's checks against a real Prometheus scraping two real demo apps: the
analysis interval against the targets' scrape interval (from the targets API), and the
warning for classic buckets too coarse where the requests fall.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from pathlib import Path

import attrs
import pytest

from canarykit import ConfigError, TrafficSplit, Window
from canarykit.metrics import PrometheusSource, http_queries
from canarykit.testing.lab import DemoApp, PrometheusServer

pytestmark = pytest.mark.anyio

# Not the 1 s the other tests use, so that a window of four of them is no default.
SCRAPE_INTERVAL = 2.0
LATENCY = 0.011  # an 11 ms median: prometheus_client's default buckets say (0.01, 0.025]
LOGGER = "canarykit.metrics.prometheus"


@attrs.frozen
class World:
    prometheus: PrometheusServer
    v1: DemoApp
    v2: DemoApp


@pytest.fixture(scope="module")
def world(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    directory: Path = tmp_path_factory.mktemp("prometheus-scrape")
    with (
        DemoApp(directory, version="v1", latency=LATENCY) as v1,
        DemoApp(directory, version="v2", latency=LATENCY) as v2,
        PrometheusServer(
            directory,
            targets=[v1.address, v2.address],
            scrape_interval=SCRAPE_INTERVAL,
            binary=prometheus_binary,
        ) as prometheus,
    ):
        prometheus.wait_for_target(v1.address)
        prometheus.wait_for_target(v2.address)
        yield World(prometheus=prometheus, v1=v1, v2=v2)


def source(world: World, **kwargs: object) -> PrometheusSource:
    return PrometheusSource(url=world.prometheus.url, stable="v1", canary="v2", **kwargs)  # type: ignore[arg-type]


async def test_windows_shorter_than_four_scrape_intervals_are_refused(world):
    with pytest.raises(ConfigError) as caught:
        await source(world).preflight(analysis_interval=7.5)
    error = caught.value
    assert error.field == "analysis_interval" and error.value == 7.5
    assert "at least 4 scrape intervals (8 s)" in str(error) and "every 2 s" in str(error)
    assert "job='app'" in str(error)
    assert world.v1.address in str(error) or world.v2.address in str(error)


async def test_windows_of_four_scrape_intervals_pass_and_both_targets_were_checked(world, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await source(world).preflight(analysis_interval=8.0)
    assert "covers at least 4 scrapes of the 2 targets behind the queries" in caplog.text
    assert "longest scrape interval 2 s" in caplog.text


async def test_series_that_no_target_is_behind_warn_and_go_on(world, caplog):
    queries = http_queries(matchers={"job": "elsewhere"})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await source(world, queries=queries).preflight(analysis_interval=1.0)
    assert "was not checked" in caplog.text and "no series with a job label" in caplog.text


def send(url: str, count: int) -> None:
    for _ in range(count):
        with urllib.request.urlopen(f"{url}/checkout", timeout=5) as response:
            response.read()


async def test_default_buckets_around_an_11_ms_median_are_warned_about_once(world, caplog):
    start = time.time()
    # increase() needs a sample before the traffic inside the window: wait for one.
    time.sleep(SCRAPE_INTERVAL + 0.5)
    send(world.v1.url, 40)
    send(world.v2.url, 20)
    end = time.time() + 2 * SCRAPE_INTERVAL + 0.5  # the last requests scraped
    window = Window(start=start, end=end, split=TrafficSplit(canary_percent=30))
    metrics = source(world, settle=0.5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = await metrics.collect(window)
        await metrics.collect(window)
    coarse = [r.getMessage() for r in caplog.records if "too coarse" in r.getMessage()]
    assert len(coarse) == 1
    assert coarse[0].startswith("latency buckets of http_request_duration_seconds are")
    assert "median lies in the bucket (0.01, 0.025] s, 2.5x wide" in coarse[0]
    assert first.stable.requests >= 40 and first.canary.requests >= 20
