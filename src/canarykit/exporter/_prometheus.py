"""Rollout progress as Prometheus metrics, kept up to date by a rollout listener.

The metric names, Flagger's with a ``canarykit_`` prefix and a ``rollout`` label instead
of a Kubernetes name and namespace, are listed in `canarykit.exporter`. The listener only
sets numbers (no I/O); prometheus_client serves them from its own thread or from your web
framework.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._events import (
    AnalysisFailed,
    LeaseRevoked,
    PhaseChanged,
    RouterCallFailed,
    SplitConfirmed,
    VerdictReached,
)
from .._machine import Phase
from .._safe import check_name
from .._validate import finite

if TYPE_CHECKING:
    from .._runner import Rollout

__all__ = ["DURATION_BUCKETS", "PrometheusExporter"]

logger = logging.getLogger("canarykit.exporter")

_EXTRA = "pip install 'canarykit[exporter]'"

# Rollouts take minutes to hours: 1 min, 5, 10, 15, 30 min, 1, 2, 4, 8, 12, 24 h.
DURATION_BUCKETS = (
    60.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    43200.0,
    86400.0,
)

_STATUS = {Phase.SUCCEEDED: 1.0, Phase.ROLLED_BACK: 2.0, Phase.ABORTED: 2.0}


def _import_prometheus_client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ModuleNotFoundError(
            f"PrometheusExporter needs prometheus_client, which is not installed: {_EXTRA}"
        ) from None
    return prometheus_client


def _buckets(value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("duration_buckets", value, "must be a list of increasing seconds")
    buckets = tuple(finite("duration_buckets", v) for v in value)
    if not buckets or any(b <= a for a, b in itertools.pairwise(buckets)) or buckets[0] <= 0:
        raise ConfigError("duration_buckets", value, "must be a list of increasing seconds > 0")
    return buckets


class _Progress:
    """What the exporter knows of one rollout: when it started (for its duration)."""

    __slots__ = ("started_at",)

    def __init__(self) -> None:
        self.started_at: float | None = None


class PrometheusExporter:
    """Keep Prometheus metrics of rollouts up to date: a listener, labelled by rollout name.

    ::

        from prometheus_client import start_http_server
        from canarykit.exporter import PrometheusExporter

        exporter = PrometheusExporter()            # the default registry, or registry=...
        start_http_server(9109)                    # serve /metrics (prometheus_client)
        rollout = Rollout(plan, ..., key="web")
        exporter.attach(rollout)                   # labelled rollout="web"
        await rollout.run()

    `attach(rollout)` labels by the rollout's key and reads its exact step. The exporter
    is also a listener itself (``Rollout(..., listeners=[exporter])``), labelled
    `rollout`; the step is then the one carried by the last event that has one (phase
    changes). One exporter per registry: the metric names are registered once (see the
    `canarykit.exporter` for them). `forget(name)` removes a finished rollout's series.

    Needs prometheus_client (``pip install 'canarykit[exporter]'``).
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        rollout: str = "rollout",
        duration_buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> None:
        client = _import_prometheus_client()
        if registry is None:
            registry = client.REGISTRY
        elif not isinstance(registry, client.CollectorRegistry):
            raise ConfigError("registry", registry, "must be a prometheus_client CollectorRegistry")
        self.registry = registry
        self.rollout = check_name("rollout", rollout)
        buckets = _buckets(duration_buckets)
        self._progress: dict[str, _Progress] = {}
        try:
            self.weight = client.Gauge(
                "canarykit_canary_weight",
                "The canary's confirmed traffic weight, in percent.",
                ["rollout"],
                registry=registry,
            )
            self.status = client.Gauge(
                "canarykit_canary_status",
                "The rollout's status: 0 running, 1 succeeded, 2 failed (rolled back or aborted).",
                ["rollout"],
                registry=registry,
            )
            self.phase = client.Gauge(
                "canarykit_canary_phase",
                "1 for the rollout's current phase, 0 for the others.",
                ["rollout", "phase"],
                registry=registry,
            )
            self.step = client.Gauge(
                "canarykit_canary_step",
                "The index of the rollout's current step, from 0.",
                ["rollout"],
                registry=registry,
            )
            self.checks = client.Counter(
                "canarykit_canary_checks",
                "Analysis windows judged, by the window's verdict.",
                ["rollout", "kind"],
                registry=registry,
            )
            self.metric_verdicts = client.Counter(
                "canarykit_canary_metric_verdicts",
                "Per-metric verdicts, by metric and verdict.",
                ["rollout", "metric", "kind"],
                registry=registry,
            )
            self.metric_analysis = client.Gauge(
                "canarykit_canary_metric_analysis",
                "The last judged value of each metric.",
                ["rollout", "metric"],
                registry=registry,
            )
            self.errors = client.Counter(
                "canarykit_canary_errors",
                "Errors while running the rollout: analysis, router, lease.",
                ["rollout", "kind"],
                registry=registry,
            )
            self.duration = client.Histogram(
                "canarykit_canary_duration_seconds",
                "A finished rollout's duration, from its start to its end, in seconds.",
                ["rollout"],
                buckets=buckets,
                registry=registry,
            )
            self.outcomes = client.Counter(
                "canarykit_rollouts",
                "Finished rollouts, by outcome: succeeded, rolled_back, aborted.",
                ["rollout", "outcome"],
                registry=registry,
            )
        except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry"
            raise ConfigError(
                "registry", registry, f"already holds canarykit metrics ({exc}); share one exporter"
            ) from None

    # ------------------------------------------------------------------ listening

    def __call__(self, event: object) -> None:
        """The listener: update the metrics of the rollout named `rollout`; never raises."""
        self._observe(event, self.rollout, None)

    def attach(self, rollout: Rollout) -> None:
        """Listen to `rollout`, labelled by its key, reading its exact step and weight."""
        key = check_name("rollout.key", rollout.key)
        self._observe_state(key, rollout.state)

        def listener(event: object) -> None:
            self._observe(event, key, rollout)

        rollout.add_listener(listener)

    def forget(self, rollout: str) -> None:
        """Remove every series labelled with `rollout` (e.g. a finished rollout's)."""
        self._progress.pop(rollout, None)
        for metric in self._metrics():
            # prometheus_client keeps the labelled children in `_metrics`; remove() needs
            # every label value, so find the ones that carry this rollout's name.
            children = getattr(metric, "_metrics", {})
            for labels in list(children):
                if labels and labels[0] == rollout:
                    metric.remove(*labels)

    def _metrics(self) -> tuple[Any, ...]:
        return (
            self.weight,
            self.status,
            self.phase,
            self.step,
            self.checks,
            self.metric_verdicts,
            self.metric_analysis,
            self.errors,
            self.duration,
            self.outcomes,
        )

    # ------------------------------------------------------------------ updating

    def _start(self, name: str) -> _Progress:
        progress = self._progress.get(name)
        if progress is None:
            progress = self._progress[name] = _Progress()
            for phase in Phase:  # every phase's series exists from the start
                self.phase.labels(name, phase.value).set(0)
        return progress

    def _set_phase(self, name: str, phase: Phase) -> None:
        for other in Phase:
            self.phase.labels(name, other.value).set(1.0 if other is phase else 0.0)
        self.status.labels(name).set(_STATUS.get(phase, 0.0))

    def _observe_state(self, name: str, state: Any) -> None:
        progress = self._start(name)
        self._set_phase(name, state.phase)
        self.step.labels(name).set(state.step)
        if state.confirmed is not None:
            self.weight.labels(name).set(state.confirmed.canary_percent)
        if state.started_at is not None and progress.started_at is None:
            progress.started_at = state.started_at

    def _observe(self, event: object, name: str, rollout: Rollout | None) -> None:
        try:
            self._update(event, name)
            if rollout is not None:
                self._observe_state(name, rollout.state)
        except Exception:
            # Metrics must never fail a rollout; log the bug instead.
            logger.exception("%s: could not export %s", name, type(event).__name__)

    def _update(self, event: object, name: str) -> None:
        progress = self._start(name)
        if isinstance(event, PhaseChanged):
            self._phase_changed(event, name, progress)
        elif isinstance(event, SplitConfirmed):
            self.weight.labels(name).set(event.split.canary_percent)
        elif isinstance(event, VerdictReached):
            verdict = event.verdict
            self.checks.labels(name, verdict.kind.value).inc()
            for item in verdict.metrics:
                self.metric_verdicts.labels(name, item.metric, item.kind.value).inc()
                if item.value is not None:
                    self.metric_analysis.labels(name, item.metric).set(item.value)
        elif isinstance(event, AnalysisFailed):
            self.errors.labels(name, "analysis").inc()
        elif isinstance(event, RouterCallFailed):
            self.errors.labels(name, "router").inc()
        elif isinstance(event, LeaseRevoked):
            self.errors.labels(name, "lease").inc()
        else:
            # RolloutResumed, and event kinds added later, may carry the phase.
            phase = getattr(event, "phase", None)
            if isinstance(phase, Phase):
                self._set_phase(name, phase)
        # Any event that carries the step (now or in a later canarykit) moves the gauge.
        step = getattr(event, "step", None)
        if isinstance(step, int) and not isinstance(step, bool):
            self.step.labels(name).set(step)

    def _phase_changed(self, event: PhaseChanged, name: str, progress: _Progress) -> None:
        self._set_phase(name, event.new)
        self.step.labels(name).set(event.step)
        if event.old is Phase.PENDING or event.old.is_terminal:
            progress.started_at = event.time  # a start, or a retry's new start
        if event.new.is_terminal:
            self.outcomes.labels(name, event.new.value).inc()
            if progress.started_at is not None:
                self.duration.labels(name).observe(max(0.0, event.time - progress.started_at))
            progress.started_at = None

    def __repr__(self) -> str:
        return f"PrometheusExporter(rollout={self.rollout!r})"
