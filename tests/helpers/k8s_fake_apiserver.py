"""A local stand-in for the Kubernetes API server, for the Kubernetes routers' and lease's tests.

No API server runs here (no kind, k3s or envtest), so the routers' tests run the real
lightkube client against this: a threaded HTTP server on 127.0.0.1 that serves the
custom resources of the CRDs in ``tests/data/schemas`` the way the API server does.

- ``GET``, ``POST`` (create), ``PUT`` (replace), ``PATCH`` (JSON merge patch and JSON
  patch) and ``DELETE`` of ``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]``,
  in every served version of the CRD. Server-side apply and strategic merge patches are
  answered 415, as the real server answers a strategic merge patch of a custom resource
  (canarykit sends neither).
- ``metadata.resourceVersion`` comes from one counter for the whole store and changes on
  every write that changes the object; a write that changes nothing keeps it.
  ``metadata.generation`` counts changes to ``spec``. ``managedFields`` records the
  ``fieldManager`` of each writer (one entry per manager, without the field sets).
- A patch or replace carrying a ``resourceVersion`` other than the stored one gets 409
  Conflict; a create of an existing name 409 AlreadyExists; a missing object 404.
- Before it is stored, an object is pruned of fields its schema does not know, given
  the schema's defaults, and validated against the CRD's ``openAPIV3Schema`` with
  jsonschema plus the few CEL rules in `CEL_CHECKS`; a failure is 422 Invalid with the
  field paths in the message, and nothing is stored.
- Optional: a bearer token (401 without it), namespaces where verbs are forbidden
  (403, with RBAC's message), TLS with a given certificate.
- Tests can change objects as "someone else" (`edit`), and make that happen between a
  client's read and its write (`before_writes`), the race a resourceVersion guards.
- One built-in kind is served beside the CRDs: ``coordination.k8s.io/v1`` ``Lease``
  (`LEASE`), the object leader election uses, with its fields' types and the API
  server's checks on them (`_lease_checks`). As for the real server's built-in kinds, a
  replace without a ``resourceVersion`` is an unconditional update; one with a stale
  ``resourceVersion`` gets 409 Conflict as for a custom resource.

Every error is a ``Status`` object with ``Content-Type: application/json``, which is what
lightkube turns into an ``ApiError``.
"""

from __future__ import annotations

import collections
import copy
import datetime
import functools
import itertools
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"

# Running totals for a test run's report: objects validated by kind, requests by answer.
STATS: collections.Counter[str] = collections.Counter()

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


# --------------------------------------------------------------------------------- CRDs


@dataclass(frozen=True)
class CRD:
    group: str
    kind: str
    plural: str
    schemas: dict[str, dict[str, Any]]  # served version -> openAPIV3Schema
    storage: str
    builtin: bool = False  # a kind of the API server's own (a replace may omit resourceVersion)

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"


@functools.cache
def _documents(path: Path, mtime: float) -> tuple[Any, ...]:
    # The schemas are large (1 MB of YAML): parse each file once per test run, with
    # libyaml when PyYAML has it. Callers only read what this returns.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader))


def load_crds(paths: Iterable[Path] | None = None) -> dict[tuple[str, str], CRD]:
    """The CRDs in the YAML files, by (group, plural)."""
    crds = {}
    for path in paths or sorted(SCHEMAS.glob("*.yaml")):
        for document in _documents(path, path.stat().st_mtime):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            versions = {
                version["name"]: version["schema"]["openAPIV3Schema"]
                for version in spec["versions"]
                if version.get("served", True)
            }
            storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
            crd = CRD(
                spec["group"], spec["names"]["kind"], spec["names"]["plural"], versions, storage
            )
            crds[(crd.group, crd.plural)] = crd
    return crds


# ------------------------------------------------------------------ pruning, defaults


