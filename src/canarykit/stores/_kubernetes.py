"""A lease held as a Kubernetes ``coordination.k8s.io/v1`` Lease object, through lightkube.

How this works. The Lease is used the way client-go's leader election uses it: its
``spec`` names the ``holderIdentity``, the ``leaseDurationSeconds`` (the TTL, rounded up
to whole seconds), when the holding began (``acquireTime``), when it was last renewed
(``renewTime``) and how many holdings there have been (``leaseTransitions``). Every
write is a replace that carries the ``metadata.resourceVersion`` read just before it, so
the API server applies it only if nobody wrote the Lease in between (409 Conflict
otherwise): two runners racing for an expired Lease cannot both take it.

- `acquire` creates the Lease, or takes it over when it is free (no holder) or expired
  (``renewTime + leaseDurationSeconds`` is in the past), adding one to
  ``leaseTransitions``; a Lease another holder keeps renewing is `LeaseHeldError`,
  naming the holder. A conflict (someone wrote between the read and the write) is read
  again and tried once more.
- The fencing `token` is the holding's ``leaseTransitions``, which only grows (the
  Lease's ``metadata.uid`` is compared too, so a Lease deleted and created again, whose
  counter starts over, is never mistaken for this holding).
- `renew` writes a new ``renewTime`` if the holding is still ours, `check` reads the
  Lease and proves it is still ours and unexpired (one GET), `release` clears the
  holder only if it is still ours. A holding that is no longer ours is
  `LeaseLostError`; any other failure (a timeout, a 5xx, a conflict twice in a row) is
  a plain `LeaseError`, which the runner tries again while the last good renewal lasts.

What fencing gives here. The API server checks the resourceVersion of writes to the
Lease, and nothing else: no store write is guarded by the token (the rollout's state
lives in another store, which does not know this Lease), and the router's object is
not either. So the fencing is the runner's `check` before every apply: a runner that was
frozen past its lease and woke up after another took over reads the Lease, sees a
newer ``leaseTransitions`` (or another holder) and stops without applying. What is left
is the gap between that read and the router's write, as for every lease the router
itself does not check.

Expiry is judged on this host's clock against the ``renewTime`` the holder wrote with
its own: keep the runners' clocks synchronised (NTP) and the TTL far above their skew.
A skewed clock can only let a Lease be taken over early; the old holder's next `check`
then fails, before its next apply.

How the lease reaches the API server (`KubernetesConnection`, the kubeconfig or service
account, a client whose answers stop at ``max_response_bytes``) is ``canarykit._kube``,
shared with the Kubernetes routers. lightkube is imported when the lease first talks to
the cluster (``pip install 'canarykit[kubernetes]'``); a client is opened for each
operation and closed after it, so the lease works the same on asyncio and trio.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from typing import Any

import anyio

from .._errors import ConfigError, LeaseError, LeaseHeldError, LeaseLostError
from .._kube import Cluster, KubernetesConnection, status_code
from .._lease import _holder, _ttl
from .._text import shown

__all__ = ["KubernetesLease"]

# A namespace is a DNS-1123 label; a Lease's name a DNS-1123 subdomain.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MESSAGE = 2000  # characters of an API server's error message kept
_CONFLICT_BACKOFF = 0.05  # seconds before the second try after a 409


class _Conflict(Exception):
    """The API server answered 409: the Lease changed since it was read, or exists."""


def _micro_time(at: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC) for epoch seconds `at`."""
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float | None:
    """Epoch seconds of a MicroTime as read from the API server, None if there is none."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _expires_at(spec: dict[str, Any]) -> float:
    """When the holding in `spec` runs out (epoch seconds); 0 when it says nothing usable.

    A Lease without a readable ``renewTime`` (and ``acquireTime``) or duration is free to
    take: every holder that follows the protocol, client-go's included, writes them.
    """
    renewed = _epoch(spec.get("renewTime"))
    if renewed is None:
        renewed = _epoch(spec.get("acquireTime"))
    duration = _int(spec.get("leaseDurationSeconds"))
    if renewed is None or duration <= 0:
        return 0.0
    return renewed + duration


def _replacing(lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The body of a replace of `lease` (as read) by `spec`.

    The metadata goes back as read: its ``resourceVersion`` makes the API server refuse
    the write if anyone wrote in between (409), and a replace keeps only the labels and
    annotations it carries, so others' must be in it.
    """
    return {"metadata": dict(lease.get("metadata") or {}), "spec": spec}


def _connection(value: Any) -> KubernetesConnection:
    """`value` if it is a `KubernetesConnection`; None for one with the defaults."""
    if value is None:
        return KubernetesConnection()
    if not isinstance(value, KubernetesConnection):
        raise ConfigError("connection", value, "must be a KubernetesConnection (canarykit.routers)")
    return value


