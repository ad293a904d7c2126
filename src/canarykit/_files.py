"""Local files read and written as if another user had prepared them: bounded, never followed.

How this works. On a shared host, whoever can write to a directory canarykit uses can
put something other than the expected file there: a symbolic link to a file they want
overwritten (``web.lock -> /etc/passwd``), a FIFO that blocks a reader forever, a device,
or a file of gigabytes. So every file canarykit reads or writes in its state directory,
inbox or approval path goes through this module:

- `open_nofollow` opens without following a symbolic link at the last component
  (``O_NOFOLLOW``; an ``lstat`` check where the platform lacks it) and, by default,
  refuses anything but a regular file once open (``fstat``). It opens with
  ``O_NONBLOCK``, so opening a FIFO returns at once instead of waiting for a writer.
- `read_regular` reads at most `limit` bytes of a regular file (`read_regular_async`
  in a worker thread that a cancel scope or timeout abandons).
- `write_private` writes a whole file atomically: a temporary file created exclusively
  (``O_CREAT | O_EXCL``, which never follows a link planted under its name) with a
  random name and mode 0600, fsynced, then renamed over the target (a rename replaces a
  link; it never writes through it).
- `private_dir` creates a directory 0700 whatever the umask, and refuses one that
  another user owns or that group or others may write to, saying how to fix it.
- `parse_json` decodes text from such a file with a nesting limit, so a
  crafted file (``[`` a hundred thousand times) is an error, not a `RecursionError`.

Refusals raise `FileRefusedError` (an `OSError` and a `CanaryError`) naming what the file
is for and its path; a missing file raises `FileNotFoundError` unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._errors import FileRefusedError

__all__ = [
    "MAX_JSON_DEPTH",
    "json_depth",
    "open_nofollow",
    "parse_json",
    "private_dir",
    "read_regular",
    "read_regular_async",
    "write_private",
]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation

# Deeper than any file canarykit writes (its state nests about six levels), far shallower
# than what makes a recursive parser or a deepcopy run out of stack.
MAX_JSON_DEPTH = 64


def _kind(mode: int) -> str:
    """What a file of this mode is, for a message: ``a FIFO (named pipe)``."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return "not a regular file"


def _symlink_refused(what: str, path: str) -> FileRefusedError:
    return FileRefusedError(
        f"{what} {path}: is a symbolic link, which canarykit does not follow here "
        "(someone who can write to its directory could point it anywhere); "
        "put the file itself there"
    )