def prune_and_default(value: Any, schema: Mapping[str, Any]) -> Any:
    """Drop fields the structural schema does not know, then fill in its defaults.

    As the API server does: a default is set only inside an object that is there, and
    ``x-kubernetes-preserve-unknown-fields`` keeps unknown fields.
    """
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                for key in [key for key in value if key not in properties]:
                    del value[key]
            for key, sub in properties.items():
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    value[key] = prune_and_default(value[key], sub)
        elif isinstance(schema.get("additionalProperties"), dict):
            for key in value:
                value[key] = prune_and_default(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [prune_and_default(item, schema["items"]) for item in value]
    return value


# ------------------------------------------------------------------------ validation


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _service_ref_errors(ref: Any, where: str) -> list[str]:
    if not isinstance(ref, Mapping):
        return []
    group, kind = ref.get("group", ""), ref.get("kind", "Service")
    if group == "" and kind == "Service" and "port" not in ref:
        return [f'{where}: Invalid value: "object": Must have port for Service reference']
    return []


def _filter_errors(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, Mapping):
        return []
    errors = []
    kind = entry.get("type")
    if kind == "RequestMirror" and "requestMirror" not in entry:
        errors.append(
            f'{where}: Invalid value: "object": '
            "filter.requestMirror must be specified for RequestMirror filter.type"
        )
    if kind != "RequestMirror" and "requestMirror" in entry:
        errors.append(
            f'{where}: Invalid value: "object": '
            "filter.requestMirror must be nil if the filter.type is not RequestMirror"
        )
    mirror = entry.get("requestMirror")
    if isinstance(mirror, Mapping):
        errors += _service_ref_errors(mirror.get("backendRef"), f"{where}.requestMirror.backendRef")
        if "percent" in mirror and "fraction" in mirror:
            errors.append(
                f'{where}.requestMirror: Invalid value: "object": '
                "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"
            )
        fraction = mirror.get("fraction")
        if isinstance(fraction, Mapping):
            numerator = fraction.get("numerator", 0)
            denominator = fraction.get("denominator", 100)
            if (
                isinstance(numerator, int)
                and isinstance(denominator, int)
                and numerator > denominator
            ):
                errors.append(
                    f'{where}.requestMirror.fraction: Invalid value: "object": '
                    "numerator must be less than or equal to denominator"
                )
    return errors


def _httproute_cel(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    errors = []
    if sum(len(rule.get("matches") or []) for rule in rules if isinstance(rule, Mapping)) > 128:
        errors.append(
            'spec.rules: Invalid value: "array": While 16 rules and 64 matches per rule are '
            "allowed, the total number of matches across all rules in a route must be less "
            "than 128"
        )
    for index, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        where = f"spec.rules[{index}]"
        refs = rule.get("backendRefs") or []
        filters = rule.get("filters") or []
        if refs and any(isinstance(f, Mapping) and "requestRedirect" in f for f in filters):
            errors.append(
                f'{where}: Invalid value: "object": '
                "RequestRedirect filter must not be used together with backendRefs"
            )
        for ref_index, ref in enumerate(refs):
            errors += _service_ref_errors(ref, f"{where}.backendRefs[{ref_index}]")
            if isinstance(ref, Mapping):
                for filter_index, entry in enumerate(ref.get("filters") or []):
                    errors += _filter_errors(
                        entry, f"{where}.backendRefs[{ref_index}].filters[{filter_index}]"
                    )
        for filter_index, entry in enumerate(filters):
            errors += _filter_errors(entry, f"{where}.filters[{filter_index}]")
    return errors


# ----------------------------------------------------------------- the built-in Lease

_MICRO_TIME = {"type": "string", "format": "date-time"}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}

# coordination.k8s.io/v1 Lease as the API server's OpenAPI document describes it.
LEASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "acquireTime": _MICRO_TIME,
                "holderIdentity": {"type": "string"},
                "leaseDurationSeconds": _INT32,
                "leaseTransitions": _INT32,
                "preferredHolder": {"type": "string"},
                "renewTime": _MICRO_TIME,
                "strategy": {"type": "string"},
            },
        },
    },
}
LEASE = CRD("coordination.k8s.io", "Lease", "leases", {"v1": LEASE_SCHEMA}, "v1", builtin=True)


