"""The HTTPRoute and VirtualService objects canarykit renders: valid, readable back, reversible.

Every object the Kubernetes routers can produce for a kind of step (weights from 0.5%
to 100%, header routes of every match type, mirroring by percent and by fraction, and
all of them at once), over a new route and over a busy live one, is validated against
the published CRD schemas (tests/data/schemas) with jsonschema and the CEL rules that
bear on it; read back to the split it came from; and, with canarykit's rules removed,
gives back the route it started from.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it; a router's helpers.

from __future__ import annotations

import argparse
import copy
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from canarykit import ConfigError, HeaderRoute, RouterError, TrafficSplit
from canarykit._cli._render import add_render_command, run_render
from canarykit.routers import GatewayAPIRouter, IstioRouter, KubernetesConnection
from canarykit.routers._render import (
    HTTPRouteTarget,
    VirtualServiceTarget,
    destination_rule_base,
    destination_rule_missing,
    destination_rule_subsets,
    httproute_base,
    httproute_read,
    httproute_render,
    percent_of,
    prefix_regex,
    regex_prefix,
    scaled_percent,
    split_weights,
    virtualservice_base,
    virtualservice_read,
    virtualservice_render,
)
from helpers.k8s_fake_apiserver import CEL_MESSAGES, SCHEMAS, Validator

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
VALIDATOR = Validator()

WEIGHTS = [0.5, 1, 2, 5, 10, 12.5, 20, 25, 33.3, 50, 75, 90, 99.5, 100]
CHROME = HeaderRoute(header="user-agent", value=".*Chrome.*", match="regex", percent=10)
BETA = HeaderRoute(header="X-Canary", value="always", match="exact")
MOZILLA = HeaderRoute(header="User-Agent", value="Mozilla/5.0 (X11", match="prefix", percent=25)


def variants(weight: float) -> dict[str, TrafficSplit]:
    """Each kind of step at `weight` percent."""
    return {
        "weights": TrafficSplit(canary_percent=weight),
        "header-exact": TrafficSplit(header_routes=[BETA]),
        "header-regex-seed": TrafficSplit(header_routes=[CHROME]),
        "header-prefix": TrafficSplit(canary_percent=weight, header_routes=[MOZILLA]),
        "headers-with-weights": TrafficSplit(
            canary_percent=weight,
            header_routes=[
                BETA,
                HeaderRoute(header="user-agent", value=".*Chrome.*", match="regex", percent=weight),
            ],
        ),
        "mirror": TrafficSplit(mirror_percent=weight),
        "mirror-with-weights": TrafficSplit(canary_percent=weight, mirror_percent=weight / 2),
        "everything": TrafficSplit(
            canary_percent=weight, header_routes=[CHROME, BETA, MOZILLA], mirror_percent=weight
        ),
    }


VARIANTS = sorted(variants(1))
CASES = [(weight, variant) for weight in WEIGHTS for variant in VARIANTS]

GATEWAY = HTTPRouteTarget(
    route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2", port=8080
)
ISTIO = VirtualServiceTarget(
    virtual_service="app", namespace="default", host="app", stable_subset="v1", canary_subset="v2"
)

# A route as people write them: other rules before and after the one to split, matches,
# filters, timeouts, labels and annotations canarykit must leave alone.
LIVE_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {
        "name": "shop",
        "namespace": "prod",
        "labels": {"team": "payments"},
        "annotations": {"owner": "alice", "note": "do not touch"},
        "resourceVersion": "41",
    },
    "spec": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["shop.example.com"],
        "rules": [
            {
                "name": "admin",
                "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "backendRefs": [{"name": "admin", "port": 80}],
            },
            {
                "name": "main",
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/"}},
                    {"path": {"type": "Exact", "value": "/checkout"}, "method": "POST"},
                ],
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-env", "value": "prod"}]},
                    }
                ],
                "timeouts": {"request": "10s"},
                "backendRefs": [{"name": "shop-v1", "port": 8080, "weight": 1}],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                "backendRefs": [{"name": "cdn", "port": 80}],
            },
        ],
    },
}

LIVE_SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {
        "name": "app",
        "namespace": "default",
        "labels": {"team": "payments"},
        "annotations": {"owner": "alice"},
    },
    "spec": {
        "hosts": ["app", "app.example.com"],
        "gateways": ["mesh", "istio-system/public"],
        "http": [
            {
                "name": "admin",
                "match": [{"uri": {"prefix": "/admin"}}],
                "route": [{"destination": {"host": "admin"}}],
            },
            {
                "name": "main",
                "match": [{"uri": {"prefix": "/"}}, {"headers": {"x-legacy": {"exact": "1"}}}],
                "timeout": "10s",
                "retries": {"attempts": 3, "perTryTimeout": "2s"},
                "route": [
                    {"destination": {"host": "app", "subset": "v1", "port": {"number": 8080}}}
                ],
            },
        ],
    },
}


def valid(obj: dict[str, Any]) -> dict[str, Any]:
    errors = VALIDATOR.errors(obj)
    assert errors == [], f"{obj['kind']} fails the CRD schema:\n" + "\n".join(errors)
    return obj


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the API server would keep it: pruned and defaulted by its schema."""
    return VALIDATOR.prepare(copy.deepcopy(obj))


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [entry.get("name", "") for entry in entries]


