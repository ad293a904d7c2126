"""Hostile metrics: impossible counts are refused, missing readings never count as a pass.

Impossible numbers (negative counts, more errors than requests, NaN or infinite counts,
a missing arm) are refused when the `ArmStats` or `Observation` is built, naming the
field. A gauge that is NaN or infinite means "no reading", as does an arm that served no
requests or has no latency histogram; every decider kind must then answer NOT_YET,
INCONCLUSIVE or FAIL, never PASS. A metrics source that returns garbage must not get a
rollout promoted either.
"""

import math

import pytest

import canarykit as ck
from canarykit.deciders import (
    all_of,
    any_of,
    bound,
    compare,
    hodges_lehmann,
    kayenta,
    kayenta_metric,
    limited,
    mann_whitney,
    relative,
    sequential_errors,
    sequential_latency,
    threshold,
)
from canarykit.testing import FakeRouter, VirtualClock

LATENCY = ck.LatencyHistogram.from_samples([0.05, 0.1, 0.2] * 40)

# ---------------------------------------------------------------------------------------
# Impossible numbers are refused at construction, naming the field


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": 10, "errors": -3}, "errors"),
        ({"requests": 10, "errors": 11}, "errors"),
        ({"requests": math.nan}, "requests"),
        ({"requests": math.inf}, "requests"),
        ({"requests": 10.0}, "requests"),
        ({"requests": True}, "requests"),
        ({"requests": "100"}, "requests"),
        ({"requests": 10, "errors": math.nan}, "errors"),
        ({"requests": 10, "errors": 1.5}, "errors"),
        ({"requests": 10**20}, "requests"),
        ({"requests": 10, "latency": "fast"}, "latency"),
        ({"requests": 10, "gauges": {"cpu": "high"}}, "gauges['cpu']"),
        ({"requests": 10, "gauges": {"cpu": 10**400}}, "gauges['cpu']"),
        ({"requests": 10, "gauges": {"p99": 0.3}}, "gauges['p99']"),
        ({"requests": 10, "gauges": {"cpu\nFAKE LOG LINE": 0.3}}, "gauges"),
        ({"requests": 10, "gauges": [("cpu", 0.3)]}, "gauges"),
    ],
)
def test_impossible_arm_stats_are_refused_naming_the_field(fields, named):
    with pytest.raises(ck.ConfigError) as caught:
        ck.ArmStats(**fields)
    assert caught.value.field == named


@pytest.mark.parametrize("missing", ["stable", "canary"])
@pytest.mark.parametrize("instead", [None, {"requests": 10}, 10])
def test_an_observation_without_an_arm_is_refused(missing, instead):
    arms = {"stable": ck.ArmStats(requests=10), "canary": ck.ArmStats(requests=10)}
    arms[missing] = instead
    with pytest.raises(ck.ConfigError) as caught:
        ck.Observation(start=0, end=10, **arms)
    assert caught.value.field == missing


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [(math.nan, 10, "start"), (0, math.inf, "end"), (10, 10, "end"), (0, 10**400, "end")],
)
def test_an_observation_over_an_impossible_span_is_refused(start, end, named):
    stats = ck.ArmStats(requests=1)
    with pytest.raises(ck.ConfigError) as caught:
        ck.Observation(start=start, end=end, stable=stats, canary=stats)
    assert caught.value.field == named


def test_saved_stats_with_impossible_counts_are_refused_on_load():
    saved = ck.ArmStats(requests=10, errors=1).to_json()
    for key, value in (("requests", -5), ("errors", 20), ("requests", "ten")):
        with pytest.raises(ck.ConfigError) as caught:
            ck.ArmStats.from_json({**saved, key: value})
        assert caught.value.field == key
    with pytest.raises(ck.ConfigError, match="requests"):
        ck.ArmStats.from_json({"errors": 0})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rank_tests_refuse_non_finite_samples(bad):
    with pytest.raises(ck.ConfigError) as caught:
        mann_whitney([0.1, bad, 0.3], [0.1, 0.2])
    assert caught.value.field == "canary[1]"
    with pytest.raises(ck.ConfigError) as caught:
        hodges_lehmann([0.1, 0.2], [bad])
    assert caught.value.field == "stable[0]"


