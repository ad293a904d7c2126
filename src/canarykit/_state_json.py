"""Saved rollout state and plans as plain JSON data, and back.

How this works. The runner saves `state_to_json(state)` with `plan_to_json(plan)` and
`plan_fingerprint(plan)` after every change (see `canarykit.Rollout`); a new process
reads the state back with `state_from_json`, which checks every field and names the
first bad one (`CorruptStateError`). The machine itself (`canarykit._machine`) never
reads or writes JSON: `RolloutState.to_json` and `RolloutState.from_json` are thin
methods over the two functions here.

The saved state's format:

- One JSON object with a field per `RolloutState` field and ``"schema"``, the format
  version (`STATE_SCHEMA_VERSION`). Version 2 added ``progress_deadline_at``, version 3
  ``release``, ``gap_until`` and ``outage_until``; an older state is migrated on load,
  and a newer one is refused (`StateVersionError`) rather than misread.
- The machine's stage is saved as it always was: ``phase`` with the two flags that split
  a phase (``rollback_pending`` for a paused rollout whose rollback failed, ``aborting``
  for a rollback that ends ABORTED). So the format did not change when the stages became
  rows of the transition table, and a state saved by an earlier canarykit loads as is.
- The hook fields are saved only when set, so a rollout without hooks saves what
  versions without hooks did, and one with hooks is refused there (unknown fields).

A plan is saved as its steps and settings, fields at their defaults left out, so that a
field added later (with a default) does not change the fingerprint of saved plans.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from ._errors import CanaryError, CorruptStateError, StateVersionError
from ._machine import HookPoint, Phase, RolloutState, _is_release
from ._plan import Plan
from ._split import TrafficSplit
from ._verdict import VerdictKind

__all__ = [
    "OLDEST_READABLE_SCHEMA",
    "STATE_SCHEMA_VERSION",
    "canonical_json",
    "plan_fingerprint",
    "plan_to_json",
    "state_from_json",
    "state_to_json",
]

# Version 2 added `progress_deadline_at`, version 3 `release`, `gap_until` and
# `outage_until`; older states are migrated on load.
STATE_SCHEMA_VERSION = 3
OLDEST_READABLE_SCHEMA = 1


def canonical_json(data: Any) -> str:
    """`data` as compact JSON with sorted keys: equal data gives equal text (for checksums).

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _json_split(split: TrafficSplit | None) -> dict[str, Any] | None:
    return None if split is None else split.to_json()


def state_to_json(state: RolloutState) -> dict[str, Any]:
    """`state` as plain data for JSON, with its schema version.

    >>> from canarykit.machine import RolloutState
    >>> data = state_to_json(RolloutState())
    >>> data["phase"], data["schema"], data["rollback_pending"]
    ('pending', 3, False)
    """
    data = attrs.asdict(state, recurse=False)
    data["phase"] = state.phase.value
    data["target"] = state.target.to_json()
    data["confirmed"] = _json_split(state.confirmed)
    data["last_verdict"] = None if state.last_verdict is None else state.last_verdict.value
    # Hook fields only when set: a state without hooks stays readable by older versions,
    # and one with them is refused there (unknown fields) rather than misread.
    for name in _HOOK_FIELDS:
        value = data.pop(name)
        if isinstance(value, frozenset):
            if value:
                data[name] = sorted(point.value for point in value)
        elif isinstance(value, HookPoint):
            data[name] = value.value
        elif value is not None:
            data[name] = value
    data["schema"] = STATE_SCHEMA_VERSION
    return data


def state_from_json(data: dict[str, Any]) -> RolloutState:
    """Inverse of `state_to_json`. State from an older schema version is migrated.

    Raises `StateVersionError` for a schema version this canarykit cannot read (a
    newer one) and `CorruptStateError`, naming the field, for anything malformed.
    """
    if not isinstance(data, dict):
        raise CorruptStateError(
            f"saved rollout state must be a JSON object, got {type(data).__name__}"
        )
    data = dict(data)
    schema = data.pop("schema", None)
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise CorruptStateError(
            f"saved rollout state has no valid schema version ({schema!r}); "
            "it was not written by canarykit"
        )
    if schema > STATE_SCHEMA_VERSION:
        raise StateVersionError(
            f"saved rollout state has schema version {schema}, from a newer canarykit; "
            f"this one reads versions {OLDEST_READABLE_SCHEMA} to {STATE_SCHEMA_VERSION}: "
            "upgrade canarykit to resume it"
        )
    if schema < OLDEST_READABLE_SCHEMA:
        raise StateVersionError(
            f"saved rollout state has schema version {schema}; this canarykit reads "
            f"versions {OLDEST_READABLE_SCHEMA} to {STATE_SCHEMA_VERSION}"
        )
    if schema == 1:
        data.setdefault("progress_deadline_at", None)  # version 2 added it
    if schema <= 2:
        for name in ("release", "gap_until", "outage_until"):  # version 3 added them
            data.setdefault(name, None)
    names = _STATE_FIELDS
    unknown = sorted(str(name) for name in data if name not in names)
    missing = sorted(name for name in names if name not in data and name not in _HOOK_FIELDS)
    if unknown or missing:
        problems = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        problems += [f"missing field(s) {', '.join(missing)}"] if missing else []
        raise CorruptStateError(f"saved rollout state: {'; '.join(problems)}")
    return RolloutState(**{name: _read_field(name, data[name]) for name in names if name in data})


