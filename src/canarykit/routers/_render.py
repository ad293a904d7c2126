"""The Kubernetes objects the Gateway API and Istio routers write: pure functions, no I/O.

How this works. canarykit never edits a rule that a person wrote. Next to the one rule of
an HTTPRoute (or route of a VirtualService) that sends traffic to the stable version,
the *target*, it adds rules of its own, named ``canarykit-<canary>-...``:

- one per header route: a copy of the target whose matches also require the header,
  splitting the requests that match between the versions by the header route's percent;
- one weighted rule: a copy of the target with the same matches, splitting everything
  else by the split's canary percent, and mirroring its mirror percent to the canary.

They go just before the target. An Istio route list is first-match-wins, so they are
seen first; in Gateway API, a header rule has one more header match than the target and
wins on precedence, and the weighted rule ties with the target and wins on list order.
The target itself, every other rule, the labels and the annotations are never touched,
so removing canarykit's rules (the stable-only split) gives back the object exactly as
it was, and reading canarykit's rules gives back the split.

Weights are integers: a percent with d decimals becomes weights out of 100 x 10**d, so
10% is 90 : 10 (the seed's VirtualService), 0.5% is 995 : 5 and 33.25% is 6675 : 3325;
more than `MAX_DECIMALS` decimals are rounded to that many (never to 0% or 100%).

Gateway API header matches are exact or regular expressions; a prefix header route is
sent as the regular expression ``^<escaped prefix>.*`` in a rule named ``...-prefix-N``,
so that it reads back as a prefix.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, TypeVar

import attrs

from .._errors import ConfigError, RouterError
from .._safe import check_name
from .._split import HeaderMatch, HeaderRoute, TrafficSplit

__all__ = [
    "GATEWAY_API_VERSION",
    "ISTIO_API_VERSION",
    "MAX_DECIMALS",
    "HTTPRouteTarget",
    "VirtualServiceTarget",
    "destination_rule_base",
    "destination_rule_missing",
    "destination_rule_subsets",
    "dns_label",
    "dns_service",
    "dns_subdomain",
    "httproute_base",
    "httproute_read",
    "httproute_render",
    "label_key",
    "percent_of",
    "prefix_regex",
    "regex_prefix",
    "scaled_percent",
    "split_weights",
    "virtualservice_base",
    "virtualservice_read",
    "virtualservice_render",
]

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ISTIO_API_VERSION = "networking.istio.io/v1"

_T = TypeVar("_T")

MAX_DECIMALS = 4
"""Percents keep up to this many decimals in integer weights (0.0001% of traffic)."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# Characters with a meaning in RE2 (Envoy's regex engine) outside a character class.
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


# ------------------------------------------------------------------------------ checks


def dns_label(field: str, value: Any) -> str:
    """A Kubernetes DNS-1123 label (a namespace, a subset): at most 63 of a-z, 0-9 and '-'."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ConfigError(
            field, value, "must be a DNS-1123 label: 1-63 of a-z, 0-9 and '-', alphanumeric ends"
        )
    return value


def dns_service(field: str, value: Any) -> str:
    """A Service name (DNS-1035 label): like a DNS label, starting with a letter."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS_1035.fullmatch(value):
        raise ConfigError(
            field, value, "must be a Service name: 1-63 of a-z, 0-9 and '-', starting with a-z"
        )
    return value


