"""State, lease and operator commands in PostgreSQL: one store for runners on many hosts.

How this works. `PostgresStore` keeps each key's state in a table, in the same checked
envelope as `FileStore`'s files (format, version, key, SHA-256 of the canonical JSON),
and archived records in a second table. `PostgresLease` is a row per key: holder, a
fencing token and an expiry. Every expiry is computed and compared on the SERVER's clock
(``clock_timestamp()``), so the clocks of the runners' hosts do not matter:

- acquire is one statement that inserts the row, or takes over an expired one, and
  increments the token (``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE expired``);
  otherwise `LeaseHeldError` names the holder and when its lease runs out;
- renew moves the expiry only while the row is still this holder's, with this token,
  and unexpired; otherwise `LeaseLostError`. `check()` is the same test without moving
  it. release marks the row expired (the row stays, so the token keeps growing across
  holdings);
- while this store object holds the lease on a key, `save` and `archive` of that key are
  conditional on the lease row (key, holder, token, unexpired), locked ``FOR SHARE`` so a
  takeover cannot commit in between: a runner that lost its lease cannot overwrite its
  successor's state (`LeaseLostError`, "state write refused").

Operator commands (`commands(key)`) are rows too: anyone who can reach the database may
send one; only the holder of the key's lease can take them (a delete conditional on its
lease row) and answer them, under its holder name.

The client is psycopg 3 (``pip install canarykit[postgres]``), synchronous, run in worker
threads, so the store serves asyncio and trio alike. One connection per store object,
used by one call at a time; every call is bounded by `timeout`. A call that fails on a
broken connection (a server restart, a partition) raises the error of its kind
(`StateSaveError`, `StateError`, `LeaseError`) and the next call connects again. A call
that times out also cuts its connection, so a worker thread never stays blocked on a
link that went silent. The password never appears in a repr or an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
from typing_extensions import Self

from .._errors import (
    CanaryError,
    ConfigError,
    CorruptStateError,
    LeaseError,
    LeaseHeldError,
    LeaseLostError,
    StateError,
    StateSaveError,
)
from .._files import parse_json
from .._lease import _holder, _ttl
from .._safe import check_name
from .._stores import (
    MAX_HISTORY,
    MAX_STATE_BYTES,
    _envelope,
    _finish_ns,
    _release_part,
    _unwrap,
    check_history_limit,
    damaged_record,
)
from .._text import HIDDEN, MAX_TEXT, Redactor, shown

__all__ = ["PostgresCommands", "PostgresLease", "PostgresStore", "import_psycopg"]

logger = logging.getLogger("canarykit")

T = TypeVar("T")

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_COMMAND = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Answers and unclaimed commands older than this are deleted as new ones are written.
_KEEP_SECONDS = 3600
# Largest command options a sender may attach (canonical JSON).
_MAX_OPTIONS = 64 * 1024
# How often `wait` looks for an answer.
_POLL = 0.2
_HIDDEN_DSN = "<connection string, not shown: it may hold a password>"


def import_psycopg() -> Any:
    """The psycopg (3) module, or an error that says how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ModuleNotFoundError(
            "PostgresStore needs psycopg 3, which is not installed: pip install canarykit[postgres]"
        ) from None
    return psycopg


def _text_field(field: str, value: Any, *, limit: int = 255) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise ConfigError(field, value, f"must be 1-{limit} printable characters")
    return value


