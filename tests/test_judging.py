"""The judging step the runner and the evaluator share (`canarykit._judging`, an internal)."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from canarykit import (
    Analyze,
    ArmStats,
    Judgement,
    Observation,
    Plan,
    SetWeight,
    TrafficSplit,
    Verdict,
    VerdictKind,
)

# Imports internals on purpose: the judging step is an internal shared by the runner and evaluate.
from canarykit._judging import WindowJudge
from canarykit.events import AnalysisFailed, VerdictReached
from canarykit.machine import AnalysisKind, CollectWindow, RolloutState, WindowFailed, WindowJudged

SPLIT = TrafficSplit(canary_percent=20)
WINDOW = CollectWindow(AnalysisKind.BACKGROUND, 0.0, 30.0)
SEEN = Observation(
    start=0, end=30, stable=ArmStats(requests=80, errors=1), canary=ArmStats(requests=20)
)


class Named:
    """Passes every window, saying who judged it, under which split, from which state."""

    def __init__(self, name: str, answer: Any = None) -> None:
        self.name = name
        self.answer = answer

    def initial_state(self) -> int:
        return 0

    def judge(self, state: int, observation: Observation) -> Any:
        if self.answer is not None:
            return self.answer
        assert observation.split is not None
        reason = f"{self.name} {observation.split.canary_percent:g}% from {state}"
        return Judgement(Verdict(kind=VerdictKind.PASS, reason=reason), state + 1)


class Raising(Named):
    def judge(self, state: int, observation: Observation) -> Any:
        raise ValueError("no such metric")


def _at_step(step: int) -> RolloutState:
    return attrs.evolve(RolloutState(), step=step)


def step_plan(step_decider: Any) -> Plan:
    return Plan(steps=[SetWeight(20), Analyze(60, 30, decider=step_decider)], analysis_interval=30)


def test_the_window_gets_the_split_in_force_only_when_its_source_left_it_out() -> None:
    judge = WindowJudge(step_plan(None), Named("rollout"))
    observation, judged = judge.judge(RolloutState(), WINDOW, SEEN, SPLIT)
    assert observation is not None and observation.split == SPLIT
    assert isinstance(judged, Judgement) and judged.verdict.reason == "rollout 20% from 0"
    own = TrafficSplit(canary_percent=5)
    kept = Observation(start=0, end=30, stable=SEEN.stable, canary=SEEN.canary, split=own)
    observation, _ = judge.judge(RolloutState(), WINDOW, kept, SPLIT)
    assert observation is kept


def test_a_step_window_is_judged_by_its_step_and_a_background_one_by_the_rollout() -> None:
    judge = WindowJudge(step_plan(Named("step")), Named("rollout"))
    state = _at_step(1)  # in the Analyze step
    step_window = CollectWindow(AnalysisKind.STEP, 0.0, 30.0, decider_state=4)
    _, judged = judge.judge(state, step_window, SEEN, SPLIT)
    assert isinstance(judged, Judgement) and judged.verdict.reason == "step 20% from 4"
    _, judged = judge.judge(state, WINDOW, SEEN, SPLIT)
    assert isinstance(judged, Judgement) and judged.verdict.reason == "rollout 20% from 0"


def test_a_failed_collection_is_the_answer_and_no_decider_is_asked() -> None:
    judge = WindowJudge(step_plan(None), Raising("never"), outage_limit=900.0)
    observation, judged = judge.judge(
        RolloutState(), WINDOW, "metrics: timed out after 30 s", SPLIT
    )
    assert (observation, judged) == (None, "metrics: timed out after 30 s")
    assert isinstance(judged, str)
    assert judge.event(WINDOW, 31.0, judged) == WindowFailed(
        31.0, AnalysisKind.BACKGROUND, 30.0, "metrics: timed out after 30 s", 900.0
    )
    fact = judge.fact(WINDOW, 31.0, judged, observation)
    assert isinstance(fact, AnalysisFailed)
    assert (fact.start, fact.end, fact.reason) == (0.0, 30.0, "metrics: timed out after 30 s")


def test_a_judge_that_raises_or_returns_something_else_fails_the_window() -> None:
    raising = WindowJudge(step_plan(None), Raising("x"))
    assert raising.judge(RolloutState(), WINDOW, SEEN, SPLIT)[1] == (
        "decider: ValueError: no such metric"
    )
    wrong = WindowJudge(step_plan(None), Named("x", answer={"verdict": "pass"}))
    assert wrong.judge(RolloutState(), WINDOW, SEEN, SPLIT)[1] == (
        "decider: DeciderError: judge() returned dict"
    )
    assert wrong.failure(TimeoutError()) == "decider: timed out after 300 s"


def test_an_async_judge_is_left_to_the_driver_and_settled_after() -> None:
    async def later() -> Judgement:
        return Judgement(Verdict(kind=VerdictKind.FAIL, reason="late"), 9)

    judge = WindowJudge(step_plan(None), Named("x", answer=later()))
    observation, pending = judge.judge(RolloutState(), WINDOW, SEEN, SPLIT)
    assert asyncio.iscoroutine(pending)
    judged = judge.settle(asyncio.run(pending))
    assert isinstance(judged, Judgement)
    assert judge.event(WINDOW, 30.0, judged) == WindowJudged(
        30.0, AnalysisKind.BACKGROUND, 30.0, judged.verdict, 9
    )
    fact = judge.fact(WINDOW, 30.0, judged, observation)
    assert isinstance(fact, VerdictReached) and fact.observation.split == SPLIT
    assert judge.settle("late") == "decider: DeciderError: judge() returned str"


def test_a_plan_without_a_rollout_decider_judges_its_steps_windows() -> None:
    judge = WindowJudge(step_plan(Named("step")), None)
    step_window = CollectWindow(AnalysisKind.STEP, 0.0, 30.0)
    _, judged = judge.judge(_at_step(1), step_window, SEEN, SPLIT)
    assert isinstance(judged, Judgement) and judged.verdict.reason == "step 20% from 0"
