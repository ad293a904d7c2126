"""What a notification says about a rollout event, and how severe it is.

Severity levels are Flagger's: info, warn and error. A notifier with ``min_severity="warn"``
sends warn and error notices; with ``"error"`` only errors; with ``"info"`` everything.
(Flagger's own filter differs in one corner: there an alert set to warn does not receive
errors. Here a level means "this and worse".)

Which event gets which severity:

- error: `PhaseChanged` to rolled_back; `PhaseChanged` from rolling_back to paused (the
  rollback could not be confirmed); `LeaseRevoked` (the runner stopped acting).
- warn: `PhaseChanged` to rolling_back, aborted or paused (inconclusive, operator,
  deadline); `VerdictReached` inconclusive or fail; `AnalysisFailed`; `RouterCallFailed`
  (retried or counted); `CommandReceived` refused.
- info: `PhaseChanged` to progressing, promoting, succeeded or pending; `SplitConfirmed`
  (the canary's weight changed); `VerdictReached` pass or not_yet; `CommandReceived`
  accepted; `RolloutResumed` (a new runner took over); any event kind added later.

A notice's `message` and `reason` are free text from outside (an operator's reason, a
server's error): they hold no control characters (escaped, `canarykit._text.shown`) and
at most `canarykit._text.MAX_TEXT` characters of each reason.

Why: as in Flagger, a finished promotion is info, a failed check (Flagger's "halt
advancement") is warn and a failed canary is error. Rolling back is announced at warn and
its end at error, so an error-only channel hears once per rollback. A rollback that could
not be confirmed leaves traffic where the router last confirmed it: a person must look.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import ConfigError
from .._events import (
    AnalysisFailed,
    CommandReceived,
    LeaseRevoked,
    PhaseChanged,
    RolloutResumed,
    RouterCallFailed,
    SplitConfirmed,
    VerdictReached,
    describe_split,
)
from .._machine import Phase
from .._observe import ArmStats
from .._text import shown
from .._verdict import VerdictKind

__all__ = ["Notice", "Severity", "describe_event", "event_severity"]


class Severity(enum.IntEnum):
    """A notice's severity: `INFO` < `WARN` < `ERROR` (Flagger's info, warn and error).

    >>> Severity.parse("warn") >= Severity.INFO
    True
    >>> Severity.ERROR.label
    'error'
    """

    INFO = 0
    WARN = 1
    ERROR = 2

    @property
    def label(self) -> str:
        """``"info"``, ``"warn"`` or ``"error"``."""
        return self.name.lower()

    def __repr__(self) -> str:
        return f"Severity.{self.name}"

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, value: Any, field: str = "min_severity") -> Severity:
        """`value` as a Severity: a Severity, or ``"info"``, ``"warn"`` or ``"error"``."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str) and value in ("info", "warn", "error"):
            return cls[value.upper()]
        raise ConfigError(field, value, "must be 'info', 'warn' or 'error'")


