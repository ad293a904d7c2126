"""PrometheusSource against a fake Prometheus on loopback, query templates, bucket mapping."""

# Imports internals on purpose: the bucket layout under LatencyHistogram; the input checks; the
# metrics source's helpers.

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import (
    ConfigError,
    MetricsError,
    MetricsSource,
    NoDataError,
    TrafficSplit,
    Window,
)
from canarykit._histogram import bucket_bounds, bucket_index
from canarykit._safe import check_label_value
from canarykit.metrics import (
    BasicAuth,
    BearerAuth,
    PrometheusQueries,
    PrometheusSource,
    histogram_from_classic,
    http_queries,
)
from canarykit.metrics._promql import fill, promql_duration

pytestmark = pytest.mark.anyio

TOKEN = "tok-3f9a1c77e2"
PASSWORD = "pw-9b2e44d0c1"

# -- a fake Prometheus -------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False


def answer(data: Any, **extra: Any) -> Reply:
    return Reply(body=json.dumps({"status": "success", "data": data, **extra}).encode())


def vector(*items: tuple[dict[str, str], Any]) -> Reply:
    result = [{"metric": labels, "value": [1700000000.0, value]} for labels, value in items]
    return answer({"resultType": "vector", "result": result})


def refused(status: int, error_type: str, error: str) -> Reply:
    body = {"status": "error", "errorType": error_type, "error": error}
    return Reply(status=status, body=json.dumps(body).encode())


@attrs.frozen
class Seen:
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    at: float


class FakePrometheus:
    """Answers each request with `respond(path, form, headers)` (a GET's parameters as the
    form); records every request.
    """

    def __init__(self) -> None:
        self.respond: Callable[[str, dict[str, str], dict[str, str]], Reply] = lambda *_: vector()
        self.seen: list[Seen] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                # GET sends its parameters in the path: the fake answers them as a form.
                path, _, raw = self.path.partition("?")
                self.answer(path, raw)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.answer(self.path, self.rfile.read(length).decode())

            def answer(self, path: str, raw: str) -> None:
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                headers = dict(self.headers.items())
                fake.seen.append(Seen(path, form, headers, time.time()))
                reply = fake.respond(path, form, headers)
                if reply.hang:
                    fake.release.wait(10)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 64  # collect() sends ~10 queries at once; the default is 5

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def queries(self) -> list[str]:
        return [seen.form.get("query", "") for seen in self.seen]


@pytest.fixture
def fake():
    server = FakePrometheus()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()
    server.thread.join(5)


# Simple templates, so that the fake can tell the queries and arms apart.
SIMPLE = PrometheusQueries(
    requests='requests{arm="{arm}"}[{window}]',
    errors='errors{arm="{arm}"}[{window}]',
    latency_buckets='buckets{arm="{arm}"}[{window}]',
    latency_sum='latency_sum{arm="{arm}"}[{window}]',
    gauges={"cpu": 'cpu{arm="{arm}"}'},
)
_KEY = re.compile(r'(\w+)\{arm="([^"]*)"\}')


def table(replies: dict[tuple[str, str], Reply]) -> Callable[..., Reply]:
    """Answer by (query kind, arm label value); anything unlisted answers an empty vector."""

    def respond(path: str, form: dict[str, str], headers: dict[str, str]) -> Reply:
        match = _KEY.match(form.get("query", ""))
        return replies.get(match.groups() if match else ("", ""), vector())

    return respond


def healthy(**overrides: Reply) -> dict[tuple[str, str], Reply]:
    buckets_v1 = vector(
        ({"le": "0.005"}, "80.4"), ({"le": "0.01"}, "99.6"), ({"le": "+Inf"}, "100")
    )
    buckets_v2 = vector(({"le": "0.005"}, "1"), ({"le": "0.25"}, "10"), ({"le": "+Inf"}, "10"))
    replies = {
        ("requests", "v1"): vector(({}, "100.4")),
        ("errors", "v1"): vector(({}, "0.6")),
        ("buckets", "v1"): buckets_v1,
        ("latency_sum", "v1"): vector(({}, "0.4")),
        ("cpu", "v1"): vector(({}, "0.25")),
        ("requests", "v2"): vector(({}, "10")),
        ("errors", "v2"): vector(({}, "2")),
        ("buckets", "v2"): buckets_v2,
        ("latency_sum", "v2"): vector(({}, "2.1")),
        ("cpu", "v2"): vector(({}, "0.5")),
    }
    for name, reply in overrides.items():
        kind, arm = name.rsplit("_", 1)
        replies[(kind, arm)] = reply
    return replies


def source(url: str, **kwargs: Any) -> PrometheusSource:
    settings: dict[str, Any] = {
        "stable": "v1",
        "canary": "v2",
        "queries": SIMPLE,
        "timeout": 1.0,
        "backoff": 0.01,
    }
    settings.update(kwargs)
    return PrometheusSource(url=url, **settings)


def window(end: float | None = None, duration: float = 30.0) -> Window:
    end = time.time() - 1 if end is None else end
    return Window(start=end - duration, end=end, split=TrafficSplit(canary_percent=10))


# -- collecting a window -------------------------------------------------------------------


async def test_collect_maps_answers_into_an_observation(fake):
    fake.respond = table(healthy())
    w = window()
    observation = await source(fake.url).collect(w)
    stable, canary = observation.stable, observation.canary
    assert (observation.start, observation.end) == (w.start, w.end)
    assert (stable.requests, stable.errors) == (100, 1)
    assert (canary.requests, canary.errors) == (10, 2)
    assert stable.latency is not None and canary.latency is not None
    assert stable.latency.count == 100 and stable.latency.sum == pytest.approx(0.4)
    assert dict(stable.latency.items()) == {bucket_index(0.005): 80, bucket_index(0.01): 20}
    assert dict(canary.latency.items()) == {bucket_index(0.005): 1, bucket_index(0.25): 9}
    assert (stable.gauges["cpu"], canary.gauges["cpu"]) == (0.25, 0.5)


