"""The command inbox as another local user would attack it, and ``status`` on what it left.

A crafted, linked, piped or huge command file is answered as refused and moved aside;
the runner lives on and its rollout ends as the operator decides. Planted links never
make an answer write anywhere else; free text is shown escaped; stale answers go away.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import io
import json
import os
import stat
import threading
import time

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit._cli._control import CommandInbox, serve_inbox
from canarykit._cli._run import EXIT_ROLLED_BACK, execute
from canarykit.testing import FakeRouter
from helpers.policies import ERROR_RATE, STEP_PLAN, policy, rollout_table

# Each test gets its own traffic-target locks (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("lock_dir")

WAITING = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion(), ck.SetWeight(60)])
POLICY = policy(STEP_PLAN, ERROR_RATE, rollout_table())


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def stem():
    """A command file's name as a live tool (this process) would give it."""
    return f"{time.time_ns():020d}-{os.getpid()}"


def run_with(state, router, inbox, *commands, plan=WAITING):
    """Run a rollout on `router`; once it serves 20%, send `commands`; (code, answers, lines)."""
    answers = []

    def work():
        deadline = time.monotonic() + 10
        while router.current.canary_percent != 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        for command, options in commands:
            answers.append(inbox.wait(inbox.send(command, **options), 10))

    thread = threading.Thread(target=work)
    thread.start()
    lines = io.StringIO()
    rollout = ck.Rollout(plan, router=router, store=ck.stores.FileStore(state), key="web")
    code = execute(rollout, out=lines, lines=lines, inbox=inbox)
    thread.join()
    return code, answers, lines.getvalue()


def _plant(path, kind, victim):
    if kind == "deep":
        path.write_text("[" * 60_000)  # under the size limit: the depth limit refuses it
    elif kind == "bad bytes":
        path.write_bytes(b'{"command": "abort"}\xff')
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        victim.write_text('{"command": "abort"}')
        path.symlink_to(victim)
    elif kind == "huge":
        with open(path, "wb") as file:
            file.truncate(400 * 1024 * 1024)  # sparse: no disk, and never read whole
    elif kind == "not an object":
        path.write_text('["abort"]')
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("deep", "nested more than 64 levels"),
        ("bad bytes", "not UTF-8"),
        ("fifo", "FIFO"),
        ("symlink", "symbolic link"),
        ("huge", "more than the 65536 bytes allowed"),
        ("not an object", "not a JSON object"),
        ("directory", "a directory"),
    ],
)
def test_a_crafted_command_file_is_refused_moved_aside_and_the_runner_lives_on(
    tmp_path, victim, kind, says
):
    state = tmp_path / "state"
    inbox = CommandInbox(state, "web")
    inbox.prepare()
    planted = inbox.directory / f"{stem()}.json"
    _plant(planted, kind, victim)
    router = FakeRouter()
    started = time.monotonic()
    code, answers, _ = run_with(state, router, inbox, ("promote", {}))
    assert time.monotonic() - started < 15
    assert code == 0  # promoted by the operator, never aborted by the planted file
    assert [answer["accepted"] for answer in answers] == [True]
    assert [s.canary_percent for s in router.applied] == [20, 60, 100]
    answer = json.loads(planted.with_suffix(".done").read_text())
    assert answer["accepted"] is False
    assert says in answer["reason"] and str(planted) in answer["reason"]
    assert not os.path.lexists(planted)
    assert os.path.lexists(planted.with_suffix(".bad"))
    assert victim.read_text() in ("precious\n", '{"command": "abort"}')


def test_links_planted_for_an_answer_are_never_written_through(tmp_path, victim):
    state = tmp_path / "state"
    inbox = CommandInbox(state, "web")
    inbox.prepare()
    command = inbox.directory / f"{stem()}.json"
    # The old answer path wrote <command>.done.tmp through whatever was there.
    command.with_suffix(".done.tmp").symlink_to(victim)
    command.with_suffix(".done").symlink_to(victim)
    command.write_text('{"command": "resume"}')
    inbox.answer(command, False, "refused")
    assert victim.read_text() == "precious\n"
    assert not command.with_suffix(".done").is_symlink()
    assert json.loads(command.with_suffix(".done").read_text())["reason"] == "refused"


