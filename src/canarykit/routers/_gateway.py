"""The Gateway API router: splits one rule of an HTTPRoute between two Services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import ConfigError
from .._protocols import RouterCapabilities
from .._split import TrafficSplit
from ._kubernetes import HTTPROUTE, KubernetesConnection, ListRouter
from ._render import (
    HTTPRouteTarget,
    _gateway_header,
    httproute_base,
    httproute_read,
    httproute_render,
)

__all__ = ["GatewayAPIRouter"]

# The Gateway API's limits (the HTTPRoute CRD's maxItems and maxLength).
MAX_RULES = 16
MAX_HEADER_VALUE = 4096


def _check_split(split: Any) -> TrafficSplit:
    if not isinstance(split, TrafficSplit):
        raise ConfigError("split", split, "must be a TrafficSplit")
    return split


class GatewayAPIRouter(ListRouter):
    """A `TrafficRouter` for a Gateway API ``HTTPRoute`` (``gateway.networking.k8s.io/v1``).

    The route is yours: it has one rule sending traffic to the stable Service (or name
    it with `rule`). canarykit adds rules of its own next to it, named
    ``canarykit-<canary_service>-...``, and never edits yours:

    - the canary percent: a copy of your rule, same matches, its ``backendRefs``
      weighted between the stable and the canary Service (10% is weights 90 and 10,
      0.5% is 995 and 5: out of 100 x 10**d for a percent with d decimals, up to 4);
    - each header route: a copy of your rule whose matches also require the header
      (``Exact`` or ``RegularExpression``; a prefix route becomes the regular expression
      ``^<escaped prefix>.*``), weighted by the header route's percent;
    - mirroring: a ``RequestMirror`` filter to the canary on the weighted rule, with a
      ``percent`` or, for a fractional one, a ``fraction``.

    The stable-only split removes them, leaving the route exactly as it was; other rules,
    labels and annotations are never touched. `read()` reads the split back from the
    route. The canary's backendRef copies the stable one (port, namespace) unless your
    rule lists the canary already; `port` sets its port.

    Updates are JSON merge patches guarded by the ``resourceVersion`` read, retried up to
    `conflict_attempts` times when someone else changes the route in between (409), each
    time recomputed from their version, so their change is kept. Needs the ``name`` field
    of route rules (GEP-995, in the standard channel since Gateway API v1.4): a cluster
    whose CRD drops it is detected and the change undone. Needs ``pip install
    'canarykit[kubernetes]'`` (lightkube) to reach a cluster; `render` needs nothing.

    >>> from canarykit import TrafficSplit
    >>> router = GatewayAPIRouter(
    ...     route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2",
    ...     port=8080,
    ... )
    >>> route = router.render(TrafficSplit(canary_percent=10))
    >>> [(ref["name"], ref["weight"]) for ref in route["spec"]["rules"][0]["backendRefs"]]
    [('shop-v1', 90), ('shop-v2', 10)]
    """

    kind = HTTPROUTE
    list_key = "rules"

    def __init__(
        self,
        *,
        route: str,
        namespace: str,
        stable_service: str,
        canary_service: str,
        port: int | None = None,
        rule: str | None = None,
        connection: KubernetesConnection | None = None,
        conflict_attempts: int = 5,
    ) -> None:
        self.target = HTTPRouteTarget(
            route=route,
            namespace=namespace,
            stable_service=stable_service,
            canary_service=canary_service,
            port=port,
            rule=rule,
        )
        super().__init__(
            name=route,
            namespace=namespace,
            connection=connection,
            conflict_attempts=conflict_attempts,
        )

    def __repr__(self) -> str:
        target = self.target
        return (
            f"GatewayAPIRouter(route='{target.namespace}/{target.route}', "
            f"stable_service={target.stable_service!r}, canary_service={target.canary_service!r})"
        )

    @property
    def capabilities(self) -> RouterCapabilities:
        """Weights, header routes, mirroring and read-back."""
        return RouterCapabilities(weights=True, header_routes=True, mirroring=True, read_back=True)

    def render(
        self, split: TrafficSplit, current: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The HTTPRoute that `apply(split)` would write over `current`; no cluster needed.

        Without `current`, over a new route whose one rule sends everything to the stable
        Service on `port` (``canarykit render gateway-api`` prints this).
        """
        base = httproute_base(self.target) if current is None else current
        return httproute_render(self.target, _check_split(split), base)

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split the API server would refuse in an HTTPRoute.

        An HTTPRoute holds at most 16 rules (the Gateway API's ``maxItems``): canarykit's,
        one per header route and one for the weights, and yours, at least one. A header
        match's value holds at most 4,096 characters.
        """
        super().check_split(split)
        ours = len(split.header_routes) + (
            1 if split.canary_percent > 0 or split.mirror_percent > 0 else 0
        )
        if ours + 1 > MAX_RULES:
            raise ConfigError(
                "header_routes",
                len(split.header_routes),
                f"an HTTPRoute holds at most {MAX_RULES} rules: canarykit would add {ours} "
                f"beside yours",
            )
        for index, route in enumerate(split.header_routes):
            value = _gateway_header(route)[1]["value"]
            if len(value) > MAX_HEADER_VALUE:
                raise ConfigError(
                    f"header_routes[{index}].value",
                    route.value,
                    f"an HTTPRoute header match holds at most {MAX_HEADER_VALUE} characters",
                )

    def _render(self, split: TrafficSplit, current: Mapping[str, Any]) -> dict[str, Any]:
        return httproute_render(self.target, split, current)

    def _read(self, current: Mapping[str, Any]) -> TrafficSplit:
        return httproute_read(self.target, current)

    def _kept_names_hint(self) -> str:
        return (
            "If the HTTPRoute CRD is older than Gateway API v1.4, it drops the rules' "
            "'name' field, which canarykit needs to find its own rules: upgrade the CRDs."
        )

    async def apply(self, split: TrafficSplit) -> None:
        """Put `split` in force in the HTTPRoute; raises `RouterError` when it cannot."""
        await self._apply(_check_split(split))

    async def read(self) -> TrafficSplit:
        """The split in force in the HTTPRoute now."""
        split: TrafficSplit = await self._read_current()
        return split
