"""The HTTP webhook hook, against a loopback HTTP server started by each test."""

import logging
import sys

import anyio
import pytest

import canarykit as ck
from canarykit.hooks import HookCall, Hooks, Webhook
from canarykit.machine import HookPoint
from canarykit.testing import FakeRouter, VirtualClock
from canarykit.testing.lab import free_port
from helpers.http_endpoint import Endpoint

pytest.importorskip("httpx", reason="pip install 'canarykit[http]'")

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-gate-token-0042"
PLAN = ck.from_weights([10, 50], hold=60)


@pytest.fixture
def endpoint():
    server = Endpoint(f"/gate/{SECRET}?token={SECRET}")
    try:
        yield server
    finally:
        server.close()


def a_call(hook=HookPoint.CONFIRM_PROMOTION, **changes):
    fields = {
        "hook": hook,
        "rollout": "web",
        "phase": ck.Phase.PROGRESSING,
        "step": 4,
        "steps": 4,
        "weight": 50.0,
        "waiting_since": 120.0,
        "reason": "waiting for confirm-promotion",
        "time": 180.0,
    }
    fields.update(changes)
    return HookCall(**fields)


def webhook(endpoint, **options):
    options.setdefault("backoff", 0.01)
    options.setdefault("timeout", 2.0)
    return Webhook(endpoint.url, **options)


# ---------------------------------------------------------------------------- status codes


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_a_2xx_answer_is_a_yes(anyio_backend, endpoint, status):
    endpoint.default = status
    hook = webhook(endpoint)
    answer = await hook(a_call())
    assert answer.yes and answer.reason == f"HTTP {status}"
    assert hook.requests == 1 and hook.retries == 0


@pytest.mark.parametrize("status", [301, 400, 403, 404, 409])
async def test_other_answers_are_a_no_at_once(anyio_backend, endpoint, status):
    endpoint.default = (status, "gate closed by release manager")
    hook = webhook(endpoint, attempts=3)
    answer = await hook(a_call())
    assert not answer.yes and not answer.stop
    assert answer.reason == f"HTTP {status}: gate closed by release manager"
    assert len(endpoint.requests) == 1 and hook.retries == 0  # final: not tried again


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_are_retried_then_a_no(anyio_backend, endpoint, status):
    endpoint.default = status
    hook = webhook(endpoint, attempts=3)
    answer = await hook(a_call())
    assert not answer.yes
    assert answer.reason == f"HTTP {status} (3 tries)"
    assert len(endpoint.requests) == 3
    assert (hook.requests, hook.retries) == (3, 2)


async def test_a_transient_failure_then_a_2xx_is_a_yes(anyio_backend, endpoint):
    endpoint.script = [502, 500, 204]
    hook = webhook(endpoint, attempts=3)
    assert await hook(a_call())
    assert (hook.requests, hook.retries, len(endpoint.requests)) == (3, 2, 3)


async def test_a_timeout_is_a_no_after_its_retries(anyio_backend, endpoint):
    endpoint.script = ["hang", "hang"]
    hook = webhook(endpoint, attempts=2, timeout=0.2)
    with anyio.fail_after(10):
        answer = await hook(a_call())
    assert not answer.yes
    assert answer.reason == "timed out after 0.2 s (2 tries)"
    assert len(endpoint.requests) == 2 and hook.retries == 1


async def test_a_refused_connection_is_a_no(anyio_backend):
    hook = Webhook(f"http://127.0.0.1:{free_port()}/gate", attempts=2, backoff=0.01)
    answer = await hook(a_call())
    assert not answer.yes
    assert "ConnectError" in answer.reason and answer.reason.endswith("(2 tries)")


# ---------------------------------------------------------------------------- payload


