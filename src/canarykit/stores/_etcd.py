"""etcd v3: a rollout's state, its lease and its operator commands, shared by many hosts.

How this works. `EtcdStore` speaks etcd's v3 JSON gateway (``POST /v3/kv/range``,
``/v3/kv/put``, ``/v3/kv/txn``, ``/v3/lease/grant`` ..., keys and values in base64; etcd
3.4 serves it on every client URL) over httpx, so it runs on asyncio and trio alike.
Under the store's `prefix` (``canarykit/`` by default) a rollout key ``web`` owns::

    canarykit/web/state              the saved state (FileStore's checked envelope)
    canarykit/web/lease              who holds the rollout's lease, attached to an etcd lease
    canarykit/web/history/<ns>-...   archived records of finished rollouts
    canarykit/web/commands/<id>      operator commands waiting for the lease holder
    canarykit/web/answers/<id>       the holder's answers (kept for an hour)
    canarykit/.targets/<sha256>      the claim on a traffic target (``lease(target=...)``)

The lease (`EtcdLease`). Acquiring grants an etcd lease with the TTL and, in one
transaction, creates the lease key attached to it only if the key does not exist. The
key's ``create_revision`` is the holding's fencing token: etcd's revision only grows, so
each new holding has a larger one. Renewing is a keep-alive plus a read that the key is
still this holding's; when the holder stops renewing, etcd deletes the key at the end of
the TTL and another runner can create it. While a store holds the lease of a key, its
`save` and `archive` of that key are transactions compared on the token: a runner that
was paused past its lease and woke up after a takeover has its writes refused
(`LeaseLostError`), and the successor's state stands.

etcd grants at least ``1.5 * election timeout`` (2 s with the default 1 s), rounded up to
whole seconds, whatever shorter TTL is asked; and a new leader extends every lease by
its TTL when it takes office, so a takeover after a leader change can take up to twice
the TTL.

Several members. Every request goes to the member that answered last; a refused
connection, a timeout (`timeout` seconds: a request in flight when the leader dies waits
for etcd's own 7 s otherwise) or a 5xx answer moves it to the next member, round the list
with a short backoff, until the operation's `deadline`. Every write is safe to send
twice: a put writes the same value, a fenced transaction compares the same token, and an
acquire that already succeeded is recognised by its etcd lease id.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio

from .._errors import (
    ConfigError,
    LeaseError,
    LeaseHeldError,
    LeaseLostError,
    StateError,
    StateSaveError,
)
from .._files import parse_json
from .._http import (
    ResponseTooLarge,
    default_tls,
    exchange,
    import_httpx,
    redacting_httpx_logs,
    secret_redactor,
    worth_retrying,
)
from .._lease import _holder, _ttl
from .._retry import backoff_delay, describe_failure
from .._safe import check_name
from .._stores import (
    MAX_HISTORY,
    _envelope,
    _finish_ns,
    _release_part,
    _unwrap,
    check_history_limit,
    damaged_record,
)
from .._text import HIDDEN, MAX_TEXT, Redactor, shown

__all__ = ["EtcdCommands", "EtcdLease", "EtcdStore"]

logger = logging.getLogger("canarykit")

# The largest answer read from etcd: a range of history records or commands. etcd keeps
# values up to its request limit (1.5 MiB by default), and ranges here are bounded.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# How long an operator's command and the holder's answer live in etcd (an etcd lease
# each), so an inbox nobody reads, or answers nobody waited for, cannot grow forever.
MESSAGE_TTL = 3600
# The most commands one `take` reads.
MAX_TAKE = 100
# Calls of one store in flight at once: below the HTTP client's pool of 100 connections,
# so a queued call waits before its timeout starts (see `EtcdStore._call`).
MAX_IN_FLIGHT = 64
# The largest options of a command, as JSON.
MAX_OPTIONS_BYTES = 64 * 1024
_MESSAGE_ID = re.compile(r"\d{20}-[0-9a-f]{8}")
_EXTRA = "pip install 'canarykit[etcd]'"


class _Unanswered(Exception):
    """No etcd member could carry out a request; each caller says what it was for."""


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        return b""
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> str:
    """The ``range_end`` that selects every key starting with `prefix` (base64)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return _b64(bytes(raw))