def dns_subdomain(field: str, value: Any) -> str:
    """An object name or host (DNS-1123 subdomain): dot-separated labels, at most 253 long."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ConfigError(
            field, value, "must be a DNS-1123 subdomain: dot-separated labels of a-z, 0-9, '-'"
        )
    return value


def label_key(field: str, value: Any) -> str:
    """A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63."""
    if isinstance(value, str):
        prefix, slash, name = value.rpartition("/")
        prefix_ok = not slash or (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix))
        if prefix_ok and len(name) <= 63 and _LABEL_NAME.fullmatch(name):
            return value
    raise ConfigError(field, value, "must be a label key such as 'version' or 'example.com/track'")


def _optional(check: Callable[[str, Any], str]) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            check(attribute.name, value)

    return validate


def _checked(check: Callable[[str, Any], str]) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, attribute: Any, value: Any) -> None:
        check(attribute.name, value)

    return validate


def _port(_inst: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(attribute.name, value, "must be a port number in [1, 65535]")


# ----------------------------------------------------------------------------- weights


def scaled_percent(percent: float) -> tuple[int, int]:
    """`percent` as ``(part, whole)`` with whole = 100 x 10**d for the fewest decimals d.

    >>> scaled_percent(10), scaled_percent(0.5), scaled_percent(33.25), scaled_percent(100)
    ((10, 100), (5, 1000), (3325, 10000), (100, 100))
    """
    exact = Decimal(repr(float(percent))).normalize()
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite percent, checked by TrafficSplit
    decimals = min(max(0, -exponent), MAX_DECIMALS)
    whole = 100 * 10**decimals
    part = int((exact * 10**decimals).to_integral_value(rounding=ROUND_HALF_EVEN))
    # Rounding must not turn a canary that gets traffic into one that gets none, or back.
    if exact > 0:
        part = max(part, 1)
    if exact < 100:
        part = min(part, whole - 1)
    return part, whole


def split_weights(percent: float) -> tuple[int, int]:
    """The ``(stable, canary)`` integer weights for a canary `percent`.

    >>> split_weights(10), split_weights(0.5), split_weights(0), split_weights(100)
    ((90, 10), (995, 5), (100, 0), (0, 100))
    """
    part, whole = scaled_percent(percent)
    return whole - part, part


def percent_of(part: int, whole: int) -> float:
    """``100 * part / whole`` as the float nearest the exact value (so 5/1000 is 0.5)."""
    return float(Fraction(100 * part, whole))


def prefix_regex(prefix: str) -> str:
    r"""The RE2 regular expression for "starts with `prefix`".

    >>> prefix_regex("Mozilla/5.0 (X11")
    '^Mozilla/5\\.0 \\(X11.*'
    """
    return "^" + "".join("\\" + char if char in _RE2_SPECIAL else char for char in prefix) + ".*"


def regex_prefix(regex: str) -> str | None:
    """The prefix that `prefix_regex` turned into `regex`, or None if it is not one of those."""
    if not (regex.startswith("^") and regex.endswith(".*")):
        return None
    body, chars, escaped = regex[1:-2], [], False
    for char in body:
        if escaped:
            if char not in _RE2_SPECIAL:
                return None
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _RE2_SPECIAL:
            return None
        else:
            chars.append(char)
    return None if escaped or not chars else "".join(chars)


def _weight(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RouterError(f"found a weight of {value!r}, not an integer")
    return value


def _or_router_error(where: str, build: Callable[[], _T]) -> _T:
    """`build()`, with a `ConfigError` (a value no split can hold) turned into a `RouterError`."""
    try:
        return build()
    except ConfigError as exc:
        raise RouterError(f"{where} holds a split canarykit cannot represent: {exc}") from None


# ---------------------------------------------------------------------------- targets


@attrs.frozen(kw_only=True)
class HTTPRouteTarget:
    """Which HTTPRoute, which rule in it and which Services the Gateway API router splits."""

    route: str = attrs.field(validator=_checked(dns_subdomain))
    namespace: str = attrs.field(validator=_checked(dns_label))
    stable_service: str = attrs.field(validator=_checked(dns_service))
    canary_service: str = attrs.field(validator=_checked(dns_service))
    port: int | None = attrs.field(default=None, validator=_port)
    rule: str | None = attrs.field(default=None, validator=_optional(dns_subdomain))

    def __attrs_post_init__(self) -> None:
        if self.stable_service == self.canary_service:
            raise ConfigError(
                "canary_service", self.canary_service, "must differ from stable_service"
            )

    @property
    def prefix(self) -> str:
        """The start of the names of the rules canarykit owns in the route."""
        return f"canarykit-{self.canary_service}-"

    @property
    def what(self) -> str:
        """The route, for messages."""
        return f"HTTPRoute {self.namespace}/{self.route}"


@attrs.frozen(kw_only=True)
class VirtualServiceTarget:
    """Which VirtualService, which route in it, and which subsets the Istio router splits."""

    virtual_service: str = attrs.field(validator=_checked(dns_subdomain))
    namespace: str = attrs.field(validator=_checked(dns_label))
    host: str = attrs.field(validator=_checked(dns_subdomain))
    stable_subset: str = attrs.field(validator=_checked(dns_label))
    canary_subset: str = attrs.field(validator=_checked(dns_label))
    route: str | None = attrs.field(default=None, validator=_optional(check_name))
    destination_rule: str | None = attrs.field(default=None, validator=_optional(dns_subdomain))
    subset_label: str = attrs.field(default="version", validator=_checked(label_key))

    def __attrs_post_init__(self) -> None:
        if self.stable_subset == self.canary_subset:
            raise ConfigError("canary_subset", self.canary_subset, "must differ from stable_subset")

    @property
    def prefix(self) -> str:
        """The start of the names of the routes canarykit owns in the VirtualService."""
        return f"canarykit-{self.canary_subset}-"

    @property
    def destination_rule_name(self) -> str:
        """The DestinationRule holding the subsets: as given, or the host's first label."""
        return self.destination_rule or self.host.split(".")[0]

    @property
    def what(self) -> str:
        """The VirtualService, for messages."""
        return f"VirtualService {self.namespace}/{self.virtual_service}"