_STATE_FIELDS = tuple(field.name for field in attrs.fields(RolloutState))
# Saved only when set (see `RolloutState.to_json`); absent ones take their defaults.
_HOOK_FIELDS = (
    "hook_points",
    "gate",
    "gate_since",
    "gate_ask_at",
    "rollback_check_at",
    "hooks_done",
)
_INT_FIELDS = frozenset({"step", "step_windows", "consecutive_errors"})
_BOOL_FIELDS = frozenset({"step_entered", "rollback_pending", "aborting"})
_TIME_FIELDS = frozenset(
    {
        "step_deadline",
        "step_window_start",
        "hold_remaining",
        "progress_deadline_at",
        "window_start",
        "paused_at",
        "started_at",
        "finished_at",
        "gate_since",
        "gate_ask_at",
        "rollback_check_at",
        "gap_until",
        "outage_until",
    }
)


def _read_field(name: str, value: Any) -> Any:
    """One saved field, checked and converted, or CorruptStateError naming it."""

    def bad(problem: str) -> CorruptStateError:
        return CorruptStateError(f"saved rollout state: {name}: {problem}, got {value!r}")

    if name == "phase":
        try:
            return Phase(value)
        except ValueError:
            raise bad(f"must be one of {', '.join(p.value for p in Phase)}") from None
    if name in ("target", "confirmed"):
        if value is None and name == "confirmed":
            return None
        if not isinstance(value, dict):
            raise bad("must be a split (a JSON object)")
        try:
            return TrafficSplit.from_json(value)
        except (CanaryError, KeyError, TypeError, ValueError) as exc:
            raise bad(f"is not a valid split ({exc})") from None
    if name == "last_verdict":
        if value is None:
            return None
        try:
            return VerdictKind(value)
        except ValueError:
            raise bad(f"must be one of {', '.join(k.value for k in VerdictKind)}") from None
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("must be an integer >= 0")
        return value
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if name in _TIME_FIELDS:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("must be a number of seconds or null")
        if not math.isfinite(value):
            raise bad("must be finite")
        return float(value)
    if name == "reason":
        if not isinstance(value, str):
            raise bad("must be a string")
        return value
    if name == "pause_reason":
        if value is not None and not isinstance(value, str):
            raise bad("must be a string or null")
        return value
    if name == "release":
        if value is not None and not _is_release(value):
            raise bad("must be null or 1-128 printable characters")
        return value
    if name in ("hook_points", "hooks_done", "gate"):
        return _read_hook_points(name, value, bad)
    return value  # decider states: whatever JSON the decider saved


def _read_hook_points(
    name: str, value: Any, bad: Callable[[str], CorruptStateError]
) -> frozenset[HookPoint] | HookPoint | None:
    """A saved `gate` (one point or null), or `hook_points`/`hooks_done` (lists of points)."""
    known = ", ".join(point.value for point in HookPoint)
    if name == "gate":
        if value is None:
            return None
        try:
            return HookPoint(value)
        except ValueError:
            raise bad(f"must be null or one of {known}") from None
    if not isinstance(value, list):
        raise bad("must be a list of hook points")
    try:
        return frozenset(HookPoint(item) for item in value)
    except (TypeError, ValueError):
        raise bad(f"must list only {known}") from None


def _plain(value: Any) -> Any:
    """Plan data as plain JSON values; steps as ``{"kind": ..., field: value}``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if attrs.has(type(value)):
        return {"kind": type(value).__name__, **_fields_json(value)}
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    return repr(value)


def _fields_json(value: Any) -> dict[str, Any]:
    # Fields at their defaults are left out, so that a field added in a later canarykit
    # (with a default) does not change the fingerprint of plans saved before it existed.
    # Decider objects are left out: they are not data (see `plan_fingerprint`).
    out: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        if field.name == "decider":
            continue
        default = field.default
        at_default = (
            default is not attrs.NOTHING
            and not isinstance(default, attrs.Factory)  # type: ignore[arg-type]
            and type(item) is type(default)
            and item == default
        )
        if at_default:
            continue
        out[field.name] = _plain(item)
    return out


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON data: its steps and settings (fields at defaults left out).

    >>> from canarykit import Plan, SetWeight
    >>> plan_to_json(Plan(steps=[SetWeight(10)]))
    {'steps': [{'kind': 'SetWeight', 'percent': 10.0}]}
    """
    return _fields_json(plan)


def plan_fingerprint(plan: Plan) -> str:
    """A SHA-256 of `plan_to_json(plan)`: equal plans, equal fingerprints, in any process.

    Saved with a rollout's state, so that resuming with another plan is refused. It
    covers the steps and the plan's settings, not the decider objects of `Analyze` steps.
    """
    digest = hashlib.sha256(canonical_json(plan_to_json(plan)).encode()).hexdigest()
    return f"sha256:{digest}"
