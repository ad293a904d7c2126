"""The split in force rides on each observation: the runner and the evaluator set it.

Deciders that weigh an arm by its share of the traffic (``compare("throughput")``) read
``observation.split``; without it they fall back to the measured share, against which
the canary's throughput is always in proportion, so a throughput check could never fail.
"""

from __future__ import annotations

import json

import attrs
import pytest

import canarykit as ck
from canarykit import Arm, Observation, TrafficSplit, Window
from canarykit.deciders import compare, relative
from canarykit.testing import ScriptedMetrics, evaluate, observation, simulate

PLAN = ck.linear(10, 30, hold=120, analysis_interval=30)
THROUGHPUT = relative(compare("throughput", min_ratio=0.8))
TEN = TrafficSplit(canary_percent=10)


class SplitUnaware:
    """A source that, like Prometheus, does not know the split: it reports none."""

    def __init__(self, inner: ScriptedMetrics) -> None:
        self.inner = inner
        self.seen: list[Observation] = []

    async def collect(self, window: Window) -> Observation:
        observation = attrs.evolve(self.inner.observe(window), split=None)
        self.seen.append(observation)
        return observation


class Recording:
    """A decider that passes every window and keeps what it was given."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def initial_state(self) -> None:
        return None

    def judge(self, state: None, observation: Observation) -> ck.Judgement:
        self.observations.append(observation)
        return ck.Judgement(ck.Verdict(kind=ck.VerdictKind.PASS, reason="recorded"))


def half_its_share(t: float, arm: Arm, percent: float) -> float:
    # The canary serves half the requests its share should bring (the rest fail before
    # anything counts them), the stable version all of its own.
    return 500.0 if arm is Arm.CANARY else 1000.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_throughput_check_rolls_back_a_canary_serving_half_its_share(seed: int) -> None:
    metrics = SplitUnaware(ScriptedMetrics(requests_per_second=half_its_share, seed=seed))
    outcome = simulate(PLAN, decider=THROUGHPUT, metrics=metrics).outcome
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert outcome.finished_at == 30.0  # the first window, at 10%
    assert "per unit of share (canary 10% of the split)" in outcome.reason
    assert "< allowed 0.8x" in outcome.reason


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_throughput_check_promotes_a_healthy_canary_starting_at_10_percent(seed: int) -> None:
    metrics = SplitUnaware(ScriptedMetrics(requests_per_second=1000, seed=seed))
    outcome = simulate(PLAN, decider=THROUGHPUT, metrics=metrics).outcome
    assert outcome.phase is ck.Phase.SUCCEEDED, outcome.reason
    first = outcome.verdicts[0]
    assert first.canary_percent == 10.0
    assert "(canary 10% of the split)" in first.reason


def test_runner_gives_each_observation_its_windows_split_when_the_source_has_none() -> None:
    metrics = SplitUnaware(ScriptedMetrics(seed=1))
    decider = Recording()
    simulate(PLAN, decider=decider, metrics=metrics)
    assert all(observation.split is None for observation in metrics.seen)
    percents = [observation.split.canary_percent for observation in decider.observations]
    assert percents == [10.0] * 4 + [40.0] * 4 + [70.0] * 4


def test_runner_keeps_a_split_the_source_reported() -> None:
    # A source that knows better (it measured the split the router really had) wins.
    reported = TrafficSplit(canary_percent=12)

    class Reporting(SplitUnaware):
        async def collect(self, window: Window) -> Observation:
            return attrs.evolve(self.inner.observe(window), split=reported)

    decider = Recording()
    simulate(PLAN, decider=decider, metrics=Reporting(ScriptedMetrics(seed=1)))
    assert {observation.split for observation in decider.observations} == {reported}


def test_evaluate_gives_each_observation_the_split_its_data_was_drawn_with() -> None:
    decider = Recording()
    evaluate(PLAN, decider, runs=1, seed=1)
    percents = [observation.split.canary_percent for observation in decider.observations]
    assert percents == sorted(percents)
    assert sorted(set(percents)) == [10.0, 40.0, 70.0]
    for observed in decider.observations:
        # 3,000 requests a window: the canary's measured share is within 0.05 of the split's
        # (3.5 standard deviations at 40%; the seed is fixed).
        share = observed.canary.requests / (observed.canary.requests + observed.stable.requests)
        assert share == pytest.approx(observed.split.canary_percent / 100, abs=0.05)


def test_scripted_metrics_reports_the_windows_split() -> None:
    window = Window(start=0, end=10, split=TEN)
    assert ScriptedMetrics(seed=1).observe(window).split == TEN


def test_split_survives_json_and_older_json_without_it_loads_as_none() -> None:
    with_split = observation(start=0, end=10, split=TEN)
    data = json.loads(json.dumps(with_split.to_json()))
    assert Observation.from_json(data) == with_split
    data.pop("split")
    assert Observation.from_json(data).split is None
    assert "split" not in observation(start=0, end=10, split=None).to_json()


def test_merge_keeps_the_split_only_when_both_windows_had_the_same() -> None:
    first = observation(start=0, end=10, split=TEN)
    assert first.merge(observation(start=10, end=20, split=TEN)).split == TEN
    other = TrafficSplit(canary_percent=25)
    assert first.merge(observation(start=10, end=20, split=other)).split is None
    assert first.merge(observation(start=10, end=20, split=None)).split is None


def test_a_split_that_is_not_a_traffic_split_is_refused() -> None:
    with pytest.raises(ck.ConfigError) as caught:
        observation(start=0, end=10, split=10)  # type: ignore[arg-type]
    assert caught.value.field == "split"
