"""PostgresStore and PostgresLease against a real PostgreSQL: state, leases, fencing, commands,
a server restart and a network partition (through TcpProxy), on asyncio and trio."""

# The fixtures are imported from postgres_fixtures, so each test's parameter "redefines" one.
# ruff: noqa: F811

from __future__ import annotations

import os
import socket
import time

import anyio
import psycopg
import pytest
from postgres_fixtures import own_postgres, postgres, table  # noqa: F401 (fixtures)

import canarykit as ck
from canarykit import FencedLease
from canarykit.stores import PostgresStore
from canarykit.testing import FakeRouter
from canarykit.testing.lab import TcpProxy

pytestmark = pytest.mark.anyio

RECORD = {"format": "x", "state": {"phase": "progressing"}, "n": [1, 2.5, None, "é"]}


def store_for(server, table, **options) -> PostgresStore:
    return PostgresStore(server.dsn, table=table, timeout=options.pop("timeout", 3.0), **options)


# ----------------------------------------------------------------------------- state


async def test_state_round_trips_and_a_missing_key_loads_as_none(postgres, table):
    async with store_for(postgres, table) as store:
        assert await store.load("web") is None
        await store.save("web", RECORD)
        assert await store.load("web") == RECORD
        await store.save("web", {"n": 2})
        assert await store.load("web") == {"n": 2}
        await store.delete("web")
        assert await store.load("web") is None


async def test_runners_starting_together_create_the_tables_once(postgres, table):
    stores = [store_for(postgres, table) for _ in range(6)]
    try:
        async with anyio.create_task_group() as group:
            for number, store in enumerate(stores):
                group.start_soon(store.save, f"web-{number}", {"n": number})
        assert [await stores[0].load(f"web-{n}") for n in range(6)] == [{"n": n} for n in range(6)]
    finally:
        for store in stores:
            await store.aclose()


async def test_a_second_store_sees_the_first_ones_state(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        await one.save("web", RECORD)
        assert await two.load("web") == RECORD


async def test_a_tampered_or_newer_record_is_refused_by_name(postgres, table):
    async with store_for(postgres, table) as store:
        await store.save("web", RECORD)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {table}_state SET envelope = replace(envelope, 'progressing', 'done')"
            )
        with pytest.raises(ck.CorruptStateError, match=rf"{table}_state\[web\].*checksum"):
            await store.load("web")
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {table}_state SET envelope = replace(envelope, '\"version\": 1', "
                "'\"version\": 7')"
            )
        with pytest.raises(ck.StateVersionError, match="version 7"):
            await store.load("web")


async def test_archived_records_come_back_newest_first_and_once(postgres, table):
    async with store_for(postgres, table) as store:
        old = {"release": "v1", "state": {"finished_at": 100.0}}
        new = {"release": "v2", "state": {"finished_at": 200.0}}
        await store.archive("web", new)
        await store.archive("web", old)
        await store.archive("web", new)  # again: kept once
        assert await store.history("web") == [new, old]
        assert await store.history("web", limit=1) == [new]
        assert await store.history("other") == []


# ----------------------------------------------------------------------------- leases