async def test_collect_fills_the_templates_and_evaluates_at_the_window_end(fake):
    fake.respond = table(healthy())
    w = window(duration=90.5)
    await source(fake.url).collect(w)
    assert {seen.path for seen in fake.seen} == {"/api/v1/query"}
    expected = [
        f'{kind}{{arm="{arm}"}}[90500ms]'
        for kind in ("requests", "errors", "buckets", "latency_sum")
        for arm in ("v1", "v2")
    ]
    assert sorted(fake.queries()) == sorted([*expected, 'cpu{arm="v1"}', 'cpu{arm="v2"}'])
    assert {seen.form["time"] for seen in fake.seen} == {f"{w.end:.3f}"}
    assert {seen.form["timeout"] for seen in fake.seen} == {"1"}


async def test_ready_made_queries_are_sent_as_written(fake):
    def respond(path: str, form: dict[str, str], headers: dict[str, str]) -> Reply:
        if "_bucket" in form["query"]:
            return vector(({"le": "0.1"}, "5"), ({"le": "+Inf"}, "5"))
        return vector(({}, "5"))

    fake.respond = respond
    src = PrometheusSource(url=fake.url + "/prom/", stable="v1", canary="v2")
    await src.collect(window(duration=30))
    assert {seen.path for seen in fake.seen} == {"/prom/api/v1/query"}
    assert 'sum(increase(http_requests_total{version="v2",code=~"5.."}[30s]))' in fake.queries()
    assert (
        'sum by (le) (increase(http_request_duration_seconds_bucket{version="v1"}[30s]))'
        in fake.queries()
    )


async def test_an_arm_without_requests_series_raises_no_data(fake):
    fake.respond = table(healthy(requests_v2=vector()))
    with pytest.raises(NoDataError, match=r"canary \('v2'\)"):
        await source(fake.url).collect(window())


async def test_no_error_series_means_zero_errors(fake):
    fake.respond = table(healthy(errors_v1=vector()))
    observation = await source(fake.url).collect(window())
    assert observation.stable.errors == 0


async def test_errors_never_exceed_requests(fake):
    fake.respond = table(healthy(requests_v2=vector(({}, "9.6")), errors_v2=vector(({}, "10.4"))))
    observation = await source(fake.url).collect(window())
    assert (observation.canary.requests, observation.canary.errors) == (10, 10)


async def test_missing_or_nan_gauges_are_no_reading(fake):
    fake.respond = table(healthy(cpu_v1=vector(), cpu_v2=vector(({}, "NaN"))))
    observation = await source(fake.url).collect(window())
    assert math.isnan(observation.stable.gauges["cpu"])
    assert math.isnan(observation.canary.gauges["cpu"])


async def test_no_bucket_series_means_no_latency(fake):
    fake.respond = table(healthy(buckets_v2=vector(), latency_sum_v2=vector()))
    observation = await source(fake.url).collect(window())
    assert observation.canary.latency is None and observation.canary.p99 is None


@pytest.mark.parametrize(
    ("reply", "quoted"),
    [
        (vector(({}, "NaN")), "nan"),
        (vector(({}, "+Inf")), "inf"),
        (vector(({}, "-3")), "negative"),
        (vector(({}, "many")), "'many'"),
        (vector(({}, True)), "True"),
        (vector(({"a": "1"}, "1"), ({"a": "2"}, "2")), "aggregate"),
        (answer({"resultType": "matrix", "result": []}), "resultType is 'matrix'"),
        (answer({"resultType": "string", "result": [0, "x"]}), "resultType is 'string'"),
        (answer({"resultType": "vector", "result": [{"metric": {}}]}), "no value"),
        (Reply(body=b"<html>oops</html>"), "not JSON: b'<html>oops</html>'"),
        (Reply(body=b"[1, 2]"), "not a JSON object"),
        (Reply(body=b'{"status": "weird"}'), "status is 'weird'"),
    ],
)
async def test_malformed_answers_are_metrics_errors_quoting_what_was_wrong(fake, reply, quoted):
    fake.respond = table(healthy(requests_v1=reply))
    with pytest.raises(MetricsError) as caught:
        await source(fake.url).collect(window())
    assert not isinstance(caught.value, NoDataError)
    assert quoted in str(caught.value)
    assert "requests" in str(caught.value) and "'v1'" in str(caught.value)


async def test_quoted_garbage_is_truncated(fake):
    fake.respond = lambda *_: Reply(body=b"x" * 100_000)
    with pytest.raises(MetricsError, match="not JSON") as caught:
        await source(fake.url).query("up")
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(
    ("buckets", "quoted"),
    [
        (vector(({"le": "0.1"}, "1"), ({"le": "0.1"}, "2")), "sum by (le)"),
        (vector(({"instance": "a"}, "1")), "no 'le' label"),
        (vector(({"le": "soon"}, "1")), "'soon'"),
        (vector(({"le": "0.1"}, "NaN")), "nan"),
        (vector(({"le": "+Inf"}, "3")), "finite upper bound"),
    ],
)
async def test_malformed_buckets_are_metrics_errors(fake, buckets, quoted):
    fake.respond = table(healthy(buckets_v2=buckets))
    with pytest.raises(MetricsError, match=re.escape(quoted)):
        await source(fake.url).collect(window())


async def test_collect_waits_for_settle_after_the_window_end(fake):
    fake.respond = table(healthy())
    w = window(end=time.time() + 0.2)
    await source(fake.url, settle=0.3).collect(w)
    assert min(seen.at for seen in fake.seen) >= w.end + 0.3


async def test_source_is_a_metrics_source(fake):
    assert isinstance(source(fake.url), MetricsSource)


