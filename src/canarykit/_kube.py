"""Reaching the Kubernetes API server through lightkube: what the Kubernetes adapters share.

The routers (``routers/_kubernetes.py``) and `KubernetesLease` (``stores/_kubernetes.py``)
are adapters and may not import each other, so how they reach the API server lives here:
`KubernetesConnection` (public as ``canarykit.routers.KubernetesConnection``), loading the
kubeconfig or the pod's service account once (`Cluster`), and a client for each operation
whose answers stop at ``max_response_bytes``. Each adapter names the error it raises (the
routers a `RouterError`, the lease a `LeaseError`).

lightkube is imported only when an adapter first talks to a cluster (``pip install
'canarykit[kubernetes]'``); importing this module loads the standard library, attrs and
anyio only. A client is opened for each operation and closed after it, so nothing holds
a connection between steps and all works the same on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from ._errors import ConfigError
from ._http import ResponseTooLarge, check_max_bytes
from ._safe import check_name
from ._text import shown
from ._validate import finite

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "Cluster",
    "KubernetesConnection",
    "describe",
    "import_lightkube",
    "limit_answers",
    "status_code",
]

EXTRA = "pip install 'canarykit[kubernetes]'"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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
    """How the Kubernetes routers and `KubernetesLease` reach the API server.

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
      `RouterError` (for a lease, a `LeaseError`) that names the option.
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


def import_lightkube(user: str) -> Any:
    """The lightkube module, or an error that says which part of canarykit needs it and how."""
    try:
        return importlib.import_module("lightkube")
    except ImportError:
        raise ModuleNotFoundError(
            f"lightkube is not installed, and {user} cannot work without it: {EXTRA}"
        ) from None


def describe(exc: BaseException) -> str:
    """``Type: message`` of `exc`, or its type's name when it has no message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an error answer from the API server, else None."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def limit_answers(client: Any, limit: int) -> None:
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
    # httpx2 comes with lightkube, which `limit_answers`' caller has imported.
    base = importlib.import_module("httpx2").AsyncByteStream

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


class Cluster:
    """One namespace of the API server `connection` reaches, for one adapter.

    `error` is the exception the adapter raises when the configuration cannot be loaded
    or the client set up; `user` names the adapter when lightkube is missing ("the
    Kubernetes routers"). The configuration is loaded on first use and kept.
    """

    def __init__(
        self, connection: KubernetesConnection, namespace: str, *, error: type[Exception], user: str
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self._error = error
        self._user = user
        self._config: Any = None

    def module(self, name: str) -> Any:
        """The module `name` of lightkube (or one it brings), once lightkube is known installed."""
        import_lightkube(self._user)
        return importlib.import_module(name)

    @property
    def config(self) -> Any:
        """The configuration lightkube loaded for the connection (on first use, then kept)."""
        if self._config is None:
            self._config = self._load_config()
        return self._config

    @property
    def server(self) -> str:
        """The API server's address (loads the configuration)."""
        return str(self.config.cluster.server)

    def _load_config(self) -> Any:
        lightkube = import_lightkube(self._user)
        config_errors = self.module("lightkube.core.exceptions").ConfigError
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
            raise self._error(f"cannot load the Kubernetes configuration: {exc}") from None

    def _kubeconfig_path(self) -> str:
        if self.connection.kubeconfig is not None:
            return os.fspath(self.connection.kubeconfig)
        # $KUBECONFIG may list several files; kubectl merges them, canarykit takes the first.
        for path in os.environ.get("KUBECONFIG", "").split(os.pathsep):
            if path:
                return path
        return os.path.expanduser("~/.kube/config")

    def failure(self, exc: Exception, doing: str) -> Exception | None:
        """The adapter's error for a request that got no usable answer, else None.

        A timeout, an answer over ``max_response_bytes``, an error answer that is not a
        Kubernetes Status (a proxy's), or no answer at all (a refused connection, a TLS
        failure). `doing` begins the message ("could not read ..."). A Status answer
        (lightkube's ``ApiError``: 404, 409, 422...) is the adapter's to judge: None.
        """
        httpx = self.module("httpx2")
        api_error = self.module("lightkube").ApiError
        if isinstance(exc, TimeoutError):
            return self._error(
                f"{doing}: no answer from the Kubernetes API server at {self.server} "
                f"within timeout={self.connection.timeout:g} s"
            )
        if isinstance(exc, ResponseTooLarge):
            return self._error(f"{doing}: {exc.advice('max_response_bytes')}")
        if isinstance(exc, api_error):
            return None
        if isinstance(exc, httpx.HTTPStatusError):
            response = exc.response
            return self._error(
                f"{doing}: HTTP {response.status_code}: {shown(response.text, limit=300)}"
            )
        if isinstance(exc, (httpx.HTTPError, OSError)):
            return self._error(
                f"{doing}: cannot reach the Kubernetes API server at {self.server}: {describe(exc)}"
            )
        return None

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """A lightkube ``AsyncClient`` for this namespace, closed (shielded) at the end.

        Each request's answer stops at the connection's ``max_response_bytes``
        (`ResponseTooLarge`); the caller bounds each request by its ``timeout``.
        """
        lightkube = import_lightkube(self._user)
        httpx = self.module("httpx2")
        config = self.config
        connection = self.connection
        try:
            client = lightkube.AsyncClient(
                config,
                namespace=self.namespace,
                timeout=httpx.Timeout(connection.timeout),
                field_manager=connection.field_manager,
                trust_env=connection.trust_env,
            )
        except Exception as exc:  # a bad certificate path, an unsupported auth provider
            raise self._error(f"cannot set up the Kubernetes client: {describe(exc)}") from None
        limit_answers(client, connection.max_response_bytes)
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await client.close()