def open_nofollow(
    path: str | os.PathLike[str],
    flags: int,
    mode: int = 0o600,
    *,
    what: str = "file",
    regular: bool = True,
) -> int:
    """Open `path` without following a symbolic link there; the file descriptor.

    `flags` are `os.open` flags; ``O_NOFOLLOW``, ``O_NONBLOCK`` and ``O_CLOEXEC`` are
    added. With `regular` (the default) anything but a regular file is refused once open
    (`FileRefusedError`), so a FIFO never blocks the caller. A missing file raises
    `FileNotFoundError` (unless `flags` create it).
    """
    name = os.fspath(path)
    if not _O_NOFOLLOW:  # pragma: no cover - platforms without O_NOFOLLOW (Windows)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(name).st_mode):
                raise _symlink_refused(what, name)
    try:
        fd = os.open(name, flags | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY, mode)
    except OSError as exc:
        # Linux and macOS say ELOOP for a link under O_NOFOLLOW, FreeBSD EMLINK.
        if exc.errno in (errno.ELOOP, errno.EMLINK) and _is_link(name):
            raise _symlink_refused(what, name) from None
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise FileRefusedError(
                f"{what} {name}: is not a regular file but a FIFO or socket; "
                "canarykit uses only regular files here"
            ) from None
        raise
    if regular:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileRefusedError(
                    f"{what} {name}: is {_kind(info.st_mode)}, not a regular file; "
                    "canarykit uses only regular files here"
                )
        except BaseException:
            os.close(fd)
            raise
    return fd


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    Refused (`FileRefusedError`, naming `what` and the path): a symbolic link, a FIFO,
    socket, device or directory, and a file larger than `limit` bytes (also one that
    grows past it while being read). A missing file raises `FileNotFoundError`.
    """
    name = os.fspath(path)
    fd = open_nofollow(name, os.O_RDONLY, what=what)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise _too_large(what, name, f"is {size} bytes", limit)
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise _too_large(what, name, "grew while being read", limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(what: str, path: str, size: str, limit: int) -> FileRefusedError:
    return FileRefusedError(f"{what} {path}: {size}, more than the {limit} bytes allowed")


async def read_regular_async(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """`read_regular` in a worker thread that cancellation reaches at once.

    A cancelled or timed-out caller returns without waiting for the thread (a read stuck
    on a dead network file system finishes in the background and is thrown away).
    """
    read = functools.partial(read_regular, path, limit=limit, what=what)
    return await anyio.to_thread.run_sync(read, abandon_on_cancel=True)


def write_private(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, what: str = "file"
) -> None:
    """Replace the file at `path` with `data`, atomically, readable by this user only.

    The data goes to a new temporary file beside `path` (a dot, the name, a random part,
    ``.tmp``), created exclusively with mode 0600, then (``fsync=True``) flushed to disk,
    renamed over `path`, and the directory flushed too. A symbolic link planted at `path`
    is replaced, never written through; one planted under a temporary name is skipped.
    """
    target = Path(path)
    directory = target.parent
    for _ in range(16):
        temporary = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = open_nofollow(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, what=what)
        except FileExistsError:  # taken (or planted): another random name
            continue
        break
    else:  # pragma: no cover - sixteen collisions of 64 random bits
        raise FileRefusedError(f"{what} {target}: no free temporary name in {directory}")
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if fsync:
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename is durable only then); a no-op on Windows."""
    if sys.platform == "win32":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: str | os.PathLike[str], *, what: str = "state directory") -> Path:
    """The directory at `path`, created mode 0700 if missing and checked to be private.

    Missing directories (parents too) are created and then set to 0700 whatever the
    umask. `FileRefusedError`, saying how to fix it, when the directory is owned by
    another user (root's are accepted), when group or others may write to it, or when
    it is not a directory. Existing parents are not checked: who may write them is the
    host's business (``/tmp`` is writable by all and safe for a private directory).
    """
    directory = Path(path)
    missing: list[Path] = []
    probe = directory
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:  # made meanwhile by someone else: checked below
            continue
        _chmod_private(created)
    _check_private(directory, what)
    return directory


def _chmod_private(directory: Path) -> None:
    """Set mode 0700 on a directory we just made, through a descriptor (never a planted link)."""
    if sys.platform == "win32":  # pragma: no cover - no POSIX modes
        return
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _check_private(directory: Path, what: str) -> None:
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise FileRefusedError(f"{what} {directory}: was removed while being created") from None
    if not stat.S_ISDIR(info.st_mode):
        raise FileRefusedError(f"{what} {directory}: is {_kind(info.st_mode)}, not a directory")
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: ACLs, not modes
        return
    me = os.geteuid()
    if info.st_uid not in (me, 0):
        raise FileRefusedError(
            f"{what} {directory}: is owned by user id {info.st_uid}, not by you ({me}), "
            f"so that user controls what canarykit reads there; use a directory of your "
            f"own, or take it over with `chown {me} {directory}`"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(
            name
            for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "all users"))
            if info.st_mode & bit
        )
        raise FileRefusedError(
            f"{what} {directory}: is writable by {who} (mode "
            f"{stat.S_IMODE(info.st_mode):04o}), who could plant files and links there; "
            f"make it private with `chmod 700 {directory}`"
        )


def json_depth(value: Any) -> int:
    """How deeply `value` (decoded JSON) nests lists and dicts, counted without recursion.

    >>> json_depth({"a": [1, {"b": "[[["}]})
    3
    """
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(data: bytes, *, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`data` (UTF-8 JSON) decoded, or a `ValueError` saying, after `what`, what is wrong.

    Refuses bytes that are not UTF-8, nesting deeper than `max_depth`, and the constants
    ``NaN`` and ``Infinity``, which no file canarykit writes holds.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: not UTF-8 text (byte {exc.start} is invalid)") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # the parser nests as deep as the text: bounded by Python's stack
        raise ValueError(f"{what}: nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, and the constants refused
        raise ValueError(f"{what}: not valid JSON ({exc})") from None
    # Shallower than the parser's limit may still be too deep for what reads it next
    # (a recursive walk, a deepcopy).
    if json_depth(value) > max_depth:
        raise ValueError(f"{what}: nested more than {max_depth} levels deep")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
