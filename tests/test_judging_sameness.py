"""The evaluator judges windows exactly as a real rollout does.

`canarykit.testing.evaluate` and `Rollout` share one judging step (`canarykit._judging`).
These tests pin what that buys: for several plans, deciders and scenarios, one seeded run
of the evaluator is replayed through a real `Rollout` (a `FakeRouter`, a `VirtualClock`,
a metrics source that returns the evaluator's observations without their split), and the
events fed to the state machine (splits applied, windows judged or failed with their
verdicts and decider states, ticks) are the same, in the same order, as are the verdicts
and failures the listeners hear. This test reaches into internals on purpose: the
evaluator's single run and the runner's machine.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from canarykit import (
    Analyze,
    Judgement,
    Observation,
    Pause,
    Plan,
    Rollout,
    SetWeight,
    Verdict,
    VerdictKind,
    linear,
)
from canarykit._machine import Event
from canarykit.deciders import bound, compare, relative, threshold
from canarykit.events import AnalysisFailed, VerdictReached
from canarykit.machine import RolloutMachine, WindowFailed, WindowJudged
from canarykit.testing import FakeRouter, InjectedRegression, Scenario, VirtualClock
from canarykit.testing._evaluate import (
    DEFAULT_EXTRA_HORIZON,
    _needs_latency,
    _Routing,
    _run,
    _Sampler,
)

pytestmark = pytest.mark.anyio


class _RecordingRouting(_Routing):
    """The evaluator's routing, keeping every observation it builds."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Observation] = []

    def observation(self, *args: Any) -> Observation:
        built = super().observation(*args)
        self.seen.append(built)
        return built


class _Replay:
    """A metrics source answering each window with the evaluator's observation of it.

    The split is taken off, as a source that does not know it returns it: the runner's
    judging step must put back the one in force.
    """

    def __init__(self, observations: list[Observation]) -> None:
        self.windows = {(o.start, o.end): attrs.evolve(o, split=None) for o in observations}

    async def collect(self, window: Any) -> Observation:
        return self.windows[(window.start, window.end)]


@attrs.frozen
class _Flaky:
    """A decider that fails on some windows, chosen by what it sees (so both drivers agree).

    Canary errors divisible by 4: it raises; by 4 plus 1: it returns something other than a
    `Judgement`. `asynchronous` makes `judge` a coroutine that never waits.
    """

    inner: Any
    asynchronous: bool = False
    reads_latency: bool = False

    def initial_state(self) -> Any:
        return self.inner.initial_state()

    def _judge(self, state: Any, observation: Observation) -> Any:
        errors = observation.canary.errors
        if errors % 4 == 0:
            raise RuntimeError(f"flaky at {errors} errors")
        if errors % 4 == 1:
            return "not a judgement"
        judged = self.inner.judge(state, observation)
        assert isinstance(judged, Judgement)
        return judged

    def judge(self, state: Any, observation: Observation) -> Any:
        if not self.asynchronous:
            return self._judge(state, observation)

        async def later() -> Any:
            return self._judge(state, observation)

        return later()


@attrs.frozen
class _Passes:
    """A decider that passes every window and counts them in its state."""

    reads_latency: bool = False

    def initial_state(self) -> int:
        return 0

    def judge(self, state: int, observation: Observation) -> Judgement:
        share = None if observation.split is None else observation.split.canary_percent
        verdict = Verdict(kind=VerdictKind.PASS, reason=f"window {state} at {share}")
        return Judgement(verdict, state + 1)


class _RecordingMachine(RolloutMachine):
    """The runner's machine, keeping every event it is fed."""

    def __init__(self, plan: Plan, state: Any) -> None:
        super().__init__(plan, state)
        self.fed: list[Event] = []

    def handle(self, event: Event) -> None:
        self.fed.append(event)
        super().handle(event)


def _evaluator_run(
    plan: Plan, decider: Any, scenario: Scenario, seed: int
) -> tuple[list[Event], list[Observation]]:
    horizon = plan.nominal_seconds + DEFAULT_EXTRA_HORIZON
    sampler = _Sampler(scenario, _needs_latency(plan, decider), plan.nominal_seconds)
    routing = _RecordingRouting()
    events: list[Event] = []
    _run(plan, decider, sampler, 0, seed, horizon, routing, events)
    return events, routing.seen


async def _rollout_run(
    plan: Plan, decider: Any, observations: list[Observation]
) -> tuple[list[Event], list[Any], Rollout]:
    heard: list[Any] = []
    rollout = Rollout(
        plan,
        router=FakeRouter(),
        metrics=_Replay(observations),
        decider=decider,
        clock=VirtualClock(0.0, solo=True),
        listeners=[heard.append],
    )
    machine = _RecordingMachine(plan, rollout.state)
    rollout._machine = machine
    await rollout.run()
    return machine.fed, heard, rollout