# -- HTTP errors, retries and timeouts -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"), [(400, "bad_data"), (422, "execution"), (404, "not_found")]
)
async def test_a_refused_query_is_not_retried_and_quotes_prometheus(fake, status, error_type):
    fake.respond = lambda *_: refused(status, error_type, 'parse error at char 4: unexpected "}"')
    with pytest.raises(MetricsError) as caught:
        await source(fake.url, attempts=3).query("up{")
    message = str(caught.value)
    assert f"HTTP {status}" in message and error_type in message
    assert 'parse error at char 4: unexpected "}"' in message
    assert len(fake.seen) == 1


async def test_an_error_status_in_a_200_answer_is_a_metrics_error(fake):
    fake.respond = lambda *_: Reply(
        body=json.dumps({"status": "error", "errorType": "internal", "error": "boom"}).encode()
    )
    with pytest.raises(MetricsError, match="internal: boom"):
        await source(fake.url).query("up")


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_are_retried_until_an_answer(fake, status):
    replies = [Reply(status=status, body=b"busy"), Reply(status=status), vector(({}, "7"))]
    fake.respond = lambda *_: replies.pop(0)
    samples = await source(fake.url, attempts=3).query("up")
    assert [sample.value for sample in samples] == [7.0]
    assert len(fake.seen) == 3


async def test_persistent_server_errors_give_up_after_the_attempts(fake):
    fake.respond = lambda *_: refused(503, "timeout", "query timed out in expression evaluation")
    with pytest.raises(MetricsError) as caught:
        await source(fake.url, attempts=3).query("up")
    assert "gave up after 3 attempts" in str(caught.value)
    assert "HTTP 503" in str(caught.value) and "query timed out" in str(caught.value)
    assert len(fake.seen) == 3


async def test_a_hanging_server_times_out_and_is_retried(fake):
    replies = [Reply(hang=True), vector(({}, "1"))]
    fake.respond = lambda *_: replies.pop(0)
    samples = await source(fake.url, timeout=0.2, attempts=2).query("up")
    assert [sample.value for sample in samples] == [1.0]
    assert len(fake.seen) == 2


async def test_a_server_that_always_hangs_is_a_metrics_error(fake):
    fake.respond = lambda *_: Reply(hang=True)
    with pytest.raises(MetricsError, match=r"gave up after 2 attempts.*no answer within 0.2 s"):
        await source(fake.url, timeout=0.2, attempts=2).query("up")


async def test_the_deadline_bounds_all_attempts(fake):
    fake.respond = lambda *_: Reply(hang=True)
    with pytest.raises(MetricsError, match=r"within 0\.5 s") as caught:
        await source(fake.url, timeout=0.2, attempts=100, deadline=0.5).query("up")
    tried = int(re.search(r"after (\d+) attempt", str(caught.value)).group(1))
    assert 1 <= tried <= 3 and len(fake.seen) == tried


async def test_a_hanging_query_fails_the_whole_collect(fake):
    replies = healthy(errors_v2=Reply(hang=True))
    fake.respond = table(replies)
    with pytest.raises(MetricsError, match=r"errors for the canary.*no answer"):
        await source(fake.url, timeout=0.2, attempts=1).collect(window())


async def test_connection_refused_is_retried_then_a_metrics_error():
    from canarykit.testing.lab import free_port

    src = source(f"http://127.0.0.1:{free_port()}", attempts=2)
    with pytest.raises(MetricsError, match=r"gave up after 2 attempts.*ConnectError"):
        await src.query("up")


async def test_a_redirect_is_not_followed(fake):
    fake.respond = lambda *_: Reply(status=302, headers=(("Location", "http://elsewhere/"),))
    with pytest.raises(MetricsError, match="HTTP 302"):
        await source(fake.url).query("up")
    assert len(fake.seen) == 1


async def test_prometheus_warnings_are_logged(fake, caplog):
    fake.respond = lambda *_: answer(
        {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]},
        warnings=["results truncated"],
    )
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url).query("up")
    assert "results truncated" in caplog.text


# -- plain instant and range queries ----------------------------------------------------


async def test_query_returns_samples_and_an_empty_answer_is_no_data(fake):
    fake.respond = lambda *_: vector(({"job": "app"}, "1"), ({"job": "db"}, "0"))
    samples = await source(fake.url).query("up", at=1700000000.5)
    assert [(dict(s.labels), s.value) for s in samples] == [
        ({"job": "app"}, 1.0),
        ({"job": "db"}, 0.0),
    ]
    assert fake.seen[0].form["time"] == "1700000000.500"
    fake.respond = lambda *_: vector()
    with pytest.raises(NoDataError, match="'up'"):
        await source(fake.url).query("up")


async def test_a_scalar_answer_is_one_sample(fake):
    fake.respond = lambda *_: answer({"resultType": "scalar", "result": [1700000000, "3.5"]})
    samples = await source(fake.url).query("3.5")
    assert [(dict(s.labels), s.value) for s in samples] == [({}, 3.5)]


async def test_query_range_reads_a_matrix(fake):
    result = [
        {"metric": {"version": "v1"}, "values": [[100, "1"], [110, "3"]]},
        {"metric": {"version": "v2"}, "values": [[100, "0"], [110, "NaN"]]},
    ]
    fake.respond = lambda *_: answer({"resultType": "matrix", "result": result})
    series = await source(fake.url).query_range("x", start=100, end=110, step=10)
    assert [dict(s.labels) for s in series] == [{"version": "v1"}, {"version": "v2"}]
    assert series[0].points == ((100.0, 1.0), (110.0, 3.0))
    assert math.isnan(series[1].points[1][1])
    seen = fake.seen[0]
    assert seen.path == "/api/v1/query_range"
    assert (seen.form["start"], seen.form["end"], seen.form["step"]) == (
        "100.000",
        "110.000",
        "10.0",
    )


