"""One exception tree for everything canarykit raises on purpose.

::

    CanaryError
    ├── ConfigError              an invalid plan, split, decider or policy file (also a ValueError)
    │   └── UnsupportedPlanError the plan needs what the router cannot do
    ├── InvalidTransition        an event the rollout's current phase does not accept
    ├── RouterError              a traffic router failed, timed out or reported a wrong split
    ├── MetricsError             a metrics source failed or timed out
    │   └── NoDataError          the source answered, but with no data for the window
    ├── DeciderError             a decider raised or timed out
    └── ClockStalled             a virtual clock was asked to wait for something that can never come
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CanaryError",
    "ClockStalled",
    "ConfigError",
    "DeciderError",
    "InvalidTransition",
    "MetricsError",
    "NoDataError",
    "RouterError",
    "UnsupportedPlanError",
]


class CanaryError(Exception):
    """Root of every exception canarykit raises on purpose."""


class ConfigError(CanaryError, ValueError):
    """A value given to canarykit is invalid; `field` names it and `value` holds it.

    >>> str(ConfigError("steps[2].percent", 120, "must be in (0, 100]"))
    'steps[2].percent: must be in (0, 100], got 120'
    """

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {problem}, got {value!r}")


class UnsupportedPlanError(ConfigError):
    """The plan needs a capability that the traffic router does not declare."""


class InvalidTransition(CanaryError):
    """An event that the rollout's current phase does not accept; the state is unchanged."""


class RouterError(CanaryError):
    """A traffic router failed, timed out, or read back a split other than the one applied."""


class MetricsError(CanaryError):
    """A metrics source failed or timed out."""


class NoDataError(MetricsError):
    """A metrics source answered, but had no data for the window."""


class DeciderError(CanaryError):
    """A decider raised an exception or timed out."""


class ClockStalled(CanaryError):
    """A virtual clock was asked to sleep forever with nothing scheduled to wake it."""
