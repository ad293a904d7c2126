"""The tables of a policy file that run a real rollout: ``[rollout]``, ``[state]``,
``[router]``, ``[metrics]``, ``[hooks]`` and ``[[notify]]``.

How it works. Loading a policy checks these tables but builds nothing: every key is
checked against the keys its table (and, for ``[router]``, its kind) accepts, and every
value against its type (a string, an array of strings, a duration, an integer, a table
of strings...), each error naming the key path. What is kept is a `Deployment`: the run
settings of ``[rollout]`` as attributes, and the other tables as read (durations in
seconds, containers read-only), which `Policy.to_toml` writes back. Only
`Deployment.build_router` and its siblings construct the real objects, importing the
extras they need (httpx, lightkube, psycopg) then, so that ``canarykit simulate`` works on a
deploy policy without them. Values only a constructor can judge (an address, a PromQL
template, a URL) are judged when built; its `ConfigError` comes out with the key path in
front (``router.stable[0]``).

Secrets never sit in the file: a key ending in ``_env`` names an environment variable
and one ending in ``_file`` a file, both read when the object is built; a missing one is
a `ConfigError` naming the key and the variable or file, never a value. Such a file (and
a CA bundle) must be a regular file of bounded size, so a FIFO there cannot hang the
run, and a symbolic link is followed only within its own folder (as Kubernetes mounts
secrets), never to an unrelated file. The repr of a `Deployment` shows kinds and hook
points only, never a URL.

Paths. In a policy file, relative paths (``state_dir``, the router's files and socket,
``*_file``, ``verify``, ``kubeconfig``, ``approval_file``) are made absolute against the
file's folder when it is loaded, and the state directory defaults to ``.canarykit``
there: one policy means the same files, the same state and the same lease from any
working directory.
"""  # noqa: D205 (the summary needs two lines)

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigError, FileRefusedError
from .._files import read_regular
from .._http import HEADER_NAME
from .._machine import HookPoint, plan_splits
from .._plan import Plan, SetHeaderRoutes, SetMirror, SetWeight
from .._safe import check_name
from .._validate import finite
from ._table import (
    PolicyTable,
    _error,
    _prefixed,
    format_duration,
    parse_duration,
    parse_percent,
)

if TYPE_CHECKING:
    from .._hooks import Hooks
    from .._protocols import MetricsSource, TrafficRouter
    from ..notify import Notifier

__all__ = ["Deployment"]

_HIDDEN = "(hidden)"
DEFAULT_STATE_DIR = ".canarykit"
"""The state directory when ``[rollout] state_dir`` is not given: beside the policy file."""
# Enough for any token or password; a bigger file is not one (and /dev/zero stops here).
_SECRET_FILE_LIMIT = 65536
# Enough for any CA bundle (the whole Mozilla bundle is about 220 kB).
_CA_FILE_LIMIT = 4 * 1024 * 1024


def _frozen(value: Any) -> Any:
    """`value` with its tables read-only and its arrays tuples, recursively."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """Plain dicts and lists again, for a constructor or a TOML writer."""
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(item) for item in value]
    return value


def _shown(value: Any) -> Any:
    """What an error may show of a value that could hold a secret: scalars but no text."""
    if isinstance(value, str):
        return _HIDDEN
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return value


def duration_value(seconds: float) -> str | float:
    """A duration as a policy file writes it: ``"1m30s"``, or seconds when that is not exact.

    The one writer of durations, for the plan's keys (`Policy.to_toml`) and the
    deployment's alike.
    """
    text = format_duration(seconds)
    try:
        exact = parse_duration("duration", text, allow_zero=True) == seconds
    except ConfigError:  # "1e+300s": a float's repr that is no duration string
        exact = False
    return text if exact else seconds


# ---------------------------------------------------------------------------------------
# The value types of the keys: each reads a key of a table (raising ConfigError naming its
# path) and writes the value back for Policy.to_toml.


class _Key:
    def read(self, table: PolicyTable, key: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return _thawed(value)

    def resolve(self, value: Any, base: Path) -> Any:
        """`value` with its relative paths made absolute against `base` (none here)."""
        return value


def _resolved(path: str, base: Path) -> str:
    """`path` (``~`` expanded) as an absolute path: relative ones are taken from `base`."""
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:  # no home directory to expand ~ to: left for the reader to refuse
        expanded = Path(path)
    if not expanded.is_absolute():
        return str(base / expanded)
    return path if expanded == Path(path) else str(expanded)


class _Path(_Key):
    """A file or directory path: a relative one is relative to the policy file's folder.

    `command`: a program, where a bare name (``nginx``) is looked up on ``PATH`` and only
    a name with a ``/`` in it is a path. `socket`: a UNIX socket path, ``unix:PATH``, or a
    ``host:port`` (which holds no ``/``) left as it is.
    """

    def __init__(self, *, command: bool = False, socket: bool = False) -> None:
        self.command = command
        self.socket = socket

    def read(self, table: PolicyTable, key: str) -> Any:
        return table.string(key)

    def resolve(self, value: Any, base: Path) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if self.socket and value.startswith("unix:"):
            return "unix:" + _resolved(value[len("unix:") :], base)
        if (self.command or self.socket) and "/" not in value:
            return value
        return _resolved(value, base)


class _String(_Key):
    def read(self, table: PolicyTable, key: str) -> Any:
        return table.string(key)


class _Strings(_Key):
    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        where = table.field(key)
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(where, value, "must be a non-empty array of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"{where}[{index}]", item, "must be a non-empty string")
        return tuple(value)


class _Duration(_Key):
    def __init__(self, *, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def read(self, table: PolicyTable, key: str) -> Any:
        return table.duration(key, allow_zero=self.allow_zero)

    def dump(self, value: Any) -> Any:
        return duration_value(value)


class _Integer(_Key):
    def __init__(self, minimum: int | None = None) -> None:
        self.minimum = minimum

    def read(self, table: PolicyTable, key: str) -> Any:
        return table.integer(key, minimum=self.minimum)


class _Number(_Key):
    def read(self, table: PolicyTable, key: str) -> Any:
        return table.number(key)


class _Boolean(_Key):
    def read(self, table: PolicyTable, key: str) -> Any:
        return table.boolean(key)


class _Choice(_Key):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def read(self, table: PolicyTable, key: str) -> Any:
        return table.choice(key, self.choices)


class _EnvName(_Key):
    """The name of an environment variable that holds a secret."""

    def read(self, table: PolicyTable, key: str) -> Any:
        return _env_name(table.field(key), table.raw(key))


def _env_name(field: str, value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or not value.isprintable()
        or "=" in value
        or value != value.strip()
    ):
        raise ConfigError(field, value, "must be the name of an environment variable")
    return value


class _TextMap(_Key):
    """A table of strings, e.g. ``{job = "shop"}``; values are never quoted in errors."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        where = table.field(key)
        if not isinstance(value, Mapping):
            raise ConfigError(where, _shown(value), "must be a table of strings")
        inner = PolicyTable(value, where)
        for name, item in value.items():
            if not name:
                raise _error(inner.field(name), "must be a non-empty key")
            if not isinstance(item, str):
                raise ConfigError(inner.field(name), _shown(item), "must be a string")
        return MappingProxyType(dict(value))


