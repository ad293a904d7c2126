"""Operator commands for a running ``canarykit run`` (its inbox), and ``canarykit status``.

A rollout here runs in this process on the real clock (a short plan on a fake router),
driven by ``canarykit run``'s own driver, while a thread sends commands as the command
tool does. The real commands against a real ``canarykit run`` are in
tests/integration/test_run_command.py.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit._cli._control import CommandInbox
from canarykit._cli._run import EXIT_ROLLED_BACK, execute
from canarykit.testing import FakeRouter
from helpers.policies import ERROR_RATE, STEP_PLAN, WAIT_FOR_PROMOTION, policy, rollout_table

WAITING = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion(), ck.SetWeight(60)])
POLICY = policy(STEP_PLAN, WAIT_FOR_PROMOTION, ERROR_RATE, rollout_table())


def rollout_in(state_dir, router, plan=WAITING):
    return ck.Rollout(plan, router=router, store=ck.stores.FileStore(state_dir), key="web")


def send_when(router, percent, inbox, *commands, timeout=10.0):
    """In a thread: once `router` serves `percent`, send each command; collect the answers."""
    answers = []

    def work():
        deadline = time.monotonic() + timeout
        while router.current.canary_percent != percent and time.monotonic() < deadline:
            time.sleep(0.01)
        for command, options in commands:
            answers.append(inbox.wait(inbox.send(command, **options), timeout))

    thread = threading.Thread(target=work)
    thread.start()
    return thread, answers


def test_a_command_is_handed_to_the_rollout_and_answered(tmp_path):
    router = FakeRouter()
    inbox = CommandInbox(tmp_path, "web")
    plan = ck.Plan(steps=[ck.SetWeight(20), ck.Pause(3600), ck.SetWeight(60)])
    thread, answers = send_when(router, 20, inbox, ("resume", {}), ("promote", {}))
    lines = io.StringIO()
    code = execute(rollout_in(tmp_path, router, plan), out=lines, lines=lines, inbox=inbox)
    thread.join()
    assert code == 0
    assert [s.canary_percent for s in router.applied] == [20, 60, 100]
    refused, promoted = answers
    # Not paused: resume is refused, with the machine's reason.
    assert refused["accepted"] is False
    assert refused["reason"].startswith("resume: the rollout is not paused")
    assert promoted == {"accepted": True, "reason": "the rollout is progressing"}
    assert "command: promote" in lines.getvalue()
    assert list(inbox.directory.iterdir()) == []  # every command and answer cleaned up


def test_promote_full_skips_the_remaining_steps(tmp_path):
    router = FakeRouter()
    inbox = CommandInbox(tmp_path, "web")
    thread, answers = send_when(router, 20, inbox, ("promote", {"full": True}))
    code = execute(
        rollout_in(tmp_path, router), out=io.StringIO(), lines=io.StringIO(), inbox=inbox
    )
    thread.join()
    assert code == 0 and answers[0]["accepted"] is True
    assert [s.canary_percent for s in router.applied] == [20, 100]


def test_abort_with_a_reason_rolls_back(tmp_path):
    router = FakeRouter()
    inbox = CommandInbox(tmp_path, "web")
    thread, answers = send_when(router, 20, inbox, ("abort", {"reason": "bad deploy"}))
    lines = io.StringIO()
    code = execute(rollout_in(tmp_path, router), out=lines, lines=lines, inbox=inbox)
    thread.join()
    assert code == EXIT_ROLLED_BACK and answers[0]["accepted"] is True
    assert router.current.is_stable_only
    assert "outcome   aborted: bad deploy" in lines.getvalue()


def test_nobody_answering_takes_the_command_back(tmp_path):
    inbox = CommandInbox(tmp_path, "web")
    started = time.monotonic()
    assert inbox.wait(inbox.send("promote"), timeout=0.3) is None
    assert 0.3 <= time.monotonic() - started < 5
    assert inbox.take() == []  # no runner starting later acts on it


def test_a_runner_refused_its_lease_leaves_the_commands_of_the_one_that_holds_it(tmp_path):
    holder = ck.stores.FileStore(tmp_path).lease("web", holder="the-first-runner")
    anyio.run(holder.acquire)
    try:
        inbox = CommandInbox(tmp_path, "web")
        waiting = inbox.send("promote")
        with pytest.raises(ck.LeaseHeldError):
            execute(
                rollout_in(tmp_path, FakeRouter()),
                out=io.StringIO(),
                lines=io.StringIO(),
                inbox=inbox,
            )
        assert waiting.exists()  # still there for the runner that holds the lease
    finally:
        anyio.run(holder.release)


def test_the_commands_of_tools_that_are_gone_are_dropped_not_acted_on(tmp_path):
    inbox = CommandInbox(tmp_path, "web")
    inbox.directory.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = inbox.directory / f"{time.time_ns():020d}-{int(dead.stdout)}.json"
    orphan.write_text('{"command": "abort"}')  # from a tool killed while it waited
    router = FakeRouter()
    thread, answers = send_when(router, 20, inbox, ("promote", {}))
    execute(rollout_in(tmp_path, router), out=io.StringIO(), lines=io.StringIO(), inbox=inbox)
    thread.join()
    assert not orphan.exists() and answers[0]["accepted"] is True
    assert router.current.canary_percent == 100  # promoted, not aborted by the orphan


def write_policy(tmp_path):
    path = tmp_path / "web.toml"
    path.write_text(POLICY.format(state=tmp_path / "state"))
    return path


def test_status_shows_the_saved_state(tmp_path, capsys):
    policy = write_policy(tmp_path)
    assert main(["status", str(policy)]) == 1
    assert "web: nothing saved in " in capsys.readouterr().out

    router = FakeRouter()
    inbox = CommandInbox(tmp_path / "state", "web")
    thread, _ = send_when(router, 20, inbox, ("pause", {"reason": "lunch"}), ("abort", {}))
    plan = ck.policy.load_policy(policy).plan
    rollout = ck.Rollout(
        plan,
        router=router,
        metrics=ck.testing.ScriptedMetrics(),
        decider=ck.policy.load_policy(policy).decider,
        store=ck.stores.FileStore(tmp_path / "state"),
        key="web",
    )
    execute(rollout, out=io.StringIO(), lines=io.StringIO(), inbox=inbox)
    thread.join()
    assert main(["status", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "phase     aborted at step 2/2; canary 0%" in out
    assert "reason    aborted by operator" in out
    assert "lease     released by " in out


def test_a_command_without_a_runner_exits_1_and_says_so(tmp_path, capsys):
    policy = write_policy(tmp_path)
    assert main(["promote", str(policy), "--wait", "0.2"]) == 1
    err = capsys.readouterr().err
    assert "no answer from a runner of 'web' within 0.2 s" in err
    assert "the command was taken back" in err
    assert main(["abort", str(policy), "--wait", "-1"]) == 2
    assert "--wait" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["not json", '{"format": "canarykit.state", "version": 1}'])
def test_status_of_a_damaged_state_file_is_a_clear_error(tmp_path, capsys, text):
    policy = write_policy(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "web.json").write_text(text)
    assert main(["status", str(policy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("canarykit: error: the command failed: ") and "web.json" in err
    assert "Traceback" not in err