@pytest.mark.parametrize(
    ("reply", "error", "quoted"),
    [
        (answer({"resultType": "matrix", "result": []}), NoDataError, "no series"),
        (vector(({}, "1")), MetricsError, "resultType is 'vector'"),
        (answer({"resultType": "matrix", "result": [{"metric": {}}]}), MetricsError, "no values"),
        (
            answer({"resultType": "matrix", "result": [{"metric": {}, "values": [[1]]}]}),
            MetricsError,
            "[time, value]",
        ),
        (refused(400, "bad_data", "exceeded maximum resolution"), MetricsError, "bad_data"),
    ],
)
async def test_query_range_classifies_answers(fake, reply, error, quoted):
    fake.respond = lambda *_: reply
    with pytest.raises(error) as caught:
        await source(fake.url).query_range("x", start=0, end=60, step=15)
    assert quoted in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": 10, "end": 5, "step": 1}, "end"),
        ({"start": 0, "end": 5, "step": 0}, "step"),
        ({"start": math.nan, "end": 5, "step": 1}, "start"),
    ],
)
async def test_query_range_refuses_bad_spans(kwargs, field):
    with pytest.raises(ConfigError) as caught:
        await source("http://127.0.0.1:9").query_range("x", **kwargs)
    assert caught.value.field == field


# -- authentication and secrecy -------------------------------------------------------------


async def test_bearer_token_and_headers_are_sent(fake):
    fake.respond = lambda *_: vector(({}, "1"))
    src = source(fake.url, auth=BearerAuth(token=TOKEN), headers={"X-Scope-OrgID": "tenant-1"})
    await src.query("up")
    headers = fake.seen[0].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Scope-OrgID"] == "tenant-1"


async def test_basic_auth_is_sent(fake):
    import base64

    fake.respond = lambda *_: vector(({}, "1"))
    await source(fake.url, auth=BasicAuth(username="grafana", password=PASSWORD)).query("up")
    expected = base64.b64encode(f"grafana:{PASSWORD}".encode()).decode()
    assert fake.seen[0].headers["Authorization"] == f"Basic {expected}"


def test_secrets_are_not_in_repr_or_str():
    src = source(
        "http://127.0.0.1:9",
        auth=BearerAuth(token=TOKEN),
        headers={"X-Api-Key": PASSWORD},
    )
    basic = BasicAuth(username="grafana", password=PASSWORD)
    for text in (repr(src), str(src), repr(src.auth), repr(basic), str(basic)):
        assert TOKEN not in text and PASSWORD not in text
    assert "***" in repr(src) and "X-Api-Key" in repr(src)


def echo_authorization(status: int) -> Callable[..., Reply]:
    """A misbehaving server that quotes the request's credentials back."""

    def respond(path: str, form: dict[str, str], headers: dict[str, str]) -> Reply:
        text = f"denied for {headers.get('Authorization')} {headers.get('X-Api-Key')}"
        if status == 200:
            return Reply(body=text.encode())
        return refused(status, "bad_data", text)

    return respond


@pytest.mark.parametrize("status", [200, 400, 401, 500])
@pytest.mark.parametrize(
    "auth", [BearerAuth(token=TOKEN), BasicAuth(username="u", password=PASSWORD)], ids=repr
)
async def test_secrets_never_reach_errors_or_logs(fake, caplog, status, auth):
    import base64

    fake.respond = echo_authorization(status)
    src = source(fake.url, auth=auth, headers={"X-Api-Key": PASSWORD + "x"}, attempts=2)
    with caplog.at_level(logging.DEBUG), pytest.raises(MetricsError) as caught:
        await src.query("up")
    basic = base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    texts = [
        str(caught.value),
        repr(caught.value),
        "".join(traceback.format_exception(caught.type, caught.value, caught.tb)),
        caplog.text,
        *(record.getMessage() for record in caplog.records),
    ]
    assert "denied for" in str(caught.value)  # the server's text is quoted, blanked out
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    for text in texts:
        assert TOKEN not in text and PASSWORD not in text and basic not in text


async def test_auth_failure_says_to_check_the_credentials(fake):
    fake.respond = lambda *_: Reply(status=401, body=b"Unauthorized")
    with pytest.raises(MetricsError, match=r"HTTP 401 \(check the credentials\)"):
        await source(fake.url, auth=BearerAuth(token=TOKEN)).query("up")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: BearerAuth(token=TOKEN + "\n"), "auth.token"),
        (lambda: BasicAuth(username="u", password=PASSWORD + "\r\n"), "auth.password"),
        (lambda: source("http://127.0.0.1:9", headers={"X-Key": PASSWORD + "\n"}), "headers"),
        (lambda: source(f"http://u:{PASSWORD}@127.0.0.1:9"), "url"),
    ],
)
def test_bad_secrets_are_refused_without_quoting_them(build, field):
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.field.startswith(field)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)
    assert PASSWORD not in repr(caught.value.value) and TOKEN not in repr(caught.value.value)


def test_missing_httpx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ModuleNotFoundError, match=r"canarykit\[prometheus\]"):
        source("http://127.0.0.1:9")


# -- settings and templates -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["stable", "canary"])
@pytest.mark.parametrize("value", ['v1"', "v1\\", "v1\n", "v1}", "v1{", "v1'", "v1`", "", 3])
def test_label_values_that_could_leave_their_quotes_are_refused(field, value):
    values = {"stable": "v1", "canary": "v2", field: value}
    with pytest.raises(ConfigError) as caught:
        PrometheusSource(url="http://127.0.0.1:9", **values)
    assert caught.value.field == field


