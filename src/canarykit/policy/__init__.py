"""Policy files: a rollout described in TOML, read, checked, simulated and run.

- `load_policy` reads a policy file (or TOML text) into a `Policy`: the plan, the
  decider, the simulation settings, and the `Deployment` (``[rollout]``, ``[router]``,
  ``[metrics]``, ``[hooks]``, ``[[notify]]``) that ``canarykit run`` builds.
- `register_decider_kind` adds a ``[decider] kind`` of your own: a `DeciderKind` says
  how to build a decider from its `PolicyTable` and how to write it back;
  `decider_kinds` lists the registered ones.
- `parse_duration` / `format_duration`: the duration syntax of policy files
  (``"90s"``, ``"1h30m"``).

The schema is in ``docs/policy_reference.md``. Importing this package loads a TOML
parser and every decider module; ``import canarykit`` alone loads neither.

>>> from canarykit.policy import load_policy
>>> policy = load_policy("examples/sequential_policy.toml")  # doctest: +SKIP
>>> from canarykit.policy import parse_duration
>>> parse_duration("hold", "1h30m")
5400.0
"""

from .._exports import claim_public_names as _claim_public_names
from ._deciders import DeciderKind as DeciderKind
from ._deciders import decider_kinds as decider_kinds
from ._deciders import register_decider_kind as register_decider_kind
from ._deployment import Deployment as Deployment
from ._load import Policy as Policy
from ._load import SimulationSettings as SimulationSettings
from ._load import load_policy as load_policy
from ._table import PolicyTable as PolicyTable
from ._table import format_duration as format_duration
from ._table import parse_duration as parse_duration

__all__ = [
    "DeciderKind",
    "Deployment",
    "Policy",
    "PolicyTable",
    "SimulationSettings",
    "decider_kinds",
    "format_duration",
    "load_policy",
    "parse_duration",
    "register_decider_kind",
]

_claim_public_names(globals())
