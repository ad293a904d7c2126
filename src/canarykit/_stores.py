"""State stores: where a rollout's state is saved so that a new process can resume it.

How this works. The runner saves a small JSON record after every change of state (see
`Rollout`); a store keeps the last record per key. `FileStore` is the one to use in
production: one file per key in a directory, each save written to a temporary file in
the same directory, flushed to disk (fsync), renamed over the old file, and the
directory fsynced, so a crash (even ``kill -9`` or a power cut) leaves either the old
record or the new one, never half of one. Each file carries its format version, its key
and a SHA-256 of its data, so a damaged or hand-edited file is refused by name instead
of resuming a rollout from garbage. `MemoryStore` keeps records in a dict, for tests.

The directory is trusted only if it is private: `FileStore` creates it 0700 whatever the
umask and refuses one that other users own or may write to; it opens every file there
without following symbolic links, reads only regular files of bounded size, and creates
temporary files exclusively, so whoever cannot write the directory cannot make a save
write anywhere else or a load hang or crash.

Both offer `lease(key)`, the default `Lease` that keeps a second runner off the same
rollout (a lock file beside the state for `FileStore`), and with ``target=`` off the same
traffic target.

History. A key holds one release's rollout at a time; when a finished one is replaced by
the next release, the runner first calls `archive(key, data)` with the old record.
`FileStore` keeps it in ``<key>.history/`` beside the state: one file per record, in the
same checked envelope, named ``<finish time in ns>-<release>.json`` so the names sort
by finish time (the release id with anything but letters, digits, ``_``, ``.`` and ``-``
replaced by ``_``). The directory is private and never followed through a link.
`history(key)` reads back the newest records first, at most `MAX_HISTORY` of them; a
damaged one is reported in its place (``{"damaged": why, "file": name}``) rather than
failing the whole list. Both methods are optional parts of the `StateStore` protocol:
the runner archives only when the store has `archive`.

The errors about saved state::

    CanaryError
    └── StateError                 saved state cannot be read, written or used
        ├── CorruptStateError      unreadable: not JSON, bad checksum, wrong shape
        ├── StateVersionError      written under a schema this canarykit cannot read
        ├── PlanMismatchError      resuming with a plan other than the one saved
        └── StateSaveError         the state could not be saved
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._errors import (
    ConfigError,
    CorruptStateError,
    FileRefusedError,
    StateError,
    StateSaveError,
    StateVersionError,
)
from ._files import parse_json, private_dir, read_regular, read_regular_async, write_private
from ._lease import FileLease, MemoryLease
from ._safe import check_name

# canonical_json lives with the state codec now; still importable from here, as before.
from ._state_json import canonical_json as canonical_json

__all__ = ["MAX_HISTORY", "FileStore", "MemoryStore"]

logger = logging.getLogger("canarykit")

# What a FileStore file says it is, and the version of that envelope (not of the state
# inside it, which carries its own schema version).
FILE_FORMAT = "canarykit-state"
FILE_FORMAT_VERSION = 1
# The largest state file a load reads. Saved state is small (a plan, a state, a decider's
# counts; free text in it is cut to MAX_TEXT), so a bigger file was not written by us.
MAX_STATE_BYTES = 16 * 1024 * 1024
# `history` reads at most this many records (the newest): enough to see a service's
# recent releases, bounded whatever the directory holds.
MAX_HISTORY = 50
# Names looked at in a history directory, at most: a directory flooded with files
# cannot make `history` slow without bound.
_MAX_HISTORY_NAMES = 100_000
_HISTORY_NAME = re.compile(r"(\d{20})-([A-Za-z0-9_.-]{0,64})(?:~\d+)?\.json")
_RELEASE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class FileStore:
    """A `StateStore` keeping one JSON file per key in `directory`: crash-safe, the default.

    ``FileStore("/var/lib/deploy/canary")`` keeps the rollout saved under key ``"web"`` in
    ``/var/lib/deploy/canary/web.json`` (the directory is created at the first save). Keys
    are 1-128 letters, digits, ``_``, ``.`` or ``-``, so a key can never name a file
    outside the directory. Each save writes a temporary file beside the target, fsyncs
    it, renames it over the target and fsyncs the directory: after a crash the file
    holds the last complete save. `load` refuses a damaged file (`CorruptStateError`)
    or one in a newer format (`StateVersionError`), naming the file and the problem.

    ``fsync=False`` skips the two fsyncs (faster; a power cut may then lose the last
    saves, though never leave half a file). `lease(key)` gives a `FileLease` on
    ``<key>.lock`` beside the state, which `Rollout` takes by default.

    The directory is created mode 0700 whatever the umask, and refused
    (`FileRefusedError`, saying how to fix it) when another user owns it or group or
    others may write to it. Files in it are never opened through a symbolic link, and a
    state file that is not a regular file or exceeds 16 MiB is refused as damaged.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise ConfigError("directory", directory, "must be a directory path")
        if not isinstance(fsync, bool):
            raise ConfigError("fsync", fsync, "must be true or false")
        self.directory = Path(directory)
        self._fsync = fsync

    def path(self, key: str) -> Path:
        """The file that holds `key`'s state (ConfigError for a key that is not a plain name)."""
        return self.directory / f"{check_name('key', key)}.json"

    def lease(
        self,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 30.0,
        target: str | None = None,
    ) -> FileLease:
        """The default lease for `key`: a `FileLease` on ``<key>.lock`` beside the state.

        With `target` (what the router controls), it also locks that target host-wide,
        so another state directory or rollout name cannot drive the same router.
        """
        path = self.directory / f"{check_name('key', key)}.lock"
        return FileLease(path, holder=holder, ttl=ttl, target=target)

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Replace `key`'s state with `data`, atomically and durably."""
        path = self.path(key)
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{path}: the state is not plain JSON data: {exc}") from None
        try:
            await anyio.to_thread.run_sync(self._write, path, text)
        except FileRefusedError as exc:
            raise StateSaveError(f"could not save the state: {exc}") from exc
        except OSError as exc:
            raise StateSaveError(f"{path}: could not write the state: {exc}") from exc

    def _write(self, path: Path, text: str) -> None:
        private_dir(path.parent)
        # The temporary file starts with a dot, so it can never be taken for a key's file.
        write_private(path, text.encode("utf-8"), fsync=self._fsync, what="state file")

    async def load(self, key: str) -> dict[str, Any] | None:
        """`key`'s saved data, or None if nothing was saved under it."""
        path = self.path(key)
        try:
            _check_directory(self.directory)
        except OSError as exc:  # FileRefusedError: open to other users
            raise StateError(f"could not read the saved state: {exc}") from None
        try:
            raw = await read_regular_async(path, limit=MAX_STATE_BYTES, what="state file")
        except FileNotFoundError:
            return None
        except FileRefusedError as exc:
            raise CorruptStateError(f"{exc}; it cannot be a saved state") from None
        except OSError as exc:
            raise StateError(f"{path}: could not read the saved state: {exc}") from exc
        return _unwrap(path, key, raw)

    async def delete(self, key: str) -> None:
        """Forget `key`'s state (nothing happens if there is none); its lock file stays."""
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return

    def history_dir(self, key: str) -> Path:
        """The directory of `key`'s archived records: ``<key>.history`` beside the state."""
        return self.directory / f"{check_name('key', key)}.history"

    async def archive(self, key: str, data: dict[str, Any]) -> None:
        """Keep `data`, a finished rollout's record, in `key`'s history.

        The file is named after the record's finish time (``state.finished_at``, else
        now) and its release id (``release``, sanitized), so names sort by finish time.
        Written like a save (private, atomic, never through a link); `StateSaveError`
        when it cannot be.
        """
        directory = self.history_dir(key)
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{directory}: the record is not plain JSON data: {exc}") from None
        stem = f"{_finish_ns(data):020d}-{_release_part(data.get('release'))}"
        try:
            await anyio.to_thread.run_sync(self._write_history, directory, stem, text)
        except FileRefusedError as exc:
            raise StateSaveError(f"could not archive the record: {exc}") from exc
        except OSError as exc:
            raise StateSaveError(f"{directory}: could not archive the record: {exc}") from exc

    def _write_history(self, directory: Path, stem: str, text: str) -> None:
        private_dir(self.directory)
        _refuse_link(directory)
        private_dir(directory, what="state history directory")
        path = directory / f"{stem}.json"
        number = 1
        while os.path.lexists(path):  # two records finished in the same nanosecond
            if _holds(path, text):
                # Already kept: a new release that archived it was then refused (the
                # router not at stable, say), and the next try archives it again.
                return
            number += 1
            path = directory / f"{stem}~{number}.json"
        write_private(path, text.encode("utf-8"), fsync=self._fsync, what="history file")

    async def history(self, key: str, *, limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
        """`key`'s archived records, newest first, at most `limit` (default `MAX_HISTORY`).

        A record that cannot be read is listed as ``{"damaged": why, "file": name}`` in
        its place; nothing archived gives ``[]``. `StateError` only when the history
        directory itself cannot be used (a link, open to other users).
        """
        check_history_limit(limit)
        directory = self.history_dir(key)
        try:
            names = await anyio.to_thread.run_sync(_history_names, directory)
        except OSError as exc:  # FileRefusedError: a link, not private
            raise StateError(f"could not read the state history: {exc}") from None
        records: list[dict[str, Any]] = []
        for name in names[:limit]:
            path = directory / name
            try:
                raw = await read_regular_async(path, limit=MAX_STATE_BYTES, what="history file")
                records.append(_unwrap(path, key, raw))
            except FileNotFoundError:  # removed meanwhile
                continue
            except (OSError, StateError) as exc:
                records.append(damaged_record(key, name, exc))
        return records

    def __repr__(self) -> str:
        return f"FileStore({str(self.directory)!r})"


def _envelope(key: str, data: dict[str, Any]) -> str:
    """A record in its file envelope: format, version, key, checksum and data."""
    body = canonical_json(data)
    envelope = {
        "format": FILE_FORMAT,
        "version": FILE_FORMAT_VERSION,
        "key": key,
        "sha256": hashlib.sha256(body.encode()).hexdigest(),
        "data": data,
    }
    return json.dumps(envelope, sort_keys=True, indent=1, allow_nan=False) + "\n"


def _holds(path: Path, text: str) -> bool:
    """True when the file at `path` is a regular file holding exactly `text`."""
    try:
        return read_regular(path, limit=MAX_STATE_BYTES, what="history file") == text.encode()
    except OSError:  # FileRefusedError too: a link or a FIFO holds nothing of ours
        return False


def _finish_ns(data: dict[str, Any]) -> int:
    """When the record's rollout finished, in ns since the epoch (now, when it does not say)."""
    state = data.get("state")
    finished = state.get("finished_at") if isinstance(state, dict) else None
    if (
        isinstance(finished, (int, float))
        and not isinstance(finished, bool)
        and 0 <= finished < 10**10
    ):
        return int(finished * 1e9)
    return time.time_ns()


def _release_part(release: Any) -> str:
    """A release id as part of a file name: unsafe characters as ``_``, at most 64."""
    if not isinstance(release, str) or not release:
        return ""
    return _RELEASE_UNSAFE.sub("_", release)[:64]


def _finish_ns_or_zero(data: dict[str, Any]) -> int:
    state = data.get("state")
    finished = state.get("finished_at") if isinstance(state, dict) else None
    if isinstance(finished, (int, float)) and not isinstance(finished, bool):
        return int(finished * 1e9)
    return 0


def _refuse_link(path: Path) -> None:
    """FileRefusedError when `path` is a symbolic link (private_dir would follow it)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise FileRefusedError(
            f"state history directory {path}: is a symbolic link, which canarykit does not "
            "follow here; remove it (canarykit creates the directory)"
        )


def _history_names(directory: Path) -> list[str]:
    """The record files in a history directory, newest first ([] when there is none)."""
    _refuse_link(directory)
    if not os.path.lexists(directory):
        return []
    private_dir(directory, what="state history directory")
    names: list[str] = []
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= _MAX_HISTORY_NAMES:
                break
            if _HISTORY_NAME.fullmatch(entry.name):
                names.append(entry.name)
    return sorted(names, reverse=True)


def _check_directory(directory: Path) -> None:
    """Refuse to load from a state directory that others may write (when it exists)."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        private_dir(directory)


def check_history_limit(limit: Any) -> int:
    """`limit` of a store's ``history``, or ConfigError naming it (every store checks alike)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError("limit", limit, "must be an integer >= 0")
    return limit


def damaged_record(key: str, name: str, exc: BaseException) -> dict[str, Any]:
    """What a store's ``history`` lists in place of a record it cannot read (and logs)."""
    logger.warning("%s: a history record cannot be read: %s", key, exc)
    return {"damaged": str(exc), "file": name}


def _unwrap(path: str | Path, key: str, raw: bytes) -> dict[str, Any]:
    """The data inside a saved envelope, or a StateError saying what is wrong with it.

    `path` names where it was read (a file, an etcd key, a table row) in the messages.
    """
    try:
        envelope = parse_json(raw, what=str(path))
    except ValueError as exc:
        raise CorruptStateError(f"{exc}; the file is damaged") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FILE_FORMAT:
        raise CorruptStateError(f"{path}: not a canarykit state file")
    version = envelope.get("version")
    if version != FILE_FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > 1:
            raise StateVersionError(
                f"{path}: written in file format version {version} by a newer canarykit; "
                f"this one reads version {FILE_FORMAT_VERSION}: upgrade canarykit to resume it"
            )
        raise CorruptStateError(f"{path}: unknown file format version {version!r}")
    if envelope.get("key") != key:
        raise CorruptStateError(
            f"{path}: holds the state of key {envelope.get('key')!r}, not {key!r} "
            "(was the file copied or renamed?)"
        )
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise CorruptStateError(f"{path}: 'data' must be a JSON object")
    digest = hashlib.sha256(canonical_json(data).encode()).hexdigest()
    if envelope.get("sha256") != digest:
        raise CorruptStateError(
            f"{path}: checksum mismatch: the file was changed or damaged after it was saved"
        )
    return data


class MemoryStore:
    """A `StateStore` in a dict, for tests and single-process use.

    Saves a deep copy after checking that the data is JSON-serialisable, so a test catches
    a decider state that a file store could not write. `lease(key)` gives a `MemoryLease`
    shared by everything using this store.
    """

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}
        self.archived: dict[str, list[dict[str, Any]]] = {}
        self.saves = 0
        # Each held key: (holder, expires, fencing token); see MemoryLease.
        self._holders: dict[str, tuple[str, float, int]] = {}

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Store a copy of `data` under `key`."""
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{key}: the state is not plain JSON data: {exc}") from None
        self.saved[key] = copy.deepcopy(data)
        self.saves += 1

    async def load(self, key: str) -> dict[str, Any] | None:
        """A copy of what was saved under `key`, or None."""
        data = self.saved.get(key)
        return None if data is None else copy.deepcopy(data)

    async def delete(self, key: str) -> None:
        """Forget `key`'s state."""
        self.saved.pop(key, None)

    async def archive(self, key: str, data: dict[str, Any]) -> None:
        """Keep a copy of `data`, a finished rollout's record, in `key`'s history."""
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{key}: the record is not plain JSON data: {exc}") from None
        kept = self.archived.setdefault(key, [])
        if data not in kept:  # archiving the same record twice keeps it once
            kept.append(copy.deepcopy(data))

    async def history(self, key: str, *, limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
        """Copies of `key`'s archived records, newest (by finish time) first, at most `limit`."""
        records = self.archived.get(key, [])
        # Stable sort: records without a finish time keep their archiving order.
        ordered = sorted(
            enumerate(records), key=lambda item: (_finish_ns_or_zero(item[1]), item[0])
        )
        return [copy.deepcopy(record) for _, record in reversed(ordered)][:limit]

    def lease(
        self,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 30.0,
        target: str | None = None,
    ) -> MemoryLease:
        """The default lease for `key`: held in this store, so one runner per key per store.

        With `target`, two keys of this store cannot drive the same traffic target either.
        """
        return MemoryLease(self._holders, key, holder=holder, ttl=ttl, target=target)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self.saved)} key(s)>"
