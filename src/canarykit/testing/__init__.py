"""What users import in their own tests: fakes, a virtual clock, a simulator, rehearsals.

- `FakeRouter`: records every split; fails or hangs on the calls you name.
- `ScriptedMetrics`: both arms' traffic, errors and latency as a seeded function of time,
  arm and weight, with Poisson noise; `step_change` and `regression` script a change;
  `ScriptedGauge` scripts a gauge such as CPU or memory (a leak on the canary);
  `canary_share` is the canary's share of requests under a split, header routes included.
- `observation`: the `Observation` a decider's unit test judges, in one line.
- `VirtualClock`: time that jumps to the next deadline.
- `simulate`: run a policy to its end in virtual time and get the outcome and timeline.
- `evaluate`: run many seeded rollouts of a policy through the state machine and its
  decider against a `Scenario` (traffic, errors, latency, an injected regression) and
  measure false rollbacks, detection times and bad requests served.
- `FaultPlan` and the `Faulty*` wrappers: inject errors, hangs, slow calls and wrong
  answers into a router, metrics source, decider, store or lease, per call.
- `CanaryLab`: a dress rehearsal on loopback: two demo app versions behind a real
  nginx or HAProxy, a real Prometheus and real traffic; `rehearse` runs a plan and
  reports what users saw. These need the binaries and the `test` extra.
- `ReleaseLab`: releases in a row on loopback with a handover model (promote by upgrading
  stable, or alternate slots), counting from outside which app instance answered.

The real servers themselves (nginx, HAProxy, Prometheus, etcd, PostgreSQL, a demo app,
a cuttable TCP proxy) and the process helpers (`free_port`, `ManagedProcess`...) are in
`canarykit.testing.lab`; their old names here are deprecated.

>>> from canarykit import linear
>>> from canarykit.deciders import bound, threshold
>>> from canarykit.testing import ScriptedMetrics, regression, simulate
>>> sim = simulate(
...     linear(10, 30, hold=120, analysis_interval=30),
...     decider=threshold(bound("error_rate", max=0.02)),
...     metrics=ScriptedMetrics(error_rate=regression(at=150, base=0.01, factor=5)),
... )
>>> sim.outcome.phase
Phase.ROLLED_BACK
"""

from typing import Any

from .._exports import load_moved as _load_moved
from ._clock import VirtualClock as VirtualClock
from ._evaluate import Evaluation as Evaluation
from ._evaluate import InjectedRegression as InjectedRegression
from ._evaluate import RunResult as RunResult
from ._evaluate import Scenario as Scenario
from ._evaluate import evaluate as evaluate
from ._evaluate import hold_plan as hold_plan
from ._evaluate import parse_regression as parse_regression
from ._faults import FAULT_KINDS as FAULT_KINDS
from ._faults import FAULT_POINTS as FAULT_POINTS
from ._faults import FaultKind as FaultKind
from ._faults import FaultPlan as FaultPlan
from ._faults import FaultyDecider as FaultyDecider
from ._faults import FaultyLease as FaultyLease
from ._faults import FaultyMetrics as FaultyMetrics
from ._faults import FaultyRouter as FaultyRouter
from ._faults import FaultyStore as FaultyStore
from ._faults import InjectedError as InjectedError
from ._faults import InjectedFault as InjectedFault
from ._lab import CanaryLab as CanaryLab
from ._lab import Fault as Fault
from ._lab import Rehearsal as Rehearsal
from ._observations import observation as observation
from ._releases import ReleaseLab as ReleaseLab
from ._releases import ReleaseResult as ReleaseResult
from ._releases import StepShare as StepShare
from ._router import FakeRouter as FakeRouter
from ._router import RouterFault as RouterFault
from ._scripted import DEFAULT_HEADER_SHARE as DEFAULT_HEADER_SHARE
from ._scripted import SCENARIOS as SCENARIOS
from ._scripted import HeaderShare as HeaderShare
from ._scripted import Rate as Rate
from ._scripted import Regression as Regression
from ._scripted import ScriptedGauge as ScriptedGauge
from ._scripted import ScriptedMetrics as ScriptedMetrics
from ._scripted import StepChange as StepChange
from ._scripted import canary_share as canary_share
from ._scripted import regression as regression
from ._scripted import step_change as step_change
from ._simulate import Simulation as Simulation
from ._simulate import simulate as simulate
from ._simulate import simulate_async as simulate_async

__all__ = [
    "DEFAULT_HEADER_SHARE",
    "CanaryLab",
    "Evaluation",
    "FAULT_KINDS",
    "FAULT_POINTS",
    "FakeRouter",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultyDecider",
    "FaultyLease",
    "FaultyMetrics",
    "FaultyRouter",
    "FaultyStore",
    "HeaderShare",
    "InjectedError",
    "InjectedFault",
    "InjectedRegression",
    "Rate",
    "Regression",
    "Rehearsal",
    "ReleaseLab",
    "ReleaseResult",
    "RouterFault",
    "RunResult",
    "SCENARIOS",
    "Scenario",
    "ScriptedGauge",
    "ScriptedMetrics",
    "Simulation",
    "StepChange",
    "StepShare",
    "VirtualClock",
    "canary_share",
    "evaluate",
    "hold_plan",
    "observation",
    "parse_regression",
    "regression",
    "simulate",
    "simulate_async",
    "step_change",
]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names

# The real-server helpers moved to canarykit.testing.lab; the old names work for one
# more release, with a DeprecationWarning.
_MOVED = {
    name: ("canarykit.testing.lab", name)
    for name in (
        "BinaryNotFound",
        "DemoApp",
        "HAProxyServer",
        "LoadGenerator",
        "ManagedProcess",
        "NginxServer",
        "PrometheusServer",
        "Response",
        "find_binary",
        "free_port",
        "http_ok",
    )
}


def __getattr__(name: str) -> Any:
    # ``canarykit.testing.lab`` loads when first named, as if imported: the fakes' users
    # never start importing the real servers' modules.
    if name == "lab":
        import importlib

        return importlib.import_module(".lab", __name__)
    return _load_moved(globals(), _MOVED, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
