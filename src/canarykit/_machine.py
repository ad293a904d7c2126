"""The rollout state machine: pure, table-driven, no I/O and no clock.

How this works. A rollout is a `Plan` and a `RolloutState`. Events come in, each carrying
the time `now` (the machine never reads a clock): the rollout started, the router
confirmed a split or failed, a window was judged or could not be collected, time
passed, or an operator asked for something. `transition(plan, state, event)` returns the
next state; `next_action(plan, state, now)` says what the driver should do now: apply a
split, collect a window, wait until a time, or finish.

The rules:

- `_TRANSITIONS` lists, for every stage, the events it accepts and the stages each may
  lead to. An event a stage does not accept raises `InvalidTransition` saying why and
  what would help, and nothing changes; the table is the whole truth: no handler
  refuses anything on its own. The state diagram in the docs is drawn from this table.
- Stages and phases. A `Stage` is a row of the table; each belongs to one `Phase`. Most
  are their phase; three split one, because they behave differently from the rest of
  it: ABORTING (rolling back, to end ABORTED), ROLLBACK_PENDING and ABORT_PENDING
  (paused, held after the router failed to put stable back: promoting is refused, and
  whatever would roll back tries the rollback again). Why not more phases: the phase is
  what everything outside the machine speaks, and has for a long time (outcomes,
  `Rollout.phase`, the saved state, `canarykit status` and its exit codes, metrics,
  notifications, plots, users' own `outcome.phase is Phase.PAUSED` checks). For all of
  them a held rollback is paused (traffic held, waiting for an operator) and an abort's
  rollback is rolling back. So the phases stay; the table, the diagram and the refusals
  use the finer stage (`RolloutState.stage`), which the saved state carries as its
  phase and two flags, `rollback_pending` and `aborting`, exactly as before.
- The state keeps the split the plan wants (`target`) apart from the split the router
  last confirmed (`confirmed`). Whenever they differ the next action is to apply the
  target, in every non-terminal phase, so a confirmation that arrives late (say, after
  an abort) is recorded and then corrected, never lost.
- Rolling back is applying the stable-only split; promoting is applying 100% with header
  routes and mirroring removed. Only the router's confirmation ends either.
- Background analysis windows run from the first traffic shift until promotion, during
  pauses too, so a regression is caught while paused. An `Analyze` step runs windows of
  its own while progressing. A failed verdict rolls back; an inconclusive one pauses.
- Step timers stop while paused: a pause keeps what was left of a step's hold time.
- Progress deadline: a step that has not completed `plan.progress_deadline` seconds after
  its own length (say the router never confirms its weight) ends by the plan's policy,
  rolled back or paused. Paused time does not count; every deadline in the state is an
  absolute time on the rollout's clock, so it survives a restart.
- Resuming in a new process: `Recovered` tells the machine what the router reports now.
  A split that was applied but not yet confirmed when the old process died counts as
  confirmed; an unknown or different one is applied again (routers apply idempotently),
  except stable-only where the saved state had canary traffic: that is a rollback the old
  runner could not record, or a person's, and the rollout rolls back. No step is repeated
  or skipped, and timers run on from their saved deadlines.
- No unwatched time. The time between the end of the last window and a `Recovered`
  (`gap_until`) ran unwatched: the next background window covers it all (one window of at
  most `MAX_GAP_WINDOW` seconds; a longer gap is judged in consecutive windows), and no
  step completes, nor does the progress deadline run, before the gap has been judged.
- Adoption. `Start(adopt=True)` takes the router's split as confirmed and skips the steps
  before the first `SetWeight` at or above its weight, so traffic never goes down first.
- Metrics outage. A `WindowFailed` that carries `outage_limit` pauses, holding traffic
  where it is, when the consecutive-error limit is reached instead of rolling back;
  windows are still collected, the first judged one resumes the rollout, and the outage
  rolls back once it has lasted `outage_limit` seconds (`outage_until`).
- Release. `RolloutState.release` names the release a rollout is for; a retry keeps it.
- No JSON here. The saved form of a state and of a plan is `canarykit._state_json`'s
  (`RolloutState.to_json` and `from_json` hand over to it); the machine imports no store.
- Hooks. `state.hook_points` names the points where the rollout has hooks (given by
  `Start`, `Recovered` or kept by `RetryRequested`); with none, nothing below happens. At a point
  the next action is `RunHook` and the driver reports `HookAnswered`. Before any traffic
  moves the rollout stays PENDING through confirm-rollout (a gate), create-canary and
  pre-rollout (a failure aborts). A weight increase waits for confirm-traffic-increase,
  promotion for confirm-promotion: the rollout stays PROGRESSING with `state.gate` set,
  analysis keeps watching, and neither the progress deadline nor the pause limit runs;
  only a `stop` answer (a denial, a gate timeout) ends the wait. The rollback hook is
  asked every so often while progressing or paused; its yes rolls back. Once ended, the
  rollout calls retire-stable or retire-canary, then post-rollout, each once, before
  `Finish`; their answers never change the outcome.
- Free text is data. A reason from outside (an operator's, a server's, a webhook's) is
  kept to `canarykit._text.MAX_TEXT` characters, cut with a note, in events and in the
  state alike, so no reason can bloat the saved state; it is escaped where it is shown.
"""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import attrs

from ._errors import InvalidTransition
from ._plan import Analyze, Pause, Plan, SetHeaderRoutes, SetMirror, SetWeight, WaitForPromotion
from ._split import FULL_CANARY, STABLE_ONLY, TrafficSplit
from ._text import MAX_TEXT
from ._verdict import Verdict, VerdictKind

__all__ = [
    "AbortRequested",
    "AnalysisKind",
    "ApplyFailed",
    "ApplySplit",
    "CollectWindow",
    "Finish",
    "HookAnswered",
    "HookPoint",
    "Phase",
    "PromoteRequested",
    "FullPromotionRequested",
    "Recovered",
    "PauseRequested",
    "ResumeRequested",
    "RetryRequested",
    "RolloutMachine",
    "RolloutState",
    "RunHook",
    "SplitApplied",
    "Stage",
    "Start",
    "Tick",
    "WaitUntil",
    "WindowFailed",
    "WindowJudged",
    "next_action",
    "plan_splits",
    "transition",
]

# The longest window that judges unwatched time after a resume: a metrics source keeps
# that much history at full resolution (Prometheus's default retention is far longer);
# an older gap is judged in consecutive windows of this length.
MAX_GAP_WINDOW = 3600.0

# How a pause for a metrics outage says so; an operator's pause reason replaces it, and
# then the rollout no longer resumes on its own when the windows come back.
_OUTAGE = "metrics outage"


def _kept(text: str) -> str:
    """`text` as the machine keeps it: at most `MAX_TEXT` characters, cut with a note.

    Reasons come from operators, servers and webhooks; one of 20 MB must not be saved,
    printed and sent on at every step. The note counts what was cut, and the result,
    note included, stays within `MAX_TEXT`, so a later `shown` never cuts it again.
    Control characters are kept: the text is data here, and escaped where it is shown.
    """
    if not isinstance(text, str) or len(text) <= MAX_TEXT:
        return text
    keep = MAX_TEXT - len(f"... ({len(text)} more characters)")
    return f"{text[:keep]}... ({len(text) - keep} more characters)"


def _is_release(value: object) -> bool:
    """True for a valid release id: 1-128 printable characters (no control characters)."""
    return isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable()


def _kept_or_none(text: str | None) -> str | None:
    return None if text is None else _kept(text)


class Phase(enum.Enum):
    """Where a rollout is. SUCCEEDED, ROLLED_BACK and ABORTED are terminal.

    The transition table's rows are a little finer (`Stage`): a PAUSED rollout may be
    held after a failed rollback, and a ROLLING_BACK one may be rolling back for an
    abort; `RolloutState.stage` says which.
    """

    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    # Members are singletons compared by identity; the C-level hash keeps the transition
    # table's lookups cheap (Enum's own __hash__ is Python code, called on every event).
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"Phase.{self.name}"

    @property
    def is_terminal(self) -> bool:
        """True for SUCCEEDED, ROLLED_BACK and ABORTED."""
        return self in _TERMINAL


_TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED})


class Stage(enum.Enum):
    """A row of the transition table: a `Phase`, or one of the three that split a phase.

    Most stages are a phase of the same name. Three behave differently from the rest of
    their phase, so the table gives them rows of their own:

    - ROLLING_BACK and ABORTING are both `Phase.ROLLING_BACK`: an ABORTING rollback was
      caused by an abort (an operator's, or a hook that stopped the rollout) and ends
      ABORTED, not ROLLED_BACK.
    - ROLLBACK_PENDING and ABORT_PENDING are both `Phase.PAUSED`: the router failed to
      put stable back, and traffic is held where it last confirmed. Promoting is refused;
      resume, abort, a restart, a failed verdict or the rollback hook try the rollback
      again; pausing changes nothing and the pause limit does not run. ABORT_PENDING
      holds an abort's rollback.

    `RolloutState.stage` is the state's stage; ``stage.phase`` its phase.

    >>> Stage.ROLLBACK_PENDING.phase
    Phase.PAUSED
    """

    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ABORTING = "aborting"
    ROLLBACK_PENDING = "rollback_pending"
    ABORT_PENDING = "abort_pending"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    # Identity hash, as for Phase: the table is looked up by stage on every event.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"Stage.{self.name}"

    @property
    def phase(self) -> Phase:
        """The phase this stage belongs to (what outcomes, status and metrics show)."""
        return _PHASE_OF[self]

    @property
    def is_terminal(self) -> bool:
        """True for SUCCEEDED, ROLLED_BACK and ABORTED."""
        return _PHASE_OF[self] in _TERMINAL


