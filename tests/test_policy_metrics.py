"""Policy files: every metric judged right.

Percent strings under one rule, metric names checked against the policy's source, and a
watched stage at 100% that the decider can judge (or a refusal at load time).
"""

# Imports internals on purpose: the checks of what a decider can judge; a decider's helpers; the
# policy layer's helpers.

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from canarykit import ConfigError, Phase, SetHeaderRoutes, SetMirror, SetWeight
from canarykit._decider_checks import check_metric_names
from canarykit.deciders import RelativeDecider, compare, relative
from canarykit.deciders._relative import DEFAULT_RECORD_WINDOWS
from canarykit.policy import load_policy
from canarykit.policy._deciders import declared_gauges
from canarykit.policy._table import parse_fraction, parse_percent
from canarykit.testing import ScriptedMetrics, simulate
from helpers.policies import LINEAR_PLAN

THRESHOLD = """
[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = 0.02
"""
PROMETHEUS = """
[metrics]
kind = "prometheus"
url = "http://prometheus:9090"
stable = "v1"
canary = "v2"
"""


def load(*parts: str) -> Any:
    return load_policy("".join(textwrap.dedent(part) for part in parts))


def refusal(*parts: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(*parts)
    return caught.value


# --- one rule for percent strings ---------------------------------------------------------


def test_a_percent_is_a_number_or_a_percent_string_and_both_mean_the_same() -> None:
    assert parse_percent("plan.step", "20%") == parse_percent("plan.step", 20) == 20
    assert parse_percent("plan.step", " 0.5 % ") == 0.5
    assert parse_fraction("max", "2%") == parse_fraction("max", 0.02) == 0.02
    assert parse_fraction("max", ".5%") == 0.005


@pytest.mark.parametrize("value", ["20", "twenty%", "20 percent", "-5%", "nan%", True, None, [20]])
def test_a_bad_percent_names_the_field_and_both_accepted_forms(value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_percent("plan.step", value)
    assert caught.value.field == "plan.step"
    assert "a number such as 20, or a string like '20%'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_fraction("decider.metrics[0].max", value)
    assert "a fraction such as 0.02, or a percent like '2%'" in str(caught.value)


def test_plan_percents_take_percent_strings() -> None:
    plan = load(
        LINEAR_PLAN.replace("initial = 10", 'initial = "10%"').replace("step = 20", 'step = "20%"'),
        THRESHOLD,
    ).plan
    assert (
        plan.weights
        == load(LINEAR_PLAN, THRESHOLD).plan.weights
        == (10.0, 30.0, 50.0, 70.0, 90.0, 100.0)
    )
    timing = "hold = 60\nanalysis_interval = 30\n"
    weights = load(
        '[plan]\nshape = "weights"\nweights = ["5%", 25, "50%"]\n' + timing, THRESHOLD
    ).plan
    assert weights.weights == (5.0, 25.0, 50.0)
    exponential = load(
        '[plan]\nshape = "exponential"\ninitial = "5%"\nfactor = 2\n' + timing, THRESHOLD
    ).plan
    assert exponential.weights[0] == 5.0


def test_plan_step_percents_take_percent_strings() -> None:
    plan = load(
        """
        [plan]
        shape = "steps"
        analysis_interval = 30
        [[plan.steps]]
        set_weight = "10%"
        [[plan.steps]]
        mirror = "5%"
        [[plan.steps]]
        header_route = {header = "User-Agent", prefix = "Chrome", percent = "10%"}
        [[plan.steps]]
        pause = 60
        """,
        THRESHOLD,
    ).plan
    assert plan.steps[0] == SetWeight(10)
    assert plan.steps[1] == SetMirror(5)
    assert isinstance(plan.steps[2], SetHeaderRoutes)
    assert plan.steps[2].routes[0].percent == 10.0


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("step = 20", 'step = "20 percent"', "plan.step"),
        ("initial = 10", 'initial = "ten"', "plan.initial"),
    ],
)
def test_a_bad_plan_percent_names_its_key(old: str, new: str, field: str) -> None:
    error = refusal(LINEAR_PLAN.replace(old, new), THRESHOLD)
    assert error.field == field
    assert "a number such as 20, or a string like '20%'" in str(error)


