"""EtcdStore and EtcdLease against a real three-member etcd 3.4 cluster on loopback.

Each runner is its own `EtcdStore` (its own HTTP client, its own member order), as two
hosts would be. Most tests share one cluster, each under its own key prefix; the ones
that kill a member get a cluster of their own. etcd grants at least 2 s per lease with
its default 1 s election timeout, so the leases here ask for 2 s.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import secrets
import time
import urllib.request

import anyio
import pytest

import canarykit as ck
from canarykit.stores import EtcdStore
from canarykit.testing import FakeRouter
from canarykit.testing.lab import BinaryNotFound, EtcdCluster, TcpProxy, find_binary

pytest.importorskip("httpx", reason="pip install 'canarykit[etcd]'")

pytestmark = pytest.mark.anyio

TTL = 2.0


@pytest.fixture
def cluster(etcd_cluster):
    """The module's shared cluster (conftest.py); each test works under its own prefix."""
    return etcd_cluster


@pytest.fixture
def own_cluster(etcd_binary, tmp_path):
    with EtcdCluster(tmp_path / "etcd", binary=etcd_binary) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"t-{secrets.token_hex(4)}/"


def runner(cluster: EtcdCluster, prefix: str, start: int = 0) -> EtcdStore:
    """A store as one host would have it: the members listed from `start` on."""
    endpoints = cluster.endpoints[start:] + cluster.endpoints[:start]
    return EtcdStore(endpoints, prefix=prefix)


