import datetime
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import canarykit as ck
from canarykit import presets


def test_linear_ends_exactly_at_100_when_step_does_not_divide_the_rest():
    assert ck.linear(10, 40, hold=60).weights == (10.0, 50.0, 90.0, 100.0)
    assert ck.linear(30, 30, hold=60).weights == (30.0, 60.0, 90.0, 100.0)


def test_linear_holds_every_weight_below_100_and_bakes_at_the_end():
    plan = ck.linear(50, 50, hold=60, final_bake=300)
    assert plan.steps == (ck.SetWeight(50), ck.Pause(60), ck.SetWeight(100), ck.Pause(300))


def test_linear_with_fractional_steps_does_not_drift():
    weights = ck.linear(0.1, 0.1, hold=1).weights
    assert weights[2] == 0.3
    assert weights[-1] == 100.0
    assert len(weights) == 1000


@given(
    initial=st.floats(min_value=0.01, max_value=100),
    step=st.floats(min_value=0.5, max_value=100),
)
def test_linear_is_increasing_and_ends_at_100(initial, step):
    weights = ck.linear(initial, step, hold=1).weights
    assert weights[-1] == 100.0
    assert all(a < b for a, b in itertools.pairwise(weights))


def test_explicit_weights_with_final_bake_add_a_100_percent_step():
    plan = ck.from_weights([1, 10, 50], hold=60, final_bake=600)
    assert plan.weights == (1.0, 10.0, 50.0, 100.0)
    assert plan.steps[-1] == ck.Pause(600)


def test_exponential_grows_by_the_factor_and_caps_at_100():
    assert ck.exponential(1, 2, hold=60).weights == (1, 2, 4, 8, 16, 32, 64, 100)
    assert ck.exponential(5, 3, hold=60).weights == (5, 15, 45, 100)


def test_half_a_percent_is_a_valid_weight():
    assert ck.SetWeight(0.5).percent == 0.5


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ck.SetWeight(0), "percent"),
        (lambda: ck.SetWeight(100.5), "percent"),
        (lambda: ck.SetWeight(float("nan")), "percent"),
        (lambda: ck.SetWeight("10"), "percent"),
        (lambda: ck.Pause(-1), "seconds"),
        (lambda: ck.Pause(float("inf")), "seconds"),
        (lambda: ck.Analyze(60, 120), "interval"),
        (lambda: ck.SetMirror(101), "percent"),
        (lambda: ck.Plan(steps=[]), "steps"),
        (lambda: ck.Plan(steps=[ck.SetWeight(10), "pause"]), "steps[1]"),
        (lambda: ck.Plan(steps=[ck.SetWeight(10)], analysis_interval=0), "analysis_interval"),
        (
            lambda: ck.Plan(steps=[ck.SetWeight(10)], consecutive_error_limit=0),
            "consecutive_error_limit",
        ),
        (lambda: ck.linear(10, 0, hold=60), "step"),
        (lambda: ck.linear(10, 10, hold=-5), "hold"),
        (lambda: ck.from_weights([10, 5], hold=60), "weights[1]"),
        (lambda: ck.from_weights([], hold=60), "weights"),
        (lambda: ck.exponential(1, 1, hold=60), "factor"),
        (lambda: ck.HeaderRoute(header="User Agent", value="x"), "header_route.header"),
        (
            lambda: ck.HeaderRoute(header="User-Agent", value="(", match="regex"),
            "header_route.value",
        ),
        (lambda: ck.HeaderRoute(header="X", value="a\nb"), "header_route.value"),
        (lambda: ck.HeaderRoute(header="X", value="a", match="glob"), "header_route.match"),
        (lambda: presets.codedeploy("Canary10PercentSoon"), "name"),
    ],
)
def test_invalid_plans_are_refused_naming_the_field(build, field):
    with pytest.raises(ck.ConfigError) as info:
        build()
    assert info.value.field == field
    assert field in str(info.value)


def test_durations_accept_timedelta():
    assert ck.Pause(datetime.timedelta(minutes=5)).seconds == 300.0


def test_plans_are_immutable_values():
    plan = ck.linear(10, 10, hold=60)
    with pytest.raises(AttributeError):
        plan.steps = ()  # type: ignore[misc]
    assert plan == ck.linear(10, 10, hold=60)


def test_codedeploy_presets_match_aws_definitions():
    canary = presets.canary_10_percent_5_minutes()
    assert canary.steps == (ck.SetWeight(10), ck.Pause(300), ck.SetWeight(100))
    linear = presets.linear_10_percent_every_1_minute()
    assert linear.weights == tuple(float(w) for w in range(10, 101, 10))
    assert linear.nominal_seconds == 9 * 60
    assert presets.codedeploy("CodeDeployDefault.AllAtOnce").steps == (ck.SetWeight(100),)
    assert presets.codedeploy("Linear30PercentEvery2Minutes").weights == (30, 60, 90, 100)


def test_plan_requirements_name_header_routes_and_mirroring():
    route = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    plan = ck.Plan(steps=[ck.SetHeaderRoutes([route]), ck.SetMirror(20), ck.SetWeight(10)])
    needs = plan.requirements()
    assert needs.header_routes and needs.mirroring and needs.weights
    assert not ck.linear(10, 10, hold=1).requirements().header_routes


def test_header_route_matches_the_seed_user_agent_regex():
    route = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    assert route.matches("Mozilla/5.0 (X11) Chrome/120.0 Safari/537.36")
    assert not route.matches("curl/8.0")
    assert not route.matches(None)


def test_header_route_percent_sends_a_share_of_matching_requests():
    # The seed's Istio example: 10% of Chrome users to the canary, nobody else.
    route = ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex", percent=10)
    split = ck.TrafficSplit(canary_percent=0, header_routes=[route])
    assert route.percent == 10.0 and not split.is_stable_only
    assert ck.TrafficSplit.from_json(split.to_json()) == split
    # State saved before routes had a percent reads as "all matching requests".
    old = {"header": "X-Canary", "value": "yes", "match": "exact"}
    assert ck.HeaderRoute.from_json(old).percent == 100.0
    for bad in (0, -1, 100.5, float("nan"), "10"):
        with pytest.raises(ck.ConfigError, match=r"header_route\.percent"):
            ck.HeaderRoute(header="X-Canary", value="yes", percent=bad)


def test_split_round_trips_through_json():
    route = ck.HeaderRoute(header="X-Canary", value="yes")
    split = ck.TrafficSplit(canary_percent=0.5, header_routes=[route], mirror_percent=5)
    assert ck.TrafficSplit.from_json(split.to_json()) == split
    assert split.stable_percent == 99.5