class _HeadersEnv(_Key):
    """Request headers by name, each value read from the environment variable named."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        where = table.field(key)
        if not isinstance(value, Mapping):
            raise ConfigError(
                where, _shown(value), "must be a table of header name = environment variable"
            )
        inner = PolicyTable(value, where)
        for name, variable in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise ConfigError(inner.field(name), name, "must be an HTTP header name")
            _env_name(inner.field(name), variable)
        return MappingProxyType(dict(value))


class _Section(_Key):
    """A sub-table with keys of its own, e.g. ``[router.kubernetes]``."""

    def __init__(self, schema: _Schema) -> None:
        self.schema = schema

    def read(self, table: PolicyTable, key: str) -> Any:
        return self.schema.read(table.table(key))

    def dump(self, value: Any) -> Any:
        return self.schema.dump(value)

    def resolve(self, value: Any, base: Path) -> Any:
        return self.schema.resolve(value, base)


class _BoolOrPath(_Key):
    """``true``, ``false`` or a file path (``verify``: a CA bundle)."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise ConfigError(table.field(key), value, "must be true, false or a CA bundle's path")

    def resolve(self, value: Any, base: Path) -> Any:
        return _resolved(value, base) if isinstance(value, str) else value


class _StringOrFalse(_Key):
    """A string, or ``false`` for none (``latency_metric``: TOML has no null)."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        if value is False or (isinstance(value, str) and value.strip()):
            return value
        raise ConfigError(table.field(key), value, "must be a non-empty string or false")


@attrs.frozen
class _Schema:
    """The keys of one table: each one's type, and which are required."""

    keys: Mapping[str, _Key]
    required: tuple[str, ...] = ()

    def read(
        self,
        table: PolicyTable,
        *,
        elsewhere: Mapping[str, str] | None = None,
        needed_for: str = "",
    ) -> Mapping[str, Any]:
        table.check_keys(self.keys, elsewhere=elsewhere)
        for key in self.required:
            table.raw(key, needed_for=needed_for)
        # In the schema's order, so that to_toml writes `kind` first.
        read = {key: kind.read(table, key) for key, kind in self.keys.items() if key in table}
        frozen: Mapping[str, Any] = _frozen(read)
        return frozen

    def dump(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {key: self.keys[key].dump(value) for key, value in data.items()}

    def resolve(self, data: Mapping[str, Any], base: Path) -> Mapping[str, Any]:
        """`data` (as read) with every relative path in it made absolute against `base`."""
        resolved = {key: self.keys[key].resolve(value, base) for key, value in data.items()}
        return MappingProxyType(resolved)


def _one_of(table: PolicyTable, keys: Sequence[str], *, required: bool) -> str | None:
    """The one key of `keys` that `table` has; refuse two, and none when `required`."""
    present = [key for key in keys if key in table]
    if len(present) > 1:
        raise _error(table.field(present[1]), f"cannot be given with {present[0]}")
    if not present:
        if required:
            others = " or ".join(keys[1:])
            raise _error(table.field(keys[0]), f"is required (or {others})")
        return None
    return present[0]


# ---------------------------------------------------------------------------------------
# [rollout]

_ON_INTERRUPT = ("rollback", "leave")
_ON_METRICS_OUTAGE = ("rollback", "pause")
_ROLLOUT_KEYS = (
    "name",
    "state_dir",
    "release",
    "adopt",
    "on_interrupt",
    "on_metrics_outage",
    "metrics_outage_limit",
    "call_timeout",
    "rollback_timeout",
    "apply_attempts",
)
# A release id names a build: letters, digits and the punctuation of version strings and
# image tags (v1.2.3, 2026-12-05+abc, shop:4f2a9c1, build/812), nothing that could break
# a line or a file name (the history's file names carry it, sanitized).
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+@/-]{0,127}")
_ROLLOUT_ELSEWHERE = {
    "key": "is called name here",
    "store": "is called state_dir here ([state] backend chooses etcd or PostgreSQL)",
    "on_cancel": "is called on_interrupt here",
    "lease": "is always the state directory's file lease, or with [state] backend the "
    "store's: one runner per rollout name",
    "backend": 'is set in [state]: backend = "file" | "etcd" | "postgres"',
}


def _read_rollout(table: PolicyTable) -> dict[str, Any]:
    table.check_keys(_ROLLOUT_KEYS, elsewhere=_ROLLOUT_ELSEWHERE)
    settings: dict[str, Any] = {}
    if "name" in table:
        settings["name"] = check_name(table.field("name"), table.raw("name"))
    if "state_dir" in table:
        settings["state_dir"] = table.string("state_dir")
    if "release" in table:
        settings["release"] = check_release(table.field("release"), table.raw("release"))
    if "adopt" in table:
        settings["adopt"] = table.boolean("adopt")
    if "on_interrupt" in table:
        settings["on_interrupt"] = table.choice("on_interrupt", _ON_INTERRUPT)
    if "on_metrics_outage" in table:
        settings["on_metrics_outage"] = table.choice("on_metrics_outage", _ON_METRICS_OUTAGE)
    for key in ("call_timeout", "rollback_timeout", "metrics_outage_limit"):
        if key in table:
            settings[key] = table.duration(key)
    if "apply_attempts" in table:
        settings["apply_attempts"] = table.integer("apply_attempts", minimum=1)
    return settings


# ---------------------------------------------------------------------------------------
# [router]