def _is_managed(prefix: str, entry: Any) -> bool:
    return isinstance(entry, Mapping) and str(entry.get("name", "")).startswith(prefix)


def _index_of(name: str, prefix: str, kinds: Iterable[str]) -> tuple[str, int, str] | None:
    """``(kind, N, rest)`` for a name ``<prefix><kind>-<N>[-<rest>]``, else None."""
    for kind in kinds:
        found = re.fullmatch(rf"{re.escape(prefix)}{kind}-(\d+)(?:-(.+))?", name)
        if found:
            return kind, int(found.group(1)), found.group(2) or ""
    return None


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RouterError(f"{where} is not a list")
    return value


# ------------------------------------------------------------------------ Gateway API


def _is_service_ref(ref: Any, service: str, namespace: str) -> bool:
    return (
        isinstance(ref, Mapping)
        and ref.get("name") == service
        and ref.get("group", "") in ("", "core")
        and ref.get("kind", "Service") == "Service"
        and ref.get("namespace", namespace) == namespace
    )


def httproute_base(
    target: HTTPRouteTarget, *, gateways: Sequence[str] = (), hostnames: Sequence[str] = ()
) -> dict[str, Any]:
    """A new HTTPRoute sending everything to the stable Service (needs `target.port`)."""
    if target.port is None:
        raise ConfigError("port", None, "is needed to render an HTTPRoute from nothing")
    spec: dict[str, Any] = {}
    if gateways:
        spec["parentRefs"] = [{"name": dns_subdomain("gateway", name)} for name in gateways]
    if hostnames:
        spec["hostnames"] = [dns_subdomain("hostname", name) for name in hostnames]
    rule: dict[str, Any] = {}
    if target.rule is not None:
        rule["name"] = target.rule
    rule["backendRefs"] = [{"name": target.stable_service, "port": target.port}]
    spec["rules"] = [rule]
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": target.route, "namespace": target.namespace},
        "spec": spec,
    }


def _gateway_target(target: HTTPRouteTarget, rules: list[Any]) -> int:
    if target.rule is not None:
        named = [i for i, rule in enumerate(rules) if rule.get("name") == target.rule]
        if not named:
            raise RouterError(f"{target.what} has no rule named {target.rule!r}")
        return named[0]
    found = [
        index
        for index, rule in enumerate(rules)
        if any(
            _is_service_ref(ref, target.stable_service, target.namespace)
            for ref in _list(rule.get("backendRefs"), f"{target.what} rule {index} backendRefs")
        )
    ]
    if not found:
        raise RouterError(
            f"{target.what} has no rule sending to Service {target.stable_service!r}: "
            "canarykit splits the rule that does"
        )
    if len(found) > 1:
        raise RouterError(
            f"{target.what} has {len(found)} rules sending to Service "
            f"{target.stable_service!r} (rules {', '.join(map(str, found))}); name the one "
            "to split (rule=...)"
        )
    return found[0]