_S = Stage
_SPLIT_OFF = {
    _S.ABORTING: Phase.ROLLING_BACK,
    _S.ROLLBACK_PENDING: Phase.PAUSED,
    _S.ABORT_PENDING: Phase.PAUSED,
}
_PHASE_OF = {stage: _SPLIT_OFF.get(stage) or Phase(stage.value) for stage in Stage}
# The stage of a phase that is not split, and of a split one without its flags.
_STAGE_OF = {phase: Stage(phase.value) for phase in Phase}
# Paused after a failed rollback: the rollback is tried again, nothing else moves.
_HELD = frozenset({_S.ROLLBACK_PENDING, _S.ABORT_PENDING})
# Stages whose rollback ends ABORTED.
_ABORTS = frozenset({_S.ABORTING, _S.ABORT_PENDING})


class AnalysisKind(enum.Enum):
    """Which analysis a window belongs to: the plan's background one or an `Analyze` step."""

    BACKGROUND = "background"
    STEP = "step"

    def __repr__(self) -> str:
        return f"AnalysisKind.{self.name}"


class HookPoint(enum.Enum):
    """Where a rollout calls its hooks: Flagger's webhook types, plus the canary's lifecycle.

    In the order a rollout meets them: CONFIRM_ROLLOUT (a gate), CREATE_CANARY and
    PRE_ROLLOUT before any traffic moves; CONFIRM_TRAFFIC_INCREASE (a gate) before each
    weight increase; ROLLBACK every so often while the canary is watched;
    CONFIRM_PROMOTION (a gate) before promotion; PROMOTE_STABLE (a task, only when given)
    once the canary has all traffic, to upgrade the stable servers before traffic moves
    back to them; then, once the rollout has ended, RETIRE_STABLE (after a promotion),
    or RETIRE_CANARY (after a rollback, an abort, or a promotion that upgraded stable),
    and POST_ROLLOUT.
    """

    CONFIRM_ROLLOUT = "confirm-rollout"
    CREATE_CANARY = "create-canary"
    PRE_ROLLOUT = "pre-rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    PROMOTE_STABLE = "promote-stable"
    ROLLBACK = "rollback"
    RETIRE_STABLE = "retire-stable"
    RETIRE_CANARY = "retire-canary"
    POST_ROLLOUT = "post-rollout"

    # Identity hash, as for Phase: the machine checks membership on every settle.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"HookPoint.{self.name}"

    @property
    def is_gate(self) -> bool:
        """True for the points that hold the rollout until they say yes (confirm-*)."""
        return self in _GATES


_HP = HookPoint
_GATES = frozenset({_HP.CONFIRM_ROLLOUT, _HP.CONFIRM_TRAFFIC_INCREASE, _HP.CONFIRM_PROMOTION})
# Called in this order before any traffic moves; a failure of the last two aborts.
_BEFORE_TRAFFIC = (_HP.CONFIRM_ROLLOUT, _HP.CREATE_CANARY, _HP.PRE_ROLLOUT)
_AFTER_END = frozenset({_HP.RETIRE_STABLE, _HP.RETIRE_CANARY, _HP.POST_ROLLOUT})
_NO_POINTS: frozenset[HookPoint] = frozenset()


def _hook_points(value: Iterable[HookPoint]) -> frozenset[HookPoint]:
    points = frozenset(value)
    for point in points:
        if not isinstance(point, HookPoint):
            raise TypeError(f"hook points must be HookPoint members, got {point!r}")
    return points


def _maybe_hook_points(value: Iterable[HookPoint] | None) -> frozenset[HookPoint] | None:
    return None if value is None else _hook_points(value)


# ---------------------------------------------------------------------------- events


@attrs.frozen
class Start:
    """Begin the rollout. `current` is the split the router reported before we started.

    `current` is None when the router cannot be read: nothing counts as confirmed until
    the first apply. `hook_points` are the points where the driver has hooks. Started
    again while still PENDING (a runner stopped while waiting at confirm-rollout, say),
    the rollout keeps what its hooks had already done and how long it has been waiting.

    With `adopt`, a `current` that is not stable-only is taken as the rollout's own: the
    steps before the first `SetWeight` at or above its canary weight are skipped, and the
    rollout goes on from there (all of them skipped: it promotes). Without it the plan
    starts from stable, whatever the router reported.
    """

    now: float
    current: TrafficSplit | None = STABLE_ONLY
    hook_points: frozenset[HookPoint] = attrs.field(default=_NO_POINTS, converter=_hook_points)
    adopt: bool = False


@attrs.frozen
class SplitApplied:
    """The router confirmed that `split` is in force."""

    now: float
    split: TrafficSplit


@attrs.frozen
class ApplyFailed:
    """The router could not apply `split` (after the driver's retries)."""

    now: float
    split: TrafficSplit
    reason: str = attrs.field(converter=_kept)


@attrs.frozen
class WindowJudged:
    """A decider judged the window ending at `end`; `decider_state` is its new state."""

    now: float
    kind: AnalysisKind
    end: float
    verdict: Verdict
    decider_state: Any = None


@attrs.frozen
class WindowFailed:
    """The window ending at `end` could not be collected or judged.

    `outage_limit`, when given, is the driver's metrics-outage policy "pause": reaching
    the plan's consecutive-error limit pauses (traffic held where it is) instead of
    rolling back, and the rollout rolls back once the outage has lasted that many
    seconds. None (the default) rolls back at the limit.
    """

    now: float
    kind: AnalysisKind
    end: float
    reason: str = attrs.field(converter=_kept)
    outage_limit: float | None = None


@attrs.frozen
class Tick:
    """Time has passed: step holds and pause limits that ran out take effect."""

    now: float


@attrs.frozen
class PromoteRequested:
    """Operator: finish the current step now and go on to the next one."""

    now: float


@attrs.frozen
class FullPromotionRequested:
    """Operator: skip the remaining steps and promote."""

    now: float


@attrs.frozen
class PauseRequested:
    """Operator: hold the rollout where it is (analysis keeps watching)."""

    now: float
    reason: str = attrs.field(default="paused by operator", converter=_kept)


@attrs.frozen
class ResumeRequested:
    """Operator: carry on from a pause."""

    now: float


@attrs.frozen
class AbortRequested:
    """Operator: roll back to stable and end as ABORTED."""

    now: float
    reason: str = attrs.field(default="aborted by operator", converter=_kept)


@attrs.frozen
class RetryRequested:
    """Operator: start an aborted or rolled-back rollout again from its first step."""

    now: float


@attrs.frozen
class Recovered:
    """A new runner took the rollout over from its saved state (after a crash, say).

    `current` is the split the router reports now, or None when it cannot tell: then the
    target is applied again, which routers do idempotently. `hook_points`, when given,
    replace the saved ones (the new runner's hooks); a gate being waited at stays.
    """

    now: float
    current: TrafficSplit | None = None
    hook_points: frozenset[HookPoint] | None = attrs.field(
        default=None, converter=_maybe_hook_points
    )


@attrs.frozen
class HookAnswered:
    """The hooks at `point` answered `yes` or no; `reason` says what they said.

    A gate's no holds the rollout until `ask_again_at` (None: ask again at once), and the
    rollback hook's no until its next check then; with `stop` the no ends the rollout
    instead (a denial, or a gate that waited longer than allowed): aborted, rolled back
    first if traffic moved. Any no from create-canary or pre-rollout aborts likewise. A
    yes from the rollback hook rolls back. After the end an answer only records that the
    hook ran: it never changes the outcome.
    """

    now: float
    point: HookPoint
    yes: bool
    reason: str = attrs.field(default="", converter=_kept)
    ask_again_at: float | None = None
    stop: bool = False


Event: TypeAlias = (
    Start
    | SplitApplied
    | ApplyFailed
    | WindowJudged
    | WindowFailed
    | Tick
    | PromoteRequested
    | FullPromotionRequested
    | PauseRequested
    | ResumeRequested
    | AbortRequested
    | RetryRequested
    | Recovered
    | HookAnswered
)

# ---------------------------------------------------------------------------- actions


@attrs.frozen
class ApplySplit:
    """Ask the router to put `split` in force, then report `SplitApplied` or `ApplyFailed`."""

    split: TrafficSplit


@attrs.frozen
class CollectWindow:
    """Collect and judge the window [start, end), then report `WindowJudged`/`WindowFailed`."""

    kind: AnalysisKind
    start: float
    end: float
    decider_state: Any = None


@attrs.frozen
class WaitUntil:
    """Sleep until `until` (maybe `math.inf`) or an operator command, then report `Tick`."""

    until: float


