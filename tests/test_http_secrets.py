"""Secrets echoed back by a server never reach an error, a log record or a repr.

A loopback server echoes everything it was sent (the URL's path and query, every header
value, the decoded basic-auth password, the body) back in every place an answer has
text: the status line, a header, the body, a JSON error field, a Prometheus warning; and
with padding that makes canarykit cut the echo in the middle of a secret, at the bytes
it reads and at the characters it quotes. Webhook, WebhookNotifier and PrometheusSource
must blank every secret before any of that, and no 8-character piece of one may remain.
"""

# Imports internals on purpose: the bounded HTTP exchange.

import base64
import json
import logging
import traceback
import urllib.parse

import anyio
import pytest

import canarykit as ck
from canarykit import MetricsError
from canarykit._http import EXCERPT_BYTES
from canarykit.hooks import HookCall, Webhook
from canarykit.machine import HookPoint
from canarykit.metrics import BasicAuth, BearerAuth, PrometheusSource
from canarykit.notify import WebhookNotifier
from helpers.http_hostile import HostileServer, status_line

pytest.importorskip("httpx", reason="pip install 'canarykit[http]'")

# Real loopback servers that echo secrets back, some slowly: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Every kind of secret, each with characters that quoting, escaping or encoding changes.
URL_PATH = "PathSecret-7f3a9c2e1b"
URL_QUERY = "QuerySecret/5d8e+2a71"
URL_PASSWORD = "Url\\Pass'\"%w\u20acrd-9c1"
BEARER = "HeaderTok-8c1d2e3f4a5b"
API_KEY = "ApiKey\\Val'\"%-4242x"
METADATA = "MetaSecret-3e4f5a6b"
PROM_TOKEN = "PromBearer-a1b2c3d4e5"
PROM_PASSWORD = "pa\\ss'\"%w\u20acrd\\\\x-9876"
TENANT = "Tenant\\Secret-1234"

WEBHOOK_SECRETS = [URL_PATH, URL_QUERY, URL_PASSWORD, BEARER, API_KEY, METADATA]
PROM_SECRETS = [PROM_TOKEN, PROM_PASSWORD, TENANT]
PROM_BASIC = base64.b64encode(f"grafana:{PROM_PASSWORD}".encode()).decode()
URL_BASIC = base64.b64encode(f"hook:{URL_PASSWORD}".encode()).decode()

# Where the echo goes, and whether canarykit must cut it: "read" puts one secret across
# the bytes read of an error answer, "quote" across the characters quoted of it.
PLACES = ["status", "header", "body", "json"]
CUTS = [None, "read", "quote"]


def _forms(secret):
    return {
        secret,
        secret.encode("unicode_escape").decode("ascii"),
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        repr(secret.encode())[2:-1],
    }


def assert_no_piece(texts, secrets):
    for secret in secrets:
        for form in _forms(secret):
            for start in range(len(form) - 7):
                piece = form[start : start + 8]
                for text in texts:
                    at = text.find(piece)
                    assert at < 0, f"{piece!r} of a secret leaked: {text[at - 200 : at + 100]!r}"


def echoed(request):
    """What the server was sent, in pieces, as text."""
    pieces = [urllib.parse.unquote(request["target"]), request["target"]]
    for value in request["headers"].values():
        pieces.append(value)
        if value.startswith("Basic "):
            pieces.append(base64.b64decode(value[6:]).decode().partition(":")[2])
    body = request["body"].decode()
    pieces += [body, urllib.parse.unquote_plus(body)]
    return [piece for piece in pieces if piece]


class Echo:
    """A responder echoing the request in `place`, with `cut` around piece `index`."""

    def __init__(self, status):
        self.status = status
        self.place = "body"
        self.cut = None
        self.index = 0

    def body(self, pieces):
        text = " | ".join(pieces).encode()
        if self.cut is None:
            return text
        piece = pieces[self.index % len(pieces)].encode()
        edge = EXCERPT_BYTES if self.cut == "read" else 200
        return b"." * (edge - len(piece) // 2) + piece + b" | " + text

    def __call__(self, request, send):
        pieces = echoed(request)
        one_line = " | ".join(pieces).replace("\r", " ").replace("\n", " ").encode()
        headers = [("Connection", b"close")]
        reason, body = b"Error", b""
        if self.place == "status":
            reason = one_line
        elif self.place == "header":
            headers.append(("X-Echo", one_line))
        elif self.place == "body":
            body = self.body(pieces)
        else:
            error = self.body(pieces).decode("utf-8", "replace")
            body = json.dumps({"status": "error", "errorType": "bad_data", "error": error})
            body = body.encode()
        headers.append(("Content-Length", str(len(body)).encode()))
        send(status_line(self.status, reason, headers) + body)


def a_call():
    return HookCall(
        hook=HookPoint.CONFIRM_PROMOTION,
        rollout="web",
        phase=ck.Phase.PROGRESSING,
        step=1,
        steps=2,
        weight=10.0,
        waiting_since=0.0,
        reason="waiting",
        time=1.0,
    )


def webhook_url(server):
    password = urllib.parse.quote(URL_PASSWORD, safe="")
    query = urllib.parse.urlencode({"token": URL_QUERY})
    return f"http://hook:{password}@127.0.0.1:{server.port}/hooks/{URL_PATH}?{query}"


HEADERS = {"Authorization": f"Bearer {BEARER}", "X-Api-Key": API_KEY}


def each_variant(echo):
    for place in PLACES:
        for cut in CUTS if place in ("body", "json") else [None]:
            for index in range(8 if cut else 1):
                echo.place, echo.cut, echo.index = place, cut, index
                yield f"{place}/{cut}/{index}"


@pytest.mark.parametrize("status", [500, 400])
async def test_a_webhook_never_shows_a_secret_the_endpoint_echoes(anyio_backend, caplog, status):
    echo = Echo(status)
    with HostileServer(echo) as server, caplog.at_level(logging.DEBUG):
        hook = Webhook(
            webhook_url(server), headers=HEADERS, metadata={"signing": METADATA}, attempts=1
        )
        texts = [repr(hook)]
        for _variant in each_variant(echo):
            answer = await hook(a_call())
            assert not answer.yes and f"HTTP {status}" in answer.reason
            texts += [answer.reason, repr(answer)]
        assert sum("***" in text for text in texts) >= 5  # the echo was quoted, blanked
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]
    assert any("HTTP Request" in record.getMessage() for record in caplog.records)
    assert_no_piece(texts, [*WEBHOOK_SECRETS, URL_BASIC])


