"""Every HTTP exchange is bounded: one deadline for the whole of it, and a size limit.

Real loopback servers answer as badly as they can (tests/helpers/http_hostile.py): 300 MB bodies,
one byte at a time, or nothing at all. A Webhook hook, a notifier, PrometheusSource, the
split probe and the Kubernetes routers must each end within their deadline plus a
second, holding little memory, and say why.
"""

# Imports internals on purpose: the bounded HTTP exchange.

import logging
import threading
import time

import anyio
import psutil
import pytest

import canarykit as ck
from canarykit import MetricsError
from canarykit._http import EXCERPT_BYTES, exchange
from canarykit.hooks import HookCall, Webhook
from canarykit.machine import HookPoint
from canarykit.metrics import PrometheusSource
from canarykit.notify import WebhookNotifier
from canarykit.routers import KubernetesConnection, SplitProbe
from helpers.http_hostile import HostileServer, drip, huge, silent, status_line

pytest.importorskip("httpx", reason="pip install 'canarykit[http]'")

# Real loopback servers that answer as badly as they can: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DEADLINE = 1.5
HUGE = 300 * 1024 * 1024
MiB = 1024 * 1024


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


def a_notice():
    return ck.events.PhaseChanged(
        time=1.0, old=ck.Phase.PROGRESSING, new=ck.Phase.ROLLED_BACK, step=1, reason="why"
    )


async def through_webhook(url, caplog, tmp_path, **bounds):
    answer = await Webhook(url, attempts=1, **bounds)(a_call())
    assert not answer.yes
    return answer.reason


async def through_notifier(url, caplog, tmp_path, **bounds):
    notifier = WebhookNotifier(url, attempts=1, drain_timeout=60, **bounds)
    with caplog.at_level(logging.WARNING, logger="canarykit.notify"):
        async with notifier:
            notifier(a_notice())
    assert (notifier.stats.sent, notifier.stats.dropped) == (0, 1)
    return next(r.getMessage() for r in reversed(caplog.records) if "dropped" in r.getMessage())


async def through_prometheus(url, caplog, tmp_path, **bounds):
    base = url.rstrip("/")
    source = PrometheusSource(url=base, stable="v1", canary="v2", attempts=1, **bounds)
    with pytest.raises(MetricsError) as caught:
        await source.query("up")
    return str(caught.value)


async def through_split_probe(url, caplog, tmp_path, **bounds):
    probe = SplitProbe(url=url, requests=5, **bounds)
    with pytest.raises(ck.RouterError) as caught:
        await probe.measure(ck.TrafficSplit(canary_percent=10))
    return str(caught.value)


async def through_kubernetes(url, caplog, tmp_path, **bounds):
    from canarykit.routers import GatewayAPIRouter

    pytest.importorskip("lightkube", reason="pip install 'canarykit[kubernetes]'")
    config = _KUBECONFIG.format(url=url.rstrip("/"))
    path = tmp_path / "kubeconfig"
    path.write_text(config)
    router = GatewayAPIRouter(
        route="shop",
        namespace="prod",
        stable_service="shop-v1",
        canary_service="shop-v2",
        connection=KubernetesConnection(kubeconfig=path, trust_env=False, **bounds),
    )
    with pytest.raises(ck.RouterError) as caught:
        await router.read()
    return str(caught.value)


_KUBECONFIG = """
current-context: x
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
"""


COMPONENTS = {
    "kubernetes": through_kubernetes,
    "webhook": through_webhook,
    "notifier": through_notifier,
    "prometheus": through_prometheus,
    "split-probe": through_split_probe,
}


