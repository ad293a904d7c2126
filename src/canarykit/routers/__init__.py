"""Traffic routers for real load balancers and for routing inside an application.

- `NginxRouter`: owns an include file with the stable and canary upstreams; validates
  with `nginx -t` and reloads the master process.
- `HAProxyRouter`: sets server weights through HAProxy's runtime API and reads them back.
- `WeightedRouter`: in-process smooth weighted round-robin and sticky assignment by key,
  for applications that pick the version themselves.
"""

# -- nginx, HAProxy, split probe: imports --
# -- end --
# -- in-process: imports --
# -- end --

__all__ = [
    # -- nginx, HAProxy, split probe: names --
    # -- end --
    # -- in-process: names --
    # -- end --
]

# Public names say they live in `canarykit.routers`, not in a private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("canarykit.routers._"):
        _obj.__module__ = "canarykit.routers"
