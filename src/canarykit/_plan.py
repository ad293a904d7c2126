"""Plans: the steps of a rollout, as immutable values that validate on construction.

A plan is a tuple of steps run in order, plus how often the background analysis looks
at the canary. Background analysis runs from the first traffic shift to the end of the
last step (the final bake included), so a regression is caught during a pause too. An
`Analyze` step adds an inline analysis of its own that must pass before the plan goes on.
When the last step is done the rollout is promoted: all traffic to the canary, header
routes and mirroring removed.

Generators build the usual shapes: `linear` (the seed's ``CanaryConfig``, but ending
exactly at 100), `from_weights` (Flagger's ``stepWeights``), `exponential` (AWS
AppConfig's growth factor), each with an optional final bake at 100%.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from ._errors import ConfigError
from ._protocols import Decider, RouterCapabilities
from ._split import HeaderRoute, check_percent, header_routes
from ._validate import bounded_items, finite

__all__ = [
    "Analyze",
    "Pause",
    "Plan",
    "SetHeaderRoutes",
    "SetMirror",
    "SetWeight",
    "Step",
    "WaitForPromotion",
    "exponential",
    "from_weights",
    "linear",
]


def to_seconds(field: str, value: Any, *, allow_zero: bool = False) -> float:
    """A duration (seconds as a number, or a `timedelta`) as float seconds, or ConfigError."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number of seconds or a timedelta")
    seconds = finite(field, value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(field, value, "must be >= 0" if allow_zero else "must be > 0")
    return seconds


Duration: TypeAlias = float | datetime.timedelta


def _seconds(field: str) -> Any:
    def convert(value: Duration) -> float:
        return to_seconds(field, value)

    return attrs.field(converter=convert)


def _weight(value: float) -> float:
    return check_percent("percent", value, allow_zero=False)


def _mirror(value: float) -> float:
    return check_percent("percent", value)


def _step_routes(value: Iterable[HeaderRoute]) -> tuple[HeaderRoute, ...]:
    return header_routes("routes", value)


@attrs.frozen
class SetWeight:
    """Send `percent` of traffic to the canary, any value in (0, 100], e.g. ``SetWeight(0.5)``."""

    percent: float = attrs.field(converter=_weight)


@attrs.frozen
class Pause:
    """Hold the current split for `seconds` while the background analysis keeps watching."""

    seconds: float = _seconds("seconds")


@attrs.frozen
class WaitForPromotion:
    """Pause until an operator promotes (Argo's ``pause: {}``)."""


@attrs.frozen
class Analyze:
    """Inline analysis: judge a window every `interval` for `seconds`; it must pass to go on.

    A failed window rolls back at once. If the verdict after the last window is not a
    pass (inconclusive, or still not enough data), the rollout pauses for an operator.
    `decider` overrides the rollout's decider for this step; each `Analyze` step starts
    from a fresh decider state.
    """

    seconds: float = _seconds("seconds")
    interval: float = _seconds("interval")
    decider: Decider | None = attrs.field(default=None, kw_only=True, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.interval > self.seconds:
            raise ConfigError("interval", self.interval, f"must be <= seconds ({self.seconds})")
        if self.decider is not None and not isinstance(self.decider, Decider):
            raise ConfigError("decider", self.decider, "must implement the Decider protocol")

    @property
    def windows(self) -> int:
        """How many windows the step judges: ``ceil(seconds / interval)``."""
        return math.ceil(self.seconds / self.interval - 1e-9)


@attrs.frozen
class SetHeaderRoutes:
    """Send requests matching any of `routes` to the canary; an empty tuple removes them."""

    routes: tuple[HeaderRoute, ...] = attrs.field(converter=_step_routes)

    def __attrs_post_init__(self) -> None:
        for index, route in enumerate(self.routes):
            if not isinstance(route, HeaderRoute):
                raise ConfigError(f"routes[{index}]", route, "must be a HeaderRoute")


@attrs.frozen
class SetMirror:
    """Copy `percent` of traffic to the canary (responses discarded); 0 stops mirroring."""

    percent: float = attrs.field(converter=_mirror)


Step: TypeAlias = SetWeight | Pause | WaitForPromotion | Analyze | SetHeaderRoutes | SetMirror
_STEP_TYPES = (SetWeight, Pause, WaitForPromotion, Analyze, SetHeaderRoutes, SetMirror)


# Generous caps that keep a hostile or mistaken plan from eating memory: a real rollout
# has tens of steps, and a generator stepping by 0.001% would make 100,000.
MAX_STEPS = 10_000
MAX_WEIGHTS = 1_000


def _steps(value: Any) -> tuple[Step, ...]:
    return bounded_items("steps", value, MAX_STEPS, "steps")


def _analysis_interval(value: Duration | None) -> float | None:
    return None if value is None else to_seconds("analysis_interval", value)


def _pause_limit(value: Duration | None) -> float | None:
    return None if value is None else to_seconds("pause_limit", value)


def _progress_deadline(value: Duration | None) -> float | None:
    return None if value is None else to_seconds("progress_deadline", value)


# Argo Rollouts' default progressDeadlineSeconds.
DEFAULT_PROGRESS_DEADLINE = 600.0
PROGRESS_DEADLINE_POLICIES = ("rollback", "pause")


@attrs.frozen(kw_only=True)
class Plan:
    """The steps of a rollout and how it is watched.

    - `steps`: run in order; after the last one the rollout is promoted.
    - `analysis_interval`: seconds between background analysis windows, from the first
      traffic shift to promotion; None turns background analysis off.
    - `require_pass`: promote only if the last background verdict was a pass (no data is
      never a silent pass); otherwise the rollout pauses for an operator.
    - `consecutive_error_limit`: metrics or decider errors in a row before rolling back
      (Argo's ``consecutiveErrorLimit``, 4).
    - `pause_limit`: seconds a rollout may stay paused before it rolls back; None waits
      for an operator for ever, as Argo does.
    - `progress_deadline`: seconds a step may run beyond its own length (a pause's or an
      analysis's seconds; none for a traffic step) without completing, while progressing,
      say because the router never confirms a weight or the metrics never arrive (600, as
      Argo's ``progressDeadlineSeconds``; None: no deadline). Time paused does not count.
    - `on_progress_deadline`: what happens then: "rollback" (the default) or "pause"
      (hold the split the router last confirmed and wait for an operator).

    >>> Plan(steps=[SetWeight(10), Pause(300)]).steps
    (SetWeight(percent=10.0), Pause(seconds=300.0))
    """

    steps: tuple[Step, ...] = attrs.field(converter=_steps)
    analysis_interval: float | None = attrs.field(default=None, converter=_analysis_interval)
    require_pass: bool = True
    consecutive_error_limit: int = 4
    pause_limit: float | None = attrs.field(default=None, converter=_pause_limit)
    progress_deadline: float | None = attrs.field(
        default=DEFAULT_PROGRESS_DEADLINE, converter=_progress_deadline
    )
    on_progress_deadline: Literal["rollback", "pause"] = "rollback"

    def __attrs_post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("steps", self.steps, "must hold at least one step")
        for index, step in enumerate(self.steps):
            if not isinstance(step, _STEP_TYPES):
                raise ConfigError(f"steps[{index}]", step, "is not a step")
        if not isinstance(self.require_pass, bool):
            raise ConfigError("require_pass", self.require_pass, "must be true or false")
        limit = self.consecutive_error_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError("consecutive_error_limit", limit, "must be an integer >= 1")
        if self.on_progress_deadline not in PROGRESS_DEADLINE_POLICIES:
            raise ConfigError(
                "on_progress_deadline", self.on_progress_deadline, "must be 'rollback' or 'pause'"
            )

    def requirements(self) -> RouterCapabilities:
        """The router capabilities this plan needs (weights always: rollback sets 0%)."""
        return RouterCapabilities(
            weights=True,
            header_routes=any(isinstance(s, SetHeaderRoutes) and s.routes for s in self.steps),
            mirroring=any(isinstance(s, SetMirror) and s.percent > 0 for s in self.steps),
            read_back=False,
        )

    @property
    def weights(self) -> tuple[float, ...]:
        """The canary percents the plan sets, in order."""
        return tuple(s.percent for s in self.steps if isinstance(s, SetWeight))

    @property
    def nominal_seconds(self) -> float:
        """How long the plan takes when nothing pauses it: its pauses and analyses added up."""
        return sum(s.seconds for s in self.steps if isinstance(s, (Pause, Analyze)))


def _check_plan_options(options: dict[str, Any]) -> None:
    """Refuse, by name, a keyword that is not a `Plan` option the generators pass on."""
    known = [field.name for field in attrs.fields(Plan) if field.name != "steps"]
    for name, value in options.items():
        if name not in known:
            raise ConfigError(name, value, f"is not a Plan option (expected one of {known})")


def _grow(weights: list[float], following: float, field: str, value: Any) -> None:
    """Append the next generated weight; refuse a generator that stalls or runs too long."""
    if following <= weights[-1]:
        raise ConfigError(
            field,
            value,
            f"is too small: after {weights[-1]!r}% the next weight, rounded to the "
            "micro-percent, is no larger, so the plan would never reach 100%",
        )
    if len(weights) >= MAX_WEIGHTS:
        raise ConfigError(
            field, value, f"is too small: the plan would need more than {MAX_WEIGHTS} weights"
        )
    weights.append(following)


def from_weights(
    weights: Sequence[float],
    *,
    hold: Duration,
    final_bake: Duration = 0,
    analysis_interval: Duration | None = None,
    **plan_options: Any,
) -> Plan:
    """A plan through an explicit list of weights (Flagger's ``stepWeights``).

    Each weight below 100 is held for `hold` seconds. With a `final_bake`, the plan then
    sets 100% and holds it that long, during which a regression still rolls back.

    >>> from_weights([5, 25, 50], hold=60).steps[:3]
    (SetWeight(percent=5.0), Pause(seconds=60.0), SetWeight(percent=25.0))
    """
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
        raise ConfigError("weights", weights, "must be a non-empty list of percents")
    if len(weights) > MAX_WEIGHTS:
        raise ConfigError("weights", weights, f"must hold at most {MAX_WEIGHTS} percents")
    _check_plan_options(plan_options)
    checked = [check_percent(f"weights[{i}]", w, allow_zero=False) for i, w in enumerate(weights)]
    for index in range(1, len(checked)):
        if checked[index] <= checked[index - 1]:
            raise ConfigError(f"weights[{index}]", weights[index], "must be above the one before")
    hold_seconds = to_seconds("hold", hold, allow_zero=True)
    bake = to_seconds("final_bake", final_bake, allow_zero=True)
    steps: list[Step] = []
    for weight in checked:
        steps.append(SetWeight(weight))
        if weight < 100 and hold_seconds > 0:
            steps.append(Pause(hold_seconds))
    if bake > 0:
        if checked[-1] < 100:
            steps.append(SetWeight(100))
        steps.append(Pause(bake))
    return Plan(steps=steps, analysis_interval=analysis_interval, **plan_options)


def linear(
    initial: float,
    step: float,
    *,
    hold: Duration,
    final_bake: Duration = 0,
    analysis_interval: Duration | None = None,
    **plan_options: Any,
) -> Plan:
    """`initial`, then `step` more each time, ending exactly at 100 (the seed's ``CanaryConfig``).

    The last step is shortened when `step` does not divide the rest, so the plan never
    overshoots or stops short of 100:

    >>> linear(10, 40, hold=60).weights
    (10.0, 50.0, 90.0, 100.0)
    """
    start = check_percent("initial", initial, allow_zero=False)
    increment = check_percent("step", step, allow_zero=False)
    weights = [start]
    while weights[-1] < 100:
        # Round to the micro-percent so 0.1-sized steps do not drift (0.30000000000000004).
        _grow(weights, min(100.0, round(weights[-1] + increment, 6)), "step", step)
    return from_weights(
        weights,
        hold=hold,
        final_bake=final_bake,
        analysis_interval=analysis_interval,
        **plan_options,
    )


def exponential(
    initial: float,
    factor: float,
    *,
    hold: Duration,
    final_bake: Duration = 0,
    analysis_interval: Duration | None = None,
    **plan_options: Any,
) -> Plan:
    """`initial`, multiplied by `factor` each step, capped at 100 (AWS AppConfig's growth).

    >>> exponential(1, 2, hold=60).weights
    (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)
    """
    start = check_percent("initial", initial, allow_zero=False)
    if finite("factor", factor) <= 1:
        raise ConfigError("factor", factor, "must be a number > 1")
    weights = [start]
    while weights[-1] < 100:
        _grow(weights, min(100.0, round(weights[-1] * factor, 6)), "factor", factor)
    return from_weights(
        weights,
        hold=hold,
        final_bake=final_bake,
        analysis_interval=analysis_interval,
        **plan_options,
    )
