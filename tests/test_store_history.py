"""A key's archived records: kept when a finished rollout is replaced by the next release.

`FileStore.archive` and `history` (and `MemoryStore`'s), including what a local attacker
or a damaged disk puts in the history directory.
"""

# Imports internals on purpose: the history bound.

from __future__ import annotations

import os
import stat

import pytest

import canarykit as ck
from canarykit import StateError
from canarykit._stores import MAX_HISTORY

pytestmark = pytest.mark.anyio


def record(release, finished_at, phase="succeeded"):
    return {
        "format": 1,
        "key": "web",
        "release": release,
        "state": {"phase": phase, "finished_at": finished_at},
    }


async def test_archived_records_come_back_newest_first_whatever_the_archiving_order(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v2", 2_000.0))
    await store.archive("web", record("v1", 1_000.0, phase="rolled_back"))
    await store.archive("web", record("v3", 3_000.0))
    history = await store.history("web")
    assert [entry["release"] for entry in history] == ["v3", "v2", "v1"]
    assert history[2]["state"]["phase"] == "rolled_back"
    assert await store.history("other") == []


async def test_history_files_sort_by_finish_time_and_carry_the_release_sanitized(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v1.2/../../etc passwd", 1_700_000_000.5))
    directory = tmp_path / "state" / "web.history"
    (name,) = os.listdir(directory)
    assert name == "01700000000500000000-v1.2_.._.._etc_passwd.json"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "state") == ["web.history"]  # nothing escaped the directory


async def test_two_records_finished_at_the_same_time_are_both_kept(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v1", 1_000.0))
    await store.archive("web", record("v1", 1_000.0, phase="aborted"))
    phases = sorted(entry["state"]["phase"] for entry in await store.history("web"))
    assert phases == ["aborted", "succeeded"]


@pytest.mark.parametrize("kind", ["file", "memory"])
async def test_archiving_the_same_record_again_keeps_it_once(tmp_path, kind):
    # A new release archives the finished record, is then refused (the router not at
    # stable, say), and its next try archives the same record again.
    store = (
        ck.stores.FileStore(tmp_path / "state", fsync=False)
        if kind == "file"
        else ck.stores.MemoryStore()
    )
    await store.archive("web", record("v1", 1_000.0))
    await store.archive("web", record("v1", 1_000.0))
    assert [entry["release"] for entry in await store.history("web")] == ["v1"]


async def test_history_reads_only_the_newest_records(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    for number in range(5):
        await store.archive("web", record(f"v{number}", 1_000.0 + number))
    assert [e["release"] for e in await store.history("web", limit=2)] == ["v4", "v3"]
    assert MAX_HISTORY == 50


async def test_a_damaged_record_is_reported_in_its_place_not_fatal(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v1", 1_000.0))
    await store.archive("web", record("v2", 2_000.0))
    directory = tmp_path / "state" / "web.history"
    damaged = sorted(os.listdir(directory))[1]
    (directory / damaged).write_text("{ not json")
    history = await store.history("web")
    assert history[0]["file"] == damaged and "damaged" in history[0]["damaged"]
    assert history[1]["release"] == "v1"


async def test_a_planted_link_in_the_history_is_not_followed(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v1", 1_000.0))
    victim = tmp_path / "victim.json"
    victim.write_text("precious\n")
    directory = tmp_path / "state" / "web.history"
    (directory / "09999999999999999999-x.json").symlink_to(victim)
    history = await store.history("web")
    assert "symbolic link" in history[0]["damaged"]
    assert history[1]["release"] == "v1"
    assert victim.read_text() == "precious\n"


async def test_a_history_directory_that_is_a_link_is_refused(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "web.history").symlink_to(elsewhere)
    with pytest.raises(ck.StateSaveError, match="symbolic link"):
        await store.archive("web", record("v1", 1_000.0))
    with pytest.raises(StateError, match="symbolic link"):
        await store.history("web")
    assert os.listdir(elsewhere) == []


async def test_a_history_directory_open_to_others_is_refused(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)
    await store.archive("web", record("v1", 1_000.0))
    os.chmod(tmp_path / "state" / "web.history", 0o777)
    with pytest.raises(StateError, match="chmod 700"):
        await store.history("web")


async def test_the_memory_store_keeps_history_newest_first():
    store = ck.stores.MemoryStore()
    await store.archive("web", record("v2", 2_000.0))
    await store.archive("web", record("v1", 1_000.0))
    history = await store.history("web")
    assert [entry["release"] for entry in history] == ["v2", "v1"]
    history[0]["release"] = "changed"
    assert (await store.history("web"))[0]["release"] == "v2"  # copies
    with pytest.raises(ck.StateSaveError):
        await store.archive("web", {"state": {"finished_at": float("nan")}})