def test_stable_and_canary_must_differ():
    with pytest.raises(ConfigError, match="canary"):
        PrometheusSource(url="http://127.0.0.1:9", stable="v1", canary="v1")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://prom:21"}, "url"),
        ({"url": "http://prom:9090/?x=1"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http://prom:99999"}, "url"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.0}, "attempts"),
        ({"backoff": -1}, "backoff"),
        ({"deadline": 0}, "deadline"),
        ({"settle": -0.1}, "settle"),
        ({"verify": "yes"}, "verify"),
        ({"auth": ("user", "pw")}, "auth"),
        ({"queries": {"requests": "up"}}, "queries"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs, field):
    settings: dict[str, Any] = {"url": "http://127.0.0.1:9", "stable": "v1", "canary": "v2"}
    settings.update(kwargs)
    with pytest.raises(ConfigError) as caught:
        PrometheusSource(**settings)
    assert caught.value.field == field
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ('x{version="{arms}"}', "unknown placeholder {arms}"),
        ('x{version="{Arm}"}', "unknown placeholder {Arm}"),
        ("x{job={arm}}", "must be inside a quoted string"),
        ("x[{window}] or {arm}", "must be inside a quoted string"),
        ('x{version="{arm}}', "unterminated string"),
        ('x{version="a\nb"}', "line break inside a quoted string"),
        ("x\x00", "control characters"),
        ("   ", "non-empty"),
        (42, "non-empty"),
    ],
)
@pytest.mark.parametrize("field", ["requests", "errors", "latency_buckets", "latency_sum"])
def test_bad_templates_are_refused_naming_the_field(template, problem, field):
    templates = {"requests": "a", "errors": "b", "latency_buckets": "c", "latency_sum": "d"}
    templates[field] = template
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        PrometheusQueries(**templates)
    assert caught.value.field == field


@pytest.mark.parametrize("field", ["requests", "errors"])
def test_requests_and_errors_queries_are_required(field):
    templates: dict[str, Any] = {"requests": "a", "errors": "b", field: None}
    with pytest.raises(ConfigError) as caught:
        PrometheusQueries(**templates)
    assert caught.value.field == field


def test_bad_gauge_templates_are_refused_naming_the_gauge():
    with pytest.raises(ConfigError) as caught:
        PrometheusQueries(requests="a", errors="b", gauges={"cpu": "cpu{pod={arm}}"})
    assert caught.value.field == "gauges['cpu']"
    with pytest.raises(ConfigError) as caught:
        PrometheusQueries(requests="a", errors="b", gauges={"p99": "x"})
    assert caught.value.field == "gauges['p99']"


def test_latency_sum_needs_buckets():
    with pytest.raises(ConfigError) as caught:
        PrometheusQueries(requests="a", errors="b", latency_sum="c")
    assert caught.value.field == "latency_sum"


def test_promql_braces_strings_and_comments_are_left_alone():
    template = (
        "# rate of {arm} traffic, see the 'runbook'\n"
        'sum(rate(x{version="{arm}",path=~"/a{2}",raw=`{arm}`,q="say \\"{arm}\\""}[{window}]))'
    )
    assert fill("requests", template, arm="v2", seconds=60) == (
        "# rate of {arm} traffic, see the 'runbook'\n"
        'sum(rate(x{version="v2",path=~"/a{2}",raw=`v2`,q="say \\"v2\\""}[60s]))'
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(30, "30s"), (29.9996, "30s"), (1.5, "1500ms"), (0.0001, "1ms")]
)
def test_window_durations_are_promql_durations(seconds, text):
    assert promql_duration(seconds) == text


_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


@given(st.text(min_size=1, max_size=30))
def test_a_checked_label_value_never_leaves_its_quoted_string(value):
    try:
        check_label_value("arm", value)
    except ConfigError:
        return
    template = 'sum(increase(http_requests_total{version="{arm}",code=~"5.."}[{window}]))'
    query = fill("errors", template, arm=value, seconds=30)
    benign = fill("errors", template, arm="v", seconds=30)
    # The same query with every string literal blanked is the same for any accepted value.
    assert _STRING.sub('""', query) == _STRING.sub('""', benign)
    assert f'version="{value}"' in query


def test_http_queries_default_shape():
    queries = http_queries()
    assert queries.requests == 'sum(increase(http_requests_total{version="{arm}"}[{window}]))'
    assert queries.errors == (
        'sum(increase(http_requests_total{version="{arm}",code=~"5.."}[{window}]))'
    )
    assert queries.latency_buckets == (
        'sum by (le) (increase(http_request_duration_seconds_bucket{version="{arm}"}[{window}]))'
    )
    assert queries.latency_sum == (
        'sum(increase(http_request_duration_seconds_sum{version="{arm}"}[{window}]))'
    )


def test_http_queries_with_other_labels_and_no_latency():
    queries = http_queries(
        arm_label="track",
        requests_metric="rpc_calls_total",
        status_label="status",
        error_status="5..|429",
        latency_metric=None,
        matchers={"job": "shop", "namespace": "prod"},
        gauges={"cpu": 'avg(rate(cpu_seconds_total{track="{arm}"}[{window}]))'},
    )
    assert queries.errors == (
        'sum(increase(rpc_calls_total{track="{arm}",job="shop",namespace="prod",'
        'status=~"5..|429"}[{window}]))'
    )
    assert queries.latency_buckets is None and queries.latency_sum is None
    assert set(queries.gauges) == {"cpu"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arm_label": "version}"}, "arm_label"),
        ({"arm_label": "9lives"}, "arm_label"),
        ({"status_label": 'code"'}, "status_label"),
        ({"requests_metric": "http requests"}, "requests_metric"),
        ({"latency_metric": "x{}"}, "latency_metric"),
        ({"error_status": '5.."} or vector(1) #'}, "error_status"),
        ({"error_status": "5..\\"}, "error_status"),
        ({"matchers": {"job": 'shop"} or up{x="'}}, "matchers['job']"),
        ({"matchers": {"job=~": "shop"}}, "matchers"),
        ({"matchers": {"version": "v1"}}, "matchers"),
        ({"status_label": "version"}, "status_label"),
    ],
)
def test_http_queries_refuse_unsafe_names_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as caught:
        http_queries(**kwargs)
    assert caught.value.field == field


