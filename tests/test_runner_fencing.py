"""Fencing at the router: a runner proves its lease before every apply and records the token.

A runner frozen past its lease (here: its renewals stop reaching the lease, while its own
clock check still passes, as for a process stopped with SIGSTOP) must not move traffic
once another holder has taken over; a save its store refuses as fenced is a lost lease,
not a failed save. The real-engine version, with processes and SIGSTOP, is
tests/integration/test_fencing.py.
"""

from __future__ import annotations

import time

import anyio
import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

PROMOTED_BY_HAND = ck.Plan(
    steps=[ck.SetWeight(10), ck.WaitForPromotion(), ck.SetWeight(50), ck.WaitForPromotion()]
)


class FrozenRenewals(ck.stores.MemoryLease):
    """A MemoryLease whose renewals stop reaching the dict once `frozen` is set.

    The runner still sees each renewal succeed, so its own clock check passes: only the
    fenced `check()` can tell it that the holding ran out and was taken over.
    """

    frozen = False

    async def renew(self) -> None:
        if not self.frozen:
            await super().renew()


class FencedView:
    """A store whose writes are fenced by one lease, as `EtcdStore` fences by its own."""

    def __init__(self, store: ck.stores.MemoryStore, lease: ck.stores.MemoryLease) -> None:
        self.store = store
        self.lease_used = lease

    async def save(self, key, data):
        await self.lease_used.check()  # LeaseLostError once another holding took over
        await self.store.save(key, data)

    async def load(self, key):
        return await self.store.load(key)

    async def delete(self, key):
        await self.store.delete(key)


def expired(holders: dict) -> bool:
    """The frozen holding of "web" ran out (MemoryLease expiries are on time.monotonic)."""
    return holders["web"][1] <= time.monotonic()


async def wait_for(condition, timeout=5.0):
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# ---------------------------------------------------------------------------- MemoryLease


async def test_memory_lease_tokens_grow_with_each_holding_and_check_fails_after_a_takeover():
    holders: dict = {}
    first = ck.stores.MemoryLease(holders, "web", holder="a", ttl=0.05)
    second = ck.stores.MemoryLease(holders, "web", holder="b")
    assert first.token is None  # not held yet
    await first.acquire()
    token = first.token
    assert await first.check() == token
    await first.acquire()  # acquiring a holding that is still ours keeps it
    assert first.token == token
    await anyio.sleep(0.1)
    with pytest.raises(ck.LeaseLostError, match="ran out"):
        await first.check()  # expired, even before anyone took it over
    await second.acquire()
    assert second.token is not None and second.token > token
    with pytest.raises(ck.LeaseLostError, match="taken by b"):
        await first.check()
    await first.release()  # must not free b's holding
    taken_over = await second.check()
    assert taken_over == second.token
    await second.release()
    await first.acquire()  # a new holding of the key: a larger token again
    assert first.token > taken_over
    await first.release()


# ---------------------------------------------------------------------------- the runner


async def test_a_runner_whose_lease_was_taken_over_never_applies_again():
    holders: dict = {}
    router = FakeRouter()
    stale = FrozenRenewals(holders, "web", holder="runner-a", ttl=0.3)
    events: list = []
    rollout = ck.Rollout(
        PROMOTED_BY_HAND,
        router=router,
        store=ck.stores.MemoryStore(),  # its own: only the check can stop it
        key="web",
        lease=stale,
        listeners=[events.append],
    )
    successor = ck.stores.MemoryLease(holders, "web", holder="runner-b", ttl=30)

    async def freeze_then_take_over():
        await wait_for(lambda: router.current.canary_percent == 10)
        stale.frozen = True
        await wait_for(lambda: expired(holders))
        await successor.acquire()
        rollout.promote()  # the stale runner now wants 50%

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(freeze_then_take_over)
            with pytest.raises(ck.LeaseLostError, match="checking it before an apply failed"):
                await rollout.run()
    assert [s.canary_percent for s in router.applied] == [10]  # never 50
    [lost] = [e for e in events if isinstance(e, ck.events.LeaseRevoked)]
    assert "taken by runner-b" in lost.reason and lost.holder == "runner-a"
    assert holders["web"][0] == "runner-b"  # its release did not free the successor's lease
    await successor.release()


async def test_the_record_carries_the_token_of_the_holding_that_last_applied():
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])
    first = ck.Rollout(plan, router=router, clock=VirtualClock(), store=store, key="web")
    assert isinstance(first.lease, ck.stores.MemoryLease)  # the store's own, fenced
    outcome = await first.run(stop_at=30)  # in the pause after 10%
    assert outcome.phase is ck.Phase.PROGRESSING
    after_first = store.saved["web"]["fencing"]
    assert after_first["holder"] == first.lease.holder
    assert after_first["apply_holder"] == first.lease.holder
    assert after_first["apply_token"] == after_first["token"]

    # A second runner (another holder) resumes: until it applies, the record says the
    # first one moved traffic; its own holding has a larger token.
    second = ck.Rollout(plan, router=router, clock=VirtualClock(), store=store, key="web")
    seen: list[dict] = []
    real_save = store.save

    async def spying_save(key, data):
        seen.append(data["fencing"])
        await real_save(key, data)

    store.save = spying_save
    await second.run()
    assert second.phase is ck.Phase.SUCCEEDED
    assert seen[0]["holder"] == second.lease.holder
    assert seen[0]["token"] > after_first["token"]
    assert seen[0]["apply_holder"] == first.lease.holder
    assert seen[0]["apply_token"] == after_first["apply_token"]
    last = store.saved["web"]["fencing"]
    assert last["apply_holder"] == second.lease.holder
    assert last["apply_token"] == last["token"] == seen[0]["token"]


