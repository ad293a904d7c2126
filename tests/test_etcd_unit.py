"""EtcdStore without a server: what it refuses, and the requests it sends to the gateway.

The HTTP client is swapped for httpx's MockTransport, whose handler plays the etcd
members: it records each request and answers from a script, so each test pins the
exact shape of a request (path, base64 keys, compares, lease ids) and what the store
makes of an answer. The real cluster's behaviour is in tests/integration/test_etcd.py.
"""

from __future__ import annotations

import base64
import json

import pytest

import canarykit as ck
from canarykit.stores import EtcdStore

httpx = pytest.importorskip("httpx", reason="pip install 'canarykit[etcd]'")

PASSWORD = "Sekr3t-pa55word"
A, B = "http://10.0.0.1:2379", "http://10.0.0.2:2379"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class Members:
    """Plays the etcd members: answers each request from `script(url, path, body)`."""

    def __init__(self, script):
        self.script = script
        self.requests: list[tuple[str, str, dict]] = []

    def __call__(self, request):
        body = json.loads(request.content or b"{}")
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        self.requests.append((base, request.url.path, body))
        answer = self.script(base, request.url.path, body, request)
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, json=payload)

    def paths(self):
        return [path for _, path, _ in self.requests]


def wired(store: EtcdStore, members: Members) -> EtcdStore:
    store._client = httpx.AsyncClient(transport=httpx.MockTransport(members))
    return store


HEADER = {"header": {"revision": "41"}}