# ---------------------------------------------------------------------------------------
# Missing readings never pass, whatever the decider


def arm(requests=1000, errors=10, *, latency=LATENCY, **gauges):
    return ck.ArmStats(requests=requests, errors=errors, latency=latency, gauges=gauges)


CANARY, STABLE = "canary", "stable"
BOTH = {CANARY, STABLE}

# Each: which readings the garbage takes away, as (arm, what) pairs, then the stable and
# the canary arm of every window.
GARBAGE = {
    "cpu NaN in both arms": ({(s, "cpu") for s in BOTH}, arm(cpu=math.nan), arm(cpu=math.nan)),
    "canary cpu NaN": ({(CANARY, "cpu")}, arm(cpu=0.5), arm(cpu=math.nan)),
    "canary cpu +inf": ({(CANARY, "cpu")}, arm(cpu=0.5), arm(cpu=math.inf)),
    "canary cpu -inf": ({(CANARY, "cpu")}, arm(cpu=0.5), arm(cpu=-math.inf)),
    "stable cpu NaN": ({(STABLE, "cpu")}, arm(cpu=math.nan), arm(cpu=0.5)),
    "stable cpu +inf": ({(STABLE, "cpu")}, arm(cpu=math.inf), arm(cpu=0.5)),
    "canary cpu missing": ({(CANARY, "cpu")}, arm(cpu=0.5), arm()),
    "cpu missing in both arms": ({(s, "cpu") for s in BOTH}, arm(), arm()),
    "no requests in either arm": (
        {(s, what) for s in BOTH for what in ("counts", "latency", "cpu")},
        arm(0, 0, latency=None),
        arm(0, 0, latency=None),
    ),
    "canary served nothing": (
        {(CANARY, what) for what in ("counts", "latency", "cpu")},
        arm(cpu=0.5),
        arm(0, 0, latency=None),
    ),
    "stable served nothing": (
        {(STABLE, what) for what in ("counts", "latency", "cpu")},
        arm(0, 0, latency=None),
        arm(cpu=0.5),
    ),
    "no latency histograms": ({(s, "latency") for s in BOTH}, arm(latency=None), arm(latency=None)),
    "empty latency histograms": (
        {(s, "latency") for s in BOTH},
        arm(latency=ck.LatencyHistogram.empty()),
        arm(latency=ck.LatencyHistogram.empty()),
    ),
    "canary latency missing": ({(CANARY, "latency")}, arm(), arm(latency=None)),
    "stable latency missing": ({(STABLE, "latency")}, arm(latency=None), arm()),
}


def needs(what, arms=BOTH):
    """The readings whose loss leaves a decider nothing to judge: `what` in any of `arms`."""
    return {(side, what) for side in arms}