# -- classic buckets into native buckets -----------------------------------------------------


def test_each_classic_bucket_lands_in_the_native_bucket_of_its_upper_bound():
    histogram = histogram_from_classic(
        [(0.005, 10), (0.01, 10), (0.1, 30), (float("inf"), 30)], sum=1.0
    )
    assert dict(histogram.items()) == {bucket_index(0.005): 10, bucket_index(0.1): 20}
    assert histogram.count == 30 and histogram.sum == 1.0


def test_the_overflow_bucket_lands_just_above_the_highest_bound():
    histogram = histogram_from_classic({5.0: 90, float("inf"): 100, 0.5: 50})
    assert dict(histogram.items()) == {
        bucket_index(0.5): 50,
        bucket_index(5.0): 40,
        bucket_index(5.0) + 1: 10,
    }
    assert 5.0 < histogram.quantile(0.99) <= bucket_bounds(bucket_index(5.0) + 1)[1]


def test_float_counts_are_rounded_and_made_monotone():
    # increase() extrapolates each bucket on its own: 0.25's estimate came out below 0.1's.
    histogram = histogram_from_classic({0.1: 10.4, 0.25: 9.8, 0.5: 12.6, float("inf"): 12.7})
    assert dict(histogram.items()) == {bucket_index(0.1): 10, bucket_index(0.5): 3}


def test_an_empty_window_gives_an_empty_histogram_with_zero_sum():
    histogram = histogram_from_classic({0.1: 0.2, float("inf"): 0.3}, sum=0.0004)
    assert histogram.count == 0 and histogram.sum == 0.0
    assert histogram_from_classic({}).count == 0


@pytest.mark.parametrize(
    ("buckets", "kwargs", "field"),
    [
        ({-0.1: 1}, {}, "le"),
        ({math.nan: 1}, {}, "le"),
        ({0.1: -1}, {}, "buckets[0.1]"),
        ({0.1: math.nan}, {}, "buckets[0.1]"),
        ({float("inf"): 5}, {}, "buckets"),
        ({0.1: 5}, {"sum": -1.0}, "sum"),
        ({0.1: 5}, {"sum": math.inf}, "sum"),
        ([(0.1, 1), (0.1, 2)], {}, "le"),
        ([(0.1,)], {}, "buckets[0]"),
    ],
)
def test_bad_classic_buckets_are_refused(buckets, kwargs, field):
    with pytest.raises(ConfigError) as caught:
        histogram_from_classic(buckets, **kwargs)
    assert caught.value.field == field


DEMO_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@given(
    st.lists(st.floats(min_value=0.0, max_value=4.9), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_quantiles_from_classic_buckets_are_bounded_as_documented(samples, q):
    cumulative = {le: sum(1 for s in samples if s <= le) for le in DEMO_BOUNDS}
    cumulative[float("inf")] = len(samples)
    histogram = histogram_from_classic(cumulative, sum=math.fsum(samples))
    ordered = sorted(samples)
    true = ordered[max(1, math.ceil(q * len(ordered))) - 1]
    estimate = histogram.quantile(q)
    le = min(bound for bound in DEMO_BOUNDS if true <= bound)
    lower, upper = bucket_bounds(bucket_index(le))
    # In the native bucket holding the classic upper bound of the true quantile's bucket:
    assert lower <= estimate <= upper
    # hence at most one native bucket below the true value, at most one above that bound.
    assert estimate >= true * 2 ** (-1 / 8) - 1e-12
    assert estimate <= le * 2 ** (1 / 8)
    assert histogram.count == len(samples)


# -- the test launcher's configuration ---------------------------------------------------------


def test_prometheus_server_writes_a_json_config_for_its_targets(tmp_path):
    from canarykit.testing.lab import PrometheusServer

    server = PrometheusServer(
        tmp_path,
        targets={"127.0.0.1:8001": {"track": "stable"}, "127.0.0.1:8002": {}},
        scrape_interval=0.5,
        binary="/nonexistent/prometheus",
    )
    config = json.loads(server.config_path.read_text())
    assert config["global"]["scrape_interval"] == "500ms"
    assert config["global"]["scrape_timeout"] == "500ms"
    job = config["scrape_configs"][0]
    assert job["job_name"] == "app"
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"track": "stable"}},
        {"targets": ["127.0.0.1:8002"], "labels": {}},
    ]
    assert server.url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"targets": ["127.0.0.1:80\n"]}, "targets"),
        ({"targets": ['127.0.0.1:80"']}, "targets"),
        ({"targets": ["unix:/tmp/app.sock"]}, "targets"),
        ({"targets": "127.0.0.1:80"}, "targets"),
        ({"targets": {"127.0.0.1:80": {"bad-name": "x"}}}, "targets['127.0.0.1:80']"),
        ({"targets": {"127.0.0.1:80": {"track": 'x"\n'}}}, "targets['127.0.0.1:80']['track']"),
        ({"targets": [], "scrape_interval": 0}, "scrape_interval"),
        ({"targets": [], "job": "app\njob"}, "job"),
    ],
)
def test_prometheus_server_refuses_unsafe_settings(tmp_path, kwargs, field):
    from canarykit.testing.lab import PrometheusServer

    with pytest.raises(ConfigError) as caught:
        PrometheusServer(tmp_path, binary="/nonexistent/prometheus", **kwargs)
    assert caught.value.field == field


# -- the scrape interval, checked before traffic moves ----------------------------------


