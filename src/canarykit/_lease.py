"""Leases: one runner per rollout.

How this works. Before a `Rollout` touches traffic it acquires a lease on its key; a
second runner on the same key is refused at once (`LeaseHeldError`, naming the holder).
While it runs, the runner renews the lease every third of its `ttl` (real time, not the
rollout's clock), and it checks that the last renewal is still within `ttl` before every
router call and every save. If a renewal fails, or the lease ran out because the process
was stalled, the runner stops at once: it does not touch traffic or the saved state again
(another runner may own them now), reports a `LeaseLost` event, and `run()` raises
`LeaseLostError`.

`Lease` is a small protocol, so a team can plug in a Kubernetes Lease object, an etcd
lease or a Redis key with an expiry. canarykit ships two:

- `FileLease`: an exclusive ``flock`` on a lock file (beside the state, for `FileStore`).
  The kernel drops the lock when the process dies, even by ``kill -9``, so a crashed
  runner never blocks the next one. The file also records the holder, its process, host
  and the time the lease expires, so a stuck holder is visible: the error a second runner
  gets says who holds the lease and whether it is overdue.
- `MemoryLease`: a lease held in a dict (`MemoryStore` uses one), with an expiry.

The errors::

    CanaryError
    └── LeaseError                 a lease could not be taken or kept
        ├── LeaseHeldError         another runner holds the lease
        └── LeaseLostError         the lease was lost mid-rollout; the runner stopped
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigError, LeaseError, LeaseHeldError, LeaseLostError

__all__ = [
    "FileLease",
    "Lease",
    "MemoryLease",
    "default_holder",
]


@runtime_checkable
class Lease(Protocol):
    """The right to drive one rollout, held by one runner at a time.

    - `acquire()` takes the lease, or raises `LeaseHeldError` at once when another holder
      has it (an expired lease may be taken over).
    - `renew()` extends it by `ttl` seconds from now, or raises when it is no longer this
      holder's (`LeaseLostError`, or any error: the runner treats both as lost).
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


class FileLease:
    """A `Lease` held as an exclusive ``flock`` on a lock file (POSIX only).

    ``FileLease("/var/lib/deploy/canary/web.lock")``. Two `FileLease` objects on the same
    file exclude each other, within one process or across processes on one host (and on
    network file systems whose locks work, such as NFSv4). The lock dies with the process.
    The file holds JSON saying who holds the lease and until when (`read_holder`); it is
    never deleted, since a lock on a deleted file would no longer exclude anyone. `renew`
    fails if the file was removed or replaced meanwhile.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, holder: str | None = None, ttl: float = 30.0
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError("path", path, "must be a file path")
        self.path = Path(path)
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        self._fd: int | None = None
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
        return self._fd is not None

    async def acquire(self) -> None:
        """Lock the file, or raise `LeaseHeldError` naming the current holder."""
        if self._fd is not None:
            await self.renew()
            return
        fcntl = _fcntl()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                os.close(fd)
                raise LeaseHeldError(self._held_message(info)) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder we raced with may have replaced the file between our open and
            # our lock; a lock on a file no longer at the path guards nothing: try again.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:  # pragma: no cover - needs three replacements racing one acquire
            raise LeaseError(f"{self.path}: the lock file keeps being replaced")
        self._fd = fd
        self._acquired_at = time.time()
        self._write_info(released=False)

    async def renew(self) -> None:
        """Extend the lease; `LeaseLostError` if it is not held or its file was replaced."""
        if self._fd is None:
            raise LeaseLostError(f"{self.path}: the lease is not held")
        if not _same_file(self._fd, self.path):
            raise LeaseLostError(
                f"{self.path}: the lock file was removed or replaced, so another runner "
                "may hold the lease now"
            )
        self._write_info(released=False)

    async def release(self) -> None:
        """Unlock and close the file (a no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self._write_info(released=True, fd=fd)
        finally:
            try:
                _fcntl().flock(fd, _fcntl().LOCK_UN)
            finally:
                os.close(fd)

    def read_holder(self) -> dict[str, Any] | None:
        """What the lock file says: holder, pid, host, acquired_at, expires_at (or None)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        try:
            return _read_info(fd)
        finally:
            os.close(fd)

    def _write_info(self, *, released: bool, fd: int | None = None) -> None:
        fd = self._fd if fd is None else fd
        assert fd is not None
        now = time.time()
        info = {
            "holder": self._holder,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "acquired_at": self._acquired_at,
            "renewed_at": now,
            "expires_at": None if released else now + self._ttl,
            "released": released,
        }
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def _held_message(self, info: dict[str, Any] | None) -> str:
        base = f"{self.path}: the rollout is already being run by another runner"
        if info is None or not isinstance(info.get("holder"), str):
            return base + " (holder unknown); only one runner may drive a rollout"
        who = f"{info['holder']} (pid {info.get('pid')} on {info.get('host')})"
        expires = info.get("expires_at")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
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
        return f"{base}: {who}; {status}; only one runner may drive a rollout"

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<FileLease {str(self.path)!r} {self._holder!r} {state}>"


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
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read_info(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class MemoryLease:
    """A `Lease` kept in a dict shared by the runners that may compete for it.

    `MemoryStore.lease(key)` gives one; runners using the same store exclude each other.
    An expired lease (not renewed for `ttl` seconds) may be taken over by another holder,
    as with a Redis key or an etcd lease; the old holder's next `renew` then fails.
    """

    def __init__(
        self,
        holders: dict[str, tuple[str, float]],
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 30.0,
    ) -> None:
        self._holders = holders
        self.key = key
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)

    @property
    def holder(self) -> str:
        """The holder id of this lease."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew."""
        return self._ttl

    async def acquire(self) -> None:
        """Take the lease unless another holder has it and it has not expired."""
        current = self._holders.get(self.key)
        now = time.monotonic()
        if current is not None and current[0] != self._holder and current[1] > now:
            raise LeaseHeldError(
                f"rollout {self.key!r} is already being run by {current[0]} (lease expires "
                f"in {current[1] - now:.0f} s); only one runner may drive a rollout"
            )
        self._holders[self.key] = (self._holder, now + self._ttl)

    async def renew(self) -> None:
        """Extend the lease, or `LeaseLostError` if another holder has taken it."""
        current = self._holders.get(self.key)
        if current is None or current[0] != self._holder:
            taken = "released" if current is None else f"taken by {current[0]}"
            raise LeaseLostError(f"rollout {self.key!r}: the lease was {taken}")
        self._holders[self.key] = (self._holder, time.monotonic() + self._ttl)

    async def release(self) -> None:
        """Give the lease up if it is still ours."""
        current = self._holders.get(self.key)
        if current is not None and current[0] == self._holder:
            del self._holders[self.key]

    def __repr__(self) -> str:
        return f"<MemoryLease {self.key!r} {self._holder!r}>"