@attrs.frozen(kw_only=True)
class Notice:
    """One event, described for people and machines: what notifiers send.

    `phase`, `step` (the plan's step index, from 0) and `weight` (the canary's confirmed
    percent) are the rollout's as far as the notifier knows them (None when it does not);
    `details` holds the event's own data (a verdict's metrics, a router attempt, ...).
    """

    rollout: str
    event: str
    severity: Severity
    time: float
    phase: str | None
    step: int | None
    weight: float | None
    reason: str
    message: str
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; non-finite numbers become null (JSON has no NaN)."""
        data = {
            "rollout": self.rollout,
            "event": self.event,
            "severity": self.severity.label,
            "time": self.time,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "reason": self.reason,
            "message": self.message,
            "details": dict(self.details),
        }
        cleaned: dict[str, Any] = _json_safe(data)
        return cleaned


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _event_name(event: object) -> str:
    names = {
        PhaseChanged: "phase_changed",
        SplitConfirmed: "split_confirmed",
        VerdictReached: "verdict",
        AnalysisFailed: "analysis_error",
        RouterCallFailed: "router_failure",
        CommandReceived: "command",
        # The wire name from before the event was renamed (LeaseLost), so consumers keep working.
        LeaseRevoked: "lease_lost",
    }
    name = names.get(type(event))
    if name is not None:
        return name
    # RolloutResumed -> rollout_resumed, and any later event kind.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def event_severity(event: object) -> Severity:
    """The severity of a rollout event (see the table in this module's documentation).

    >>> from canarykit import Phase
    >>> from canarykit.events import PhaseChanged
    >>> event_severity(PhaseChanged(time=0, old=Phase.ROLLING_BACK, new=Phase.ROLLED_BACK,
    ...                             step=2, reason="error_rate failed"))
    Severity.ERROR
    """
    if isinstance(event, PhaseChanged):
        new = event.new
        if new is Phase.ROLLED_BACK:
            return Severity.ERROR
        if new is Phase.PAUSED:
            return Severity.ERROR if event.old is Phase.ROLLING_BACK else Severity.WARN
        if new in (Phase.ROLLING_BACK, Phase.ABORTED):
            return Severity.WARN
        return Severity.INFO
    if isinstance(event, VerdictReached):
        if event.verdict.kind in (VerdictKind.FAIL, VerdictKind.INCONCLUSIVE):
            return Severity.WARN
        return Severity.INFO
    if isinstance(event, (AnalysisFailed, RouterCallFailed)):
        return Severity.WARN
    if isinstance(event, CommandReceived):
        return Severity.INFO if event.accepted else Severity.WARN
    if isinstance(event, LeaseRevoked):
        return Severity.ERROR
    return Severity.INFO


def is_routine(event: object) -> bool:
    """True for a verdict that changes nothing (pass or not yet): one every window."""
    return isinstance(event, VerdictReached) and event.verdict.kind in (
        VerdictKind.PASS,
        VerdictKind.NOT_YET,
    )


def _arm(stats: ArmStats) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "p99": stats.p99,
    }


def _metric_json(data: dict[str, Any]) -> dict[str, Any]:
    """A metric verdict's JSON with its reason (a decider's, maybe a server's) escaped."""
    reason = data.get("reason")
    if isinstance(reason, str):
        data["reason"] = shown(reason)
    return data


def _phase_message(event: PhaseChanged) -> str:
    old, new, reason = event.old, event.new, event.reason
    if new is Phase.PROGRESSING:
        text = "resumed" if old is Phase.PAUSED else "started"
    elif new is Phase.PROMOTING:
        text = "promoting the canary"
    elif new is Phase.SUCCEEDED:
        text = "promoted"
    elif new is Phase.ROLLING_BACK:
        text = "rolling back"
    elif new is Phase.ROLLED_BACK:
        text = "rolled back"
    elif new is Phase.ABORTED:
        text = "aborted"
    elif new is Phase.PAUSED and old is Phase.ROLLING_BACK:
        text = "rollback NOT confirmed; paused, traffic where the router last confirmed it"
    elif new is Phase.PAUSED:
        text = "paused"
    else:
        text = f"{old.value} -> {new.value}"
    return f"{text}: {reason}" if reason else text


def _describe(event: object) -> tuple[str, str, dict[str, Any]]:
    """(message, reason, details) for `event`."""
    details: dict[str, Any]
    if isinstance(event, PhaseChanged):
        details = {"previous_phase": event.old.value}
        return _phase_message(event), event.reason, details
    if isinstance(event, SplitConfirmed):
        text = describe_split(event.split)
        return text, "", {"split": event.split.to_json()}
    if isinstance(event, VerdictReached):
        verdict = event.verdict
        analysis = "step analysis" if event.kind.value == "step" else "analysis"
        details = {
            "analysis": event.kind.value,
            "verdict": verdict.kind.value,
            "window": [event.start, event.end],
            "metrics": [_metric_json(m.to_json()) for m in verdict.metrics],
            "stable": _arm(event.observation.stable),
            "canary": _arm(event.observation.canary),
        }
        return f"{analysis}: {verdict.kind.value}: {verdict.reason}", verdict.reason, details
    if isinstance(event, AnalysisFailed):
        details = {"analysis": event.kind.value, "window_end": event.end}
        return f"{event.kind.value} analysis error: {event.reason}", event.reason, details
    if isinstance(event, RouterCallFailed):
        text = (
            f"router attempt {event.attempt} failed applying "
            f"{describe_split(event.split)}: {event.reason}"
        )
        return text, event.reason, {"attempt": event.attempt, "split": event.split.to_json()}
    if isinstance(event, CommandReceived):
        if event.accepted:
            text = f"operator command {event.command}"
            text = f"{text}: {event.reason}" if event.reason else text
        else:
            text = f"operator command {event.command} refused: {event.reason}"
        return text, event.reason, {"command": event.command, "accepted": event.accepted}
    # RolloutResumed, LeaseRevoked and event kinds added later: say what can be said.
    reason = getattr(event, "reason", "")
    reason = reason if isinstance(reason, str) else str(reason)
    name = _event_name(event).replace("_", " ")
    return (f"{name}: {reason}" if reason else name), reason, {}


@attrs.define
class Tracker:
    """What a listener knows of one rollout: its phase and weight, and the step if known.

    Phase and weight change only by the events that report them, so a listener tracks
    them exactly. The step also moves without an event; a plain listener knows it only
    from events that carry it (None otherwise, never a stale value), an attached one
    from the rollout's state.
    """

    rollout: str
    phase: str | None = None
    step: int | None = None
    weight: float | None = None

    def observe(self, event: object) -> None:
        """Update from `event`'s own fields (any event kind that carries them)."""
        if isinstance(event, PhaseChanged):
            self.phase = event.new.value
        elif isinstance(event, SplitConfirmed):
            self.weight = event.split.canary_percent
        elif isinstance(event, RolloutResumed) and event.current is not None:
            self.weight = event.current.canary_percent
        phase = getattr(event, "phase", None)
        if isinstance(phase, Phase):
            self.phase = phase.value
        step = getattr(event, "step", None)
        self.step = step if isinstance(step, int) and not isinstance(step, bool) else None

    def observe_state(self, state: Any) -> None:
        """Update from a `RolloutState` (exact, when the notifier is attached to a Rollout)."""
        self.phase = state.phase.value
        self.step = state.step
        if state.confirmed is not None:
            self.weight = state.confirmed.canary_percent


def describe_event(
    event: object, rollout: str = "rollout", *, tracker: Tracker | None = None
) -> Notice:
    """The `Notice` a notifier sends for `event` of rollout `rollout`.

    Works for any object: event kinds added to canarykit later are described by their
    class name and their ``reason``, at info.

    >>> from canarykit import Phase
    >>> from canarykit.events import PhaseChanged
    >>> notice = describe_event(PhaseChanged(time=360.0, old=Phase.ROLLING_BACK,
    ...     new=Phase.ROLLED_BACK, step=1, reason="error_rate: fail"), "web")
    >>> notice.severity, notice.message
    (Severity.ERROR, 'rolled back: error_rate: fail')
    """
    if tracker is None:
        tracker = Tracker(rollout)
        tracker.observe(event)
    message, reason, details = _describe(event)
    # Reasons are free text from outside (an operator, a server): a notice carries them
    # on one line, control characters escaped, at most MAX_TEXT characters of each.
    message, reason = shown(message), shown(reason)
    time = getattr(event, "time", math.nan)
    return Notice(
        rollout=rollout,
        event=_event_name(event),
        severity=event_severity(event),
        time=float(time) if isinstance(time, (int, float)) else math.nan,
        phase=tracker.phase,
        step=tracker.step,
        weight=tracker.weight,
        reason=reason,
        message=message,
        details=details,
    )
