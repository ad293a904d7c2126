"""One runner per rollout: leases, a second runner refused, a lost lease stops the runner."""

import json
import signal
import subprocess
import sys
import time

import anyio
import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

FOREVER = ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()])


# ---------------------------------------------------------------------------- FileLease


async def test_a_file_lease_excludes_a_second_holder_and_names_the_first(tmp_path):
    first = ck.stores.FileLease(tmp_path / "web.lock", holder="deploy-1")
    second = ck.stores.FileLease(tmp_path / "web.lock", holder="deploy-2")
    await first.acquire()
    with pytest.raises(ck.LeaseHeldError, match="deploy-1") as caught:
        await second.acquire()
    assert "expires in" in str(caught.value)
    info = first.read_holder()
    assert info["holder"] == "deploy-1"
    assert info["expires_at"] > time.time()
    await first.release()
    await second.acquire()
    assert second.read_holder()["holder"] == "deploy-2"
    await second.release()
    assert second.read_holder()["released"] is True


async def test_a_holder_that_stopped_renewing_is_reported_as_stuck(tmp_path):
    stuck = ck.stores.FileLease(tmp_path / "web.lock", holder="deploy-1", ttl=0.01)
    await stuck.acquire()
    await anyio.sleep(0.05)
    with pytest.raises(ck.LeaseHeldError, match=r"ran out .* looks stuck"):
        await ck.stores.FileLease(tmp_path / "web.lock").acquire()
    await stuck.release()


def test_a_killed_holder_does_not_block_the_next_runner(tmp_path):
    lock = tmp_path / "web.lock"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import anyio, sys, canarykit as ck\n"
            f"lease = ck.stores.FileLease({str(lock)!r}, holder='doomed')\n"
            "anyio.run(lease.acquire)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(ck.LeaseHeldError, match="doomed"):
                anyio.run(ck.stores.FileLease(lock).acquire)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    after = ck.stores.FileLease(lock, holder="next")
    anyio.run(after.acquire)  # the kernel dropped the dead process's lock
    assert json.loads(lock.read_text())["holder"] == "next"


async def test_renewing_a_file_lease_fails_once_its_file_was_replaced(tmp_path):
    lease = ck.stores.FileLease(tmp_path / "web.lock")
    await lease.acquire()
    await lease.renew()
    (tmp_path / "web.lock").unlink()
    with pytest.raises(ck.LeaseLostError, match="removed or replaced"):
        await lease.renew()
    await lease.release()


async def test_memory_leases_expire_and_the_old_holder_learns_it_lost():
    holders = {}
    old = ck.stores.MemoryLease(holders, "web", holder="a", ttl=0.02)
    new = ck.stores.MemoryLease(holders, "web", holder="b")
    await old.acquire()
    with pytest.raises(ck.LeaseHeldError, match="run by a"):
        await new.acquire()
    await anyio.sleep(0.05)
    await new.acquire()  # expired: taken over
    with pytest.raises(ck.LeaseLostError, match="taken by b"):
        await old.renew()
    await old.release()  # must not release b's lease
    assert holders["web"][0] == "b"


def test_bad_lease_settings_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ck.ConfigError, match=r"^ttl:"):
        ck.stores.FileLease(tmp_path / "x.lock", ttl=0)
    with pytest.raises(ck.ConfigError, match=r"^holder:"):
        ck.stores.FileLease(tmp_path / "x.lock", holder="a\nb")
    with pytest.raises(ck.ConfigError, match=r"^lease:"):
        ck.Rollout(FOREVER, router=FakeRouter(), lease=object())


# ---------------------------------------------------------------------------- the runner