# ------------------------------------------------------------------ every kind of step


@pytest.mark.parametrize(("weight", "variant"), CASES)
@pytest.mark.parametrize("base", ["new", "live"])
def test_httproute_for_every_step_is_valid_reads_back_and_reverts(
    weight: float, variant: str, base: str
) -> None:
    split = variants(weight)[variant]
    start = httproute_base(GATEWAY) if base == "new" else copy.deepcopy(LIVE_ROUTE)
    route = valid(httproute_render(GATEWAY, split, start))

    assert httproute_read(GATEWAY, route) == split
    # The API server adds the schema's defaults; the split reads the same from that.
    assert httproute_read(GATEWAY, valid(stored(route))) == split
    rules = route["spec"]["rules"]
    managed = [rule for rule in rules if rule.get("name", "").startswith("canarykit-shop-v2-")]
    assert len(set(names(rules))) == len(rules)  # rule names are unique in a route
    assert [rule for rule in rules if rule not in managed] == start["spec"]["rules"]
    # canarykit's rules sit just before the rule they copy.
    first = rules.index(managed[0]) if managed else 0
    assert rules[first : first + len(managed)] == managed
    after = rules[first + len(managed)]  # the rule they copy comes right after them
    assert [ref["name"] for ref in after["backendRefs"]] == ["shop-v1"]
    assert {key: route[key] for key in ("apiVersion", "kind", "metadata")} == {
        key: start[key] for key in ("apiVersion", "kind", "metadata")
    }
    assert {k: v for k, v in route["spec"].items() if k != "rules"} == {
        k: v for k, v in start["spec"].items() if k != "rules"
    }
    assert httproute_render(GATEWAY, TrafficSplit(), route) == start


@pytest.mark.parametrize(("weight", "variant"), CASES)
@pytest.mark.parametrize("base", ["new", "live"])
def test_virtualservice_for_every_step_is_valid_reads_back_and_reverts(
    weight: float, variant: str, base: str
) -> None:
    split = variants(weight)[variant]
    start = virtualservice_base(ISTIO) if base == "new" else copy.deepcopy(LIVE_SERVICE)
    service = valid(virtualservice_render(ISTIO, split, start))

    seen = virtualservice_read(ISTIO, service)
    # Istio wants header names in lower case; everything else reads back as it was.
    lowered = [
        HeaderRoute(header=r.header.lower(), value=r.value, match=r.match, percent=r.percent)
        for r in split.header_routes
    ]
    assert seen == TrafficSplit(
        canary_percent=split.canary_percent,
        header_routes=lowered,
        mirror_percent=split.mirror_percent,
    )
    routes = service["spec"]["http"]
    managed = [route for route in routes if route.get("name", "").startswith("canarykit-v2-")]
    assert [route for route in routes if route not in managed] == start["spec"]["http"]
    assert len(set(names(routes))) == len(routes)
    assert {key: service[key] for key in ("apiVersion", "kind", "metadata")} == {
        key: start[key] for key in ("apiVersion", "kind", "metadata")
    }
    for route in managed:  # each keeps the copied route's settings
        for key in ("timeout", "retries"):
            assert route.get(key) == start["spec"]["http"][-1].get(key)
    assert virtualservice_render(ISTIO, TrafficSplit(), service) == start