def test_the_inbox_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        inbox = CommandInbox(tmp_path / "state", "web")
        inbox.send("promote")
    finally:
        os.umask(old)
    for directory in (inbox.directory, inbox.state_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (sent,) = inbox.directory.iterdir()
    assert stat.S_IMODE(sent.stat().st_mode) == 0o600


def test_commands_in_an_inbox_others_may_write_are_ignored_not_acted_on(tmp_path, caplog):
    inbox = CommandInbox(tmp_path / "state", "web")
    inbox.prepare()
    inbox.directory.chmod(0o777)
    forged = inbox.directory / f"{stem()}.json"
    forged.write_text('{"command": "abort"}')  # another user's, in an open inbox

    async def serve():
        rollout = ck.Rollout(WAITING, router=FakeRouter(), store=ck.stores.MemoryStore(), key="web")
        started = anyio.Event()
        started.set()
        with anyio.move_on_after(1.2):
            await serve_inbox(rollout, inbox, started)
        return rollout

    rollout = anyio.run(serve)
    assert rollout.phase is ck.Phase.PENDING  # the forged abort was not handed on
    assert forged.exists()
    warnings = [r.getMessage() for r in caplog.records if "operator commands" in r.getMessage()]
    assert len(warnings) == 1 and "chmod 700" in warnings[0]


def test_sending_into_an_inbox_others_may_write_is_refused_with_the_fix(tmp_path, capsys):
    state = tmp_path / "state"
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=state))
    CommandInbox(state, "web").prepare()
    (state / "web.commands").chmod(0o757)
    assert main(["promote", str(policy), "--wait", "0.2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("canarykit: error:") and "chmod 700" in err


def test_a_reason_with_control_characters_is_kept_and_shown_escaped(tmp_path, capsys):
    state = tmp_path / "state"
    inbox = CommandInbox(state, "web")
    forged = "looking\n14:35:00 succeeded 100% phase: promoted\x1b[2J"
    router = FakeRouter()
    code, answers, lines = run_with(state, router, inbox, ("abort", {"reason": forged}))
    assert code == EXIT_ROLLED_BACK
    assert answers[0]["accepted"] is True
    assert "looking\\n14:35:00 succeeded" in lines
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=state))
    assert main(["status", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x1b" not in lines
    assert "reason    " in out and "looking\\n14:35:00 succeeded" in out
    assert "\n14:35:00" not in out
    assert str(state.absolute() / "web.json") in out


def test_a_reason_longer_than_the_limit_is_refused_by_the_command(tmp_path, capsys):
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=tmp_path / "state"))
    assert main(["pause", str(policy), "--reason", "x" * 1001, "--wait", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "--reason:" in err and "at most 1000" in err
    assert not (tmp_path / "state").exists()  # nothing sent


def test_stale_answers_are_removed_once_not_rescanned_forever(tmp_path):
    inbox = CommandInbox(tmp_path / "state", "web")
    inbox.prepare()
    old = time.time() - 3600
    for number in range(10_000):
        # From a live sender (this process) but an hour old: nobody is waiting for them.
        answer = inbox.directory / f"{number:020d}-{os.getpid()}.done"
        answer.write_text('{"accepted": true, "reason": ""}')
        os.utime(answer, (old, old))
    fresh = inbox.directory / f"{stem()}.done"
    fresh.write_text('{"accepted": true, "reason": ""}')
    bad = inbox.directory / f"{stem()}.bad"
    bad.write_text("[")
    started = time.perf_counter()
    assert inbox.take() == []
    first = time.perf_counter() - started
    assert sorted(inbox.directory.iterdir()) == sorted([fresh, bad])
    started = time.perf_counter()
    for _ in range(10):
        inbox.take()
    assert (time.perf_counter() - started) / 10 < 0.01 < first


def test_a_command_whose_tool_is_gone_is_dropped_at_once_between_sweeps(tmp_path):
    inbox = CommandInbox(tmp_path / "state", "web")
    inbox.prepare()
    assert inbox.take() == []  # swept just now: the next sweep is seconds away
    orphan = inbox.directory / f"{time.time_ns():020d}-999999999.json"
    orphan.write_text('{"command": "abort"}')
    assert inbox.take() == []
    assert not orphan.exists()


def test_status_says_when_the_lease_holder_is_gone(tmp_path, capsys):
    state = tmp_path / "state"
    store = ck.stores.FileStore(state)
    anyio.run(store.save, "web", {"state": ck.machine.RolloutState().to_json()})
    (state / "web.lock").write_text(
        json.dumps(
            {"holder": "gone\x1b[2J", "pid": 999999999, "host": os.uname().nodename}
            | {"released": False, "expires_at": time.time() + 30}
        )
    )
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=state))
    assert main(["status", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "lease     stale: taken by gone\\x1b[2J (pid 999999999" in out
    assert "whose process is gone" in out
