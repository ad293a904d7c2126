"""canarykit: canary deployments as a library.

Move a small share of traffic to a new version, compare it with the old one, widen the
share step by step while it is healthy, and roll back at once when it is not::

    import canarykit
    from canarykit.deciders import Bound, threshold

    plan = canarykit.linear(10, 20, hold=120, analysis_interval=30, final_bake=300)
    outcome = await canarykit.run_rollout(
        plan,
        router=my_router,
        metrics=my_metrics,
        decider=threshold(Bound(metric="error_rate", max=0.02)),
    )

The public API is re-exported here; the modules behind it are private.
"""

from typing import TYPE_CHECKING, Any

from ._errors import CanaryError as CanaryError
from ._errors import ClockStalled as ClockStalled
from ._errors import ConfigError as ConfigError
from ._errors import CorruptStateError as CorruptStateError
from ._errors import DeciderError as DeciderError
from ._errors import FileRefusedError as FileRefusedError
from ._errors import InvalidTransition as InvalidTransition
from ._errors import LeaseError as LeaseError
from ._errors import LeaseHeldError as LeaseHeldError
from ._errors import LeaseLostError as LeaseLostError
from ._errors import MetricsError as MetricsError
from ._errors import NoDataError as NoDataError
from ._errors import PlanMismatchError as PlanMismatchError
from ._errors import ReleaseFinishedError as ReleaseFinishedError
from ._errors import ReleaseInProgressError as ReleaseInProgressError
from ._errors import RouterError as RouterError
from ._errors import RouterNotAtStableError as RouterNotAtStableError
from ._errors import StateError as StateError
from ._errors import StateSaveError as StateSaveError
from ._errors import StateVersionError as StateVersionError
from ._errors import UnsupportedPlanError as UnsupportedPlanError
from ._events import AnalysisError as AnalysisError
from ._events import CommandReceived as CommandReceived
from ._events import GateOpened as GateOpened
from ._events import GateWaiting as GateWaiting
from ._events import HookRan as HookRan
from ._events import LeaseLost as LeaseLost
from ._events import PhaseChanged as PhaseChanged
from ._events import RolloutEvent as RolloutEvent
from ._events import RolloutOutcome as RolloutOutcome
from ._events import RolloutResumed as RolloutResumed
from ._events import RouterFailure as RouterFailure
from ._events import SplitConfirmed as SplitConfirmed
from ._events import TimelineEntry as TimelineEntry
from ._events import VerdictReached as VerdictReached
from ._exports import claim_public_names as _claim_public_names
from ._exports import load_lazy as _load_lazy
from ._histogram import LatencyHistogram as LatencyHistogram
from ._histogram import resolution as resolution
from ._hooks import Approval as Approval
from ._hooks import FileApproval as FileApproval
from ._hooks import HookAnswer as HookAnswer
from ._hooks import HookCall as HookCall
from ._hooks import HookFunction as HookFunction
from ._hooks import Hooks as Hooks
from ._hooks import Webhook as Webhook
from ._lease import FileLease as FileLease
from ._lease import Lease as Lease
from ._lease import MemoryLease as MemoryLease
from ._machine import Abort as Abort
from ._machine import AnalysisKind as AnalysisKind
from ._machine import ApplyFailed as ApplyFailed
from ._machine import ApplySplit as ApplySplit
from ._machine import CollectWindow as CollectWindow
from ._machine import Finish as Finish
from ._machine import HookAnswered as HookAnswered
from ._machine import HookPoint as HookPoint
from ._machine import Phase as Phase
from ._machine import Promote as Promote
from ._machine import PromoteFull as PromoteFull
from ._machine import Recovered as Recovered
from ._machine import RequestPause as RequestPause
from ._machine import Resume as Resume
from ._machine import Retry as Retry
from ._machine import RolloutMachine as RolloutMachine
from ._machine import RolloutState as RolloutState
from ._machine import RunHook as RunHook
from ._machine import SplitApplied as SplitApplied
from ._machine import Start as Start
from ._machine import Tick as Tick
from ._machine import Wait as Wait
from ._machine import WindowFailed as WindowFailed
from ._machine import WindowJudged as WindowJudged
from ._machine import next_action as next_action
from ._machine import transition as transition
from ._machine import transition_table as transition_table
from ._observe import Arm as Arm
from ._observe import ArmStats as ArmStats
from ._observe import Observation as Observation
from ._observe import Window as Window
from ._plan import Analyze as Analyze
from ._plan import Pause as Pause
from ._plan import Plan as Plan
from ._plan import SetHeaderRoutes as SetHeaderRoutes
from ._plan import SetMirror as SetMirror
from ._plan import SetWeight as SetWeight
from ._plan import Step as Step
from ._plan import WaitForPromotion as WaitForPromotion
from ._plan import exponential as exponential
from ._plan import from_weights as from_weights
from ._plan import linear as linear
from ._protocols import Clock as Clock
from ._protocols import Decider as Decider
from ._protocols import MetricsSource as MetricsSource
from ._protocols import RouterCapabilities as RouterCapabilities
from ._protocols import StateStore as StateStore
from ._protocols import SystemClock as SystemClock
from ._protocols import TrafficRouter as TrafficRouter
from ._runner import Listener as Listener
from ._runner import Rollout as Rollout
from ._runner import run_rollout as run_rollout
from ._split import HeaderMatch as HeaderMatch
from ._split import HeaderRoute as HeaderRoute
from ._split import TrafficSplit as TrafficSplit
from ._stores import FileStore as FileStore
from ._stores import MemoryStore as MemoryStore
from ._verdict import Judgement as Judgement
from ._verdict import MetricVerdict as MetricVerdict
from ._verdict import Verdict as Verdict
from ._verdict import VerdictKind as VerdictKind

