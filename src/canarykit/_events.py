"""What a running rollout reports: typed events for listeners, a compact timeline, an outcome.

Listeners get the full events (a `VerdictReached` carries its observation). The outcome's
timeline keeps one small `TimelineEntry` per event instead, so a long rollout's memory
stays flat however large its observations are.

Every `reason` is free text, often from outside (an operator, a server's error): each
event keeps at most `canarykit._text.MAX_TEXT` characters of it, cut with a note, and
control characters as they came. Whatever shows a reason escapes them
(`canarykit._text.shown`), so a reason stays on one line.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

from ._machine import AnalysisKind, Phase, RolloutState, _kept
from ._observe import Observation
from ._split import TrafficSplit
from ._verdict import Verdict, VerdictKind

__all__ = [
    "AnalysisFailed",
    "CommandReceived",
    "GateOpened",
    "GateWaiting",
    "HookRan",
    "LeaseRevoked",
    "PhaseChanged",
    "RolloutEvent",
    "RolloutOutcome",
    "RolloutResumed",
    "RouterCallFailed",
    "SplitConfirmed",
    "TimelineEntry",
    "VerdictReached",
]


@attrs.frozen(kw_only=True)
class PhaseChanged:
    """The rollout moved from `old` to `new` (e.g. progressing -> rolling_back), and why."""

    time: float
    old: Phase
    new: Phase
    step: int
    reason: str = attrs.field(converter=_kept)


@attrs.frozen(kw_only=True)
class SplitConfirmed:
    """The router confirmed that `split` is in force."""

    time: float
    split: TrafficSplit


@attrs.frozen(kw_only=True)
class VerdictReached:
    """A decider judged the window [start, end) of an analysis."""

    time: float
    kind: AnalysisKind
    start: float
    end: float
    verdict: Verdict
    observation: Observation


@attrs.frozen(kw_only=True)
class AnalysisFailed:
    """The window [start, end) could not be collected or judged; `reason` says why."""

    time: float
    kind: AnalysisKind
    end: float
    reason: str = attrs.field(converter=_kept)
    start: float | None = None


@attrs.frozen(kw_only=True)
class RouterCallFailed:
    """An attempt to apply `split` failed (`attempt` counts from 1)."""

    time: float
    split: TrafficSplit
    attempt: int
    reason: str = attrs.field(converter=_kept)


@attrs.frozen(kw_only=True)
class CommandReceived:
    """An operator command (`promote`, `pause`, `abort`, ...) arrived; `accepted` says if taken."""

    time: float
    command: str
    reason: str = attrs.field(default="", converter=_kept)
    accepted: bool = True


@attrs.frozen(kw_only=True)
class RolloutResumed:
    """A runner took over a saved rollout: where it was, and what the router reports now.

    `confirmed` is the split the saved state says the router confirmed; `current` the one
    the router reports now (None when it cannot tell, and the target is applied again).
    """

    time: float
    phase: Phase
    step: int
    confirmed: TrafficSplit | None
    current: TrafficSplit | None

    def timeline_entry(self, state: RolloutState) -> TimelineEntry:
        """The timeline line for this event."""
        reason = (
            f"resumed {self.phase.value} at step {self.step + 1}; saved canary "
            f"{_percent(self.confirmed)}, router reports {_percent(self.current)}"
        )
        percent = 0.0 if self.current is None else self.current.canary_percent
        return TimelineEntry(
            time=self.time,
            kind="resume",
            phase=self.phase,
            step=self.step,
            canary_percent=percent,
            reason=reason,
        )


@attrs.frozen(kw_only=True)
class LeaseRevoked:
    """The runner lost its lease (`reason` says how) and stopped acting on the rollout."""

    time: float
    holder: str
    reason: str = attrs.field(converter=_kept)

    def timeline_entry(self, state: RolloutState) -> TimelineEntry:
        """The timeline line for this event."""
        confirmed = state.confirmed
        return TimelineEntry(
            time=self.time,
            kind="error",
            phase=state.phase,
            step=state.step,
            canary_percent=0.0 if confirmed is None else confirmed.canary_percent,
            reason=f"lease lost: {self.reason}; stopped without touching traffic again",
        )


@attrs.frozen(kw_only=True)
class GateWaiting:
    """A gate said no: the rollout waits at `gate` (e.g. "confirm-promotion") since `since`.

    Sent once per wait (and again by a runner that resumes one), not at every ask.
    """

    time: float
    gate: str
    step: int
    since: float
    reason: str = attrs.field(converter=_kept)

    def timeline_entry(self, state: RolloutState) -> TimelineEntry:
        """The timeline line for this event."""
        said = f": {self.reason}" if self.reason else ""
        return _hook_entry(self.time, "gate", state, f"waiting for {self.gate}{said}")


@attrs.frozen(kw_only=True)
class GateOpened:
    """The gate `gate` said yes after the rollout had waited `waited` seconds there."""

    time: float
    gate: str
    step: int
    waited: float
    reason: str = attrs.field(converter=_kept)

    def timeline_entry(self, state: RolloutState) -> TimelineEntry:
        """The timeline line for this event."""
        said = f": {self.reason}" if self.reason else ""
        text = f"{self.gate} opened after {self.waited:g} s{said}"
        return _hook_entry(self.time, "gate", state, text)


@attrs.frozen(kw_only=True)
class HookRan:
    """A one-off hook ran: create-canary, pre-rollout, retire-*, post-rollout or rollback.

    `ok` says whether it succeeded (for the rollback hook: whether it forced a rollback).
    A failure after the end is reported here and in the log; it never changes the outcome.
    """

    time: float
    hook: str
    ok: bool
    reason: str = attrs.field(converter=_kept)

    def timeline_entry(self, state: RolloutState) -> TimelineEntry:
        """The timeline line for this event (an "error" line when the hook failed)."""
        outcome = "ran" if self.ok else "failed"
        said = f": {self.reason}" if self.reason else ""
        kind = "hook" if self.ok else "error"
        return _hook_entry(self.time, kind, state, f"{self.hook} hook {outcome}{said}")


def _hook_entry(time: float, kind: str, state: RolloutState, reason: str) -> TimelineEntry:
    confirmed = state.confirmed
    return TimelineEntry(
        time=time,
        kind=kind,
        phase=state.phase,
        step=state.step,
        canary_percent=0.0 if confirmed is None else confirmed.canary_percent,
        reason=reason,
    )


RolloutEvent: TypeAlias = (
    PhaseChanged
    | SplitConfirmed
    | VerdictReached
    | AnalysisFailed
    | RouterCallFailed
    | CommandReceived
    | RolloutResumed
    | LeaseRevoked
    | GateWaiting
    | GateOpened
    | HookRan
)


def _percent(split: TrafficSplit | None) -> str:
    return "unknown" if split is None else f"{split.canary_percent:g}%"


@attrs.frozen(kw_only=True)
class TimelineEntry:
    """One line of a rollout's history, small enough to keep for every window.

    `kind` is "phase", "split", "verdict", "error", "command", "resume", "gate" (a gate
    waiting or opened) or "hook" (a one-off hook that ran). Verdict entries carry the
    verdict's kind and reason, and each arm's error rate and p99 latency (seconds) for the
    window; the per-metric verdicts go to listeners (`VerdictReached`), not the timeline.
    Verdict entries, and error entries for a window that failed, carry the window's
    `window_start` and `window_end`: the time the canary was watched (judged) or not,
    so that unwatched time shows as a hole between windows.
    """

    time: float
    kind: str
    phase: Phase
    step: int | None
    canary_percent: float
    reason: str = attrs.field(default="", converter=_kept)
    verdict: VerdictKind | None = None
    stable_error_rate: float | None = None
    canary_error_rate: float | None = None
    stable_p99: float | None = None
    canary_p99: float | None = None
    window_start: float | None = None
    window_end: float | None = None

    @classmethod
    def for_event(cls, event: RolloutEvent, state: RolloutState) -> TimelineEntry:
        """The timeline entry recording `event`, given the state just after it."""
        if isinstance(event, (RolloutResumed, LeaseRevoked, GateWaiting, GateOpened, HookRan)):
            return event.timeline_entry(state)
        confirmed = state.confirmed
        percent = 0.0 if confirmed is None else confirmed.canary_percent
        common: dict[str, Any] = {
            "time": event.time,
            "phase": state.phase,
            "step": state.step,
            "canary_percent": percent,
        }
        if isinstance(event, PhaseChanged):
            return cls(kind="phase", reason=event.reason, **common)
        if isinstance(event, SplitConfirmed):
            common["canary_percent"] = event.split.canary_percent
            return cls(kind="split", reason=describe_split(event.split), **common)
        if isinstance(event, VerdictReached):
            obs = event.observation
            return cls(
                kind="verdict",
                reason=(
                    event.verdict.reason
                    if event.kind is AnalysisKind.BACKGROUND
                    else f"step analysis: {event.verdict.reason}"
                ),
                verdict=event.verdict.kind,
                stable_error_rate=obs.stable.error_rate,
                canary_error_rate=obs.canary.error_rate,
                stable_p99=obs.stable.p99,
                canary_p99=obs.canary.p99,
                window_start=event.start,
                window_end=event.end,
                **common,
            )
        if isinstance(event, AnalysisFailed):
            return cls(
                kind="error",
                reason=f"{event.kind.value}: {event.reason}",
                window_start=event.start,
                window_end=event.end,
                **common,
            )
        if isinstance(event, RouterCallFailed):
            reason = f"router attempt {event.attempt} failed: {event.reason}"
            return cls(kind="error", reason=reason, **common)
        text = f"{event.command} {event.reason}".strip()
        if not event.accepted:
            text = f"{event.command} refused: {event.reason}"
        return cls(kind="command", reason=text, **common)

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data = attrs.asdict(self, recurse=False)
        data["phase"] = self.phase.value
        data["verdict"] = None if self.verdict is None else self.verdict.value
        return data


def describe_split(split: TrafficSplit) -> str:
    """``canary 25%``, with header routes and mirroring when there are any (logs, notices)."""
    parts = [f"canary {split.canary_percent:g}%"]
    parts += [f"{r.header} {r.match.value} {r.value!r} -> canary" for r in split.header_routes]
    if split.mirror_percent:
        parts.append(f"mirror {split.mirror_percent:g}%")
    return ", ".join(parts)


@attrs.frozen(kw_only=True, repr=False)
class RolloutOutcome:
    """How a rollout ended: its phase, why, the split in force, and what happened on the way.

    `phase` is SUCCEEDED, ROLLED_BACK or ABORTED, or PAUSED (or another live phase) when
    the run stopped before the end. `split` is, in every ending, the split the router
    last confirmed (by an apply, or read back on resuming); None when unknown (never
    confirmed, or unreadable after a restart). So "traffic is on stable" holds only when
    `split` is stable-only. `release` is the release the rollout was for (None: unnamed).
    """

    phase: Phase
    reason: str = attrs.field(converter=_kept)
    split: TrafficSplit | None
    started_at: float | None
    finished_at: float
    timeline: tuple[TimelineEntry, ...]
    state: RolloutState
    release: str | None = None

    def __repr__(self) -> str:
        split = "unknown" if self.split is None else f"{self.split.canary_percent:g}%"
        return (
            f"<RolloutOutcome {self.phase.value} at {self.finished_at:g}: {self.reason!r}; "
            f"canary {split}; {len(self.timeline)} timeline entries>"
        )

    @property
    def promoted(self) -> bool:
        """True when the canary was promoted."""
        return self.phase is Phase.SUCCEEDED

    @property
    def rolled_back(self) -> bool:
        """True when traffic went back to stable, by a failed check or an abort."""
        return self.phase in (Phase.ROLLED_BACK, Phase.ABORTED)

    @property
    def verdicts(self) -> tuple[TimelineEntry, ...]:
        """The timeline's verdict entries."""
        return tuple(e for e in self.timeline if e.kind == "verdict")

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "split": None if self.split is None else self.split.to_json(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timeline": [entry.to_json() for entry in self.timeline],
            "state": self.state.to_json(),
            "release": self.release,
        }
