"""A canary on a Gateway API HTTPRoute: what canarykit writes at each step.

Your HTTPRoute ``shop`` sends ``/admin`` to an admin Service and everything else to
``shop-v1``. `GatewayAPIRouter` splits that second rule with ``shop-v2``: it adds rules
of its own just before it (named ``canarykit-shop-v2-...``) and never edits yours, so
going back to stable-only gives back your route exactly.

This script needs no cluster: ``router.render(split, current)`` returns the route that
``await router.apply(split)`` would write over ``current``. It prints, as YAML, the
route at each step: beta testers first (header ``X-Canary: always``), then 0.5% of
everyone with 10% mirrored, 5%, 50% and 100%, then the rollback.

Against a cluster (``pip install 'canarykit[kubernetes]'``)::

    router = GatewayAPIRouter(
        route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2",
        connection=KubernetesConnection(context="prod"),
    )
    outcome = await canarykit.run_rollout(plan, router=router, metrics=..., decider=...)

Run it with ``python examples/gateway_api.py``.
"""

from __future__ import annotations

from typing import Any

import yaml

from canarykit import HeaderRoute, TrafficSplit
from canarykit.routers import GatewayAPIRouter

# Your route, as it is in the cluster.
ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "shop", "namespace": "prod", "labels": {"team": "payments"}},
    "spec": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["shop.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "backendRefs": [{"name": "admin", "port": 80}],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "timeouts": {"request": "10s"},
                "backendRefs": [{"name": "shop-v1", "port": 8080}],
            },
        ],
    },
}

router = GatewayAPIRouter(
    route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2"
)

BETA = HeaderRoute(header="X-Canary", value="always", match="exact")
STEPS = [
    ("beta testers only", TrafficSplit(header_routes=[BETA])),
    ("0.5% of everyone, 10% mirrored", TrafficSplit(canary_percent=0.5, mirror_percent=10)),
    ("5% of everyone", TrafficSplit(canary_percent=5)),
    ("50% of everyone", TrafficSplit(canary_percent=50)),
    ("promoted: 100% to shop-v2", TrafficSplit(canary_percent=100)),
]


def weights(route: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(rule, Service, weight) for canarykit's rules."""
    return [
        (rule["name"], ref["name"], ref["weight"])
        for rule in route["spec"]["rules"]
        if rule.get("name", "").startswith("canarykit-")
        for ref in rule["backendRefs"]
    ]


def main() -> None:
    current = ROUTE
    for title, split in STEPS:
        current = router.render(split, current)
        print(f"# {title}: {weights(current)}")
        print(yaml.safe_dump(current, sort_keys=False), end="")
        print("---")
    rolled_back = router.render(TrafficSplit(), current)
    print(f"# Rolled back: your route again, unchanged: {rolled_back == ROUTE}")
    print(yaml.safe_dump(rolled_back, sort_keys=False), end="")


if __name__ == "__main__":
    main()