def _gateway_refs(target: HTTPRouteTarget, rule: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The target rule's stable backendRef and a canary backendRef (its own, or a copy)."""
    stable = canary = None
    for ref in _list(rule.get("backendRefs"), f"{target.what} target rule backendRefs"):
        if _is_service_ref(ref, target.stable_service, target.namespace):
            stable = stable or ref
        elif _is_service_ref(ref, target.canary_service, target.namespace):
            canary = canary or ref
        else:
            raise RouterError(
                f"{target.what}: the rule to split also sends to {ref.get('name')!r}; "
                f"canarykit splits a rule between Services {target.stable_service!r} and "
                f"{target.canary_service!r} only"
            )
    if stable is None:
        raise RouterError(f"{target.what}: the rule to split has no backendRef to the stable one")
    stable_ref = {key: copy.deepcopy(value) for key, value in stable.items() if key != "weight"}
    if canary is None:
        canary_ref = copy.deepcopy(stable_ref)
        canary_ref["name"] = target.canary_service
    else:
        canary_ref = {key: copy.deepcopy(value) for key, value in canary.items() if key != "weight"}
    if target.port is not None:
        canary_ref["port"] = target.port
    return stable_ref, canary_ref


def _gateway_header(route: HeaderRoute) -> tuple[str, dict[str, Any]]:
    if route.match is HeaderMatch.EXACT:
        return "header", {"name": route.header, "type": "Exact", "value": route.value}
    if route.match is HeaderMatch.REGEX:
        return "header", {"name": route.header, "type": "RegularExpression", "value": route.value}
    return "prefix", {
        "name": route.header,
        "type": "RegularExpression",
        "value": prefix_regex(route.value),
    }


def _gateway_matches(
    target: HTTPRouteTarget, base: Mapping[str, Any], header: dict[str, Any]
) -> list[Any]:
    matches = _list(base.get("matches"), f"{target.what} target rule matches") or [{}]
    combined = []
    for match in matches:
        headers = list(match.get("headers") or [])
        if any(str(h.get("name", "")).lower() == header["name"].lower() for h in headers):
            raise RouterError(
                f"{target.what}: the rule to split already matches header {header['name']!r}, "
                "so a header route on it cannot be added"
            )
        combined.append({**copy.deepcopy(match), "headers": [*headers, header]})
    return combined


def _gateway_mirror(percent: float, canary_ref: Mapping[str, Any]) -> dict[str, Any]:
    backend = {
        key: copy.deepcopy(canary_ref[key])
        for key in ("group", "kind", "name", "namespace", "port")
        if key in canary_ref
    }
    mirror: dict[str, Any] = {"backendRef": backend}
    if percent < 100:  # no percent at all mirrors everything, on every Gateway API release
        part, whole = scaled_percent(percent)
        if whole == 100:
            mirror["percent"] = part
        else:
            mirror["fraction"] = {"numerator": part, "denominator": whole}
    return {"type": "RequestMirror", "requestMirror": mirror}


def _gateway_rule(
    name: str,
    base: Mapping[str, Any],
    refs: tuple[dict[str, Any], ...],
    percent: float,
    matches: list[Any] | None = None,
) -> dict[str, Any]:
    stable_weight, canary_weight = split_weights(percent)
    stable_ref, canary_ref = refs
    rule: dict[str, Any] = {"name": name}
    if matches is not None:
        rule["matches"] = matches
    elif "matches" in base:
        rule["matches"] = copy.deepcopy(base["matches"])
    for key, value in base.items():
        if key not in ("name", "matches", "backendRefs"):
            rule[key] = copy.deepcopy(value)
    rule["backendRefs"] = [
        {**copy.deepcopy(stable_ref), "weight": stable_weight},
        {**copy.deepcopy(canary_ref), "weight": canary_weight},
    ]
    return rule


def _gateway_managed(
    target: HTTPRouteTarget, split: TrafficSplit, base: Mapping[str, Any]
) -> list[dict[str, Any]]:
    refs = _gateway_refs(target, base)
    rules = []
    for index, route in enumerate(split.header_routes):
        kind, header = _gateway_header(route)
        matches = _gateway_matches(target, base, header)
        name = f"{target.prefix}{kind}-{index}"
        rules.append(_gateway_rule(name, base, refs, route.percent, matches))
    if split.canary_percent > 0 or split.mirror_percent > 0:
        rule = _gateway_rule(f"{target.prefix}weights", base, refs, split.canary_percent)
        if split.mirror_percent > 0:
            rule["filters"] = [
                *rule.get("filters", []),
                _gateway_mirror(split.mirror_percent, refs[1]),
            ]
        rules.append(rule)
    return rules


def httproute_render(
    target: HTTPRouteTarget, split: TrafficSplit, current: Mapping[str, Any]
) -> dict[str, Any]:
    """`current` (an HTTPRoute) with canarykit's rules replaced by those for `split`.

    Everything else is copied unchanged; for the stable-only split canarykit's rules are
    simply removed. Raises `RouterError` if the route has no rule to split.
    """
    route = copy.deepcopy(dict(current))
    spec = route.setdefault("spec", {})
    rules = _list(spec.get("rules"), f"{target.what} spec.rules")
    kept = [rule for rule in rules if not _is_managed(target.prefix, rule)]
    if not split.is_stable_only:
        index = _gateway_target(target, kept)
        kept[index:index] = _gateway_managed(target, split, kept[index])
    if kept != rules:
        spec["rules"] = kept
    return route


def _gateway_split(target: HTTPRouteTarget, rule: Mapping[str, Any]) -> float:
    stable = canary = 0
    for ref in _list(rule.get("backendRefs"), f"{target.what} rule {rule.get('name')}"):
        weight = _weight(ref.get("weight"), 1)
        if _is_service_ref(ref, target.canary_service, target.namespace):
            canary += weight
        elif _is_service_ref(ref, target.stable_service, target.namespace):
            stable += weight
        else:
            raise RouterError(
                f"{target.what} rule {rule.get('name')!r} sends to {ref.get('name')!r}, "
                "neither the stable nor the canary Service"
            )
    if stable + canary == 0:
        raise RouterError(f"{target.what} rule {rule.get('name')!r} has no weight on either")
    return percent_of(canary, stable + canary)


def _gateway_mirror_percent(target: HTTPRouteTarget, rule: Mapping[str, Any]) -> float:
    percent = 0.0
    for entry in _list(rule.get("filters"), f"{target.what} rule {rule.get('name')} filters"):
        mirror = entry.get("requestMirror") if entry.get("type") == "RequestMirror" else None
        if not mirror or not _is_service_ref(
            mirror.get("backendRef"), target.canary_service, target.namespace
        ):
            continue
        if "fraction" in mirror:
            fraction = mirror["fraction"]
            denominator = _weight(fraction.get("denominator"), 100)
            percent = percent_of(_weight(fraction.get("numerator"), 0), denominator)
        elif "percent" in mirror:
            percent = float(_weight(mirror["percent"], 100))
        else:
            percent = 100.0
    return percent


def _gateway_header_route(
    target: HTTPRouteTarget, rule: Mapping[str, Any], kind: str, percent: float
) -> HeaderRoute:
    name = rule.get("name")
    matches = _list(rule.get("matches"), f"{target.what} rule {name} matches")
    headers = _list(matches[0].get("headers"), f"{target.what} rule {name}") if matches else []
    if not headers:
        raise RouterError(f"{target.what} rule {name!r} has lost its header match")
    header = headers[-1]  # canarykit appends its header to the target's own matches
    value = str(header.get("value", ""))
    match = "regex" if header.get("type") == "RegularExpression" else "exact"
    if kind == "prefix" and match == "regex" and (prefix := regex_prefix(value)) is not None:
        match, value = "prefix", prefix
    return HeaderRoute(header=header.get("name"), value=value, match=match, percent=percent)


def httproute_read(target: HTTPRouteTarget, route: Mapping[str, Any]) -> TrafficSplit:
    """The split that canarykit's rules in `route` put in force (stable-only if none)."""
    spec = route.get("spec") or {}
    canary = mirror = 0.0
    headers: list[tuple[int, HeaderRoute]] = []
    for rule in _list(spec.get("rules"), f"{target.what} spec.rules"):
        if not _is_managed(target.prefix, rule):
            continue
        name = rule["name"]
        if name == f"{target.prefix}weights":
            canary = _gateway_split(target, rule)
            mirror = _gateway_mirror_percent(target, rule)
            continue
        parsed = _index_of(name, target.prefix, ("header", "prefix"))
        if parsed is None:
            raise RouterError(f"{target.what} has a rule {name!r} canarykit did not write")
        kind, index, _ = parsed
        percent = _gateway_split(target, rule)
        header = _or_router_error(
            f"{target.what} rule {name!r}",
            lambda: _gateway_header_route(target, rule, kind, percent),  # noqa: B023
        )
        headers.append((index, header))
    return _or_router_error(
        target.what,
        lambda: TrafficSplit(
            canary_percent=canary,
            header_routes=[route for _, route in sorted(headers, key=lambda item: item[0])],
            mirror_percent=mirror,
        ),
    )


# ------------------------------------------------------------------------------ Istio


def _destination(target: VirtualServiceTarget, subset: str) -> dict[str, Any]:
    return {"host": target.host, "subset": subset}


def _is_destination(entry: Any, target: VirtualServiceTarget, subset: str) -> bool:
    if not isinstance(entry, Mapping):
        return False
    destination = entry.get("destination") or {}
    return destination.get("host") == target.host and destination.get("subset") == subset


def virtualservice_base(
    target: VirtualServiceTarget, *, gateways: Sequence[str] = ()
) -> dict[str, Any]:
    """A new VirtualService sending everything for the host to the stable subset."""
    spec: dict[str, Any] = {"hosts": [target.host]}
    if gateways:
        spec["gateways"] = [check_name("gateway", name) for name in gateways]
    route: dict[str, Any] = {}
    if target.route is not None:
        route["name"] = target.route
    route["route"] = [{"destination": _destination(target, target.stable_subset), "weight": 100}]
    spec["http"] = [route]
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": target.virtual_service, "namespace": target.namespace},
        "spec": spec,
    }