_KUBERNETES = _Schema(
    {
        "kubeconfig": _Path(),
        "context": _String(),
        "in_cluster": _Boolean(),
        "service_account_dir": _Path(),
        "timeout": _Duration(),
        "max_response_bytes": _Integer(minimum=1024),
        "field_manager": _String(),
        "trust_env": _Boolean(),
    }
)
_NGINX = _Schema(
    {
        "kind": _Choice("nginx"),
        "include_path": _Path(),
        "main_config": _Path(),
        "pid_file": _Path(),
        "stable": _Strings(),
        "canary": _Strings(),
        "prefix": _Path(),
        "name": _String(),
        "nginx": _Path(command=True),
        "reload": _Choice("signal", "command"),
        "timeout": _Duration(),
        "slots": _Strings(),
    },
    required=("include_path", "main_config", "pid_file", "stable", "canary"),
)
_HAPROXY = _Schema(
    {
        "kind": _Choice("haproxy"),
        "runtime_api": _Path(socket=True),
        "backend": _String(),
        "stable": _Strings(),
        "canary": _Strings(),
        "timeout": _Duration(),
        "weight_tolerance": _Number(),
        "persist_config": _Path(),
        "haproxy": _Path(command=True),
        "slots": _Strings(),
    },
    required=("runtime_api", "backend", "stable", "canary"),
)
_GATEWAY_API = _Schema(
    {
        "kind": _Choice("gateway-api"),
        "route": _String(),
        "namespace": _String(),
        "stable_service": _String(),
        "canary_service": _String(),
        "port": _Integer(),
        "rule": _String(),
        "conflict_attempts": _Integer(minimum=1),
        "kubernetes": _Section(_KUBERNETES),
    },
    required=("route", "namespace", "stable_service", "canary_service"),
)
_ISTIO = _Schema(
    {
        "kind": _Choice("istio"),
        "virtual_service": _String(),
        "namespace": _String(),
        "host": _String(),
        "stable_subset": _String(),
        "canary_subset": _String(),
        "route": _String(),
        "destination_rule": _String(),
        "create_subsets": _Boolean(),
        "subset_label": _String(),
        "conflict_attempts": _Integer(minimum=1),
        "kubernetes": _Section(_KUBERNETES),
    },
    required=("virtual_service", "namespace", "host", "stable_subset", "canary_subset"),
)
_ROUTER_KINDS = {"nginx": _NGINX, "haproxy": _HAPROXY, "gateway-api": _GATEWAY_API, "istio": _ISTIO}
_NO_TOML_FORM = (
    "has no TOML form (a SplitProbe is a Python object): build the router in Python to "
    "check splits through the proxy"
)


def _read_router(table: PolicyTable) -> Mapping[str, Any]:
    kind = table.choice("kind", tuple(_ROUTER_KINDS))
    schema = _ROUTER_KINDS[kind]
    takes = [key for key in schema.keys if key != "kind"]
    elsewhere = {
        key: f"is not used by router kind {kind!r} (it takes {', '.join(takes)})"
        for other in _ROUTER_KINDS.values()
        for key in other.keys
        if key not in schema.keys
    }
    if kind in ("nginx", "haproxy"):
        elsewhere["verify"] = _NO_TOML_FORM
    elif "verify" not in elsewhere:
        elsewhere["verify"] = f"is not used by router kind {kind!r} (it takes {', '.join(takes)})"
    return schema.read(table, elsewhere=elsewhere, needed_for=f" for router kind {kind!r}")


def _build_router(spec: Mapping[str, Any]) -> TrafficRouter:
    from ..routers import (
        GatewayAPIRouter,
        HAProxyRouter,
        IstioRouter,
        KubernetesConnection,
        NginxRouter,
    )

    options = _thawed(spec)
    kind = options.pop("kind")
    connection = options.pop("kubernetes", None)
    if connection is not None:
        with _prefixed("router.kubernetes"):
            options["connection"] = KubernetesConnection(**connection)
    classes: dict[str, Any] = {
        "nginx": NginxRouter,
        "haproxy": HAProxyRouter,
        "gateway-api": GatewayAPIRouter,
        "istio": IstioRouter,
    }
    slots = options.pop("slots", None)
    with _prefixed("router", {"connection": "kubernetes"}):
        router: TrafficRouter = classes[kind](**options)
    if slots is not None:
        # Alternate slots: `stable` names the first slot's servers, `canary` the second's;
        # whichever is live is judged against the idle one, which gets each release.
        from ..routers import SlotRouter

        if len(slots) != 2 or slots[0] == slots[1]:
            raise _error("router.slots", 'must name two different slots, e.g. ["blue", "green"]')
        with _prefixed("router.slots", {"routers": ""}):
            router = SlotRouter.swapping(router, slots=(slots[0], slots[1]))
    return router


_SPLIT_FIELD = re.compile(r"header_routes\[(\d+)\]\.(\w+)")


def check_plan_on_router(plan: Plan, router: TrafficRouter) -> None:
    """Refuse, before any traffic moves, a step of `plan` that `router` could never apply.

    Every split the plan may ask for (`canarykit._machine.plan_splits`) goes through the
    router's own check: its ``check_split(split)`` when it has one, else, for an
    `NginxRouter`, rendering its include file. A `ConfigError` names the policy key of
    the step (``plan.steps[2].header_route.regex``), so ``canarykit run`` exits 2 with
    that message instead of failing at step 3 with canary traffic live.
    """
    check = getattr(router, "check_split", None)
    if not callable(check):
        from ..routers import NginxRouter

        check = router.render if isinstance(router, NginxRouter) else None
    if check is None:
        return
    for index, split in plan_splits(plan):
        try:
            check(split)
        except ConfigError as exc:
            where = "router" if index is None else _step_key(plan, index, exc.field)
            problem = f"{exc.problem} ({type(router).__name__} could never apply it)"
            raise ConfigError(where, exc.value, problem) from None


def _step_key(plan: Plan, index: int, field: str) -> str:
    """The policy key of what step `index` asks for, from a split's field that was refused."""
    found = _SPLIT_FIELD.match(field)
    # The routes came from the last header-routes step up to this one.
    setters = [i for i in range(index + 1) if isinstance(plan.steps[i], SetHeaderRoutes)]
    if found is not None and setters:
        origin = plan.steps[setters[-1]]
        assert isinstance(origin, SetHeaderRoutes)
        route, key = int(found.group(1)), found.group(2)
        if key == "value" and route < len(origin.routes):
            key = origin.routes[route].match.value  # exact, prefix or regex in the file
        where = f"plan.steps[{setters[-1]}].header_route"
        return f"{where}[{route}].{key}" if len(origin.routes) > 1 else f"{where}.{key}"
    step = plan.steps[index]
    if isinstance(step, SetWeight):
        return f"plan.steps[{index}].set_weight"
    if isinstance(step, SetMirror):
        return f"plan.steps[{index}].mirror"
    return f"plan.steps[{index}]"


# ---------------------------------------------------------------------------------------
# [metrics]

_HTTP_QUERIES = _Schema(
    {
        "arm_label": _String(),
        "requests_metric": _String(),
        "status_label": _String(),
        "error_status": _String(),
        "latency_metric": _StringOrFalse(),
        "matchers": _TextMap(),
        "gauges": _TextMap(),
    }
)
_QUERIES = _Schema(
    {
        "requests": _String(),
        "errors": _String(),
        "latency_buckets": _String(),
        "latency_sum": _String(),
        "gauges": _TextMap(),
    },
    required=("requests", "errors"),
)
_PROMETHEUS = _Schema(
    {
        "kind": _Choice("prometheus"),
        "url": _String(),
        "stable": _String(),
        "canary": _String(),
        "timeout": _Duration(),
        "attempts": _Integer(minimum=1),
        "backoff": _Duration(allow_zero=True),
        "deadline": _Duration(),
        "max_response_bytes": _Integer(minimum=1024),
        "settle": _Duration(allow_zero=True),
        "verify": _BoolOrPath(),
        "bearer_token_env": _EnvName(),
        "bearer_token_file": _Path(),
        "basic_user": _String(),
        "basic_password_env": _EnvName(),
        "basic_password_file": _Path(),
        "headers_env": _HeadersEnv(),
        "http": _Section(_HTTP_QUERIES),
        "queries": _Section(_QUERIES),
    },
    required=("url", "stable", "canary"),
)
_PLAIN_SECRETS = {
    "auth": "is given as bearer_token_env, bearer_token_file, or basic_user with "
    "basic_password_env or basic_password_file",
    "bearer_token": "would put a secret in the policy file: use bearer_token_env "
    "(an environment variable) or bearer_token_file",
    "token": "would put a secret in the policy file: use bearer_token_env or bearer_token_file",
    "basic_password": "would put a secret in the policy file: use basic_password_env or "
    "basic_password_file",
    "password": "would put a secret in the policy file: use basic_password_env or "
    "basic_password_file",
    "headers": "takes its values from environment variables here: headers_env = "
    '{Header-Name = "VARIABLE"}',
}


