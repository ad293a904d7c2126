"""The judging step of an analysis window, one for the runner and for the evaluator.

A `Rollout` collects a window from its metrics source; `canarykit.testing.evaluate` draws
one from a simulated scenario. What happens next is the same in both, and is written
here once, so that the evaluator cannot judge differently from a real rollout:

1. `WindowJudge.judge`: the observation gets the split that was in force when the window
   was collected, unless its source set one (deciders that weigh an arm by its share of
   the traffic read it). Then `WindowJudge.answer` asks the decider: the `Analyze`
   step's own for a step window, the rollout's otherwise, from its `initial_state()` for
   a window without decider state. The answer is a `Judgement`, the reason there is none
   (a collection that failed, a decider that raised or returned something else), or an
   awaitable. (The evaluator's observations carry their split: it asks `answer` alone.)
2. Only a decider that returns an awaitable needs its driver: the runner awaits it under
   its decider timeout, the evaluator drives it without an event loop. What comes out goes
   through `WindowJudge.settle` (an exception through `WindowJudge.failure`).
3. `WindowJudge.event`: the machine's `WindowJudged`, or `WindowFailed` (with the
   driver's metrics-outage policy) when there is no judgement.
4. `WindowJudge.fact`: what listeners are told, `VerdictReached` or `AnalysisFailed`.

Everything else a decider's verdict leads to (a failed window counting towards the
consecutive-error limit, the record a decider keeps for a stage at 100%, the window that
ends a step) follows from these events in the state machine and the decider's state.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

import attrs

from ._errors import DeciderError
from ._events import AnalysisFailed, VerdictReached
from ._machine import AnalysisKind, CollectWindow, RolloutState, WindowFailed, WindowJudged
from ._observe import Observation
from ._plan import Analyze, Plan
from ._protocols import Decider
from ._retry import describe_failure
from ._split import TrafficSplit
from ._verdict import Judgement

__all__ = ["DEFAULT_DECIDER_TIMEOUT", "Judged", "WindowJudge"]

DEFAULT_DECIDER_TIMEOUT = 300.0
"""Seconds a `Rollout` allows an async decider's verdict by default (`decider_timeout`)."""

Judged = Judgement | str
"""A window's judgement, or why there is none (a failed collection or decider)."""

_STEP = AnalysisKind.STEP


