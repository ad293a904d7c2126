"""Cancelling a running rollout, or Ctrl-C, sends traffic back to stable under a shield."""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

import signal
import subprocess
import sys
import textwrap

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

FOREVER = ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()])


async def run_until(rollout, router, percent):
    """Run `rollout` until `router` is at `percent`, then cancel it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(rollout.run)
        while router.current.canary_percent != percent:
            await anyio.sleep(0.005)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("delay", [0.0, 0.004, 0.012, 0.025, 0.05, 0.09])
async def test_cancelling_at_any_moment_ends_in_one_known_state(anyio_backend, tmp_path, delay):
    router = FakeRouter()
    plan = ck.from_weights([10, 20, 40, 80], hold=0.01)
    rollout = ck.Rollout(plan, router=router, clock=ck.SystemClock(), store=tmp_path, key="web")
    with anyio.move_on_after(delay):
        await rollout.run()
    saved = await ck.stores.FileStore(tmp_path).load("web")
    if rollout.phase is ck.Phase.PENDING:
        # Cancelled while taking the lease or loading the state: it never started, and
        # it must not write anything before it knows what was saved.
        assert router.calls == []
        assert saved is None
        return
    if rollout.phase is ck.Phase.SUCCEEDED:  # it finished before the cancellation came
        assert router.current.is_full_canary
    else:
        assert rollout.phase is ck.Phase.ABORTED
        assert rollout.state.reason == "cancelled while running"
        assert router.current.is_stable_only
    # The saved state says the same, so a new runner would not touch traffic again.
    assert ck.machine.RolloutState.from_json(saved["state"]) == rollout.state
    assert rollout.state.confirmed == router.current


async def test_the_rollback_finishes_under_a_shield_even_with_a_slow_router(anyio_backend):
    class SlowRouter(FakeRouter):
        async def apply(self, split):
            if split.is_stable_only:
                await anyio.sleep(0.05)  # a cancelled apply would never get here
            await super().apply(split)

    router = SlowRouter()
    rollout = ck.Rollout(FOREVER, router=router)
    with anyio.fail_after(5):
        await run_until(rollout, router, 25)
    assert router.current.is_stable_only
    assert rollout.phase is ck.Phase.ABORTED


async def test_a_rollback_that_cannot_finish_is_cut_by_its_deadline(anyio_backend):
    class StuckRouter(FakeRouter):
        async def apply(self, split):
            if split.is_stable_only:
                await anyio.sleep_forever()
            await super().apply(split)

    router = StuckRouter()
    rollout = ck.Rollout(FOREVER, router=router, rollback_timeout=0.1, call_timeout=60)
    with anyio.fail_after(5):
        await run_until(rollout, router, 25)
    assert rollout.phase is ck.Phase.PAUSED
    assert rollout.state.rollback_pending
    assert "rollback not confirmed within 0.1 s" in rollout.state.reason
    assert rollout.state.confirmed == router.current  # it says where traffic really is


async def test_cancelling_in_the_middle_of_an_apply_rolls_back_afterwards(anyio_backend):
    router = FakeRouter(hang_on={4})  # read, apply 25, read back, then apply 50 hangs
    plan = ck.Plan(steps=[ck.SetWeight(25), ck.SetWeight(50), ck.WaitForPromotion()])
    rollout = ck.Rollout(plan, router=router, call_timeout=60)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rollout.run)
            while len(router.calls) < 4:
                await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    assert rollout.phase is ck.Phase.ABORTED
    assert [s.canary_percent for s in router.applied] == [25, 0]


async def test_leave_keeps_traffic_and_saves_it_for_a_resume(anyio_backend):
    router = FakeRouter()
    store = ck.stores.MemoryStore()
    rollout = ck.Rollout(FOREVER, router=router, store=store, on_cancel="leave")
    with anyio.fail_after(5):
        await run_until(rollout, router, 25)
    assert router.current.canary_percent == 25
    assert [s.canary_percent for s in router.applied] == [25]
    clock = VirtualClock()
    resumed = ck.Rollout(FOREVER, router=router, clock=clock, store=store)
    clock.call_at(10, resumed.promote)  # the operator promotes the resumed rollout
    outcome = await resumed.run()
    assert resumed.resumed
    assert outcome.phase is ck.Phase.SUCCEEDED


async def test_a_cancelled_rollout_stays_aborted_until_retried(anyio_backend, tmp_path):
    router = FakeRouter()
    with anyio.fail_after(5):
        await run_until(ck.Rollout(FOREVER, router=router, store=tmp_path), router, 25)
    calls = list(router.calls)
    clock = VirtualClock()
    again = ck.Rollout(FOREVER, router=router, clock=clock, store=tmp_path)
    with pytest.raises(ck.ReleaseFinishedError, match="aborted at") as ended:
        await again.run()
    assert ended.value.phase is again.phase is ck.Phase.ABORTED
    assert router.calls == calls
    again.retry()
    clock.call_at(5, again.promote)
    assert (await again.run()).phase is ck.Phase.SUCCEEDED


CHILD = textwrap.dedent(
    """
    import sys
    import anyio
    import canarykit as ck
    from canarykit.testing import FakeRouter

    router = FakeRouter()

    def announce(event):
        if isinstance(event, ck.events.SplitConfirmed) and event.split.canary_percent == 25:
            print("ready", flush=True)

    async def main():
        plan = ck.Plan(steps=[ck.SetWeight(25), ck.WaitForPromotion()])
        await ck.Rollout(plan, router=router, listeners=[announce]).run()

    try:
        anyio.run(main, backend=sys.argv[1])
    except KeyboardInterrupt:
        print("interrupted", [s.canary_percent for s in router.applied], flush=True)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_rolls_back_a_running_rollout(backend):
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout.readline() == "ready\n"
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=30)
        finally:
            child.kill()
    assert out == "interrupted [25.0, 0.0]\n", err
    assert child.returncode == 0


def test_ctrl_c_in_the_command_line_tool_exits_130_without_a_traceback(
    monkeypatch, capsys, tmp_path
):
    import canarykit._cli._main as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_simulate", interrupted)
    assert main(["simulate", str(tmp_path / "policy.toml")]) == 130
    captured = capsys.readouterr()
    assert captured.err == "canarykit: interrupted\n"


class InterruptedRenewal:
    """A lease whose renewal is where Ctrl-C lands: the renewing task, not the driving one."""

    ttl = 0.06  # renewed every 20 ms

    def __init__(self):
        self.holder = "interrupted-renewal"
        self.renewals = 0

    async def acquire(self):
        pass

    async def renew(self):
        self.renewals += 1
        raise KeyboardInterrupt

    async def release(self):
        pass


def test_ctrl_c_landing_in_a_task_of_run_comes_out_as_keyboard_interrupt():
    # Trio delivers a Ctrl-C at a checkpoint of any task, such as run()'s lease renewal
    # or its task group's exit (found by the kill -9 trials). The caller must get a
    # KeyboardInterrupt, what a deploy tool catches, not an exception group; and traffic
    # must be back on stable. (asyncio raises a task's KeyboardInterrupt out of the event
    # loop itself, so there it cannot reach run()'s task group.)
    router = FakeRouter()
    lease = InterruptedRenewal()
    rollout = ck.Rollout(FOREVER, router=router, clock=ck.SystemClock(), lease=lease)
    with pytest.raises(KeyboardInterrupt):
        anyio.run(rollout.run, backend="trio")
    assert lease.renewals == 1
    assert [split.canary_percent for split in router.applied] == [25, 0]
    assert rollout.phase is ck.Phase.ABORTED