class PeakRss:
    """The process' resident memory at its highest while inside, above what it was before."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = self.start = 0
        self.done = threading.Event()

    def _sample(self):
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self):
        return (self.peak - self.start) / MiB


# ---------------------------------------------------------------------------- huge answers


# The probe counts an error page as an unclassified answer, not as an error: its 500
# case is in test_the_split_probe_reads_only_the_start_of_a_huge_error_page.
@pytest.mark.parametrize(
    ("component", "status"),
    [
        (name, status)
        for name in sorted(COMPONENTS)
        for status in (200, 500)
        if (name, status) != ("split-probe", 500)
    ],
)
async def test_a_300_mb_answer_is_never_read_whole(
    anyio_backend, caplog, tmp_path, component, status
):
    with HostileServer(huge(status, HUGE)) as server, PeakRss() as memory:
        started = time.monotonic()
        text = await COMPONENTS[component](server.url, caplog, tmp_path, timeout=30.0)
        took = time.monotonic() - started
    assert memory.growth_mb < 50, f"RSS grew {memory.growth_mb:.0f} MB"
    assert took < 10, f"{took:.1f} s: the body was downloaded"
    if status == 200 or component == "kubernetes":  # lightkube reads an error whole
        assert "larger than max_response_bytes=" in text and "raise max_response_bytes" in text
    else:
        assert "HTTP 500" in text and "xxxx" in text  # quoted from the excerpt read


async def test_the_split_probe_reads_only_the_start_of_a_huge_error_page(anyio_backend):
    with HostileServer(huge(502, HUGE)) as server, PeakRss() as memory:
        started = time.monotonic()
        probe = SplitProbe(url=server.url, requests=3, timeout=30)
        result = await probe.measure(ck.TrafficSplit(canary_percent=10))
        took = time.monotonic() - started
    assert result.unclassified == 3
    assert memory.growth_mb < 50 and took < 10


@pytest.mark.parametrize("component", sorted(COMPONENTS))
async def test_max_response_bytes_is_the_limit_and_the_error_names_it(
    anyio_backend, caplog, tmp_path, component
):
    with HostileServer(huge(200, 4096)) as server:
        text = await COMPONENTS[component](server.url, caplog, tmp_path, max_response_bytes=2048)
    assert "max_response_bytes=2048 (2 KiB)" in text


async def test_an_answer_within_the_limit_is_read_whole(anyio_backend):
    import httpx

    with HostileServer(huge(200, 3 * MiB)) as server:
        async with httpx.AsyncClient() as client:
            answer = await exchange(client, "GET", server.url, deadline=10, max_bytes=3 * MiB)
    assert (answer.status, len(answer.body), answer.cut) == (200, 3 * MiB, False)


async def test_an_error_answer_is_read_only_up_to_the_excerpt(anyio_backend):
    import httpx

    with HostileServer(huge(503, 10 * MiB)) as server:
        async with httpx.AsyncClient() as client:
            answer = await exchange(client, "GET", server.url, deadline=10, max_bytes=MiB)
    assert (answer.status, len(answer.body), answer.cut) == (503, EXCERPT_BYTES, True)


async def test_a_declared_oversize_answer_is_refused_before_its_body(anyio_backend):
    import httpx

    from canarykit._http import ResponseTooLarge

    def declare(_request, send):
        send(status_line(200, b"OK", [("Content-Length", str(HUGE).encode())]))
        send(b"", delay=3600)  # the body never comes: reading it would hang

    with HostileServer(declare) as server:
        async with httpx.AsyncClient() as client:
            with pytest.raises(ResponseTooLarge, match="larger than 1 MiB"):
                await exchange(client, "GET", server.url, deadline=10, max_bytes=MiB)


# ---------------------------------------------------------------------------- slow answers


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize(
    "respond",
    [drip(0.25), drip(0.25, headers_too=True), drip(0.25, status=500), silent],
    ids=["drips-its-body", "drips-its-headers", "drips-an-error", "never-answers"],
)
async def test_a_slow_server_cannot_outlast_the_deadline(
    anyio_backend, caplog, tmp_path, component, respond
):
    with HostileServer(respond) as server:
        started = time.monotonic()
        text = await COMPONENTS[component](server.url, caplog, tmp_path, timeout=DEADLINE)
        took = time.monotonic() - started
    # Each byte arrives well within httpx's per-read timeout: only the overall deadline
    # can end the exchange.
    assert took < DEADLINE + 1, f"{component} took {took:.2f} s with timeout={DEADLINE}"
    assert f"{DEADLINE:g} s" in text


async def test_the_deadline_reaches_a_drip_on_a_cancelled_scope_too(anyio_backend):
    """A caller's own timeout around a hook still wins (the runner's call_timeout)."""
    with HostileServer(drip(0.1)) as server:
        started = time.monotonic()
        with anyio.move_on_after(0.5):
            await Webhook(server.url, timeout=30, attempts=1)(a_call())
        took = time.monotonic() - started
    assert took < 1.5


@pytest.mark.parametrize(
    ("field", "value"), [("max_response_bytes", 100), ("max_response_bytes", True)]
)
def test_a_tiny_or_odd_limit_is_refused_by_name(field, value):
    for build in (
        lambda: Webhook("http://127.0.0.1:9/", **{field: value}),
        lambda: WebhookNotifier("http://127.0.0.1:9/", **{field: value}),
        lambda: PrometheusSource(
            url="http://127.0.0.1:9", stable="a", canary="b", **{field: value}
        ),
        lambda: SplitProbe(url="http://127.0.0.1:9/", **{field: value}),
        lambda: KubernetesConnection(**{field: value}),
    ):
        with pytest.raises(ck.ConfigError, match=field):
            build()
