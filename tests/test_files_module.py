"""canarykit._files: the helpers every local file read and write goes through."""

# Imports internals on purpose: the file helpers.

from __future__ import annotations

import os
import stat
import time

import pytest

from canarykit import CanaryError, FileRefusedError
from canarykit._files import (
    MAX_JSON_DEPTH,
    open_nofollow,
    parse_json,
    private_dir,
    read_regular,
    write_private,
)


def test_read_regular_reads_up_to_its_limit_and_refuses_one_byte_more(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular(path, limit=100, what="test file") == b"x" * 100
    with pytest.raises(FileRefusedError, match=r"test file .*f: is 100 bytes, more than the 99"):
        read_regular(path, limit=99, what="test file")


def test_a_refusal_is_an_os_error_and_a_canary_error_and_a_missing_file_is_plain(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileRefusedError) as caught:
        read_regular(tmp_path / "fifo", limit=10, what="x")
    assert isinstance(caught.value, OSError) and isinstance(caught.value, CanaryError)
    with pytest.raises(FileNotFoundError) as missing:
        read_regular(tmp_path / "nothing", limit=10, what="x")
    assert not isinstance(missing.value, CanaryError)


def test_opening_a_fifo_for_writing_without_a_reader_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    started = time.monotonic()
    with pytest.raises(FileRefusedError, match="not a regular file"):
        open_nofollow(tmp_path / "fifo", os.O_WRONLY, what="lock file")
    assert time.monotonic() - started < 1


def test_a_dangling_symlink_is_never_created_through(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "would-be-created")
    with pytest.raises(FileRefusedError, match="symbolic link"):
        open_nofollow(tmp_path / "link", os.O_RDWR | os.O_CREAT, what="lock file")
    assert not (tmp_path / "would-be-created").exists()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_private_dir_makes_every_missing_level_0700_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        made = private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for directory in (made, made.parent, made.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_private_dir_accepts_a_readable_directory_and_refuses_a_file(tmp_path):
    (tmp_path / "shared-read").mkdir(mode=0o755)
    assert private_dir(tmp_path / "shared-read") == tmp_path / "shared-read"
    (tmp_path / "file").write_text("")
    with pytest.raises(FileRefusedError, match="not a directory"):
        private_dir(tmp_path / "file")


def test_write_private_is_0600_whatever_the_umask_and_leaves_no_temporary(tmp_path):
    old = os.umask(0)
    try:
        write_private(tmp_path / "f", b"data")
        write_private(tmp_path / "f", b"more", fsync=False)
    finally:
        os.umask(old)
    assert (tmp_path / "f").read_bytes() == b"more"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_parse_json_limits_depth_and_refuses_what_canarykit_never_writes():
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deepest.encode(), what="f") is not None
    for data, says in [
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested more than 64"),
        (b"[" * 100_000, "nested more than 64"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'"\xff"', "not UTF-8"),
        (b"{", "not valid JSON"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_json(data, what="f")