def deciders():
    """Every decider kind, with the readings whose loss silences it.

    A threshold on the canary arm is silenced by the canary's loss only: it never reads
    the stable arm. A comparison is silenced by the loss of either arm.
    """
    cpu_max = bound("cpu", max=0.9)
    for policy in ("fail", "inconclusive", "ignore"):
        yield f"threshold {policy}", needs("cpu", {CANARY}), threshold(cpu_max, no_data=policy)
        yield (
            f"relative {policy}",
            needs("cpu"),
            relative(compare("cpu", max_ratio=1.2), no_data=policy),
        )
    yield (
        "threshold on stable",
        needs("cpu", {STABLE}),
        threshold(bound("cpu", min=-1e9, max=1e9, arm="stable"), no_data="ignore"),
    )
    yield "relative either way", needs("cpu"), relative(compare("cpu", max_ratio=2, min_ratio=0.5))
    for strategy in ("remove", "replace"):
        for nodata_fail in (50.0, None):
            yield (
                f"kayenta {strategy} nodata_fail={nodata_fail}",
                needs("cpu"),
                kayenta(
                    kayenta_metric("cpu", nan_strategy=strategy),
                    judge_every=1,
                    min_points=1,
                    nodata_fail_percent=nodata_fail,
                ),
            )
    yield (
        "kayenta replace increase",
        needs("cpu"),
        kayenta(
            kayenta_metric("cpu", nan_strategy="replace", direction="increase"),
            judge_every=1,
            min_points=1,
            nodata_fail_percent=None,
        ),
    )
    yield "sequential gauge", needs("cpu"), sequential_errors(metric="cpu", early_pass=True)
    yield (
        "all cpu",
        needs("cpu"),
        all_of(threshold(cpu_max, no_data="ignore"), relative(compare("cpu", max_ratio=2))),
    )
    yield (
        "any cpu",
        needs("cpu", {CANARY}),
        any_of(
            threshold(cpu_max, no_data="ignore"),
            relative(compare("cpu", max_ratio=2), no_data="ignore"),
        ),
    )
    yield "limited cpu", needs("cpu", {CANARY}), limited(threshold(cpu_max), failure_limit=3)
    yield (
        "limited runs",
        needs("cpu"),
        limited(
            relative(compare("cpu", max_ratio=2)), consecutive_failures=2, inconclusive_limit=3
        ),
    )
    yield (
        "threshold error rate",
        needs("counts", {CANARY}),
        threshold(bound("error_rate", max=0.05)),
    )
    yield (
        "threshold success rate",
        needs("counts", {CANARY}),
        threshold(bound("success_rate", min=0.5), no_data="ignore"),
    )
    yield (
        "threshold p99",
        needs("latency", {CANARY}),
        threshold(bound("p99", max=10.0), no_data="ignore"),
    )
    yield (
        "threshold mean latency",
        needs("latency", {CANARY}),
        threshold(bound("mean_latency", max=10.0), no_data="fail"),
    )
    yield (
        "relative error rate",
        needs("counts"),
        relative(compare("error_rate", max_ratio=100, min_difference=1)),
    )
    yield (
        "relative p95",
        needs("latency"),
        relative(compare("p95", max_ratio=100), no_data="ignore"),
    )
    yield (
        "kayenta error rate",
        needs("counts"),
        kayenta(
            kayenta_metric("error_rate", nan_strategy="replace"),
            judge_every=1,
            min_points=1,
            nodata_fail_percent=None,
        ),
    )
    yield (
        "kayenta latency",
        needs("latency"),
        kayenta(kayenta_metric("latency"), judge_every=1, min_points=1, nodata_fail_percent=None),
    )
    yield "sequential errors", needs("counts"), sequential_errors(early_pass=True)
    yield "sequential latency", needs("latency"), sequential_latency(min_samples=1, early_pass=True)
    yield (
        "all errors",
        needs("counts"),
        all_of(sequential_errors(), threshold(bound("error_rate", max=1))),
    )
    yield (
        "any latency",
        needs("latency"),
        any_of(
            sequential_latency(min_samples=1, early_pass=True),
            relative(compare("p99", max_ratio=100), no_data="ignore"),
        ),
    )
    yield (
        "limited latency",
        needs("latency"),
        limited(sequential_latency(min_samples=1), consecutive_success_limit=2),
    )


def verdicts(decider, stable, canary, windows=8):
    state = decider.initial_state()
    kinds = []
    for index in range(windows):
        observation = ck.Observation(
            start=10.0 * index, end=10.0 * (index + 1), stable=stable, canary=canary
        )
        judged = decider.judge(state, observation)
        assert isinstance(judged, ck.Judgement)
        kinds.append(judged.verdict)
        state = judged.state
    return kinds


# Only the garbage that silences a decider: with what it reads intact (the canary's cpu
# for a threshold on the canary, when the stable cpu is NaN) a decider may rightly pass.
CASES = [
    pytest.param(decider, stable, canary, id=f"{name}: {what}")
    for name, silenced_by, decider in deciders()
    for what, (gone, stable, canary) in GARBAGE.items()
    if gone & silenced_by
]


