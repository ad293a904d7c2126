"""What a running rollout reports to its listeners (``Rollout(listeners=[...])``).

Each event is a frozen attrs class with the rollout-clock ``time`` it happened at;
`RolloutEvent` is their union, for a listener's type hint::

    def listener(event: canarykit.events.RolloutEvent) -> None:
        if isinstance(event, canarykit.events.PhaseChanged):
            print(event.old, "->", event.new, event.reason)

- `PhaseChanged`, `SplitConfirmed`, `VerdictReached`: the rollout's progress.
- `AnalysisFailed`, `RouterCallFailed`, `LeaseRevoked`: what went wrong, as it happened
  (the exceptions of the same areas are `canarykit.MetricsError`,
  `canarykit.RouterError`, `canarykit.LeaseLostError`).
- `GateWaiting`, `GateOpened`, `HookRan`: hooks (`canarykit.hooks`).
- `CommandReceived`, `RolloutResumed`: an operator's command, a restart.
"""

from ._events import AnalysisFailed as AnalysisFailed
from ._events import CommandReceived as CommandReceived
from ._events import GateOpened as GateOpened
from ._events import GateWaiting as GateWaiting
from ._events import HookRan as HookRan
from ._events import LeaseRevoked as LeaseRevoked
from ._events import PhaseChanged as PhaseChanged
from ._events import RolloutEvent as RolloutEvent
from ._events import RolloutResumed as RolloutResumed
from ._events import RouterCallFailed as RouterCallFailed
from ._events import SplitConfirmed as SplitConfirmed
from ._events import VerdictReached as VerdictReached
from ._exports import claim_public_names as _claim_public_names

__all__ = [
    "AnalysisFailed",
    "CommandReceived",
    "GateOpened",
    "GateWaiting",
    "HookRan",
    "LeaseRevoked",
    "PhaseChanged",
    "RolloutEvent",
    "RolloutResumed",
    "RouterCallFailed",
    "SplitConfirmed",
    "VerdictReached",
]

_claim_public_names(globals())