# ------------------------------------------------------------------------ weights


def test_weights_are_out_of_100_times_ten_to_the_decimals() -> None:
    assert split_weights(10) == (90, 10)
    assert split_weights(0.5) == (995, 5)
    assert split_weights(33.25) == (6675, 3325)
    assert split_weights(0.0001) == (999999, 1)
    assert split_weights(0) == (100, 0)
    assert split_weights(100) == (0, 100)


def test_more_decimals_round_but_never_to_no_traffic_or_all_of_it() -> None:
    assert scaled_percent(100 / 3) == (333333, 1000000)
    assert scaled_percent(1e-9) == (1, 1000000)
    assert scaled_percent(99.999999) == (999999, 1000000)


@given(st.integers(min_value=0, max_value=1_000_000), st.integers(min_value=0, max_value=4))
def test_a_percent_with_up_to_four_decimals_survives_the_weights(units: int, decimals: int) -> None:
    percent = float(f"{units / 10**4:.{decimals}f}")
    if percent > 100:
        return
    stable, canary = split_weights(percent)
    assert stable + canary <= 1_000_000  # Gateway API's largest weight
    assert percent_of(canary, stable + canary) == percent


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30))
def test_a_prefix_becomes_a_regex_that_reads_back_and_matches_only_it(prefix: str) -> None:
    regex = prefix_regex(prefix)
    assert regex_prefix(regex) == prefix
    assert re.fullmatch(regex, prefix + "anything after")
    assert re.fullmatch(regex, prefix)
    other = chr(ord(prefix[0]) ^ 1) + prefix[1:]  # the same but for its first character
    assert not re.fullmatch(regex, other + "anything after")


def test_a_user_regex_is_not_mistaken_for_a_prefix() -> None:
    assert regex_prefix(".*Chrome.*") is None
    assert regex_prefix("^a|b.*") is None
    assert regex_prefix("^abc") is None


# ------------------------------------------------------------------ properties


percents = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 10.0, 33.3, 99.5, 100.0]),
    st.integers(min_value=1, max_value=1_000_000).map(lambda n: n / 10_000),
)
header_routes = st.lists(
    st.builds(
        HeaderRoute,
        header=st.sampled_from(["x-canary", "X-Beta-User", "user-agent", "cookie"]),
        value=st.sampled_from(["yes", ".*Chrome.*", "Mozilla/5.0", "a.b[c]"]),
        match=st.sampled_from(["exact", "prefix", "regex"]),
        percent=st.integers(min_value=1, max_value=100).map(float),
    ),
    max_size=3,
)
splits = st.builds(
    TrafficSplit, canary_percent=percents, header_routes=header_routes, mirror_percent=percents
)


@given(splits, st.booleans())
def test_any_split_renders_valid_objects_that_read_back_and_revert(
    split: TrafficSplit, live: bool
) -> None:
    start = copy.deepcopy(LIVE_ROUTE) if live else httproute_base(GATEWAY)
    route = valid(httproute_render(GATEWAY, split, start))
    assert httproute_read(GATEWAY, stored(route)) == split
    assert httproute_render(GATEWAY, TrafficSplit(), route) == start
    # Rendering is idempotent: the same split over its own result changes nothing.
    assert httproute_render(GATEWAY, split, route) == route

    start = copy.deepcopy(LIVE_SERVICE) if live else virtualservice_base(ISTIO)
    service = valid(virtualservice_render(ISTIO, split, start))
    seen = virtualservice_read(ISTIO, service)
    assert seen.canary_percent == split.canary_percent
    assert seen.mirror_percent == split.mirror_percent
    assert [(r.header, r.value, r.match, r.percent) for r in seen.header_routes] == [
        (r.header.lower(), r.value, r.match, r.percent) for r in split.header_routes
    ]
    assert virtualservice_render(ISTIO, TrafficSplit(), service) == start
    assert virtualservice_render(ISTIO, split, service) == service