def target(job: str, instance: str, interval: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {"labels": {"job": job, "instance": instance}, "health": "up"}
    if interval is not None:
        found["scrapeInterval"] = interval
    return found


def scrape_world(
    behind: list[dict[str, str]], targets: list[dict[str, Any]] | Reply
) -> Callable[..., Reply]:
    """Answer the grouped series query with `behind` and the targets API with `targets`."""

    def respond(path: str, form: dict[str, str], headers: dict[str, str]) -> Reply:
        if path == "/api/v1/targets":
            if isinstance(targets, Reply):
                return targets
            return answer({"activeTargets": targets, "droppedTargets": []})
        return vector(*((labels, "1") for labels in behind))

    return respond


SHOP = [
    target("shop", "10.0.0.1:8080", "15s"),
    target("shop", "10.0.0.2:8080", "30s"),
    target("shop", "10.0.0.3:8080", "1m"),  # scraped, but not behind the queries' series
    target("billing", "10.0.0.9:8080", "5m"),
]
BEHIND = [
    {"job": "shop", "instance": "10.0.0.1:8080"},
    {"job": "shop", "instance": "10.0.0.2:8080"},
]


async def test_preflight_refuses_windows_under_four_scrapes_naming_both_and_the_target(fake):
    fake.respond = scrape_world(BEHIND, SHOP)
    with pytest.raises(ConfigError) as caught:
        await source(fake.url).preflight(analysis_interval=119.0)
    error = caught.value
    assert error.field == "analysis_interval" and error.value == 119.0
    assert "at least 4 scrape intervals (120 s)" in str(error)
    assert "every 30 s" in str(error)
    assert "job='shop', instance='10.0.0.2:8080'" in str(error)


async def test_preflight_passes_windows_of_four_scrapes_and_says_what_it_checked(fake, caplog):
    fake.respond = scrape_world(BEHIND, SHOP)
    with caplog.at_level(logging.INFO, logger="canarykit.metrics.prometheus"):
        await source(fake.url).preflight(analysis_interval=120.0)
    assert "2 targets behind the queries (longest scrape interval 30 s" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_preflight_asks_for_the_targets_of_every_selector_of_both_arms(fake):
    fake.respond = scrape_world(BEHIND, SHOP)
    await source(fake.url).preflight(analysis_interval=120.0)
    grouped, targets = fake.seen
    assert grouped.path == "/api/v1/query"
    parts = grouped.form["query"].split(" or ")
    selectors = [f'{kind}{{arm="{arm}"}}' for arm in ("v1", "v2")
                 for kind in ("requests", "errors", "buckets", "latency_sum", "cpu")]  # fmt: skip
    assert parts == [f"group by (job, instance) ({selector})" for selector in selectors]
    assert (targets.path, targets.form) == ("/api/v1/targets", {"state": "active"})


async def test_a_series_without_an_instance_stands_for_every_target_of_its_job(fake):
    # A recording rule's series keeps the job and drops the instance.
    fake.respond = scrape_world([{"job": "shop"}], SHOP)
    with pytest.raises(ConfigError, match=r"\(240 s\).*instance='10.0.0.3:8080'.*every 60 s"):
        await source(fake.url).preflight(analysis_interval=200.0)


async def test_targets_of_other_jobs_do_not_count(fake):
    fake.respond = scrape_world(BEHIND, SHOP)  # billing, scraped every 5m, is not behind
    await source(fake.url).preflight(analysis_interval=120.0)


@pytest.mark.parametrize(
    ("behind", "targets", "why"),
    [
        ([], SHOP, "no series with a job label"),
        ([{"instance": "x"}], SHOP, "no series with a job label"),
        ([{"job": "gone", "instance": "x"}], SHOP, "no active target has the labels"),
        (BEHIND, [target("shop", "10.0.0.1:8080", None)], "no scrapeInterval for"),
        (BEHIND, [target("shop", "10.0.0.1:8080", "soon")], "no scrapeInterval for"),
        (BEHIND, Reply(status=404, body=b"404 page not found"), "HTTP 404"),
        (BEHIND, answer({"targets": []}), "no activeTargets list"),
        (BEHIND, answer({"activeTargets": [{"labels": "x"}]}), "labels are not an object"),
    ],
)
async def test_preflight_that_cannot_tell_warns_and_goes_on(fake, caplog, behind, targets, why):
    fake.respond = scrape_world(behind, targets)
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url).preflight(analysis_interval=1.0)
    (record,) = [r for r in caplog.records if "not checked" in r.getMessage()]
    assert why in record.getMessage() and "(1 s)" in record.getMessage()


async def test_preflight_without_prometheus_is_bounded_and_goes_on(fake, caplog):
    fake.respond = lambda *_: Reply(hang=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url, timeout=0.2, attempts=5, deadline=0.5).preflight(
            analysis_interval=1.0
        )
    assert time.monotonic() - started < 2.0
    assert "was not checked" in caplog.text and "no answer within" in caplog.text


async def test_preflight_with_too_large_a_targets_answer_goes_on(fake, caplog):
    many = [target("shop", f"10.0.{i // 250}.{i % 250}:8080", "15s") for i in range(400)]
    fake.respond = scrape_world(BEHIND, many)
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url, max_response_bytes=4096).preflight(analysis_interval=1.0)
    assert "was not checked" in caplog.text and "max_response_bytes" in caplog.text


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "60", True])
async def test_preflight_refuses_a_bad_analysis_interval(fake, value):
    with pytest.raises(ConfigError, match="analysis_interval"):
        await source(fake.url).preflight(analysis_interval=value)
    assert fake.seen == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0),
     ("1d", 86400.0), ("0s", None), ("", None), ("15", None), ("1.5s", None), (15, None)],
)  # fmt: skip
def test_scrape_intervals_are_read_as_prometheus_writes_them(text, seconds):
    from canarykit.metrics._prometheus import _prometheus_seconds

    assert _prometheus_seconds(text) == seconds


# -- classic buckets too coarse where the requests fall ----------------------------------

