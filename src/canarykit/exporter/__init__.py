"""Exported metrics: a rollout's weight, phase, step, verdicts and duration for Prometheus.

`PrometheusExporter` is a rollout listener that keeps prometheus_client gauges, counters
and a histogram up to date, labelled by the rollout's name. The names follow Flagger's
(``flagger_canary_weight``, ``flagger_canary_status``, ``flagger_canary_duration_seconds``,
``flagger_canary_metric_analysis``) with a ``canarykit_`` prefix:

- ``canarykit_canary_weight{rollout}`` (gauge): the canary's confirmed weight, 0-100.
- ``canarykit_canary_status{rollout}`` (gauge): 0 running, 1 succeeded, 2 failed (rolled
  back or aborted), Flagger's codes.
- ``canarykit_canary_phase{rollout,phase}`` (gauge): 1 for the current phase, 0 for the
  others.
- ``canarykit_canary_step{rollout}`` (gauge): the current step's index, from 0.
- ``canarykit_canary_checks_total{rollout,kind}`` (counter): analysis windows judged, by
  the window's verdict (pass, not_yet, inconclusive, fail).
- ``canarykit_canary_metric_verdicts_total{rollout,metric,kind}`` (counter): each metric's
  verdicts.
- ``canarykit_canary_metric_analysis{rollout,metric}`` (gauge): each metric's last judged
  value.
- ``canarykit_canary_errors_total{rollout,kind}`` (counter): analysis, router and lease
  errors.
- ``canarykit_canary_duration_seconds{rollout}`` (histogram): a finished rollout's
  duration from its start to its end, in seconds of its clock.
- ``canarykit_rollouts_total{rollout,outcome}`` (counter): finished rollouts by outcome
  (succeeded, rolled_back, aborted).

Needs prometheus_client: ``pip install 'canarykit[exporter]'``.
"""

from ._prometheus import DURATION_BUCKETS as DURATION_BUCKETS
from ._prometheus import PrometheusExporter as PrometheusExporter

__all__ = ["DURATION_BUCKETS", "PrometheusExporter"]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
