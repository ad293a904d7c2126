"""One exception tree for everything canarykit raises on purpose.

::

    CanaryError
    ├── ConfigError              an invalid plan, split, decider or policy file (also a ValueError)
    │   └── UnsupportedPlanError the plan needs what the router cannot do
    ├── InvalidTransition        an event the rollout's current phase does not accept
    ├── RouterError              a traffic router failed, timed out or reported a wrong split
    ├── RouterNotAtStableError   a new rollout found the router not at stable, not told to adopt
    ├── ReleaseFinishedError     the release's rollout has finished already: nothing to do
    ├── ReleaseInProgressError   another release's rollout is still live under this key
    ├── MetricsError             a metrics source failed or timed out
    │   └── NoDataError          the source answered, but with no data for the window
    ├── DeciderError             a decider raised or timed out
    ├── StateError               saved rollout state cannot be read, written or used
    │   ├── CorruptStateError    damaged: not JSON, a checksum mismatch, a field of the wrong shape
    │   ├── StateVersionError    written under a schema version this canarykit cannot read
    │   ├── PlanMismatchError    resumed with a plan other than the saved one
    │   └── StateSaveError       the store failed or timed out
    ├── LeaseError               a rollout's lease could not be taken or kept
    │   ├── LeaseHeldError       another runner holds it
    │   └── LeaseLostError       lost mid-rollout; the runner stopped without touching traffic
    ├── FileRefusedError         a file or directory canarykit will not use (also an OSError):
    │                            not a regular file, a symlink, too large, open to other users
    └── ClockStalled             a virtual clock was asked to wait for something that can never come
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: _errors imports nothing of canarykit's at run time
    from ._machine import Phase
    from ._split import TrafficSplit

__all__ = [
    "CanaryError",
    "ClockStalled",
    "ConfigError",
    "CorruptStateError",
    "DeciderError",
    "FileRefusedError",
    "InvalidTransition",
    "LeaseError",
    "LeaseHeldError",
    "LeaseLostError",
    "MetricsError",
    "NoDataError",
    "PlanMismatchError",
    "ReleaseFinishedError",
    "ReleaseInProgressError",
    "RouterError",
    "RouterNotAtStableError",
    "StateError",
    "StateSaveError",
    "StateVersionError",
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
        super().__init__(f"{field}: {problem}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """`value`'s repr for a message, cut to 200 characters; never raises."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print (sys.set_int_max_str_digits)
        return f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= 200 else text[:197] + "..."


class UnsupportedPlanError(ConfigError):
    """The plan needs a capability that the traffic router does not declare."""


class InvalidTransition(CanaryError):
    """An event that the rollout's current phase does not accept; the state is unchanged."""


class RouterError(CanaryError):
    """A traffic router failed, timed out, or read back a split other than the one applied."""


class RouterNotAtStableError(CanaryError):
    """A new rollout found the router not at stable; `found` is the split it read.

    Nothing moved. Start from that split with ``adopt=True`` (``--adopt``), or make the
    router's starting state first (``canarykit init POLICY``).
    """

    def __init__(self, message: str, found: TrafficSplit) -> None:
        super().__init__(message)
        self.found = found


class ReleaseFinishedError(CanaryError):
    """The rollout saved under the key has finished, for this release (or none was named).

    Nothing was done: no traffic moved and nothing was saved. `release` is the saved
    rollout's release (None when it named none), `phase` how it ended, `finished_at`
    when (seconds since the epoch, on the rollout's clock) and `reason` why. A new
    release id starts the next rollout.
    """

    def __init__(
        self,
        message: str,
        *,
        release: str | None,
        phase: Phase,
        finished_at: float,
        reason: str,
    ) -> None:
        super().__init__(message)
        self.release = release
        self.phase = phase
        self.finished_at = finished_at
        self.reason = reason


class ReleaseInProgressError(CanaryError):
    """Another release's rollout is still live under this key; nothing was done.

    `release` is the release in progress (None when it named none), `phase` its phase.
    Finish it first (promote or abort it), or run it on with its own release id.
    """

    def __init__(self, message: str, *, release: str | None, phase: Phase) -> None:
        super().__init__(message)
        self.release = release
        self.phase = phase


class MetricsError(CanaryError):
    """A metrics source failed or timed out."""


class NoDataError(MetricsError):
    """A metrics source answered, but had no data for the window."""


class DeciderError(CanaryError):
    """A decider raised an exception or timed out."""


class ClockStalled(CanaryError):
    """A virtual clock was asked to sleep forever with nothing scheduled to wake it."""


class StateError(CanaryError):
    """Saved rollout state cannot be read, written or used; the message says why."""


class CorruptStateError(StateError):
    """Saved state is damaged: not JSON, a checksum mismatch, or fields of the wrong shape."""


class StateVersionError(StateError):
    """Saved state was written under a schema version this canarykit cannot read."""


class PlanMismatchError(StateError):
    """A rollout was resumed with a plan other than the one its saved state was made for."""


class StateSaveError(StateError):
    """The rollout's state could not be saved (the store failed or timed out)."""


class LeaseError(CanaryError):
    """A rollout's lease could not be taken or kept."""


class LeaseHeldError(LeaseError):
    """Another runner holds the rollout's lease: only one runner may drive a rollout."""


class LeaseLostError(LeaseError):
    """The runner lost its lease mid-rollout and stopped without touching traffic again."""


class FileRefusedError(CanaryError, OSError):
    """A file or directory canarykit refuses to use; the message names it and says why.

    Not a regular file (a FIFO, socket, device or directory where a file belongs), a
    symbolic link where links are not followed, larger than its limit, or a directory
    that other users may write to. It is an `OSError` too, so code that handles a file
    it cannot read handles this one the same way.
    """


def field_error(field: str, problem: str) -> ConfigError:
    """A ConfigError about `field` with no value to show: its message leaves out the
    ", got ..." tail ("plan.hold: is required" reads better than "..., got None").
    """  # noqa: D205
    exc = ConfigError(field, None, problem)
    exc.args = (f"{field}: {problem}",)
    return exc
