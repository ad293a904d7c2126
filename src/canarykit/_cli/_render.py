r"""``canarykit render``: print the object a Kubernetes router would apply, as YAML.

::

    canarykit render gateway-api --name N --namespace NS --stable SVC --canary SVC
        --weight W [--header NAME=REGEX ...] [--header-percent P] [--mirror PCT]
        [--port PORT] [--gateway NAME ...] [--hostname HOST ...]
    canarykit render istio --name N --namespace NS --stable SUBSET --canary SUBSET
        --weight W [--header NAME=REGEX ...] [--header-percent P] [--mirror PCT]
        [--host HOST] [--gateway NAME ...] [--destination-rule] [--subset-label KEY]

No cluster is needed: the object is a new HTTPRoute (or VirtualService) whose one rule
sends everything to the stable version, with canarykit's rules for the split added, as
`GatewayAPIRouter.render` and `IstioRouter.render` build it. For Istio, ``--stable`` and
``--canary`` name the subsets of ``--host`` (by default ``--name``), and
``--destination-rule`` also prints a DestinationRule with the two subsets. The output
can be reviewed, or applied with ``kubectl apply -f -``. Needs PyYAML (in the
``kubernetes`` extra).

The seed's Istio example (10% of Chrome users to ``v2``, everyone else to ``v1``)::

    canarykit render istio --name app --namespace default --stable v1 --canary v2 \
        --weight 0 --header 'user-agent=.*Chrome.*' --header-percent 10

Bad input raises `ConfigError` naming the option (the command line prints it and exits
with 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, TextIO

from .._errors import ConfigError
from .._split import HeaderRoute, TrafficSplit
from ..routers._render import (
    HTTPRouteTarget,
    VirtualServiceTarget,
    destination_rule_base,
    httproute_base,
    httproute_render,
    virtualservice_base,
    virtualservice_render,
)

__all__ = ["add_render_command", "run_render"]

KINDS = ("gateway-api", "istio")


def add_render_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``render`` to the command line's subparsers; ``run_render`` runs it."""
    render: argparse.ArgumentParser = subparsers.add_parser(
        "render",
        help="print the HTTPRoute or VirtualService a Kubernetes router would apply",
        description=(
            "Print, as YAML, a new Gateway API HTTPRoute or Istio VirtualService that sends "
            "WEIGHT percent of the traffic to the canary, with canarykit's rules as the "
            "routers write them. No cluster is needed."
        ),
    )
    render.add_argument("kind", choices=KINDS, help="gateway-api (HTTPRoute) or istio")
    render.add_argument("--name", required=True, help="the route's (VirtualService's) name")
    render.add_argument("--namespace", default="default", help="its namespace (default: default)")
    render.add_argument(
        "--stable", required=True, metavar="SVC", help="the stable Service (Istio: subset)"
    )
    render.add_argument(
        "--canary", required=True, metavar="SVC", help="the canary Service (Istio: subset)"
    )
    render.add_argument(
        "--weight", type=float, default=0.0, metavar="W", help="canary percent (default: 0)"
    )
    render.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="send requests whose header matches the regular expression to the canary (repeatable)",
    )
    render.add_argument(
        "--header-match",
        choices=("regex", "exact", "prefix"),
        default="regex",
        help="how --header values compare (default: regex)",
    )
    render.add_argument(
        "--header-percent",
        type=float,
        default=100.0,
        metavar="P",
        help="percent of the matching requests sent to the canary (default: 100)",
    )
    render.add_argument(
        "--mirror", type=float, default=0.0, metavar="PCT", help="percent mirrored to the canary"
    )
    render.add_argument(
        "--port", type=int, default=80, help="gateway-api: the Services' port (default: 80)"
    )
    render.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="NAME",
        help="gateway-api: a parent Gateway; istio: a gateway of the VirtualService",
    )
    render.add_argument(
        "--hostname", action="append", default=[], help="gateway-api: a hostname of the route"
    )
    render.add_argument(
        "--host", default=None, help="istio: the destination host (default: --name)"
    )
    render.add_argument(
        "--destination-rule",
        action="store_true",
        help="istio: also print a DestinationRule with the two subsets",
    )
    render.add_argument(
        "--subset-label",
        default="version",
        metavar="KEY",
        help="istio: the pod label the subsets select on (default: version)",
    )
    render.set_defaults(handler=run_render)
    return render


def _header(text: str, match: str, percent: float) -> HeaderRoute:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ConfigError("--header", text, "must be NAME=VALUE, e.g. 'user-agent=.*Chrome.*'")
    return HeaderRoute(header=name, value=value, match=match, percent=percent)


def _split(args: argparse.Namespace) -> TrafficSplit:
    routes = [_header(text, args.header_match, args.header_percent) for text in args.header]
    try:
        return TrafficSplit(
            canary_percent=args.weight, header_routes=routes, mirror_percent=args.mirror
        )
    except ConfigError as exc:
        option = {"canary_percent": "--weight", "mirror_percent": "--mirror"}
        raise ConfigError(option.get(exc.field, exc.field), exc.value, exc.problem) from None


def _objects(args: argparse.Namespace) -> list[dict[str, Any]]:
    split = _split(args)
    if args.kind == "gateway-api":
        route = HTTPRouteTarget(
            route=args.name,
            namespace=args.namespace,
            stable_service=args.stable,
            canary_service=args.canary,
            port=args.port,
        )
        base = httproute_base(route, gateways=args.gateway, hostnames=args.hostname)
        return [httproute_render(route, split, base)]
    service = VirtualServiceTarget(
        virtual_service=args.name,
        namespace=args.namespace,
        host=args.host or args.name,
        stable_subset=args.stable,
        canary_subset=args.canary,
        subset_label=args.subset_label,
    )
    objects = [
        virtualservice_render(service, split, virtualservice_base(service, gateways=args.gateway))
    ]
    if args.destination_rule:
        objects.append(destination_rule_base(service))
    return objects


def run_render(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> int:
    """Print the objects for the parsed ``render`` arguments to `out`; return the exit code.

    0 when printed; 1, with a message on `err` (standard error by default), when PyYAML
    is not installed. Raises `ConfigError` naming the option for bad input.
    """
    objects = _objects(args)
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        print(
            "canarykit: error: canarykit render needs PyYAML: pip install 'canarykit[kubernetes]'",
            file=sys.stderr if err is None else err,
        )
        return 1
    out.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0
