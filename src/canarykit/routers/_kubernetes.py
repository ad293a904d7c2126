"""Talking to the Kubernetes API server for the Gateway API and Istio routers, through lightkube.

How this works. An update is optimistic: GET the object, compute the new ``spec`` from
it, and send it as a JSON merge patch that carries the ``metadata.resourceVersion`` read.
The API server applies it only if nobody changed the object since (it answers 409
Conflict otherwise), so a concurrent edit is never overwritten: canarykit reads the
object again, recomputes from the new version (keeping the other edit) and tries again,
a bounded number of times. A patch that would change nothing is not sent.

Server-side apply is not used: the lists canarykit edits (an HTTPRoute's ``rules``, a
VirtualService's ``http``) are atomic lists, so applying them would take ownership of the
whole list, and forcing it would overwrite the rules other people own.

How a router reaches the API server (`KubernetesConnection`, the kubeconfig or service
account, a client whose answers stop at ``max_response_bytes``) is ``canarykit._kube``,
shared with `KubernetesLease`. lightkube is imported only when a router first talks to a
cluster (``pip install 'canarykit[kubernetes]'``). A client is opened for each operation
and closed after it, so a router holds no connection between steps and works the same on
asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from .._errors import ConfigError, RouterError
from .._kube import Cluster, KubernetesConnection, status_code
from .._split import TrafficSplit
from .._text import shown

__all__ = ["DESTINATION_RULE", "HTTPROUTE", "VIRTUAL_SERVICE", "Kind", "KubernetesConnection"]

_CONFLICT_BACKOFF = 0.05  # seconds, times the attempt number
_STATUS_TEXT = 20_000  # characters of an API server's error message kept


@attrs.frozen
class Kind:
    """A namespaced custom resource kind: its API group, version and plural."""

    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        """``group/version``."""
        return f"{self.group}/{self.version}"


HTTPROUTE = Kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
VIRTUAL_SERVICE = Kind("networking.istio.io", "v1", "VirtualService", "virtualservices")
DESTINATION_RULE = Kind("networking.istio.io", "v1", "DestinationRule", "destinationrules")


def check_attempts(field: str, value: Any) -> int:
    """A number of tries: an int from 1 to 100."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ConfigError(field, value, "must be an integer from 1 to 100")
    return value


class Conflict(Exception):
    """The API server answered 409: the object changed since it was read, or exists."""