__version__ = "0.1.0"

__all__ = [
    "Abort",
    "AnalysisError",
    "AnalysisKind",
    "Analyze",
    "ApplyFailed",
    "ApplySplit",
    "Approval",
    "Arm",
    "ArmStats",
    "CanaryError",
    "Clock",
    "ClockStalled",
    "CollectWindow",
    "CommandReceived",
    "ConfigError",
    "CorruptStateError",
    "Decider",
    "DeciderError",
    "FileRefusedError",
    "Deployment",
    "FileApproval",
    "FileLease",
    "FileStore",
    "Finish",
    "GateOpened",
    "GateWaiting",
    "HeaderMatch",
    "HeaderRoute",
    "HookAnswer",
    "HookAnswered",
    "HookCall",
    "HookFunction",
    "HookPoint",
    "HookRan",
    "Hooks",
    "InvalidTransition",
    "Judgement",
    "LatencyHistogram",
    "Lease",
    "LeaseError",
    "LeaseHeldError",
    "LeaseLost",
    "LeaseLostError",
    "Listener",
    "MemoryLease",
    "MemoryStore",
    "MetricVerdict",
    "MetricsError",
    "MetricsSource",
    "NoDataError",
    "Observation",
    "Pause",
    "Phase",
    "PhaseChanged",
    "Plan",
    "PlanMismatchError",
    "Policy",
    "Promote",
    "PromoteFull",
    "Recovered",
    "ReleaseFinishedError",
    "ReleaseInProgressError",
    "RequestPause",
    "Resume",
    "Retry",
    "Rollout",
    "RolloutEvent",
    "RolloutMachine",
    "RolloutOutcome",
    "RolloutResumed",
    "RolloutState",
    "RouterCapabilities",
    "RouterError",
    "RouterFailure",
    "RouterNotAtStableError",
    "RunHook",
    "SetHeaderRoutes",
    "SetMirror",
    "SetWeight",
    "SimulationSettings",
    "SplitApplied",
    "SplitConfirmed",
    "Start",
    "StateError",
    "StateSaveError",
    "StateStore",
    "StateVersionError",
    "Step",
    "SystemClock",
    "Tick",
    "TimelineEntry",
    "TrafficRouter",
    "TrafficSplit",
    "UnsupportedPlanError",
    "Verdict",
    "VerdictKind",
    "VerdictReached",
    "Wait",
    "WaitForPromotion",
    "Webhook",
    "Window",
    "WindowFailed",
    "WindowJudged",
    "exponential",
    "from_weights",
    "linear",
    "load_policy",
    "next_action",
    "resolution",
    "run_rollout",
    "transition",
    "transition_table",
]

if TYPE_CHECKING:
    from ._policy import Policy as Policy
    from ._policy import SimulationSettings as SimulationSettings
    from ._policy import load_policy as load_policy
    from ._policy_run import Deployment as Deployment

# The policy layer (a TOML parser and every decider module) loads on first use of one of
# its names (PEP 562): a program that builds a plan and a Rollout never pays for it.
_LAZY = {
    "Deployment": "._policy_run",
    "Policy": "._policy",
    "SimulationSettings": "._policy",
    "load_policy": "._policy",
}


def __getattr__(name: str) -> Any:
    return _load_lazy(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Public names say they live in this package, not in the private module defining them
# (the lazy ones when they are first loaded).
_claim_public_names({**globals(), "__all__": [n for n in __all__ if n not in _LAZY]})