class KubernetesLease:
    """A `FencedLease` held as a ``coordination.k8s.io/v1`` Lease object in a namespace.

    ``KubernetesLease("deploy", "canary-web", connection=KubernetesConnection())`` holds
    the Lease ``deploy/canary-web`` (created if missing) the way client-go's leader
    election does, so ``kubectl get lease -n deploy canary-web`` shows who drives the
    rollout. `token` is the holding's ``leaseTransitions``, which grows with each new
    holding; the Lease's ``leaseDurationSeconds`` is `ttl` rounded up to whole seconds.
    `connection` says how to reach the API server (a `KubernetesConnection`, as for the
    Kubernetes routers; by default the kubeconfig or the pod's service account).

    The fencing is `check` (one GET) before every apply; no write of the rollout's state
    is guarded by the token (see the module's documentation). The service account needs
    ``get``, ``create`` and ``update`` on ``leases`` in the group ``coordination.k8s.io``.
    Of the connection, `timeout` bounds each whole exchange and `max_response_bytes` each
    answer, as for the routers.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None = None,
        ttl: float = 15.0,
        connection: KubernetesConnection | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not _LABEL.fullmatch(namespace):
            raise ConfigError("namespace", namespace, "must be a namespace name (a DNS-1123 label)")
        if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
            raise ConfigError("name", name, "must be a Lease name (a DNS-1123 subdomain)")
        self.namespace = namespace
        self.name = name
        self._holder = _holder(holder)
        self._ttl = _ttl(ttl)
        if self._ttl > 2**31 - 1:
            raise ConfigError("ttl", ttl, "must fit leaseDurationSeconds (an int32)")
        self.connection = _connection(connection)
        self._cluster = Cluster(
            self.connection, namespace, error=LeaseError, user="KubernetesLease"
        )
        self._token: int | None = None
        self._uid: str | None = None

    @property
    def holder(self) -> str:
        """The holder id of this lease (the Lease's ``holderIdentity`` while held)."""
        return self._holder

    @property
    def ttl(self) -> float:
        """Seconds the lease lasts after an acquire or renew (as asked)."""
        return self._ttl

    @property
    def duration(self) -> int:
        """The ``leaseDurationSeconds`` written: `ttl` rounded up to whole seconds."""
        return max(1, math.ceil(self._ttl))

    @property
    def token(self) -> int | None:
        """The fencing token (``leaseTransitions``) of the current holding, or None."""
        return self._token

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release` (or a loss noticed)."""
        return self._token is not None

    @property
    def _what(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    # ------------------------------------------------------------------ the API server

    def _error(self, exc: Exception, verb: str) -> Exception:
        what = f"could not {verb} {self._what}"
        failure = self._cluster.failure(exc, what)
        if failure is not None:
            return failure
        api_error = self._cluster.module("lightkube").ApiError
        if isinstance(exc, api_error):
            code = exc.status.code or exc.response.status_code
            message = shown(exc.status.message or exc.response.text, limit=_MESSAGE)
            if code == 409:
                return _Conflict(message)
            return LeaseError(f"{what}: {code} {exc.status.reason or ''}: {message}")
        return exc

    def _resource(self) -> Any:
        return self._cluster.module("lightkube.resources.coordination_v1").Lease

    async def _get(self, client: Any) -> dict[str, Any] | None:
        """The Lease as stored, or None when there is none."""
        try:
            with anyio.fail_after(self.connection.timeout):
                found = await client.get(self._resource(), self.name, namespace=self.namespace)
        except Exception as exc:
            if status_code(exc) == 404:
                return None
            raise self._error(exc, "read") from exc
        return dict(found.to_dict())

    async def _write(self, client: Any, body: dict[str, Any], *, create: bool) -> dict[str, Any]:
        """Create the Lease, or replace it (guarded by the resourceVersion in `body`)."""
        obj = self._resource().from_dict(body)
        try:
            with anyio.fail_after(self.connection.timeout):
                if create:
                    done = await client.create(obj, namespace=self.namespace)
                else:
                    done = await client.replace(obj, namespace=self.namespace)
        except Exception as exc:
            raise self._error(exc, "create" if create else "update") from exc
        return dict(done.to_dict())

    # ------------------------------------------------------------------ the holding

    def _spec(self, now: float, transitions: int, acquired: Any) -> dict[str, Any]:
        return {
            "holderIdentity": self._holder,
            "leaseDurationSeconds": self.duration,
            "acquireTime": acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _is_ours(
        self, lease: dict[str, Any] | None, holding: tuple[int | None, str | None] | None = None
    ) -> bool:
        """Whether `lease` is still this holding (`holding`: a token and uid, else ours now)."""
        token, uid = (self._token, self._uid) if holding is None else holding
        if lease is None or token is None:
            return False
        spec = lease.get("spec") or {}
        return (
            (lease.get("metadata") or {}).get("uid") == uid
            and spec.get("holderIdentity") == self._holder
            and _int(spec.get("leaseTransitions")) == token
        )

    def _lost(self, lease: dict[str, Any] | None, why: str | None = None) -> LeaseLostError:
        if why is None:
            if lease is None:
                why = "was deleted"
            else:
                spec = lease.get("spec") or {}
                who = spec.get("holderIdentity")
                if not who:
                    why = "was released"
                elif who != self._holder or _int(spec.get("leaseTransitions")) != self._token:
                    why = (
                        f"was taken over by {shown(who, limit=200)} (leaseTransitions "
                        f"{_int(spec.get('leaseTransitions'))}, ours {self._token})"
                    )
                else:
                    why = "was deleted and created again"
        self._token = self._uid = None
        return LeaseLostError(f"{self._what}: the lease {why}")

    def _held_message(self, lease: dict[str, Any], now: float) -> str:
        spec = lease.get("spec") or {}
        left = _expires_at(spec) - now
        return (
            f"{self._what} is held by {shown(spec.get('holderIdentity'), limit=200)} (it "
            f"expires in {max(left, 0):.0f} s unless renewed); only one runner may drive "
            "a rollout"
        )

    async def acquire(self) -> None:
        """Take the Lease (created, or taken when free or expired) or raise `LeaseHeldError`."""
        if self.held:
            await self.renew()
            return
        async with self._cluster.client() as client:
            for attempt in (1, 2):
                if attempt == 2:
                    await anyio.sleep(_CONFLICT_BACKOFF)
                lease = await self._get(client)
                now = time.time()
                stamp = _micro_time(now)
                try:
                    if lease is None:
                        body = {
                            "metadata": {"name": self.name, "namespace": self.namespace},
                            "spec": self._spec(now, 0, stamp),
                        }
                        taken = await self._write(client, body, create=True)
                    else:
                        spec = lease.get("spec") or {}
                        who = spec.get("holderIdentity")
                        if who and who != self._holder and _expires_at(spec) > now:
                            raise LeaseHeldError(self._held_message(lease, now))
                        # A new holding, even of a Lease that names us (a runner restarted
                        # with the same holder id): the token must change.
                        transitions = _int(spec.get("leaseTransitions")) + 1
                        body = _replacing(lease, {**spec, **self._spec(now, transitions, stamp)})
                        taken = await self._write(client, body, create=False)
                except _Conflict:
                    continue  # written meanwhile: read it again, once
                spec = taken.get("spec") or {}
                self._token = _int(spec.get("leaseTransitions"))
                self._uid = (taken.get("metadata") or {}).get("uid")
                return
        raise LeaseHeldError(
            f"{self._what} changed hands twice while taking it (409 Conflict); try again"
        )

    async def renew(self) -> None:
        """Write a new ``renewTime`` if the holding is still ours; else `LeaseLostError`."""
        if self._token is None:
            raise LeaseLostError(f"{self._what}: the lease is not held")
        async with self._cluster.client() as client:
            for attempt in (1, 2):
                if attempt == 2:
                    await anyio.sleep(_CONFLICT_BACKOFF)
                lease = await self._get(client)
                if lease is None or not self._is_ours(lease):
                    raise self._lost(lease)
                spec = {
                    **(lease.get("spec") or {}),
                    "leaseDurationSeconds": self.duration,
                    "renewTime": _micro_time(time.time()),
                }
                body = _replacing(lease, spec)
                try:
                    await self._write(client, body, create=False)
                except _Conflict:
                    continue  # someone wrote the Lease: read whose it is now
                return
        raise LeaseError(f"could not renew {self._what}: it changed twice while renewing it")

    async def check(self) -> int:
        """Prove with one read that the Lease is still ours and unexpired; return the token."""
        token = self._token
        if token is None:
            raise LeaseLostError(f"{self._what}: the lease is not held")
        async with self._cluster.client() as client:
            lease = await self._get(client)
        if lease is None or not self._is_ours(lease):
            raise self._lost(lease)
        if _expires_at(lease.get("spec") or {}) <= time.time():
            raise self._lost(lease, "ran out: it was not renewed in time")
        return token

    async def release(self) -> None:
        """Give the Lease up: clear its holder, only if the holding is still ours."""
        token, uid = self._token, self._uid
        self._token = self._uid = None
        if token is None:
            return
        async with self._cluster.client() as client:
            for attempt in (1, 2):
                if attempt == 2:
                    await anyio.sleep(_CONFLICT_BACKOFF)
                lease = await self._get(client)
                if lease is None or not self._is_ours(lease, (token, uid)):
                    return  # another holder's now: never free it
                spec = dict(lease.get("spec") or {})
                spec.pop("holderIdentity", None)
                # As client-go releases: the next candidate need not wait out the TTL.
                spec["leaseDurationSeconds"] = 1
                spec["renewTime"] = _micro_time(time.time())
                body = _replacing(lease, spec)
                try:
                    await self._write(client, body, create=False)
                except _Conflict:
                    continue
                return
        raise LeaseError(f"could not release {self._what}: it changed twice while releasing it")

    def __repr__(self) -> str:
        state = "not held" if self._token is None else f"held, token {self._token}"
        return f"<KubernetesLease {self._what} {self._holder!r} {state}>"