async def test_the_body_is_flaggers_payload_plus_the_rollouts_position(anyio_backend, endpoint):
    hook = webhook(
        endpoint,
        namespace="shop",
        metadata={"team": "checkout", "token": SECRET},
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    await hook(a_call(next_weight=None))
    [request] = endpoint.requests
    assert request["body"] == {
        "name": "web",
        "namespace": "shop",
        "type": "confirm-promotion",
        "phase": "progressing",
        "step": 4,
        "steps": 4,
        "weight": 50.0,
        "next_weight": None,
        "waiting_since": 120.0,
        "reason": "waiting for confirm-promotion",
        "time": 180.0,
        "metadata": {"team": "checkout", "token": SECRET},
    }
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"


# ---------------------------------------------------------------------------- secrets


async def test_the_url_and_headers_never_show_in_reprs_reasons_or_logs(
    anyio_backend, endpoint, caplog
):
    caplog.set_level(logging.DEBUG)
    endpoint.script = [500, (403, f"no entry for {SECRET}")]
    hook = webhook(endpoint, attempts=2, headers={"Authorization": f"Bearer {SECRET}"})
    answer = await hook(a_call())
    port = endpoint.server.server_port
    assert repr(hook) == f"Webhook('webhook', url='http://127.0.0.1:{port}/***')"
    hooks = Hooks(confirm_promotion=hook)
    assert SECRET not in repr(hooks)
    assert SECRET not in answer.reason and "***" in answer.reason
    logged = [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in line for line in logged)  # httpx did log its requests
    assert not [line for line in logged if SECRET in line]


def test_a_bad_url_is_refused_without_quoting_it():
    with pytest.raises(ck.ConfigError) as info:
        Webhook(f"ftp://hooks.example.com/{SECRET}")
    assert info.value.field == "url"
    assert SECRET not in str(info.value)
    with pytest.raises(ck.ConfigError) as info:
        Webhook("https://example.com/x", metadata={"token": 42})
    assert info.value.field == "metadata['token']"
    for field, value in [("attempts", 0), ("timeout", 0), ("backoff", -1), ("name", "a b")]:
        with pytest.raises(ck.ConfigError) as info:
            Webhook("https://example.com/x", **{field: value})
        assert info.value.field == field


def test_a_missing_httpx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[http\]'"):
        Webhook("https://example.com/gate")


# ---------------------------------------------------------------------------- in a rollout


async def test_a_confirm_promotion_webhook_holds_the_rollout_until_it_answers_2xx(
    anyio_backend, endpoint
):
    endpoint.script = [(403, "halt"), (403, "halt")]  # then the default 200
    router = FakeRouter()
    hooks = Hooks(confirm_promotion=webhook(endpoint), interval=60)
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks, key="web")
    with anyio.fail_after(10):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.finished_at == 240.0  # asked at 120 and 180 (403), 240 (200)
    assert [b["type"] for b in endpoint.bodies] == ["confirm-promotion"] * 3
    assert [b["waiting_since"] for b in endpoint.bodies] == [120.0] * 3
    assert {b["name"] for b in endpoint.bodies} == {"web"}
    waiting = next(e.reason for e in outcome.timeline if e.kind == "gate")
    assert waiting == "waiting for confirm-promotion: HTTP 403: halt"


async def test_a_failing_pre_rollout_webhook_aborts_before_traffic_moves(anyio_backend, endpoint):
    endpoint.default = (500, "smoke test failed: GET / answered 502")
    router = FakeRouter()
    hooks = Hooks(pre_rollout=webhook(endpoint, attempts=2))
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks)
    with anyio.fail_after(10):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert router.applied == []
    assert "pre-rollout hook failed: HTTP 500: smoke test failed" in outcome.reason
    assert len(endpoint.requests) == 2
    assert endpoint.bodies[0]["phase"] == "pending"


async def test_a_rollback_webhook_answering_2xx_rolls_back(anyio_backend, endpoint):
    endpoint.script = [404, 404]  # "no rollback" twice, then 200
    router = FakeRouter()
    hooks = Hooks(rollback=webhook(endpoint), interval=30)
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(), hooks=hooks)
    with anyio.fail_after(10):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.finished_at == 60.0
    assert outcome.reason == "the rollback hook asked for a rollback: HTTP 200"
    assert router.current.is_stable_only
    assert [b["type"] for b in endpoint.bodies] == ["rollback"] * 3