# ---------------------------------------------------------------------- the seed


def seed_service() -> dict[str, Any]:
    return yaml.safe_load((DATA / "seed_istio_virtualservice.yaml").read_text(encoding="utf-8"))


def without_names(service: dict[str, Any]) -> dict[str, Any]:
    service = copy.deepcopy(service)
    for route in service["spec"]["http"]:
        route.pop("name", None)
    return service


def test_the_seeds_virtualservice_is_valid_as_written() -> None:
    valid(seed_service())


def test_canarykit_renders_the_seeds_example_and_it_validates() -> None:
    seed = seed_service()
    split = TrafficSplit(canary_percent=0, header_routes=[CHROME])
    router = IstioRouter(
        virtual_service="app",
        namespace="default",
        host="app",
        stable_subset="v1",
        canary_subset="v2",
    )
    rendered = valid(router.render(split))
    # The same object as the seed's, but for canarykit's route name, the namespace and
    # the API version (v1, served since Istio 1.22; the seed's v1beta1 has the same schema).
    assert rendered["apiVersion"] == "networking.istio.io/v1"
    assert rendered["spec"]["http"][0]["name"] == "canarykit-v2-header-0-user-agent"
    expected = copy.deepcopy(seed)
    expected["apiVersion"] = "networking.istio.io/v1"
    expected["metadata"]["namespace"] = "default"
    assert without_names(rendered) == expected
    # And the seed's own object reads as this split once canarykit's name is on its route.
    named = copy.deepcopy(seed)
    named["spec"]["http"][0]["name"] = "canarykit-v2-header-0-user-agent"
    assert virtualservice_read(ISTIO, named) == split


def render_cli(*argv: str) -> str:
    parser = argparse.ArgumentParser(prog="canarykit")
    add_render_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["render", *argv])
    assert args.handler is run_render  # what the command line's main() calls
    out = io.StringIO()
    assert run_render(args, out) == 0
    return out.getvalue()


def test_canarykit_render_istio_prints_the_seeds_example() -> None:
    text = render_cli(
        "istio",
        "--name",
        "app",
        "--namespace",
        "default",
        "--stable",
        "v1",
        "--canary",
        "v2",
        "--weight",
        "0",
        "--header",
        "user-agent=.*Chrome.*",
        "--header-percent",
        "10",
    )
    (service,) = yaml.safe_load_all(text)
    valid(service)
    expected = seed_service()
    expected["apiVersion"] = "networking.istio.io/v1"
    expected["metadata"]["namespace"] = "default"
    assert without_names(service) == expected


def test_canarykit_render_gateway_api_prints_a_valid_route() -> None:
    text = render_cli(
        "gateway-api",
        "--name",
        "shop",
        "--namespace",
        "prod",
        "--stable",
        "shop-v1",
        "--canary",
        "shop-v2",
        "--weight",
        "0.5",
        "--header",
        "x-canary=yes|true",
        "--mirror",
        "2.5",
        "--port",
        "8080",
        "--gateway",
        "public",
        "--hostname",
        "shop.example.com",
    )
    (route,) = yaml.safe_load_all(text)
    valid(route)
    assert route["spec"]["parentRefs"] == [{"name": "public"}]
    assert route["spec"]["hostnames"] == ["shop.example.com"]
    assert httproute_read(GATEWAY, route) == TrafficSplit(
        canary_percent=0.5,
        header_routes=[HeaderRoute(header="x-canary", value="yes|true", match="regex")],
        mirror_percent=2.5,
    )
    weights = route["spec"]["rules"][1]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in weights] == [("shop-v1", 995), ("shop-v2", 5)]
    mirror = route["spec"]["rules"][1]["filters"][0]["requestMirror"]
    assert mirror["fraction"] == {"numerator": 25, "denominator": 1000}


