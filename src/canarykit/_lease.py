"""Leases: one runner per rollout.

How this works. Before a `Rollout` touches traffic it acquires a lease on its key; a
second runner on the same key is refused at once (`LeaseHeldError`, naming the holder).
While it runs, the runner renews the lease every third of its `ttl` (real time, not the
rollout's clock), and it checks that the last renewal is still within `ttl` before every
router call and every save. A renewal that fails with an error of the engine or the
network (a timeout, an etcd leader election) is tried again while the last good renewal
lasts. If the engine says the lease is another's (`LeaseLostError`), or the lease ran out
(failed renewals, a stalled process), the runner stops at once: it does not touch traffic
or the saved state again (another runner may own them now), reports a `LeaseRevoked`
event, and `run()` raises `LeaseLostError`.

Fencing. A clock check cannot see a process that was frozen (SIGSTOP, a VM paused, a
partition) and woke up after another runner took over: between its check and its call,
any time may pass. A `FencedLease` closes that gap with a token the engine itself
checks. Before every router apply the runner calls `check()` (one round trip, bounded
by the rollout's ``call_timeout``); any failure, `LeaseLostError` or another error, is a
lost lease, and the runner stops as above without applying. The saved record carries the
holding's token and the token checked before the last apply (``fencing``: ``holder``,
``token``, ``apply_holder``, ``apply_token``), so an operator can see which holding moved
traffic. A store that fences its writes by the lease it handed out (`EtcdStore`,
`PostgresStore`) refuses a stale runner's save with `LeaseLostError`: that too is a lost
lease, not a failed save (no rollback through the router the successor now drives).

`Lease` is a small protocol, so a team can plug in a Kubernetes Lease object, an etcd
lease or a Redis key with an expiry. canarykit ships these (`EtcdLease` and
`PostgresLease` live with their stores):

- `FileLease`: an exclusive ``flock`` on a lock file (beside the state, for `FileStore`).
  The kernel drops the lock when the process dies, even by ``kill -9``, so a crashed
  runner never blocks the next one. The file also records the holder, its process, host
  and the time the lease expires, so a stuck holder is visible: the error a second runner
  gets says who holds the lease and whether it is overdue. Given the traffic `target`
  (what the router controls: an include file, a socket and backend, an object), it also
  locks a file named after that target in a directory shared by all of this user's
  rollouts on the host (`target_lock_dir`), so two rollout names or two state
  directories can never drive one router. It is not fenced: no engine stands between a
  runner and the router to refuse a stale token, and the flock is held by the kernel for
  a stopped process anyway (a frozen holder is never taken over on one host).
- `MemoryLease`: a `FencedLease` held in a dict (`MemoryStore` uses one), with an expiry
  and a token that grows with each new holding, for tests of fencing without an engine.

The errors::

    CanaryError
    └── LeaseError                 a lease could not be taken or kept
        ├── LeaseHeldError         another runner holds the lease
        └── LeaseLostError         the lease was lost mid-rollout; the runner stopped
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigError, LeaseError, LeaseHeldError, LeaseLostError
from ._files import open_nofollow, parse_json, private_dir
from ._text import shown

__all__ = [
    "LOCK_DIR_VARIABLE",
    "FencedLease",
    "FileLease",
    "Lease",
    "MemoryLease",
    "default_holder",
    "pid_alive",
    "target_lock_dir",
]

# The environment variable that moves the directory of traffic-target locks.
LOCK_DIR_VARIABLE = "CANARYKIT_LOCK_DIR"


@runtime_checkable
class Lease(Protocol):
    """The right to drive one rollout, held by one runner at a time.

    - `acquire()` takes the lease, or raises `LeaseHeldError` at once when another holder
      has it (an expired lease may be taken over).
    - `renew()` extends it by `ttl` seconds from now, or raises `LeaseLostError` when it is
      no longer this holder's (the runner stops at once); any other error is taken as a
      failed attempt and tried again until the last good renewal runs out.
    - `release()` gives it up; it must never release a lease another holder has taken.

    The runner renews every ``ttl / 3`` seconds and stops acting once ``ttl`` has passed
    since the last renewal that succeeded.
    """

    @property
    def holder(self) -> str:
        """Who holds (or would hold) the lease, e.g. ``"deploy-7:4711:9f2c"``."""
        ...

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew."""
        ...

    async def acquire(self) -> None:
        """Take the lease or raise `LeaseHeldError`."""
        ...

    async def renew(self) -> None:
        """Extend the lease or raise if it is no longer ours."""
        ...

    async def release(self) -> None:
        """Give the lease up (if it is still ours)."""
        ...