class WindowJudge:
    """The judging step of one rollout's windows; see the module documentation.

    `decider` is the rollout's (None when only `Analyze` steps with their own judge);
    `outage_limit` is the driver's metrics-outage policy for `WindowFailed` (None: roll
    back at the plan's consecutive-error limit); `decider_timeout` is how long the
    driver waits for an async decider, named when a decider reports a timeout.

    >>> from canarykit import ArmStats, Observation, TrafficSplit, linear
    >>> from canarykit.deciders import bound, threshold
    >>> from canarykit.machine import AnalysisKind, CollectWindow, RolloutState
    >>> plan = linear(10, 50, hold=60, analysis_interval=30)
    >>> judge = WindowJudge(plan, threshold(bound("error_rate", max=0.05)))
    >>> window = CollectWindow(AnalysisKind.BACKGROUND, 0.0, 30.0)
    >>> seen = Observation(start=0, end=30, stable=ArmStats(requests=900, errors=9),
    ...                    canary=ArmStats(requests=100, errors=30))
    >>> split = TrafficSplit(canary_percent=10)
    >>> observation, judged = judge.judge(RolloutState(), window, seen, split)
    >>> observation.split.canary_percent, judged.verdict.kind
    (10.0, VerdictKind.FAIL)
    >>> judge.event(window, 30.0, judged)
    WindowJudged(now=30.0, kind=AnalysisKind.BACKGROUND, end=30.0, verdict=..., decider_state=...)
    >>> judge.event(window, 30.0, "metrics: timed out after 30 s").reason
    'metrics: timed out after 30 s'
    """

    __slots__ = (
        "_only_decider",
        "_step_deciders",
        "decider",
        "decider_timeout",
        "outage_limit",
        "plan",
    )

    def __init__(
        self,
        plan: Plan,
        decider: Decider | None,
        *,
        outage_limit: float | None = None,
        decider_timeout: float = DEFAULT_DECIDER_TIMEOUT,
    ) -> None:
        self.plan = plan
        self.decider = decider
        self.outage_limit = outage_limit
        self.decider_timeout = decider_timeout
        self._step_deciders = any(
            isinstance(step, Analyze) and step.decider is not None for step in plan.steps
        )
        # Without steps that bring their own, every window is the rollout decider's.
        self._only_decider = None if self._step_deciders else decider

    def decider_for(self, state: RolloutState, kind: AnalysisKind) -> Decider:
        """The decider of a `kind` window in `state`: a step's own, else the rollout's."""
        if self._step_deciders and kind is _STEP:
            step = self.plan.steps[state.step]
            if isinstance(step, Analyze) and step.decider is not None:
                return step.decider
        assert self.decider is not None
        return self.decider

    def judge(
        self,
        state: RolloutState,
        action: CollectWindow,
        observed: Observation | str,
        split: TrafficSplit,
    ) -> tuple[Observation | None, Judged | Awaitable[Any]]:
        """The observation judged and the decider's answer, or an awaitable of it.

        `observed` is what the collection gave: the observation, or why there is none
        (then it is the answer, and no decider is asked). `split` is the split in force
        when the window was collected; `state` is the rollout's state now.
        """
        if isinstance(observed, str):
            return None, observed
        if observed.split is None:
            # Sources need not know the split; a decider weighing throughput by each
            # arm's share of the traffic does (see `Observation`).
            observed = attrs.evolve(observed, split=split)
        return observed, self.answer(state, action, observed)

    def answer(
        self, state: RolloutState, action: CollectWindow, observation: Observation
    ) -> Judged | Awaitable[Any]:
        """The decider's answer for an observation that carries its split (see `judge`)."""
        decider = self._only_decider
        if decider is None:
            decider = self.decider_for(state, action.kind)
        try:
            decider_state = action.decider_state
            if decider_state is None:
                decider_state = decider.initial_state()
            judged = decider.judge(decider_state, observation)
        except Exception as exc:
            return self.failure(exc)
        if type(judged) is Judgement:
            return judged
        if inspect.isawaitable(judged):
            return judged
        return self.settle(judged)

    def settle(self, judged: object) -> Judged:
        """What a decider's `judge` returned (awaited, if it was awaitable) as a `Judged`."""
        if isinstance(judged, Judgement):
            return judged
        return self.failure(DeciderError(f"judge() returned {type(judged).__name__}"))

    def failure(self, exc: BaseException) -> str:
        """Why a window has no judgement when its decider raised `exc`."""
        return f"decider: {describe_failure(exc, self.decider_timeout)}"

    def event(
        self, action: CollectWindow, now: float, judged: Judged
    ) -> WindowJudged | WindowFailed:
        """The machine's event for the window `action` asked for, judged (or not) at `now`."""
        if isinstance(judged, str):
            return WindowFailed(now, action.kind, action.end, judged, self.outage_limit)
        return WindowJudged(now, action.kind, action.end, judged.verdict, judged.state)

    @staticmethod
    def fact(
        action: CollectWindow, now: float, judged: Judged, observation: Observation | None
    ) -> VerdictReached | AnalysisFailed:
        """What listeners are told of the window: its verdict, or why there is none."""
        if isinstance(judged, str):
            return AnalysisFailed(
                time=now, kind=action.kind, start=action.start, end=action.end, reason=judged
            )
        assert isinstance(judged, Judgement) and observation is not None
        return VerdictReached(
            time=now,
            kind=action.kind,
            start=action.start,
            end=action.end,
            verdict=judged.verdict,
            observation=observation,
        )