async def test_a_lease_excludes_a_second_holder_and_names_the_first(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        first = one.lease("web", holder="deploy-1", ttl=30)
        second = two.lease("web", holder="deploy-2", ttl=30)
        assert isinstance(first, FencedLease)
        await first.acquire()
        with pytest.raises(
            ck.LeaseHeldError, match=r"deploy-1 \(lease expires in (29|30)\.\d s, token \d+"
        ):
            await second.acquire()
        await first.renew()
        assert await first.check() == first.token
        info = await two.holder_of("web")
        assert info["holder"] == "deploy-1" and info["token"] == first.token
        assert 25 < info["ttl_left"] <= 30 and info["ttl"] == 30
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert abs(info["acquired_at"] - time.time()) < 60
        first_token = first.token
        await first.release()
        assert first.token is None
        assert await two.holder_of("web") is None
        await second.acquire()
        # The token keeps growing across holdings, a release included.
        assert second.token == first_token + 1
        await second.release()


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_told(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        old = one.lease("web", holder="old", ttl=0.3)
        new = two.lease("web", holder="new", ttl=30)
        await old.acquire()
        await anyio.sleep(0.5)
        assert await two.holder_of("web") is None  # ran out: nobody holds it
        await new.acquire()
        assert new.token == old.token + 1
        with pytest.raises(ck.LeaseLostError, match="now new's"):
            await old.renew()
        with pytest.raises(ck.LeaseLostError, match="now new's"):
            await old.check()
        # Releasing the lost lease leaves the new holder's row alone.
        await old.release()
        assert (await two.holder_of("web"))["holder"] == "new"
        await new.release()


async def test_a_target_lease_keeps_two_keys_off_one_router(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        web = one.lease("web", holder="a", target="nginx /etc/nginx/canary.conf")
        other = two.lease("web-2", holder="b", target="nginx /etc/nginx/canary.conf")
        await web.acquire()
        with pytest.raises(ck.LeaseHeldError, match=r"traffic target .* by a"):
            await other.acquire()
        # The refused acquire took nothing, not even its own key.
        assert await two.holder_of("web-2") is None
        await web.release()
        await other.acquire()
        await other.release()


# ----------------------------------------------------------------------------- fencing


async def test_a_runner_that_lost_its_lease_cannot_overwrite_its_successor(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        old = one.lease("web", holder="old", ttl=0.3)
        await old.acquire()
        await one.save("web", {"by": "old"})
        await anyio.sleep(0.5)
        new = two.lease("web", holder="new", ttl=30)
        await new.acquire()
        await two.save("web", {"by": "new"})
        with pytest.raises(
            ck.LeaseLostError, match="state write refused: the lease of web is now new's"
        ):
            await one.save("web", {"by": "old", "late": True})
        with pytest.raises(ck.LeaseLostError, match="state write refused"):
            await one.archive("web", {"by": "old"})
        with pytest.raises(ck.LeaseLostError):
            await old.check()
        assert await two.load("web") == {"by": "new"}
        assert await two.history("web") == []
        with psycopg.connect(postgres.dsn) as conn:
            token = conn.execute(f"SELECT token FROM {table}_state WHERE key = 'web'").fetchone()
        assert token == (new.token,)  # the state records the token of its write
        await new.release()


async def test_a_lost_lease_stays_a_fence_until_it_is_taken_anew(postgres, table):
    async with store_for(postgres, table) as one, store_for(postgres, table) as two:
        old = one.lease("web", holder="old", ttl=0.3)
        await old.acquire()
        await anyio.sleep(0.5)
        new = two.lease("web", holder="new", ttl=30)
        await new.acquire()
        with pytest.raises(ck.LeaseHeldError, match="by new"):
            await old.acquire()
        with pytest.raises(ck.LeaseLostError, match="state write refused"):
            await one.save("web", {"by": "old"})
        new_token = new.token
        await new.release()
        await old.acquire()
        assert old.token == new_token + 1
        await one.save("web", {"by": "old, again"})
        assert await two.load("web") == {"by": "old, again"}
        await old.release()


async def test_an_expired_but_not_taken_lease_refuses_writes_too(postgres, table):
    async with store_for(postgres, table) as store:
        lease = store.lease("web", holder="slow", ttl=0.2)
        await lease.acquire()
        await anyio.sleep(0.4)
        with pytest.raises(ck.LeaseLostError, match="ran out"):
            await store.save("web", {"late": True})
        assert await store.load("web") is None


# ----------------------------------------------------------------------------- commands


async def test_commands_go_from_any_host_to_the_lease_holder_and_back(postgres, table):
    async with (
        store_for(postgres, table) as runner,
        store_for(postgres, table) as laptop,
        store_for(postgres, table) as bystander,
    ):
        lease = runner.lease("web", holder="runner-1", ttl=30)
        await lease.acquire()
        pause = await laptop.commands("web").send("pause", {"reason": "look at it"})
        resume = await laptop.commands("web").send("resume", {})
        with pytest.raises(ck.LeaseLostError, match="holds no lease"):
            await bystander.commands("web").take()
        taken = await runner.commands("web").take()
        assert taken == [(pause, "pause", {"reason": "look at it"}), (resume, "resume", {})]
        assert await runner.commands("web").take() == []
        await runner.commands("web").answer(pause, True, "paused")
        answer = await laptop.commands("web").wait(pause, 2.0)
        assert answer["accepted"] is True and answer["reason"] == "paused"
        assert answer["holder"] == "runner-1"
        assert abs(answer["answered_at"] - time.time()) < 60
        started = time.monotonic()
        assert await laptop.commands("web").wait(resume, 0.3) is None
        assert 0.3 <= time.monotonic() - started < 2
        await lease.release()


async def test_a_runner_that_lost_its_lease_can_neither_take_nor_answer(postgres, table):
    async with store_for(postgres, table) as old_store, store_for(postgres, table) as new_store:
        old = old_store.lease("web", holder="old", ttl=0.3)
        await old.acquire()
        ident = await new_store.commands("web").send("abort", {})
        await anyio.sleep(0.5)
        with pytest.raises(ck.LeaseLostError, match="taking commands refused"):
            await old_store.commands("web").take()
        with pytest.raises(ck.LeaseLostError, match="answering refused"):
            await old_store.commands("web").answer(ident, False, "too late")
        new = new_store.lease("web", holder="new", ttl=30)
        await new.acquire()
        assert [c[1] for c in await new_store.commands("web").take()] == ["abort"]
        await new.release()


# ----------------------------------------------------------------------------- faults


async def test_the_call_after_a_server_restart_works(own_postgres, table):
    async with store_for(own_postgres, table) as store:
        lease = store.lease("web", holder="runner", ttl=30)
        await lease.acquire()
        await store.save("web", {"step": 1})
        own_postgres.restart()
        # The idle connection died with the server: the next call notices and reconnects.
        await lease.renew()
        await store.save("web", {"step": 2})
        assert await store.load("web") == {"step": 2}
        assert await lease.check() == lease.token
        await lease.release()


async def test_a_call_while_the_server_is_down_fails_and_the_next_one_after_works(
    own_postgres, table
):
    async with store_for(own_postgres, table, timeout=2.0) as store:
        await store.save("web", {"step": 1})
        own_postgres.stop()
        started = time.monotonic()
        with pytest.raises(ck.StateSaveError, match=r"127\.0\.0\.1") as caught:
            await store.save("web", {"step": 2})
        assert time.monotonic() - started < 4
        assert "connects again" in str(caught.value)
        own_postgres.start()
        await store.save("web", {"step": 3})
        assert await store.load("web") == {"step": 3}


@pytest.mark.parametrize("drop", [True, False], ids=["reset", "frozen"])
async def test_a_partition_fails_calls_within_the_timeout_and_heal_restores_them(
    postgres, table, drop
):
    with TcpProxy(postgres.host, postgres.port) as proxy:
        dsn = f"host=127.0.0.1 port={proxy.port} dbname=postgres user=postgres"
        async with PostgresStore(dsn, table=table, timeout=1.0) as store:
            lease = store.lease("web", holder="runner", ttl=30)
            await lease.acquire()
            await store.save("web", {"step": 1})
            proxy.partition(drop=drop)
            for call in (lambda: store.save("web", {"step": 2}), lease.renew):
                started = time.monotonic()
                with pytest.raises((ck.StateSaveError, ck.LeaseError), match="within 1 s"):
                    await call()
                assert time.monotonic() - started < 2.5
            proxy.heal()
            # The worker thread cut loose by the timeout may still be finishing: bounded.
            with anyio.fail_after(10):
                while True:
                    try:
                        await store.save("web", {"step": 3})
                        break
                    except ck.StateSaveError:
                        await anyio.sleep(0.2)
            assert await store.load("web") == {"step": 3}
            await lease.release()


async def test_a_partitioned_holder_wakes_up_fenced_out(postgres, table):
    with TcpProxy(postgres.host, postgres.port) as proxy:
        dsn = f"host=127.0.0.1 port={proxy.port} dbname=postgres user=postgres"
        async with (
            PostgresStore(dsn, table=table, timeout=1.0) as cut_off,
            store_for(postgres, table) as successor,
        ):
            old = cut_off.lease("web", holder="cut-off", ttl=0.5)
            await old.acquire()
            proxy.partition()
            await anyio.sleep(0.7)
            new = successor.lease("web", holder="successor", ttl=30)
            await new.acquire()
            await successor.save("web", {"by": "successor"})
            proxy.heal()
            with anyio.fail_after(10):
                while True:
                    try:
                        await cut_off.save("web", {"by": "cut-off"})
                    except ck.LeaseLostError as exc:
                        assert "now successor's" in str(exc)
                        break
                    except ck.StateSaveError:  # still reconnecting after the heal
                        await anyio.sleep(0.2)
                    else:
                        pytest.fail("the cut-off holder's write was accepted")
            assert await successor.load("web") == {"by": "successor"}
            await new.release()


# ----------------------------------------------------------------------------- a rollout


async def test_a_rollout_on_the_store_excludes_a_runner_on_another_host(postgres, table):
    forever = ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()])
    async with store_for(postgres, table) as host_a, store_for(postgres, table) as host_b:
        router, other_router = FakeRouter(), FakeRouter()
        first = ck.Rollout(forever, router=router, store=host_a, key="web", release="v1")
        second = ck.Rollout(forever, router=other_router, store=host_b, key="web", release="v1")
        with anyio.fail_after(20):
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
        with anyio.fail_after(20):
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