@runtime_checkable
class FencedLease(Lease, Protocol):
    """A lease whose every holding carries a fencing token that the engine checks.

    The token grows with each new holding of the key (an etcd revision, a counter in a
    PostgreSQL row), so a runner that was paused or cut off past its lease, and woke up
    after another runner took over, holds a token the engine no longer accepts: its
    state writes are refused, and `check()` tells it to stop before it moves traffic.

    - `token` is the current holding's token (None before `acquire`).
    - `check()` proves, with one round trip to the engine, that the lease is still this
      holder's and unexpired, and returns the token; `LeaseLostError` when it is not.
      The runner calls it before every router apply and records the token in the state.
    """

    @property
    def token(self) -> int | None:
        """The fencing token of this holder's current holding, or None if not held."""
        ...

    async def check(self) -> int:
        """Prove the lease is still ours (a round trip to the engine); return its token."""
        ...


def default_holder() -> str:
    """A holder id for this process: ``host:pid:random`` (so two runners never share one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _holder(value: str | None) -> str:
    if value is None:
        return default_holder()
    if not isinstance(value, str) or not value.isprintable() or not 0 < len(value) <= 200:
        raise ConfigError("holder", value, "must be 1-200 printable characters")
    return value


def _ttl(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("ttl", value, "must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("ttl", value, "must be a finite number of seconds > 0")
    return float(value)


def target_lock_dir() -> Path:
    """Where the locks on traffic targets live: one private directory per user and host.

    ``$CANARYKIT_LOCK_DIR`` when set, else ``$XDG_RUNTIME_DIR/canarykit-targets``, else
    ``<temporary directory>/canarykit-targets-<uid>``. It does not depend on the state
    directory: that is the point, two state directories must meet here. One level below
    a shared directory such as ``/tmp``, so that the private check of the directory
    itself (owner, mode) covers everything another user could replace.
    """
    chosen = os.environ.get(LOCK_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "canarykit-targets"
    user = os.geteuid() if hasattr(os, "geteuid") else "user"
    return Path(tempfile.gettempdir()) / f"canarykit-targets-{user}"


def pid_alive(pid: Any) -> bool:
    """True if process `pid` runs on this host (another user's process counts)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except (OverflowError, OSError):  # not a pid this system can have
        return False
    return True


class _Lock:
    """One flock held on one file, and the JSON the holder keeps in it."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.fd: int | None = None

    def take(self) -> dict[str, Any] | None:
        """Lock the file: None when taken, else what its holder wrote (possibly None too)."""
        fcntl = _fcntl()
        private_dir(self.path.parent, what=f"directory of the {self.what}")
        for _ in range(3):
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, 0o600, what=self.what)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                os.close(fd)
                return info if info is not None else {}
            except BaseException:
                os.close(fd)
                raise
            # The holder we raced with may have replaced the file between our open and
            # our lock; a lock on a file no longer at the path guards nothing: try again.
            if _same_file(fd, self.path):
                self.fd = fd
                return None
            os.close(fd)
        raise LeaseError(f"{self.path}: the lock file keeps being replaced")  # pragma: no cover

    def intact(self) -> bool:
        return self.fd is not None and _same_file(self.fd, self.path)

    def write(self, info: dict[str, Any]) -> None:
        assert self.fd is not None
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def drop(self, info: dict[str, Any] | None) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if info is not None and _same_file(fd, self.path):
                data = (json.dumps(info, sort_keys=True) + "\n").encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
        finally:
            try:
                _fcntl().flock(fd, _fcntl().LOCK_UN)
            finally:
                os.close(fd)


class FileLease:
    """A `Lease` held as an exclusive ``flock`` on a lock file (POSIX only).

    ``FileLease("/var/lib/deploy/canary/web.lock")``. Two `FileLease` objects on the same
    file exclude each other, within one process or across processes on one host (and on
    network file systems whose locks work, such as NFSv4). The lock dies with the process.
    The file holds JSON saying who holds the lease and until when (`read_holder`); it is
    never deleted, since a lock on a deleted file would no longer exclude anyone. `renew`
    fails if the file was removed or replaced meanwhile.

    The lock file is opened without following a symbolic link and must be a regular
    file; its directory is created private (0700) and refused when other users may
    write to it (`FileRefusedError`).

    With ``target="nginx include /etc/nginx/canary/web.conf"`` (any string that names
    what the router controls), the lease also locks ``<sha256 of target>.lock`` in
    `target_lock_dir`: a second lease on the same target is refused (`LeaseHeldError`,
    naming the target and its holder) whatever its own path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        holder: str | None = None,
        ttl: float = 30.0,
        target: str | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError("path", path, "must be a file path")
        if target is not None and (not isinstance(target, str) or not target):
            raise ConfigError("target", target, "must be a non-empty string (or None)")
        self.path = Path(path)
        self.target = target
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        self._lock = _Lock(self.path, "lock file")
        self._target_lock: _Lock | None = None
        self._acquired_at = 0.0

    @property
    def holder(self) -> str:
        """The holder id of this lease."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew."""
        return self._ttl

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release`."""
        return self._lock.fd is not None

    @property
    def target_path(self) -> Path | None:
        """The lock file of the traffic target (None without a target)."""
        if self.target is None:
            return None
        digest = hashlib.sha256(self.target.encode("utf-8", "surrogatepass")).hexdigest()
        return target_lock_dir() / f"{digest}.lock"

    async def acquire(self) -> None:
        """Lock the file (and the target's), or raise `LeaseHeldError` naming the holder."""
        if self.held:
            await self.renew()
            return
        held_by = self._lock.take()
        if held_by is not None:
            raise LeaseHeldError(self._held_message(held_by or None))
        target_path = self.target_path
        if target_path is not None:
            target_lock = _Lock(target_path, "traffic target lock file")
            try:
                held_by = target_lock.take()
            except BaseException:
                self._lock.drop(None)
                raise
            if held_by is not None:
                self._lock.drop(None)
                raise LeaseHeldError(self._target_held_message(held_by or None))
            self._target_lock = target_lock
        self._acquired_at = time.time()
        self._write_info(released=False)

    async def renew(self) -> None:
        """Extend the lease; `LeaseLostError` if it is not held or a lock file was replaced."""
        if not self.held:
            raise LeaseLostError(f"{self.path}: the lease is not held")
        for lock in (self._lock, self._target_lock):
            if lock is not None and not lock.intact():
                raise LeaseLostError(
                    f"{lock.path}: the lock file was removed or replaced, so another runner "
                    "may hold the lease now"
                )
        self._write_info(released=False)

    async def release(self) -> None:
        """Unlock and close the files (a no-op if not held)."""
        target_lock, self._target_lock = self._target_lock, None
        try:
            if target_lock is not None:
                target_lock.drop(self._info(released=True))
        finally:
            self._lock.drop(self._info(released=True))

    def read_holder(self) -> dict[str, Any] | None:
        """What the lock file says: holder, pid, host, acquired_at, expires_at (or None).

        ``stale`` is added, True when the holder ran on this host and its process is
        gone (its lock died with it), so a report does not show a dead runner as live.
        """
        try:
            fd = open_nofollow(self.path, os.O_RDONLY, what="lock file")
        except FileNotFoundError:
            return None
        try:
            info = _read_info(fd)
        finally:
            os.close(fd)
        if info is not None:
            info["stale"] = _stale(info)
        return info

    def _info(self, *, released: bool) -> dict[str, Any]:
        now = time.time()
        info: dict[str, Any] = {
            "holder": self._holder,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "acquired_at": self._acquired_at,
            "renewed_at": now,
            "expires_at": None if released else now + self._ttl,
            "released": released,
        }
        if self.target is not None:
            info["target"] = self.target
            info["lock"] = str(self.path.absolute())
        return info

    def _write_info(self, *, released: bool) -> None:
        info = self._info(released=released)
        self._lock.write(info)
        if self._target_lock is not None:
            self._target_lock.write(info)

    def _held_message(self, info: dict[str, Any] | None) -> str:
        base = f"{self.path}: the rollout is already being run by another runner"
        return base + _holder_status(info)

    def _target_held_message(self, info: dict[str, Any] | None) -> str:
        rollout = ""
        if info is not None and isinstance(info.get("lock"), str):
            rollout = f" for the rollout locked by {shown(info['lock'])}"
        base = (
            f"traffic target {shown(self.target)} is already being driven by another "
            f"runner{rollout}"
        )
        return base + _holder_status(info)

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        target = "" if self.target is None else f" target {self.target!r}"
        return f"<FileLease {str(self.path)!r}{target} {self._holder!r} {state}>"


def _stale(info: dict[str, Any]) -> bool:
    if info.get("released") is True or info.get("host") != socket.gethostname():
        return False
    return not pid_alive(info.get("pid"))


def _holder_status(info: dict[str, Any] | None) -> str:
    """Who holds a lease and how it stands, to end the message of a refusal."""
    if info is None or not isinstance(info.get("holder"), str):
        return " (holder unknown); only one runner may drive a rollout"
    who = (
        f"{shown(info['holder'], limit=200)} (pid {shown(info.get('pid'), limit=20)} "
        f"on {shown(info.get('host'), limit=200)})"
    )
    expires = info.get("expires_at")
    if (
        isinstance(expires, (int, float))
        and not isinstance(expires, bool)
        and math.isfinite(expires)
    ):
        left = expires - time.time()
        if left < 0:
            status = (
                f"its lease ran out {-left:.0f} s ago but it still holds the lock: it "
                "looks stuck; stop that process to take over"
            )
        else:
            status = f"lease renewed, expires in {left:.0f} s"
    else:
        status = "expiry unknown"
    return f": {who}; {status}; only one runner may drive a rollout"


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise LeaseError(
            "FileLease needs fcntl.flock (POSIX); on this platform pass a lease of your own"
        ) from None
    return fcntl


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read_info(fd: int) -> dict[str, Any] | None:
    try:
        info = parse_json(os.pread(fd, 4096, 0), what="lock file")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class MemoryLease:
    """A `FencedLease` kept in a dict shared by the runners that may compete for it.

    `MemoryStore.lease(key)` gives one; runners using the same store exclude each other.
    An expired lease (not renewed for `ttl` seconds) may be taken over by another holder,
    as with a Redis key or an etcd lease; the old holder's next `renew` (or `check`) then
    fails. With a `target`, the lease also claims that traffic target in the same dict,
    so two keys of one store cannot drive one router.

    Each new holding gets a fencing `token` larger than any before it in this process, so
    tests (and programs that keep their rollouts in one process) exercise the runner's
    fencing without an engine: `check()` raises `LeaseLostError` once another holder has
    taken the lease over, or it ran out. Re-acquiring a holding that is still ours and
    unexpired keeps its token.
    """

    def __init__(
        self,
        holders: dict[str, Any],
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 30.0,
        target: str | None = None,
    ) -> None:
        if target is not None and (not isinstance(target, str) or not target):
            raise ConfigError("target", target, "must be a non-empty string (or None)")
        # entry -> (holder, expires at on time.monotonic(), token)
        self._holders = holders
        self.key = key
        self.target = target
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        self._token: int | None = None
        # A key is a plain name (no colon), so a target's entry never meets a key's.
        self._entries = (key,) if target is None else (key, f"target:{target}")

    @property
    def holder(self) -> str:
        """The holder id of this lease."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew."""
        return self._ttl

    @property
    def token(self) -> int | None:
        """The fencing token of the current holding, or None when not held."""
        return self._token

    def _what(self, entry: str) -> str:
        if entry == self.key:
            return f"rollout {self.key!r} is already being run"
        return f"traffic target {shown(self.target)} is already being driven"

    async def acquire(self) -> None:
        """Take the lease unless another holder has it and it has not expired."""
        now = time.monotonic()
        ours = True
        for entry in self._entries:
            current = self._holders.get(entry)
            if current is not None and current[0] != self._holder and current[1] > now:
                raise LeaseHeldError(
                    f"{self._what(entry)} by {current[0]} (lease expires in "
                    f"{current[1] - now:.0f} s); only one runner may drive a rollout"
                )
            # Still our unexpired holding (acquire called again): it keeps its token.
            ours = ours and current is not None and current[1] > now
            ours = ours and current is not None and current[2:] == (self._token,)
        token = self._token if ours and self._token is not None else next(_memory_tokens)
        for entry in self._entries:
            self._holders[entry] = (self._holder, now + self._ttl, token)
        self._token = token

    def _lost(self) -> LeaseLostError | None:
        """Why this holding is no longer ours (None while it is)."""
        for entry in self._entries:
            current = self._holders.get(entry)
            if current is None or current[0] != self._holder:
                taken = "released" if current is None else f"taken by {current[0]}"
                return LeaseLostError(f"rollout {self.key!r}: the lease was {taken}")
            if current[2:] != (self._token,):
                return LeaseLostError(
                    f"rollout {self.key!r}: the lease was taken again (token "
                    f"{current[2:] or None}, ours {self._token})"
                )
        return None

    async def renew(self) -> None:
        """Extend the lease, or `LeaseLostError` if another holder has taken it."""
        lost = self._lost()
        if lost is not None:
            raise lost
        for entry in self._entries:
            self._holders[entry] = (self._holder, time.monotonic() + self._ttl, self._token)

    async def check(self) -> int:
        """Prove the lease is still ours and unexpired; return its token."""
        lost = self._lost()
        if lost is not None:
            raise lost
        if self._token is None:  # pragma: no cover - `_lost` found an entry with our token
            raise LeaseLostError(f"rollout {self.key!r}: the lease is not held")
        expires = min(self._holders[entry][1] for entry in self._entries)
        if expires <= time.monotonic():
            raise LeaseLostError(f"rollout {self.key!r}: the lease ran out without a renewal")
        return self._token

    async def release(self) -> None:
        """Give the lease up if it is still ours."""
        for entry in self._entries:
            current = self._holders.get(entry)
            # Ours, and not a later holding taken under the same holder name.
            if current is not None and current[:1] + current[2:] == (self._holder, self._token):
                del self._holders[entry]
        self._token = None

    def __repr__(self) -> str:
        state = "not held" if self._token is None else f"token {self._token}"
        return f"<MemoryLease {self.key!r} {self._holder!r} {state}>"


# Fencing tokens of `MemoryLease` holdings: one sequence per process, so every new holding
# of any key gets a larger token than the holdings before it.
_memory_tokens = itertools.count(1)