def test_canarykit_render_istio_can_print_the_destination_rule_too() -> None:
    text = render_cli(
        "istio",
        "--name",
        "app",
        "--stable",
        "v1",
        "--canary",
        "v2",
        "--weight",
        "10",
        "--mirror",
        "5",
        "--destination-rule",
        "--subset-label",
        "app.kubernetes.io/version",
    )
    service, rule = yaml.safe_load_all(text)
    valid(service)
    valid(rule)
    assert rule["spec"]["subsets"] == [
        {"name": "v1", "labels": {"app.kubernetes.io/version": "v1"}},
        {"name": "v2", "labels": {"app.kubernetes.io/version": "v2"}},
    ]
    assert service["spec"]["http"][0]["mirrorPercentage"] == {"value": 5.0}


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--weight", "150"], "--weight"),
        (["--mirror", "-1"], "--mirror"),
        (["--header", "no-equals-sign"], "--header"),
        (["--header", "x=("], "header_route.value"),
        (["--header", "x=1", "--header-percent", "0"], "header_route.percent"),
    ],
)
def test_canarykit_render_refuses_bad_input_naming_the_option(argv: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render_cli("istio", "--name", "app", "--stable", "v1", "--canary", "v2", *argv)
    assert caught.value.field == field


def test_canarykit_render_refuses_names_kubernetes_would_refuse() -> None:
    with pytest.raises(ConfigError) as caught:
        render_cli("gateway-api", "--name", "Shop_Route", "--stable", "a", "--canary", "b")
    assert caught.value.field == "route"
    with pytest.raises(ConfigError) as caught:
        render_cli("istio", "--name", "app", "--stable", "v1", "--canary", "v1")
    assert caught.value.field == "canary_subset"


# ---------------------------------------------------------------- errors and checks


def test_a_route_without_the_stable_service_cannot_be_split() -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    route["spec"]["rules"][1]["backendRefs"] = [{"name": "other", "port": 80}]
    with pytest.raises(RouterError, match="no rule sending to Service 'shop-v1'"):
        httproute_render(GATEWAY, TrafficSplit(canary_percent=10), route)
    # Going back to stable-only never needs it.
    assert httproute_render(GATEWAY, TrafficSplit(), route) == route


def test_two_rules_to_the_stable_service_need_the_rule_named() -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    route["spec"]["rules"][0]["backendRefs"] = [{"name": "shop-v1", "port": 8080}]
    with pytest.raises(RouterError, match=r"2 rules .* \(rules 0, 1\); name the one"):
        httproute_render(GATEWAY, TrafficSplit(canary_percent=10), route)
    named = HTTPRouteTarget(
        route="shop",
        namespace="prod",
        stable_service="shop-v1",
        canary_service="shop-v2",
        rule="main",
    )
    rules = httproute_render(named, TrafficSplit(canary_percent=10), route)["spec"]["rules"]
    assert names(rules) == ["admin", "canarykit-shop-v2-weights", "main", ""]


def test_a_rule_that_also_sends_elsewhere_is_not_split() -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    route["spec"]["rules"][1]["backendRefs"].append({"name": "shop-legacy", "port": 8080})
    with pytest.raises(RouterError, match="also sends to 'shop-legacy'"):
        httproute_render(GATEWAY, TrafficSplit(canary_percent=10), route)


def test_an_argo_style_rule_listing_the_canary_already_keeps_its_canary_ref() -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    route["spec"]["rules"][1]["backendRefs"].append({"name": "shop-v2", "port": 9090, "weight": 0})
    rendered = valid(httproute_render(GATEWAY, TrafficSplit(canary_percent=10), route))
    refs = rendered["spec"]["rules"][1]["backendRefs"]
    assert refs == [
        {"name": "shop-v1", "port": 8080, "weight": 90},
        {"name": "shop-v2", "port": 8080, "weight": 10},  # GATEWAY.port overrides the port
    ]
    assert httproute_render(GATEWAY, TrafficSplit(), rendered) == route


def test_a_header_route_on_a_header_the_rule_matches_already_is_refused() -> None:
    service = copy.deepcopy(LIVE_SERVICE)
    split = TrafficSplit(header_routes=[HeaderRoute(header="X-Legacy", value="2")])
    with pytest.raises(RouterError, match="already matches header 'x-legacy'"):
        virtualservice_render(ISTIO, split, service)


def test_istio_routes_to_other_subsets_are_not_split() -> None:
    service = copy.deepcopy(LIVE_SERVICE)
    service["spec"]["http"][1]["route"].append(
        {"destination": {"host": "app", "subset": "v0"}, "weight": 5}
    )
    with pytest.raises(RouterError, match="subset 'v0'"):
        virtualservice_render(ISTIO, TrafficSplit(canary_percent=10), service)


def test_a_rule_canarykit_did_not_write_under_its_prefix_is_reported() -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    route["spec"]["rules"].insert(0, {**route["spec"]["rules"][1], "name": "canarykit-shop-v2-x"})
    with pytest.raises(RouterError, match="did not write"):
        httproute_read(GATEWAY, route)


def test_a_managed_rule_edited_to_no_canary_traffic_is_a_router_error_not_a_crash() -> None:
    route = httproute_render(GATEWAY, TrafficSplit(header_routes=[CHROME]), LIVE_ROUTE)
    route["spec"]["rules"][1]["backendRefs"][1]["weight"] = 0
    with pytest.raises(RouterError, match="cannot represent"):
        httproute_read(GATEWAY, route)


def test_destination_rule_subsets_are_checked_and_added_after_the_others() -> None:
    rule = destination_rule_base(ISTIO)
    valid(rule)
    assert destination_rule_missing(ISTIO, rule) == ()
    rule["spec"]["subsets"] = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v0"}]
    assert destination_rule_missing(ISTIO, rule) == ("v2",)
    subsets = destination_rule_subsets(ISTIO, rule, ("v2",))
    assert [subset["name"] for subset in subsets] == ["v1", "v0", "v2"]
    rule["spec"]["host"] = "other.default.svc.cluster.local"
    with pytest.raises(RouterError, match="for host 'other"):
        destination_rule_missing(ISTIO, rule)
    rule["spec"]["host"] = "app.default.svc.cluster.local"  # the same Service, fully named
    assert destination_rule_missing(ISTIO, rule) == ("v2",)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"route": "Shop"}, "route"),
        ({"namespace": "a" * 64}, "namespace"),
        ({"stable_service": "1shop"}, "stable_service"),
        ({"canary_service": "shop-v1"}, "canary_service"),
        ({"port": 0}, "port"),
        ({"port": True}, "port"),
        ({"rule": "Main Rule"}, "rule"),
        ({"conflict_attempts": 0}, "conflict_attempts"),
        ({"connection": "~/.kube/config"}, "connection"),
    ],
)
def test_gateway_router_refuses_bad_settings_naming_the_field(
    arguments: dict[str, Any], field: str
) -> None:
    settings: dict[str, Any] = {
        "route": "shop",
        "namespace": "prod",
        "stable_service": "shop-v1",
        "canary_service": "shop-v2",
    }
    with pytest.raises(ConfigError) as caught:
        GatewayAPIRouter(**{**settings, **arguments})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"host": "App"}, "host"),
        ({"stable_subset": "v1_0"}, "stable_subset"),
        ({"route": "main route"}, "route"),
        ({"destination_rule": "-app"}, "destination_rule"),
        ({"subset_label": "bad key!"}, "subset_label"),
        ({"create_subsets": "yes"}, "create_subsets"),
    ],
)
def test_istio_router_refuses_bad_settings_naming_the_field(
    arguments: dict[str, Any], field: str
) -> None:
    settings: dict[str, Any] = {
        "virtual_service": "app",
        "namespace": "default",
        "host": "app",
        "stable_subset": "v1",
        "canary_subset": "v2",
    }
    with pytest.raises(ConfigError) as caught:
        IstioRouter(**{**settings, **arguments})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"field_manager": "can ary"}, "field_manager"),
        ({"in_cluster": "auto"}, "in_cluster"),
        ({"context": ""}, "context"),
    ],
)
def test_connection_settings_are_checked(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KubernetesConnection(**arguments)
    assert caught.value.field == field


def test_routers_declare_everything_they_do() -> None:
    router = GatewayAPIRouter(
        route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2"
    )
    capabilities = router.capabilities
    assert (capabilities.weights, capabilities.header_routes) == (True, True)
    assert (capabilities.mirroring, capabilities.read_back) == (True, True)
    assert repr(router) == (
        "GatewayAPIRouter(route='prod/shop', stable_service='shop-v1', canary_service='shop-v2')"
    )
    with pytest.raises(ConfigError, match="port: is needed"):
        router.render(TrafficSplit(canary_percent=10))  # a new route needs the port


# ------------------------------------------------------------- the checker itself


def test_the_cel_rules_checked_are_the_schemas_own_words() -> None:
    text = " ".join((SCHEMAS / "gateway-api-httproutes.crd.yaml").read_text().split())
    for message in CEL_MESSAGES:
        assert message in text, message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r["spec"]["rules"][1]["backendRefs"][0].update(weight=1_000_001),
            "is greater than the maximum of 1000000",
        ),
        (
            lambda r: r["spec"]["rules"][0]["matches"][0].update(
                headers=[{"name": "x", "type": "Prefix", "value": "a"}]
            ),
            "is not one of",
        ),
        (
            lambda r: r["spec"]["rules"][1]["backendRefs"][0].pop("port"),
            "Must have port for Service reference",
        ),
        (
            lambda r: r["spec"]["rules"][1].update(
                filters=[
                    {
                        "type": "RequestMirror",
                        "requestMirror": {
                            "backendRef": {"name": "x", "port": 80},
                            "percent": 5,
                            "fraction": {"numerator": 1},
                        },
                    }
                ]
            ),
            "Only one of percent or fraction",
        ),
        (
            lambda r: r["spec"]["rules"][1].update(
                filters=[
                    {
                        "type": "RequestMirror",
                        "requestMirror": {
                            "backendRef": {"name": "x", "port": 80},
                            "fraction": {"numerator": 5, "denominator": 4},
                        },
                    }
                ]
            ),
            "numerator must be less than or equal to denominator",
        ),
        (
            lambda r: r["spec"]["rules"][1].update(filters=[{"type": "RequestMirror"}]),
            "filter.requestMirror must be specified",
        ),
        (lambda r: r["spec"]["rules"].extend([{"backendRefs": []}] * 14), "is too long"),
    ],
)
def test_the_checker_refuses_what_the_api_server_refuses(change: Any, expected: str) -> None:
    route = copy.deepcopy(LIVE_ROUTE)
    assert VALIDATOR.errors(route) == []
    change(route)
    assert any(expected in error for error in VALIDATOR.errors(route)), VALIDATOR.errors(route)


