"""``canarykit init`` with a Gateway API router: the HTTPRoute is checked to exist and its
split reported, against the local server that speaks the API server's get and patch.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import pytest

pytest.importorskip("lightkube")

from canarykit._cli import main
from canarykit.policy import Deployment
from canarykit.routers import GatewayAPIRouter, KubernetesConnection
from helpers.k8s_fake_apiserver import FakeKubeAPI
from helpers.policies import ERROR_RATE, WEIGHTS_PLAN, policy, rollout_table

# Each test gets its own traffic-target locks (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("lock_dir")

ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "shop", "namespace": "prod"},
    "spec": {
        "parentRefs": [{"name": "public"}],
        "rules": [{"backendRefs": [{"name": "shop-v1", "port": 8080}]}],
    },
}

POLICY = policy(
    WEIGHTS_PLAN,
    ERROR_RATE,
    rollout_table("shop"),
    """\
[router]
kind = "gateway-api"
route = "{route}"
namespace = "prod"
stable_service = "shop-v1"
canary_service = "shop-v2"
""",
)


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        server.put(ROUTE)
        yield server


def init(tmp_path, monkeypatch, api, route):
    connection = KubernetesConnection(
        kubeconfig=api.kubeconfig(tmp_path / "config"), trust_env=False
    )
    policy = tmp_path / "shop.toml"
    policy.write_text(POLICY.format(state=tmp_path / "state", route=route))
    # The policy's own connection would read the user's kubeconfig: this one is the fake's.
    router = GatewayAPIRouter(
        route=route,
        namespace="prod",
        stable_service="shop-v1",
        canary_service="shop-v2",
        connection=connection,
    )
    monkeypatch.setattr(Deployment, "build_router", lambda self: router)
    return main(["init", str(policy)])


def test_an_existing_route_at_stable_is_ready(tmp_path, monkeypatch, api, capsys):
    assert init(tmp_path, monkeypatch, api, "shop") == 0
    out = capsys.readouterr().out
    assert "init: HTTPRoute prod/shop exists" in out
    assert "init: the router is at stable" in out


def test_a_missing_route_is_named(tmp_path, monkeypatch, api, capsys):
    assert init(tmp_path, monkeypatch, api, "nowhere") == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err, err
