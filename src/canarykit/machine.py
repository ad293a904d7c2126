"""The rollout state machine: pure, table-driven, sans-IO (as h11 is for HTTP).

A rollout is a `canarykit.Plan` and a `RolloutState`. Events come in, each carrying the
time ``now`` (the machine never reads a clock): `transition(plan, state, event)` returns
the next state and `next_action(plan, state, now)` says what the driver should do now.
`RolloutMachine` keeps the state and does both. `canarykit.Rollout` is the driver that
ships; a team may write its own on these names.

- Phases: `Phase`; the rows of the table: `Stage` (a phase, or one of the three that
  split one: ABORTING, ROLLBACK_PENDING, ABORT_PENDING; see `RolloutState.stage`); the
  whole table: `transition_table`; a refused event raises `InvalidTransition`.
- Events from the driver: `Start`, `SplitApplied`, `ApplyFailed`, `WindowJudged`,
  `WindowFailed`, `Tick`, `HookAnswered`, `Recovered`.
- Events from an operator: `PromoteRequested`, `FullPromotionRequested`,
  `PauseRequested`, `ResumeRequested`, `AbortRequested`, `RetryRequested`.
- Actions for the driver: `ApplySplit`, `CollectWindow`, `RunHook`, `WaitUntil`,
  `Finish`; with `AnalysisKind` and `HookPoint`.

>>> from canarykit import Plan, SetWeight
>>> from canarykit.machine import RolloutMachine, Start
>>> machine = RolloutMachine(Plan(steps=[SetWeight(10)]))
>>> machine.handle(Start(now=0.0))
>>> machine.state.phase
Phase.PROGRESSING
>>> machine.next_action(0.0).split.canary_percent
10.0
"""

# Phase and InvalidTransition are the top level's (outcomes and Rollout's methods use them);
# importable here too, as the machine's vocabulary.
from ._errors import InvalidTransition as InvalidTransition
from ._exports import claim_public_names as _claim_public_names
from ._machine import AbortRequested as AbortRequested
from ._machine import AnalysisKind as AnalysisKind
from ._machine import ApplyFailed as ApplyFailed
from ._machine import ApplySplit as ApplySplit
from ._machine import CollectWindow as CollectWindow
from ._machine import Finish as Finish
from ._machine import FullPromotionRequested as FullPromotionRequested
from ._machine import HookAnswered as HookAnswered
from ._machine import HookPoint as HookPoint
from ._machine import PauseRequested as PauseRequested
from ._machine import Phase as Phase
from ._machine import PromoteRequested as PromoteRequested
from ._machine import Recovered as Recovered
from ._machine import ResumeRequested as ResumeRequested
from ._machine import RetryRequested as RetryRequested
from ._machine import RolloutMachine as RolloutMachine
from ._machine import RolloutState as RolloutState
from ._machine import RunHook as RunHook
from ._machine import SplitApplied as SplitApplied
from ._machine import Stage as Stage
from ._machine import Start as Start
from ._machine import Tick as Tick
from ._machine import WaitUntil as WaitUntil
from ._machine import WindowFailed as WindowFailed
from ._machine import WindowJudged as WindowJudged
from ._machine import next_action as next_action
from ._machine import transition as transition
from ._machine import transition_table as transition_table

__all__ = [
    "AbortRequested",
    "AnalysisKind",
    "ApplyFailed",
    "ApplySplit",
    "CollectWindow",
    "Finish",
    "FullPromotionRequested",
    "HookAnswered",
    "HookPoint",
    "PauseRequested",
    "PromoteRequested",
    "Recovered",
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
    "transition",
    "transition_table",
]

_claim_public_names(globals())
