"""FileApproval on what another user could put at its path: a FIFO, a link, a huge file.

Before, a FIFO nobody writes to blocked the gate's read forever: no timeout, abort or
SIGTERM reached it, and canary traffic stayed live. Now anything but a small regular
file is a no at once, and a read that does hang is abandoned by the caller's cancel scope.
"""

from __future__ import annotations

import os
import threading
import time

import anyio
import pytest

import canarykit as ck
from canarykit import _files
from canarykit.testing import FakeRouter

pytestmark = pytest.mark.anyio


def call():
    return ck.hooks.HookCall(
        hook=ck.machine.HookPoint.CONFIRM_PROMOTION,
        rollout="web",
        phase=ck.Phase.PROGRESSING,
        step=1,
        steps=1,
        weight=10.0,
        time=0.0,
    )


async def test_an_approval_fifo_nobody_writes_to_is_a_prompt_no(tmp_path):
    fifo = tmp_path / "web.approval"
    os.mkfifo(fifo)
    started = time.monotonic()
    answer = None
    with anyio.move_on_after(1):
        answer = await ck.hooks.FileApproval(fifo)(call())
    assert time.monotonic() - started < 1.5
    assert answer is not None and not answer.yes and not answer.stop
    assert "not a regular file" in answer.reason and "FIFO" in answer.reason


async def test_an_approval_read_that_hangs_is_abandoned_by_the_timeout(tmp_path, monkeypatch):
    released = threading.Event()

    def stuck(path, *, limit, what):  # a read on a dead network file system
        released.wait(10)
        return b"approve"

    monkeypatch.setattr(_files, "read_regular", stuck)
    started = time.monotonic()
    try:
        with anyio.move_on_after(0.5) as scope:
            await ck.hooks.FileApproval(tmp_path / "web.approval")(call())
    finally:
        released.set()
    assert scope.cancelled_caught
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("plant", "says"),
    [
        ("symlink", "symbolic link"),
        ("huge", "more than the 4096 bytes allowed"),
        ("directory", "a directory"),
    ],
)
async def test_an_approval_path_that_is_no_small_regular_file_never_approves(tmp_path, plant, says):
    path = tmp_path / "web.approval"
    if plant == "symlink":
        (tmp_path / "elsewhere").write_text("approve\n")
        path.symlink_to(tmp_path / "elsewhere")
    elif plant == "huge":
        path.write_text("approve\n" + "x" * 5000)  # before, its first 4 KiB approved
    else:
        path.mkdir()
    answer = await ck.hooks.FileApproval(path)(call())
    assert not answer.yes and says in answer.reason


async def test_an_approval_reason_is_shown_escaped(tmp_path):
    path = tmp_path / "web.approval"
    path.write_text("approve ana\x1b[2J: fine\u202e\x07\n")
    answer = await ck.hooks.FileApproval(path)(call())
    assert answer.yes
    assert answer.reason.isprintable()
    assert answer.reason.endswith("ana\\x1b[2J: fine\\u202e\\x07")


@pytest.mark.parametrize("stop", ["abort", "cancel"])
async def test_a_rollout_gated_on_a_fifo_can_be_stopped_and_rolls_back(tmp_path, stop):
    fifo = tmp_path / "web.approval"
    os.mkfifo(fifo)
    router = FakeRouter()
    hooks = ck.hooks.Hooks(confirm_promotion=ck.hooks.FileApproval(fifo), interval=0.2)
    rollout = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(10)]), router=router, hooks=hooks, call_timeout=3
    )
    started = time.monotonic()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rollout.run)
            while rollout.state.gate is not ck.machine.HookPoint.CONFIRM_PROMOTION:
                await anyio.sleep(0.01)
            await anyio.sleep(0.5)  # the gate has read the FIFO a few times by now
            assert router.current.canary_percent == 10
            if stop == "abort":
                rollout.abort("operator gave up")
            else:  # what SIGTERM does to `canarykit run`
                tg.cancel_scope.cancel()
    assert time.monotonic() - started < 5
    assert rollout.phase is ck.Phase.ABORTED
    assert router.current.is_stable_only