def _lease_checks(obj: Mapping[str, Any]) -> list[str]:
    """The API server's validation of a Lease (ValidateLeaseSpec) and of its MicroTimes.

    The real server refuses a time it cannot parse as RFC 3339 when it decodes the body
    (400); here it is a 422 like the other checks, which is enough for a client's tests.
    """
    spec = obj.get("spec") or {}
    errors = []
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errors.append(
            f"spec.leaseDurationSeconds: Invalid value: {duration}: must be greater than 0"
        )
    transitions = spec.get("leaseTransitions")
    if isinstance(transitions, int) and transitions < 0:
        errors.append(
            f"spec.leaseTransitions: Invalid value: {transitions}: "
            "must be greater than or equal to 0"
        )
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if isinstance(value, str):
            try:
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                errors.append(f'spec.{key}: Invalid value: "{value}": not an RFC 3339 time')
    return errors


# The CEL rules (x-kubernetes-validations) evaluated in Python, by kind; jsonschema skips
# CEL. Their messages are the schemas' own (a test checks each appears in the files).
# The built-in Lease's checks are the API server's code, not CEL, but run the same way.
CEL_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "HTTPRoute": _httproute_cel,
    "Lease": _lease_checks,
}
CEL_MESSAGES = (
    "Must have port for Service reference",
    "filter.requestMirror must be specified for RequestMirror filter.type",
    "filter.requestMirror must be nil if the filter.type is not RequestMirror",
    "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
    "numerator must be less than or equal to denominator",
    "While 16 rules and 64 matches per rule are allowed, the total number of matches across "
    "all rules in a route must be less than 128",
    "RequestRedirect filter must not be used together with backendRefs",
)


