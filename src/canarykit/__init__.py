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

The top level holds what a program that runs rollouts needs: plans, the runner and its
outcome, the protocols a router, metrics source, decider, store or lease implements, the
values they exchange, and the errors. The layers have packages of their own:

- `canarykit.machine`: the pure state machine (phases, events, actions, `transition`).
- `canarykit.events`: what a running rollout reports to its listeners.
- `canarykit.hooks`: gates, checks and lifecycle calls.
- `canarykit.stores`: where state and leases live (files, memory, etcd, PostgreSQL).
- `canarykit.deciders`, `canarykit.routers`, `canarykit.metrics`, `canarykit.notify`,
  `canarykit.exporter`, `canarykit.plot`: the parts a rollout is built from.
- `canarykit.policy`: policy files (TOML), loaded on first use.
- `canarykit.testing`: fakes and a virtual clock for your own tests.

The modules behind them are private.
"""

from typing import Any

from . import events as events
from . import hooks as hooks
from . import machine as machine
from . import stores as stores
from ._clock import SystemClock as SystemClock
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
from ._events import RolloutOutcome as RolloutOutcome
from ._events import TimelineEntry as TimelineEntry
from ._exports import claim_public_names as _claim_public_names
from ._exports import load_moved as _load_moved
from ._histogram import LatencyHistogram as LatencyHistogram
from ._lease import FencedLease as FencedLease
from ._lease import Lease as Lease
from ._machine import Phase as Phase
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
from ._protocols import TrafficRouter as TrafficRouter
from ._runner import Listener as Listener
from ._runner import Rollout as Rollout
from ._runner import run_rollout as run_rollout
from ._split import HeaderMatch as HeaderMatch
from ._split import HeaderRoute as HeaderRoute
from ._split import TrafficSplit as TrafficSplit
from ._verdict import Judgement as Judgement
from ._verdict import MetricVerdict as MetricVerdict
from ._verdict import Verdict as Verdict
from ._verdict import VerdictKind as VerdictKind

__version__ = "0.1.0"

__all__ = [
    "Analyze",
    "Arm",
    "ArmStats",
    "CanaryError",
    "Clock",
    "ClockStalled",
    "ConfigError",
    "CorruptStateError",
    "Decider",
    "DeciderError",
    "FencedLease",
    "FileRefusedError",
    "HeaderMatch",
    "HeaderRoute",
    "InvalidTransition",
    "Judgement",
    "LatencyHistogram",
    "Lease",
    "LeaseError",
    "LeaseHeldError",
    "LeaseLostError",
    "Listener",
    "MetricVerdict",
    "MetricsError",
    "MetricsSource",
    "NoDataError",
    "Observation",
    "Pause",
    "Phase",
    "Plan",
    "PlanMismatchError",
    "ReleaseFinishedError",
    "ReleaseInProgressError",
    "Rollout",
    "RolloutOutcome",
    "RouterCapabilities",
    "RouterError",
    "RouterNotAtStableError",
    "SetHeaderRoutes",
    "SetMirror",
    "SetWeight",
    "StateError",
    "StateSaveError",
    "StateStore",
    "StateVersionError",
    "Step",
    "SystemClock",
    "TimelineEntry",
    "TrafficRouter",
    "TrafficSplit",
    "UnsupportedPlanError",
    "Verdict",
    "VerdictKind",
    "WaitForPromotion",
    "Window",
    "exponential",
    "from_weights",
    "linear",
    "run_rollout",
]

# Names that lived here before the layers had packages, and the names renamed so that no
# event, action, step or exception can be mistaken for another: kept for one release,
# with a DeprecationWarning that names the new home.
_MOVED = {
    "Abort": ("canarykit.machine", "AbortRequested"),
    "AnalysisError": ("canarykit.events", "AnalysisFailed"),
    "AnalysisKind": ("canarykit.machine", "AnalysisKind"),
    "ApplyFailed": ("canarykit.machine", "ApplyFailed"),
    "ApplySplit": ("canarykit.machine", "ApplySplit"),
    "Approval": ("canarykit.hooks", "Approval"),
    "CollectWindow": ("canarykit.machine", "CollectWindow"),
    "CommandReceived": ("canarykit.events", "CommandReceived"),
    "Deployment": ("canarykit.policy", "Deployment"),
    "FileApproval": ("canarykit.hooks", "FileApproval"),
    "FileLease": ("canarykit.stores", "FileLease"),
    "FileStore": ("canarykit.stores", "FileStore"),
    "Finish": ("canarykit.machine", "Finish"),
    "GateOpened": ("canarykit.events", "GateOpened"),
    "GateWaiting": ("canarykit.events", "GateWaiting"),
    "HookAnswer": ("canarykit.hooks", "HookAnswer"),
    "HookAnswered": ("canarykit.machine", "HookAnswered"),
    "HookCall": ("canarykit.hooks", "HookCall"),
    "HookFunction": ("canarykit.hooks", "HookFunction"),
    "HookPoint": ("canarykit.machine", "HookPoint"),
    "HookRan": ("canarykit.events", "HookRan"),
    "Hooks": ("canarykit.hooks", "Hooks"),
    "LeaseLost": ("canarykit.events", "LeaseRevoked"),
    "MemoryLease": ("canarykit.stores", "MemoryLease"),
    "MemoryStore": ("canarykit.stores", "MemoryStore"),
    "PhaseChanged": ("canarykit.events", "PhaseChanged"),
    "Policy": ("canarykit.policy", "Policy"),
    "Promote": ("canarykit.machine", "PromoteRequested"),
    "PromoteFull": ("canarykit.machine", "FullPromotionRequested"),
    "Recovered": ("canarykit.machine", "Recovered"),
    "RequestPause": ("canarykit.machine", "PauseRequested"),
    "Resume": ("canarykit.machine", "ResumeRequested"),
    "Retry": ("canarykit.machine", "RetryRequested"),
    "RolloutEvent": ("canarykit.events", "RolloutEvent"),
    "RolloutMachine": ("canarykit.machine", "RolloutMachine"),
    "RolloutResumed": ("canarykit.events", "RolloutResumed"),
    "RolloutState": ("canarykit.machine", "RolloutState"),
    "RouterFailure": ("canarykit.events", "RouterCallFailed"),
    "RunHook": ("canarykit.machine", "RunHook"),
    "SimulationSettings": ("canarykit.policy", "SimulationSettings"),
    "SplitApplied": ("canarykit.machine", "SplitApplied"),
    "SplitConfirmed": ("canarykit.events", "SplitConfirmed"),
    "Start": ("canarykit.machine", "Start"),
    "Tick": ("canarykit.machine", "Tick"),
    "VerdictReached": ("canarykit.events", "VerdictReached"),
    "Wait": ("canarykit.machine", "WaitUntil"),
    "Webhook": ("canarykit.hooks", "Webhook"),
    "WindowFailed": ("canarykit.machine", "WindowFailed"),
    "WindowJudged": ("canarykit.machine", "WindowJudged"),
    "load_policy": ("canarykit.policy", "load_policy"),
    "next_action": ("canarykit.machine", "next_action"),
    "resolution": ("canarykit.metrics", "resolution"),
    "transition": ("canarykit.machine", "transition"),
    "transition_table": ("canarykit.machine", "transition_table"),
}


# Loaded when first named (``canarykit.policy.load_policy``), as if imported.
_SUBPACKAGES = frozenset(
    {"deciders", "exporter", "metrics", "notify", "plot", "policy", "presets", "routers", "testing"}
)


def __getattr__(name: str) -> Any:
    # The policy layer (a TOML parser and every decider module) loads on first use (PEP 562):
    # a program that builds a plan and a Rollout never pays for it.
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    return _load_moved(globals(), _MOVED, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Public names say they live in this package, not in the private module defining them.
_claim_public_names(globals())