def test_a_percent_string_out_of_range_is_refused_by_the_plan_naming_the_key() -> None:
    error = refusal(LINEAR_PLAN.replace("step = 20", 'step = "120%"'), THRESHOLD)
    assert error.field == "plan.step"
    assert "must be in (0, 100]" in str(error)
    error = refusal(
        '[plan]\nshape = "steps"\nanalysis_interval = 30\n[[plan.steps]]\nset_weight = "0%"\n',
        THRESHOLD,
    )
    assert error.field == "plan.steps[0].set_weight"


def test_fractions_in_deciders_take_percent_strings() -> None:
    relative_table = """
        [decider]
        kind = "relative"
        [[decider.metrics]]
        metric = "error_rate"
        max_increase = "0.5%"
        min_difference = "0.1%"
        """
    decider = load(LINEAR_PLAN, relative_table).decider
    assert decider.comparisons[0].max_increase == 0.005
    assert decider.comparisons[0].min_difference == 0.001
    sequential = load(
        LINEAR_PLAN,
        """
        [decider]
        kind = "sequential"
        latency_quantiles = ["p99"]
        latency_margin = "3%"
        """,
    ).decider
    assert sequential.deciders[1].margin == pytest.approx(0.03)
    kayenta_table = """
        [decider]
        kind = "kayenta"
        nodata_fail_percent = "50%"
        [[decider.metrics]]
        metric = "error_rate"
        confidence = "95%"
        """
    judge = load(LINEAR_PLAN, kayenta_table).decider
    assert judge.nodata_fail_percent == 50.0
    assert judge.metrics[0].confidence == pytest.approx(0.95)


def test_a_percent_string_on_a_gauge_is_refused_as_having_no_unit() -> None:
    error = refusal(
        LINEAR_PLAN,
        PROMETHEUS + '[metrics.http]\ngauges = {cpu = "avg(cpu)"}\n',
        '[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "cpu"\nmax = "80%"\n',
    )
    assert error.field == "decider.metrics[0].max"
    assert "has no unit canarykit knows" in str(error)


# --- metric names -------------------------------------------------------------------------


def threshold_on(metric: str, kind: str = "threshold") -> str:
    if kind == "kayenta":
        return f'[decider]\nkind = "kayenta"\n[[decider.metrics]]\nmetric = "{metric}"\n'
    return f'[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "{metric}"\nmax = 1\n'


def test_a_misspelt_metric_is_refused_at_load_time_with_a_did_you_mean() -> None:
    # Before: accepted as a gauge, and the rollout paused 24 h on "no canary data".
    error = refusal(LINEAR_PLAN, threshold_on("eror_rate"))
    assert error.field == "decider.metrics[0].metric"
    assert str(error).startswith("decider.metrics[0].metric: is not a built-in metric (")
    assert "did you mean 'error_rate'?" in str(error)


def test_with_a_metrics_source_only_its_gauges_are_known() -> None:
    source = PROMETHEUS + '[metrics.http]\ngauges = {cpu = "avg(cpu)", memory = "avg(rss)"}\n'
    assert load(LINEAR_PLAN, source, threshold_on("cpu")).decider.bounds[0].metric == "cpu"
    error = refusal(LINEAR_PLAN, source, threshold_on("memroy"))
    assert "nor a gauge the policy's source declares" in str(error)
    assert "(in [metrics.http] or [metrics.queries] gauges: cpu, memory)" in str(error)
    assert "did you mean 'memory'?" in str(error)
    # A name unlike any known one is refused too once the source is known.
    error = refusal(LINEAR_PLAN, PROMETHEUS, threshold_on("cpu"))
    assert "gauges: none" in str(error)


def test_gauges_of_prometheus_queries_are_known() -> None:
    queries = (
        PROMETHEUS
        + "[metrics.queries]\nrequests = 'sum(r)'\nerrors = 'sum(e)'\ngauges = {cpu = 'avg(c)'}\n"
    )
    assert load(LINEAR_PLAN, queries, threshold_on("cpu")).decider.bounds[0].metric == "cpu"