@pytest.mark.parametrize("status", [500, 400])
async def test_a_notifier_never_shows_a_secret_the_endpoint_echoes(anyio_backend, caplog, status):
    echo = Echo(status)
    with HostileServer(echo) as server, caplog.at_level(logging.DEBUG):
        notifier = WebhookNotifier(webhook_url(server), headers=HEADERS, attempts=1)
        texts = [repr(notifier)]
        async with notifier:
            for count, _variant in enumerate(each_variant(echo), start=1):
                notifier(
                    ck.events.PhaseChanged(
                        time=1.0,
                        old=ck.Phase.PENDING,
                        new=ck.Phase.PROGRESSING,
                        step=0,
                        reason="go",
                    )
                )
                # One at a time: the echo's variant is read when the request arrives.
                await _until(lambda count=count: notifier.stats.dropped == count)
    assert notifier.stats.sent == 0 and notifier.stats.dropped == len(server.requests) > 10
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert f"HTTP {status}: " in dropped[-1] and "***" in dropped[-1]
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]
    assert_no_piece(texts, [*WEBHOOK_SECRETS, URL_BASIC])


async def _until(done, timeout=10.0):
    with anyio.fail_after(timeout):
        while not done():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("status", [500, 400, 200])
@pytest.mark.parametrize("auth", ["bearer", "basic"])
async def test_prometheus_never_shows_a_secret_the_server_echoes(
    anyio_backend, caplog, status, auth
):
    echo = Echo(status)
    credentials = (
        BearerAuth(token=PROM_TOKEN)
        if auth == "bearer"
        else BasicAuth(username="grafana", password=PROM_PASSWORD)
    )
    with HostileServer(echo) as server, caplog.at_level(logging.DEBUG):
        source = PrometheusSource(
            url=f"http://127.0.0.1:{server.port}",
            stable="v1",
            canary="v2",
            auth=credentials,
            headers={"X-Scope-OrgID": TENANT},
            attempts=1,
        )
        texts = [repr(source)]
        for _variant in each_variant(echo):
            with pytest.raises(MetricsError) as caught:
                await source.query("up")
            error = caught.value
            texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
        assert sum("***" in text for text in texts) >= 5  # the echo was quoted, blanked
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]
    assert_no_piece(texts, [*PROM_SECRETS, PROM_BASIC])


async def test_a_prometheus_warning_echoing_a_secret_is_logged_blanked(anyio_backend, caplog):
    def respond(request, send):
        warning = " | ".join(echoed(request))
        body = json.dumps(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": []},
                "warnings": [warning],
            }
        ).encode()
        send(status_line(200, b"OK", [("Content-Length", str(len(body)).encode())]) + body)

    with HostileServer(respond) as server, caplog.at_level(logging.DEBUG):
        source = PrometheusSource(
            url=f"http://127.0.0.1:{server.port}",
            stable="v1",
            canary="v2",
            auth=BasicAuth(username="grafana", password=PROM_PASSWORD),
            headers={"X-Scope-OrgID": TENANT},
        )
        with pytest.raises(ck.NoDataError):
            await source.query("up")
    warned = [r.getMessage() for r in caplog.records if "warns" in r.getMessage()]
    assert warned and "***" in warned[0]
    assert_no_piece([caplog.text, *warned], [*PROM_SECRETS, PROM_BASIC])


@pytest.mark.parametrize("secret", [URL_PASSWORD, API_KEY, PROM_PASSWORD, TENANT])
def test_a_secret_cut_by_the_read_limit_is_blanked_up_to_its_last_byte(secret):
    from canarykit._http import Answer, secret_redactor

    redact = secret_redactor([secret])
    for form in _forms(secret):
        data = form.encode()
        # Every cut, including in the middle of a multi-byte character.
        for end in range(1, len(data)):
            answer = Answer(status=500, body=b"error: " + data[:end], cut=True)
            text = answer.text(redact, limit=10_000)
            assert text.startswith("error: ")
            assert_no_piece([text], [secret])