def _read_metrics(table: PolicyTable) -> Mapping[str, Any]:
    table.choice("kind", ("prometheus",))
    table.check_keys(_PROMETHEUS.keys, elsewhere=_PLAIN_SECRETS)
    _one_of(table, ("http", "queries"), required=False)
    _one_of(table, ("bearer_token_env", "bearer_token_file", "basic_user"), required=False)
    password = _one_of(table, ("basic_password_env", "basic_password_file"), required=False)
    if "basic_user" in table and password is None:
        raise _error(
            table.field("basic_password_env"),
            "is required with basic_user (or basic_password_file)",
        )
    if password is not None and "basic_user" not in table:
        raise _error(table.field("basic_user"), f"is required with {password}")
    return _PROMETHEUS.read(table, elsewhere=_PLAIN_SECRETS)


def _build_metrics(spec: Mapping[str, Any]) -> MetricsSource:
    from ..metrics import BasicAuth, BearerAuth, PrometheusQueries, PrometheusSource, http_queries

    options = _thawed(spec)
    options.pop("kind")
    http = options.pop("http", None)
    queries = options.pop("queries", None)
    if queries is not None:
        with _prefixed("metrics.queries"):
            options["queries"] = PrometheusQueries(**queries)
    elif http is not None:
        if http.get("latency_metric") is False:
            http["latency_metric"] = None
        with _prefixed("metrics.http"):
            options["queries"] = http_queries(**http)
    rename: dict[str, str] = {"headers": "headers_env"}
    token_key = next((k for k in ("bearer_token_env", "bearer_token_file") if k in options), None)
    if token_key is not None:
        token = _secret(f"metrics.{token_key}", token_key, options.pop(token_key))
        rename["auth.token"] = token_key
        with _prefixed("metrics", rename):
            options["auth"] = BearerAuth(token=token)
    user = options.pop("basic_user", None)
    if user is not None:
        key = "basic_password_env" if "basic_password_env" in options else "basic_password_file"
        password = _secret(f"metrics.{key}", key, options.pop(key))
        rename.update({"auth.username": "basic_user", "auth.password": key})
        with _prefixed("metrics", rename):
            options["auth"] = BasicAuth(username=user, password=password)
    headers = options.pop("headers_env", None)
    if headers is not None:
        options["headers"] = _headers_from_env("metrics.headers_env", headers)
    verify = options.get("verify")
    if isinstance(verify, str):
        options["verify"] = _tls_context("metrics.verify", verify)
    with _prefixed("metrics", rename):
        source: MetricsSource = PrometheusSource(**options)
    return source