@attrs.frozen
class Finish:
    """The rollout has ended in `phase`."""

    phase: Phase
    reason: str


@attrs.frozen
class RunHook:
    """Call the rollout's hooks at `point`, then report `HookAnswered`."""

    point: HookPoint


Action: TypeAlias = ApplySplit | CollectWindow | WaitUntil | Finish | RunHook

# ---------------------------------------------------------------------------- state

# For each stage: the events it accepts and the stages each can lead to. Anything not
# listed is an invalid transition, refused with the reason `refusal` gives. The docs'
# state diagram is generated from this table.
_TRANSITIONS: dict[Stage, dict[type[Any], frozenset[Stage]]] = {
    _S.PENDING: {
        # Still PENDING while the hooks due before traffic moves have not all said yes.
        Start: frozenset({_S.PENDING, _S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        # ABORTING, ABORTED: create-canary or pre-rollout failed, or a gate said stop.
        HookAnswered: frozenset(
            {_S.PENDING, _S.PROGRESSING, _S.PAUSED, _S.PROMOTING, _S.ABORTING, _S.ABORTED}
        ),
        Tick: frozenset({_S.PENDING}),  # waited for a gate's next ask: nothing changes
        # Rolls back when the router reported canary traffic before the start.
        AbortRequested: frozenset({_S.ABORTED, _S.ABORTING}),
    },
    _S.PROGRESSING: {
        SplitApplied: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        ApplyFailed: frozenset({_S.ROLLING_BACK}),
        WindowJudged: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING, _S.ROLLING_BACK}),
        # PAUSED: a metrics outage under the "pause" policy (`WindowFailed.outage_limit`).
        WindowFailed: frozenset({_S.PROGRESSING, _S.PAUSED, _S.ROLLING_BACK}),
        Tick: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING, _S.ROLLING_BACK}),
        PromoteRequested: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        FullPromotionRequested: frozenset({_S.PROMOTING}),
        PauseRequested: frozenset({_S.PAUSED}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING, _S.ROLLING_BACK}),
        # ROLLING_BACK: the rollback hook's yes; ABORTING: a gate that said stop.
        HookAnswered: frozenset(
            {_S.PROGRESSING, _S.PAUSED, _S.PROMOTING, _S.ROLLING_BACK, _S.ABORTING}
        ),
    },
    _S.PAUSED: {
        SplitApplied: frozenset({_S.PAUSED}),
        ApplyFailed: frozenset({_S.ROLLING_BACK}),
        # PROGRESSING, PROMOTING: the first window after a metrics outage resumes it.
        WindowJudged: frozenset({_S.PAUSED, _S.ROLLING_BACK, _S.PROGRESSING, _S.PROMOTING}),
        WindowFailed: frozenset({_S.PAUSED, _S.ROLLING_BACK}),
        Tick: frozenset({_S.PAUSED, _S.ROLLING_BACK}),
        PromoteRequested: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        FullPromotionRequested: frozenset({_S.PROMOTING}),
        PauseRequested: frozenset({_S.PAUSED}),
        ResumeRequested: frozenset({_S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.PAUSED, _S.ROLLING_BACK}),
        HookAnswered: frozenset({_S.PAUSED, _S.ROLLING_BACK}),
    },
    _S.PROMOTING: {
        SplitApplied: frozenset({_S.PROMOTING, _S.SUCCEEDED}),
        ApplyFailed: frozenset({_S.ROLLING_BACK}),
        WindowJudged: frozenset({_S.PROMOTING}),
        WindowFailed: frozenset({_S.PROMOTING}),
        Tick: frozenset({_S.PROMOTING}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.PROMOTING}),
        # PAUSED: promote-stable failed; traffic is held at the (good) canary.
        HookAnswered: frozenset({_S.PROMOTING, _S.PAUSED}),
    },
    # Rolling back ends ROLLED_BACK; an abort's rollback (ABORTING) ends ABORTED. An abort
    # while rolling back makes the rollback an abort's.
    _S.ROLLING_BACK: {
        SplitApplied: frozenset({_S.ROLLING_BACK, _S.ROLLED_BACK}),
        # ROLLING_BACK: a failure to apply a split the rollout no longer wants is stale.
        ApplyFailed: frozenset({_S.ROLLBACK_PENDING, _S.ROLLING_BACK}),
        WindowJudged: frozenset({_S.ROLLING_BACK}),
        WindowFailed: frozenset({_S.ROLLING_BACK}),
        Tick: frozenset({_S.ROLLING_BACK}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.ROLLING_BACK}),
        HookAnswered: frozenset({_S.ROLLING_BACK}),
    },
    _S.ABORTING: {
        SplitApplied: frozenset({_S.ABORTING, _S.ABORTED}),
        # ABORTING: a failure to apply a split the rollout no longer wants is stale.
        ApplyFailed: frozenset({_S.ABORT_PENDING, _S.ABORTING}),
        WindowJudged: frozenset({_S.ABORTING}),
        WindowFailed: frozenset({_S.ABORTING}),
        Tick: frozenset({_S.ABORTING}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.ABORTING}),
        HookAnswered: frozenset({_S.ABORTING}),
    },
    # Held after a failed rollback (the router could not put stable back). Whatever would
    # roll back tries the rollback again: a resume, an abort, a restart, a failed verdict,
    # the metrics error limit, an outage past its limit, the rollback hook. Promoting is
    # refused; a pause changes nothing (it is held already), and no pause limit runs.
    _S.ROLLBACK_PENDING: {
        SplitApplied: frozenset({_S.ROLLBACK_PENDING}),
        ApplyFailed: frozenset({_S.ROLLBACK_PENDING}),
        WindowJudged: frozenset({_S.ROLLBACK_PENDING, _S.ROLLING_BACK}),
        WindowFailed: frozenset({_S.ROLLBACK_PENDING, _S.ROLLING_BACK}),
        Tick: frozenset({_S.ROLLBACK_PENDING, _S.ROLLING_BACK}),
        PauseRequested: frozenset({_S.ROLLBACK_PENDING}),
        ResumeRequested: frozenset({_S.ROLLING_BACK}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.ROLLING_BACK}),
        HookAnswered: frozenset({_S.ROLLBACK_PENDING, _S.ROLLING_BACK}),
    },
    # The same, for an abort's rollback: it still ends ABORTED.
    _S.ABORT_PENDING: {
        SplitApplied: frozenset({_S.ABORT_PENDING}),
        ApplyFailed: frozenset({_S.ABORT_PENDING}),
        WindowJudged: frozenset({_S.ABORT_PENDING, _S.ABORTING}),
        WindowFailed: frozenset({_S.ABORT_PENDING, _S.ABORTING}),
        Tick: frozenset({_S.ABORT_PENDING, _S.ABORTING}),
        PauseRequested: frozenset({_S.ABORT_PENDING}),
        ResumeRequested: frozenset({_S.ABORTING}),
        AbortRequested: frozenset({_S.ABORTING}),
        Recovered: frozenset({_S.ABORTING}),
        HookAnswered: frozenset({_S.ABORT_PENDING, _S.ABORTING}),
    },
    # Ended: the hooks that run after the end only record that they ran.
    _S.SUCCEEDED: {HookAnswered: frozenset({_S.SUCCEEDED})},
    _S.ROLLED_BACK: {
        RetryRequested: frozenset({_S.PENDING, _S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        HookAnswered: frozenset({_S.ROLLED_BACK}),
    },
    _S.ABORTED: {
        RetryRequested: frozenset({_S.PENDING, _S.PROGRESSING, _S.PAUSED, _S.PROMOTING}),
        HookAnswered: frozenset({_S.ABORTED}),
    },
}


def transition_table() -> dict[Stage, dict[str, frozenset[Stage]]]:
    """The whole transition table by event name, for documentation and diagrams.

    Every stage, in `Stage` order, with the events it accepts and the stages each may
    lead to; an event a stage does not list is refused with `InvalidTransition`.

    >>> table = transition_table()
    >>> sorted(stage.value for stage in table[Stage.ROLLBACK_PENDING]["ResumeRequested"])
    ['rolling_back']
    >>> "PromoteRequested" in table[Stage.ROLLBACK_PENDING]
    False
    """
    return {
        stage: {event.__name__: targets for event, targets in _TRANSITIONS[stage].items()}
        for stage in Stage
    }


@attrs.frozen(kw_only=True, slots=False)
class RolloutState:
    """Everything the machine knows about one rollout; plain data, round-trips through JSON.

    The fields most readers want: `phase`, `step` (index of the current step; equal to the
    number of steps once they are all done), `target` (the split the plan wants now),
    `confirmed` (the split the router last confirmed; None when unknown) and `reason`.
    Times (`step_deadline`, `progress_deadline_at`, ...) are absolute, on the rollout's
    clock, so they mean the same after a restart.

    Hooks: `hook_points` (where the rollout has hooks), `gate` (the point it waits at, or
    is about to call before traffic moves; None otherwise), `gate_since` (since when),
    `gate_ask_at` (when to ask again; None: now), `rollback_check_at` (when to ask the
    rollback hook next) and `hooks_done` (the one-off hooks already called). They are
    saved only when set, so a rollout without hooks saves what earlier versions did.

    `release` names the release the rollout is for (None: not named). `window_start` is
    also where the last judged background window ended. `gap_until`, set on a resume, is
    the end of the time nobody watched; no step completes until windows have judged it.
    `outage_until` is set while paused for a metrics outage: the time it rolls back.

    `stage` is the row of the transition table the state is in: its `phase`, split by
    `rollback_pending` (paused after a failed rollback) and `aborting` (the rollback
    ends ABORTED), the two flags it is saved with. Outside those stages the flags mean
    nothing: a paused rollout is held after a failed rollback only with
    `rollback_pending`, and only a rollback aborts with `aborting`.
    """

    phase: Phase = Phase.PENDING
    step: int = 0
    step_entered: bool = False
    step_deadline: float | None = None
    step_windows: int = 0
    step_window_start: float | None = None
    step_decider_state: Any = None
    hold_remaining: float | None = None
    progress_deadline_at: float | None = None
    target: TrafficSplit = STABLE_ONLY
    confirmed: TrafficSplit | None = None
    window_start: float | None = None
    decider_state: Any = None
    last_verdict: VerdictKind | None = None
    consecutive_errors: int = 0
    paused_at: float | None = None
    pause_reason: str | None = attrs.field(default=None, converter=_kept_or_none)
    rollback_pending: bool = False
    aborting: bool = False
    reason: str = attrs.field(default="", converter=_kept)
    started_at: float | None = None
    finished_at: float | None = None
    hook_points: frozenset[HookPoint] = _NO_POINTS
    gate: HookPoint | None = None
    gate_since: float | None = None
    gate_ask_at: float | None = None
    rollback_check_at: float | None = None
    hooks_done: frozenset[HookPoint] = _NO_POINTS
    release: str | None = None
    gap_until: float | None = None
    outage_until: float | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the rollout has ended (succeeded, rolled back or aborted)."""
        return self.phase.is_terminal

    @property
    def stage(self) -> Stage:
        """The row of the transition table this state is in (see `Stage`).

        >>> RolloutState(phase=Phase.PAUSED, rollback_pending=True).stage
        Stage.ROLLBACK_PENDING
        """
        phase = self.phase
        if phase is Phase.PAUSED and self.rollback_pending:
            return Stage.ABORT_PENDING if self.aborting else Stage.ROLLBACK_PENDING
        if phase is Phase.ROLLING_BACK and self.aborting:
            return Stage.ABORTING
        return _STAGE_OF[phase]

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON, with a schema version (see `canarykit._state_json`)."""
        from ._state_json import state_to_json  # the codec imports this module

        return state_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        """Inverse of `to_json`. State from an older schema version is migrated.

        Raises `StateVersionError` for a schema version this canarykit cannot read (a
        newer one) and `CorruptStateError`, naming the field, for anything malformed.
        """
        from ._state_json import state_from_json

        return state_from_json(data)


def plan_splits(plan: Plan) -> tuple[tuple[int | None, TrafficSplit], ...]:
    """Every split `plan` may ask a router for, each with the index of the step that does.

    The steps' splits in order (a weight, header-routes or mirror step changes the split
    its predecessors built), then promotion (``FULL_CANARY``) and rollback
    (``STABLE_ONLY``), with index None. Checking each against a router before any
    traffic moves finds what it could never apply. A pure function of the plan, as
    `transition` builds the targets.

    >>> from canarykit import from_weights
    >>> [(i, s.canary_percent) for i, s in plan_splits(from_weights([10, 50], hold=60))]
    [(0, 10.0), (2, 50.0), (None, 100.0), (None, 0.0)]
    """
    found: list[tuple[int | None, TrafficSplit]] = []
    split = STABLE_ONLY
    for index, step in enumerate(plan.steps):
        if isinstance(step, SetWeight):
            split = attrs.evolve(split, canary_percent=step.percent)
        elif isinstance(step, SetHeaderRoutes):
            split = attrs.evolve(split, header_routes=step.routes)
        elif isinstance(step, SetMirror):
            split = attrs.evolve(split, mirror_percent=step.percent)
        else:
            continue
        found.append((index, split))
    found += [(None, FULL_CANARY), (None, STABLE_ONLY)]
    return tuple(found)


# ---------------------------------------------------------------------------- helpers


def _evolve(state: RolloutState, **changes: Any) -> RolloutState:
    """`attrs.evolve` without re-running `__init__`: the machine makes a few per event.

    Safe because the machine only ever changes fields to values of their declared types.
    """
    # Every reason the machine writes passes here: free text from outside (an operator's
    # pause reason, a server's error) is kept to MAX_TEXT characters, prefixes included.
    if "reason" in changes:
        changes["reason"] = _kept(changes["reason"])
    if changes.get("pause_reason") is not None:
        changes["pause_reason"] = _kept(changes["pause_reason"])
    new = object.__new__(RolloutState)
    fields = new.__dict__
    fields.update(state.__dict__)
    fields.update(changes)
    return new


def _needs_windows(plan: Plan, state: RolloutState) -> bool:
    return plan.analysis_interval is not None and state.window_start is not None


def _background_end(plan: Plan, state: RolloutState) -> float:
    assert plan.analysis_interval is not None and state.window_start is not None
    end = state.window_start + plan.analysis_interval
    gap = state.gap_until
    if gap is not None and gap > end:
        # After a resume: one window over the unwatched time, at most MAX_GAP_WINDOW long.
        end = min(gap, state.window_start + max(MAX_GAP_WINDOW, plan.analysis_interval))
    return end


def _gap_judged(state: RolloutState) -> RolloutState:
    """Clear `gap_until` once the background windows have reached it."""
    gap = state.gap_until
    if gap is not None and state.window_start is not None and state.window_start >= gap:
        return _evolve(state, gap_until=None)
    return state


_NO_GATE: dict[str, Any] = {"gate": None, "gate_since": None, "gate_ask_at": None}


def _hold(state: RolloutState, point: HookPoint, now: float) -> RolloutState:
    """Wait at the gate `point` (asking its hooks at once); nothing moves until it opens."""
    if state.gate is not point:
        state = _evolve(state, gate=point, gate_since=now, gate_ask_at=None)
    return _evolve(state, reason=f"waiting for {point.value}")


def _enter_pause(state: RolloutState, now: float, reason: str) -> RolloutState:
    remaining = None
    if state.step_deadline is not None:
        remaining = max(0.0, state.step_deadline - now)
    return _evolve(
        state,
        phase=Phase.PAUSED,
        paused_at=now,
        pause_reason=reason,
        reason=reason,
        hold_remaining=remaining,
        step_deadline=None,
        progress_deadline_at=None,
        **_NO_GATE,  # a paused rollout is not at a gate; resuming comes back to it
    )


def _rollback(state: RolloutState, now: float, reason: str, *, abort: bool) -> RolloutState:
    return _evolve(
        state,
        phase=Phase.ROLLING_BACK,
        target=STABLE_ONLY,
        reason=reason,
        aborting=abort or state.stage in _ABORTS,
        rollback_pending=False,
        paused_at=None,
        pause_reason=None,
        progress_deadline_at=None,
        gap_until=None,
        outage_until=None,
        **_NO_GATE,
    )


def _promote(state: RolloutState, now: float, reason: str) -> RolloutState:
    return _evolve(
        state,
        phase=Phase.PROMOTING,
        target=FULL_CANARY,
        reason=reason,
        step_deadline=None,
        paused_at=None,
        pause_reason=None,
        progress_deadline_at=None,
        gap_until=None,
        outage_until=None,
        **_NO_GATE,
    )


def _next_step(state: RolloutState) -> RolloutState:
    return _evolve(
        state,
        step=state.step + 1,
        step_entered=False,
        step_deadline=None,
        step_windows=0,
        step_window_start=None,
        step_decider_state=None,
        hold_remaining=None,
        progress_deadline_at=None,
    )


def _settle(plan: Plan, state: RolloutState, now: float) -> RolloutState:
    """Enter and complete steps for as long as they are done at `now`."""
    while state.phase is Phase.PROGRESSING:
        if state.gate is not None:
            return state  # held at a gate until its hooks say yes
        if state.gap_until is not None:
            return state  # the unwatched time after a resume is judged first
        if state.step >= len(plan.steps):
            passed = state.last_verdict is VerdictKind.PASS
            if plan.analysis_interval is not None and plan.require_pass and not passed:
                last = "none yet" if state.last_verdict is None else state.last_verdict.value
                return _enter_pause(
                    state, now, f"analysis has not passed before promotion (last: {last})"
                )
            if _HP.CONFIRM_PROMOTION in state.hook_points:
                return _hold(state, _HP.CONFIRM_PROMOTION, now)
            return _promote(state, now, "all steps completed")
        step = plan.steps[state.step]
        if not state.step_entered:
            if (
                state.hook_points
                and _HP.CONFIRM_TRAFFIC_INCREASE in state.hook_points
                and isinstance(step, SetWeight)
                and step.percent > state.target.canary_percent
            ):
                return _hold(state, _HP.CONFIRM_TRAFFIC_INCREASE, now)
            state = _enter_step(plan, state, step, now)
            if state.phase is not Phase.PROGRESSING:
                return state
        if isinstance(step, (SetWeight, SetHeaderRoutes, SetMirror)):
            if state.confirmed != state.target:
                return state
        elif isinstance(step, Pause):
            assert state.step_deadline is not None
            if now < state.step_deadline:
                return state
        else:  # Analyze completes on its verdicts; WaitForPromotion on an operator.
            return state
        state = _next_step(state)
    return state


def _allowance(step: Any) -> float:
    """How long a step takes by design, before its progress deadline starts counting."""
    return step.seconds if isinstance(step, (Pause, Analyze)) else 0.0


def _progress_deadline(
    plan: Plan, step: Any, now: float, allowance: float | None = None
) -> float | None:
    if plan.progress_deadline is None:
        return None
    return now + (_allowance(step) if allowance is None else allowance) + plan.progress_deadline


def _enter_step(plan: Plan, state: RolloutState, step: Any, now: float) -> RolloutState:
    if state.gate is not None:  # an operator who promotes at a gate opens it
        state = _evolve(state, **_NO_GATE)
    state = _evolve(
        state, step_entered=True, progress_deadline_at=_progress_deadline(plan, step, now)
    )
    if isinstance(step, SetWeight):
        return _evolve(state, target=attrs.evolve(state.target, canary_percent=step.percent))
    if isinstance(step, SetHeaderRoutes):
        return _evolve(state, target=attrs.evolve(state.target, header_routes=step.routes))
    if isinstance(step, SetMirror):
        return _evolve(state, target=attrs.evolve(state.target, mirror_percent=step.percent))
    if isinstance(step, Pause):
        return _evolve(state, step_deadline=now + step.seconds)
    if isinstance(step, Analyze):
        return _evolve(state, step_window_start=now, step_windows=0, step_decider_state=None)
    assert isinstance(step, WaitForPromotion)
    return _enter_pause(state, now, "waiting for promotion")


# ---------------------------------------------------------------------------- handlers


def _on_start(plan: Plan, state: RolloutState, event: Start) -> RolloutState:
    # Started again while PENDING (the runner stopped at a hook before traffic moved): the
    # hooks already done stay done, and a gate's wait goes on from when it began.
    started = event.now if state.started_at is None else state.started_at
    current = event.current
    state = _evolve(
        state,
        phase=Phase.PROGRESSING,
        started_at=started,
        confirmed=current,
        target=STABLE_ONLY,
        reason="started",
        hook_points=event.hook_points,
    )
    if current is None:
        state = _evolve(state, reason="started (the router's split is unknown until applied)")
    elif not current.is_stable_only and event.adopt:
        state = _adopt(plan, state, current, event.now)
    elif not current.is_stable_only:
        # Whatever a previous attempt left behind, the plan starts from stable.
        state = _evolve(state, reason="started (router was not at stable)")
    return _begin(plan, state, event.now)


def _adopt(plan: Plan, state: RolloutState, found: TrafficSplit, now: float) -> RolloutState:
    """Take `found` as the rollout's own split and skip the steps it is already past."""
    keep = len(plan.steps)
    for index, step in enumerate(plan.steps):
        if isinstance(step, SetWeight) and step.percent >= found.canary_percent:
            keep = index
            break
    where = "promoting" if keep >= len(plan.steps) else f"continuing at step {keep + 1}"
    if keep < len(plan.steps):
        where += f" ({_describe_step(plan.steps[keep])})"
    skipped = (
        f"skipped steps 1-{keep}" if keep > 1 else "skipped step 1" if keep else "none skipped"
    )
    reason = f"started from the router's split, canary {found.canary_percent:g}% (adopted): "
    window = now if plan.analysis_interval is not None else None
    return _evolve(
        state,
        target=found,
        step=keep,
        window_start=window,
        reason=f"{reason}{skipped}, {where}",
    )


def _begin(plan: Plan, state: RolloutState, now: float) -> RolloutState:
    """Call the hooks due before traffic moves, in order; once all said yes, go on."""
    points = state.hook_points
    if state.gate in _BEFORE_TRAFFIC and state.gate not in points:
        # Started again with other hooks: the one it waited at is not this runner's.
        state = _evolve(state, **_NO_GATE)
    if not points:
        return _settle(plan, state, now)
    for point in _BEFORE_TRAFFIC:
        if point in points and point not in state.hooks_done:
            if state.gate is not point:
                state = _evolve(state, gate=point, gate_since=now, gate_ask_at=None)
            return _evolve(state, phase=Phase.PENDING, reason=f"waiting for {point.value}")
    if state.phase is Phase.PENDING:
        state = _evolve(state, phase=Phase.PROGRESSING, reason="started")
    if _HP.ROLLBACK in points and state.rollback_check_at is None:
        state = _evolve(state, rollback_check_at=now)
    return _settle(plan, state, now)


def _on_hook_answered(plan: Plan, state: RolloutState, event: HookAnswered) -> RolloutState:
    point, now, said = event.point, event.now, event.reason
    if state.phase.is_terminal:
        # A create-canary cut short by an abort counts as called: its canary is retired.
        if point in _AFTER_END or point is _HP.CREATE_CANARY:
            return _evolve(state, hooks_done=state.hooks_done | {point})
        return state
    ask_again = now if event.ask_again_at is None else event.ask_again_at
    if point is _HP.ROLLBACK:
        if state.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            return state  # promoting or rolling back already
        if event.yes:
            reason = "the rollback hook asked for a rollback"
            return _rollback(state, now, f"{reason}: {said}" if said else reason, abort=False)
        return _evolve(state, rollback_check_at=ask_again)
    if point is not state.gate:
        return state  # stale: the rollout moved on meanwhile (an operator promoted, say)
    if point is _HP.PROMOTE_STABLE:
        return _on_stable_promoted(plan, state, event)
    if point in (_HP.CREATE_CANARY, _HP.PRE_ROLLOUT):
        state = _evolve(state, hooks_done=state.hooks_done | {point})
        if not event.yes:
            why = f"{point.value} hook failed: {said}" if said else f"{point.value} hook failed"
            return _stop_at_hook(state, now, f"{why}; aborted before any traffic moved")
    elif not event.yes:
        if event.stop:
            return _stop_at_hook(state, now, f"{point.value}: {said}" if said else point.value)
        waiting = f"waiting for {point.value}: {said}" if said else f"waiting for {point.value}"
        return _evolve(state, gate_ask_at=ask_again, reason=waiting)
    state = _evolve(state, **_NO_GATE)
    if point is _HP.CONFIRM_TRAFFIC_INCREASE:
        step = plan.steps[state.step]
        return _settle(plan, _enter_step(plan, state, step, now), now)
    if point is _HP.CONFIRM_PROMOTION:
        return _promote(state, now, "all steps completed; promotion confirmed")
    if point is _HP.CONFIRM_ROLLOUT:
        state = _evolve(state, hooks_done=state.hooks_done | {point})
    return _begin(plan, state, now)


def _on_stable_promoted(plan: Plan, state: RolloutState, event: HookAnswered) -> RolloutState:
    """promote-stable answered (the runner has moved traffic back when it said yes).

    A no holds traffic where the canary has it and pauses: the canary was judged good,
    while the stable servers may be half upgraded, so rolling back to them would be wrong.
    Resuming asks promote-stable again.
    """
    said, now = event.reason, event.now
    if not event.yes:
        why = f"promote-stable failed: {said}" if said else "promote-stable failed"
        paused = _enter_pause(state, now, f"{why}; traffic held at the canary")
        # The steps are behind it, also those a full promotion skipped: resuming promotes
        # again rather than going back into a step it left (a Pause without its timer).
        return _evolve(
            paused,
            target=FULL_CANARY,
            step=len(plan.steps),
            step_entered=False,
            hold_remaining=None,
        )
    return _evolve(
        state,
        target=STABLE_ONLY,
        hooks_done=state.hooks_done | {_HP.PROMOTE_STABLE},
        reason="stable upgraded; traffic back on stable",
        **_NO_GATE,
    )


def _stop_at_hook(state: RolloutState, now: float, reason: str) -> RolloutState:
    """End the rollout as aborted; roll back first unless the router is known at stable."""
    confirmed = state.confirmed
    if state.phase is Phase.PENDING and confirmed is not None and confirmed.is_stable_only:
        return _evolve(
            state, phase=Phase.ABORTED, reason=reason, finished_at=now, aborting=True, **_NO_GATE
        )
    return _rollback(state, now, reason, abort=True)


def _hook_after_end(state: RolloutState) -> HookPoint | None:
    """The next hook to call once the rollout has ended, if any: retire, then post-rollout."""
    points, done = state.hook_points, state.hooks_done
    if state.started_at is None:
        return None  # aborted before it started: nothing to clean up
    retire = _HP.RETIRE_STABLE if state.phase is Phase.SUCCEEDED else _HP.RETIRE_CANARY
    if _HP.PROMOTE_STABLE in done:
        retire = _HP.RETIRE_CANARY  # stable now runs the new version: empty the canary
    # A canary whose create-canary hook was never called has nothing to retire.
    never_created = _HP.CREATE_CANARY in points and _HP.CREATE_CANARY not in done
    skip = retire is _HP.RETIRE_CANARY and never_created
    if retire in points and retire not in done and not skip:
        return retire
    if _HP.POST_ROLLOUT in points and _HP.POST_ROLLOUT not in done:
        return _HP.POST_ROLLOUT
    return None


def _on_split_applied(plan: Plan, state: RolloutState, event: SplitApplied) -> RolloutState:
    state = _evolve(state, confirmed=event.split)
    now = event.now
    if (
        plan.analysis_interval is not None
        and state.window_start is None
        and not event.split.is_stable_only
        and state.phase in (Phase.PROGRESSING, Phase.PAUSED)
    ):
        state = _evolve(state, window_start=now)  # the first traffic shift
    if state.phase is Phase.PROMOTING and event.split == state.target:
        upgrade = _HP.PROMOTE_STABLE in state.hook_points
        if upgrade and _HP.PROMOTE_STABLE not in state.hooks_done:
            # The canary has all traffic: upgrade stable, then traffic goes back to it.
            held = _evolve(state, gate=_HP.PROMOTE_STABLE, gate_since=now, gate_ask_at=None)
            return _evolve(held, reason="upgrading stable (promote-stable)")
        reason = "promoted; stable upgraded, traffic back on stable" if upgrade else "promoted"
        return _evolve(state, phase=Phase.SUCCEEDED, finished_at=now, reason=reason)
    if state.phase is Phase.ROLLING_BACK and event.split == state.target:
        phase = Phase.ABORTED if state.stage is Stage.ABORTING else Phase.ROLLED_BACK
        return _evolve(state, phase=phase, finished_at=now)
    if state.phase is Phase.PROGRESSING:
        return _settle(plan, state, now)
    return state


def _on_apply_failed(plan: Plan, state: RolloutState, event: ApplyFailed) -> RolloutState:
    if state.phase is Phase.ROLLING_BACK and event.split != state.target:
        return state  # a split the rollout no longer wants (an abort came meanwhile)
    if state.phase is Phase.ROLLING_BACK:
        where = "unknown" if state.confirmed is None else f"{state.confirmed.canary_percent:g}%"
        reason = f"rollback failed ({event.reason}); canary traffic last confirmed at {where}"
        # Hold what the router last confirmed: retrying at once would spin. An operator's
        # resume or abort, or the next failed verdict, tries the rollback again.
        paused = _enter_pause(state, event.now, reason)
        return _evolve(
            paused,
            target=state.confirmed or state.target,
            rollback_pending=True,
            aborting=state.stage is Stage.ABORTING,  # held as ABORT_PENDING: ends ABORTED
        )
    if state.stage in _HELD:
        return state
    return _rollback(state, event.now, f"router failed: {event.reason}", abort=False)


def _on_window_judged(plan: Plan, state: RolloutState, event: WindowJudged) -> RolloutState:
    if state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        return state  # the verdict came too late to matter
    verdict = event.verdict
    now = event.now
    if state.outage_until is not None:
        # The metrics are back: the outage is over. A pause it caused ends unless the
        # verdict rolls back (or an operator has made the pause theirs meanwhile).
        state = _evolve(state, outage_until=None)
        ours = state.pause_reason is not None and state.pause_reason.startswith(_OUTAGE)
        if state.phase is Phase.PAUSED and ours and verdict.kind is not VerdictKind.FAIL:
            state = _evolve(_unpause(plan, state, now), reason="metrics back: resumed")
    if event.kind is AnalysisKind.BACKGROUND:
        # One copy for the common case: the next window starts where this one ended.
        state = _evolve(
            state,
            window_start=event.end,
            consecutive_errors=0,
            decider_state=event.decider_state,
            last_verdict=verdict.kind,
        )
        if state.gap_until is not None:
            state = _gap_judged(state)
        if verdict.kind is VerdictKind.FAIL:
            return _rollback(state, now, f"analysis failed: {verdict.reason}", abort=False)
        if verdict.kind is VerdictKind.INCONCLUSIVE and state.phase is Phase.PROGRESSING:
            return _enter_pause(state, now, f"analysis inconclusive: {verdict.reason}")
        if state.phase is Phase.PROGRESSING:
            if _passes_early(verdict) and _in_step(plan, state, Pause):
                # The evidence already rules out a regression beyond the margin: the
                # hold has done its job.
                state = _evolve(_next_step(state), reason=f"early pass: {verdict.reason}")
            return _settle(plan, state, now)
        return state
    # An Analyze step's own window.
    state = _evolve(state, step_window_start=event.end, consecutive_errors=0)
    if state.phase is not Phase.PROGRESSING or not _in_analyze_step(plan, state):
        return state
    step = plan.steps[state.step]
    assert isinstance(step, Analyze)
    state = _evolve(
        state, step_decider_state=event.decider_state, step_windows=state.step_windows + 1
    )
    if verdict.kind is VerdictKind.FAIL:
        return _rollback(state, now, f"step analysis failed: {verdict.reason}", abort=False)
    if verdict.kind is VerdictKind.INCONCLUSIVE:
        return _enter_pause(state, now, f"step analysis inconclusive: {verdict.reason}")
    if state.step_windows < step.windows and not _passes_early(verdict):
        return state
    if verdict.kind is VerdictKind.PASS:
        return _settle(plan, _next_step(state), now)
    return _enter_pause(state, now, f"step analysis did not pass: {verdict.reason}")


def _in_step(plan: Plan, state: RolloutState, kind: type[Any]) -> bool:
    return (
        state.step < len(plan.steps)
        and state.step_entered
        and isinstance(plan.steps[state.step], kind)
    )


def _in_analyze_step(plan: Plan, state: RolloutState) -> bool:
    return _in_step(plan, state, Analyze)


def _passes_early(verdict: Verdict) -> bool:
    return verdict.early_pass and verdict.kind is VerdictKind.PASS


def _on_window_failed(plan: Plan, state: RolloutState, event: WindowFailed) -> RolloutState:
    if state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        return state
    errors = state.consecutive_errors + 1
    now = event.now
    # The window is skipped: the next one starts where it ended.
    if event.kind is AnalysisKind.BACKGROUND:
        # Once the gap is behind, the next Tick completes what it held.
        state = _gap_judged(_evolve(state, window_start=event.end, consecutive_errors=errors))
    else:
        state = _evolve(state, step_window_start=event.end, consecutive_errors=errors)
    if state.outage_until is not None:  # paused for an outage already
        if now >= state.outage_until:
            return _outage_over(state, now, event.reason)
        return state
    if errors >= plan.consecutive_error_limit:
        reason = f"{errors} analysis errors in a row, the last: {event.reason}"
        limit = event.outage_limit
        if limit is None:
            return _rollback(state, now, reason, abort=False)
        held = f"{_percent(state.confirmed)} canary"
        why = f"{_OUTAGE}: {reason}; holding traffic at {held}, rolling back after {limit:g} s"
        if state.phase is Phase.PAUSED:  # paused already (an operator): the pause stays
            return _evolve(state, outage_until=now + limit)
        return _evolve(_enter_pause(state, now, why), outage_until=now + limit)
    return state


def _outage_over(state: RolloutState, now: float, last: str) -> RolloutState:
    """The metrics outage has lasted as long as allowed: roll back."""
    since = state.paused_at if state.paused_at is not None else now
    reason = f"{_OUTAGE} lasted {now - since:g} s, past its limit; the last error: {last}"
    return _rollback(state, now, reason, abort=False)


def _percent(split: TrafficSplit | None) -> str:
    return "unknown" if split is None else f"{split.canary_percent:g}%"


def _on_tick(plan: Plan, state: RolloutState, event: Tick) -> RolloutState:
    now = event.now
    if state.phase is Phase.PROGRESSING:
        state = _settle(plan, state, now)
        deadline = state.progress_deadline_at
        late = deadline is not None and now >= deadline and state.gap_until is None
        if late and state.phase is Phase.PROGRESSING:
            return _on_progress_deadline(plan, state, now)
        return state
    if state.phase is Phase.PAUSED and state.outage_until is not None:
        # A metrics outage's own limit replaces the pause limit while it lasts.
        if now >= state.outage_until:
            return _outage_over(state, now, state.reason)
        return state
    if state.phase is Phase.PAUSED and plan.pause_limit is not None:
        assert state.paused_at is not None
        if now >= state.paused_at + plan.pause_limit and state.stage not in _HELD:
            reason = f"paused for longer than the pause limit ({plan.pause_limit:g} s)"
            return _rollback(state, now, f"{reason}: {state.pause_reason}", abort=False)
    return state


def _describe_step(step: Any) -> str:
    if isinstance(step, SetWeight):
        return f"set weight {step.percent:g}%"
    if isinstance(step, SetMirror):
        return f"mirror {step.percent:g}%"
    if isinstance(step, SetHeaderRoutes):
        return "set header routes"
    if isinstance(step, (Pause, Analyze)):
        return f"{type(step).__name__.lower()} {step.seconds:g} s"
    return type(step).__name__


def _on_progress_deadline(plan: Plan, state: RolloutState, now: float) -> RolloutState:
    """The current step ran past its progress deadline: roll back or pause, by policy."""
    step = plan.steps[state.step]
    assert plan.progress_deadline is not None
    why = ""
    unconfirmed = state.target != state.confirmed
    if unconfirmed:
        why = f": the router has not confirmed canary {state.target.canary_percent:g}%"
    elif isinstance(step, Analyze):
        why = f": {state.step_windows} of its {step.windows} analysis windows judged"
    reason = (
        f"progress deadline: step {state.step + 1} ({_describe_step(step)}) did not "
        f"complete within {plan.progress_deadline:g} s{why}"
    )
    if plan.on_progress_deadline == "rollback":
        return _rollback(state, now, reason, abort=False)
    if unconfirmed and state.confirmed is not None:
        # Hold what the router last confirmed instead of retrying for ever; resuming
        # enters the step again and so asks for its split again.
        state = _evolve(state, target=state.confirmed, step_entered=False)
    return _enter_pause(state, now, reason)


def _unpause(plan: Plan, state: RolloutState, now: float) -> RolloutState:
    deadline = None if state.hold_remaining is None else now + state.hold_remaining
    window_start = state.step_window_start
    if _in_analyze_step(plan, state):
        window_start = now  # the step's windows start again from here
    progress = None
    if state.step < len(plan.steps) and state.step_entered:
        step = plan.steps[state.step]
        allowance = state.hold_remaining if isinstance(step, Pause) else None
        progress = _progress_deadline(plan, step, now, allowance)
    return _evolve(
        state,
        phase=Phase.PROGRESSING,
        paused_at=None,
        pause_reason=None,
        hold_remaining=None,
        step_deadline=deadline,
        step_window_start=window_start,
        progress_deadline_at=progress,
        outage_until=None,
        reason="resumed",
    )


def _on_promote(plan: Plan, state: RolloutState, event: PromoteRequested) -> RolloutState:
    if state.phase is Phase.PAUSED:
        state = _unpause(plan, state, event.now)
    if state.step < len(plan.steps):
        if not state.step_entered:
            state = _enter_step(plan, state, plan.steps[state.step], event.now)
            state = _evolve(state, phase=Phase.PROGRESSING)
        # A traffic step's change stays; promoting only stops waiting for its confirmation.
        state = _next_step(state)
    state = _evolve(state, reason="promoted by operator")
    if state.step >= len(plan.steps):
        return _promote(state, event.now, "promoted by operator")
    return _settle(plan, state, event.now)


def _on_promote_full(
    plan: Plan, state: RolloutState, event: FullPromotionRequested
) -> RolloutState:
    return _promote(state, event.now, "fully promoted by operator")


def _on_pause(plan: Plan, state: RolloutState, event: PauseRequested) -> RolloutState:
    if state.stage in _HELD:
        return state  # already held; keep saying why (the failed rollback)
    if state.phase is Phase.PAUSED:
        return _evolve(state, pause_reason=event.reason, reason=event.reason)
    return _enter_pause(state, event.now, event.reason)


def _on_resume(plan: Plan, state: RolloutState, event: ResumeRequested) -> RolloutState:
    if state.stage in _HELD:
        return _rollback(state, event.now, f"retrying rollback: {state.reason}", abort=False)
    if state.step < len(plan.steps) and isinstance(plan.steps[state.step], WaitForPromotion):
        return _on_promote(plan, state, PromoteRequested(event.now))
    state = _unpause(plan, state, event.now)
    return _settle(plan, state, event.now)


def _on_abort(plan: Plan, state: RolloutState, event: AbortRequested) -> RolloutState:
    confirmed = state.confirmed
    if state.phase is Phase.PENDING and (confirmed is None or confirmed.is_stable_only):
        if state.gate is not None:
            state = _evolve(state, **_NO_GATE)
        return _evolve(
            state, phase=Phase.ABORTED, reason=event.reason, finished_at=event.now, aborting=True
        )
    return _rollback(state, event.now, event.reason, abort=True)


def _on_retry(plan: Plan, state: RolloutState, event: RetryRequested) -> RolloutState:
    fresh = RolloutState(phase=Phase.PROGRESSING, started_at=event.now, reason="retried")
    # A new attempt: the hooks before traffic (confirm, create, pre-rollout) run again.
    fresh = _evolve(
        fresh, confirmed=state.confirmed, hook_points=state.hook_points, release=state.release
    )
    return _begin(plan, fresh, event.now)


def _on_recovered(plan: Plan, state: RolloutState, event: Recovered) -> RolloutState:
    now, current = event.now, event.current
    if event.hook_points is not None:
        state = _evolve(state, hook_points=event.hook_points)
        if _HP.ROLLBACK in event.hook_points and state.rollback_check_at is None:
            state = _evolve(state, rollback_check_at=now)
    if state.stage in _HELD:
        # A rollback that failed before the restart: the new runner tries it again.
        if current is not None:
            state = _evolve(state, confirmed=current)
        return _rollback(
            state, now, f"retrying the rollback after a restart: {state.reason}", abort=False
        )
    if (
        state.phase is Phase.PROGRESSING
        and state.progress_deadline_at is None
        and state.step_entered
        and state.step < len(plan.steps)
    ):
        # State saved before progress deadlines existed (schema 1): start one now.
        step = plan.steps[state.step]
        allowance = None
        if isinstance(step, Pause) and state.step_deadline is not None:
            allowance = max(0.0, state.step_deadline - now)
        state = _evolve(state, progress_deadline_at=_progress_deadline(plan, step, now, allowance))
    if current is None:
        # The router cannot say: treat the split as unknown, so the target is applied again.
        return _with_gap(plan, _evolve(state, confirmed=None), now)
    if state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        return _evolve(state, confirmed=current)  # only a fresh apply ends these
    saved = state.confirmed
    if current.is_stable_only and saved is not None and not saved.is_stable_only:
        # Back at stable behind the saved state's back: a rollback that the runner before
        # could not record (killed during it, or its store failing), or a person's. Honour
        # it rather than send users to the canary again; `retry()` starts over.
        reason = (
            f"found the router at stable, not at the saved canary {saved.canary_percent:g}%: "
            "rolled back outside this runner"
        )
        return _rollback(_evolve(state, confirmed=current), now, reason, abort=False)
    # Nobody watched the canary since the last window: that time is judged before any
    # step completes (see `_settle`). Set before the split is taken in, which may settle.
    state = _with_gap(plan, state, now)
    # Whatever the router reports is in force: as if it had just confirmed it. A split
    # applied just before the crash thus completes its step; any other is applied again.
    return _on_split_applied(plan, state, SplitApplied(now, current))


def _with_gap(plan: Plan, state: RolloutState, now: float) -> RolloutState:
    """Mark [window_start, now) as unwatched time to judge, when windows are running."""
    live = state.phase in (Phase.PROGRESSING, Phase.PAUSED)
    if live and _needs_windows(plan, state):
        assert state.window_start is not None
        if now > state.window_start:
            return _evolve(state, gap_until=max(now, state.gap_until or now))
    return state


_HANDLERS: dict[type[Any], Callable[[Plan, RolloutState, Any], RolloutState]] = {
    Start: _on_start,
    SplitApplied: _on_split_applied,
    ApplyFailed: _on_apply_failed,
    WindowJudged: _on_window_judged,
    WindowFailed: _on_window_failed,
    Tick: _on_tick,
    PromoteRequested: _on_promote,
    FullPromotionRequested: _on_promote_full,
    PauseRequested: _on_pause,
    ResumeRequested: _on_resume,
    AbortRequested: _on_abort,
    RetryRequested: _on_retry,
    Recovered: _on_recovered,
    HookAnswered: _on_hook_answered,
}


# ---------------------------------------------------------------------------- API


def transition(plan: Plan, state: RolloutState, event: Event) -> RolloutState:
    """The state after `event`; raises `InvalidTransition` (state unchanged) if not allowed.

    >>> from canarykit import Plan, SetWeight
    >>> plan = Plan(steps=[SetWeight(10)])
    >>> state = transition(plan, RolloutState(), Start(now=0.0))
    >>> state.phase, state.target.canary_percent
    (Phase.PROGRESSING, 10.0)
    """
    stage = state.stage
    row = _TRANSITIONS[stage]
    allowed = row.get(type(event))
    if allowed is None:
        if type(event) in _COMMAND_WORDS:
            raise InvalidTransition(refusal(plan, state, event)) from None
        raise InvalidTransition(
            f"{type(event).__name__} is not allowed while the rollout is "
            f"{_STAGE_WORDS.get(stage, stage.value)} (it accepts: "
            f"{', '.join(e.__name__ for e in row) or 'nothing'})"
        ) from None
    new = _HANDLERS[type(event)](plan, state, event)
    if new.stage not in allowed:  # pragma: no cover - a bug in a handler, not user error
        raise AssertionError(f"{stage} --{type(event).__name__}--> {new.stage} not in table")
    return new


# Operator events as the operator names them (the CLI's and `Rollout`'s commands).
_COMMAND_WORDS: dict[type[Any], str] = {
    PromoteRequested: "promote",
    FullPromotionRequested: "promote --full",
    PauseRequested: "pause",
    ResumeRequested: "resume",
    AbortRequested: "abort",
    RetryRequested: "retry",
}
_ENDED = {
    Phase.SUCCEEDED: "promoted",
    Phase.ROLLED_BACK: "rolled back",
    Phase.ABORTED: "aborted",
}
# The stages that split a phase, for people (the others are their phase's value).
_STAGE_WORDS = {
    Stage.ROLLING_BACK: "rolling back",
    Stage.ABORTING: "rolling back for an abort",
    Stage.ROLLBACK_PENDING: "held after a failed rollback",
    Stage.ABORT_PENDING: "held after the failed rollback of an abort",
}


def when(time: float | None) -> str:
    """A rollout time for people: a UTC date for a wall-clock time, else seconds.

    >>> when(1796479390.0)
    '2026-12-05 14:03:10 UTC'
    >>> when(120.0)
    't=120 s'
    """
    if time is None:
        return "an unknown time"
    if time >= 1e9:  # a wall clock (2001 onwards), not a virtual one starting near 0
        moment = datetime.datetime.fromtimestamp(time, tz=datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"t={time:g} s"


def shown_step(plan: Plan, state: RolloutState) -> str:
    """The step counter for people, "step 3/8": never beyond the step count."""
    total = len(plan.steps)
    return f"step {min(state.step + 1, total)}/{total}" if total else "step 0/0"


def describe_where(plan: Plan, state: RolloutState) -> str:
    """Where a rollout is, for people: "progressing at 20%, step 2/4" or how it ended."""
    phase = state.phase
    if phase.is_terminal:
        return f"it {_ENDED[phase]} at {when(state.finished_at)}"
    canary = _percent(state.confirmed)
    if phase is Phase.PENDING:
        return "it has not started yet"
    if phase is Phase.PROMOTING:
        return f"it is promoting (canary at {canary})"
    stage = state.stage
    if phase is Phase.ROLLING_BACK or stage in _HELD:
        return f"it is {_STAGE_WORDS[stage]} (canary at {canary})"
    return f"it is {phase.value} at {canary}, {shown_step(plan, state)}"


def allowed_commands(state: RolloutState) -> tuple[str, ...]:
    """The operator commands that can change the rollout's stage now, in operator words.

    From the transition table: the commands the state's stage accepts that may lead to
    another stage (a pause of a rollout held after a failed rollback, say, changes
    nothing, so it is not offered).
    """
    stage = state.stage
    row = _TRANSITIONS[stage]
    return tuple(
        word
        for event, word in _COMMAND_WORDS.items()
        if event in row and row[event] != frozenset({stage})
    )


def refusal(plan: Plan, state: RolloutState, event: Any) -> str:
    """Why the operator command `event` is refused now, and what the operator can do.

    >>> from canarykit import Plan, SetWeight
    >>> state = RolloutState(phase=Phase.SUCCEEDED, finished_at=120.0)
    >>> refusal(Plan(steps=[SetWeight(10)]), state, PauseRequested(now=130.0))
    'pause: the rollout already promoted at t=120 s; nothing to do'
    """
    kind: type[Any] = event if isinstance(event, type) else type(event)
    word = _COMMAND_WORDS.get(kind, kind.__name__)
    where = describe_where(plan, state)
    if state.phase is Phase.SUCCEEDED:
        return f"{word}: the rollout already {where[3:]}; nothing to do"
    if state.phase.is_terminal:
        return f"{word}: the rollout already {where[3:]}; you can retry it"
    stage = state.stage
    why = {
        ResumeRequested: "the rollout is not paused",
        RetryRequested: "only a rolled-back or aborted rollout can be retried",
    }.get(kind, f"not while the rollout is {state.phase.value.replace('_', ' ')}")
    if stage in _HELD:
        why = "not while a failed rollback is pending"
    can = [c for c in allowed_commands(state) if c != word]
    options = f"you can {_or_list(can)} it" if can else "no command helps now: wait for it"
    if stage in _HELD:
        options += " to try the rollback again"
    return f"{word}: {why} ({where}); {options}"


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def next_action(plan: Plan, state: RolloutState, now: float) -> Action:
    """What the driver should do next, at time `now`.

    Order of precedence: finish a terminal rollout (after its hooks after the end);
    wait (with a deadline already passed, so the driver ticks at once) when the progress
    deadline has run out; apply the target split when the router has not confirmed it
    (or when promoting or rolling back); call the hooks that are due; collect a window
    that has ended; otherwise wait.
    """
    phase = state.phase
    if phase.is_terminal:
        if state.hook_points:
            after = _hook_after_end(state)
            if after is not None:
                return RunHook(point=after)
        return Finish(phase=phase, reason=state.reason)
    if phase is Phase.PENDING:
        gate = state.gate  # a hook before traffic moves, or nothing started yet
        if gate is None:
            return WaitUntil(until=math.inf)
        if state.gate_ask_at is None or now >= state.gate_ask_at:
            return RunHook(point=gate)
        return WaitUntil(until=state.gate_ask_at)
    if phase is Phase.PROGRESSING:
        progress = state.progress_deadline_at
        if progress is not None and now >= progress and state.gap_until is None:
            return WaitUntil(until=progress)  # the deadline passed: a Tick settles it first
    if phase is Phase.PROMOTING and state.gate is _HP.PROMOTE_STABLE:
        return RunHook(point=_HP.PROMOTE_STABLE)  # then traffic goes back to stable
    target = state.target
    # Identity first: the confirmed split is usually the very object that was applied.
    unconfirmed = target is not state.confirmed and target != state.confirmed
    if unconfirmed or phase is Phase.PROMOTING or phase is Phase.ROLLING_BACK:
        # Promotion and rollback always end with a fresh apply (and read-back), even when
        # the router already reports that split: only a confirmation ends them.
        return ApplySplit(split=target)
    until = math.inf
    if state.hook_points:
        due, until = _hook_due(state, now)
        if due is not None:
            return RunHook(point=due)
    outage = state.outage_until is not None
    if (phase is Phase.PROGRESSING or outage) and _in_analyze_step(plan, state):
        # Paused for a metrics outage, the step's windows go on: they end the outage.
        step = plan.steps[state.step]
        assert isinstance(step, Analyze) and state.step_window_start is not None
        end = state.step_window_start + step.interval
        if now >= end:
            return CollectWindow(
                kind=AnalysisKind.STEP,
                start=state.step_window_start,
                end=end,
                decider_state=state.step_decider_state,
            )
        until = min(until, end)
    if phase in (Phase.PROGRESSING, Phase.PAUSED) and _needs_windows(plan, state):
        end = _background_end(plan, state)
        if now >= end:
            assert state.window_start is not None
            return CollectWindow(
                kind=AnalysisKind.BACKGROUND,
                start=state.window_start,
                end=end,
                decider_state=state.decider_state,
            )
        until = min(until, end)
    if phase is Phase.PROGRESSING and state.gap_until is None:
        # While a gap waits for its window, no step ends and no deadline runs.
        if state.step_deadline is not None:
            until = min(until, state.step_deadline)
        if state.progress_deadline_at is not None:
            until = min(until, state.progress_deadline_at)
    if phase is Phase.PAUSED and state.outage_until is not None:
        until = min(until, state.outage_until)
    elif (
        phase is Phase.PAUSED
        and plan.pause_limit is not None
        and state.paused_at is not None
        and state.stage not in _HELD
    ):
        until = min(until, state.paused_at + plan.pause_limit)
    return WaitUntil(until=until)


def _hook_due(state: RolloutState, now: float) -> tuple[HookPoint | None, float]:
    """A hook to call now (the gate waited at, or the rollback check), or when one is due."""
    until = math.inf
    gate = state.gate
    if gate is not None and state.phase is Phase.PROGRESSING:
        ask = state.gate_ask_at
        if ask is None or now >= ask:
            return gate, now
        until = ask
    check = state.rollback_check_at
    if check is not None and _HP.ROLLBACK in state.hook_points:
        if now >= check:
            return _HP.ROLLBACK, now
        until = min(until, check)
    return None, until


class RolloutMachine:
    """A plan and its current state, with `handle(event)` and `next_action(now)`.

    A thin convenience over the pure functions `transition` and `next_action`:

    >>> from canarykit import Plan, SetWeight, TrafficSplit
    >>> machine = RolloutMachine(Plan(steps=[SetWeight(10)]))
    >>> machine.handle(Start(now=0.0))
    >>> machine.next_action(0.0)
    ApplySplit(split=TrafficSplit(canary_percent=10.0, header_routes=(), mirror_percent=0.0))
    """

    __slots__ = ("plan", "state")

    def __init__(self, plan: Plan, state: RolloutState | None = None) -> None:
        self.plan = plan
        self.state = RolloutState() if state is None else state

    def handle(self, event: Event) -> None:
        """Apply `event`; raises `InvalidTransition` and changes nothing if not allowed."""
        self.state = transition(self.plan, self.state, event)

    def next_action(self, now: float) -> Action:
        """What to do next at `now` (see `next_action`)."""
        return next_action(self.plan, self.state, now)

    def __repr__(self) -> str:
        return f"<RolloutMachine {self.state.phase.value} at step {self.state.step}>"
