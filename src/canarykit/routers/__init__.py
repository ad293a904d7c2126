"""Traffic routers for real load balancers and for routing inside an application.

- `NginxRouter`: owns an include file with the stable and canary upstreams; validates
  with `nginx -T` and reloads the master process.
- `HAProxyRouter`: sets server weights through HAProxy's runtime API and reads them back.
- `FanOutRouter`: several routers as one (an HAProxy pair, nginx on three hosts): applies
  to all, confirms each by read-back, and puts all back to their last common split when
  one fails.
- `SplitProbe`: checks a split by sending requests through the proxy.
- `SlotRouter`: alternate slots (blue/green) over two routers: the idle slot is the
  canary, and after promotion the slots swap roles without moving traffic.
- `WeightedRouter`: in-process smooth weighted round-robin and sticky assignment by key,
  for applications that pick the version themselves.
- `GatewayAPIRouter`: an HTTPRoute rule between two Services; `IstioRouter`: a
  VirtualService route between two DestinationRule subsets; both through
  `KubernetesConnection` (kubeconfig or in-cluster; the `kubernetes` extra).
"""

from ._fanout import FanOutRouter as FanOutRouter
from ._gateway import GatewayAPIRouter as GatewayAPIRouter
from ._haproxy import HAProxyRouter as HAProxyRouter
from ._haproxy import HAProxyWeights as HAProxyWeights
from ._inprocess import WeightedRouter as WeightedRouter
from ._istio import IstioRouter as IstioRouter
from ._kubernetes import KubernetesConnection as KubernetesConnection
from ._nginx import NginxRouter as NginxRouter
from ._probe import ProbeResult as ProbeResult
from ._probe import SplitProbe as SplitProbe
from ._probe import binomial_tolerance as binomial_tolerance
from ._slots import SlotRouter as SlotRouter

__all__ = [
    "FanOutRouter",
    "GatewayAPIRouter",
    "HAProxyRouter",
    "HAProxyWeights",
    "IstioRouter",
    "KubernetesConnection",
    "NginxRouter",
    "ProbeResult",
    "SlotRouter",
    "SplitProbe",
    "WeightedRouter",
    "binomial_tolerance",
]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