async def take_over(lease, *, within: float) -> float:
    """Acquire `lease` as soon as it is free, polling; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            await lease.acquire()
            return time.monotonic() - started
        except ck.LeaseHeldError:
            if time.monotonic() - started > within:
                raise
            await anyio.sleep(0.05)


async def test_save_load_and_archive_round_trip(cluster, prefix):
    async with runner(cluster, prefix) as store:
        assert await store.load("web") is None
        state = {"phase": "running", "percent": 10, "text": "ünïcode \u2028 line"}
        await store.save("web", state)
        assert await store.load("web") == state
        await store.save("web", {"phase": "succeeded"})
        assert await store.load("web") == {"phase": "succeeded"}
        first = {"release": "v1", "state": {"finished_at": 1_700_000_000.0}}
        second = {"release": "v2", "state": {"finished_at": 1_700_000_100.0}}
        for record in (first, second, first):  # the same record twice is kept once
            await store.archive("web", record)
        assert await store.history("web") == [second, first]
        assert await store.history("web", limit=1) == [second]
    raw = cluster.get(f"{prefix}web/state")
    assert raw is not None and json.loads(raw)["format"] == "canarykit-state"


async def test_a_burst_of_saves_on_one_store_queues_instead_of_failing(cluster, prefix):
    # Far more saves at once than the store sends in flight (MAX_IN_FLIGHT): they wait
    # their turn before their short timeout starts. Without that, calls time out waiting
    # for one of the HTTP client's connections, fail over, and run out of the deadline.
    keys = [f"k{number}" for number in range(1000)]
    endpoints = cluster.endpoints
    async with EtcdStore(endpoints, prefix=prefix, timeout=0.25, deadline=5) as store:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(store.save, key, {"key": key})
        assert [await store.load(key) for key in keys[:5]] == [{"key": k} for k in keys[:5]]
        assert await store.load(keys[-1]) == {"key": keys[-1]}


async def test_a_damaged_record_in_etcd_is_refused(cluster, prefix):
    key = base64.b64encode(f"{prefix}web/state".encode()).decode()
    value = base64.b64encode(b'{"format": "canarykit-state", "version": 1}').decode()
    body = json.dumps({"key": key, "value": value}).encode()
    request = urllib.request.Request(f"{cluster.endpoints[0]}/v3/kv/put", data=body)
    with urllib.request.urlopen(request, timeout=5):
        pass
    async with runner(cluster, prefix) as store:
        with pytest.raises(ck.CorruptStateError, match=f"etcd {prefix}web/state"):
            await store.load("web")


async def test_a_lease_is_held_renewed_and_released(cluster, prefix):
    async with runner(cluster, prefix, 0) as one, runner(cluster, prefix, 1) as two:
        first = one.lease("web", holder="runner-1", ttl=TTL)
        second = two.lease("web", holder="runner-2", ttl=TTL)
        await first.acquire()
        assert isinstance(first, ck.stores.EtcdLease) and isinstance(first.token, int)
        with pytest.raises(ck.LeaseHeldError, match="already being run by runner-1"):
            await second.acquire()
        for _ in range(4):  # past the TTL, renewed every third of it
            await anyio.sleep(TTL / 3)
            await first.renew()
        assert await first.check() == first.token
        holder = await two.holder_of("web")
        assert holder is not None and holder["holder"] == "runner-1"
        assert holder["token"] == first.token and 0 < holder["ttl_left"] <= TTL
        await first.release()
        assert await two.holder_of("web") is None
        await second.acquire()  # free at once, no TTL to wait out
        assert second.token is not None and second.token > holder["token"]
        await second.release()


async def test_a_traffic_target_is_claimed_across_rollout_keys(cluster, prefix):
    async with runner(cluster, prefix, 0) as one, runner(cluster, prefix, 2) as two:
        web = one.lease("web", holder="runner-1", ttl=TTL, target="nginx include /x.conf")
        api = two.lease("api", holder="runner-2", ttl=TTL, target="nginx include /x.conf")
        await web.acquire()
        with pytest.raises(ck.LeaseHeldError, match=r"traffic target .* for rollout web"):
            await api.acquire()
        assert await two.holder_of("api") is None  # refused whole: nothing of api kept
        await web.release()
        await api.acquire()
        await api.release()


async def test_a_holder_that_stops_renewing_is_taken_over_and_fenced_off(cluster, prefix):
    async with runner(cluster, prefix, 0) as one, runner(cluster, prefix, 1) as two:
        old = one.lease("web", holder="runner-1", ttl=TTL)
        new = two.lease("web", holder="runner-2", ttl=TTL)
        await old.acquire()
        old_token = old.token
        await one.save("web", {"by": "runner-1", "step": 1})
        # runner-1 stalls (a pause, a partition): it renews no more.
        waited = await take_over(new, within=TTL + 3)
        assert waited <= TTL + 1.5
        assert new.token is not None and old_token is not None and new.token > old_token
        await two.save("web", {"by": "runner-2", "step": 2})
        # runner-1 wakes up: every write and proof of its lease is refused.
        with pytest.raises(ck.LeaseLostError, match=r"state write refused: .* now runner-2's"):
            await one.save("web", {"by": "runner-1", "step": 3})
        with pytest.raises(ck.LeaseLostError, match="runner-2"):
            await one.archive("web", {"release": "v1", "by": "runner-1"})
        with pytest.raises(ck.LeaseLostError, match="taken over by runner-2"):
            await old.check()
        with pytest.raises(ck.LeaseLostError):
            await old.renew()
        await old.release()  # must not free runner-2's lease
        assert await two.load("web") == {"by": "runner-2", "step": 2}
        assert await two.history("web") == []
        holder = await one.holder_of("web")
        assert holder is not None and holder["holder"] == "runner-2"
        assert await new.check() == new.token
        await new.release()


async def test_a_renewal_after_the_ttl_ran_out_says_the_lease_was_lost(cluster, prefix):
    async with runner(cluster, prefix) as store:
        lease = store.lease("web", holder="runner-1", ttl=TTL)
        await lease.acquire()
        await anyio.sleep(TTL + 1.2)
        with pytest.raises(ck.LeaseLostError, match="expired"):
            await lease.renew()
        assert lease.token is None


async def test_operator_commands_reach_the_holder_and_its_answer_comes_back(cluster, prefix):
    async with (
        runner(cluster, prefix, 0) as holder_store,
        runner(cluster, prefix, 1) as laptop,
        runner(cluster, prefix, 2) as bystander,
    ):
        lease = holder_store.lease("web", holder="runner-1", ttl=TTL)
        await lease.acquire()
        inbox = laptop.commands("web")
        pause = await inbox.send("pause", {"reason": "looking"})
        promote = await inbox.send("promote", {})
        with pytest.raises(ck.LeaseError, match="only the holder"):
            await bystander.commands("web").take()
        taken = await holder_store.commands("web").take()
        assert taken == [(pause, "pause", {"reason": "looking"}), (promote, "promote", {})]
        assert await holder_store.commands("web").take() == []  # each command taken once
        assert await inbox.wait(pause, 0.3) is None  # not answered yet

        async def answer_soon():
            await anyio.sleep(0.3)
            await holder_store.commands("web").answer(pause, True, "paused at 10%")

        async with anyio.create_task_group() as group:
            group.start_soon(answer_soon)
            answer = await inbox.wait(pause, 5)
        assert answer is not None
        assert answer["accepted"] is True and answer["reason"] == "paused at 10%"
        assert answer["holder"] == "runner-1"
        await lease.release()


async def test_a_holder_that_lost_its_lease_cannot_take_the_commands(cluster, prefix):
    async with runner(cluster, prefix, 0) as one, runner(cluster, prefix, 1) as two:
        old = one.lease("web", holder="runner-1", ttl=TTL)
        await old.acquire()
        sent = await two.commands("web").send("abort", {})
        new = two.lease("web", holder="runner-2", ttl=TTL)
        await take_over(new, within=TTL + 3)
        with pytest.raises(ck.LeaseLostError, match="now runner-2's"):
            await one.commands("web").take()
        assert await two.commands("web").take() == [(sent, "abort", {})]
        await new.release()


async def test_writes_continue_through_the_others_when_the_leader_is_killed(own_cluster):
    cluster = own_cluster
    leader = cluster.leader_index()
    # The runner's first member is the leader, so the kill hits the member it talks to.
    async with runner(cluster, "ck/", leader) as store:
        lease = store.lease("web", holder="runner-1", ttl=15)
        await lease.acquire()
        slowest = 0.0
        for step in range(20):
            if step == 5:
                cluster.stop_member(leader)
            started = time.monotonic()
            await store.save("web", {"step": step})
            token = await lease.check()
            slowest = max(slowest, time.monotonic() - started)
        assert token == lease.token
        await lease.renew()
        assert await store.load("web") == {"step": 19}
        assert cluster.leader_index() != leader
        # A save in flight when the leader died waits one request timeout, then another
        # member carries it.
        assert slowest < store.timeout * 2 + 2
        cluster.start_member(leader)
        assert json.loads(cluster.get("ck/web/state") or b"{}")["data"] == {"step": 19}
        await lease.release()


async def test_with_etcd_auth_on_a_store_logs_in_and_a_wrong_password_is_refused_unshown(
    own_cluster,
):
    password = "Pw-s3cret-7Qx"
    endpoint = own_cluster.endpoints[0]
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": password}),
        ("/v3/auth/role/add", {"name": "root"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/enable", {}),
    ]:
        request = urllib.request.Request(endpoint + path, data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=5):
            pass
    endpoints = own_cluster.endpoints
    async with EtcdStore(endpoints, username="root", password=password) as store:
        await store.save("web", {"n": 1})
        assert await store.load("web") == {"n": 1}
        lease = store.lease("web", ttl=TTL)
        await lease.acquire()
        assert await lease.check() == lease.token
        await lease.release()
    async with EtcdStore(endpoints, username="root", password=password + "-wrong") as store:
        with pytest.raises(ck.StateError, match="authenticating as 'root' failed") as caught:
            await store.load("web")
        assert password not in str(caught.value)
    async with EtcdStore(endpoints) as store:
        with pytest.raises(ck.StateError, match="user name is empty"):
            await store.load("web")


@pytest.fixture
def tls_cluster(etcd_binary, tmp_path):
    try:
        find_binary("openssl", "openssl")
    except BinaryNotFound as exc:
        pytest.skip(str(exc))
    with EtcdCluster(tmp_path / "etcd", binary=etcd_binary, tls=True) as running:
        yield running


# A connection cut while the HTTP client is connecting or handshaking can be dropped by the
# client library (httpcore) without being closed: Python then warns of an unclosed socket
# when it is collected, an error under filterwarnings=error. The leak is the library's, on
# a path only these tests take (links cut mid-connect); collecting here keeps the warning
# in this test rather than in whichever test the collector happens to run in.
_CUT_MID_CONNECT = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def collect_dropped_sockets():
    yield
    gc.collect()


@_CUT_MID_CONNECT
@pytest.mark.usefixtures("collect_dropped_sockets")
async def test_over_tls_with_a_client_certificate(tls_cluster):
    files = tls_cluster.tls_files()
    assert all(url.startswith("https://") for url in tls_cluster.endpoints)
    async with EtcdStore(tls_cluster.endpoints, **files) as store:
        await store.save("web", {"n": 1})
        assert await store.load("web") == {"n": 1}
        lease = store.lease("web", ttl=TTL)
        await lease.acquire()
        await lease.renew()
        await lease.release()
    # The members' CA is not one the system trusts: refused, not sent in the clear. (A
    # timeout long enough for the handshake: httpcore on trio leaves a socket unclosed
    # when a TLS handshake is cancelled midway.)
    async with EtcdStore(tls_cluster.endpoints, timeout=3, deadline=3) as store:
        with pytest.raises(ck.StateError, match="CERTIFICATE_VERIFY_FAILED"):
            await store.load("web")
    # Without a client certificate the members refuse the connection.
    ca_only = {"ca_file": files["ca_file"]}
    async with EtcdStore(tls_cluster.endpoints, timeout=3, deadline=3, **ca_only) as store:
        with pytest.raises(ck.StateError, match="no etcd member answered"):
            await store.load("web")


@_CUT_MID_CONNECT
@pytest.mark.usefixtures("collect_dropped_sockets")
async def test_a_partitioned_holder_wakes_up_fenced_out(cluster, prefix):
    with contextlib.ExitStack() as stack:
        proxies = [
            stack.enter_context(TcpProxy("127.0.0.1", int(url.rsplit(":", 1)[1])))
            for url in cluster.endpoints
        ]
        cut_endpoints = [f"http://{proxy.address}" for proxy in proxies]
        async with (
            EtcdStore(cut_endpoints, prefix=prefix, timeout=0.5, deadline=1.5) as cut_off,
            runner(cluster, prefix, 1) as successor,
        ):
            old = cut_off.lease("web", holder="cut-off", ttl=TTL)
            await old.acquire()
            for proxy in proxies:
                proxy.partition()
            started = time.monotonic()
            with pytest.raises(ck.LeaseError, match=r"within 1\.5 s"):
                await old.renew()
            assert time.monotonic() - started < 3
            new = successor.lease("web", holder="successor", ttl=TTL)
            await take_over(new, within=TTL + 3)
            await successor.save("web", {"by": "successor"})
            for proxy in proxies:
                proxy.heal()
            with anyio.fail_after(10):
                while True:
                    try:
                        await cut_off.save("web", {"by": "cut-off"})
                    except ck.LeaseLostError as exc:
                        assert "now successor's" in str(exc)
                        break
                    except ck.StateSaveError:  # connections still being reset after the heal
                        await anyio.sleep(0.2)
                    else:
                        pytest.fail("the cut-off holder's write was accepted")
            with pytest.raises(ck.LeaseLostError, match="taken over by successor"):
                await old.check()
            assert await successor.load("web") == {"by": "successor"}
            await new.release()


async def test_a_rollout_on_the_store_excludes_a_runner_on_another_host(cluster, prefix):
    forever = ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()])
    async with runner(cluster, prefix, 0) as host_a, runner(cluster, prefix, 1) as host_b:
        router, other_router = FakeRouter(), FakeRouter()
        first = ck.Rollout(forever, router=router, store=host_a, key="web", release="v1")
        second = ck.Rollout(forever, router=other_router, store=host_b, key="web", release="v1")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(first.run)
                while router.current.canary_percent != 25:
                    await anyio.sleep(0.01)
                with pytest.raises(ck.LeaseHeldError, match="only one runner"):
                    await second.run()
                assert other_router.calls == []  # refused before touching anything
                first.promote()
        assert first.phase is ck.Phase.SUCCEEDED
        assert await host_b.holder_of("web") is None  # released at the end
        # The other host runs the next release on the same key, from the saved state.
        with anyio.fail_after(30):
            outcome = await ck.Rollout(
                ck.Plan(steps=[ck.SetWeight(25)]),
                router=other_router,
                store=host_b,
                key="web",
                release="v2",
            ).run()
        assert outcome.phase is ck.Phase.SUCCEEDED
        (finished,) = await host_a.history("web")
        assert finished["state"]["release"] == "v1"
        # The runner records the fencing token of the holding that saved and applied.
        assert finished["fencing"]["token"] == finished["fencing"]["apply_token"] >= 1