# -- what the constructor refuses -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": ["ftp://10.0.0.1:2379"]}, "endpoints[0]"),
        ({"endpoints": [A, "http://10.0.0.2:2379/v3"]}, "endpoints[1]"),
        ({"endpoints": [A, A]}, "endpoints"),
        ({"endpoints": [A], "prefix": "canarykit"}, "prefix"),
        ({"endpoints": [A], "prefix": "can ary/"}, "prefix"),
        ({"endpoints": [A], "timeout": 0}, "timeout"),
        ({"endpoints": [A], "timeout": float("nan")}, "timeout"),
        ({"endpoints": [A], "timeout": True}, "timeout"),
        ({"endpoints": [A], "timeout": 5, "deadline": 1}, "deadline"),
        ({"endpoints": [A], "key_file": "/k.pem"}, "key_file"),
        ({"endpoints": [A], "ca_file": "/ca.pem"}, "endpoints"),
        ({"endpoints": ["https://10.0.0.1:2379"], "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"endpoints": [A], "username": "root"}, "password"),
        ({"endpoints": [A], "password": PASSWORD}, "username"),
        ({"endpoints": [A], "username": "", "password": PASSWORD}, "username"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs, field):
    endpoints = kwargs.pop("endpoints")
    with pytest.raises(ck.ConfigError) as caught:
        EtcdStore(endpoints, **kwargs)
    assert caught.value.field == field
    assert PASSWORD not in str(caught.value)


def test_a_password_is_never_shown_in_an_error_or_a_repr():
    with pytest.raises(ck.ConfigError) as caught:
        EtcdStore([f"http://root:{PASSWORD}@10.0.0.1:2379"])
    assert PASSWORD not in str(caught.value) and caught.value.field == "endpoints[0]"
    with pytest.raises(ck.ConfigError) as caught:
        EtcdStore([A], username="root", password=123)  # type: ignore[arg-type]
    assert caught.value.field == "password" and "123" not in str(caught.value)
    store = EtcdStore([A], username="root", password=PASSWORD)
    assert PASSWORD not in repr(store) and "root" in repr(store)
    assert PASSWORD not in repr(store.lease("web")) + repr(store.commands("web"))


def test_endpoints_may_be_one_comma_separated_string_and_lose_a_trailing_slash():
    store = EtcdStore(f"{A}/, {B}")
    assert store.endpoints == (A, B)


def test_keys_and_holders_are_checked_before_anything_is_sent():
    store = EtcdStore([A])
    with pytest.raises(ck.ConfigError) as caught:
        store.lease("../web")
    assert caught.value.field == "key"
    with pytest.raises(ck.ConfigError) as caught:
        store.lease("web", ttl=0)
    assert caught.value.field == "ttl"
    with pytest.raises(ck.ConfigError) as caught:
        store.lease("web", holder="a\nb")
    assert caught.value.field == "holder"


# -- the requests -----------------------------------------------------------------------

anyio_test = pytest.mark.anyio


@anyio_test
async def test_a_save_without_a_lease_is_one_plain_txn_putting_the_envelope():
    members = Members(lambda *_: {**HEADER, "succeeded": True})
    store = wired(EtcdStore([A], prefix="ck/"), members)
    await store.save("web", {"phase": "running"})
    ((url, path, body),) = members.requests
    assert (url, path) == (A, "/v3/kv/txn")
    assert "compare" not in body
    put = body["success"][0]["request_put"]
    assert unb64(put["key"]) == "ck/web/state"
    envelope = json.loads(unb64(put["value"]))
    assert envelope["format"] == "canarykit-state" and envelope["key"] == "web"
    assert envelope["data"] == {"phase": "running"}


def lease_script(holder_value: str | None = None, granted_ttl: str = "15"):
    """Grants lease 77; the acquire txn succeeds at revision 41 unless `holder_value`."""

    def script(url, path, body, request):
        if path == "/v3/lease/grant":
            return {**HEADER, "ID": "77", "TTL": granted_ttl}
        if path == "/v3/lease/timetolive":
            return {**HEADER, "ID": body["ID"], "TTL": "9"}
        if path == "/v3/lease/revoke":
            return HEADER
        if path == "/v3/kv/txn" and body.get("compare", [{}])[0].get("create_revision") == "0":
            if holder_value is None:
                return {**HEADER, "succeeded": True}
            kv = {"key": body["compare"][0]["key"], "create_revision": "12", "lease": "5"}
            kv["value"] = b64(holder_value)
            return {**HEADER, "responses": [{"response_range": {"kvs": [kv]}}]}
        raise AssertionError(f"unexpected {path} {body}")

    return script


@anyio_test
async def test_acquire_grants_an_etcd_lease_and_creates_the_key_only_if_absent():
    members = Members(lease_script())
    store = wired(EtcdStore([A]), members)
    lease = store.lease("web", holder="runner-1", ttl=4.2)
    await lease.acquire()
    assert members.paths() == ["/v3/lease/grant", "/v3/kv/txn"]
    assert members.requests[0][2] == {"TTL": 5}  # whole seconds, rounded up
    txn = members.requests[1][2]
    assert txn["compare"] == [
        {
            "key": b64("canarykit/web/lease"),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": "0",
        }
    ]
    put = txn["success"][0]["request_put"]
    assert put["lease"] == "77" and unb64(put["key"]) == "canarykit/web/lease"
    assert json.loads(unb64(put["value"]))["holder"] == "runner-1"
    assert lease.token == 41 and lease.held  # the txn's revision: the key's create_revision
    assert "token 41" in repr(lease)


@anyio_test
async def test_a_held_lease_is_refused_naming_the_holder_and_the_granted_lease_is_revoked():
    other = json.dumps({"holder": "runner-0", "pid": 12, "host": "deploy-a"})
    members = Members(lease_script(holder_value=other))
    store = wired(EtcdStore([A]), members)
    lease = store.lease("web", holder="runner-1")
    with pytest.raises(ck.LeaseHeldError, match=r"runner-0 \(pid 12 on deploy-a\).*9 s"):
        await lease.acquire()
    revoked = [body for _, path, body in members.requests if path == "/v3/lease/revoke"]
    assert revoked == [{"ID": "77"}]
    assert lease.token is None


@anyio_test
async def test_a_retried_acquire_that_had_succeeded_is_recognised_by_its_lease_id():
    mine = json.dumps({"holder": "runner-1"})

    def script(url, path, body, request):
        if path == "/v3/lease/grant":
            return {**HEADER, "ID": "5", "TTL": "15"}
        kv = {"key": b64("canarykit/web/lease"), "create_revision": "12", "lease": "5"}
        kv["value"] = b64(mine)
        return {**HEADER, "responses": [{"response_range": {"kvs": [kv]}}]}

    store = wired(EtcdStore([A]), Members(script))
    lease = store.lease("web", holder="runner-1")
    await lease.acquire()
    assert lease.token == 12


@anyio_test
async def test_a_held_lease_fences_saves_by_its_token_and_a_refusal_names_the_new_holder():
    state = {"refuse": False}

    def script(url, path, body, request):
        if path in ("/v3/lease/grant", "/v3/kv/txn") and not body.get("compare"):
            return {**HEADER, "ID": "77", "TTL": "15", "succeeded": True}
        compare = body["compare"][0]
        if compare["create_revision"] == "0":
            return {**HEADER, "succeeded": True}
        if not state["refuse"]:
            return {**HEADER, "succeeded": True}
        kv = {"create_revision": "50", "value": b64(json.dumps({"holder": "runner-2"}))}
        return {**HEADER, "responses": [{"response_range": {"kvs": [kv]}}]}

    members = Members(script)
    store = wired(EtcdStore([A]), members)
    await store.lease("web", holder="runner-1").acquire()
    await store.save("web", {"n": 1})
    txn = members.requests[-1][2]
    assert txn["compare"] == [
        {
            "key": b64("canarykit/web/lease"),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": "41",
        }
    ]
    assert unb64(txn["failure"][0]["request_range"]["key"]) == "canarykit/web/lease"
    state["refuse"] = True
    with pytest.raises(
        ck.LeaseLostError, match="state write refused: the lease of web is now runner-2's"
    ):
        await store.save("web", {"n": 2})
    with pytest.raises(ck.LeaseLostError, match="runner-2"):
        await store.archive("web", {"release": "v1"})


@anyio_test
async def test_a_member_that_refuses_connections_is_skipped_and_the_next_one_kept():
    def script(url, path, body, request):
        if url == A:
            return httpx.ConnectError("refused", request=request)
        return {**HEADER, "succeeded": True}

    members = Members(script)
    store = wired(EtcdStore([A, B]), members)
    await store.save("web", {"n": 1})
    await store.save("web", {"n": 2})
    assert [url for url, _, _ in members.requests] == [A, B, B]


@anyio_test
async def test_a_member_answering_5xx_is_skipped_but_a_4xx_refusal_is_not_retried():
    def script(url, path, body, request):
        if url == A:
            return 503, {"error": "etcdserver: no leader", "code": 14}
        return 400, {"error": f"bad request echoing {PASSWORD}", "code": 3}

    members = Members(script)
    store = wired(EtcdStore([A, B], username="root", password=PASSWORD), members)
    store._auth_token = "tok-0123456789"  # as if authenticated
    with pytest.raises(ck.StateSaveError, match="etcd refused it: HTTP 400") as caught:
        await store.save("web", {"n": 1})
    assert [url for url, _, _ in members.requests] == [A, B]
    assert PASSWORD not in str(caught.value)


@anyio_test
async def test_when_no_member_answers_the_error_names_each_and_comes_by_the_deadline():
    def script(url, path, body, request):
        return httpx.ConnectError("connection refused", request=request)

    members = Members(script)
    store = wired(EtcdStore([A, B], timeout=0.05, deadline=0.3), members)
    with pytest.raises(ck.StateError, match=r"no etcd member answered within 0.3 s.*10\.0\.0\.2"):
        await store.load("web")
    assert 2 <= len(members.requests) < 100  # round the list with a backoff, bounded


@anyio_test
async def test_authentication_comes_first_and_an_expired_token_is_renewed_once():
    tokens = iter(["tok-first-123456", "tok-second-123456"])
    seen = []

    def script(url, path, body, request):
        if path == "/v3/auth/authenticate":
            assert body == {"name": "root", "password": PASSWORD}
            return {**HEADER, "token": next(tokens)}
        seen.append(request.headers.get("Authorization"))
        if len(seen) == 1:
            return 401, {"error": "etcdserver: invalid auth token", "code": 16}
        return {**HEADER, "kvs": []}

    members = Members(script)
    store = wired(EtcdStore([A], username="root", password=PASSWORD), members)
    assert await store.load("web") is None
    assert members.paths() == [
        "/v3/auth/authenticate",
        "/v3/kv/range",
        "/v3/auth/authenticate",
        "/v3/kv/range",
    ]
    assert seen == ["tok-first-123456", "tok-second-123456"]


@anyio_test
async def test_a_damaged_or_newer_record_is_refused_on_load():
    value = {"text": "not json"}

    def script(url, path, body, request):
        return {**HEADER, "kvs": [{"key": body["key"], "value": b64(value["text"])}]}

    store = wired(EtcdStore([A]), Members(script))
    with pytest.raises(ck.CorruptStateError):
        await store.load("web")
    value["text"] = json.dumps({"format": "canarykit-state", "version": 2, "key": "web"})
    with pytest.raises(ck.StateVersionError, match="newer canarykit"):
        await store.load("web")
    data = {"phase": "x"}
    value["text"] = json.dumps(
        {"format": "canarykit-state", "version": 1, "key": "web", "sha256": "0" * 64, "data": data}
    )
    with pytest.raises(ck.CorruptStateError, match="checksum"):
        await store.load("web")


@anyio_test
async def test_commands_need_the_lease_to_be_taken_or_answered():
    members = Members(lambda *_: {**HEADER, "kvs": []})
    store = wired(EtcdStore([A]), members)
    inbox = store.commands("web")
    with pytest.raises(ck.LeaseError, match="only the holder"):
        await inbox.take()
    with pytest.raises(ck.LeaseError, match="only the holder"):
        await inbox.answer("00000000000000000001-0123abcd", True, "ok")
    with pytest.raises(ck.ConfigError) as caught:
        await inbox.answer("../x", True, "ok")
    assert caught.value.field == "id"
    with pytest.raises(ck.ConfigError) as caught:
        await inbox.send("promote now")
    assert caught.value.field == "command"
    with pytest.raises(ck.ConfigError) as caught:
        await inbox.send("promote", {"when": object()})
    assert caught.value.field == "options"
    assert members.requests == []


@anyio_test
async def test_wait_polls_for_the_answer_and_gives_none_at_its_timeout():
    members = Members(lambda *_: {**HEADER, "kvs": []})
    store = wired(EtcdStore([A]), members)
    answer = await store.commands("web").wait("00000000000000000001-0123abcd", 0.3)
    assert answer is None
    assert 2 <= len(members.requests) <= 4  # every 0.2 s, not a busy loop
    assert (
        unb64(members.requests[0][2]["key"])
        == "canarykit/web/answers/00000000000000000001-0123abcd"
    )