_ERROR_BOUND = threshold(bound("error_rate", max=0.03), failure_limit=2)

CASES = {
    # A linear rollout judged in the background: healthy, then with a regression.
    "linear_healthy": (
        linear(10, 30, hold=120, analysis_interval=30),
        _ERROR_BOUND,
        Scenario(requests_per_second=50),
    ),
    "linear_regression": (
        linear(10, 30, hold=120, analysis_interval=30),
        _ERROR_BOUND,
        Scenario(requests_per_second=50, regression=InjectedRegression("errors", 8, at=200)),
    ),
    # An analyze step with its own decider beside the background one.
    "step_decider": (
        Plan(
            steps=[
                SetWeight(20),
                Analyze(120, 20, decider=_Passes()),
                SetWeight(50),
                Pause(90),
            ],
            analysis_interval=45,
        ),
        threshold(bound("p99", max=0.5)),
        Scenario(requests_per_second=40),
    ),
    # Throughput per unit of the split's share, and the stable record kept for 100%.
    "relative_to_full": (
        linear(25, 25, hold=60, final_bake=120, analysis_interval=30),
        relative(
            compare("error_rate", max_ratio=3, min_difference=0.01, min_requests=50),
            compare("throughput", min_ratio=0.5),
        ),
        Scenario(requests_per_second=60),
    ),
    # Windows that fail: a decider raising, returning something else, sync and async.
    "failing_windows": (
        Plan(steps=[SetWeight(10), Pause(300)], analysis_interval=20, require_pass=False),
        _Flaky(threshold(bound("error_rate", max=0.2))),
        Scenario(requests_per_second=30, error_rate=0.05),
    ),
    "failing_windows_async": (
        Plan(steps=[SetWeight(10), Pause(300)], analysis_interval=20, require_pass=False),
        _Flaky(threshold(bound("error_rate", max=0.2)), asynchronous=True),
        Scenario(requests_per_second=30, error_rate=0.05),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2])
async def test_the_evaluator_feeds_the_machine_what_a_rollout_does(case: str, seed: int) -> None:
    plan, decider, scenario = CASES[case]
    evaluated, observations = _evaluator_run(plan, decider, scenario, seed)
    fed, heard, rollout = await _rollout_run(plan, decider, observations)

    assert fed == evaluated
    # The listeners hear the same verdicts and failures, in order.
    judged = [(e.end, e.verdict) for e in evaluated if isinstance(e, WindowJudged)]
    failed = [(e.end, e.reason) for e in evaluated if isinstance(e, WindowFailed)]
    assert [(e.end, e.verdict) for e in heard if isinstance(e, VerdictReached)] == judged
    assert [(e.end, e.reason) for e in heard if isinstance(e, AnalysisFailed)] == failed
    # Every window the evaluator drew was collected by the rollout, and judged under the
    # split the evaluator gave it (the runner filled it in).
    verdicts = [e for e in heard if isinstance(e, VerdictReached)]
    assert len(judged) + len(failed) == len(observations)
    by_window = {(o.start, o.end): o.split for o in observations}
    assert all(by_window[(v.start, v.end)] == v.observation.split for v in verdicts)
    assert rollout.state.is_terminal


async def test_the_cases_reach_what_they_are_there_for() -> None:
    """Each case exercises the part of the judging step it is named for (seed 1)."""
    reached: dict[str, list[Event]] = {}
    for case, (plan, decider, scenario) in CASES.items():
        reached[case] = _evaluator_run(plan, decider, scenario, 1)[0]

    def verdicts(case: str) -> list[Any]:
        return [e.verdict for e in reached[case] if isinstance(e, WindowJudged)]

    def failures(case: str) -> list[str]:
        return [e.reason for e in reached[case] if isinstance(e, WindowFailed)]

    assert not any(v.kind is VerdictKind.FAIL for v in verdicts("linear_healthy"))
    assert any(v.kind is VerdictKind.FAIL for v in verdicts("linear_regression"))
    assert any(v.reason.startswith("window ") for v in verdicts("step_decider"))
    assert any(v.reason.endswith("at 20.0") for v in verdicts("step_decider"))
    assert any("record of" in v.reason for v in verdicts("relative_to_full"))
    for case in ("failing_windows", "failing_windows_async"):
        reasons = failures(case)
        assert any(r.startswith("decider: RuntimeError: flaky at") for r in reasons)
        assert "decider: DeciderError: judge() returned str" in reasons
        assert verdicts(case)  # and some windows judged between them