def _tls_context(field: str, path: str) -> ssl.SSLContext:
    # Read here, not by ssl from the path: a FIFO or a link there must not hang or mislead.
    cannot = "cannot load the CA certificates"
    raw = _read_named_file(field, path, limit=_CA_FILE_LIMIT, what="CA bundle", cannot=cannot)
    try:
        return ssl.create_default_context(cadata=raw.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError: not PEM text
        raise ConfigError(field, path, f"{cannot} ({exc})") from None


def _read_named_file(
    field: str, path: str, *, limit: int, what: str, cannot: str = "cannot be read"
) -> bytes:
    """The bytes of the file a policy key names (a secret, a CA bundle), read safely.

    The file must be a regular file of at most `limit` bytes: a FIFO, a device or a
    directory is refused at once (it cannot hang the run), as is a symbolic link out of
    its own folder (a link to an unrelated file, such as someone else's secrets). A link
    within its folder is followed: Kubernetes mounts a secret's files that way
    (``token -> ..data/token``). Anything wrong is a `ConfigError` naming `field`; one
    that cannot be opened says `cannot` and why.
    """
    target = path
    try:
        target = _within_own_folder(path, what)
        return read_regular(target, limit=limit, what=what)
    except FileRefusedError as exc:
        # "secret file /x/token: is a FIFO ...": the field and the path are named anyway.
        reason = str(exc).removeprefix(f"{what} {target}: ")
        raise ConfigError(field, path, reason) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(field, path, f"{cannot} ({reason})") from None


def _within_own_folder(path: str, what: str) -> str:
    """`path`, or the file its symbolic link leads to when that is in the link's own folder.

    Raises `FileRefusedError` for a link that leads out of it.
    """
    if not os.path.islink(path):
        return path
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    target = os.path.realpath(path)
    if os.path.commonpath([folder, target]) != folder:
        raise FileRefusedError(
            f"{what} {path}: is a symbolic link to {target}, outside its own folder; "
            "canarykit follows a link here only within the folder (as Kubernetes mounts "
            "secrets): put the file itself there"
        )
    return target


# ---------------------------------------------------------------------------------------
# Secrets: read when built, never shown


def _from_env(field: str, variable: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(field, variable, "names an environment variable that is not set")
    if not value.strip():
        raise ConfigError(field, variable, "names an environment variable that is empty")
    return value.strip()


def _from_file(field: str, path: str) -> str:
    raw = _read_named_file(field, path, limit=_SECRET_FILE_LIMIT, what="secret file")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(field, path, "is not UTF-8 text") from None
    if not text:
        raise ConfigError(field, path, "is empty")
    return text


def _secret(field: str, key: str, where: str) -> str:
    """The secret that `key` (``..._env`` or ``..._file``) points to."""
    return _from_env(field, where) if key.endswith("_env") else _from_file(field, where)


def _headers_from_env(field: str, headers: Mapping[str, str]) -> dict[str, str]:
    table = PolicyTable(headers, field)
    return {name: _from_env(table.field(name), variable) for name, variable in headers.items()}


# ---------------------------------------------------------------------------------------
# [hooks]

_POINTS = tuple(point.value.replace("-", "_") for point in HookPoint)


class _Percents(_Key):
    """An array of percents, e.g. ``[50, 0]`` or ``["50%", 0]``; `Hooks` checks their order."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        where = table.field(key)
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(where, _shown(value), "must be an array of percents, e.g. [50, 0]")
        # One rule for percents everywhere: 50 and "50%" are the same.
        return tuple(
            float(parse_percent(f"{where}[{index}]", item)) for index, item in enumerate(value)
        )


# Settings of the hooks, not hooks: the timing, and promote-stable's way back to stable.
_HOOK_TIMING = {
    "interval": _Duration(),
    "gate_timeout": _Duration(),
    "call_timeout": _Duration(),
    "traffic_back": _Percents(),
    "traffic_back_hold": _Duration(allow_zero=True),
}
_WEBHOOK = _Schema(
    {
        "url": _String(),
        "url_env": _EnvName(),
        "name": _String(),
        "timeout": _Duration(),
        "attempts": _Integer(minimum=1),
        "backoff": _Duration(allow_zero=True),
        "namespace": _String(),
        "max_response_bytes": _Integer(minimum=1024),
        "metadata": _TextMap(),
        "headers_env": _HeadersEnv(),
    }
)
_APPROVAL = _Schema({"approval_file": _Path()})
_HOOK_HELP = (
    "must be a webhook URL, a table {url = ...} (or url_env), a table {approval_file = ...}, "
    "or an array of these"
)


class _HookPoint(_Key):
    """A hook point's hooks: a URL, a webhook or approval table, or an array of these."""

    def read(self, table: PolicyTable, key: str) -> Any:
        value = table.raw(key)
        where = table.field(key)
        if isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(where, [], "must hold at least one hook (or leave it out)")
            return tuple(_read_hook(f"{where}[{i}]", item) for i, item in enumerate(value))
        return _read_hook(where, value)

    def dump(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [_dump_hook(item) for item in value]
        return _dump_hook(value)

    def resolve(self, value: Any, base: Path) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(self.resolve(item, base) for item in value)
        if isinstance(value, Mapping) and "approval_file" in value:
            return _APPROVAL.resolve(value, base)
        return value  # a URL, or a webhook table: no paths


def _read_hook(where: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(where, value, _HOOK_HELP)
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(where, _shown(value), _HOOK_HELP)
    table = PolicyTable(value, where)
    if "approval_file" in table:
        webhook_only = "is a webhook setting; an approval_file hook takes only approval_file"
        return _APPROVAL.read(table, elsewhere=dict.fromkeys(_WEBHOOK.keys, webhook_only))
    elsewhere = {"headers": _PLAIN_SECRETS["headers"], "path": "is approval_file here"}
    table.check_keys(_WEBHOOK.keys, elsewhere=elsewhere)
    _one_of(table, ("url", "url_env", "approval_file"), required=True)
    return _WEBHOOK.read(table, elsewhere=elsewhere)


def _dump_hook(value: Any) -> Any:
    if isinstance(value, str):
        return value
    schema = _APPROVAL if "approval_file" in value else _WEBHOOK
    return schema.dump(value)


_HOOKS = _Schema({**_HOOK_TIMING, **{point: _HookPoint() for point in _POINTS}})


def _build_hook(where: str, spec: Any) -> Any:
    from .._hooks import FileApproval, Webhook

    if isinstance(spec, str):
        with _prefixed(where, {"url": ""}):
            return Webhook(spec)
    options = _thawed(spec)
    if "approval_file" in options:
        with _prefixed(where, {"path": "approval_file"}):
            return FileApproval(options["approval_file"])
    url_key = "url" if "url" in options else "url_env"
    url = options.pop("url", None)
    variable = options.pop("url_env", None)
    if variable is not None:
        url = _from_env(f"{where}.url_env", variable)
    headers = options.pop("headers_env", None)
    if headers is not None:
        options["headers"] = _headers_from_env(f"{where}.headers_env", headers)
    with _prefixed(where, {"url": url_key, "headers": "headers_env"}):
        return Webhook(url, **options)


def _build_hooks(spec: Mapping[str, Any]) -> Hooks:
    from .._hooks import Hooks

    options: dict[str, Any] = {}
    for key, value in spec.items():
        where = f"hooks.{key}"
        if key in _HOOK_TIMING:
            options[key] = value
        elif isinstance(value, tuple):
            options[key] = [_build_hook(f"{where}[{i}]", item) for i, item in enumerate(value)]
        else:
            options[key] = _build_hook(where, value)
    with _prefixed("hooks"):
        return Hooks(**options)


# ---------------------------------------------------------------------------------------
# [[notify]]

_NOTIFY_COMMON: dict[str, _Key] = {
    "kind": _Choice("slack", "webhook"),
    "url": _String(),
    "url_env": _EnvName(),
    "min_severity": _Choice("info", "warn", "error"),
    "every_verdict": _Boolean(),
    "timeout": _Duration(),
    "attempts": _Integer(minimum=1),
    "backoff": _Duration(allow_zero=True),
    "queue_size": _Integer(minimum=1),
    "drain_timeout": _Duration(),
    "max_response_bytes": _Integer(minimum=1024),
}
_NOTIFY_KINDS = {
    "slack": _Schema({**_NOTIFY_COMMON, "channel": _String(), "username": _String()}),
    "webhook": _Schema({**_NOTIFY_COMMON, "headers_env": _HeadersEnv()}),
}
_NOTIFY_ELSEWHERE = {
    "rollout": "is the rollout's own name ([rollout] name, or the policy file's name)",
    "headers": _PLAIN_SECRETS["headers"],
}


def _read_notifier(table: PolicyTable) -> Mapping[str, Any]:
    kind = table.choice("kind", tuple(_NOTIFY_KINDS))
    schema = _NOTIFY_KINDS[kind]
    elsewhere = {
        key: f"is not used by notify kind {kind!r}"
        for other in _NOTIFY_KINDS.values()
        for key in other.keys
        if key not in schema.keys
    }
    elsewhere.update(_NOTIFY_ELSEWHERE)
    table.check_keys(schema.keys, elsewhere=elsewhere)
    _one_of(table, ("url", "url_env"), required=True)
    return schema.read(table, elsewhere=elsewhere)


def _read_notifiers(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(where, _shown(value), f"must be an array of tables ([[{where}]])")
    notifiers = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}[{index}]", _shown(item), "must be a table")
        notifiers.append(_read_notifier(PolicyTable(item, f"{where}[{index}]")))
    return tuple(notifiers)


def _build_notifier(where: str, spec: Mapping[str, Any], rollout: str | None) -> Notifier:
    from ..notify import SlackNotifier, WebhookNotifier

    options = _thawed(spec)
    kind = options.pop("kind")
    url_key = "url" if "url" in options else "url_env"
    url = options.pop("url", None)
    variable = options.pop("url_env", None)
    if variable is not None:
        url = _from_env(f"{where}.url_env", variable)
    headers = options.pop("headers_env", None)
    if headers is not None:
        options["headers"] = _headers_from_env(f"{where}.headers_env", headers)
    if rollout is not None:
        options["rollout"] = rollout
    notifier_class = SlackNotifier if kind == "slack" else WebhookNotifier
    with _prefixed(where, {"url": url_key, "headers": "headers_env"}):
        notifier: Notifier = notifier_class(url, **options)
    return notifier


# ---------------------------------------------------------------------------------------
# [state]: where the state, the lease and the operator commands live

STATE_BACKENDS = ("file", "etcd", "postgres")
"""The values of ``[state] backend``: ``file`` (the default: ``[rollout] state_dir``)."""
_STATE = _Schema(
    {
        "backend": _Choice(*STATE_BACKENDS),
        "endpoints": _Strings(),
        "prefix": _String(),
        "dsn": _String(),
        "dsn_env": _EnvName(),
        "dsn_file": _Path(),
        "table": _String(),
        "ca_file": _Path(),
        "cert_file": _Path(),
        "key_file": _Path(),
        "username": _String(),
        "password_env": _EnvName(),
        "password_file": _Path(),
        "ttl": _Duration(),
    }
)
_TLS_KEYS = ("ca_file", "cert_file", "key_file")
_TLS_WHAT = {"ca_file": "CA bundle", "cert_file": "certificate file", "key_file": "key file"}
_STATE_KEYS = {
    "file": ("backend", "ttl"),
    "etcd": (
        "backend",
        "endpoints",
        "prefix",
        *_TLS_KEYS,
        "username",
        "password_env",
        "password_file",
        "ttl",
    ),
    "postgres": (
        "backend",
        "dsn",
        "dsn_env",
        "dsn_file",
        "table",
        *_TLS_KEYS,
        "password_env",
        "password_file",
        "ttl",
    ),
}
_STATE_ELSEWHERE = {
    "password": "would put a secret in the policy file: use password_env or password_file",
    "state_dir": 'is a [rollout] key (for backend "file")',
    "endpoint": "is called endpoints (an array of URLs)",
}
# A password in a libpq connection string: ``password=...`` or ``postgresql://u:p@host``.
_DSN_PASSWORD = re.compile(r"(?:^|\s)password\s*=", re.IGNORECASE)
_EXTRAS = {
    "etcd": "pip install 'canarykit[etcd]'",
    "postgres": "pip install 'canarykit[postgres]'",
}


def _read_state(table: PolicyTable) -> Mapping[str, Any]:
    """``[state]``, checked for its backend; nothing is connected or read here."""
    backend = table.choice("backend", STATE_BACKENDS) if "backend" in table else "file"
    takes = _STATE_KEYS[backend]
    elsewhere = {
        key: f"is not used by backend {backend!r} (it takes {', '.join(takes)})"
        for key in _STATE.keys
        if key not in takes
    }
    elsewhere.update(_STATE_ELSEWHERE)
    table.check_keys(takes, elsewhere=elsewhere)
    if "password_env" in table or "password_file" in table:
        _one_of(table, ("password_env", "password_file"), required=True)
    if "key_file" in table and "cert_file" not in table:
        raise _error(table.field("cert_file"), "is required with key_file")
    if backend == "etcd":
        _check_etcd(table)
    elif backend == "postgres":
        _check_postgres(table)
    spec = dict(_STATE.read(table, elsewhere=elsewhere))
    spec["backend"] = backend
    return MappingProxyType(spec)


def _check_etcd(table: PolicyTable) -> None:
    # The store's own checks, so the file is refused when it is loaded, not when it runs;
    # the module imports no HTTP client.
    from ..stores._etcd import _endpoints, _prefix

    table.raw("endpoints", needed_for=" for backend 'etcd'")
    endpoints = _Strings().read(table, "endpoints")
    with _prefixed("state"):
        urls = _endpoints(list(endpoints))
        if "prefix" in table:
            _prefix(table.raw("prefix"))
    tls = [key for key in _TLS_KEYS if key in table]
    if tls and not all(url.startswith("https://") for url in urls):
        raise ConfigError(
            table.field("endpoints"), list(endpoints), f"must be https:// URLs with {tls[0]}"
        )
    password = "password_env" in table or "password_file" in table
    if "username" in table and not password:
        raise _error(table.field("password_env"), "is required with username (or password_file)")
    if password and "username" not in table:
        raise _error(table.field("username"), "is required with a password")


def _check_postgres(table: PolicyTable) -> None:
    key = _one_of(table, ("dsn", "dsn_env", "dsn_file"), required=True)
    if key == "dsn":
        dsn = table.string("dsn")
        if _DSN_PASSWORD.search(dsn) or _uri_password(dsn):
            # Not quoted back: it holds a password.
            raise ConfigError(
                table.field("dsn"),
                _HIDDEN,
                "must not hold a password: give it with password_env or password_file, "
                "or the whole connection string with dsn_env or dsn_file",
            )
    if "table" in table:
        name = table.string("table")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", name):
            raise ConfigError(
                table.field("table"),
                name,
                "must be 1-40 lower-case letters, digits or '_' (not first a digit)",
            )


def _uri_password(dsn: str) -> bool:
    """True when `dsn` is a ``postgresql://`` URI with a password in it."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        return False
    try:
        return urlsplit(dsn).password is not None
    except ValueError:
        return False


def _state_table(value: Any) -> Mapping[str, Any] | None:
    return _table("state", value, _read_state)


def _build_store(spec: Mapping[str, Any]) -> Any:
    """The `EtcdStore` or `PostgresStore` that `spec` (``[state]``, not file) describes."""
    backend = spec["backend"]
    extra = _EXTRAS[backend]
    options = _thawed(spec)
    for key in ("backend", "ttl"):
        options.pop(key, None)
    rename: dict[str, str] = {}
    secret_key = next((k for k in ("password_env", "password_file") if k in options), None)
    if secret_key is not None:
        options["password"] = _secret(f"state.{secret_key}", secret_key, options.pop(secret_key))
        rename["password"] = secret_key
    for key in _TLS_KEYS:
        if key in options:
            # Read first the way every policy file is read: a FIFO or a link out of its
            # folder is refused by its key, before ssl opens the path itself.
            what = _TLS_WHAT[key]
            _read_named_file(f"state.{key}", options[key], limit=_CA_FILE_LIMIT, what=what)
    if backend == "etcd":
        from .._http import import_httpx

        import_httpx('[state] backend = "etcd"', extra)
        from ..stores._etcd import EtcdStore

        with _prefixed("state", rename):
            return EtcdStore(**options)
    try:
        from ..stores._postgres import PostgresStore, import_psycopg

        import_psycopg()
    except ImportError:  # ModuleNotFoundError too: said with the extra to install
        raise ModuleNotFoundError(
            f'[state] backend = "postgres" needs psycopg 3, which is not installed: {extra}'
        ) from None
    for key in ("dsn_env", "dsn_file"):
        if key in options:
            options["dsn"] = _secret(f"state.{key}", key, options.pop(key))
            rename["dsn"] = key
    for key, libpq in zip(_TLS_KEYS, ("sslrootcert", "sslcert", "sslkey"), strict=True):
        if key in options:
            options[libpq] = options.pop(key)
            rename[libpq] = key
    with _prefixed("state", rename):
        return PostgresStore(**options)


# ---------------------------------------------------------------------------------------
# The deployment


def _table(name: str, value: Any, read: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(name, _shown(value), f"must be a table ([{name}])")
    result: Mapping[str, Any] = read(PolicyTable(value, name))
    return result


def _router_table(value: Any) -> Mapping[str, Any] | None:
    return _table("router", value, _read_router)


def _metrics_table(value: Any) -> Mapping[str, Any] | None:
    return _table("metrics", value, _read_metrics)


def _hooks_table(value: Any) -> Mapping[str, Any] | None:
    return _table("hooks", value, _HOOKS.read)


def _notify_converter(value: Any) -> tuple[Mapping[str, Any], ...]:
    return () if value is None else _read_notifiers(value, "notify")


def _check_optional_name(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None:
        check_name("name", value)


def _check_state_dir(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("state_dir", value, "must be a non-empty string (a directory)")


def check_release(field: str, value: Any) -> str:
    """`value` if it is a release id (e.g. ``v1.2.3``), else `ConfigError` naming `field`.

    1-128 characters: letters, digits and ``_ . : + @ / -``, starting with a letter or digit.
    """
    if not isinstance(value, str) or not _RELEASE.fullmatch(value):
        raise ConfigError(
            field,
            value,
            "must be a release id: 1-128 letters, digits, '_', '.', ':', '+', '@', '/' or "
            "'-', starting with a letter or digit (e.g. v1.2.3)",
        )
    return value


def _check_optional_release(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None:
        check_release("release", value)


def _check_adopt(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError("adopt", value, "must be true or false")


def _check_on_metrics_outage(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in _ON_METRICS_OUTAGE:
        raise ConfigError("on_metrics_outage", value, "must be 'rollback' or 'pause'")


def _metrics_outage_limit(value: Any) -> float:
    return _seconds("metrics_outage_limit", value)


def _check_on_interrupt(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in _ON_INTERRUPT:
        raise ConfigError("on_interrupt", value, "must be 'rollback' or 'leave'")


def _seconds(name: str, value: Any) -> float:
    number = finite(name, value)
    if not number > 0:
        raise ConfigError(name, value, "must be > 0 seconds")
    return number


def _call_timeout(value: Any) -> float:
    return _seconds("call_timeout", value)


def _rollback_timeout(value: Any) -> float:
    return _seconds("rollback_timeout", value)


def _check_attempts(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("apply_attempts", value, "must be an integer >= 1")


@attrs.frozen(kw_only=True, repr=False)
class Deployment:
    """How ``canarykit run`` runs a policy for real: its ``[rollout]``, ``[state]``,
    ``[router]``, ``[metrics]``, ``[hooks]`` and ``[[notify]]`` tables (schema: the
    command line docs).

    The ``[rollout]`` settings are attributes: `name` (the rollout's key for its saved
    state and lease; None: the caller picks one, ``canarykit run`` the file's name),
    `state_dir` (which also holds the lease, so one runner drives a rollout name),
    `release` (the release id of the rollout; None: none given), `adopt` (start from the
    router's current split when it is not at stable), `on_interrupt` (``"rollback"`` or
    ``"leave"``: what SIGINT and SIGTERM do to traffic), `on_metrics_outage`
    (``"rollback"`` or ``"pause"``) and `metrics_outage_limit` (seconds),
    `call_timeout`, `rollback_timeout` (seconds) and `apply_attempts`, with `Rollout`'s
    defaults. The other tables are kept as read, checked but not built: `router_table`,
    `metrics_table`, `hooks_table`, `state_table` (None when absent) and `notify_tables`;
    `state_backend` and `lease_ttl` say what ``[state]`` chose. The
    ``build_*`` methods construct the objects they describe, reading the environment
    variables and files their ``*_env`` and ``*_file`` keys name; each raises
    `ConfigError` naming the key path, or `ModuleNotFoundError` naming the extra to
    install. The repr shows kinds and hook points, never a URL or a secret.

    >>> from canarykit.policy import load_policy
    >>> policy = load_policy('''
    ... [plan]
    ... shape = "linear"
    ... initial = 10
    ... step = 45
    ... hold = "2m"
    ... analysis_interval = "30s"
    ... [decider]
    ... kind = "threshold"
    ... [[decider.metrics]]
    ... metric = "error_rate"
    ... max = "2%"
    ... [rollout]
    ... name = "web"
    ... [router]
    ... kind = "haproxy"
    ... runtime_api = "/run/haproxy/admin.sock"
    ... backend = "app"
    ... stable = ["v1"]
    ... canary = ["v2"]
    ... ''')
    >>> policy.deployment
    Deployment(name='web', router='haproxy')
    >>> router = policy.deployment.build_router()
    >>> type(router).__name__, router.backend, router.stable
    ('HAProxyRouter', 'app', ('v1',))
    """  # noqa: D205 (the summary needs two lines)

    name: str | None = attrs.field(default=None, validator=_check_optional_name)
    state_dir: str = attrs.field(default=DEFAULT_STATE_DIR, validator=_check_state_dir)
    release: str | None = attrs.field(default=None, validator=_check_optional_release)
    adopt: bool = attrs.field(default=False, validator=_check_adopt)
    on_interrupt: Literal["rollback", "leave"] = attrs.field(
        default="rollback", validator=_check_on_interrupt
    )
    on_metrics_outage: Literal["rollback", "pause"] = attrs.field(
        default="rollback", validator=_check_on_metrics_outage
    )
    metrics_outage_limit: float = attrs.field(default=1800.0, converter=_metrics_outage_limit)
    call_timeout: float = attrs.field(default=30.0, converter=_call_timeout)
    rollback_timeout: float = attrs.field(default=120.0, converter=_rollback_timeout)
    apply_attempts: int = attrs.field(default=3, validator=_check_attempts)
    router_table: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_router_table, hash=False
    )
    metrics_table: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_metrics_table, hash=False
    )
    hooks_table: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_hooks_table, hash=False
    )
    notify_tables: tuple[Mapping[str, Any], ...] = attrs.field(
        default=(), converter=_notify_converter, hash=False
    )
    state_table: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_state_table, hash=False
    )

    @property
    def state_backend(self) -> str:
        """Where the state, the lease and operator commands live: ``file`` (the default),
        ``etcd`` or ``postgres`` (``[state] backend``).
        """  # noqa: D205 (the summary needs two lines)
        return "file" if self.state_table is None else str(self.state_table["backend"])

    @property
    def lease_ttl(self) -> float | None:
        """``[state] ttl``: seconds the rollout's lease lasts unrenewed (None: the store's)."""
        ttl = None if self.state_table is None else self.state_table.get("ttl")
        return None if ttl is None else float(ttl)

    def build_store(self) -> Any:
        """The state store ``[state]`` describes: a `FileStore` in `state_dir` by default,
        an `EtcdStore` or a `PostgresStore` (canarykit.stores) for the other backends.

        Reads the password (or the connection string) that ``password_env``,
        ``password_file``, ``dsn_env`` or ``dsn_file`` names, and refuses TLS files that
        are not regular files, each by its key (`ConfigError`); `ModuleNotFoundError`
        names the extra to install when the backend's client is missing. The store is
        not connected yet: close an etcd or PostgreSQL one with ``aclose()``.
        """  # noqa: D205 (the summary needs two lines)
        if self.state_table is None or self.state_table["backend"] == "file":
            from .._stores import FileStore

            return FileStore(self.state_dir)
        return _build_store(self.state_table)

    @property
    def has_router(self) -> bool:
        """True when the policy has a ``[router]`` table."""
        return self.router_table is not None

    @property
    def has_metrics(self) -> bool:
        """True when the policy has a ``[metrics]`` table."""
        return self.metrics_table is not None

    def build_router(self) -> TrafficRouter:
        """The router ``[router]`` describes (`canarykit.routers`), e.g. an `NginxRouter`.

        Raises `ConfigError` naming ``router`` when there is no such table.
        """
        if self.router_table is None:
            raise _error("router", "is required to run a rollout: the policy has no [router]")
        return _build_router(self.router_table)

    def build_metrics(self) -> MetricsSource:
        """The metrics source ``[metrics]`` describes: a `PrometheusSource` (needs httpx).

        Raises `ConfigError` naming ``metrics`` when there is no such table, and naming
        the key when an environment variable or file it names cannot be read.
        """
        if self.metrics_table is None:
            raise _error("metrics", "is required to run a rollout: the policy has no [metrics]")
        return _build_metrics(self.metrics_table)

    def build_hooks(self) -> Hooks | None:
        """The `Hooks` that ``[hooks]`` describes, or None without that table."""
        if self.hooks_table is None:
            return None
        return _build_hooks(self.hooks_table)

    def build_notifiers(self, *, rollout: str | None = None) -> list[Notifier]:
        """The notifiers that ``[[notify]]`` describes, in order (none without it).

        Each shows `rollout` (default: `name`) for events given to it directly; use
        `Notifier.attach` to report a `Rollout` under its own key.
        """
        if rollout is not None:
            check_name("rollout", rollout)
        shown = self.name if rollout is None else rollout
        return [
            _build_notifier(f"notify[{index}]", spec, shown)
            for index, spec in enumerate(self.notify_tables)
        ]

    def __repr__(self) -> str:
        parts = []
        for field in attrs.fields(Deployment):
            if not field.name.endswith(("_table", "_tables")):
                value = getattr(self, field.name)
                if value != field.default:
                    parts.append(f"{field.name}={value!r}")
        if self.router_table is not None:
            parts.append(f"router={self.router_table['kind']!r}")
        if self.metrics_table is not None:
            parts.append(f"metrics={self.metrics_table['kind']!r}")
        if self.hooks_table is not None:
            points = [key for key in self.hooks_table if key in _POINTS]
            parts.append(f"hooks={points!r}")
        if self.notify_tables:
            parts.append(f"notify={[spec['kind'] for spec in self.notify_tables]!r}")
        if self.state_table is not None:
            parts.append(f"state={self.state_table['backend']!r}")
        return f"Deployment({', '.join(parts)})"


def _deployment_tables(deployment: Deployment) -> dict[str, Any]:
    """The tables of `deployment` as a policy file writes them (for `Policy.to_toml`).

    ``{"rollout": {...}, "router": {...}, ..., "notify": [{...}]}``: only the settings
    that differ from the defaults, and only the tables present; durations as strings
    such as ``"30s"``.
    """
    rollout: dict[str, Any] = {}
    for field in attrs.fields(Deployment):
        if field.name.endswith(("_table", "_tables")):
            continue
        value = getattr(deployment, field.name)
        if field.name == "state_dir" and deployment.state_backend != "file":
            continue  # the state lives in [state]'s store
        if value != field.default:
            is_duration = field.name.endswith(("_timeout", "_limit"))
            rollout[field.name] = duration_value(value) if is_duration else value
    found: dict[str, Any] = {}
    if rollout:
        found["rollout"] = rollout
    if deployment.router_table is not None:
        router = deployment.router_table
        found["router"] = _ROUTER_KINDS[router["kind"]].dump(router)
    if deployment.metrics_table is not None:
        found["metrics"] = _PROMETHEUS.dump(deployment.metrics_table)
    if deployment.hooks_table is not None:
        found["hooks"] = _HOOKS.dump(deployment.hooks_table)
    if deployment.notify_tables:
        found["notify"] = [
            _NOTIFY_KINDS[spec["kind"]].dump(spec) for spec in deployment.notify_tables
        ]
    if deployment.state_table is not None:
        found["state"] = _STATE.dump(deployment.state_table)
    return found


def _read_deployment(top: PolicyTable, base: Path | None = None) -> Deployment:
    """The `Deployment` in a policy's top-level table (an empty one without its tables).

    `base` is the policy file's folder (absolute): every relative path in the tables, and
    the state directory (given or default), is made absolute against it, so the policy
    means the same files whatever the working directory. Without `base` (TOML text, not
    a file) paths are kept as written: relative to the working directory. A policy
    without any of these tables (for ``canarykit simulate`` only) gets `Deployment()`.
    """
    settings = _read_rollout(top.table("rollout")) if "rollout" in top else {}
    router = _read_router(top.table("router")) if "router" in top else None
    metrics = _read_metrics(top.table("metrics")) if "metrics" in top else None
    hooks = _HOOKS.read(top.table("hooks")) if "hooks" in top else None
    notify = _read_notifiers(top.raw("notify"), "notify") if "notify" in top else ()
    state = _read_state(top.table("state")) if "state" in top else None
    if state is not None and state["backend"] != "file" and "state_dir" in settings:
        raise _error(
            "rollout.state_dir",
            f'is for backend "file": this policy keeps its state in {state["backend"]} '
            "([state] backend)",
        )
    if base is not None and any(name in top for name in _DEPLOYMENT_TABLES):
        settings["state_dir"] = _resolved(settings.get("state_dir", DEFAULT_STATE_DIR), base)
        if router is not None:
            router = _ROUTER_KINDS[router["kind"]].resolve(router, base)
        if metrics is not None:
            metrics = _PROMETHEUS.resolve(metrics, base)
        if hooks is not None:
            hooks = _HOOKS.resolve(hooks, base)
        if state is not None:
            state = _STATE.resolve(state, base)
    return Deployment(
        **settings,
        router_table=router,
        metrics_table=metrics,
        hooks_table=hooks,
        notify_tables=notify,
        state_table=state,
    )


_DEPLOYMENT_TABLES = ("rollout", "router", "metrics", "hooks", "notify", "state")
"""The top-level keys of a policy file that a `Deployment` reads."""

_SUB_TABLES = frozenset({"kubernetes", "http", "queries", *_POINTS})
"""Keys whose table `Policy.to_toml` writes as a table of its own (``[router.kubernetes]``)."""
