"""The Istio router: splits one route of a VirtualService between two DestinationRule subsets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import ConfigError, RouterError
from .._protocols import RouterCapabilities
from .._split import TrafficSplit
from ._kubernetes import (
    DESTINATION_RULE,
    VIRTUAL_SERVICE,
    Conflict,
    KubernetesConnection,
    ListRouter,
)
from ._render import (
    VirtualServiceTarget,
    destination_rule_base,
    destination_rule_missing,
    destination_rule_subsets,
    virtualservice_base,
    virtualservice_read,
    virtualservice_render,
)

__all__ = ["IstioRouter"]


def _check_split(split: Any) -> TrafficSplit:
    if not isinstance(split, TrafficSplit):
        raise ConfigError("split", split, "must be a TrafficSplit")
    return split


class IstioRouter(ListRouter):
    """A `TrafficRouter` for an Istio ``VirtualService`` (``networking.istio.io/v1``).

    The VirtualService is yours: it has one http route sending `host` to the
    `stable_subset` (or name it with `route`). canarykit adds routes of its own just
    before it, named ``canarykit-<canary_subset>-...``, and never edits yours:

    - the canary percent: a copy of your route, same ``match``, its ``route`` weighted
      between the canary and the stable subset (10% is weights 10 and 90; 0.5% is 5 and
      995: out of 100 x 10**d for a percent with d decimals, up to 4);
    - each header route: a copy of your route whose matches also require the header
      (``exact``, ``prefix`` or ``regex``; the name in lower case, as Istio wants it);
    - mirroring: ``mirror`` to the canary subset with ``mirrorPercentage`` on the weighted
      route.

    The seed's example, 10% of Chrome users to ``v2`` and everyone else to ``v1``, is
    ``TrafficSplit(header_routes=[HeaderRoute(header="user-agent", value=".*Chrome.*",
    match="regex", percent=10)])``. The stable-only split removes canarykit's routes,
    leaving the VirtualService exactly as it was. `read()` reads the split back.

    Before a split that sends traffic to the canary, the DestinationRule
    (`destination_rule`, by default the host's first label) must have both subsets;
    with `create_subsets`, canarykit creates the rule or adds the missing subsets,
    selecting pods labelled ``<subset_label>: <subset>`` (``version: v2``), and leaves
    them there. Going back to stable-only never needs the DestinationRule.

    Updates are JSON merge patches guarded by the ``resourceVersion`` read, retried up to
    `conflict_attempts` times when someone else changes the object in between (409), each
    time recomputed from their version. Needs ``pip install 'canarykit[kubernetes]'``
    (lightkube) to reach a cluster; `render` needs nothing.

    >>> from canarykit import TrafficSplit
    >>> router = IstioRouter(
    ...     virtual_service="app", namespace="default", host="app",
    ...     stable_subset="v1", canary_subset="v2",
    ... )
    >>> service = router.render(TrafficSplit(canary_percent=10))
    >>> [(r["destination"]["subset"], r["weight"]) for r in service["spec"]["http"][0]["route"]]
    [('v2', 10), ('v1', 90)]
    """

    kind = VIRTUAL_SERVICE
    list_key = "http"

    def __init__(
        self,
        *,
        virtual_service: str,
        namespace: str,
        host: str,
        stable_subset: str,
        canary_subset: str,
        route: str | None = None,
        destination_rule: str | None = None,
        create_subsets: bool = False,
        subset_label: str = "version",
        connection: KubernetesConnection | None = None,
        conflict_attempts: int = 5,
    ) -> None:
        self.target = VirtualServiceTarget(
            virtual_service=virtual_service,
            namespace=namespace,
            host=host,
            stable_subset=stable_subset,
            canary_subset=canary_subset,
            route=route,
            destination_rule=destination_rule,
            subset_label=subset_label,
        )
        if not isinstance(create_subsets, bool):
            raise ConfigError("create_subsets", create_subsets, "must be True or False")
        self.create_subsets = create_subsets
        super().__init__(
            name=virtual_service,
            namespace=namespace,
            connection=connection,
            conflict_attempts=conflict_attempts,
        )

    def __repr__(self) -> str:
        target = self.target
        return (
            f"IstioRouter(virtual_service='{target.namespace}/{target.virtual_service}', "
            f"host={target.host!r}, stable_subset={target.stable_subset!r}, "
            f"canary_subset={target.canary_subset!r})"
        )

    @property
    def capabilities(self) -> RouterCapabilities:
        """Weights, header routes, mirroring and read-back."""
        return RouterCapabilities(weights=True, header_routes=True, mirroring=True, read_back=True)

    def render(
        self, split: TrafficSplit, current: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The VirtualService that `apply(split)` would write over `current`; no cluster needed.

        Without `current`, over a new VirtualService for `host` whose one route sends
        everything to the stable subset (``canarykit render istio`` prints this).
        """
        base = virtualservice_base(self.target) if current is None else current
        return virtualservice_render(self.target, _check_split(split), base)

    def render_destination_rule(self) -> dict[str, Any]:
        """The DestinationRule `apply` creates when there is none and `create_subsets` is set.

        Its subsets select pods by `subset_label`: ``{name: v2, labels: {version: v2}}``.
        """
        return destination_rule_base(self.target)

    def _render(self, split: TrafficSplit, current: Mapping[str, Any]) -> dict[str, Any]:
        return virtualservice_render(self.target, split, current)

    def _read(self, current: Mapping[str, Any]) -> TrafficSplit:
        return virtualservice_read(self.target, current)

    async def apply(self, split: TrafficSplit) -> None:
        """Put `split` in force in the VirtualService; raises `RouterError` when it cannot."""
        split = _check_split(split)
        if not split.is_stable_only:
            await self._ensure_subsets()
        await self._apply(split)

    async def read(self) -> TrafficSplit:
        """The split in force in the VirtualService now."""
        split: TrafficSplit = await self._read_current()
        return split

    async def _ensure_subsets(self) -> None:
        target = self.target
        name = target.destination_rule_name
        what = f"DestinationRule {target.namespace}/{name}"
        wanted = f"subsets {target.stable_subset!r} and {target.canary_subset!r}"
        if not self.create_subsets:
            try:
                rule = await self._client.get(DESTINATION_RULE, name)
            except RouterError as exc:
                raise RouterError(f"{exc} (canarykit needs it with {wanted})") from exc
            assert rule is not None
            missing = destination_rule_missing(target, rule)
            if missing:
                names = [subset.get("name") for subset in rule["spec"].get("subsets") or []]
                raise RouterError(
                    f"{what} has no subset {', '.join(map(repr, missing))} (it has "
                    f"{', '.join(map(repr, names)) or 'none'}); add it, or let canarykit "
                    "(create_subsets=True)"
                )
            return
        found = await self._client.get(DESTINATION_RULE, name, missing_ok=True)
        if found is None:
            try:
                await self._client.create(DESTINATION_RULE, self.render_destination_rule())
                return
            except Conflict:
                pass  # someone created it meanwhile: add the subsets to theirs

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            missing = destination_rule_missing(target, current)
            if not missing:
                return None
            return {"subsets": destination_rule_subsets(target, current, missing)}

        await self._client.update(DESTINATION_RULE, name, change, attempts=self.conflict_attempts)