def _int(value: Any) -> int:
    """An int64 of the gateway's JSON (written as a string), 0 when absent."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _endpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError("endpoints", value, "must be a list of http:// or https:// URLs")
    if len(value) > 16:
        raise ConfigError("endpoints", len(value), "must list at most 16 members")
    found: list[str] = []
    for index, url in enumerate(value):
        field = f"endpoints[{index}]"
        if not isinstance(url, str) or not url.isprintable() or any(c.isspace() for c in url):
            raise ConfigError(field, url, "must be an http:// or https:// URL")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(field, url, "must be a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(field, url, "must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # Not quoted back: it holds a password. Credentials go in username/password.
            raise ConfigError(
                field, HIDDEN, "must not hold credentials (pass username and password)"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(field, url, "must be scheme://host:port, without a path")
        found.append(f"{parts.scheme}://{parts.netloc}")
    if len(set(found)) != len(found):
        raise ConfigError("endpoints", value, "must not list a member twice")
    return tuple(found)


def _prefix(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 200
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise ConfigError("prefix", value, "must be 1-200 printable characters without spaces")
    if not value.endswith("/"):
        raise ConfigError("prefix", value, "must end with '/' (keys are '<prefix><key>/...')")
    return value


def _seconds(field: str, value: Any, *, at_most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds")
    if not (math.isfinite(value) and 0 < value <= at_most):
        raise ConfigError(field, value, f"must be > 0 and at most {at_most:g} seconds")
    return float(value)


def _path(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(field, value, "must be a file path")
    return os.fspath(value)


def _tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> Any:
    """The SSL context for the TLS files given, or None to use the default one."""
    if ca_file is None and cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("ca_file", ca_file, f"could not be loaded ({exc})") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            field = "cert_file" if key_file is None else "cert_file/key_file"
            raise ConfigError(field, cert_file, f"could not be loaded ({exc})") from None
    return context


def _failure(exc: BaseException, timeout: float) -> str:
    """`describe_failure`, with the cause's text when the error has none of its own.

    httpx on trio raises a bare ``ConnectError()`` for a refused connection or a
    certificate that does not verify; what happened is in the exceptions under it.
    """
    text = describe_failure(exc, timeout)
    if str(exc) or isinstance(exc, TimeoutError):
        return text
    under: BaseException | None = exc
    for _ in range(4):
        under = under.__cause__ or under.__context__ if under is not None else None
        if under is not None and str(under):
            return f"{text}: {describe_failure(under, timeout)}"
    return text


class _Sender:
    """What `exchange` needs of a client (``stream``), sending each body as one chunk.

    httpx sends a body through an async generator; when the member breaks the connection
    while it is being sent (a TLS member refusing a client without a certificate), the
    generator is left suspended, and trio warns about it when it is collected. Here the
    body is an iterator object instead, which is safe to drop at any point.
    """

    def __init__(self, client: Any, httpx: Any) -> None:
        self.client = client
        self.httpx = httpx
        self.body_class = _body_class(httpx)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], within: float
    ) -> AsyncIterator[Any]:
        # httpx's own timeouts end a slow connect or TLS handshake a little before the
        # attempt's deadline would cancel it: a cancelled handshake can leave the socket
        # to the garbage collector (httpcore on trio), httpx's timeout closes it.
        timeout = self.httpx.Timeout(max(0.001, within * 0.8))
        request = self.client.build_request(
            method, url, content=content, headers=headers, timeout=timeout
        )
        request.stream = self.body_class(content)
        response = await self.client.send(request, stream=True)
        try:
            yield response
        finally:
            # Shielded: the attempt's deadline cancelling the close would leave the
            # connection open, to be closed by the garbage collector.
            with anyio.CancelScope(shield=True):
                await response.aclose()


_body_classes: dict[int, type] = {}


def _body_class(httpx: Any) -> type:
    """An `httpx.AsyncByteStream` that yields one chunk without an async generator."""
    found = _body_classes.get(id(httpx))
    if found is None:

        class OneChunk(httpx.AsyncByteStream):  # type: ignore[misc]
            def __init__(self, data: bytes) -> None:
                self.data: bytes | None = data

            def __aiter__(self) -> OneChunk:
                return self

            async def __anext__(self) -> bytes:
                data, self.data = self.data, None
                if data is None:
                    raise StopAsyncIteration
                return data

        found = _body_classes[id(httpx)] = OneChunk
    return found


def _json_value(raw: bytes, what: str) -> dict[str, Any] | None:
    """A small JSON object written by canarykit in etcd, or None when it is not one."""
    try:
        value = parse_json(raw, what=what)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class EtcdStore:
    """A `StateStore` in an etcd v3 cluster, with fenced leases and an operator inbox.

    ``EtcdStore(["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"])``
    keeps key ``web``'s state at ``canarykit/web/state`` (see the module's documentation
    for the layout). Requests go to one member at a time and move on to the next when a
    member is down or slow, so losing any minority of the cluster, its leader included,
    costs a retry, not the rollout.

    - `endpoints`: the members' client URLs (a list, or one comma-separated string).
    - `prefix`: where this store's keys live (ends with ``/``; ``canarykit/``).
    - `timeout`: seconds for one request to one member (2 s).
    - `deadline`: seconds for a whole operation, trying members in turn (10 s).
    - `ca_file`, `cert_file`, `key_file`: TLS, for ``https://`` endpoints: the CA that
      signed the members' certificates, and a client certificate and its key.
    - `username`, `password`: etcd's own authentication (both or neither). The password
      is never shown: not in a repr, an error, or a log line.

    `load` refuses a damaged record (`CorruptStateError`) or a newer format
    (`StateVersionError`) as `FileStore` does. `lease(key)` gives an `EtcdLease`; while
    it is held, this store's `save` and `archive` of that key are refused once another
    runner has taken the lease over (`LeaseLostError`). `holder_of(key)` says who holds a
    lease, `commands(key)` is the rollout's operator inbox. Close the HTTP client with
    `aclose()` or ``async with``; one store serves one event loop.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        prefix: str = "canarykit/",
        timeout: float = 2.0,
        deadline: float = 10.0,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.endpoints = _endpoints(endpoints)
        self.prefix = _prefix(prefix)
        self.timeout = _seconds("timeout", timeout, at_most=300)
        self.deadline = _seconds("deadline", deadline, at_most=3600)
        if self.deadline < self.timeout:
            raise ConfigError("deadline", deadline, f"must be at least timeout ({timeout:g} s)")
        self.ca_file = _path("ca_file", ca_file)
        self.cert_file = _path("cert_file", cert_file)
        self.key_file = _path("key_file", key_file)
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("key_file", self.key_file, "needs cert_file too")
        tls_files = self.ca_file or self.cert_file
        if tls_files and not all(url.startswith("https://") for url in self.endpoints):
            raise ConfigError("endpoints", list(self.endpoints), "must be https:// with TLS files")
        if username is not None and (not isinstance(username, str) or not 0 < len(username) <= 200):
            raise ConfigError("username", username, "must be a non-empty string")
        if password is not None and (not isinstance(password, str) or not password):
            raise ConfigError("password", HIDDEN, "must be a non-empty string")
        if (username is None) != (password is None):
            missing = "password" if password is None else "username"
            raise ConfigError(missing, None, "username and password go together")
        self.username = username
        self._password = password
        self._tls = _tls_context(self.ca_file, self.cert_file, self.key_file)
        self._auth_token: str | None = None
        self._client: Any = None
        self._in_flight: anyio.CapacityLimiter | None = None
        self._current = 0
        # The leases this store holds now, by rollout key: they fence its writes.
        self._held: dict[str, EtcdLease] = {}

    # -- keys -------------------------------------------------------------------------------

    def etcd_key(self, key: str, part: str) -> str:
        """The etcd key of `part` (``state``, ``lease``, ``history/``...) of rollout `key`."""
        return f"{self.prefix}{check_name('key', key)}/{part}"

    def _target_key(self, target: str) -> str:
        # A rollout key never starts with '.', so this cannot meet one.
        digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}.targets/{digest}"

    # -- HTTP -------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self._redactor()(text)

    def _redactor(self) -> Redactor:
        found = [value for value in (self._password, self._auth_token) if value]
        return secret_redactor(found)

    def _http(self) -> Any:
        httpx = import_httpx("EtcdStore", _EXTRA)
        if self._client is None:
            verify = self._tls if self._tls is not None else default_tls(httpx)
            self._client = httpx.AsyncClient(
                headers={"User-Agent": "canarykit", "Content-Type": "application/json"},
                timeout=httpx.Timeout(self.timeout),
                verify=verify,
                follow_redirects=False,
            )
        return httpx

    async def _call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST `body` to `path` on a member and return the JSON answer.

        At most `MAX_IN_FLIGHT` calls of this store are in flight; the others wait their
        turn before their deadline starts, so a burst (a thousand rollouts saving at once)
        queues here instead of timing out in the HTTP client's connection pool and failing
        over to members that are just as busy.
        """
        if self._in_flight is None:  # made on first use: it belongs to the running loop
            self._in_flight = anyio.CapacityLimiter(MAX_IN_FLIGHT)
        async with self._in_flight:
            return await self._call_now(path, body, what)

    async def _call_now(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST `body` to `path` on a member and return the JSON answer.

        Tries the members in turn as the module's documentation says; `_Unanswered` when
        none did within the deadline, or when etcd refused the request itself (4xx).
        """
        httpx = self._http()
        give_up_at = anyio.current_time() + self.deadline
        failures: dict[str, str] = {}
        tries = 0
        renewed_auth = False
        with redacting_httpx_logs(self._redactor()):
            while True:
                if self._password is not None and self._auth_token is None:
                    await self._authenticate(give_up_at)
                endpoint = self.endpoints[self._current]
                left = give_up_at - anyio.current_time()
                headers = {} if self._auth_token is None else {"Authorization": self._auth_token}
                within = max(0.001, min(self.timeout, left))
                try:
                    answer = await exchange(
                        _Sender(self._client, httpx),
                        "POST",
                        endpoint + path,
                        deadline=within,
                        max_bytes=MAX_RESPONSE_BYTES,
                        content=json.dumps(body).encode(),
                        headers=headers,
                        within=within,
                    )
                except ResponseTooLarge as exc:
                    raise _Unanswered(f"{what}: {exc}") from None
                except (TimeoutError, OSError, httpx.TransportError) as exc:
                    failures[endpoint] = self._redact(_failure(exc, self.timeout))
                else:
                    if answer.ok:
                        return self._decode(answer.body, what)
                    text = answer.text(self._redactor(), limit=300)
                    expired = answer.status == 401 or "invalid auth token" in text
                    if expired and self._password is not None and not renewed_auth:
                        # The token expired (etcd's simple tokens last 5 minutes), or
                        # this member does not know it.
                        renewed_auth = True
                        self._auth_token = None
                        continue
                    if not worth_retrying(answer.status):
                        raise _Unanswered(f"{what}: etcd refused it: HTTP {answer.status} {text}")
                    failures[endpoint] = f"HTTP {answer.status} {text}"
                tries += 1
                self._current = (self._current + 1) % len(self.endpoints)
                if anyio.current_time() >= give_up_at:
                    detail = "; ".join(f"{url}: {why}" for url, why in failures.items())
                    raise _Unanswered(
                        f"{what}: no etcd member answered within {self.deadline:g} s ({detail})"
                    )
                if tries % len(self.endpoints) == 0:
                    # Round the whole list: an election may be under way; wait a little.
                    pause = min(backoff_delay(0.05, tries // len(self.endpoints)), 1.0)
                    await anyio.sleep(min(pause, max(0.0, give_up_at - anyio.current_time())))

    def _decode(self, body: bytes, what: str) -> dict[str, Any]:
        try:
            value = parse_json(body, what=f"{what}: etcd's answer")
        except ValueError as exc:
            raise _Unanswered(self._redact(str(exc))) from None
        if not isinstance(value, dict):
            raise _Unanswered(f"{what}: etcd's answer is not a JSON object")
        return value

    async def _authenticate(self, give_up_at: float) -> None:
        """Get an auth token for username/password, from any member."""
        httpx = self._http()
        body = {"name": self.username, "password": self._password}
        failures: list[str] = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[self._current]
            left = give_up_at - anyio.current_time()
            try:
                within = max(0.001, min(self.timeout, left))
                answer = await exchange(
                    _Sender(self._client, httpx),
                    "POST",
                    endpoint + "/v3/auth/authenticate",
                    deadline=within,
                    max_bytes=64 * 1024,
                    content=json.dumps(body).encode(),
                    headers={},
                    within=within,
                )
            except (TimeoutError, OSError, httpx.TransportError) as exc:
                failures.append(f"{endpoint}: {self._redact(_failure(exc, self.timeout))}")
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            if answer.ok:
                token = self._decode(answer.body, "authenticating").get("token")
                if isinstance(token, str) and token:
                    self._auth_token = token
                    return
            text = answer.text(self._redactor(), limit=300)
            raise _Unanswered(
                f"authenticating as {self.username!r} failed: HTTP {answer.status} {text}"
            )
        raise _Unanswered(f"authenticating failed on every member ({'; '.join(failures)})")

    async def aclose(self) -> None:
        """Close the HTTP client (the store opens a new one if used again)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the gateway's operations -----------------------------------------------------------

    async def _range(
        self, key: str, what: str, *, prefix: bool = False, **options: Any
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"key": _b64(key), **options}
        if prefix:
            body["range_end"] = _prefix_end(key)
        answer = await self._call("/v3/kv/range", body, what)
        kvs = answer.get("kvs") or []
        return [kv for kv in kvs if isinstance(kv, dict)]

    async def _grant(self, ttl: int, what: str) -> tuple[int, int]:
        """A new etcd lease: its id and the TTL etcd granted (maybe longer than asked)."""
        answer = await self._call("/v3/lease/grant", {"TTL": ttl}, what)
        lease_id = _int(answer.get("ID"))
        if lease_id == 0:
            raise _Unanswered(f"{what}: etcd granted no lease ({answer.get('error')!r})")
        return lease_id, _int(answer.get("TTL"))

    async def _revoke(self, lease_id: int, what: str) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease_id)}, what)
        except _Unanswered as exc:
            # Not found (expired already) is fine; otherwise it expires at its TTL.
            logger.debug("%s", exc)

    def _owns(self, lease: EtcdLease) -> dict[str, Any]:
        """The compare that holds while `lease`'s holding is the current one."""
        return {
            "key": _b64(lease.etcd_key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": str(lease.token),
        }

    async def _fenced(
        self, key: str, operations: list[dict[str, Any]], what: str, *, need_lease: bool = False
    ) -> dict[str, Any]:
        """Run `operations` in one txn compared on the lease token of `key`, when held here.

        Without a lease held by this store: a plain txn, or `LeaseError` with `need_lease`.
        A refused compare raises `LeaseLostError` naming the lease's holder now.
        """
        lease = self._held.get(key)
        if lease is None or lease.token is None:
            if need_lease:
                raise LeaseError(
                    f"{what}: only the holder of rollout {key!r}'s lease may do this, and this "
                    "store does not hold it"
                )
            return await self._call("/v3/kv/txn", {"success": operations}, what)
        body = {
            "compare": [self._owns(lease)],
            "success": operations,
            "failure": [{"request_range": {"key": _b64(lease.etcd_key)}}],
        }
        answer = await self._call("/v3/kv/txn", body, what)
        if answer.get("succeeded") is True:
            return answer
        now = _range_answer(answer)
        who = _holder_of(now[0]) if now else None
        now_held = (
            f"is now {shown(who, limit=200)}'s"
            if who is not None
            else "is no longer held (it expired or was released)"
        )
        raise LeaseLostError(f"{what} refused: the lease of {key} {now_held}")

    # -- StateStore -------------------------------------------------------------------------

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Replace `key`'s state with `data` (fenced by the lease when this store holds it)."""
        etcd_key = self.etcd_key(key, "state")
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{etcd_key}: the state is not plain JSON data: {exc}") from None
        put = {"request_put": {"key": _b64(etcd_key), "value": _b64(text)}}
        try:
            await self._fenced(key, [put], "state write")
        except _Unanswered as exc:
            raise StateSaveError(f"{etcd_key}: could not save the state: {exc}") from None

    async def load(self, key: str) -> dict[str, Any] | None:
        """`key`'s saved data, or None if nothing was saved under it."""
        etcd_key = self.etcd_key(key, "state")
        try:
            kvs = await self._range(etcd_key, "reading the state")
        except _Unanswered as exc:
            raise StateError(f"{etcd_key}: could not read the saved state: {exc}") from None
        if not kvs:
            return None
        return _unwrap(f"etcd {etcd_key}", key, _kv_value(kvs[0]))

    async def delete(self, key: str) -> None:
        """Forget `key`'s state (fenced like `save`); its history and lease stay."""
        etcd_key = self.etcd_key(key, "state")
        delete = {"request_delete_range": {"key": _b64(etcd_key)}}
        try:
            await self._fenced(key, [delete], "state delete")
        except _Unanswered as exc:
            raise StateSaveError(f"{etcd_key}: could not delete the state: {exc}") from None

    async def archive(self, key: str, data: dict[str, Any]) -> None:
        """Keep `data`, a finished rollout's record, in `key`'s history (fenced like `save`).

        Named ``history/<finish time in ns>-<release>-<digest>``: names sort by finish
        time, and archiving the same record twice keeps it once.
        """
        if not isinstance(data, dict):
            raise ConfigError("data", type(data).__name__, "must be a dict")
        base = self.etcd_key(key, "history/")
        try:
            text = _envelope(key, data)
        except (TypeError, ValueError) as exc:
            raise StateSaveError(f"{base}: the record is not plain JSON data: {exc}") from None
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = f"{base}{_finish_ns(data):020d}-{_release_part(data.get('release'))}-{digest}"
        put = {"request_put": {"key": _b64(name), "value": _b64(text)}}
        try:
            await self._fenced(key, [put], "history write")
        except _Unanswered as exc:
            raise StateSaveError(f"{base}: could not archive the record: {exc}") from None

    async def history(self, key: str, *, limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
        """`key`'s archived records, newest first, at most `limit`; a damaged one is listed
        as ``{"damaged": why, "file": name}`` in its place.
        """  # noqa: D205 (the summary needs two lines)
        if check_history_limit(limit) == 0:
            return []
        base = self.etcd_key(key, "history/")
        try:
            kvs = await self._range(
                base,
                "reading the history",
                prefix=True,
                limit=limit,
                sort_order="DESCEND",
                sort_target="KEY",
            )
        except _Unanswered as exc:
            raise StateError(f"{base}: could not read the history: {exc}") from None
        records: list[dict[str, Any]] = []
        for kv in kvs:
            name = _unb64(kv.get("key")).decode("utf-8", "replace")
            try:
                records.append(_unwrap(f"etcd {name}", key, _kv_value(kv)))
            except StateError as exc:
                records.append(damaged_record(key, name[len(base) :], exc))
        return records

    # -- leases -----------------------------------------------------------------------------

    def lease(
        self,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = 15.0,
        target: str | None = None,
    ) -> EtcdLease:
        """An `EtcdLease` on rollout `key` (and on traffic `target`, when given)."""
        return EtcdLease(self, key, holder=holder, ttl=ttl, target=target)

    async def holder_of(self, key: str) -> dict[str, Any] | None:
        """Who holds `key`'s lease: ``holder``, ``host``, ``pid``, ``ttl``, ``token`` and
        ``ttl_left`` (seconds, from etcd), or None when nobody does.
        """  # noqa: D205 (the summary needs two lines)
        etcd_key = self.etcd_key(key, "lease")
        try:
            kvs = await self._range(etcd_key, "reading the lease")
            if not kvs:
                return None
            info = _json_value(_kv_value(kvs[0]), "lease") or {}
            lease_id = _int(kvs[0].get("lease"))
            left = await self._call(
                "/v3/lease/timetolive", {"ID": str(lease_id)}, "reading the lease's TTL"
            )
        except _Unanswered as exc:
            raise LeaseError(f"{etcd_key}: could not read the lease: {exc}") from None
        return {
            "holder": info.get("holder"),
            "host": info.get("host"),
            "pid": info.get("pid"),
            "ttl": info.get("ttl"),
            "acquired_at": info.get("acquired_at"),
            "token": _int(kvs[0].get("create_revision")),
            "ttl_left": _int(left.get("TTL")),
        }

    # -- commands ---------------------------------------------------------------------------

    def commands(self, key: str) -> EtcdCommands:
        """Rollout `key`'s operator inbox: send, take, answer, wait."""
        return EtcdCommands(self, check_name("key", key))

    def __repr__(self) -> str:
        auth = "" if self.username is None else f" as {self.username!r}"
        return f"EtcdStore({list(self.endpoints)!r}, prefix={self.prefix!r}){auth}"


def _kv_value(kv: dict[str, Any]) -> bytes:
    return _unb64(kv.get("value", ""))


def _range_answer(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The kvs of a txn's first range response (a failed compare's read-back)."""
    for response in answer.get("responses") or []:
        if isinstance(response, dict) and isinstance(response.get("response_range"), dict):
            kvs = response["response_range"].get("kvs") or []
            return [kv for kv in kvs if isinstance(kv, dict)]
    return []


def _holder_of(kv: dict[str, Any]) -> str | None:
    info = _json_value(_kv_value(kv), "lease")
    holder = None if info is None else info.get("holder")
    return holder if isinstance(holder, str) else None


class EtcdLease:
    """A `FencedLease` on an etcd cluster: one key attached to an etcd lease with the TTL.

    Made by `EtcdStore.lease`. `token` is the lease key's ``create_revision``, larger for
    every new holding. `acquire` raises `LeaseHeldError` naming the holder; `renew` keeps
    the etcd lease alive and checks the key is still this holding's (`LeaseLostError`
    otherwise); `check` proves the holding with one read; `release` deletes the key only
    if it is still this holding's, then revokes the etcd lease. The etcd lease's TTL is
    `ttl` rounded up to whole seconds, and at least etcd's minimum (2 s by default).
    """

    def __init__(
        self,
        store: EtcdStore,
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
        self.etcd_key = store.etcd_key(key, "lease")
        self.target_key = None if target is None else store._target_key(target)
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        self._lease_id: int | None = None
        self._token: int | None = None
        self.granted_ttl: int | None = None

    @property
    def holder(self) -> str:
        """The holder id of this lease."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew (as asked)."""
        return self._ttl

    @property
    def token(self) -> int | None:
        """The fencing token of the current holding, or None when not held."""
        return self._token

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release` (or a loss noticed)."""
        return self._token is not None

    def _info(self) -> str:
        return json.dumps(
            {
                "holder": self._holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "ttl": self._ttl,
                "acquired_at": time.time(),
                **({} if self.target is None else {"target": self.target, "key": self.key}),
            },
            sort_keys=True,
        )

    def _keys(self) -> list[str]:
        return [self.etcd_key] + ([] if self.target_key is None else [self.target_key])

    async def acquire(self) -> None:
        """Take the lease, or raise `LeaseHeldError` naming its holder."""
        if self.held:
            await self.renew()
            return
        store = self.store
        try:
            lease_id, granted = await store._grant(math.ceil(self._ttl), "granting a lease")
        except _Unanswered as exc:
            raise LeaseError(f"{self.etcd_key}: could not take the lease: {exc}") from None
        info = _b64(self._info())
        keys = self._keys()
        body = {
            "compare": [
                {"key": _b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                for k in keys
            ],
            "success": [
                {"request_put": {"key": _b64(k), "value": info, "lease": str(lease_id)}}
                for k in keys
            ],
            "failure": [{"request_range": {"key": _b64(k)}} for k in keys],
        }
        try:
            answer = await store._call("/v3/kv/txn", body, "taking the lease")
        except _Unanswered as exc:
            await store._revoke(lease_id, "giving back an unused lease")
            raise LeaseError(f"{self.etcd_key}: could not take the lease: {exc}") from None
        token: int | None
        if answer.get("succeeded") is True:
            token = _int((answer.get("header") or {}).get("revision"))
        else:
            token = self._already_ours(answer, lease_id)
        if token is None:
            await store._revoke(lease_id, "giving back an unused lease")
            raise LeaseHeldError(await self._held_message(answer))
        self._lease_id, self._token, self.granted_ttl = lease_id, token, granted
        store._held[self.key] = self

    def _already_ours(self, answer: dict[str, Any], lease_id: int) -> int | None:
        """The token when a retried acquire finds its first try succeeded, else None."""
        found: list[dict[str, Any]] = []
        for response in answer.get("responses") or []:
            kvs = (response or {}).get("response_range", {}).get("kvs") or []
            found.append(kvs[0] if kvs else {})
        if found and all(_int(kv.get("lease")) == lease_id for kv in found):
            return _int(found[0].get("create_revision"))
        return None

    async def _held_message(self, answer: dict[str, Any]) -> str:
        responses = answer.get("responses") or []
        for index, response in enumerate(responses):
            kvs = (response or {}).get("response_range", {}).get("kvs") or []
            if not kvs:
                continue
            info = _json_value(_kv_value(kvs[0]), "lease") or {}
            left = await self._ttl_left(_int(kvs[0].get("lease")))
            if index == 0:
                what = f"rollout {self.key!r} is already being run"
            else:
                what = f"traffic target {shown(self.target)} is already being driven"
                if isinstance(info.get("key"), str):
                    what += f" for rollout {shown(info['key'], limit=200)}"
            who = (
                f"{shown(info.get('holder'), limit=200)} (pid {shown(info.get('pid'), limit=20)}"
                f" on {shown(info.get('host'), limit=200)})"
            )
            expiry = "" if left is None else f"; its etcd lease expires in {left} s"
            return f"{what} by {who}{expiry}; only one runner may drive a rollout"
        # Gone between the compare and the read: it was released or expired just now.
        return f"rollout {self.key!r}: the lease changed hands while taking it; try again"

    async def _ttl_left(self, lease_id: int) -> int | None:
        try:
            answer = await self.store._call(
                "/v3/lease/timetolive", {"ID": str(lease_id)}, "reading a lease's TTL"
            )
        except _Unanswered:
            return None
        return _int(answer.get("TTL"))

    def _lost(self, why: str) -> LeaseLostError:
        self._forget()
        return LeaseLostError(f"rollout {self.key!r}: the lease {why}")

    def _forget(self) -> None:
        self._token = None
        if self.store._held.get(self.key) is self:
            del self.store._held[self.key]

    async def renew(self) -> None:
        """Keep the etcd lease alive and check the key is still ours; else `LeaseLostError`."""
        if self._lease_id is None or self._token is None:
            raise LeaseLostError(f"rollout {self.key!r}: the lease is not held")
        try:
            answer = await self.store._call(
                "/v3/lease/keepalive", {"ID": str(self._lease_id)}, "renewing the lease"
            )
        except _Unanswered as exc:
            raise LeaseError(f"{self.etcd_key}: could not renew the lease: {exc}") from None
        result = answer.get("result")
        if not isinstance(result, dict) or _int(result.get("TTL")) <= 0:
            raise self._lost("expired in etcd before it was renewed")
        await self.check()

    async def check(self) -> int:
        """Prove with one read that the lease is still ours; return its token."""
        token = self._token
        if token is None:
            raise LeaseLostError(f"rollout {self.key!r}: the lease is not held")
        try:
            kvs = await self.store._range(self.etcd_key, "checking the lease")
        except _Unanswered as exc:
            raise LeaseError(f"{self.etcd_key}: could not check the lease: {exc}") from None
        if not kvs:
            raise self._lost("expired or was released")
        if _int(kvs[0].get("create_revision")) != token:
            who = _holder_of(kvs[0])
            raise self._lost(f"was taken over by {shown(who, limit=200)}")
        return token

    async def release(self) -> None:
        """Give the lease up: delete the key if it is still this holding's, revoke the lease."""
        lease_id, token = self._lease_id, self._token
        self._forget()
        self._lease_id = None
        if lease_id is None or token is None:
            return
        store = self.store
        body = {
            "compare": [
                {
                    "key": _b64(self.etcd_key),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": str(token),
                }
            ],
            "success": [{"request_delete_range": {"key": _b64(k)}} for k in self._keys()],
        }
        try:
            await store._call("/v3/kv/txn", body, "releasing the lease")
        except _Unanswered as exc:
            raise LeaseError(f"{self.etcd_key}: could not release the lease: {exc}") from None
        finally:
            # Revoking deletes only keys attached to this etcd lease: never another's.
            with anyio.CancelScope(shield=True):
                await store._revoke(lease_id, "revoking the lease")

    def __repr__(self) -> str:
        state = "not held" if self._token is None else f"held, token {self._token}"
        target = "" if self.target is None else f" target {self.target!r}"
        return f"<EtcdLease {self.etcd_key!r}{target} {self._holder!r} {state}>"


class EtcdCommands:
    """A rollout's operator inbox in etcd: `EtcdStore.commands(key)`.

    An operator anywhere `send`s a command (``promote``, ``pause``...) and `wait`s for
    its answer; the runner holding the rollout's lease `take`s the commands, oldest
    first, and `answer`s each. Taking deletes what it took in a transaction compared on
    the lease token, so only the holder can take and no command is taken twice; answers
    are written the same way, with the holder's name. Commands and answers are attached
    to a one-hour etcd lease (`MESSAGE_TTL`), so nothing piles up.
    """

    def __init__(self, store: EtcdStore, key: str) -> None:
        self.store = store
        self.key = key
        self._commands = store.etcd_key(key, "commands/")
        self._answers = store.etcd_key(key, "answers/")

    async def send(self, command: str, options: dict[str, Any] | None = None) -> str:
        """Queue `command` with `options` (JSON data) for the lease holder; return its id."""
        check_name("command", command)
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ConfigError("options", type(options).__name__, "must be a dict")
        try:
            text = json.dumps(
                {"command": command, "options": options, "sent_at": time.time()},
                sort_keys=True,
                allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError("options", shown(options, limit=200), f"not JSON ({exc})") from None
        if len(text) > MAX_OPTIONS_BYTES:
            raise ConfigError("options", len(text), f"must be at most {MAX_OPTIONS_BYTES} bytes")
        message_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        store = self.store
        try:
            lease_id, _ = await store._grant(MESSAGE_TTL, "granting the command's lease")
            await store._call(
                "/v3/kv/put",
                {
                    "key": _b64(self._commands + message_id),
                    "value": _b64(text),
                    "lease": str(lease_id),
                },
                "sending the command",
            )
        except _Unanswered as exc:
            raise StateError(f"{self._commands}: could not send {command!r}: {exc}") from None
        return message_id

    async def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The waiting commands, oldest first, as ``(id, command, options)``; taking deletes
        them. Only the lease holder may (`LeaseError`; `LeaseLostError` once taken over).
        """  # noqa: D205 (the summary needs two lines)
        store = self.store
        self._holding("taking commands")
        try:
            kvs = await store._range(
                self._commands,
                "reading the commands",
                prefix=True,
                limit=MAX_TAKE,
                sort_order="ASCEND",
                sort_target="CREATE",
            )
            if not kvs:
                return []
            deletes = [{"request_delete_range": {"key": kv.get("key")}} for kv in kvs]
            await store._fenced(self.key, deletes, "taking commands", need_lease=True)
        except _Unanswered as exc:
            raise StateError(f"{self._commands}: could not take the commands: {exc}") from None
        taken: list[tuple[str, str, dict[str, Any]]] = []
        for kv in kvs:
            name = _unb64(kv.get("key")).decode("utf-8", "replace")[len(self._commands) :]
            body = _json_value(_kv_value(kv), "command") or {}
            command, options = body.get("command"), body.get("options")
            if not isinstance(command, str) or not isinstance(options, dict):
                logger.warning("%s: dropped a malformed command %s", self.key, shown(name))
                continue
            taken.append((name, command, options))
        return taken

    def _holding(self, what: str) -> EtcdLease:
        """The lease of the rollout this store holds, or `LeaseError` (before any request)."""
        lease = self.store._held.get(self.key)
        if lease is None or lease.token is None:
            raise LeaseError(
                f"{what} of rollout {self.key!r}: only the holder of its lease may, and this "
                "store does not hold it"
            )
        return lease

    def _check_id(self, message_id: Any) -> str:
        if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
            raise ConfigError("id", message_id, "must be an id that send() returned")
        return message_id

    async def answer(self, message_id: str, accepted: bool, reason: str) -> None:
        """Answer command `message_id` (as the lease holder, with its name)."""
        self._check_id(message_id)
        if not isinstance(accepted, bool):
            raise ConfigError("accepted", accepted, "must be true or false")
        if not isinstance(reason, str):
            raise ConfigError("reason", type(reason).__name__, "must be a string")
        store = self.store
        holder = self._holding("answering commands").holder
        text = json.dumps(
            {
                "accepted": accepted,
                "reason": shown(reason, limit=MAX_TEXT),
                "holder": holder,
                "answered_at": time.time(),
            },
            sort_keys=True,
        )
        try:
            lease_id, _ = await store._grant(MESSAGE_TTL, "granting the answer's lease")
            put = {
                "request_put": {
                    "key": _b64(self._answers + message_id),
                    "value": _b64(text),
                    "lease": str(lease_id),
                }
            }
            await store._fenced(self.key, [put], "answering a command", need_lease=True)
        except _Unanswered as exc:
            raise StateError(f"{self._answers}: could not answer {message_id}: {exc}") from None

    async def wait(self, message_id: str, timeout: float) -> dict[str, Any] | None:
        """The answer to `message_id` (``accepted``, ``reason``, ``holder``,
        ``answered_at``), polling until `timeout` seconds; None when none came.
        """  # noqa: D205 (the summary needs two lines)
        self._check_id(message_id)
        timeout = _seconds("timeout", timeout, at_most=86400)
        until = anyio.current_time() + timeout
        name = self._answers + message_id
        while True:
            try:
                kvs = await self.store._range(name, "reading the answer")
            except _Unanswered as exc:
                raise StateError(f"{name}: could not read the answer: {exc}") from None
            if kvs:
                found = _json_value(_kv_value(kvs[0]), "answer")
                if found is not None:
                    return found
            left = until - anyio.current_time()
            if left <= 0:
                return None
            await anyio.sleep(min(0.2, left))

    def __repr__(self) -> str:
        return f"<EtcdCommands of {self.key!r} in {self.store!r}>"
