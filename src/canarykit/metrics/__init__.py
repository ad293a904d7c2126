"""Metrics sources: Prometheus over its HTTP API, and an in-process recorder.

- `PrometheusSource`: instant and range queries filled in per arm and per window, mapped
  into observations; needs the `prometheus` extra (`pip install 'canarykit[prometheus]'`).
- `Recorder`: the application records each request's arm, outcome and latency; windows
  rotate and become observations.
"""

# -- Prometheus: imports --
# -- end --
# -- recorder: imports --
# -- end --

__all__ = [
    # -- Prometheus: names --
    # -- end --
    # -- recorder: names --
    # -- end --
]

# Public names say they live in `canarykit.metrics`, not in a private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("canarykit.metrics._"):
        _obj.__module__ = "canarykit.metrics"