def test_the_checker_refuses_a_bad_virtualservice() -> None:
    service = copy.deepcopy(LIVE_SERVICE)
    service["spec"]["http"][1]["match"][1]["headers"]["x-legacy"] = {"exact": "1", "regex": "1"}
    assert any(
        "is valid under each of" in error or "oneOf" in error or "is not valid" in error
        for error in VALIDATOR.errors(service)
    ), VALIDATOR.errors(service)


# ------------------------------------------------------------------------ examples


@pytest.mark.parametrize("script", ["istio_seed.py", "gateway_api.py"])
def test_example_prints_objects_that_validate(script: str) -> None:
    env = dict(os.environ)  # run against this source tree, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert documents
    for document in documents:
        valid(document)
    if script == "istio_seed.py":
        assert without_names(documents[0])["spec"] == seed_service()["spec"]


def test_canarykit_render_without_pyyaml_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = argparse.ArgumentParser(prog="canarykit")
    add_render_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["render", "istio", "--name", "app", "--stable", "a", "--canary", "b"])
    monkeypatch.setitem(sys.modules, "yaml", None)
    out, err = io.StringIO(), io.StringIO()
    assert run_render(args, out, err) == 1
    assert out.getvalue() == ""
    assert "pip install 'canarykit[kubernetes]'" in err.getvalue()
