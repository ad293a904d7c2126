"""Verdicts: what a decider says about the canary, with a readable reason per metric."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import ConfigError
from ._validate import to_enum

__all__ = ["Judgement", "MetricVerdict", "Verdict", "VerdictKind"]


class VerdictKind(enum.Enum):
    """The four answers a decider can give, ordered from best to worst.

    - PASS: the canary is healthy as far as the evidence goes.
    - NOT_YET: too little data to say; the rollout carries on, nothing advances on it.
    - INCONCLUSIVE: the data is there but does not settle the question; the rollout pauses.
    - FAIL: the canary is worse; the rollout rolls back.
    """

    PASS = "pass"
    NOT_YET = "not_yet"
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"

    __hash__ = object.__hash__  # identity, as for `Phase`: cheap severity lookups

    def __repr__(self) -> str:
        return f"VerdictKind.{self.name}"

    @property
    def severity(self) -> int:
        """0 for PASS up to 3 for FAIL: `a & b` keeps the higher, `a | b` the lower."""
        return _SEVERITY[self]

    @staticmethod
    def worst(kinds: Iterable[VerdictKind]) -> VerdictKind:
        """The most severe of `kinds` (PASS when there are none)."""
        return max(kinds, key=_SEVERITY.__getitem__, default=VerdictKind.PASS)

    @staticmethod
    def best(kinds: Iterable[VerdictKind]) -> VerdictKind:
        """The least severe of `kinds` (FAIL when there are none)."""
        return min(kinds, key=_SEVERITY.__getitem__, default=VerdictKind.FAIL)


_SEVERITY = {kind: index for index, kind in enumerate(VerdictKind)}


def _to_kind(value: Any) -> Any:
    return to_enum(VerdictKind, value)


def _check_kind(field: str, value: Any) -> None:
    # A kind given as any other object would be read as neither FAIL nor PASS by the
    # rollout: a failing canary must not slip through as an unknown kind.
    if not isinstance(value, VerdictKind):
        raise ConfigError(field, value, "must be a VerdictKind or one of " + _KIND_NAMES)


_KIND_NAMES = ", ".join(repr(kind.value) for kind in VerdictKind)


def _required(field: str, data: Any, *names: str) -> list[Any]:
    """The values of `names` in saved `data`, or ConfigError naming what is missing."""
    if not isinstance(data, Mapping):
        raise ConfigError(field, data, "must be a mapping")
    for name in names:
        if name not in data:
            raise ConfigError(f"{field}.{name}", None, "is missing")
    return [data[name] for name in names]


@attrs.frozen(kw_only=True)
class MetricVerdict:
    """One metric's verdict and why, e.g. ``error_rate: fail (canary 5.1% > max 2%)``."""

    metric: str
    kind: VerdictKind = attrs.field(converter=_to_kind)
    reason: str
    value: float | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.metric, str):
            raise ConfigError("metric", self.metric, "must be a metric name")
        _check_kind("kind", self.kind)
        if not isinstance(self.reason, str):
            raise ConfigError("reason", self.reason, "must be a string")
        value = self.value
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError("value", value, "must be a number or None")

    def __str__(self) -> str:
        return f"{self.metric}: {self.kind.value} ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "metric": self.metric,
            "kind": self.kind.value,
            "reason": self.reason,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricVerdict:
        """Inverse of `to_json`."""
        metric, kind, reason = _required("metric_verdict", data, "metric", "kind", "reason")
        if not isinstance(kind, str):
            raise ConfigError("metric_verdict.kind", kind, "must be one of " + _KIND_NAMES)
        return cls(metric=metric, kind=kind, reason=reason, value=data.get("value"))


def _metric_verdicts(value: Iterable[MetricVerdict]) -> tuple[MetricVerdict, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError("metrics", value, "must be a sequence of MetricVerdict")
    return tuple(value)


@attrs.frozen(kw_only=True)
class Verdict:
    """A decider's answer for one window: a kind, a summary and the per-metric verdicts.

    `early_pass` (with PASS only) says the evidence already rules out a regression beyond
    the decider's margin, so the current hold or inline analysis may end early; deciders
    set it only when asked to (it is opt-in).

    >>> v = Verdict.from_metrics([MetricVerdict(metric="p99", kind=VerdictKind.PASS, reason="ok")])
    >>> v.kind
    VerdictKind.PASS
    """

    kind: VerdictKind = attrs.field(converter=_to_kind)
    reason: str
    metrics: tuple[MetricVerdict, ...] = attrs.field(default=(), converter=_metric_verdicts)
    early_pass: bool = False

    def __attrs_post_init__(self) -> None:
        _check_kind("kind", self.kind)
        if not isinstance(self.reason, str):
            raise ConfigError("reason", self.reason, "must be a string")
        for index, item in enumerate(self.metrics):
            if not isinstance(item, MetricVerdict):
                raise ConfigError(f"metrics[{index}]", item, "must be a MetricVerdict")
        if not isinstance(self.early_pass, bool):
            raise ConfigError("early_pass", self.early_pass, "must be True or False")

    @classmethod
    def from_metrics(cls, metrics: Iterable[MetricVerdict], *, reason: str = "") -> Verdict:
        """The worst of the metric verdicts, with their reasons joined unless `reason` is given."""
        metrics = tuple(metrics)
        if not metrics:
            return cls(kind=VerdictKind.NOT_YET, reason=reason or "no metrics were judged")
        kind = VerdictKind.worst(m.kind for m in metrics)
        if not reason:
            reason = "; ".join(str(m) for m in metrics if m.kind is kind)
        return cls(kind=kind, reason=reason, metrics=metrics)

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "metrics": [m.to_json() for m in self.metrics],
            "early_pass": self.early_pass,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        """Inverse of `to_json`."""
        kind, reason, metrics = _required("verdict", data, "kind", "reason", "metrics")
        if not isinstance(kind, str):
            raise ConfigError("verdict.kind", kind, "must be one of " + _KIND_NAMES)
        if not isinstance(metrics, list):
            raise ConfigError("verdict.metrics", metrics, "must be a list")
        return cls(
            kind=kind,
            reason=reason,
            metrics=tuple(MetricVerdict.from_json(m) for m in metrics),
            early_pass=data.get("early_pass", False),
        )


@attrs.frozen
class Judgement:
    """What `Decider.judge` returns: the verdict and the decider's state for the next window.

    A decider's state is plain JSON-able data (numbers, strings, lists, dicts) so that a
    rollout can be saved and resumed with its failure counts and running statistics intact.
    """

    verdict: Verdict
    state: Any = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.verdict, Verdict):
            raise ConfigError("verdict", self.verdict, "must be a Verdict")