def _istio_target(target: VirtualServiceTarget, routes: list[Any]) -> int:
    if target.route is not None:
        named = [i for i, route in enumerate(routes) if route.get("name") == target.route]
        if not named:
            raise RouterError(f"{target.what} has no http route named {target.route!r}")
        return named[0]
    found = [
        index
        for index, route in enumerate(routes)
        if any(
            _is_destination(entry, target, target.stable_subset)
            for entry in _list(route.get("route"), f"{target.what} http[{index}].route")
        )
    ]
    if not found:
        raise RouterError(
            f"{target.what} has no http route to host {target.host!r} subset "
            f"{target.stable_subset!r}: canarykit splits the route that has one"
        )
    if len(found) > 1:
        raise RouterError(
            f"{target.what} has {len(found)} http routes to subset {target.stable_subset!r} "
            f"(http[{'], http['.join(map(str, found))}]); name the one to split (route=...)"
        )
    return found[0]


def _istio_entries(
    target: VirtualServiceTarget, base: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    stable = canary = None
    for entry in _list(base.get("route"), f"{target.what} route to split"):
        if _is_destination(entry, target, target.stable_subset):
            stable = stable or entry
        elif _is_destination(entry, target, target.canary_subset):
            canary = canary or entry
        else:
            destination = entry.get("destination") or {}
            raise RouterError(
                f"{target.what}: the route to split also sends to host "
                f"{destination.get('host')!r} subset {destination.get('subset')!r}; canarykit "
                f"splits a route between subsets {target.stable_subset!r} and "
                f"{target.canary_subset!r} only"
            )
    if stable is None:
        raise RouterError(f"{target.what}: the route to split has no stable destination")
    stable_entry = {key: copy.deepcopy(value) for key, value in stable.items() if key != "weight"}
    source = stable if canary is None else canary
    canary_entry = {key: copy.deepcopy(value) for key, value in source.items() if key != "weight"}
    canary_entry["destination"] = {
        **copy.deepcopy(stable_entry["destination"]),
        "subset": target.canary_subset,
    }
    return stable_entry, canary_entry


def _istio_header(route: HeaderRoute) -> tuple[str, dict[str, str]]:
    # Istio wants header names in lower case (HTTP/2 sends them so, and Envoy lower-cases).
    return route.header.lower(), {route.match.value: route.value}


def _istio_matches(
    target: VirtualServiceTarget, base: Mapping[str, Any], name: str, rule: dict[str, str]
) -> list[Any]:
    matches = _list(base.get("match"), f"{target.what} route to split match") or [{}]
    combined = []
    for match in matches:
        headers = dict(match.get("headers") or {})
        if name in {key.lower() for key in headers}:
            raise RouterError(
                f"{target.what}: the route to split already matches header {name!r}, "
                "so a header route on it cannot be added"
            )
        headers[name] = rule
        combined.append({**copy.deepcopy(match), "headers": headers})
    return combined


def _istio_route(
    name: str,
    base: Mapping[str, Any],
    entries: tuple[dict[str, Any], dict[str, Any]],
    percent: float,
    match: list[Any] | None = None,
) -> dict[str, Any]:
    stable_weight, canary_weight = split_weights(percent)
    stable_entry, canary_entry = entries
    route: dict[str, Any] = {"name": name}
    if match is not None:
        route["match"] = match
    elif "match" in base:
        route["match"] = copy.deepcopy(base["match"])
    # Canary first, as in the seed's VirtualService.
    route["route"] = [
        {**copy.deepcopy(canary_entry), "weight": canary_weight},
        {**copy.deepcopy(stable_entry), "weight": stable_weight},
    ]
    for key, value in base.items():
        if key not in ("name", "match", "route"):
            route[key] = copy.deepcopy(value)
    return route


def _istio_managed(
    target: VirtualServiceTarget, split: TrafficSplit, base: Mapping[str, Any]
) -> list[dict[str, Any]]:
    entries = _istio_entries(target, base)
    routes = []
    for index, header_route in enumerate(split.header_routes):
        header, rule = _istio_header(header_route)
        match = _istio_matches(target, base, header, rule)
        # The header's name is in the route's name: Kubernetes does not keep the order of
        # a map's keys, so the last key of `headers` need not be canarykit's.
        name = f"{target.prefix}header-{index}-{header}"
        routes.append(_istio_route(name, base, entries, header_route.percent, match))
    if split.canary_percent > 0 or split.mirror_percent > 0:
        route = _istio_route(f"{target.prefix}weights", base, entries, split.canary_percent)
        if split.mirror_percent > 0:
            for key in ("mirrors", "mirror_percent", "mirrorPercent"):
                route.pop(key, None)
            route["mirror"] = copy.deepcopy(entries[1]["destination"])
            route["mirrorPercentage"] = {"value": split.mirror_percent}
        routes.append(route)
    return routes


def virtualservice_render(
    target: VirtualServiceTarget, split: TrafficSplit, current: Mapping[str, Any]
) -> dict[str, Any]:
    """`current` (a VirtualService) with canarykit's routes replaced by those for `split`.

    Everything else is copied unchanged; for the stable-only split canarykit's routes are
    simply removed. Raises `RouterError` if the VirtualService has no route to split.
    """
    service = copy.deepcopy(dict(current))
    spec = service.setdefault("spec", {})
    routes = _list(spec.get("http"), f"{target.what} spec.http")
    kept = [route for route in routes if not _is_managed(target.prefix, route)]
    if not split.is_stable_only:
        index = _istio_target(target, kept)
        kept[index:index] = _istio_managed(target, split, kept[index])
    if kept != routes:
        spec["http"] = kept
    return service


def _istio_percent(target: VirtualServiceTarget, route: Mapping[str, Any]) -> float:
    stable = canary = 0
    name = route.get("name")
    entries = _list(route.get("route"), f"{target.what} route {name}")
    for entry in entries:
        # Istio: a lone destination takes everything, whatever its weight says.
        weight = _weight(entry.get("weight"), 100 if len(entries) == 1 else 0)
        if _is_destination(entry, target, target.canary_subset):
            canary += weight
        elif _is_destination(entry, target, target.stable_subset):
            stable += weight
        else:
            raise RouterError(
                f"{target.what} route {name!r} sends to a destination that is neither "
                "the stable nor the canary subset"
            )
    if stable + canary == 0:
        raise RouterError(f"{target.what} route {name!r} has no weight on either subset")
    return percent_of(canary, stable + canary)


def _istio_mirror_percent(target: VirtualServiceTarget, route: Mapping[str, Any]) -> float:
    mirror = route.get("mirror")
    if not isinstance(mirror, Mapping):
        return 0.0
    if mirror.get("host") != target.host or mirror.get("subset") != target.canary_subset:
        return 0.0
    percentage = route.get("mirrorPercentage")
    if not isinstance(percentage, Mapping):
        return 100.0  # Istio mirrors everything when no percentage is given
    value = percentage.get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RouterError(f"{target.what} route {route.get('name')!r}: mirrorPercentage {value!r}")
    return float(value)


def _istio_header_route(
    target: VirtualServiceTarget, route: Mapping[str, Any], header: str, percent: float
) -> HeaderRoute:
    name = route.get("name")
    matches = _list(route.get("match"), f"{target.what} route {name} match")
    headers = (matches[0].get("headers") or {}) if matches else {}
    rule = headers.get(header)
    if not isinstance(rule, Mapping) or len(rule) != 1:
        raise RouterError(f"{target.what} route {name!r} has lost its match on header {header!r}")
    ((match, value),) = rule.items()
    return HeaderRoute(header=header, value=value, match=match, percent=percent)


def virtualservice_read(target: VirtualServiceTarget, service: Mapping[str, Any]) -> TrafficSplit:
    """The split that canarykit's routes in `service` put in force (stable-only if none)."""
    spec = service.get("spec") or {}
    canary = mirror = 0.0
    headers: list[tuple[int, HeaderRoute]] = []
    for route in _list(spec.get("http"), f"{target.what} spec.http"):
        if not _is_managed(target.prefix, route):
            continue
        name = route["name"]
        if name == f"{target.prefix}weights":
            canary = _istio_percent(target, route)
            mirror = _istio_mirror_percent(target, route)
            continue
        parsed = _index_of(name, target.prefix, ("header",))
        if parsed is None or not parsed[2]:
            raise RouterError(f"{target.what} has a route {name!r} canarykit did not write")
        _, index, header = parsed
        percent = _istio_percent(target, route)
        found = _or_router_error(
            f"{target.what} route {name!r}",
            lambda: _istio_header_route(target, route, header, percent),  # noqa: B023
        )
        headers.append((index, found))
    return _or_router_error(
        target.what,
        lambda: TrafficSplit(
            canary_percent=canary,
            header_routes=[route for _, route in sorted(headers, key=lambda item: item[0])],
            mirror_percent=mirror,
        ),
    )


def _subset(target: VirtualServiceTarget, name: str) -> dict[str, Any]:
    return {"name": name, "labels": {target.subset_label: name}}


def destination_rule_base(target: VirtualServiceTarget) -> dict[str, Any]:
    """A new DestinationRule with the stable and canary subsets (pods labelled by subset)."""
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": {"name": target.destination_rule_name, "namespace": target.namespace},
        "spec": {
            "host": target.host,
            "subsets": [
                _subset(target, target.stable_subset),
                _subset(target, target.canary_subset),
            ],
        },
    }


def destination_rule_missing(
    target: VirtualServiceTarget, rule: Mapping[str, Any]
) -> tuple[str, ...]:
    """The stable and canary subsets that the DestinationRule `rule` lacks.

    Raises `RouterError` if the rule is for another host (compared by the first label, so
    ``app`` and ``app.shop.svc.cluster.local`` are the same Service).
    """
    spec = rule.get("spec") or {}
    host = str(spec.get("host", ""))
    if host.split(".")[0] != target.host.split(".")[0]:
        raise RouterError(
            f"DestinationRule {target.namespace}/{target.destination_rule_name} is for host "
            f"{host!r}, not {target.host!r}"
        )
    names = {subset.get("name") for subset in _list(spec.get("subsets"), "spec.subsets")}
    return tuple(name for name in (target.stable_subset, target.canary_subset) if name not in names)


def destination_rule_subsets(
    target: VirtualServiceTarget, rule: Mapping[str, Any], missing: Sequence[str]
) -> list[dict[str, Any]]:
    """The DestinationRule's subsets with the `missing` ones added after them."""
    subsets = copy.deepcopy(_list((rule.get("spec") or {}).get("subsets"), "spec.subsets"))
    return [*subsets, *(_subset(target, name) for name in missing)]