def test_simulation_gauges_are_known_when_no_metrics_source_is_given() -> None:
    declared = declared_gauges(None, ("cpu_cores", "memory_bytes"))
    decider = relative(compare("memory_bytes", max_ratio=1.2))
    check_metric_names(decider, declared)
    with pytest.raises(ConfigError) as caught:
        check_metric_names(relative(compare("memory", max_ratio=1.2)), declared)
    assert "(in [simulation] gauges: cpu_cores, memory_bytes)" in str(caught.value)
    assert "did you mean 'memory_bytes'?" in str(caught.value)
    # The source a run uses wins: [metrics] declares what the rollout will read.
    assert declared_gauges({"kind": "prometheus"}, ("cpu",)) == (
        frozenset(),
        "[metrics.http] or [metrics.queries] gauges",
    )


def test_without_a_source_in_the_policy_a_gauge_name_unlike_a_built_in_is_accepted() -> None:
    # A source built in Python may report any gauge: only sure mistakes are refused.
    assert load(LINEAR_PLAN, threshold_on("cpu")).decider.bounds[0].metric == "cpu"


@pytest.mark.parametrize(
    ("metric", "kind", "message"),
    [
        ("p90", "threshold", "is not a latency quantile canarykit computes (p50, p95, p99"),
        ("latency", "threshold", "is kind 'kayenta''s name for the whole latency histogram"),
        ("eror_rate", "kayenta", "did you mean 'error_rate'?"),
        ("P99", "threshold", "did you mean 'p99'?"),
    ],
)
def test_names_no_source_provides_are_refused(metric: str, kind: str, message: str) -> None:
    error = refusal(LINEAR_PLAN, threshold_on(metric, kind))
    assert error.field == "decider.metrics[0].metric"
    assert message in str(error)


def test_kayentas_latency_and_built_in_names_are_accepted() -> None:
    assert (
        load(LINEAR_PLAN, threshold_on("latency", "kayenta")).decider.metrics[0].metric == "latency"
    )
    for name in ("errors", "error_rate", "success_rate", "throughput", "requests", "p50", "p95"):
        assert load(LINEAR_PLAN, threshold_on(name)).decider.bounds[0].metric == name


def test_a_members_metric_is_named_by_its_key_path() -> None:
    error = refusal(
        LINEAR_PLAN,
        """
        [decider]
        kind = "all"
        [[decider.members]]
        kind = "sequential"
        [[decider.members]]
        kind = "relative"
        [[decider.members.metrics]]
        metric = "throughput"
        min_ratio = 0.8
        [[decider.members.metrics]]
        metric = "succes_rate"
        min_ratio = 0.99
        """,
    )
    assert error.field == "decider.members[1].metrics[1].metric"
    assert "did you mean 'success_rate'?" in str(error)


# --- a watched stage at 100% --------------------------------------------------------------

BAKED = LINEAR_PLAN.replace('hold = "2m"', 'hold = "2m"\nfinal_bake = "5m"')
RELATIVE = """
[decider]
kind = "relative"
[[decider.metrics]]
metric = "error_rate"
max_ratio = 2
min_difference = 0.01
[[decider.metrics]]
metric = "p99"
max_ratio = 1.3
[[decider.metrics]]
metric = "throughput"
min_ratio = 0.8
"""
KAYENTA = """
[decider]
kind = "kayenta"
[[decider.metrics]]
metric = "error_rate"
"""


def test_a_relative_decider_promotes_a_healthy_canary_through_the_final_bake() -> None:
    policy = load(BAKED, RELATIVE)
    outcome = simulate(
        policy.plan,
        decider=policy.decider,
        metrics=ScriptedMetrics(requests_per_second=200, seed=3),
    ).outcome
    assert outcome.phase is Phase.SUCCEEDED
    last = [e for e in outcome.timeline if e.kind == "verdict"][-1]
    assert last.canary_percent == 100
    assert "(stable: record of " in last.reason


