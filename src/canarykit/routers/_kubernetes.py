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

lightkube is imported only when a router first talks to a cluster (``pip install
'canarykit[kubernetes]'``). A client is opened for each operation and closed after it,
so a router holds no connection between steps and works the same on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from .._errors import ConfigError, RouterError
from .._http import ResponseTooLarge, check_max_bytes
from .._safe import check_name
from .._split import TrafficSplit
from .._text import shown
from .._validate import finite

__all__ = ["DESTINATION_RULE", "HTTPROUTE", "VIRTUAL_SERVICE", "Kind", "KubernetesConnection"]

_EXTRA = "pip install 'canarykit[kubernetes]'"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
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


def _positive_timeout(_inst: Any, attribute: Any, value: Any) -> None:
    if finite(attribute.name, value) <= 0:
        raise ConfigError(attribute.name, value, "must be > 0 seconds")


def _path(_inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(attribute.name, value, "must be a path (str or os.PathLike)")


def _optional_path(inst: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        _path(inst, attribute, value)


def _optional_bool(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(attribute.name, value, "must be True, False or None")


def _context(_inst: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.isprintable() or not value):
        raise ConfigError(attribute.name, value, "must be a context name from the kubeconfig")


@attrs.frozen(kw_only=True)
class KubernetesConnection:
    """How the Kubernetes routers reach the API server.

    - `kubeconfig`: a kubeconfig file; by default the first file in ``$KUBECONFIG``, else
      ``~/.kube/config``. `context`: a context in it (default: its current context).
    - `in_cluster`: True to use the pod's service account (the token, CA certificate and
      namespace under `service_account_dir`, the API server from
      ``$KUBERNETES_SERVICE_HOST`` and ``$KUBERNETES_SERVICE_PORT``), False to use the
      kubeconfig. None (the default): the kubeconfig if one is given or ``$KUBECONFIG``
      is set, else the service account if the pod has one, else ``~/.kube/config``.
    - `timeout`: seconds for each request, its answer included (a deadline for the whole
      exchange, so an API server, or a proxy before it, that answers a byte at a time
      cannot stretch it). `field_manager`: the name the API server records for
      canarykit's changes (``metadata.managedFields``).
    - `max_response_bytes`: the most of one answer read, in bytes received (3 MiB, twice
      the 1.5 MiB that etcd stores for one object by default); a longer one is a
      `RouterError` that names the option.
    - `trust_env`: whether proxy and certificate settings come from the environment
      (``HTTPS_PROXY``, ``SSL_CERT_FILE``...).

    >>> KubernetesConnection(context="staging").field_manager
    'canarykit'
    """

    kubeconfig: str | os.PathLike[str] | None = attrs.field(default=None, validator=_optional_path)
    context: str | None = attrs.field(default=None, validator=_context)
    in_cluster: bool | None = attrs.field(default=None, validator=_optional_bool)
    service_account_dir: str | os.PathLike[str] = attrs.field(
        default=SERVICE_ACCOUNT_DIR, validator=_path
    )
    timeout: float = attrs.field(default=10.0, validator=_positive_timeout)
    field_manager: str = attrs.field(
        default="canarykit", validator=lambda _i, a, v: check_name(a.name, v)
    )
    trust_env: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_response_bytes: int = attrs.field(
        default=3 << 20, validator=lambda _i, a, v: check_max_bytes(a.name, v)
    )


def check_attempts(field: str, value: Any) -> int:
    """A number of tries: an int from 1 to 100."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ConfigError(field, value, "must be an integer from 1 to 100")
    return value


def _lightkube() -> Any:
    try:
        return importlib.import_module("lightkube")
    except ImportError:
        raise ModuleNotFoundError(
            f"the Kubernetes routers need lightkube, which is not installed: {_EXTRA}"
        ) from None


def _module(name: str) -> Any:
    _lightkube()
    return importlib.import_module(name)


class Conflict(Exception):
    """The API server answered 409: the object changed since it was read, or exists."""


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status of an error answer from the API server, else None."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _limit_answers(client: Any, limit: int) -> None:
    """Make every answer `client` reads stop at `limit` bytes with `ResponseTooLarge`.

    lightkube reads each answer whole before it returns; httpx's response hooks run
    between the headers and the body, so one there checks the declared length and puts
    a counting stream under the body. lightkube does not expose its httpx client: a
    version that keeps it elsewhere gets no size limit (the deadline still holds).
    """
    http: Any = getattr(getattr(client, "_client", None), "_client", None)
    hooks = getattr(http, "event_hooks", None)
    if not isinstance(hooks, dict):
        return
    stream_class = _limited_stream_class()

    async def check(response: Any) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(response.status_code, limit)
        response.stream = stream_class(response.stream, limit, response.status_code)

    hooks.setdefault("response", []).append(check)
    http.event_hooks = hooks


_stream_classes: list[Any] = []


def _limited_stream_class() -> Any:
    """An httpx2 byte stream that raises `ResponseTooLarge` past a limit (built once)."""
    if _stream_classes:
        return _stream_classes[0]
    base = _module("httpx2").AsyncByteStream

    class LimitedStream(base):  # type: ignore[misc,valid-type]
        def __init__(self, inner: Any, limit: int, status: int) -> None:
            self._inner = inner
            self._limit = limit
            self._status = status

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            chunks = self._inner.__aiter__()
            async for chunk in chunks:
                seen += len(chunk)
                if seen > self._limit:
                    # Close the connection, then let the read that fails end the inner
                    # generators (trio warns about generators left to the GC).
                    await self._inner.aclose()
                    with contextlib.suppress(Exception):
                        async for _ in chunks:
                            pass
                    raise ResponseTooLarge(self._status, self._limit)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    _stream_classes.append(LimitedStream)
    return LimitedStream


class KubeClient:
    """GET, create and resourceVersion-guarded merge patches of custom resources.

    Every error becomes a `RouterError` that names the object and quotes the API server's
    message; a 409 becomes `Conflict`, for `update` to retry.
    """

    def __init__(self, connection: KubernetesConnection, namespace: str) -> None:
        self.connection = connection
        self.namespace = namespace
        self._config: Any = None

    # -------------------------------------------------------------- configuration

    def _load_config(self) -> Any:
        lightkube = _lightkube()
        config_errors = _module("lightkube.core.exceptions").ConfigError
        connection = self.connection
        account = os.fspath(connection.service_account_dir)
        try:
            in_cluster = connection.in_cluster
            if in_cluster is None:
                in_cluster = (
                    connection.kubeconfig is None
                    and not os.environ.get("KUBECONFIG")
                    and os.path.isfile(os.path.join(account, "token"))
                )
            if in_cluster:
                try:
                    config = lightkube.KubeConfig.from_service_account(service_account=account)
                except KeyError as exc:  # lightkube reads the variables without a check
                    raise config_errors(f"in-cluster: ${exc.args[0]} is not set") from None
            else:
                config = lightkube.KubeConfig.from_file(self._kubeconfig_path())
            return config.get(context_name=connection.context)
        except config_errors as exc:
            raise RouterError(f"cannot load the Kubernetes configuration: {exc}") from None

    def _kubeconfig_path(self) -> str:
        if self.connection.kubeconfig is not None:
            return os.fspath(self.connection.kubeconfig)
        # $KUBECONFIG may list several files; kubectl merges them, canarykit takes the first.
        for path in os.environ.get("KUBECONFIG", "").split(os.pathsep):
            if path:
                return path
        return os.path.expanduser("~/.kube/config")

    @property
    def server(self) -> str:
        """The API server's address (loads the configuration)."""
        if self._config is None:
            self._config = self._load_config()
        return str(self._config.cluster.server)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Any]:
        lightkube = _lightkube()
        httpx = _module("httpx2")
        if self._config is None:
            self._config = self._load_config()
        try:
            client = lightkube.AsyncClient(
                self._config,
                namespace=self.namespace,
                timeout=httpx.Timeout(self.connection.timeout),
                field_manager=self.connection.field_manager,
                trust_env=self.connection.trust_env,
            )
        except Exception as exc:  # a bad certificate path, an unsupported auth provider
            raise RouterError(f"cannot set up the Kubernetes client: {_describe(exc)}") from None
        _limit_answers(client, self.connection.max_response_bytes)
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await client.close()

    # -------------------------------------------------------------------- errors

    def _error(self, exc: Exception, verb: str, what: str) -> Exception:
        api_error = _module("lightkube").ApiError
        httpx = _module("httpx2")
        if isinstance(exc, TimeoutError):
            return RouterError(
                f"could not {verb} {what}: no answer from the Kubernetes API server at "
                f"{self.server} within timeout={self.connection.timeout:g} s"
            )
        if isinstance(exc, ResponseTooLarge):
            return RouterError(f"could not {verb} {what}: {exc.advice('max_response_bytes')}")
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
        if isinstance(exc, httpx.HTTPStatusError):  # an answer that is not a Status object
            response = exc.response
            return RouterError(
                f"could not {verb} {what}: HTTP {response.status_code}: "
                f"{shown(response.text, limit=300)}"
            )
        if isinstance(exc, (httpx.HTTPError, OSError)):
            return RouterError(
                f"could not {verb} {what}: cannot reach the Kubernetes API server at "
                f"{self.server}: {_describe(exc)}"
            )
        return exc

    def _what(self, kind: Kind, name: str) -> str:
        return f"{kind.kind} {self.namespace}/{name}"

    def _resource(self, kind: Kind) -> Any:
        generic = _module("lightkube.generic_resource")
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
                if missing_ok and _status_code(exc) == 404:
                    return None
                raise self._error(exc, "read", self._what(kind, name)) from exc
        return self._plain(found)

    async def create(self, kind: Kind, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object; `Conflict` if it exists already."""
        name = body["metadata"]["name"]
        async with self._session() as client:
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
        patch_type = _module("lightkube.types").PatchType.MERGE
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
            async with self._session() as client:
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
        async with self._session() as client:
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