@pytest.mark.parametrize(("decider", "stable", "canary"), CASES)
def test_missing_readings_never_pass(decider, stable, canary):
    for verdict in verdicts(decider, stable, canary):
        assert verdict.kind is not ck.VerdictKind.PASS, verdict
        assert not verdict.early_pass


def test_every_decider_kind_is_tried_against_garbage():
    tried = {type(param.values[0]).__name__ for param in CASES}
    kinds = {"ThresholdDecider", "RelativeDecider", "KayentaJudge", "SequentialErrors"}
    kinds |= {"SequentialLatency", "AllOf", "AnyOf", "Limits"}
    assert tried == kinds
    assert len(CASES) > 150


def test_the_same_deciders_pass_healthy_data():
    # The control for the test above: each decider passes when the data is there, so
    # that test checks the garbage, not a decider that never passes.
    healthy = arm(cpu=0.5)
    for name, _, decider in deciders():
        kinds = {v.kind for v in verdicts(decider, healthy, healthy, windows=12)}
        assert ck.VerdictKind.PASS in kinds, name


def test_a_dry_run_passes_even_without_data_by_design():
    # limited(dry_run=True) reports and never acts: its PASS is documented, so it is the
    # one decider left out above. Combined with &, it cannot turn no data into a pass.
    dry = limited(threshold(bound("cpu", max=0.9)), dry_run=True)
    _, stable, canary = GARBAGE["canary cpu NaN"]
    assert {v.kind for v in verdicts(dry, stable, canary)} == {ck.VerdictKind.PASS}
    watched = threshold(bound("cpu", max=0.9)) & dry
    assert ck.VerdictKind.PASS not in {v.kind for v in verdicts(watched, stable, canary)}


# ---------------------------------------------------------------------------------------
# A metrics source that returns garbage does not get a rollout promoted

PLAN = ck.linear(50, 50, hold=60, analysis_interval=30, pause_limit=600)
DECIDER = threshold(bound("error_rate", max=0.05), bound("cpu", max=0.9))


class Garbage:
    """A metrics source answering every window with the same thing."""

    def __init__(self, answer):
        self.answer = answer

    async def collect(self, window):
        return self.answer(window)


def healthy(window):
    stats = arm(cpu=0.5)
    return ck.Observation(start=window.start, end=window.end, stable=stats, canary=stats)


def nan_gauges(window):
    stats = arm(cpu=math.nan)
    return ck.Observation(start=window.start, end=window.end, stable=stats, canary=stats)


def stale(window):
    # A healthy observation, but of the first ten seconds, whatever window was asked for.
    return healthy(ck.Window(start=0, end=10, split=window.split))


async def rollout_with(answer):
    router = FakeRouter()
    rollout = ck.Rollout(
        PLAN, router=router, metrics=Garbage(answer), decider=DECIDER, clock=VirtualClock()
    )
    return router, await rollout.run()


@pytest.mark.anyio
async def test_healthy_answers_do_promote(anyio_backend):
    # The control for the garbage below: the same plan and decider promote healthy data.
    _, outcome = await rollout_with(healthy)
    assert outcome.phase is ck.Phase.SUCCEEDED


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        lambda window: None,
        lambda window: {"stable": {"requests": 100}, "canary": {"requests": 100}},
        lambda window: arm(),
        lambda window: healthy(window).to_json(),
        lambda window: (arm(), arm()),
        nan_gauges,
    ],
    ids=["None", "dict", "ArmStats", "observation as JSON", "tuple", "NaN gauges"],
)
async def test_a_source_answering_garbage_never_promotes(anyio_backend, answer):
    router, outcome = await rollout_with(answer)
    assert outcome.phase is not ck.Phase.SUCCEEDED
    assert all(entry.verdict is not ck.VerdictKind.PASS for entry in outcome.verdicts)
    assert router.applied[-1].is_stable_only


@pytest.mark.anyio
async def test_an_observation_of_another_window_is_not_judged(anyio_backend):
    _, outcome = await rollout_with(stale)
    assert outcome.phase is not ck.Phase.SUCCEEDED
    assert all(entry.verdict is not ck.VerdictKind.PASS for entry in outcome.verdicts)
