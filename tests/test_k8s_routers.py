"""The Gateway API and Istio routers through the real lightkube client, against a local server.

No Kubernetes API server runs here, so `k8s_fake_apiserver.FakeKubeAPI` stands in for
one: it keeps resourceVersions, answers 409 to a stale one, 404, 403 and 401, and 422 for
an object that fails the CRD's schema. Every router call below goes through lightkube's
``AsyncClient`` over HTTP (HTTPS for the in-cluster case), on asyncio and on trio.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import canarykit
from canarykit import HeaderRoute, RouterError, TrafficSplit
from canarykit.deciders import bound, threshold
from canarykit.routers import GatewayAPIRouter, IstioRouter, KubernetesConnection
from canarykit.testing import ScriptedMetrics, regression, simulate_async
from canarykit.testing.lab import BinaryNotFound, find_binary, free_port
from helpers.k8s_fake_apiserver import SCHEMAS, FakeKubeAPI

# A real (fake) API server on loopback and rollouts through it, seconds each: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CHROME = HeaderRoute(header="user-agent", value=".*Chrome.*", match="regex", percent=10)
BETA = HeaderRoute(header="X-Canary", value="always", match="exact")
MOZILLA = HeaderRoute(header="User-Agent", value="Mozilla/5.0 (X11", match="prefix", percent=25)

ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {
        "name": "shop",
        "namespace": "prod",
        "labels": {"team": "payments"},
        "annotations": {"owner": "alice"},
    },
    "spec": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "rules": [
            {
                "name": "admin",
                "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "backendRefs": [{"name": "admin", "port": 80}],
            },
            {
                "name": "main",
                "timeouts": {"request": "10s"},
                "backendRefs": [{"name": "shop-v1", "port": 8080}],
            },
        ],
    },
}

SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "app", "namespace": "default", "annotations": {"owner": "alice"}},
    "spec": {
        "hosts": ["app"],
        "http": [
            {
                "name": "admin",
                "match": [{"uri": {"prefix": "/admin"}}],
                "route": [{"destination": {"host": "admin"}}],
            },
            {"route": [{"destination": {"host": "app", "subset": "v1"}, "weight": 100}]},
        ],
    },
}

DESTINATION_RULE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "app", "namespace": "default"},
    "spec": {
        "host": "app",
        "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}

STEPS = [
    TrafficSplit(header_routes=[BETA]),
    TrafficSplit(header_routes=[CHROME, MOZILLA]),
    *(TrafficSplit(canary_percent=p) for p in (0.5, 1, 5, 10, 25, 33.3, 50, 99.5, 100)),
    TrafficSplit(mirror_percent=100),
    TrafficSplit(canary_percent=10, mirror_percent=0.5),
    TrafficSplit(canary_percent=20, header_routes=[BETA, CHROME], mirror_percent=5),
]


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(forbidden={"locked": {"patch", "update", "create"}}) as server:
        server.put(ROUTE)
        server.put(SERVICE)
        server.put(DESTINATION_RULE)
        yield server


@pytest.fixture
def connection(api: FakeKubeAPI, tmp_path: Path) -> KubernetesConnection:
    # trust_env=False: a developer's HTTP(S)_PROXY must not take 127.0.0.1 elsewhere.
    return KubernetesConnection(kubeconfig=api.kubeconfig(tmp_path / "config"), trust_env=False)


def gateway(connection: KubernetesConnection, **changes: Any) -> GatewayAPIRouter:
    settings: dict[str, Any] = {
        "route": "shop",
        "namespace": "prod",
        "stable_service": "shop-v1",
        "canary_service": "shop-v2",
        "connection": connection,
    }
    return GatewayAPIRouter(**{**settings, **changes})


def istio(connection: KubernetesConnection, **changes: Any) -> IstioRouter:
    settings: dict[str, Any] = {
        "virtual_service": "app",
        "namespace": "default",
        "host": "app",
        "stable_subset": "v1",
        "canary_subset": "v2",
        "connection": connection,
    }
    return IstioRouter(**{**settings, **changes})


def unchanged_parts(obj: dict[str, Any]) -> dict[str, Any]:
    """What canarykit must never change: everything but its list and the write stamps."""
    metadata = {
        key: value
        for key, value in obj["metadata"].items()
        if key not in ("resourceVersion", "generation", "managedFields")
    }
    return {"metadata": metadata, "spec": obj["spec"]}


def lower(split: TrafficSplit) -> TrafficSplit:
    routes = [
        HeaderRoute(header=r.header.lower(), value=r.value, match=r.match, percent=r.percent)
        for r in split.header_routes
    ]
    return TrafficSplit(
        canary_percent=split.canary_percent,
        header_routes=routes,
        mirror_percent=split.mirror_percent,
    )


# ----------------------------------------------------------------- Gateway API


async def test_gateway_router_steps_through_a_rollout_and_restores_the_route(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    original = api.get("HTTPRoute", "prod", "shop")
    assert original is not None
    router = gateway(connection)
    assert await router.read() == TrafficSplit()
    for split in STEPS:
        await router.apply(split)
        assert await router.read() == split
        stored = api.get("HTTPRoute", "prod", "shop")
        assert stored is not None
        assert api.validator.errors(stored) == []
        assert stored["metadata"]["labels"] == original["metadata"]["labels"]
        assert stored["metadata"]["annotations"] == original["metadata"]["annotations"]
        assert [r for r in stored["spec"]["rules"] if r["name"] in ("admin", "main")] == (
            original["spec"]["rules"]
        )
    await router.apply(TrafficSplit())
    restored = api.get("HTTPRoute", "prod", "shop")
    assert restored is not None
    assert unchanged_parts(restored) == unchanged_parts(original)
    assert await router.read() == TrafficSplit()
    # Every write was a merge patch from canarykit's field manager, and each was accepted.
    writes = api.writes()
    assert writes and all(w.query["fieldManager"] == ["canarykit"] for w in writes)
    assert all(w.content_type == "application/merge-patch+json" for w in writes)
    assert all(w.code == 200 for w in writes)
    assert {m["manager"] for m in restored["metadata"]["managedFields"]} == {
        "kubectl",
        "canarykit",
    }


async def test_applying_the_same_split_again_writes_nothing(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = gateway(connection)
    await router.apply(TrafficSplit(canary_percent=10, header_routes=[MOZILLA]))
    version = api.get("HTTPRoute", "prod", "shop")["metadata"]["resourceVersion"]  # type: ignore[index]
    writes = len(api.writes())
    await router.apply(TrafficSplit(canary_percent=10, header_routes=[MOZILLA]))
    assert len(api.writes()) == writes
    assert api.get("HTTPRoute", "prod", "shop")["metadata"]["resourceVersion"] == version  # type: ignore[index]


def add_rule_and_label(api: FakeKubeAPI) -> None:
    def change(route: dict[str, Any]) -> None:
        route["metadata"]["labels"]["edited-by"] = "bob"
        route["spec"]["rules"].append(
            {
                "name": "static",
                "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                "backendRefs": [{"name": "cdn", "port": 80}],
            }
        )

    api.edit("HTTPRoute", "prod", "shop", change)


async def test_a_concurrent_edit_between_read_and_write_is_kept(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = gateway(connection)
    api.before_writes(add_rule_and_label)  # someone edits right after canarykit's read
    await router.apply(TrafficSplit(canary_percent=10))

    patches = [w for w in api.writes("canarykit") if w.method == "PATCH"]
    assert [w.code for w in patches] == [409, 200]  # refused once, then recomputed
    stored = api.get("HTTPRoute", "prod", "shop")
    assert stored is not None
    assert stored["metadata"]["labels"]["edited-by"] == "bob"
    assert [rule["name"] for rule in stored["spec"]["rules"]] == [
        "admin",
        "canarykit-shop-v2-weights",
        "main",
        "static",
    ]
    assert await router.read() == TrafficSplit(canary_percent=10)


async def test_an_object_that_keeps_changing_is_never_overwritten(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = gateway(connection, conflict_attempts=3)
    edits = []

    def edit(api: FakeKubeAPI) -> None:
        edits.append(len(edits))
        api.edit(
            "HTTPRoute",
            "prod",
            "shop",
            lambda route: route["metadata"]["annotations"].update(edit=str(len(edits))),
        )

    api.before_writes(edit, times=10)
    with pytest.raises(
        RouterError, match=r"changed under canarykit 3 times.*409 Conflict.*nothing"
    ):
        await router.apply(TrafficSplit(canary_percent=10))
    patches = [w for w in api.writes("canarykit") if w.method == "PATCH"]
    assert [w.code for w in patches] == [409, 409, 409]
    stored = api.get("HTTPRoute", "prod", "shop")
    assert stored is not None
    assert stored["metadata"]["annotations"]["edit"] == "3"
    assert [rule["name"] for rule in stored["spec"]["rules"]] == ["admin", "main"]


async def test_a_rollback_during_a_concurrent_edit_keeps_the_edit(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = gateway(connection)
    await router.apply(TrafficSplit(canary_percent=50, header_routes=[BETA]))
    api.before_writes(add_rule_and_label)
    await router.apply(TrafficSplit())
    stored = api.get("HTTPRoute", "prod", "shop")
    assert stored is not None
    assert [rule["name"] for rule in stored["spec"]["rules"]] == ["admin", "main", "static"]
    assert stored["metadata"]["labels"]["edited-by"] == "bob"


async def test_a_concurrent_removal_of_the_rule_to_split_is_a_router_error(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    def remove_main(api: FakeKubeAPI) -> None:
        def change(route: dict[str, Any]) -> None:
            rules = route["spec"]["rules"]
            route["spec"]["rules"] = [rule for rule in rules if rule.get("name") != "main"]

        api.edit("HTTPRoute", "prod", "shop", change)

    router = gateway(connection)
    await router.apply(TrafficSplit(canary_percent=5))
    api.before_writes(remove_main)
    with pytest.raises(RouterError, match="no rule sending to Service 'shop-v1'"):
        await router.apply(TrafficSplit(canary_percent=10))
    # Going back to stable-only still works: it only removes canarykit's rules.
    await router.apply(TrafficSplit())
    stored = api.get("HTTPRoute", "prod", "shop")
    assert stored is not None
    assert [rule["name"] for rule in stored["spec"]["rules"]] == ["admin"]


async def test_a_missing_route_is_a_router_error_quoting_the_server(
    connection: KubernetesConnection,
) -> None:
    router = gateway(connection, route="nope")
    message = r'404 Not Found: httproutes.gateway.networking.k8s.io "nope" not found'
    with pytest.raises(RouterError, match=message):
        await router.read()
    with pytest.raises(RouterError, match=message):
        await router.apply(TrafficSplit(canary_percent=10))


async def test_a_forbidden_write_is_a_router_error_quoting_rbac(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    route = copy.deepcopy(ROUTE)
    route["metadata"]["namespace"] = "locked"
    api.put(route)
    router = gateway(connection, namespace="locked")
    assert await router.read() == TrafficSplit()  # get is allowed
    with pytest.raises(RouterError) as caught:
        await router.apply(TrafficSplit(canary_percent=10))
    assert "could not update HTTPRoute locked/shop: 403 Forbidden" in str(caught.value)
    assert 'cannot patch resource "httproutes" in API group "gateway.networking.k8s.io"' in str(
        caught.value
    )


async def test_an_object_the_schema_refuses_is_a_router_error_and_changes_nothing(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    before = api.get("HTTPRoute", "prod", "shop")
    router = gateway(connection)
    # Gateway API allows header values of at most 4096 characters.
    long_value = HeaderRoute(header="x-token", value="a" * 5000, match="exact")
    with pytest.raises(RouterError) as caught:
        await router.apply(TrafficSplit(header_routes=[long_value]))
    message = str(caught.value)
    assert "422 Invalid" in message
    assert 'HTTPRoute.gateway.networking.k8s.io "shop" is invalid' in message
    assert "spec.rules[1].matches[0].headers[0].value" in message
    assert api.get("HTTPRoute", "prod", "shop") == before


async def test_more_rules_than_gateway_api_allows_is_refused_by_the_server(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = gateway(connection)
    routes = [HeaderRoute(header=f"x-h{i}", value="1") for i in range(15)]  # 2 + 15 > 16
    with pytest.raises(RouterError, match=r"422 Invalid.*spec.rules.*is too long"):
        await router.apply(TrafficSplit(header_routes=routes))


async def test_a_crd_that_drops_rule_names_is_detected_and_the_change_undone(
    tmp_path: Path,
) -> None:
    # A cluster with an HTTPRoute CRD from before rule names (Gateway API < v1.4): the
    # API server prunes the unknown 'name' field, so canarykit could not find its rules.
    crd = yaml.safe_load((SCHEMAS / "gateway-api-httproutes.crd.yaml").read_text())
    for version in crd["spec"]["versions"]:
        rule = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
        del rule["items"]["properties"]["name"]
    old = tmp_path / "old-httproute.crd.yaml"
    old.write_text(yaml.safe_dump(crd))
    route = copy.deepcopy(ROUTE)
    for rule in route["spec"]["rules"]:
        rule.pop("name")
    with FakeKubeAPI(schemas=[old]) as server:
        original = server.put(route)
        connection = KubernetesConnection(
            kubeconfig=server.kubeconfig(tmp_path / "config"), trust_env=False
        )
        router = gateway(connection)
        with pytest.raises(RouterError, match=r"change was undone.*older than Gateway API v1\.4"):
            await router.apply(TrafficSplit(canary_percent=10))
        stored = server.get("HTTPRoute", "prod", "shop")
        assert stored is not None
        assert stored["spec"] == original["spec"]


async def test_a_new_router_reads_back_what_another_applied(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    split = TrafficSplit(canary_percent=33.3, header_routes=[MOZILLA, BETA], mirror_percent=2.5)
    await gateway(connection).apply(split)
    assert await gateway(connection).read() == split  # after a restart, say


async def test_an_unreachable_api_server_is_a_router_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    router = gateway(KubernetesConnection(kubeconfig=config, trust_env=False, timeout=2))
    with pytest.raises(
        RouterError, match=f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
    ):
        await router.read()


async def test_a_wrong_token_is_a_router_error(api: FakeKubeAPI, tmp_path: Path) -> None:
    config = api.kubeconfig(tmp_path / "config", token="stale")
    router = gateway(KubernetesConnection(kubeconfig=config, trust_env=False))
    with pytest.raises(RouterError, match="401 Unauthorized"):
        await router.read()


async def test_the_kubeconfig_comes_from_the_environment_and_its_context(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = api.kubeconfig(tmp_path / "config")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(config), str(tmp_path / "other")]))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config to fall back on
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    router = gateway(
        KubernetesConnection(service_account_dir=tmp_path / "no-service-account")
    )  # the defaults, but for the service account's place
    await router.apply(TrafficSplit(canary_percent=10))
    assert await router.read() == TrafficSplit(canary_percent=10)
    missing = gateway(KubernetesConnection(context="prod-eu", trust_env=False))
    with pytest.raises(RouterError, match=r"cannot load the Kubernetes configuration.*prod-eu"):
        await missing.read()


def openssl() -> str:
    try:
        return find_binary("openssl", "openssl")
    except BinaryNotFound as exc:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {exc}")
        pytest.skip(str(exc))


async def test_in_cluster_the_service_account_is_used_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "namespace").write_text("prod")
    (account / "ca.crt").write_bytes(cert.read_bytes())
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)  # else the kubeconfig comes first
    with FakeKubeAPI(tls=(str(cert), str(key)), token="pod-token") as server:
        server.put(ROUTE)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        router = gateway(KubernetesConnection(service_account_dir=account))
        await router.apply(TrafficSplit(canary_percent=10))
        assert await router.read() == TrafficSplit(canary_percent=10)
        assert all(r.headers["authorization"] == "Bearer pod-token" for r in server.requests)
    # Without the variables the pod would have, the error says which one is missing.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    router = gateway(KubernetesConnection(service_account_dir=account, in_cluster=True))
    with pytest.raises(RouterError, match=r"in-cluster: \$KUBERNETES_SERVICE_HOST is not set"):
        await router.read()


async def test_without_lightkube_the_error_names_the_extra(
    connection: KubernetesConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lightkube", None)
    router = gateway(connection)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[kubernetes\]'"):
        await router.read()
    # Rendering needs no client.
    assert router.render(TrafficSplit(canary_percent=10), ROUTE)["spec"]["rules"][1]["name"] == (
        "canarykit-shop-v2-weights"
    )


# ------------------------------------------------------------------------ Istio


async def test_istio_router_writes_the_seeds_example(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    seed = yaml.safe_load(
        (Path(__file__).parent / "data" / "seed_istio_virtualservice.yaml").read_text()
    )
    router = istio(connection)
    split = TrafficSplit(canary_percent=0, header_routes=[CHROME])
    await router.apply(split)
    assert await router.read() == split
    stored = api.get("VirtualService", "default", "app")
    assert stored is not None
    admin, header_route, stable = stored["spec"]["http"]
    assert header_route["name"] == "canarykit-v2-header-0-user-agent"
    del header_route["name"]
    # The seed's two routes, after the admin route that was there before.
    assert [header_route, stable] == seed["spec"]["http"]
    assert admin == SERVICE["spec"]["http"][0]


async def test_istio_router_steps_through_a_rollout_and_restores_the_service(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    original = api.get("VirtualService", "default", "app")
    assert original is not None
    router = istio(connection)
    for split in STEPS:
        await router.apply(split)
        assert await router.read() == split  # as applied, header names as given
        assert await istio(connection).read() == lower(split)  # Istio keeps them lower case
        stored = api.get("VirtualService", "default", "app")
        assert stored is not None
        assert api.validator.errors(stored) == []
    await router.apply(TrafficSplit())
    restored = api.get("VirtualService", "default", "app")
    assert restored is not None
    assert unchanged_parts(restored) == unchanged_parts(original)


async def test_istio_concurrent_edit_is_kept(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    def edit(api: FakeKubeAPI) -> None:
        api.edit(
            "VirtualService",
            "default",
            "app",
            lambda service: service["spec"]["hosts"].append("app.example.com"),
        )

    api.before_writes(edit)
    router = istio(connection)
    await router.apply(TrafficSplit(canary_percent=10))
    stored = api.get("VirtualService", "default", "app")
    assert stored is not None
    assert stored["spec"]["hosts"] == ["app", "app.example.com"]
    assert await router.read() == TrafficSplit(canary_percent=10)


async def test_a_missing_destination_rule_stops_before_the_virtualservice_changes(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = istio(connection, destination_rule="app-subsets")
    with pytest.raises(RouterError) as caught:
        await router.apply(TrafficSplit(canary_percent=10))
    assert 'destinationrules.networking.istio.io "app-subsets" not found' in str(caught.value)
    assert "canarykit needs it with subsets 'v1' and 'v2'" in str(caught.value)
    assert api.writes() == []


async def test_a_missing_subset_is_reported_with_the_ones_there(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = istio(connection, canary_subset="v3")
    with pytest.raises(RouterError, match=r"has no subset 'v3' \(it has 'v1', 'v2'\)"):
        await router.apply(TrafficSplit(canary_percent=10))
    assert api.writes() == []


async def test_create_subsets_creates_the_destination_rule(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = istio(connection, destination_rule="app-canary", create_subsets=True)
    await router.apply(TrafficSplit(canary_percent=10))
    made = api.get("DestinationRule", "default", "app-canary")
    assert made is not None
    assert made["spec"] == router.render_destination_rule()["spec"]
    assert [w.method for w in api.writes("canarykit")] == ["POST", "PATCH"]


async def test_create_subsets_adds_a_missing_subset_and_keeps_the_rest(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = istio(connection, canary_subset="v3", create_subsets=True)
    await router.apply(TrafficSplit(canary_percent=10))
    rule = api.get("DestinationRule", "default", "app")
    assert rule is not None
    assert rule["spec"]["subsets"] == [
        *DESTINATION_RULE["spec"]["subsets"],
        {"name": "v3", "labels": {"version": "v3"}},
    ]
    assert rule["spec"]["trafficPolicy"] == DESTINATION_RULE["spec"]["trafficPolicy"]
    await router.apply(TrafficSplit(canary_percent=20))  # present now: not written again
    assert [w.method for w in api.writes("canarykit")].count("PATCH") == 3


async def test_going_back_to_stable_only_needs_no_destination_rule(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = istio(connection)
    await router.apply(TrafficSplit(canary_percent=10))
    api.edit("DestinationRule", "default", "app", lambda rule: rule["spec"].update(subsets=[]))
    await router.apply(TrafficSplit())
    assert await router.read() == TrafficSplit()


# ----------------------------------------------------------- whole rollouts


async def test_a_healthy_rollout_through_the_istio_router_is_promoted(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    plan = canarykit.Plan(
        steps=[
            canarykit.SetHeaderRoutes([CHROME]),
            canarykit.SetWeight(10),
            canarykit.SetMirror(5),
            canarykit.Pause(120),
            canarykit.SetMirror(0),
            canarykit.SetWeight(50),
            canarykit.Pause(120),
        ],
        analysis_interval=60,
    )
    router = istio(connection)
    result = await simulate_async(
        plan,
        router=router,
        metrics=ScriptedMetrics(requests_per_second=200, error_rate=0.01, seed=3),
        decider=threshold(bound("error_rate", max=0.05)),
    )
    assert result.outcome.phase is canarykit.Phase.SUCCEEDED
    assert await istio(connection).read() == TrafficSplit(canary_percent=100)


async def test_a_failing_rollout_through_the_gateway_router_restores_the_route(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    original = api.get("HTTPRoute", "prod", "shop")
    assert original is not None
    plan = canarykit.linear(10, 20, hold=120, analysis_interval=30)
    result = await simulate_async(
        plan,
        router=gateway(connection),
        metrics=ScriptedMetrics(
            requests_per_second=500, error_rate=regression(at=150, base=0.01, factor=5), seed=5
        ),
        decider=threshold(bound("error_rate", max=0.02)),
    )
    assert result.outcome.phase is canarykit.Phase.ROLLED_BACK
    restored = api.get("HTTPRoute", "prod", "shop")
    assert restored is not None
    assert unchanged_parts(restored) == unchanged_parts(original)


# --------------------------------------------------- the fake API server itself


async def test_the_fake_server_keeps_the_api_servers_rules(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    lightkube = pytest.importorskip("lightkube")
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.types import PatchType

    routes = create_namespaced_resource(
        "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"
    )
    client = lightkube.AsyncClient(
        lightkube.KubeConfig.from_file(connection.kubeconfig).get(), trust_env=False
    )
    try:
        current = await client.get(routes, "shop", namespace="prod")
        version = current["metadata"]["resourceVersion"]
        # Defaults from the schema were filled in; the stored object is valid.
        assert current["spec"]["rules"][1]["backendRefs"][0]["weight"] == 1
        assert current["spec"]["parentRefs"][0]["kind"] == "Gateway"
        # A patch that changes nothing keeps the resourceVersion.
        same = await client.patch(
            routes, "shop", {"metadata": {"labels": {"team": "payments"}}},
            namespace="prod", patch_type=PatchType.MERGE,
        )  # fmt: skip
        assert same["metadata"]["resourceVersion"] == version
        # Unknown fields are pruned; a change gets a new resourceVersion and generation.
        changed = await client.patch(
            routes, "shop", {"spec": {"hostnames": ["a.example.com"], "bogus": 1}},
            namespace="prod", patch_type=PatchType.MERGE, field_manager="me",
        )  # fmt: skip
        assert "bogus" not in changed["spec"]
        assert changed["metadata"]["resourceVersion"] != version
        assert changed["metadata"]["generation"] == current["metadata"]["generation"] + 1
        # A stale resourceVersion is a conflict, in a patch and in a replace.
        stale = {"metadata": {"resourceVersion": version}, "spec": {"hostnames": []}}
        with pytest.raises(lightkube.ApiError) as caught:
            await client.patch(routes, "shop", stale, namespace="prod", patch_type=PatchType.MERGE)
        assert caught.value.status.code == 409
        old = routes(copy.deepcopy(dict(current)))
        with pytest.raises(lightkube.ApiError) as caught:
            await client.replace(old, namespace="prod")
        assert caught.value.status.code == 409
        # JSON patches work; strategic merge patches are not for custom resources.
        patched = await client.patch(
            routes, "shop", [{"op": "add", "path": "/metadata/labels/tier", "value": "web"}],
            namespace="prod", patch_type=PatchType.JSON,
        )  # fmt: skip
        assert patched["metadata"]["labels"]["tier"] == "web"
        with pytest.raises(lightkube.ApiError) as caught:
            await client.patch(routes, "shop", {"metadata": {}}, namespace="prod")
        assert caught.value.status.code == 415
        with pytest.raises(lightkube.ApiError) as caught:
            await client.create(routes(copy.deepcopy(ROUTE)), namespace="prod")
        assert caught.value.status.code == 409
        assert caught.value.status.reason == "AlreadyExists"
    finally:
        await client.close()