@pytest.mark.parametrize("store_kind", ["file", "memory"])
async def test_a_second_runner_on_the_same_key_is_refused_at_once(tmp_path, store_kind):
    store = ck.stores.FileStore(tmp_path) if store_kind == "file" else ck.stores.MemoryStore()
    router = FakeRouter()
    first = ck.Rollout(FOREVER, router=router, store=store, key="web", release="v1")
    other_router = FakeRouter()
    second = ck.Rollout(FOREVER, router=other_router, store=store, key="web", release="v1")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            while router.current.canary_percent != 25:
                await anyio.sleep(0.01)
            with pytest.raises(ck.LeaseHeldError, match="only one runner"):
                await second.run()
            assert other_router.calls == []  # refused before touching anything
            first.promote()
    assert first.phase is ck.Phase.SUCCEEDED
    # Once the first runner is done, the key is free again, for the next release.
    next_release = ck.Plan(steps=[ck.SetWeight(25)])
    with anyio.fail_after(5):
        outcome = await ck.Rollout(
            next_release, router=other_router, store=store, key="web", release="v2"
        ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED


class FlakyLease:
    """A lease whose renewals start failing (a Kubernetes API that went away, say)."""

    def __init__(self, ttl=0.3, renewals=2, hang=False):
        self.holder = "me"
        self.ttl = ttl
        self.renewals = renewals
        self.hang = hang
        self.released = False

    async def acquire(self):
        pass

    async def renew(self):
        if self.renewals == 0:
            if self.hang:
                await anyio.sleep_forever()
            raise ConnectionError("lease API unreachable")
        self.renewals -= 1

    async def release(self):
        self.released = True


@pytest.mark.parametrize("hang", [False, True], ids=["renew-fails", "renew-hangs"])
async def test_a_runner_that_loses_its_lease_stops_at_once_and_says_so(anyio_backend, hang):
    router = FakeRouter()
    store = ck.stores.MemoryStore()
    events = []
    lease = FlakyLease(hang=hang)
    rollout = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(10), ck.Pause(3600), ck.SetWeight(50)]),
        router=router,
        clock=ck.SystemClock(),
        store=store,
        lease=lease,
        listeners=[events.append],
    )
    with anyio.fail_after(5), pytest.raises(ck.LeaseLostError, match="lost the rollout's lease"):
        await rollout.run()
    [lost] = [e for e in events if isinstance(e, ck.events.LeaseRevoked)]
    assert ("timed out" if hang else "lease API unreachable") in lost.reason
    assert lost.holder == "me"
    assert any(e.kind == "error" and "lease lost" in e.reason for e in rollout.timeline)
    # Stopped without touching traffic or the saved state: no rollback, no save after.
    assert router.current.canary_percent == 10
    assert [s.canary_percent for s in router.applied] == [10]
    saves = store.saves
    await anyio.sleep(0.1)
    assert store.saves == saves
    assert lease.released  # released what it could (a lease must not free another's)


class BlinkingLease(FlakyLease):
    """Renewals fail `failures` times in a row (a leader election), then work again."""

    def __init__(self, ttl=0.6, failures=2, lost=False):
        super().__init__(ttl=ttl)
        self.failures = failures
        self.lost = lost
        self.calls = 0

    async def renew(self):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            if self.lost:
                raise ck.LeaseLostError("the lease is now other's")
            raise ConnectionError("no leader yet")


async def test_a_renewal_that_fails_for_less_than_the_ttl_is_retried_and_the_rollout_goes_on(
    anyio_backend, caplog
):
    router = FakeRouter()
    lease = BlinkingLease()
    rollout = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(10), ck.Pause(1.2), ck.SetWeight(50)]),
        router=router,
        clock=ck.SystemClock(),
        lease=lease,
    )
    with anyio.fail_after(5):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert lease.calls > 2  # the failures, then renewals that worked
    assert "renewing the lease failed, trying again: ConnectionError: no leader yet" in caplog.text


async def test_the_engine_saying_the_lease_is_anothers_loses_it_without_retrying(anyio_backend):
    router = FakeRouter()
    lease = BlinkingLease(failures=1, lost=True)
    rollout = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(10), ck.Pause(3600)]),
        router=router,
        clock=ck.SystemClock(),
        lease=lease,
    )
    with anyio.fail_after(5), pytest.raises(ck.LeaseLostError, match="now other's"):
        await rollout.run()
    assert lease.calls == 1
    assert [s.canary_percent for s in router.applied] == [10]


async def test_a_runner_whose_file_lock_was_replaced_stops(tmp_path):
    router = FakeRouter()
    store = ck.stores.FileStore(tmp_path)
    rollout = ck.Rollout(
        FOREVER, router=router, store=store, key="web", lease=store.lease("web", ttl=0.3)
    )

    async def break_the_lock():
        while router.current.canary_percent != 25:
            await anyio.sleep(0.01)
        (tmp_path / "web.lock").unlink()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(break_the_lock)
            with pytest.raises(ck.LeaseLostError, match="removed or replaced"):
                await rollout.run()
    assert router.current.canary_percent == 25
    assert rollout.phase is ck.Phase.PAUSED  # where it stood; a new runner resumes it


async def test_an_expired_lease_is_never_acted_on_even_before_the_renewal_notices():
    router = FakeRouter()
    stalled = FlakyLease(ttl=0.05, renewals=1000)

    class SlowRouter(FakeRouter):
        async def read(self):
            # The process stalls for longer than the lease lasts (a long GC pause, say),
            # in a way the renewal task cannot see: it blocks the whole event loop.
            time.sleep(0.08)
            return await super().read()

    router = SlowRouter()
    rollout = ck.Rollout(FOREVER, router=router, clock=VirtualClock(), lease=stalled)
    with pytest.raises(ck.LeaseLostError, match=r"not renewed within its 0\.05 s"):
        await rollout.run()
    assert router.applied == []
