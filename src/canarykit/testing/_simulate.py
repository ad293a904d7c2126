"""Run a policy to its end in virtual time, in one synchronous call."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import anyio
import attrs

from .._errors import ConfigError, InvalidTransition
from .._events import RolloutOutcome, TimelineEntry
from .._plan import Plan
from .._protocols import Decider, MetricsSource, TrafficRouter
from .._runner import Rollout
from ._clock import VirtualClock
from ._router import FakeRouter

__all__ = ["Simulation", "simulate", "simulate_async"]

# (time, command) or (time, command, reason): e.g. (600, "promote"), (900, "abort", "bad").
ScheduledCommand = Sequence[Any]
# How long after the plan could have ended a simulation without `until` gives up.
DEFAULT_GRACE = 24 * 3600.0
_COMMANDS = ("promote", "promote_full", "pause", "resume", "abort", "retry")


@attrs.frozen
class Simulation:
    """What `simulate` returns: the outcome, its timeline, and the router it drove."""

    outcome: RolloutOutcome
    router: TrafficRouter

    @property
    def timeline(self) -> tuple[TimelineEntry, ...]:
        """The outcome's timeline."""
        return self.outcome.timeline


def _schedule(clock: VirtualClock, rollout: Rollout, commands: Iterable[ScheduledCommand]) -> float:
    """Schedule `commands` on `clock`; return the time of the last one."""
    last = -math.inf
    for index, item in enumerate(commands):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) not in (2, 3):
            raise ConfigError(f"commands[{index}]", item, "must be (time, command[, reason])")
        when, name, *rest = item
        if name not in _COMMANDS:
            raise ConfigError(f"commands[{index}]", name, f"must be one of {', '.join(_COMMANDS)}")
        method = getattr(rollout, name)

        def fire(method: Any = method, rest: list[Any] = rest) -> None:
            # A command that does not fit the rollout's phase is recorded in the timeline
            # as refused, as it would be for a real operator; the simulation goes on.
            with contextlib.suppress(InvalidTransition):
                method(*rest)

        clock.call_at(float(when), fire)
        last = max(last, float(when))
    return last


async def simulate_async(
    plan: Plan,
    *,
    decider: Decider | None = None,
    metrics: MetricsSource | None = None,
    router: TrafficRouter | None = None,
    commands: Iterable[ScheduledCommand] = (),
    start: float = 0.0,
    until: float | None = None,
    clock: VirtualClock | None = None,
    **options: Any,
) -> Simulation:
    """`simulate`, for callers already inside an event loop."""
    # Only the rollout sleeps on a clock made here; commands arrive through call_at.
    clock = VirtualClock(start, solo=True) if clock is None else clock
    router = FakeRouter() if router is None else router
    rollout = Rollout(plan, router=router, metrics=metrics, decider=decider, clock=clock, **options)
    last_command = _schedule(clock, rollout, commands)
    if until is None:
        # Background analysis keeps virtual time moving while a rollout waits for an
        # operator who never comes; stop a day after everything scripted could be over.
        until = max(clock.now(), last_command) + plan.nominal_seconds + DEFAULT_GRACE
        until += plan.pause_limit or 0.0
    outcome = await rollout.run(stop_at=until)
    return Simulation(outcome=outcome, router=router)


def simulate(
    plan: Plan,
    *,
    decider: Decider | None = None,
    metrics: MetricsSource | None = None,
    router: TrafficRouter | None = None,
    commands: Iterable[ScheduledCommand] = (),
    start: float = 0.0,
    until: float | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **options: Any,
) -> Simulation:
    """Run `plan` to its end in virtual time and return the outcome and timeline.

    A plain function for plain tests: no event loop, clock or network needed. The router
    defaults to a `FakeRouter`; `commands` schedules operator commands at virtual times,
    e.g. ``[(600, "promote"), (900, "abort", "looks wrong")]``. `until` stops a rollout
    that has not ended by then, and the outcome reports where it was; by default that is
    a day after the plan, its pause limit and the last command could all be over, so a
    rollout waiting for an operator who never comes ends paused rather than running on.
    Other keyword arguments go to `Rollout`.

    >>> from canarykit import linear
    >>> simulate(linear(25, 25, hold=60)).outcome.phase
    Phase.SUCCEEDED
    """
    results: list[Simulation] = []

    # The result travels outside the event loop's task: asyncio may repr a finished task,
    # and with it the whole timeline.
    async def main() -> None:
        results.append(
            await simulate_async(
                plan,
                decider=decider,
                metrics=metrics,
                router=router,
                commands=commands,
                start=start,
                until=until,
                **options,
            )
        )

    anyio.run(main, backend=backend)
    return results[0]
