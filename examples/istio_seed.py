"""The seed's Istio example, reproduced with canarykit, then a whole rollout on it.

The seed (section 4.1) routes 10% of Chrome users to ``v2`` of ``app`` and everyone else
to ``v1``, with a VirtualService over the ``v1`` and ``v2`` subsets of a DestinationRule.
In canarykit that is one split: no weighted traffic, and a header route on
``user-agent`` (the regular expression ``.*Chrome.*``) sending 10% of the matching
requests to the canary. `IstioRouter` writes it as the seed does, in a route of its own
placed before yours; your route (everything to ``v1``) stays as it is.

This script needs no cluster: ``router.render(split, current)`` returns the object that
``await router.apply(split)`` would write over ``current``. It prints, as YAML, the
seed's VirtualService, then the one at each step of a rollout (Chrome users first, then
10%, 20%, 50% and 100% of everyone, with 5% mirrored at 10%), then the rollback, which
gives back the original, and the DestinationRule with the two subsets.

Against a cluster (``pip install 'canarykit[kubernetes]'``) the same router runs the
rollout::

    outcome = await canarykit.run_rollout(plan, router=router, metrics=..., decider=...)

Run it with ``python examples/istio_seed.py``; ``kubectl apply -f -`` takes its output.
"""

from __future__ import annotations

import yaml

from canarykit import HeaderRoute, TrafficSplit
from canarykit.routers import IstioRouter

router = IstioRouter(
    virtual_service="app",
    namespace="default",
    host="app",
    stable_subset="v1",  # the DestinationRule's subsets, as in the seed
    canary_subset="v2",
    create_subsets=True,  # apply() adds the subsets if the DestinationRule lacks them
)

CHROME = HeaderRoute(header="user-agent", value=".*Chrome.*", match="regex", percent=10)
SEED = TrafficSplit(canary_percent=0, header_routes=[CHROME])

STEPS = [
    ("10% of everyone, 5% mirrored", TrafficSplit(canary_percent=10, mirror_percent=5)),
    ("20% of everyone", TrafficSplit(canary_percent=20)),
    ("50% of everyone", TrafficSplit(canary_percent=50)),
    ("promoted: 100% to v2", TrafficSplit(canary_percent=100)),
]


def show(comment: str, obj: dict[str, object]) -> None:
    print(f"# {comment}")
    print(yaml.safe_dump(obj, sort_keys=False), end="")
    print("---")


def main() -> None:
    original = router.render(TrafficSplit())  # your VirtualService: all of app to v1
    current = router.render(SEED, original)
    show("The seed's example: 10% of Chrome users to v2, everyone else to v1", current)

    for title, split in STEPS:
        current = router.render(split, current)
        weights = [
            (entry["destination"]["subset"], entry["weight"])
            for entry in current["spec"]["http"][0]["route"]
        ]
        show(f"{title}: {weights}", current)

    rolled_back = router.render(TrafficSplit(), current)
    show(f"Rolled back: the original VirtualService again: {rolled_back == original}", rolled_back)

    print("# The DestinationRule with the subsets (apply() creates it with create_subsets=True)")
    print(yaml.safe_dump(router.render_destination_rule(), sort_keys=False), end="")


if __name__ == "__main__":
    main()
