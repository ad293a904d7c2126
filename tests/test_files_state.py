"""The state directory as another local user would attack it: links, FIFOs, junk, open modes.

Each test plants what an attacker (or a careless operator) would and checks that
canarykit neither writes through it, hangs on it, nor crashes with a traceback.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it; where the lock directory defaults to.

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tempfile
import threading

import anyio
import pytest

import canarykit as ck
from canarykit import FileRefusedError, _files
from canarykit._cli import main
from helpers.policies import ERROR_RATE, STEP_PLAN, policy, rollout_table

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lock_dir")]

STATE = {"state": {"phase": "progressing"}, "plan": {"steps": []}}


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


# ---------------------------------------------------------------------------- links


async def test_a_lock_file_symlinked_to_a_victim_is_refused_and_the_victim_unchanged(
    tmp_path, victim
):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "web.lock").symlink_to(victim)
    with pytest.raises(FileRefusedError, match="symbolic link"):
        await ck.stores.FileStore(state).lease("web").acquire()
    assert victim.read_text() == "precious\n"


async def test_a_planted_temporary_symlink_is_skipped_and_never_written(
    tmp_path, victim, monkeypatch
):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    names = iter(["planted0planted0", "freshnamefreshna"])
    monkeypatch.setattr(_files.secrets, "token_hex", lambda _size: next(names))
    (state / ".web.json.planted0planted0.tmp").symlink_to(victim)
    await ck.stores.FileStore(state).save("web", STATE)
    assert victim.read_text() == "precious\n"
    assert await ck.stores.FileStore(state).load("web") == STATE


async def test_a_state_file_symlink_is_refused_on_load_and_replaced_on_save(tmp_path, victim):
    state = tmp_path / "state"
    store = ck.stores.FileStore(state)
    await store.save("web", STATE)
    os.replace(store.path("web"), victim)  # a real state file, reached through a link
    store.path("web").symlink_to(victim)
    with pytest.raises(ck.CorruptStateError, match="symbolic link"):
        await store.load("web")
    before = victim.read_text()
    await store.save("web", {"other": 1})
    assert victim.read_text() == before
    assert not store.path("web").is_symlink()


# ---------------------------------------------------------------------------- modes


async def test_the_state_directory_is_private_whatever_the_umask(tmp_path):
    state = tmp_path / "new" / "state"
    old = os.umask(0)
    try:
        store = ck.stores.FileStore(state)
        await store.save("web", STATE)
        await store.lease("web").acquire()
    finally:
        os.umask(old)
    for directory in (state, state.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("web.json", "web.lock"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
async def test_a_state_directory_others_may_write_is_refused_with_the_fix(tmp_path, mode):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    store = ck.stores.FileStore(state)
    with pytest.raises(ck.StateSaveError, match=re.escape(f"chmod 700 {state}")):
        await store.save("web", STATE)
    with pytest.raises(ck.StateError, match="writable by"):
        await store.load("web")
    with pytest.raises(FileRefusedError, match="chmod 700"):
        await store.lease("web").acquire()
    assert list(state.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
async def test_a_state_directory_of_another_user_is_refused_naming_the_owner(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 4242, 4242)
    with pytest.raises(ck.StateSaveError, match=r"owned by user id 4242.*chown 0"):
        await ck.stores.FileStore(state).save("web", STATE)


# ---------------------------------------------------------------------------- damage


def _plant(path, kind):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        with open(path, "wb") as file:
            file.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    elif kind == "bad bytes":
        path.write_bytes(b'{"format": "canarykit-state"}\xff')
    elif kind == "deep":
        path.write_text("[" * 100_000)
    elif kind == "deep object":
        path.write_text('{"a":' * 100 + "1" + "}" * 100)


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("fifo", "FIFO"),
        ("directory", "a directory"),
        ("huge", "more than the 16777216 bytes allowed"),
        ("bad bytes", "not UTF-8"),
        ("deep", "nested more than 64 levels"),
        ("deep object", "nested more than 64 levels"),
    ],
)
async def test_a_damaged_state_file_is_a_clear_error_promptly(tmp_path, kind, says):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _plant(state / "web.json", kind)
    with anyio.fail_after(5), pytest.raises(ck.CorruptStateError, match=says) as caught:
        await ck.stores.FileStore(state).load("web")
    assert str(state / "web.json") in str(caught.value)


POLICY = policy(STEP_PLAN, ERROR_RATE, rollout_table())


@pytest.mark.parametrize("kind", ["fifo", "bad bytes", "deep", "huge"])
def test_status_on_a_damaged_state_file_exits_1_with_a_clear_message(tmp_path, kind, capsys):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _plant(state / "web.json", kind)
    policy = tmp_path / "web.toml"
    policy.write_text(POLICY.format(state=state))
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["status", str(policy)])))
    worker.daemon = True  # a FIFO must not hang the command: a hung one fails the test
    worker.start()
    worker.join(10)
    assert codes == [1]
    err = capsys.readouterr().err
    assert err.startswith("canarykit: error:")
    assert str(state / "web.json") in err


# ---------------------------------------------------------------------------- targets


async def test_two_state_directories_cannot_drive_one_traffic_target(tmp_path):
    target = "nginx include /etc/nginx/canary/web.conf"
    first = ck.stores.FileStore(tmp_path / "a").lease("web", holder="runner-a", target=target)
    second = ck.stores.FileStore(tmp_path / "b").lease("shop", holder="runner-b", target=target)
    await first.acquire()
    with pytest.raises(ck.LeaseHeldError) as caught:
        await second.acquire()
    message = str(caught.value)
    assert target in message and "runner-a" in message
    assert str((tmp_path / "a" / "web.lock").absolute()) in message
    # The refused lease holds nothing: its own rollout's lock is free again.
    await ck.stores.FileStore(tmp_path / "b").lease("shop").acquire()
    other = ck.stores.FileStore(tmp_path / "b").lease("blog", target="another include")
    await other.acquire()
    await first.release()
    await other.release()
    third = ck.stores.FileStore(tmp_path / "c").lease("web", target=target)
    await third.acquire()
    await third.renew()
    await third.release()


async def test_the_target_lock_directory_is_private_and_never_followed(tmp_path, lock_dir, victim):
    lease = ck.stores.FileStore(tmp_path / "a").lease("web", target="haproxy /run/haproxy.sock be")
    lock_dir.mkdir(mode=0o700)
    lease.target_path.symlink_to(victim)
    with pytest.raises(FileRefusedError, match="symbolic link"):
        await lease.acquire()
    assert victim.read_text() == "precious\n"
    assert not lease.held
    lease.target_path.unlink()
    lock_dir.chmod(0o777)
    with pytest.raises(FileRefusedError, match="chmod 700"):
        await lease.acquire()


async def test_a_replaced_target_lock_loses_the_lease(tmp_path):
    lease = ck.stores.FileStore(tmp_path / "a").lease("web", target="the-router")
    await lease.acquire()
    lease.target_path.unlink()
    with pytest.raises(ck.LeaseLostError, match="removed or replaced"):
        await lease.renew()
    await lease.release()


def test_the_target_lock_directory_defaults_to_a_private_per_user_place(monkeypatch, tmp_path):
    from canarykit._lease import target_lock_dir

    monkeypatch.delenv("CANARYKIT_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert target_lock_dir() == tmp_path / "canarykit-targets"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # computed again from TMPDIR
    (tmp_path / "tmp").mkdir()
    assert target_lock_dir() == tmp_path / "tmp" / f"canarykit-targets-{os.geteuid()}"


async def test_a_memory_store_keeps_one_runner_per_target_too():
    store = ck.stores.MemoryStore()
    await store.lease("web", holder="a", target="t").acquire()
    with pytest.raises(ck.LeaseHeldError, match=r"traffic target t .* by a"):
        await store.lease("shop", holder="b", target="t").acquire()
    await store.lease("shop", holder="b", target="u").acquire()


# ---------------------------------------------------------------------------- holders


async def test_a_holder_whose_process_is_gone_shows_as_stale(tmp_path):
    lock = tmp_path / "state" / "web.lock"
    script = (
        "import anyio, canarykit as ck\n"
        f"lease = ck.stores.FileLease({str(lock)!r}, holder='gone')\n"
        "anyio.run(lease.acquire)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    info = ck.stores.FileLease(lock).read_holder()
    assert info["holder"] == "gone" and info["released"] is False
    assert info["stale"] is True
    live = ck.stores.FileLease(tmp_path / "state" / "live.lock", holder="me")
    await live.acquire()
    assert live.read_holder()["stale"] is False


async def test_a_damaged_lock_file_never_crashes_the_holder_report(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "web.lock").write_text("[" * 4000)
    assert ck.stores.FileLease(state / "web.lock").read_holder() is None
    await ck.stores.FileLease(state / "web.lock").acquire()