class Validator:
    """Checks objects against their CRD's schema: `errors(obj)` lists what is wrong."""

    def __init__(self, crds: Mapping[tuple[str, str], CRD] | None = None) -> None:
        self.crds = dict(crds or load_crds())
        self._by_kind = {(crd.group, crd.kind): crd for crd in self.crds.values()}
        self._validators: dict[tuple[str, str, str], Any] = {}
        self.checked = 0  # objects checked so far, for the tests' report

    def crd_for(self, obj: Mapping[str, Any]) -> tuple[CRD, str]:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        crd = self._by_kind.get((group, obj.get("kind")))
        if crd is None or version not in crd.schemas:
            raise KeyError(f"no CRD serves {obj.get('kind')} in {obj.get('apiVersion')}")
        return crd, version

    def _validator(self, crd: CRD, version: str) -> Any:
        key = (crd.group, crd.plural, version)
        if key not in self._validators:
            # OpenAPI v3.0 schemas are close to JSON Schema draft 4 (boolean exclusive
            # bounds); formats such as int32 are not checked, as by the API server's
            # schema validation of most formats.
            self._validators[key] = jsonschema.Draft4Validator(crd.schemas[version])
        return self._validators[key]

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        """What is wrong with `obj` as its kind and version, in the API server's words."""
        crd, version = self.crd_for(obj)
        self.checked += 1
        STATS[f"validated {crd.kind}"] += 1
        found = []
        for error in self._validator(crd, version).iter_errors(obj):
            shown = json.dumps(error.instance)
            if len(shown) > 60:
                shown = f'"{type(error.instance).__name__}"'
            found.append(f"{_path(error.absolute_path)}: Invalid value: {shown}: {error.message}")
        check = CEL_CHECKS.get(crd.kind)
        if check is not None:
            found += check(obj)
        return sorted(found)

    def prepare(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` pruned and defaulted by its schema, as stored."""
        crd, version = self.crd_for(obj)
        # apiVersion, kind and metadata are the API server's, whatever the schema lists.
        kept = {key: obj.pop(key) for key in ("apiVersion", "kind", "metadata") if key in obj}
        return {**kept, **prune_and_default(obj, crd.schemas[version])}


# ----------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else (lists) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchFailed(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 add, remove, replace and test."""
    result = copy.deepcopy(document)
    if not isinstance(operations, list):
        raise PatchFailed("a JSON patch is a list of operations")
    for operation in operations:
        op, parts = operation.get("op"), _pointer(operation.get("path", ""))
        if not parts:
            raise PatchFailed("cannot patch the whole document")
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        try:
            if op == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != operation.get("value"):
                    raise PatchFailed(f"testing value {operation.get('path')} failed")
            elif op == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif op in ("add", "replace"):
                value = copy.deepcopy(operation.get("value"))
                if isinstance(parent, list):
                    index = len(parent) if last == "-" else int(last)
                    if op == "add":
                        parent.insert(index, value)
                    else:
                        parent[index] = value
                else:
                    if op == "replace" and last not in parent:
                        raise PatchFailed(f"replace operation does not apply: {last} missing")
                    parent[last] = value
            else:
                raise PatchFailed(f"unsupported op {op!r}")
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchFailed(f"{op} {operation.get('path')}: {exc!r}") from None
    return result


# -------------------------------------------------------------------------- server


class Answer(Exception):
    """An answer to send: raised anywhere in the handling of a request."""

    def __init__(self, code: int, body: Mapping[str, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.body = body


def status(code: int, reason: str, message: str) -> Answer:
    return Answer(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any
    headers: dict[str, str]
    code: int = 0


@dataclass
class _Hook:
    callback: Callable[[FakeKubeAPI], None]
    remaining: int


@dataclass
class FakeKubeAPI:
    """The server. Use as a context manager; `url` is where it listens."""

    schemas: Iterable[Path] | None = None
    token: str | None = "canarykit-test-token"
    forbidden: Mapping[str, Iterable[str] | None] = field(default_factory=dict)
    tls: tuple[str, str] | None = None  # (certificate file, key file)
    user: str = "system:serviceaccount:deploy:canarykit"

    def __post_init__(self) -> None:
        self.crds = {**load_crds(self.schemas), (LEASE.group, LEASE.plural): LEASE}
        self.validator = Validator(self.crds)
        self.requests: list[Request] = []
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1000)
        self._lock = threading.RLock()
        self._hooks: list[_Hook] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> FakeKubeAPI:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str | None = None
    ) -> Path:
        """Write a kubeconfig for this server (context ``fake``) and return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "deployer", "user": {"token": token or self.token or "none"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "deployer", "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ store

    def _crd(self, obj: Mapping[str, Any]) -> CRD:
        return self.validator.crd_for(obj)[0]

    def _key(self, crd: CRD, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (crd.group, crd.plural, namespace, name)

    def _stamp(
        self, obj: dict[str, Any], previous: Mapping[str, Any] | None, manager: str, operation: str
    ) -> None:
        metadata = obj.setdefault("metadata", {})
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if previous is None:
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = now
            metadata["generation"] = 1
            managed: list[dict[str, Any]] = []
        else:
            old = previous["metadata"]
            for key in ("uid", "creationTimestamp"):
                metadata[key] = old[key]
            changed = obj.get("spec") != previous.get("spec")
            metadata["generation"] = old["generation"] + (1 if changed else 0)
            managed = [m for m in old.get("managedFields", []) if m["manager"] != manager]
        managed.append(
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": obj["apiVersion"],
                "time": now,
                "fieldsType": "FieldsV1",
            }
        )
        metadata["managedFields"] = managed
        metadata["resourceVersion"] = str(next(self._versions))

    def _store(
        self, obj: dict[str, Any], previous: Mapping[str, Any] | None, manager: str, operation: str
    ) -> dict[str, Any]:
        """Prune, default, validate and store `obj`; the stored copy (or raise 422)."""
        crd = self._crd(obj)
        metadata = obj["metadata"]
        obj = self.validator.prepare(obj)
        errors = self.validator.errors(obj)
        if errors:
            shown = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise status(
                422, "Invalid", f'{crd.kind}.{crd.group} "{metadata["name"]}" is invalid: {shown}'
            )
        if previous is not None and _same_content(obj, previous):
            return copy.deepcopy(dict(previous))  # a write that changes nothing keeps its version
        self._stamp(obj, previous, manager, operation)
        obj["apiVersion"] = f"{crd.group}/{crd.storage}"
        self._objects[self._key(crd, metadata["namespace"], metadata["name"])] = obj
        return copy.deepcopy(obj)

    def put(self, obj: Mapping[str, Any], *, manager: str = "kubectl") -> dict[str, Any]:
        """Create or replace an object as someone else would (validated; ValueError if invalid)."""
        with self._lock:
            obj = copy.deepcopy(dict(obj))
            crd = self._crd(obj)
            metadata = obj.setdefault("metadata", {})
            metadata.setdefault("namespace", "default")
            previous = self._objects.get(self._key(crd, metadata["namespace"], metadata["name"]))
            try:
                return self._store(obj, previous, manager, "Update")
            except Answer as answer:
                raise ValueError(answer.body["message"]) from None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object of that kind, or None."""
        with self._lock:
            for (group, plural, ns, object_name), obj in self._objects.items():
                crd = self.crds[(group, plural)]
                if crd.kind == kind and ns == namespace and object_name == name:
                    return copy.deepcopy(obj)
        return None

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Someone else deletes the object of that kind (it must exist)."""
        with self._lock:
            for key in list(self._objects):
                if self.crds[key[:2]].kind == kind and key[2:] == (namespace, name):
                    del self._objects[key]
                    return
        raise AssertionError(f"no {kind} {namespace}/{name}")

    def edit(
        self,
        kind: str,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], None],
        *,
        manager: str = "kubectl-edit",
    ) -> dict[str, Any]:
        """Someone else changes the object (`change` edits it in place)."""
        with self._lock:
            current = self.get(kind, namespace, name)
            assert current is not None, f"no {kind} {namespace}/{name}"
            change(current)
            return self.put(current, manager=manager)

    def before_writes(self, callback: Callable[[FakeKubeAPI], None], *, times: int = 1) -> None:
        """Run `callback` just before each of the next `times` write requests is handled."""
        with self._lock:
            self._hooks.append(_Hook(callback, times))

    def writes(self, manager: str | None = None) -> list[Request]:
        """The write requests received (by that field manager), in order."""
        return [
            request
            for request in self.requests
            if request.method in ("POST", "PUT", "PATCH", "DELETE")
            and (manager is None or request.query.get("fieldManager") == [manager])
        ]

    # --------------------------------------------------------------- requests

    def handle(self, request: Request) -> tuple[int, Mapping[str, Any]]:
        with self._lock:
            self.requests.append(request)
            try:
                code, body = 200, self._route(request)
                if request.method == "POST":
                    code = 201
            except Answer as answer:
                code, body = answer.code, answer.body
            request.code = code
            STATS[f"answered {request.method} {code}"] += 1
            return code, body

    def _route(self, request: Request) -> Mapping[str, Any]:
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            raise status(401, "Unauthorized", "Unauthorized")
        parts = [part for part in request.path.split("/") if part]
        if len(parts) not in (6, 7) or parts[0] != "apis" or parts[3] != "namespaces":
            raise status(404, "NotFound", "the server could not find the requested resource")
        group, version, namespace, plural = parts[1], parts[2], parts[4], parts[5]
        name = parts[6] if len(parts) == 7 else None
        crd = self.crds.get((group, plural))
        if crd is None or version not in crd.schemas:
            raise status(404, "NotFound", "the server could not find the requested resource")
        verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(request.method)
        if verb is None:
            raise status(405, "MethodNotAllowed", f"{request.method} is not supported")
        self._authorize(crd, namespace, name, verb)
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            self._run_hooks()
        if name is None:
            if request.method != "POST":
                raise status(405, "MethodNotAllowed", "only create on a collection here")
            return self._served(self._create(crd, version, namespace, request), crd, version)
        key = self._key(crd, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise status(404, "NotFound", f'{crd.resource} "{name}" not found')
        manager = (request.query.get("fieldManager") or ["unknown"])[0]
        if request.method == "GET":
            return self._served(current, crd, version)
        if request.method == "DELETE":
            del self._objects[key]
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}
        if request.method == "PUT":
            updated = self._replace(crd, version, current, request)
        else:
            updated = self._patch(crd, version, current, request)
        updated.setdefault("metadata", {})
        updated["metadata"]["name"] = name
        updated["metadata"]["namespace"] = namespace
        stored = self._store(updated, current, manager, "Update")
        return self._served(stored, crd, version)

    def _authorize(self, crd: CRD, namespace: str, name: str | None, verb: str) -> None:
        if namespace not in self.forbidden:
            return
        verbs = self.forbidden[namespace]
        if verbs is not None and verb not in set(verbs):
            return
        subject = f'{crd.resource} "{name}"' if name else crd.resource
        raise status(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource '
            f'"{crd.plural}" in API group "{crd.group}" in the namespace "{namespace}"',
        )

    def _run_hooks(self) -> None:
        for hook in list(self._hooks):
            hook.remaining -= 1
            if hook.remaining <= 0:
                self._hooks.remove(hook)
            hook.callback(self)

    def _check_body(self, crd: CRD, version: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise status(400, "BadRequest", "the body must be a JSON object")
        if body.get("apiVersion") != f"{crd.group}/{version}" or body.get("kind") != crd.kind:
            raise status(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({crd.group}/{version})",
            )
        return copy.deepcopy(body)

    def _create(self, crd: CRD, version: str, namespace: str, request: Request) -> dict[str, Any]:
        body = self._check_body(crd, version, request.body)
        metadata = body.setdefault("metadata", {})
        name = metadata.get("name")
        if not name:
            raise status(
                422,
                "Invalid",
                f'{crd.kind}.{crd.group} "" is invalid: metadata.name: Required value: '
                "name or generateName is required",
            )
        if metadata.setdefault("namespace", namespace) != namespace:
            raise status(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )
        if self._key(crd, namespace, name) in self._objects:
            raise status(409, "AlreadyExists", f'{crd.resource} "{name}" already exists')
        manager = (request.query.get("fieldManager") or ["unknown"])[0]
        for key in ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields"):
            metadata.pop(key, None)
        return self._store(body, None, manager, "Update")

    def _precondition(self, crd: CRD, current: Mapping[str, Any], wanted: Any) -> None:
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {crd.resource} "{current["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )

    def _replace(
        self, crd: CRD, version: str, current: Mapping[str, Any], request: Request
    ) -> dict[str, Any]:
        body = self._check_body(crd, version, request.body)
        metadata = body.get("metadata") or {}
        if metadata.get("name") != current["metadata"]["name"]:
            raise status(
                400,
                "BadRequest",
                f"the name of the object ({metadata.get('name')}) does not match the name on "
                f"the URL ({current['metadata']['name']})",
            )
        wanted = metadata.get("resourceVersion")
        if not wanted and crd.builtin:
            return body  # an unconditional update, as built-in kinds allow
        if not wanted:
            raise status(
                422,
                "Invalid",
                f'{crd.kind}.{crd.group} "{metadata.get("name")}" is invalid: '
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        self._precondition(crd, current, wanted)
        return body

    def _patch(
        self, crd: CRD, version: str, current: Mapping[str, Any], request: Request
    ) -> dict[str, Any]:
        served = self._served(current, crd, version)
        try:
            if request.content_type == MERGE_PATCH:
                if not isinstance(request.body, dict):
                    raise PatchFailed("a merge patch is a JSON object")
                wanted = (request.body.get("metadata") or {}).get("resourceVersion")
                self._precondition(crd, current, wanted)
                return merge_patch(served, request.body)
            if request.content_type == JSON_PATCH:
                return json_patch(served, request.body)
        except PatchFailed as exc:
            raise status(422, "Invalid", str(exc)) from None
        raise status(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE_PATCH} (this fake API server does not do server-side apply)",
        )

    @staticmethod
    def _served(obj: Mapping[str, Any], crd: CRD, version: str) -> dict[str, Any]:
        served = copy.deepcopy(dict(obj))
        served["apiVersion"] = f"{crd.group}/{version}"  # the versions' schemas are the same
        return served


def _same_content(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
        data = copy.deepcopy(dict(obj))
        data.pop("apiVersion", None)
        metadata = data.get("metadata") or {}
        for key in ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp"):
            metadata.pop(key, None)
        return data

    return strip(new) == strip(old)


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            headers = {key.lower(): value for key, value in self.headers.items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                code, answer = 400, status(400, "BadRequest", "the body is not JSON").body
            else:
                request = Request(
                    self.command, url.path, parse_qs(url.query), content_type, body, headers
                )
                code, answer = api.handle(request)
            data = json.dumps(answer).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
