"""SplitProbe: counting arms over real HTTP, converging, and refusing bad settings.

A small threaded HTTP server in the test process answers with a scripted version per
request, so the probe's counting and stopping rules are checked without nginx.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from canarykit import ConfigError, HeaderRoute, RouterError, TrafficSplit
from canarykit.routers import ProbeResult, SplitProbe, binomial_tolerance

pytestmark = pytest.mark.anyio


@contextmanager
def scripted_server(version_of) -> Iterator[tuple[str, list[int]]]:
    """Serve GET /: request n (from 0) answers with X-Version: version_of(n) (None: no header)."""
    seen: list[int] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):
            with lock:
                number = len(seen)
                seen.append(number)
            version = version_of(number)
            body = (version or "none").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if version is not None:
                self.send_header("X-Version", version)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def every_tenth(n):
    return "v2" if n % 10 == 9 else "v1"


async def test_counts_each_arm_by_the_version_header():
    with scripted_server(every_tenth) as (url, seen):
        result = await SplitProbe(url=url, requests=50).measure(TrafficSplit(canary_percent=10))
    assert (result.sent, result.canary, result.stable, result.unclassified) == (50, 5, 45, 0)
    assert result.observed_percent == 10.0
    assert result.error_points == 0.0
    assert result.within_tolerance
    assert len(seen) == 50


async def test_warmup_requests_are_sent_but_not_counted():
    # The first 7 answers are the canary's; only the 20 after them count.
    with scripted_server(lambda n: "v2" if n < 7 else "v1") as (url, seen):
        result = await SplitProbe(url=url, requests=20, warmup=7).measure(TrafficSplit())
    assert (result.canary, result.stable, result.total_requests) == (0, 20, 27)
    assert len(seen) == 27


async def test_check_raises_with_the_numbers_outside_the_tolerance():
    with scripted_server(every_tenth) as (url, _), pytest.raises(RouterError) as caught:
        await SplitProbe(url=url, requests=20, tolerance=1).check(TrafficSplit(canary_percent=50))
    message = str(caught.value)
    assert "canary answered 2 of 20 requests (10%)" in message
    assert "target 50%" in message and "off by 40 points" in message


async def test_check_returns_the_result_within_the_tolerance():
    with scripted_server(every_tenth) as (url, _):
        probe = SplitProbe(url=url, requests=20, tolerance=2)
        result = await probe.check(TrafficSplit(canary_percent=11))
    assert result.within_tolerance and result.error_points == pytest.approx(1.0)


async def test_converging_samples_batches_until_one_is_within_tolerance():
    # All canary for 60 requests (a balancer still on its old weights), then 10%.
    with scripted_server(lambda n: "v2" if n < 60 else every_tenth(n)) as (url, seen):
        probe = SplitProbe(url=url, requests=20, converge=True, max_requests=200)
        result = await probe.measure(TrafficSplit(canary_percent=10))
    assert result.within_tolerance
    assert (result.batches, result.total_requests, len(seen)) == (4, 80, 80)


async def test_converging_stops_at_max_requests_and_reports_the_last_batch():
    with scripted_server(lambda n: "v2") as (url, seen):
        probe = SplitProbe(url=url, requests=20, converge=True, max_requests=70)
        result = await probe.measure(TrafficSplit(canary_percent=10))
    assert not result.within_tolerance
    assert (result.batches, result.total_requests, len(seen)) == (3, 60, 60)
    assert result.canary == 20


async def test_without_converge_one_batch_decides():
    with scripted_server(lambda n: "v2") as (url, seen):
        result = await SplitProbe(url=url, requests=20).measure(TrafficSplit(canary_percent=10))
    assert not result.within_tolerance and result.batches == 1 and len(seen) == 20


async def test_answers_without_the_header_are_unclassified_and_fail_the_check():
    with scripted_server(lambda n: None if n % 10 == 3 else "v1") as (url, _):
        probe = SplitProbe(url=url, requests=10, tolerance=100)
        result = await probe.measure(TrafficSplit())
        assert result.unclassified == 1 and not result.within_tolerance
        with pytest.raises(RouterError, match="1 answers had no arm marker"):
            await probe.check(TrafficSplit())


async def test_a_classify_callable_replaces_the_header_rule():
    with scripted_server(every_tenth) as (url, _):
        probe = SplitProbe(url=url, requests=20, classify=lambda r: r.text == "v1")
        result = await probe.measure(TrafficSplit(canary_percent=90))
    assert (result.canary, result.stable) == (18, 2)


async def test_request_headers_are_sent_and_matching_routes_make_the_target_100():
    route = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    split = TrafficSplit(canary_percent=0, header_routes=[route])
    chrome = SplitProbe(url="http://127.0.0.1:1/", headers={"user-agent": "Mozilla Chrome/120"})
    firefox = SplitProbe(url="http://127.0.0.1:1/", headers={"User-Agent": "Firefox"})
    assert chrome.target_for(split) == 100.0
    assert firefox.target_for(split) == 0.0


async def test_a_refused_connection_is_a_router_error():
    from canarykit.testing.lab import free_port

    probe = SplitProbe(url=f"http://127.0.0.1:{free_port()}/", requests=5)
    with pytest.raises(RouterError, match="failed after 0 requests"):
        await probe.measure(TrafficSplit())


async def test_the_deadline_bounds_a_whole_measure():
    import time

    def slow(n):
        time.sleep(0.05)
        return "v1"

    with scripted_server(slow) as (url, seen), pytest.raises(RouterError, match=r"within 0\.2 s"):
        await SplitProbe(url=url, requests=1000, deadline=0.2).measure(TrafficSplit())
    assert len(seen) < 20


def test_result_describes_itself():
    result = ProbeResult(
        target_percent=10,
        sent=1000,
        canary=95,
        stable=905,
        unclassified=0,
        tolerance=1,
        total_requests=3000,
        batches=3,
    )
    assert result.error_points == pytest.approx(0.5)
    assert result.describe() == (
        "canary answered 95 of 1000 requests (9.5%), target 10%, off by 0.5 points "
        "(tolerance 1); 3 batches, 3000 requests in all"
    )


def test_binomial_tolerance_is_two_standard_deviations():
    assert binomial_tolerance(10, 1000) == pytest.approx(1.897, abs=1e-3)
    assert binomial_tolerance(0, 1000) == 0


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("url", {"url": "ftp://127.0.0.1/"}),
        ("url", {"url": "http://127.0.0.1/\nHost: x"}),
        ("url", {"url": "http:///path"}),
        ("requests", {"requests": 0}),
        ("requests", {"requests": 1.5}),
        ("requests", {"requests": 10**9}),
        ("tolerance", {"tolerance": -1}),
        ("tolerance", {"tolerance": float("nan")}),
        ("header", {"header": "X Version"}),
        ("canary_value", {"canary_value": ""}),
        ("classify", {"classify": "v2"}),
        ("headers['X\\nY']", {"headers": {"X\nY": "1"}}),
        ("headers['User-Agent']", {"headers": {"User-Agent": "a\nb"}}),
        ("warmup", {"warmup": -1}),
        ("timeout", {"timeout": 0}),
        ("deadline", {"deadline": float("inf")}),
        ("converge", {"converge": "yes"}),
        ("max_requests", {"max_requests": 5000}),
        ("max_requests", {"converge": True, "requests": 100, "max_requests": 50}),
    ],
)
def test_bad_settings_name_their_field(field, overrides):
    settings = {"url": "http://127.0.0.1:8080/"}
    settings.update(overrides)
    with pytest.raises(ConfigError) as caught:
        SplitProbe(**settings)
    assert caught.value.field == field


def test_the_request_budget_defaults_to_ten_batches_when_converging():
    assert SplitProbe(url="http://h/", requests=100).request_budget == 100
    assert SplitProbe(url="http://h/", requests=100, converge=True).request_budget == 1000
    probe = SplitProbe(url="http://h/", requests=100, converge=True, max_requests=250)
    assert probe.request_budget == 250