def _port(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError("port", value, "must be a port number between 1 and 65535")
    return value


def _seconds(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds")
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise ConfigError(field, value, "must be a number of seconds in (0, 3600]")
    return float(value)


class PostgresStore:
    """A `StateStore` (with history, leases and operator commands) in a PostgreSQL database.

    ``PostgresStore("host=db.internal dbname=deploy user=canary sslmode=verify-full")``, or
    the same as keywords: `host`, `port`, `dbname`, `user`, `password`, `sslmode`,
    `sslrootcert`, `sslcert`, `sslkey` (a keyword overrides the same setting of `dsn`).
    Tables are named after `table`: ``<table>_state``, ``_history``, ``_leases``,
    ``_commands`` and ``_answers``; they are created when missing (under an advisory
    lock, so runners starting together do not race). `timeout` bounds every call,
    connecting included.

    `lease(key)` gives the `PostgresLease` that `Rollout` takes by default; while it is
    held, this store's writes of `key` are fenced by its token. `holder_of(key)` says who
    holds a key's lease; `commands(key)` is the key's operator inbox. Close it with
    `aclose()` or ``async with``.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        host: str | None = None,
        port: int | str | None = None,
        dbname: str | None = None,
        user: str | None = None,
        password: str | None = None,
        sslmode: str | None = None,
        sslrootcert: str | os.PathLike[str] | None = None,
        sslcert: str | os.PathLike[str] | None = None,
        sslkey: str | os.PathLike[str] | None = None,
        table: str = "canarykit",
        timeout: float = 10.0,
    ) -> None:
        psycopg = import_psycopg()
        params: dict[str, Any] = {}
        if dsn is not None:
            if not isinstance(dsn, str):
                raise ConfigError("dsn", type(dsn).__name__, "must be a libpq connection string")
            try:
                params.update(psycopg.conninfo.conninfo_to_dict(dsn))
            except psycopg.Error as exc:
                # The value may hold a password; libpq's own message never quotes it.
                raise ConfigError(
                    "dsn",
                    _HIDDEN_DSN,
                    f"is not a valid connection string ({shown(exc, limit=200)})",
                ) from None
        given = {
            "host": host,
            "port": port,
            "dbname": dbname,
            "user": user,
            "password": password,
            "sslmode": sslmode,
            "sslrootcert": sslrootcert,
            "sslcert": sslcert,
            "sslkey": sslkey,
        }
        params.update({name: value for name, value in given.items() if value is not None})
        secret = params.get("password")
        if secret is not None and not isinstance(secret, str):
            raise ConfigError("password", HIDDEN, "must be a string")
        self._redact = Redactor([secret] if secret else [])
        for name in ("host", "dbname", "user"):
            if name in params:
                params[name] = _text_field(name, params[name])
        if "port" in params:
            params["port"] = _port(params["port"])
        if "sslmode" in params and params["sslmode"] not in _SSLMODES:
            raise ConfigError(
                "sslmode", params["sslmode"], f"must be one of {', '.join(_SSLMODES)}"
            )
        for name in ("sslrootcert", "sslcert", "sslkey"):
            if name in params:
                value = params[name]
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                    raise ConfigError(name, value, "must be a file path")
                params[name] = os.fspath(value)
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise ConfigError(
                "table", table, "must be 1-40 lower-case letters, digits or '_' (not first a digit)"
            )
        self.table = table
        self.timeout = _seconds("timeout", timeout)
        millis = max(1, round(self.timeout * 1000))
        # Bound every wait: the connect, each statement on the server, a lock, and data
        # sent but never acknowledged (a partition on the way to the server).
        options = f"-c statement_timeout={millis} -c lock_timeout={millis}"
        if params.get("options"):
            options = f"{params['options']} {options}"
        self._params = {
            **params,
            "options": options,
            "connect_timeout": str(max(2, math.ceil(self.timeout))),
            "tcp_user_timeout": str(millis),
            "keepalives": "1",
            "keepalives_idle": "5",
            "keepalives_interval": "2",
            "keepalives_count": "3",
            "application_name": params.get("application_name", "canarykit"),
        }
        where_host = params.get("host", "localhost")
        where_port = params.get("port", 5432)
        self.where = (
            f"postgresql://{params.get('user', '')}@{where_host}:{where_port}/"
            f"{params.get('dbname', '')}"
        )
        self._pg = psycopg
        self._sql = _Queries(psycopg, table)
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._fd_lock = threading.Lock()
        self._busy_fd: int | None = None
        self._stale = False
        self._tables_ready = False
        self._closed = False
        self._held: dict[str, PostgresLease] = {}

    # ------------------------------------------------------------------ connection

    def _connection(self) -> Any:
        """The store's connection, made (and the tables created) when there is none."""
        conn = self._conn
        if conn is not None and (self._stale or conn.broken or conn.closed or _readable(conn)):
            self._drop()
            conn = None
        self._stale = False
        if conn is None:
            conn = self._pg.connect(**self._params, autocommit=True)
            try:
                self._set_busy(conn)
                if not self._tables_ready:
                    with conn.transaction():
                        conn.execute(self._sql.lock_schema)
                        for statement in self._sql.create:
                            conn.execute(statement)
                    self._tables_ready = True
            except BaseException:
                self._forget_fd()
                conn.close()
                raise
            self._conn = conn
        return conn

    def _set_busy(self, conn: Any) -> None:
        with self._fd_lock:
            self._busy_fd = conn.pgconn.socket

    def _forget_fd(self) -> None:
        # Before any close: `_interrupt` must never shut down a descriptor number that
        # the system may already have given to another file.
        with self._fd_lock:
            self._busy_fd = None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._forget_fd()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing more to release
                logger.debug("closing a broken PostgreSQL connection failed", exc_info=True)

    def _in_thread(self, fn: Callable[[Any], T]) -> T:
        # One call at a time on the connection; a call abandoned by its caller (timeout,
        # cancellation) keeps the lock until its thread ends, which `_interrupt` hastens.
        if not self._conn_lock.acquire(timeout=self.timeout):
            raise _Busy()
        try:
            conn = self._connection()
            self._set_busy(conn)
            try:
                return fn(conn)
            except (self._pg.OperationalError, self._pg.InterfaceError):
                self._drop()  # broken (restart, partition, timeout): the next call reconnects
                raise
            finally:
                self._forget_fd()
        finally:
            self._conn_lock.release()

    def _interrupt(self) -> None:
        """Cut the connection a worker thread may still be blocked on, and start anew next time.

        Shutting the socket down (through a duplicate of its descriptor) wakes the thread
        at once with an error, even when the link went silent without closing; the fd
        lock keeps the descriptor from being closed and reused meanwhile.
        """
        self._stale = True
        with self._fd_lock:
            fd = self._busy_fd
            if fd is None:
                return
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    async def _run(self, fn: Callable[[Any], T], *, error: type[CanaryError], doing: str) -> T:
        """Run `fn(connection)` in a worker thread within `timeout`; failures as `error`."""
        if self._closed:
            raise error(f"{self.where}: {doing}: the store is closed")
        try:
            with anyio.fail_after(self.timeout):
                return await anyio.to_thread.run_sync(self._in_thread, fn, abandon_on_cancel=True)
        except TimeoutError:
            self._interrupt()
            raise error(
                f"{self.where}: {doing}: no answer within {self.timeout:g} s (the server is "
                "down or unreachable); the next call connects again"
            ) from None
        except anyio.get_cancelled_exc_class():
            self._interrupt()
            raise
        except _Busy:
            raise error(
                f"{self.where}: {doing}: an earlier call is still waiting on the server "
                f"after {self.timeout:g} s"
            ) from None
        except self._pg.Error as exc:
            again = ""
            if isinstance(exc, (self._pg.OperationalError, self._pg.InterfaceError)):
                again = "; the next call connects again"
            raise error(f"{self.where}: {doing}: {self._describe(exc)}{again}") from None

    def _describe(self, exc: BaseException) -> str:
        return shown(self._redact(str(exc).strip() or type(exc).__name__), limit=500)

    # ------------------------------------------------------------------ state

    def _label(self, key: str) -> str:
        # Where a record was read, as `_unwrap`'s messages name it.
        return f"{self.table}_state[{key}]"

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Replace `key`'s state with `data`; fenced by the lease when this store holds it.

        `LeaseLostError` when this store held the lease of `key` and lost it (the write is
        refused, naming the new holder); `StateSaveError` when the database cannot be
        reached or the data is not plain JSON.
        """
        check_name("key", key)
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{key}: the state is not plain JSON data: {exc}") from None
        lease = self._held.get(key)
        fence = None if lease is None else lease._fence()
        sql = self._sql

        def write(conn: Any) -> tuple[bool, Any]:
            if fence is None:
                conn.execute(sql.save, (key, text))
                return True, None
            holder, token = fence
            with conn.transaction():
                done = conn.execute(sql.save_fenced, (key, holder, token, key, text)).fetchone()
                if done is None:
                    return False, conn.execute(sql.holder, (key,)).fetchone()
            return True, None

        saved, now = await self._run(write, error=StateSaveError, doing=f"saving {key!r}")
        if not saved:
            raise LeaseLostError(f"{key}: state write refused: {_now_whose(key, now)}")

    async def load(self, key: str) -> dict[str, Any] | None:
        """`key`'s saved data, or None; `CorruptStateError` / `StateVersionError` as FileStore."""
        check_name("key", key)
        sql = self._sql

        def read(conn: Any) -> Any:
            return conn.execute(sql.load, (key,)).fetchone()

        row = await self._run(read, error=StateError, doing=f"loading {key!r}")
        if row is None:
            return None
        return self._unwrap(key, row[0])

    def _unwrap(self, key: str, envelope: str) -> dict[str, Any]:
        raw = envelope.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_STATE_BYTES:
            raise CorruptStateError(f"{self._label(key)}: larger than {MAX_STATE_BYTES} bytes")
        return _unwrap(self._label(key), key, raw)

    async def delete(self, key: str) -> None:
        """Forget `key`'s state (nothing happens if there is none); its lease row stays."""
        check_name("key", key)
        sql = self._sql
        await self._run(
            lambda conn: conn.execute(sql.delete, (key,)),
            error=StateError,
            doing=f"deleting {key!r}",
        )

    async def archive(self, key: str, data: dict[str, Any]) -> None:
        """Keep `data`, a finished rollout's record, in `key`'s history (once).

        Fenced like `save` while this store holds the lease of `key`.
        """
        check_name("key", key)
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{key}: the record is not plain JSON data: {exc}") from None
        digest = hashlib.sha256(text.encode()).hexdigest()
        row = (key, _finish_ns(data), _release_part(data.get("release")), digest, text)
        lease = self._held.get(key)
        fence = None if lease is None else lease._fence()
        archive = self._sql.archive
        await self._fenced(
            key,
            fence,
            lambda conn: conn.execute(archive, row),
            error=StateSaveError,
            doing=f"archiving {key!r}",
            refused="state write",
        )

    async def _fenced(
        self,
        key: str,
        fence: tuple[str, int] | None,
        work: Callable[[Any], T],
        *,
        error: type[CanaryError],
        doing: str,
        refused: str,
    ) -> T:
        """`work(connection)` in one transaction, once `fence` is shown to hold `key`'s lease.

        With no fence the work runs unchecked. A fence that no longer holds the lease row
        (taken over, expired) raises `LeaseLostError` naming who holds it now.
        """
        sql = self._sql

        def run(conn: Any) -> tuple[bool, Any]:
            with conn.transaction():
                if fence is not None and not _holds(conn, sql, key, fence):
                    return False, conn.execute(sql.holder, (key,)).fetchone()
                return True, work(conn)

        ok, result = await self._run(run, error=error, doing=doing)
        if not ok:
            raise LeaseLostError(f"{key}: {refused} refused: {_now_whose(key, result)}")
        return cast(T, result)

    async def history(self, key: str, *, limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
        """`key`'s archived records, newest first (by finish time), at most `limit`.

        A record that cannot be read is listed as ``{"damaged": why, "file": "id N"}``.
        """
        check_name("key", key)
        check_history_limit(limit)
        sql = self._sql

        def read(conn: Any) -> list[Any]:
            return list(conn.execute(sql.history, (key, limit)).fetchall())

        rows = await self._run(read, error=StateError, doing=f"reading the history of {key!r}")
        records: list[dict[str, Any]] = []
        for ident, envelope in rows:
            try:
                records.append(self._unwrap(key, envelope))
            except StateError as exc:
                records.append(damaged_record(key, f"id {ident}", exc))
        return records

    # ------------------------------------------------------------------ leases

    def lease(
        self,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 15.0,
        target: str | None = None,
    ) -> PostgresLease:
        """A `PostgresLease` on `key` (and on `target`, what the router controls, if given)."""
        return PostgresLease(self, key, holder=holder, ttl=ttl, target=target)

    async def holder_of(self, key: str) -> dict[str, Any] | None:
        """Who holds `key`'s lease, or None when nobody does (never taken, released, expired).

        A dict as `EtcdStore.holder_of` gives: ``holder``, ``host``, ``pid``, ``ttl``,
        ``acquired_at`` (seconds since the epoch), ``token`` and ``ttl_left`` (seconds,
        on the server's clock).
        """
        check_name("key", key)
        sql = self._sql

        def read(conn: Any) -> Any:
            return conn.execute(sql.holder_info, (key,)).fetchone()

        row = await self._run(read, error=StateError, doing=f"reading the lease of {key!r}")
        if row is None:
            return None
        holder, token, left, released, host, pid, ttl, acquired_at = row
        if released or left <= 0:
            return None
        return {
            "holder": holder,
            "host": host,
            "pid": pid,
            "ttl": ttl,
            "acquired_at": acquired_at,
            "token": token,
            "ttl_left": left,
        }

    # ------------------------------------------------------------------ commands

    def commands(self, key: str) -> PostgresCommands:
        """The operator inbox of `key`: send from anywhere; take and answer as the lease holder."""
        return PostgresCommands(self, check_name("key", key))

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Close the connection; later calls raise. Safe to call more than once."""
        self._closed = True

        def close() -> None:
            if self._conn_lock.acquire(timeout=self.timeout):
                try:
                    self._drop()
                finally:
                    self._conn_lock.release()

        self._interrupt()
        with anyio.move_on_after(self.timeout):
            await anyio.to_thread.run_sync(close, abandon_on_cancel=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, table={self.table!r})"


def _readable(conn: Any) -> bool:
    """True when an idle connection has something to read: the server ended it.

    An idle session receives nothing unless the server is closing it (a restart, an
    administrator's terminate, a reset link): the goodbye and the end of stream are
    waiting. Checking first means a call after a restart runs on a new connection
    instead of failing on the dead one, and no statement is ever sent twice.
    """
    try:
        ready, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except Exception:  # no socket left (closed, broken): start anew
        return True
    return bool(ready)


def _holds(conn: Any, sql: _Queries, key: str, fence: tuple[str, int]) -> bool:
    """True when `fence` (holder, token) still holds `key`'s lease; locks the row FOR SHARE."""
    holder, token = fence
    return conn.execute(sql.lease_share, (key, holder, token)).fetchone() is not None


class _Busy(Exception):
    """The connection stayed in use by an abandoned call for a whole `timeout`."""


def _now_whose(key: str, row: Any) -> str:
    """The end of a refusal: whose the lease of `key` is now."""
    if row is None:
        return f"the lease of {key} is no longer held (its row is gone)"
    holder, token, left, released = row
    if released:
        return f"the lease of {key} was released by {shown(holder, limit=200)}"
    if left <= 0:
        return (
            f"the lease of {key} ran out {-left:.1f} s ago (last {shown(holder, limit=200)}'s, "
            f"token {token})"
        )
    return f"the lease of {key} is now {shown(holder, limit=200)}'s (token {token})"


class PostgresLease:
    """A `FencedLease`: a row (key, holder, token, expires_at) in ``<table>_leases``.

    Expiry is on the server's clock. `acquire` takes a free or expired row and increments
    its token; `renew` extends it only while it is still this holder's, with this token,
    and unexpired; `check` proves the same with one round trip and returns the token;
    `release` marks only this holding expired. With a `target`, a second row (named
    after a SHA-256 of the target) is held with the key's, in the same transactions, so
    two keys cannot drive one router.
    """

    def __init__(
        self,
        store: PostgresStore,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 15.0,
        target: str | None = None,
    ) -> None:
        if target is not None and (not isinstance(target, str) or not target):
            raise ConfigError("target", target, "must be a non-empty string (or None)")
        self.store = store
        self.key = check_name("key", key)
        self.target = target
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        self._rows = [self.key]
        if target is not None:
            # A key never holds ':', so a target's row never meets a key's.
            digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()
            self._rows.append(f"target:{digest}")
        self._tokens: dict[str, int] = {}

    @property
    def holder(self) -> str:
        """The holder id of this lease."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew (on the server's clock)."""
        return self._ttl

    @property
    def token(self) -> int | None:
        """The fencing token of the current holding, or None if not held."""
        return self._tokens.get(self.key)

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release` (even once lost)."""
        return bool(self._tokens)

    def _fence(self) -> tuple[str, int] | None:
        token = self.token
        return None if token is None else (self._holder, token)

    def _what(self, row: str) -> str:
        if row == self.key:
            return f"rollout {self.key!r} is already being run"
        return f"traffic target {shown(self.target)} is already being driven"

    async def acquire(self) -> None:
        """Take the lease (a free or expired row), or raise `LeaseHeldError` naming the holder.

        Held already: renewed. Held and lost: taken anew (a new token) if free again; until
        then the lost holding stays this store's fence, so its writes stay refused.
        """
        if self.held:
            try:
                await self.renew()
                return
            except LeaseLostError:
                pass
        sql = self.store._sql
        rows, holder, ttl = list(self._rows), self._holder, self._ttl
        host, pid = socket.gethostname(), os.getpid()
        psycopg = self.store._pg

        def take(conn: Any) -> tuple[dict[str, int], str | None, Any]:
            tokens: dict[str, int] = {}
            with conn.transaction():
                for row in rows:
                    params = {"key": row, "holder": holder, "ttl": ttl, "host": host, "pid": pid}
                    got = conn.execute(sql.acquire, params).fetchone()
                    if got is None:
                        info = conn.execute(sql.holder, (row,)).fetchone()
                        raise psycopg.Rollback()  # none of the rows, or all of them
                    tokens[row] = got[0]
                return tokens, None, None
            return {}, row, info

        tokens, row, info = await self.store._run(
            take, error=LeaseError, doing=f"acquiring the lease of {self.key!r}"
        )
        if row is not None:
            raise LeaseHeldError(self._held_message(row, info))
        self._tokens = tokens
        self.store._held[self.key] = self

    def _held_message(self, row: str, info: Any) -> str:
        if info is None:
            return f"{self._what(row)} (holder unknown); only one runner may drive a rollout"
        holder, token, left, _ = info
        if left > 0:
            status = f"lease expires in {left:.1f} s, token {token}"
        else:
            status = f"its lease ran out {-left:.1f} s ago, token {token}: try again"
        return (
            f"{self._what(row)} by {shown(holder, limit=200)} ({status}); only one runner "
            "may drive a rollout"
        )

    async def _prove(self, *, extend: bool, doing: str) -> int:
        if not self._tokens:
            raise LeaseLostError(f"rollout {self.key!r}: the lease is not held")
        sql = self.store._sql
        tokens, holder, ttl = dict(self._tokens), self._holder, self._ttl
        psycopg = self.store._pg

        def prove(conn: Any) -> tuple[bool, Any]:
            lost: Any = None
            with conn.transaction():
                for row, token in tokens.items():
                    if extend:
                        done = conn.execute(sql.renew, (ttl, row, holder, token)).fetchone()
                    else:
                        done = conn.execute(sql.check, (row, holder, token)).fetchone()
                    if done is None:
                        lost = conn.execute(sql.holder, (row,)).fetchone()
                        raise psycopg.Rollback()
                return True, None
            return False, lost

        ok, info = await self.store._run(prove, error=LeaseError, doing=doing)
        if not ok:
            raise LeaseLostError(f"rollout {self.key!r}: {_now_whose(self.key, info)}")
        return tokens[self.key]

    async def renew(self) -> None:
        """Extend the lease by `ttl` on the server, or `LeaseLostError` if it is no longer ours."""
        await self._prove(extend=True, doing=f"renewing the lease of {self.key!r}")

    async def check(self) -> int:
        """Prove, with one round trip, that the lease is still ours and unexpired; its token."""
        return await self._prove(extend=False, doing=f"checking the lease of {self.key!r}")

    async def release(self) -> None:
        """Give the lease up: mark only this holding's rows expired (the token stays)."""
        tokens, self._tokens = self._tokens, {}
        if self.store._held.get(self.key) is self:
            del self.store._held[self.key]
        if not tokens:
            return
        sql = self.store._sql
        holder = self._holder

        def release(conn: Any) -> None:
            with conn.transaction():
                for row, token in tokens.items():
                    conn.execute(sql.release, (row, holder, token))

        await self.store._run(release, error=LeaseError, doing=f"releasing {self.key!r}")

    def __repr__(self) -> str:
        state = f"token {self.token}" if self.held else "not held"
        target = "" if self.target is None else f" target {self.target!r}"
        return f"<PostgresLease {self.key!r}{target} {self._holder!r} {state}>"


class PostgresCommands:
    """The operator inbox of one key in a `PostgresStore`.

    `send` works for anyone who can reach the database and returns the command's id;
    `take` (oldest first) and `answer` work only for the runner whose store holds the
    key's lease: both are conditional on its lease row, so a runner that lost its lease
    can neither swallow a command nor answer for its successor (`LeaseLostError`).
    `wait` polls for the answer. Answers and unclaimed commands older than an hour are
    deleted as new ones are written.
    """

    def __init__(self, store: PostgresStore, key: str) -> None:
        self.store = store
        self.key = key

    async def send(self, command: str, options: dict[str, Any] | None = None) -> str:
        """Queue `command` (``promote``, ``pause``...) with JSON `options`; its id."""
        if not isinstance(command, str) or not _COMMAND.fullmatch(command):
            raise ConfigError("command", command, "must be a command name such as 'promote'")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ConfigError("options", type(options).__name__, "must be a dict")
        try:
            text = json.dumps(options, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError("options", "<not JSON>", f"must be plain JSON data ({exc})") from None
        if len(text) > _MAX_OPTIONS:
            raise ConfigError("options", f"<{len(text)} characters>", "must be at most 64 KiB")
        ident = secrets.token_hex(12)
        sql, key = self.store._sql, self.key

        def send(conn: Any) -> None:
            with conn.transaction():
                conn.execute(sql.purge_commands, (_KEEP_SECONDS,))
                conn.execute(sql.send, (ident, key, command, text))

        await self.store._run(send, error=StateError, doing=f"sending {command} to {key!r}")
        return ident

    def _fence(self, doing: str) -> tuple[str, int]:
        lease = self.store._held.get(self.key)
        fence = None if lease is None else lease._fence()
        if fence is None:
            raise LeaseLostError(
                f"{self.key}: {doing} is for the runner holding the lease; this store holds "
                "no lease on it"
            )
        return fence

    async def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Remove and return the waiting commands, oldest first: ``(id, command, options)``."""
        fence = self._fence("taking commands")
        take, key = self.store._sql.take, self.key
        rows = await self.store._fenced(
            key,
            fence,
            lambda conn: list(conn.execute(take, (key,)).fetchall()),
            error=StateError,
            doing=f"taking the commands of {key!r}",
            refused="taking commands",
        )
        taken = []
        for ident, command, options, _ in sorted(rows, key=lambda row: row[3]):
            try:
                parsed = parse_json(options.encode(), what="command options")
            except ValueError:  # written by hand into the table: the command without options
                parsed = None
            taken.append((ident, command, parsed if isinstance(parsed, dict) else {}))
        return taken

    async def answer(self, ident: str, accepted: bool, reason: str) -> None:
        """Answer command `ident` under this lease holder's name (the first answer stays)."""
        if not isinstance(ident, str) or not 0 < len(ident) <= 64 or not ident.isprintable():
            raise ConfigError("id", ident, "must be a command id")
        if not isinstance(accepted, bool):
            raise ConfigError("accepted", accepted, "must be true or false")
        if not isinstance(reason, str):
            raise ConfigError("reason", type(reason).__name__, "must be a string")
        fence = self._fence("answering commands")
        sql, key = self.store._sql, self.key
        text = shown(reason, limit=MAX_TEXT)

        def answer(conn: Any) -> None:
            conn.execute(sql.purge_answers, (_KEEP_SECONDS,))
            conn.execute(sql.answer, (ident, key, accepted, text, fence[0]))

        await self.store._fenced(
            key,
            fence,
            answer,
            error=StateError,
            doing=f"answering {ident}",
            refused="answering",
        )

    async def wait(self, ident: str, timeout: float) -> dict[str, Any] | None:
        """The answer to `ident` (accepted, reason, holder, answered_at); None after `timeout`."""
        if not isinstance(ident, str) or not 0 < len(ident) <= 64:
            raise ConfigError("id", ident, "must be a command id")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigError("timeout", timeout, "must be a number of seconds")
        if not (math.isfinite(timeout) and timeout >= 0):
            raise ConfigError("timeout", timeout, "must be a finite number of seconds >= 0")
        sql, key = self.store._sql, self.key
        deadline = time.monotonic() + timeout

        def read(conn: Any) -> Any:
            return conn.execute(sql.answered, (ident, key)).fetchone()

        while True:
            row = await self.store._run(read, error=StateError, doing=f"waiting for {ident}")
            if row is not None:
                accepted, reason, holder, answered_at = row
                return {
                    "accepted": accepted,
                    "reason": reason,
                    "holder": holder,
                    "answered_at": answered_at,
                }
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await anyio.sleep(min(_POLL, left))

    def __repr__(self) -> str:
        return f"<PostgresCommands {self.key!r} in {self.store!r}>"


class _Queries:
    """The statements of one table prefix, composed once with quoted identifiers."""

    def __init__(self, psycopg: Any, prefix: str) -> None:
        sql = psycopg.sql

        def q(text: str) -> Any:
            return sql.SQL(text).format(
                state=sql.Identifier(f"{prefix}_state"),
                history=sql.Identifier(f"{prefix}_history"),
                leases=sql.Identifier(f"{prefix}_leases"),
                commands=sql.Identifier(f"{prefix}_commands"),
                answers=sql.Identifier(f"{prefix}_answers"),
            )

        # One advisory lock per prefix serialises table creation across runners.
        lock_id = zlib.crc32(f"canarykit tables {prefix}".encode())
        self.lock_schema = sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(lock_id))
        self.create = [
            q(
                "CREATE TABLE IF NOT EXISTS {state} (key text PRIMARY KEY, envelope text NOT NULL,"
                " token bigint, saved_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {history} (id bigserial PRIMARY KEY, key text NOT NULL,"
                " finish_ns bigint NOT NULL, release text NOT NULL, digest text NOT NULL,"
                " envelope text NOT NULL, UNIQUE (key, digest))"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {leases} (key text PRIMARY KEY, holder text NOT NULL,"
                " token bigint NOT NULL, expires_at timestamptz NOT NULL,"
                " released boolean NOT NULL DEFAULT false, host text NOT NULL DEFAULT '',"
                " pid integer NOT NULL DEFAULT 0, ttl float8 NOT NULL DEFAULT 0,"
                " acquired_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {commands} (id text PRIMARY KEY, seq bigserial,"
                " key text NOT NULL, command text NOT NULL, options text NOT NULL,"
                " sent_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {answers} (id text PRIMARY KEY, key text NOT NULL,"
                " accepted boolean NOT NULL, reason text NOT NULL, holder text NOT NULL,"
                " answered_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
        ]
        self.save = q(
            "INSERT INTO {state} (key, envelope, token, saved_at)"
            " VALUES (%s, %s, NULL, clock_timestamp())"
            " ON CONFLICT (key) DO UPDATE SET envelope = EXCLUDED.envelope,"
            " token = NULL, saved_at = EXCLUDED.saved_at"
        )
        # FOR SHARE: a takeover (an UPDATE of the lease row) waits for this write to commit,
        # and one that committed first makes the row fail the test when re-checked.
        self.save_fenced = q(
            "WITH lease AS (SELECT token FROM {leases} WHERE key = %s AND holder = %s"
            " AND token = %s AND expires_at > clock_timestamp() FOR SHARE)"
            " INSERT INTO {state} (key, envelope, token, saved_at)"
            " SELECT %s, %s, token, clock_timestamp() FROM lease"
            " ON CONFLICT (key) DO UPDATE SET envelope = EXCLUDED.envelope,"
            " token = EXCLUDED.token, saved_at = EXCLUDED.saved_at RETURNING 1"
        )
        self.load = q("SELECT envelope FROM {state} WHERE key = %s")
        self.delete = q("DELETE FROM {state} WHERE key = %s")
        self.archive = q(
            "INSERT INTO {history} (key, finish_ns, release, digest, envelope)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key, digest) DO NOTHING"
        )
        self.history = q(
            "SELECT id, envelope FROM {history} WHERE key = %s"
            " ORDER BY finish_ns DESC, id DESC LIMIT %s"
        )
        self.lease_share = q(
            "SELECT token FROM {leases} WHERE key = %s AND holder = %s AND token = %s"
            " AND expires_at > clock_timestamp() FOR SHARE"
        )
        self.holder = q(
            "SELECT holder, token,"
            " extract(epoch FROM expires_at - clock_timestamp())::float8, released"
            " FROM {leases} WHERE key = %s"
        )
        self.holder_info = q(
            "SELECT holder, token,"
            " extract(epoch FROM expires_at - clock_timestamp())::float8, released,"
            " host, pid, ttl, extract(epoch FROM acquired_at)::float8"
            " FROM {leases} WHERE key = %s"
        )
        self.acquire = q(
            "INSERT INTO {leases} AS l"
            " (key, holder, token, expires_at, released, host, pid, ttl, acquired_at)"
            " VALUES (%(key)s, %(holder)s, 1, clock_timestamp() + make_interval(secs => %(ttl)s),"
            " false, %(host)s, %(pid)s, %(ttl)s, clock_timestamp())"
            " ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, token = l.token + 1,"
            " expires_at = EXCLUDED.expires_at, released = false, host = EXCLUDED.host,"
            " pid = EXCLUDED.pid, ttl = EXCLUDED.ttl, acquired_at = EXCLUDED.acquired_at"
            " WHERE l.expires_at <= clock_timestamp() RETURNING token"
        )
        self.renew = q(
            "UPDATE {leases} SET expires_at = clock_timestamp() + make_interval(secs => %s)"
            " WHERE key = %s AND holder = %s AND token = %s"
            " AND expires_at > clock_timestamp() RETURNING token"
        )
        self.check = q(
            "SELECT token FROM {leases} WHERE key = %s"
            " AND holder = %s AND token = %s AND expires_at > clock_timestamp()"
        )
        self.release = q(
            "UPDATE {leases} SET expires_at = clock_timestamp(), released = true"
            " WHERE key = %s AND holder = %s AND token = %s"
        )
        self.purge_commands = q(
            "DELETE FROM {commands} WHERE sent_at < clock_timestamp() - make_interval(secs => %s)"
        )
        self.send = q("INSERT INTO {commands} (id, key, command, options) VALUES (%s, %s, %s, %s)")
        self.take = q("DELETE FROM {commands} WHERE key = %s RETURNING id, command, options, seq")
        self.purge_answers = q(
            "DELETE FROM {answers}"
            " WHERE answered_at < clock_timestamp() - make_interval(secs => %s)"
        )
        self.answer = q(
            "INSERT INTO {answers} (id, key, accepted, reason, holder)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
        )
        self.answered = q(
            "SELECT accepted, reason, holder, extract(epoch FROM answered_at)::float8"
            " FROM {answers}"
            " WHERE id = %s AND key = %s"
        )