class KubeClient:
    """GET, create and resourceVersion-guarded merge patches of custom resources.

    Every error becomes a `RouterError` that names the object and quotes the API server's
    message; a 409 becomes `Conflict`, for `update` to retry.
    """

    def __init__(self, connection: KubernetesConnection, namespace: str) -> None:
        self.connection = connection
        self.namespace = namespace
        self._cluster = Cluster(
            connection, namespace, error=RouterError, user="the Kubernetes routers"
        )

    # -------------------------------------------------------------------- errors

    def _error(self, exc: Exception, verb: str, what: str) -> Exception:
        failure = self._cluster.failure(exc, f"could not {verb} {what}")
        if failure is not None:
            return failure
        api_error = self._cluster.module("lightkube").ApiError
        if isinstance(exc, api_error):
            status = exc.status
            code = status.code or exc.response.status_code
            # Escaped, and cut far out: a validation message quotes the whole object
            # before it says what is wrong with it.
            message = shown(status.message or exc.response.text, limit=_STATUS_TEXT)
            if code == 409:
                return Conflict(message)
            words = {
                401: "401 Unauthorized: check the credentials",
                403: "403 Forbidden",
                404: "404 Not Found",
                422: "422 Invalid: the API server refused the object",
            }.get(code, f"{code} {status.reason or ''}".strip())
            return RouterError(f"could not {verb} {what}: {words}: {message}")
        return exc

    def _what(self, kind: Kind, name: str) -> str:
        return f"{kind.kind} {self.namespace}/{name}"

    def _resource(self, kind: Kind) -> Any:
        generic = self._cluster.module("lightkube.generic_resource")
        return generic.create_namespaced_resource(kind.group, kind.version, kind.kind, kind.plural)

    @staticmethod
    def _plain(obj: Any) -> dict[str, Any]:
        data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
        return dict(data)

    # -------------------------------------------------------------------- calls

    async def get(
        self, kind: Kind, name: str, *, session: Any = None, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """The object; None if it does not exist and `missing_ok`, else a `RouterError`."""
        async with self._maybe(session) as client:
            try:
                with anyio.fail_after(self.connection.timeout):
                    found = await client.get(self._resource(kind), name, namespace=self.namespace)
            except Exception as exc:
                if missing_ok and status_code(exc) == 404:
                    return None
                raise self._error(exc, "read", self._what(kind, name)) from exc
        return self._plain(found)

    async def create(self, kind: Kind, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object; `Conflict` if it exists already."""
        name = body["metadata"]["name"]
        async with self._cluster.client() as client:
            try:
                with anyio.fail_after(self.connection.timeout):
                    made = await client.create(
                        self._resource(kind)(dict(body)), namespace=self.namespace
                    )
            except Exception as exc:
                raise self._error(exc, "create", self._what(kind, name)) from exc
        return self._plain(made)

    async def _patch(
        self, client: Any, kind: Kind, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        patch_type = self._cluster.module("lightkube.types").PatchType.MERGE
        try:
            with anyio.fail_after(self.connection.timeout):
                done = await client.patch(
                    self._resource(kind),
                    name,
                    dict(body),
                    namespace=self.namespace,
                    patch_type=patch_type,
                )
        except Exception as exc:
            raise self._error(exc, "update", self._what(kind, name)) from exc
        return self._plain(done)

    @asynccontextmanager
    async def _maybe(self, session: Any) -> AsyncIterator[Any]:
        if session is not None:
            yield session
        else:
            async with self._cluster.client() as client:
                yield client

    async def update(
        self,
        kind: Kind,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        attempts: int,
    ) -> tuple[dict[str, Any], bool]:
        """Read the object, let `change` compute its new ``spec``, and write it.

        `change` gets the object as read and returns the ``spec`` fields to replace (a
        merge patch replaces a list whole), or None when nothing needs to change. The
        patch carries the ``resourceVersion`` read, so if someone else changed the object
        in between, the API server refuses it (409) and this reads the new version and
        calls `change` again, up to `attempts` times. Returns the object as stored and
        whether it was written.
        """
        what = self._what(kind, name)
        last = ""
        async with self._cluster.client() as client:
            for attempt in range(1, attempts + 1):
                current = await self.get(kind, name, session=client)
                assert current is not None  # a missing object raised RouterError
                spec = change(current)
                if spec is None:
                    return current, False
                version = (current.get("metadata") or {}).get("resourceVersion")
                body = {"metadata": {"resourceVersion": version}, "spec": spec}
                try:
                    return await self._patch(client, kind, name, body), True
                except Conflict as exc:
                    last = str(exc)
                if attempt < attempts:
                    await anyio.sleep(_CONFLICT_BACKOFF * attempt)
        raise RouterError(
            f"could not update {what}: it changed under canarykit {attempts} times in a row "
            f"(409 Conflict: {last}); nothing was overwritten"
        )


class ListRouter:
    """What the Gateway API and Istio routers share: they own named entries of one list.

    A subclass sets `kind`, `list_key` (the ``spec`` field holding the list), `target`
    and the pure `_render(split, current)` and `_read(current)`.
    """

    kind: Kind
    list_key: str

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        connection: KubernetesConnection | None,
        conflict_attempts: int,
    ) -> None:
        if connection is None:
            connection = KubernetesConnection()
        elif not isinstance(connection, KubernetesConnection):
            raise ConfigError("connection", connection, "must be a KubernetesConnection")
        self.name = name
        self.namespace = namespace
        self.connection = connection
        self.conflict_attempts = check_attempts("conflict_attempts", conflict_attempts)
        self._client = KubeClient(connection, namespace)
        self._applied: Any = None  # the TrafficSplit last applied by this router

    def _render(self, split: Any, current: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _read(self, current: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    @property
    def _what(self) -> str:
        return f"{self.kind.kind} {self.namespace}/{self.name}"

    @property
    def traffic_target(self) -> str:
        """What this router controls: ``<kind> <namespace>/<name>``, e.g. ``HTTPRoute prod/shop``.

        The cluster is not part of it: two clusters' objects of one name share a target.
        """
        return self._what

    def check_split(self, split: Any) -> None:
        """Raise `ConfigError` for a split `apply` would refuse, before traffic moves."""
        if not isinstance(split, TrafficSplit):
            raise ConfigError("split", split, "must be a TrafficSplit")

    def _entries(self, obj: Mapping[str, Any]) -> Any:
        return (obj.get("spec") or {}).get(self.list_key)

    async def _apply(self, split: Any) -> None:
        expected: list[Any] = []  # what the written object should read back as
        before: list[Any] = []  # the list as it was before canarykit's write

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            new = self._render(split, current)
            expected[:] = [self._read(new)]
            before[:] = [self._entries(current)]
            entries = self._entries(new)
            if entries == self._entries(current):
                return None
            return {self.list_key: entries}

        stored, written = await self._client.update(
            self.kind, self.name, change, attempts=self.conflict_attempts
        )
        seen = self._read(stored)
        if seen != expected[0]:
            undone = "nothing was written"
            if written:
                try:
                    await self._undo(stored, before[0])
                    undone = "the change was undone"
                except RouterError as exc:
                    undone = f"undoing the change failed too ({exc})"
            raise RouterError(
                f"{self._what}: the API server did not keep canarykit's {self.list_key} as "
                f"written: they read back as {seen!r}, not {expected[0]!r}; {undone}. "
                f"{self._kept_names_hint()}".rstrip()
            )
        self._applied = split

    def _kept_names_hint(self) -> str:
        return ""

    async def _undo(self, stored: Mapping[str, Any], entries: Any) -> None:
        version = (stored.get("metadata") or {}).get("resourceVersion")

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            # Only if nobody wrote after canarykit: otherwise leave their version alone.
            if (current.get("metadata") or {}).get("resourceVersion") != version:
                return None
            return {self.list_key: entries}

        await self._client.update(self.kind, self.name, change, attempts=1)

    async def _read_current(self) -> Any:
        found = await self._client.get(self.kind, self.name)
        assert found is not None
        seen = self._read(found)
        applied = self._applied
        if applied is not None and applied != seen:
            # The object holds exactly what applying `applied` writes (header names in
            # lower case for Istio, a prefix as a regex, a percent rounded to weights):
            # then `applied` is what is in force, as the caller put it.
            try:
                if self._read(self._render(applied, found)) == seen:
                    return applied
            except RouterError:
                pass
        return seen