def test_kayenta_that_counts_missing_stable_points_as_zero_is_refused_at_a_watched_100() -> None:
    # At 100% each stable point is missing; "replace" makes it 0 and fails a healthy canary.
    error = refusal(BAKED, KAYENTA + 'nan_strategy = "replace"\n')
    assert error.field == "decider.metrics[0].nan_strategy"
    assert str(error).startswith(
        "decider.metrics[0].nan_strategy: cannot judge plan.steps[11] (a watched stage at "
        "100%, such as final_bake): the stable version has no traffic at 100% and with "
        "nan_strategy = 'replace' every missing stable point counts as 0"
    )
    assert "end the watched plan below 100% (final_bake = 0)" in str(error)
    # Without the bake the last window is below 100%: nothing to refuse.
    assert load(LINEAR_PLAN, KAYENTA + 'nan_strategy = "replace"\n').decider.metrics[0].metric
    # With "remove" Kayenta compares with the stable points it kept from before 100%.
    assert load(BAKED, KAYENTA).decider.metrics[0].metric == "error_rate"


def test_a_threshold_on_the_stable_arm_is_refused_with_a_watched_100_percent_stage() -> None:
    stable_bound = THRESHOLD + 'arm = "stable"\n'
    error = refusal(BAKED, stable_bound)
    assert error.field == "decider.metrics[0].arm"
    assert "a bound on the stable arm's error_rate has no data there" in str(error)
    assert load(BAKED, THRESHOLD).decider.bounds[0].metric == "error_rate"


def test_any_of_needs_one_member_that_can_judge_100_percent_and_all_of_every_one() -> None:
    members = (
        '[[decider.members]]\nkind = "kayenta"\n[[decider.members.metrics]]\n'
        'metric = "error_rate"\nnan_strategy = "replace"\n'
        '[[decider.members]]\nkind = "relative"\n[[decider.members.metrics]]\n'
        'metric = "p99"\nmax_ratio = 1.2\n'
    )
    assert load(BAKED, '[decider]\nkind = "any"\n' + members).decider is not None
    error = refusal(BAKED, '[decider]\nkind = "all"\n' + members)
    assert error.field == "decider.members[0].metrics[0].nan_strategy"


def test_a_relative_decider_needs_a_watched_stage_below_100_percent_first() -> None:
    straight_to_full = """
        [plan]
        shape = "steps"
        analysis_interval = 30
        [[plan.steps]]
        set_weight = 100
        [[plan.steps]]
        pause = "5m"
        """
    for decider, kind in ((RELATIVE, "relative"), (KAYENTA, "kayenta")):
        error = refusal(straight_to_full, decider)
        assert error.field == "decider"
        assert str(error).startswith(
            f"decider: kind {kind!r} cannot judge plan.steps[1] (a watched stage at 100%, "
            "such as final_bake): no watched stage below 100% comes first"
        )
    # A watched stage below 100% first gives it one.
    assert load(
        straight_to_full.replace(
            "set_weight = 100",
            "set_weight = 10\n[[plan.steps]]\npause = 60\n[[plan.steps]]\nset_weight = 100",
        ),
        RELATIVE,
    ).decider


def test_record_windows_is_read_and_written_back() -> None:
    policy = load(
        LINEAR_PLAN, RELATIVE.replace('kind = "relative"', 'kind = "relative"\nrecord_windows = 4')
    )
    assert isinstance(policy.decider, RelativeDecider)
    assert policy.decider.record_windows == 4
    assert load_policy(policy.to_toml()).decider == policy.decider
    default = load(LINEAR_PLAN, RELATIVE)
    assert default.decider.record_windows == DEFAULT_RECORD_WINDOWS
    assert "record_windows" not in default.to_toml()
    error = refusal(
        LINEAR_PLAN, RELATIVE.replace('kind = "relative"', 'kind = "relative"\nrecord_windows = 0')
    )
    assert error.field == "decider.record_windows"


def test_an_analyze_step_at_100_percent_is_refused_for_deciders_that_keep_stable_values() -> None:
    # An analyze step starts from a fresh decider state: no record, a pause for ever.
    plan = """
        [plan]
        shape = "steps"
        analysis_interval = 30
        [[plan.steps]]
        set_weight = 25
        [[plan.steps]]
        pause = "2m"
        [[plan.steps]]
        set_weight = 100
        [[plan.steps]]
        analyze = "2m"
        """
    error = refusal(plan, RELATIVE)
    assert error.field == "plan.steps[3].analyze"
    assert "an analyze step starts from a fresh decider state" in str(error)
    assert load(plan.replace('analyze = "2m"', 'pause = "2m"'), RELATIVE).decider
    assert load(plan, THRESHOLD).decider  # a threshold on the canary needs no stable values