async def test_a_save_refused_by_the_store_ends_the_run_as_lease_lost_with_traffic_untouched():
    shared = ck.stores.MemoryStore()
    holders: dict = {}
    router = FakeRouter()
    stale = FrozenRenewals(holders, "web", holder="runner-a", ttl=0.3)
    events: list = []
    rollout = ck.Rollout(
        PROMOTED_BY_HAND,
        router=router,
        store=FencedView(shared, stale),
        key="web",
        lease=stale,
        listeners=[events.append],
    )
    successor = ck.stores.MemoryLease(holders, "web", holder="runner-b", ttl=30)

    async def freeze_then_take_over():
        await wait_for(lambda: router.current.canary_percent == 10)
        stale.frozen = True
        await wait_for(lambda: expired(holders))
        await successor.acquire()
        rollout.promote()  # a change of state: saved (refused) before the apply

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(freeze_then_take_over)
            with pytest.raises(ck.LeaseLostError, match="store refused the state write"):
                await rollout.run()
    # Not a failed save: no rollback through the router the successor now drives.
    assert [s.canary_percent for s in router.applied] == [10]
    assert not any(isinstance(e, ck.events.RouterCallFailed) for e in events)
    [lost] = [e for e in events if isinstance(e, ck.events.LeaseRevoked)]
    assert "taken by runner-b" in lost.reason
    assert ck.machine.RolloutState.from_json(shared.saved["web"]["state"]).step == 1
    await successor.release()


class BrokenCheck:
    """A fenced lease whose engine cannot answer the check (down, or hanging)."""

    def __init__(self, hang: bool) -> None:
        self.holder = "me"
        self.ttl = 30.0
        self.token = 7
        self.hang = hang
        self.checks = 0

    async def acquire(self):
        pass

    async def renew(self):
        pass

    async def release(self):
        pass

    async def check(self):
        self.checks += 1
        if self.hang:
            await anyio.sleep_forever()
        raise ConnectionError("engine unreachable")


@pytest.mark.parametrize("hang", [False, True], ids=["check-fails", "check-hangs"])
async def test_a_check_that_cannot_be_answered_counts_as_a_lost_lease(hang):
    router = FakeRouter()
    lease = BrokenCheck(hang)
    rollout = ck.Rollout(
        PROMOTED_BY_HAND, router=router, lease=lease, call_timeout=0.2, clock=VirtualClock()
    )
    with anyio.fail_after(5), pytest.raises(ck.LeaseLostError) as caught:
        await rollout.run()
    assert ("timed out" if hang else "engine unreachable") in str(caught.value)
    assert router.applied == [] and lease.checks == 1  # not retried as a router failure


async def test_any_store_with_a_lease_method_gives_the_default_lease():
    class OwnLeaseStore:
        """A store of a team's own (not FileStore nor MemoryStore) with a lease method."""

        def __init__(self):
            self.inner = ck.stores.MemoryStore()

        async def save(self, key, data):
            await self.inner.save(key, data)

        async def load(self, key):
            return await self.inner.load(key)

        def lease(self, key, *, target=None):
            return self.inner.lease(key, target=target)

    store = OwnLeaseStore()
    router = FakeRouter(traffic_target="lb web")
    rollout = ck.Rollout(PROMOTED_BY_HAND, router=router, store=store, key="web")
    assert isinstance(rollout.lease, ck.stores.MemoryLease)
    assert rollout.lease.target == "lb web"

    httpx = pytest.importorskip("httpx")  # noqa: F841 - EtcdStore needs it to talk, not here
    etcd = ck.stores.EtcdStore(["http://127.0.0.1:9"])
    rollout = ck.Rollout(PROMOTED_BY_HAND, router=router, store=etcd, key="web")
    assert isinstance(rollout.lease, ck.stores.EtcdLease)
    assert rollout.lease.store is etcd and rollout.lease.target == "lb web"


async def test_an_archive_refused_by_the_store_is_a_lost_lease_before_anything_moves():
    class FencedOutArchive(ck.stores.MemoryStore):
        async def archive(self, key, data):
            raise ck.LeaseLostError("archive refused: the lease of web is now runner-b's")

    store = FencedOutArchive()
    plan = ck.Plan(steps=[ck.SetWeight(10)])
    finished = await ck.Rollout(
        plan, router=FakeRouter(), clock=VirtualClock(), store=store, key="web", release="r1"
    ).run()
    assert finished.phase is ck.Phase.SUCCEEDED
    router = FakeRouter()
    events: list = []
    next_release = ck.Rollout(
        plan,
        router=router,
        clock=VirtualClock(),
        store=store,
        key="web",
        release="r2",
        listeners=[events.append],
    )
    with pytest.raises(ck.LeaseLostError, match="refused to archive"):
        await next_release.run()
    assert router.calls == []
    assert any(isinstance(e, ck.events.LeaseRevoked) for e in events)
    assert store.saved["web"]["state"]["release"] == "r1"  # the finished record stands