DEFAULT_BOUNDS = (".005", ".01", ".025", ".05", ".075", ".1", ".25", ".5", ".75", "1",
                  "2.5", "5", "7.5", "10", "+Inf")  # fmt: skip


def classic(bounds: tuple[str, ...], counts: list[float]) -> Reply:
    return vector(*(({"le": le}, str(count)) for le, count in zip(bounds, counts, strict=True)))


def coarse_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "too coarse" in r.getMessage()]


async def test_coarse_classic_buckets_warn_once_naming_the_metric_and_where(fake, caplog):
    # An 11 ms median in prometheus_client's default buckets: (0.01, 0.025], 2.5x wide.
    cumulative = [0, 30, 90, 99, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    buckets = classic(DEFAULT_BOUNDS, cumulative)
    fake.respond = table(healthy(buckets_v1=buckets, buckets_v2=buckets))
    src = source(fake.url)
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        for _ in range(3):
            await src.collect(window())
    (message,) = coarse_records(caplog)
    assert message.startswith("latency buckets of buckets are too coarse")
    assert "stable's ('v1') median lies in the bucket (0.01, 0.025] s, 2.5x wide" in message
    assert "1.1x to 1.2x" in message and "native histogram" in message


async def test_the_next_rollout_warns_again(fake, caplog):
    buckets = classic((".01", ".025", "+Inf"), [30, 100, 100])
    fake.respond = table(healthy(buckets_v1=buckets, buckets_v2=buckets))
    src = source(fake.url)
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await src.collect(window())
        await src.collect(window())
        fake.respond = scrape_world(BEHIND, SHOP)
        await src.preflight(analysis_interval=600.0)  # a new rollout starts
        fake.respond = table(healthy(buckets_v1=buckets, buckets_v2=buckets))
        await src.collect(window())
    assert len(coarse_records(caplog)) == 2


async def test_fine_classic_buckets_do_not_warn(fake, caplog):
    bounds = (*(f"{0.008 * 1.2**k:.6f}" for k in range(12)), "+Inf")
    cumulative = [0, 2, 8, 20, 40, 60, 78, 90, 96, 99, 100, 100, 100]
    buckets = classic(bounds, cumulative)
    fake.respond = table(healthy(buckets_v1=buckets, buckets_v2=buckets))
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url).collect(window())
    assert coarse_records(caplog) == []


async def test_a_p90_in_a_coarse_bucket_warns_for_the_arm_that_has_it(fake, caplog):
    fine = classic((".01", ".011", ".012", ".013", "+Inf"), [10, 50, 92, 100, 100])
    tail = classic((".01", ".011", ".012", ".05", "+Inf"), [10, 50, 80, 100, 100])
    fake.respond = table(healthy(buckets_v1=fine, buckets_v2=tail))
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url).collect(window())
    (message,) = coarse_records(caplog)
    assert "canary's ('v2') p90 lies in the bucket (0.012, 0.05] s, 4.2x wide" in message


@pytest.mark.parametrize(
    ("bounds", "cumulative", "where"),
    [
        ((".005", ".01", "+Inf"), [90, 100, 100], "median lies below its lowest bound, 0.005 s"),
        ((".005", ".01", "+Inf"), [0, 10, 100], "median lies above its highest bound, 0.01 s"),
    ],
)
async def test_a_median_outside_the_bounds_warns(fake, caplog, bounds, cumulative, where):
    buckets = classic(bounds, cumulative)
    fake.respond = table(healthy(buckets_v1=buckets, buckets_v2=buckets))
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await source(fake.url).collect(window())
    (message,) = coarse_records(caplog)
    assert where in message


async def test_the_warning_names_the_histogram_of_the_ready_made_queries(fake, caplog):
    def respond(path: str, form: dict[str, str], headers: dict[str, str]) -> Reply:
        if "_bucket" in form["query"]:
            return vector(({"le": "0.1"}, "1"), ({"le": "0.25"}, "5"), ({"le": "+Inf"}, "5"))
        return vector(({}, "5"))

    fake.respond = respond
    src = PrometheusSource(url=fake.url, stable="v1", canary="v2")
    with caplog.at_level(logging.WARNING, logger="canarykit.metrics.prometheus"):
        await src.collect(window())
    (message,) = coarse_records(caplog)
    assert message.startswith("latency buckets of http_request_duration_seconds are")


@pytest.mark.parametrize(
    ("promql", "selectors"),
    [
        ('sum(increase(a_total{v="x"}[30s]))', ['a_total{v="x"}']),
        ('a{v="}"} / b{w=~"{x}"}', ['a{v="}"}', 'b{w=~"{x}"}']),  # braces inside strings
        ('x and{job="a"}', ['{job="a"}']),  # a keyword is no metric name
        ('{__name__=~"a|b",v="1"}', ['{__name__=~"a|b",v="1"}']),
        ('up # not{this="one"}\n+ down{v="2"}', ['down{v="2"}']),  # comments skipped
        ("sum(up)", []),  # no braces: not found (and no arm in it)
        ('sum(a{v="1"', []),  # unbalanced: Prometheus will say what is wrong
    ],
)
def test_vector_selectors_are_found_outside_strings_and_comments(promql, selectors):
    from canarykit.metrics._promql import vector_selectors

    assert vector_selectors(promql) == selectors


def test_the_ready_made_queries_name_each_selector_the_scrape_check_asks_about():
    from canarykit.metrics._promql import vector_selectors

    queries = http_queries(matchers={"job": "shop"})
    filled = [
        fill("q", template, arm="v2", seconds=60)
        for template in (queries.requests, queries.errors, queries.latency_buckets)
    ]
    assert [vector_selectors(promql) for promql in filled] == [
        ['http_requests_total{version="v2",job="shop"}'],
        ['http_requests_total{version="v2",job="shop",code=~"5.."}'],
        ['http_request_duration_seconds_bucket{version="v2",job="shop"}'],
    ]
