# Imports internals on purpose: the policy layer's helpers; the command line (canarykit._cli is
# private), run as the `canarykit` script runs it.

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

import canarykit.policy._load as policy_module
from canarykit import (
    Analyze,
    ConfigError,
    HeaderMatch,
    HeaderRoute,
    Pause,
    Plan,
    SetHeaderRoutes,
    SetMirror,
    SetWeight,
    WaitForPromotion,
    linear,
)
from canarykit.deciders import (
    NoDataPolicy,
    ThresholdDecider,
    all_of,
    any_of,
    bound,
    compare,
    kayenta,
    kayenta_metric,
    limited,
    relative,
    sequential_errors,
    sequential_latency,
    threshold,
)
from canarykit.policy import (
    Policy,
    PolicyTable,
    SimulationSettings,
    decider_kinds,
    format_duration,
    load_policy,
    parse_duration,
    register_decider_kind,
)
from canarykit.policy._deciders import _DECIDER_KINDS
from helpers.policies import LINEAR_PLAN

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"

DECIDER = """
[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = 0.02
"""


def routes(*items: HeaderRoute) -> Any:
    # Typed as Any: mypy's attrs plugin mistypes SetHeaderRoutes' `converter=tuple` argument.
    return items


def policy_text(plan: str, decider: str = DECIDER, extra: str = "") -> str:
    return textwrap.dedent(plan) + textwrap.dedent(decider) + textwrap.dedent(extra)


def load_plan(plan: str) -> Plan:
    return load_policy(policy_text(plan)).plan


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_policy(text)
    return caught.value


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("1m30s500ms", 90.5),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration("hold", text) == seconds


@pytest.mark.parametrize("text", ["abc", "5 minutes", "", "m", "5m x", True, [5], "nan", "-5m"])
def test_bad_durations_name_the_field(text: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration("plan.hold", text)
    assert caught.value.field == "plan.hold"


def test_zero_duration_only_where_allowed() -> None:
    assert parse_duration("x", "0s", allow_zero=True) == 0
    with pytest.raises(ConfigError, match="must be > 0"):
        parse_duration("x", 0)


@pytest.mark.parametrize("seconds", [0, 0.25, 0.1, 1, 59, 60, 90, 3600, 5400, 86400 + 1, 12.345])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration("x", format_duration(seconds), allow_zero=True) == seconds


# --- shapes -----------------------------------------------------------------------------


def test_linear_shape() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "linear"
        initial = 10
        step = 40
        hold = "2m"
        final_bake = "5m"
        analysis_interval = "30s"
        pause_limit = "30m"
        require_pass = false
        consecutive_error_limit = 3
        """
    )
    assert plan == linear(
        10,
        40,
        hold=120,
        final_bake=300,
        analysis_interval=30,
        pause_limit=1800,
        require_pass=False,
        consecutive_error_limit=3,
    )
    assert plan.weights == (10.0, 50.0, 90.0, 100.0)


def test_exponential_shape() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "exponential"
        initial = 5
        factor = 3
        hold = 60
        analysis_interval = 30
        """
    )
    assert plan.weights == (5.0, 15.0, 45.0, 100.0)
    assert plan.steps[1] == Pause(60)


def test_weights_shape() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "weights"
        weights = [1, 5, 25, 50]
        hold = "1m"
        final_bake = "10m"
        analysis_interval = "10s"
        """
    )
    assert plan.weights == (1.0, 5.0, 25.0, 50.0, 100.0)
    assert plan.steps[-1] == Pause(600)


def test_codedeploy_shape() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "codedeploy"
        name = "Canary10Percent5Minutes"
        analysis_interval = "1m"
        """
    )
    assert plan.steps == (SetWeight(10), Pause(300), SetWeight(100))
    assert plan.analysis_interval == 60


def test_steps_shape_with_every_step_kind() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "steps"
        analysis_interval = "30s"
        [[plan.steps]]
        header_route = {header = "User-Agent", regex = ".*Chrome.*"}
        [[plan.steps]]
        mirror = 20
        [[plan.steps]]
        set_weight = 5
        [[plan.steps]]
        pause = "5m"
        [[plan.steps]]
        analyze = "5m"
        interval = "1m"
        [[plan.steps]]
        analyze = "2m"
        [[plan.steps]]
        wait_for_promotion = true
        [[plan.steps]]
        header_route = [
            {header = "X-Canary", exact = "yes"},
            {header = "X-Env", prefix = "qa", percent = 10},
        ]
        [[plan.steps]]
        clear_header_routes = true
        [[plan.steps]]
        mirror = 0
        [[plan.steps]]
        set_weight = 100
        """
    )
    assert plan.steps == (
        SetHeaderRoutes(
            routes(HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex"))
        ),
        SetMirror(20),
        SetWeight(5),
        Pause(300),
        Analyze(300, 60),
        Analyze(120, 30),  # the interval defaults to plan.analysis_interval
        WaitForPromotion(),
        SetHeaderRoutes(
            routes(
                HeaderRoute(header="X-Canary", value="yes"),
                HeaderRoute(header="X-Env", value="qa", match=HeaderMatch.PREFIX, percent=10),
            )
        ),
        SetHeaderRoutes(()),
        SetMirror(0),
        SetWeight(100),
    )


def test_analyze_steps_make_background_analysis_optional() -> None:
    plan = load_plan(
        """
        [plan]
        shape = "steps"
        [[plan.steps]]
        set_weight = 10
        [[plan.steps]]
        analyze = "5m"
        interval = "1m"
        """
    )
    assert plan.analysis_interval is None


# --- the decider and simulation tables --------------------------------------------------


def test_threshold_decider_table() -> None:
    policy = load_policy(
        policy_text(
            """
            [plan]
            shape = "codedeploy"
            name = "AllAtOnce"
            analysis_interval = 30
            """,
            """
            [decider]
            kind = "threshold"
            failure_limit = 3
            no_data = "ignore"
            [[decider.metrics]]
            metric = "error_rate"
            max = "2%"
            [[decider.metrics]]
            metric = "p99"
            max = "150ms"
            [[decider.metrics]]
            metric = "success_rate"
            min = 0.95
            max = 1
            arm = "stable"
            [[decider.metrics]]
            metric = "cpu"
            max = 0.8
            """,
        )
    )
    assert policy.decider == threshold(
        bound("error_rate", max=0.02),
        bound("p99", max=0.15),
        bound("success_rate", min=0.95, max=1.0, arm="stable"),
        bound("cpu", max=0.8),
        failure_limit=3,
        no_data=NoDataPolicy.IGNORE,
    )
    assert policy.simulation == SimulationSettings()


def test_simulation_table() -> None:
    policy = load_policy(
        policy_text(
            '[plan]\nshape = "codedeploy"\nname = "AllAtOnce"\nanalysis_interval = 30\n',
            extra="[simulation]\nrequests_per_second = 250\nseed = 7\n",
        )
    )
    assert policy.simulation == SimulationSettings(requests_per_second=250.0, seed=7)


def test_decider_registry_accepts_new_kinds() -> None:
    def build(table: PolicyTable) -> ThresholdDecider:
        table.check_keys({"kind", "limit"})
        return threshold(bound("error_rate", max=table.number("limit")))

    register_decider_kind("tiny", build)
    try:
        assert "tiny" in decider_kinds()
        policy = load_policy(
            policy_text(
                '[plan]\nshape = "codedeploy"\nname = "AllAtOnce"\nanalysis_interval = 30\n',
                '[decider]\nkind = "tiny"\nlimit = 0.05\n',
            )
        )
        assert policy.decider == threshold(bound("error_rate", max=0.05))
        error = config_error(
            policy_text(
                '[plan]\nshape = "codedeploy"\nname = "AllAtOnce"\nanalysis_interval = 30\n',
                '[decider]\nkind = "tiny"\nlimit = "x"\n',
            )
        )
        assert error.field == "decider.limit"
    finally:
        _DECIDER_KINDS.pop("tiny")
    assert decider_kinds() == ("all", "any", "kayenta", "relative", "sequential", "threshold")


def test_bad_kind_names_are_refused() -> None:
    with pytest.raises(ConfigError):
        register_decider_kind("Not A Name", lambda table: threshold(bound("cpu", max=1)))


# --- error paths: every one names its key ----------------------------------------------


def replace_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ('hold = "2m"', 'hold = "abc"', "plan.hold", None),
        ('hold = "2m"', 'hodl = "2m"', "plan.hodl", "did you mean 'hold'?"),
        ('hold = "2m"', "", "plan.hold", "plan.hold: is required for shape 'linear'"),
        ('shape = "linear"', "", "plan.shape", "plan.shape: is required"),
        ('shape = "linear"', 'shape = "zigzag"', "plan.shape", "must be one of 'linear'"),
        ("initial = 10", "initial = 120", "plan.initial", "must be in (0, 100]"),
        # "10%" is read as 10 (one rule for percents); a word is refused.
        ("initial = 10", 'initial = "ten"', "plan.initial", "must be a percent"),
        ("step = 20", "step = 0", "plan.step", None),
        ("step = 20", "step = 20\nfactor = 2", "plan.factor", "not used by shape 'linear'"),
        ('analysis_interval = "30s"', "", "plan.analysis_interval", "is required unless"),
        ('analysis_interval = "30s"', "analysis_interval = 0", "plan.analysis_interval", None),
        ('hold = "2m"', 'hold = "2m"\npause_limit = "-1m"', "plan.pause_limit", None),
        ('hold = "2m"', 'hold = "2m"\nrequire_pass = "yes"', "plan.require_pass", None),
        (
            'hold = "2m"',
            'hold = "2m"\nconsecutive_error_limit = 0',
            "plan.consecutive_error_limit",
            None,
        ),
        ('hold = "2m"', 'hold = "2m"\nfinal_bake = "soon"', "plan.final_bake", None),
    ],
)
def test_plan_errors_name_the_key(old: str, new: str, field: str, message: str | None) -> None:
    error = config_error(policy_text(replace_line(LINEAR_PLAN, old, new)))
    assert error.field == field
    assert str(error).startswith(field + ":")
    if message:
        assert message in str(error)


def test_bad_duration_message_is_exact() -> None:
    error = config_error(policy_text(replace_line(LINEAR_PLAN, 'hold = "2m"', 'hold = "abc"')))
    assert str(error) == (
        "plan.hold: must be a duration such as 90, '90s', '5m' or '1h30m', got 'abc'"
    )


@pytest.mark.parametrize(
    ("plan", "field", "message"),
    [
        (
            'shape = "weights"\nweights = [5, 5]\nhold = 60',
            "plan.weights[1]",
            "above the one before",
        ),
        ('shape = "weights"\nweights = 5\nhold = 60', "plan.weights", "must be an array"),
        ('shape = "weights"\nweights = []\nhold = 60', "plan.weights", None),
        ('shape = "weights"\nweights = [5, "x"]\nhold = 60', "plan.weights[1]", None),
        ('shape = "exponential"\ninitial = 1\nfactor = 1\nhold = 60', "plan.factor", "> 1"),
        ('shape = "codedeploy"\nname = "Canary10Percent"', "plan.name", "CodeDeploy"),
        ('shape = "codedeploy"\nname = "AllAtOnce"\nhold = 60', "plan.hold", "not used by"),
        ('shape = "steps"', "plan.steps", "is required for shape 'steps'"),
        ('shape = "steps"\nsteps = []', "plan.steps", "at least one"),
    ],
)
def test_shape_errors_name_the_key(plan: str, field: str, message: str | None) -> None:
    error = config_error(policy_text(f"[plan]\n{plan}\nanalysis_interval = 30\n"))
    assert error.field == field
    if message:
        assert message in str(error)


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ("set_weight = 120", "plan.steps[1].set_weight", "must be in (0, 100]"),
        ("set_weight = 0", "plan.steps[1].set_weight", None),
        ('pause = "x"', "plan.steps[1].pause", "must be a duration"),
        ("pause = 0", "plan.steps[1].pause", "> 0"),
        ("wait_for_promotion = false", "plan.steps[1].wait_for_promotion", "must be true"),
        ("clear_header_routes = false", "plan.steps[1].clear_header_routes", "must be true"),
        ("mirror = 200", "plan.steps[1].mirror", None),
        ('analyze = "1m"\ninterval = "2m"', "plan.steps[1].interval", "must be <="),
        ('analyze = "1m"\ninterval = "x"', "plan.steps[1].interval", None),
        ('pause = "1m"\ninterval = "2m"', "plan.steps[1].interval", "only used with analyze"),
        ("set_weight = 5\npause = 60", "plan.steps[1]", "needs exactly one of"),
        ("sett_weight = 5", "plan.steps[1]", "needs exactly one of"),
        ("set_weight = 5\ncolour = 1", "plan.steps[1].colour", "is not a known key"),
        ('header_route = {regex = "x"}', "plan.steps[1].header_route.header", "is required"),
        (
            'header_route = {header = "A", exact = "x", regex = "y"}',
            "plan.steps[1].header_route",
            "exactly one of exact, prefix, regex",
        ),
        ('header_route = {header = "A", regex = "(["}', "plan.steps[1].header_route.regex", None),
        ('header_route = {header = "A b", exact = "x"}', "plan.steps[1].header_route.header", None),
        (
            'header_route = {header = "A", exact = "x", percent = 0}',
            "plan.steps[1].header_route.percent",
            "(0, 100]",
        ),
        (
            'header_route = [{header = "A", exact = "x"}, {header = "B", prefix = ""}]',
            "plan.steps[1].header_route[1].prefix",
            None,
        ),
        (
            'header_route = {header = "A", exact = "x", match = "y"}',
            "plan.steps[1].header_route.match",
            None,
        ),
        ('header_route = "User-Agent"', "plan.steps[1].header_route", "must be a table"),
    ],
)
def test_step_errors_name_the_key(step: str, field: str, message: str | None) -> None:
    plan = (
        '[plan]\nshape = "steps"\nanalysis_interval = 30\n'
        f"[[plan.steps]]\nset_weight = 1\n[[plan.steps]]\n{step}\n"
    )
    error = config_error(policy_text(plan))
    assert error.field == field
    assert str(error).startswith(field + ":")
    if message:
        assert message in str(error)


def test_analyze_without_any_interval_names_the_key() -> None:
    plan = '[plan]\nshape = "steps"\n[[plan.steps]]\nanalyze = "5m"\n'
    error = config_error(policy_text(plan))
    assert str(error) == "plan.steps[0].interval: is required (or set plan.analysis_interval)"


def test_steps_as_a_single_table_are_refused() -> None:
    plan = '[plan]\nshape = "steps"\nanalysis_interval = 30\n[plan.steps]\nset_weight = 5\n'
    error = config_error(policy_text(plan))
    assert error.field == "plan.steps"
    assert "array of tables ([[plan.steps]])" in str(error)


METRIC = '[decider]\nkind = "threshold"\n[[decider.metrics]]\n'
PLAN_OK = '[plan]\nshape = "codedeploy"\nname = "AllAtOnce"\nanalysis_interval = 30\n'


@pytest.mark.parametrize(
    ("decider", "field", "message"),
    [
        ("", "decider", "decider: is required"),
        ("[decider]\nfailure_limit = 1", "decider.kind", "is required"),
        ('[decider]\nkind = "magic"', "decider.kind", "'sequential', 'threshold'"),
        ('[decider]\nkind = "threshold"', "decider.metrics", "is required"),
        ('[decider]\nkind = "threshold"\nmetrics = []', "decider.metrics", "at least one"),
        (
            '[decider]\nkind = "threshold"\nfailure_limt = 2',
            "decider.failure_limt",
            "did you mean 'failure_limit'?",
        ),
        ('[decider]\nkind = "threshold"\nfailure_limit = 0', "decider.failure_limit", ">= 1"),
        ('[decider]\nkind = "threshold"\nfailure_limit = 1.5', "decider.failure_limit", "integer"),
        (
            '[decider]\nkind = "threshold"\nno_data = "skip"',
            "decider.no_data",
            "'fail', 'inconclusive', 'ignore'",
        ),
        (
            METRIC + "max = 1",
            "decider.metrics[0].metric",
            "is required",
        ),
        (
            METRIC + 'metric = "cpu"',
            "decider.metrics[0]",
            "needs min, max or both",
        ),
        (
            METRIC + 'metric = "cpu"\nmin = 2\nmax = 1',
            "decider.metrics[0].min",
            "must be <= max",
        ),
        (
            METRIC + 'metric = "error_rate"\nmax = 2',
            "decider.metrics[0].max",
            "fraction in [0, 1]",
        ),
        (
            METRIC + 'metric = "error_rate"\nmax = "2 percent"',
            "decider.metrics[0].max",
            "percent like '2%'",
        ),
        (
            METRIC + 'metric = "p99"\nmax = "fast"',
            "decider.metrics[0].max",
            "must be a duration",
        ),
        (
            METRIC + 'metric = "cpu"\nmax = "high"',
            "decider.metrics[0].max",
            "must be a number",
        ),
        (
            METRIC + 'metric = "cpu"\nmax = inf',
            "decider.metrics[0].max",
            "finite",
        ),
        (
            METRIC + 'metric = "cpu"\nmax = 1\narm = "baseline"',
            "decider.metrics[0].arm",
            "'canary', 'stable'",
        ),
        (
            METRIC + 'metric = "cpu"\nmaximum = 1',
            "decider.metrics[0].maximum",
            "is not a known key",
        ),
        ('decider = "threshold"', "decider", "must be a table"),
    ],
)
def test_decider_errors_name_the_key(decider: str, field: str, message: str) -> None:
    error = config_error(decider + "\n" + PLAN_OK)
    assert error.field == field
    assert str(error).startswith(field + ":")
    assert message in str(error)


@pytest.mark.parametrize(
    ("simulation", "field"),
    [
        ("requests_per_second = 0", "simulation.requests_per_second"),
        ('requests_per_second = "lots"', "simulation.requests_per_second"),
        ("seed = 1.5", "simulation.seed"),
        ("sed = 1", "simulation.sed"),
    ],
)
def test_simulation_errors_name_the_key(simulation: str, field: str) -> None:
    error = config_error(policy_text(PLAN_OK, extra=f"[simulation]\n{simulation}\n"))
    assert error.field == field


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        ('"60%"', 0.6),
        ("0.6", 0.6),
        ('{"User-Agent" = "60%", X-Beta = 0.02}', {"User-Agent": 0.6, "X-Beta": 0.02}),
    ],
)
def test_header_share_reads_a_fraction_or_a_percent(share: str, expected: Any) -> None:
    text = policy_text(PLAN_OK, extra=f"[simulation]\nheader_share = {share}\n")
    got = load_policy(text).simulation.header_share
    assert (got if isinstance(got, float) else dict(got)) == expected


@pytest.mark.parametrize(
    ("share", "field", "message"),
    [
        ('"most"', "simulation.header_share", "must be a fraction such as 0.02"),
        ('"150%"', "simulation.header_share", "must be a share of requests in [0, 1]"),
        ('{"User-Agent" = "lots"}', "simulation.header_share.User-Agent", "must be a fraction"),
        ('{"User-Agent" = "120%"}', "simulation.header_share.User-Agent", "in [0, 1]"),
    ],
)
def test_bad_header_share_names_the_key(share: str, field: str, message: str) -> None:
    error = config_error(policy_text(PLAN_OK, extra=f"[simulation]\nheader_share = {share}\n"))
    assert error.field == field
    assert message in str(error)


def test_traffic_back_reads_percent_strings() -> None:
    hooks = """
    [hooks]
    promote_stable = "http://deploy.internal/upgrade-stable"
    traffic_back = ["50%", "12.5%", 0]
    """
    policy = load_policy(policy_text(PLAN_OK, extra=hooks))
    assert policy.deployment.build_hooks().traffic_back == (50.0, 12.5, 0.0)
    error = config_error(policy_text(PLAN_OK, extra=hooks.replace('"12.5%"', '"half"')))
    assert error.field == "hooks.traffic_back[1]"
    assert "must be a percent" in str(error)


def test_unknown_top_level_table_is_refused() -> None:
    error = config_error(policy_text(PLAN_OK, extra="[simulaton]\nseed = 1\n"))
    assert str(error) == "simulaton: is not a known key (did you mean 'simulation'?)"


def test_missing_plan_names_it() -> None:
    assert str(config_error(DECIDER)) == "plan: is required"


def test_toml_syntax_errors_give_the_line() -> None:
    error = config_error('[plan]\nshape = "linear"\nhold 2m\n')
    assert "line 3" in str(error)
    assert error.value == "hold 2m"


def test_toml_syntax_errors_in_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[plan]\nshape = = 1\n")
    error = config_error(str(path))
    assert str(error).startswith(f"{path}: invalid TOML at line 2")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    error = config_error(str(tmp_path / "nope.toml"))
    assert "cannot read the policy file" in str(error)
    assert "No such file" in str(error)


def test_constructor_errors_are_config_errors_with_the_path() -> None:
    # A ConfigError from a generator keeps its problem text and gains the key path.
    error = config_error(policy_text(replace_line(LINEAR_PLAN, "step = 20", "step = -5")))
    assert str(error) == "plan.step: must be in (0, 100], got -5"


# --- sources and the example -----------------------------------------------------------


def test_path_objects_strings_and_text_all_load(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    text = policy_text(PLAN_OK)
    path.write_text(text)
    assert load_policy(path) == load_policy(str(path)) == load_policy(text)


def test_example_policy_loads_as_documented() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.plan == linear(
        10,
        20,
        hold=120,
        final_bake=300,
        analysis_interval=30,
        pause_limit=1800,
        require_pass=True,
        consecutive_error_limit=4,
    )
    assert policy.plan.weights == (10.0, 30.0, 50.0, 70.0, 90.0, 100.0)
    assert policy.decider == threshold(
        bound("error_rate", max=0.02), bound("p99", max=0.12), failure_limit=2
    )
    assert policy.simulation == SimulationSettings(requests_per_second=100, seed=1)


def test_example_policy_round_trips_through_to_toml() -> None:
    policy = load_policy(EXAMPLE)
    text = policy.to_toml()
    assert load_policy(text) == policy
    assert load_policy(text).to_toml() == text


def test_every_step_kind_round_trips() -> None:
    policy = Policy(
        plan=Plan(
            steps=[
                SetHeaderRoutes(
                    routes(HeaderRoute(header="User-Agent", value='.*"Chrome".*', match="regex"))
                ),
                SetMirror(12.5),
                SetWeight(0.5),
                Pause(90.5),
                Analyze(300, 60),
                WaitForPromotion(),
                SetHeaderRoutes(()),
                SetWeight(100),
            ],
            analysis_interval=12.345,
            pause_limit=None,
        ),
        decider=threshold(bound("cpu", min=0.1, max=0.9, arm="stable"), no_data="fail"),
        simulation=SimulationSettings(requests_per_second=12.5, seed=-3),
    )
    assert load_policy(policy.to_toml()) == policy


def test_unwritable_deciders_are_refused() -> None:
    class Opaque:
        def initial_state(self) -> None:
            return None

        def judge(self, state: Any, observation: Any) -> Any:
            raise NotImplementedError

    policy = Policy(plan=Plan(steps=[SetWeight(100)]), decider=Opaque())
    with pytest.raises(ConfigError, match=r"^decider:"):
        policy.to_toml()


# --- the other decider kinds ------------------------------------------------------------

SEQUENTIAL_EXAMPLE = EXAMPLE.parent / "sequential_policy.toml"


def load_decider(decider: str) -> Any:
    return load_policy(PLAN_OK + textwrap.dedent(decider)).decider


def round_trips(decider: Any) -> str:
    policy = Policy(plan=linear(10, 45, hold=60, analysis_interval=10), decider=decider)
    text = policy.to_toml()
    assert load_policy(text) == policy
    assert load_policy(text).to_toml() == text
    return text


def test_relative_decider_table() -> None:
    decider = load_decider(
        """
        [decider]
        kind = "relative"
        no_data = "ignore"
        [[decider.metrics]]
        metric = "error_rate"
        max_ratio = 1.5
        max_increase = "0.5%"
        min_difference = "0.1%"
        min_requests = 100
        direction = "increase"
        [[decider.metrics]]
        metric = "p99"
        max_ratio = 1.2
        max_increase = "20ms"
        [[decider.metrics]]
        metric = "throughput"
        min_ratio = 0.8
        max_decrease = 5
        [[decider.metrics]]
        metric = "cpu"
        max_ratio = 1.3
        min_ratio = 0.7
        direction = "either"
        """
    )
    assert decider == relative(
        compare(
            "error_rate",
            max_ratio=1.5,
            max_increase=0.005,
            min_difference=0.001,
            min_requests=100,
        ),
        compare("p99", max_ratio=1.2, max_increase=0.02),
        compare("throughput", min_ratio=0.8, max_decrease=5),
        compare("cpu", max_ratio=1.3, min_ratio=0.7),
        no_data="ignore",
    )
    round_trips(decider)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("", sequential_errors(alpha=0.01)),
        (
            'latency_quantiles = ["p50", "p95", "p99.9"]',
            all_of(
                sequential_errors(alpha=0.01),
                sequential_latency(alpha=0.01, quantiles=(0.5, 0.95, 0.999)),
            ),
        ),
        (
            "alpha = 0.05\nerrors = false\nlatency_quantiles = [0.5, 0.99]\n"
            "latency_margin = 0.05\nmin_samples = 500",
            sequential_latency(alpha=0.05, quantiles=(0.5, 0.99), margin=0.05, min_samples=500),
        ),
        (
            "latency_quantiles = []\nmin_errors = 20\nearly_pass = true\nerror_margin = 0.1",
            sequential_errors(alpha=0.01, min_errors=20, early_pass=True, margin=0.1),
        ),
        (
            'latency_quantiles = ["p95"]\nearly_pass = true',
            all_of(
                sequential_errors(early_pass=True),
                sequential_latency(quantiles=[0.95], early_pass=True),
            ),
        ),
        (
            'latency = true\nerror_margin = "10%"\nlatency_margin = "5%"\n'
            'early_pass = true\npass_margin = "30%"',
            all_of(
                sequential_errors(margin=0.1, early_pass=True, pass_margin=0.3),
                sequential_latency(margin=0.05, early_pass=True, pass_margin=0.3),
            ),
        ),
        (
            "latency = true\nlatency_quantiles = []",
            all_of(sequential_errors(), sequential_latency(quantiles=())),
        ),
    ],
)
def test_sequential_decider_table(keys: str, expected: Any) -> None:
    decider = load_decider(f'[decider]\nkind = "sequential"\n{keys}\n')
    assert decider == expected
    round_trips(decider)


KAYENTA = """
[decider]
kind = "kayenta"
judge_every = 30
min_points = 20
max_points = 100
marginal = 60
pass = 90.5
nodata_fail_percent = false
[decider.groups]
errors = 70
"latency ms" = 30
[[decider.metrics]]
metric = "error_rate"
direction = "increase"
allowed_increase = 1.1
critical = true
critical_increase = 1.5
must_have_data = true
group = "errors"
[[decider.metrics]]
metric = "latency"
direction = "increase"
allowed_decrease = 0.9
critical_decrease = 0.5
nan_strategy = "replace"
outliers = "keep"
group = "latency ms"
confidence = 0.95
tolerance = 0.1
[[decider.metrics]]
metric = "cpu"
group = "errors"
"""


def test_kayenta_decider_table() -> None:
    decider = load_decider(KAYENTA)
    assert decider == kayenta(
        kayenta_metric(
            "error_rate",
            direction="increase",
            allowed_increase=1.1,
            critical=True,
            critical_increase=1.5,
            must_have_data=True,
            group="errors",
        ),
        kayenta_metric(
            "latency",
            direction="increase",
            allowed_decrease=0.9,
            critical_decrease=0.5,
            nan_strategy="replace",
            outliers="keep",
            group="latency ms",
            confidence=0.95,
            tolerance=0.1,
        ),
        kayenta_metric("cpu", group="errors"),
        group_weights={"errors": 70, "latency ms": 30},
        judge_every=30,
        min_points=20,
        max_points=100,
        marginal_threshold=60,
        pass_threshold=90.5,
        nodata_fail_percent=None,
    )
    text = round_trips(decider)
    assert 'groups = {errors = 70.0, "latency ms" = 30.0}' in text


def test_kayenta_defaults_and_inline_groups() -> None:
    decider = load_decider(
        '[decider]\nkind = "kayenta"\ngroups = {error_rate = 100}\n'
        '[[decider.metrics]]\nmetric = "error_rate"\n'
    )
    assert decider == kayenta(kayenta_metric("error_rate"), group_weights={"error_rate": 100})
    round_trips(decider)


@pytest.mark.parametrize(
    ("decider", "expected"),
    [
        (
            '[decider]\nkind = "relative"\nfailure_limit = 3\nconsecutive_failures = 2\n'
            "inconclusive_limit = 4\nconsecutive_success_limit = 5\ndry_run = true\n"
            '[[decider.metrics]]\nmetric = "p99"\nmax_ratio = 1.2\n',
            limited(
                relative(compare("p99", max_ratio=1.2)),
                failure_limit=3,
                consecutive_failures=2,
                inconclusive_limit=4,
                consecutive_success_limit=5,
                dry_run=True,
            ),
        ),
        (
            '[decider]\nkind = "relative"\nconsecutive_failures = 2\n'
            '[[decider.metrics]]\nmetric = "p99"\nmax_ratio = 1.2\n',
            limited(relative(compare("p99", max_ratio=1.2)), consecutive_failures=2),
        ),
        (
            DECIDER.replace(
                'kind = "threshold"',
                'kind = "threshold"\nfailure_limit = 2\ndry_run = false\n'
                "consecutive_success_limit = 2",
            ),
            limited(
                threshold(bound("error_rate", max=0.02), failure_limit=2),
                consecutive_success_limit=2,
            ),
        ),
        (
            '[decider]\nkind = "sequential"\nconsecutive_success_limit = 3\ndry_run = true\n',
            limited(sequential_errors(), consecutive_success_limit=3, dry_run=True),
        ),
    ],
)
def test_limit_keys_wrap_the_decider(decider: str, expected: Any) -> None:
    loaded = load_decider(decider)
    assert loaded == expected
    round_trips(loaded)


def test_limits_around_kayenta_and_composites() -> None:
    text = (
        '[decider]\nkind = "kayenta"\njudge_every = 1\nconsecutive_failures = 3\n'
        'failure_limit = 5\n[[decider.metrics]]\nmetric = "error_rate"\n'
    )
    decider = load_decider(text)
    assert decider == limited(
        kayenta(kayenta_metric("error_rate"), judge_every=1),
        failure_limit=5,
        consecutive_failures=3,
    )
    round_trips(decider)
    composite = load_decider(
        """
        [decider]
        kind = "any"
        dry_run = true
        inconclusive_limit = 2
        [[decider.members]]
        kind = "sequential"
        [[decider.members]]
        kind = "relative"
        consecutive_failures = 2
        [[decider.members.metrics]]
        metric = "p99"
        max_ratio = 1.2
        """
    )
    assert composite == limited(
        any_of(
            sequential_errors(),
            limited(relative(compare("p99", max_ratio=1.2)), consecutive_failures=2),
        ),
        inconclusive_limit=2,
        dry_run=True,
    )
    round_trips(composite)


def test_all_and_any_nest() -> None:
    decider = load_decider(
        """
        [decider]
        kind = "all"
        [[decider.members]]
        kind = "sequential"
        latency_quantiles = ["p50"]
        [[decider.members]]
        kind = "any"
        [[decider.members.members]]
        kind = "threshold"
        [[decider.members.members.metrics]]
        metric = "error_rate"
        max = "2%"
        [[decider.members.members]]
        kind = "relative"
        [[decider.members.members.metrics]]
        metric = "error_rate"
        max_ratio = 2
        """
    )
    # The sequential member is itself an all_of, which all_of flattens.
    assert decider == all_of(
        sequential_errors(),
        sequential_latency(quantiles=[0.5]),
        any_of(
            threshold(bound("error_rate", max=0.02)),
            relative(compare("error_rate", max_ratio=2)),
        ),
    )
    round_trips(decider)


@pytest.mark.parametrize(
    "decider",
    [
        # Not one "sequential" table: written as "all" with two sequential members.
        all_of(sequential_errors(alpha=0.01), sequential_latency(alpha=0.05)),
        all_of(sequential_errors(early_pass=True), sequential_latency()),
        all_of(sequential_latency(), sequential_errors()),
        all_of(sequential_errors(), sequential_latency(), sequential_errors(alpha=0.2)),
        any_of(sequential_errors(), sequential_latency()),
        limited(all_of(sequential_errors(), sequential_latency()), consecutive_success_limit=2),
        limited(threshold(bound("cpu", max=1)), dry_run=False),
        limited(threshold(bound("cpu", max=1)), inconclusive_limit=3),
        limited(kayenta(kayenta_metric("latency")), failure_limit=2, inconclusive_limit=2),
        limited(sequential_latency(), dry_run=True),
        threshold(bound("error_rate", max=0.02)) & relative(compare("p99", max_ratio=1.2)),
    ],
    ids=repr,
)
def test_more_deciders_round_trip(decider: Any) -> None:
    round_trips(decider)


@pytest.mark.parametrize(
    ("decider", "field", "message"),
    [
        (
            limited(threshold(bound("cpu", max=1)), failure_limit=3),
            "decider.failure_limit",
            "kind 'threshold'",
        ),
        (
            limited(threshold(bound("cpu", max=1)), consecutive_failures=2),
            "decider.consecutive_failures",
            "FAIL is final",
        ),
        (
            limited(limited(relative(compare("p99", max_ratio=2)))),
            "decider",
            "nests limited() in limited()",
        ),
        (sequential_errors(points=60), "decider.points", "cannot be written"),
        (sequential_latency(interpolate=False), "decider.interpolate", "cannot be written"),
        (sequential_errors(pass_margin=0.3), "decider.pass_margin", "without early_pass"),
        (
            limited(sequential_errors(), inconclusive_limit=2),
            "decider.inconclusive_limit",
            "never inconclusive",
        ),
        (
            limited(kayenta(kayenta_metric("cpu")), consecutive_success_limit=2),
            "decider.consecutive_success_limit",
            "judge_every",
        ),
        (
            all_of(relative(compare("p99", max_ratio=2)), sequential_errors(points=60)),
            "decider.members[1].points",
            "cannot be written",
        ),
        (
            any_of(
                threshold(bound("cpu", max=1)),
                all_of(
                    relative(compare("p99", max_ratio=2)),
                    limited(sequential_errors(), failure_limit=2),
                ),
            ),
            "decider.members[1].members[1].failure_limit",
            "cannot be written for kind 'sequential'",
        ),
        (
            limited(any_of(sequential_errors(), sequential_latency()), failure_limit=2),
            "decider.failure_limit",
            "member",
        ),
    ],
)
def test_unwritable_combinations_are_refused(decider: Any, field: str, message: str) -> None:
    policy = Policy(plan=Plan(steps=[SetWeight(100)], analysis_interval=10), decider=decider)
    with pytest.raises(ConfigError) as caught:
        policy.to_toml()
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")
    assert message in str(caught.value)


REL = '[decider]\nkind = "relative"\n[[decider.metrics]]\n'
SEQ = '[decider]\nkind = "sequential"\n'
KAY = '[decider]\nkind = "kayenta"\n'
KAY_METRIC = '[[decider.metrics]]\nmetric = "error_rate"\n'
MEMBER = '[[decider.members]]\nkind = "sequential"\n'


@pytest.mark.parametrize(
    ("decider", "field", "message"),
    [
        # relative
        (REL + 'metric = "p99"', "decider.metrics[0]", "needs a limit: max_ratio"),
        (REL + 'metric = "p99"\nmax_ratio = 0.5', "decider.metrics[0].max_ratio", ">= 1"),
        (REL + 'metric = "p99"\nmax_ratio = "x"', "decider.metrics[0].max_ratio", "a number"),
        (REL + 'metric = "p99"\nmin_ratio = 1.5', "decider.metrics[0].min_ratio", "(0, 1]"),
        (
            REL + 'metric = "error_rate"\nmax_increase = "5 pct"',
            "decider.metrics[0].max_increase",
            "percent like '2%'",
        ),
        (
            REL + 'metric = "error_rate"\nmax_increase = 2',
            "decider.metrics[0].max_increase",
            "fraction in [0, 1]",
        ),
        (
            REL + 'metric = "p99"\nmax_decrease = "soon"',
            "decider.metrics[0].max_decrease",
            "must be a duration",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\nmin_difference = -1',
            "decider.metrics[0].min_difference",
            ">= 0",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\ndirection = "up"',
            "decider.metrics[0].direction",
            "'increase', 'decrease', 'either'",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\ndirection = "decrease"',
            "decider.metrics[0].max_ratio",
            "direction is 'decrease'",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\ndirection = "either"',
            "decider.metrics[0].min_ratio",
            "needs a limit each way",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\nmin_requests = -1',
            "decider.metrics[0].min_requests",
            ">= 0",
        ),
        (
            REL + 'metric = "p99"\nmax_ratio = 2\nmax = 1',
            "decider.metrics[0].max",
            "is a threshold key; kind 'relative' limits the change: max_ratio or max_increase",
        ),
        ('[decider]\nkind = "relative"', "decider.metrics", "is required"),
        (
            '[decider]\nkind = "relative"\nno_data = "skip"\n[[decider.metrics]]\n'
            'metric = "p99"\nmax_ratio = 2',
            "decider.no_data",
            "'fail', 'inconclusive', 'ignore'",
        ),
        # sequential
        (SEQ + "alpha = 0.7", "decider.alpha", "must be in (0, 0.5]"),
        (SEQ + 'alpha = "1%"', "decider.alpha", "must be a number"),
        (SEQ + "errors = 1", "decider.errors", "true or false"),
        (SEQ + "errors = false", "decider.latency", "must be true when errors = false"),
        (
            SEQ + "errors = false\nlatency_quantiles = []",
            "decider.latency",
            "must be true when errors = false",
        ),
        (
            SEQ + "latency = false\nlatency_quantiles = []",
            "decider.latency_quantiles",
            "only used with latency = true",
        ),
        (SEQ + 'latency_quantiles = "p99"', "decider.latency_quantiles", "must be an array"),
        (
            SEQ + 'latency_quantiles = ["p50", "median"]',
            "decider.latency_quantiles[1]",
            "'p95'",
        ),
        (SEQ + "latency_quantiles = [0.5, 1.0]", "decider.latency_quantiles[1]", "(0, 1)"),
        (SEQ + 'latency_quantiles = ["p100"]', "decider.latency_quantiles[0]", "(0, 1)"),
        (SEQ + "latency_quantiles = [true]", "decider.latency_quantiles[0]", "(0, 1)"),
        (SEQ + "latency_margin = 0.1", "decider.latency_margin", "only used with latency"),
        (SEQ + "min_samples = 10", "decider.min_samples", "only used with latency = true"),
        (
            SEQ + 'latency_quantiles = ["p50"]\nlatency_margin = -0.1',
            "decider.latency_margin",
            "must be in [0, 100]",
        ),
        (
            SEQ + 'latency_quantiles = ["p50"]\nmin_samples = 0',
            "decider.min_samples",
            ">= 1",
        ),
        (
            SEQ + 'errors = false\nlatency_quantiles = ["p50"]\nmin_errors = 3',
            "decider.min_errors",
            "only used with errors = true",
        ),
        (SEQ + "min_errors = -1", "decider.min_errors", ">= 0"),
        (SEQ + "pass_margin = 0.1", "decider.pass_margin", "only used with early_pass"),
        (
            SEQ + "early_pass = true\nerror_margin = -1",
            "decider.error_margin",
            "must be in [0, 100]",
        ),
        (SEQ + "margin = 0.1", "decider.margin", "is not a known key"),
        (SEQ + "failure_limit = 2", "decider.failure_limit", "FAIL is final"),
        (SEQ + "consecutive_failures = 2", "decider.consecutive_failures", "FAIL is final"),
        (SEQ + "inconclusive_limit = 2", "decider.inconclusive_limit", "never inconclusive"),
        (SEQ + "consecutive_success_limit = 0", "decider.consecutive_success_limit", ">= 1"),
        (SEQ + 'dry_run = "yes"', "decider.dry_run", "true or false"),
        # kayenta
        (KAY, "decider.metrics", "is required"),
        (KAY + "judge_every = 0\n" + KAY_METRIC, "decider.judge_every", ">= 1"),
        (KAY + "min_points = 1.5\n" + KAY_METRIC, "decider.min_points", "integer"),
        (
            KAY + "min_points = 50\nmax_points = 10\n" + KAY_METRIC,
            "decider.max_points",
            ">= min_points",
        ),
        (KAY + "marginal = 120\n" + KAY_METRIC, "decider.marginal", "[0, 100]"),
        (KAY + "marginal = 80\npass = 70\n" + KAY_METRIC, "decider.pass", "must be in [marginal"),
        (KAY + 'pass = "high"\n' + KAY_METRIC, "decider.pass", "must be a number"),
        (KAY + "nodata_fail_percent = true\n" + KAY_METRIC, "decider.nodata_fail_percent", "false"),
        (KAY + "nodata_fail_percent = 0\n" + KAY_METRIC, "decider.nodata_fail_percent", "(0, 100]"),
        (KAY + "groups = 5\n" + KAY_METRIC, "decider.groups", "must be a table"),
        (KAY + "groups = {error_rate = -1}\n" + KAY_METRIC, "decider.groups.error_rate", ">= 0"),
        (KAY + 'groups = {error_rate = "x"}\n' + KAY_METRIC, "decider.groups.error_rate", "number"),
        (KAY + "groups = {latency = 50}\n" + KAY_METRIC, "decider.groups.latency", "not a metric"),
        (KAY + KAY_METRIC + 'direction = "up"', "decider.metrics[0].direction", "'either'"),
        (
            KAY + KAY_METRIC + "allowed_increase = 0.5",
            "decider.metrics[0].allowed_increase",
            ">= 1",
        ),
        (
            KAY + KAY_METRIC + "allowed_decrease = 1.5",
            "decider.metrics[0].allowed_decrease",
            "(0, 1]",
        ),
        (KAY + KAY_METRIC + "critical = 1", "decider.metrics[0].critical", "true or false"),
        (
            KAY + KAY_METRIC + "critical_increase = 0",
            "decider.metrics[0].critical_increase",
            "> 0",
        ),
        (
            KAY + KAY_METRIC + 'nan_strategy = "drop"',
            "decider.metrics[0].nan_strategy",
            "'remove', 'replace'",
        ),
        (KAY + KAY_METRIC + 'outliers = "trim"', "decider.metrics[0].outliers", "'keep'"),
        (KAY + KAY_METRIC + 'group = ""', "decider.metrics[0].group", "non-empty"),
        (KAY + KAY_METRIC + "confidence = 1", "decider.metrics[0].confidence", "(0, 1)"),
        (KAY + KAY_METRIC + "tolerance = -1", "decider.metrics[0].tolerance", ">= 0"),
        (KAY + KAY_METRIC + "weight = 1", "decider.metrics[0].weight", "is not a known key"),
        (KAY + '[[decider.metrics]]\ngroup = "a"', "decider.metrics[0].metric", "is required"),
        (
            KAY + "consecutive_failures = 2\n" + KAY_METRIC,
            "decider.consecutive_failures",
            "judge_every",
        ),
        (
            KAY + "consecutive_success_limit = 2\n" + KAY_METRIC,
            "decider.consecutive_success_limit",
            "judge_every",
        ),
        (KAY + "failure_limit = 0\n" + KAY_METRIC, "decider.failure_limit", ">= 1"),
        # all / any
        ('[decider]\nkind = "all"', "decider.members", "is required"),
        ('[decider]\nkind = "all"\n' + MEMBER, "decider.members", "at least two"),
        ('[decider]\nkind = "any"\nmembers = []', "decider.members", "at least one"),
        ('[decider]\nkind = "all"\nmembers = 3', "decider.members", "array of tables"),
        (
            '[decider]\nkind = "all"\n' + MEMBER + "[[decider.members]]\nalpha = 0.1",
            "decider.members[1].kind",
            "is required",
        ),
        (
            '[decider]\nkind = "all"\n' + MEMBER + MEMBER + "alpha = 0.9",
            "decider.members[1].alpha",
            "(0, 0.5]",
        ),
        (
            '[decider]\nkind = "any"\n'
            + MEMBER
            + '[[decider.members]]\nkind = "all"\n'
            + '[[decider.members.members]]\nkind = "sequential"\n'
            + '[[decider.members.members]]\nkind = "relative"\n'
            + '[[decider.members.members.metrics]]\nmetric = "p99"\nmax_ratio = 0.5\n',
            "decider.members[1].members[1].metrics[0].max_ratio",
            ">= 1",
        ),
        (
            '[decider]\nkind = "all"\nfailure_limit = 2\n' + MEMBER + MEMBER,
            "decider.failure_limit",
            "set it in the member's table",
        ),
        (
            '[decider]\nkind = "any"\nconsecutive_failures = 2\n' + MEMBER + MEMBER,
            "decider.consecutive_failures",
            "failures are counted per member",
        ),
        (
            '[decider]\nkind = "all"\nconsecutive_success_limit = 2\n'
            + MEMBER
            + '[[decider.members]]\nkind = "kayenta"\n[[decider.members.metrics]]\n'
            + 'metric = "cpu"\n',
            "decider.consecutive_success_limit",
            "judge_every",
        ),
        ('[decider]\nkind = "all"\nmember = []', "decider.member", "did you mean 'members'?"),
    ],
)
def test_new_kind_errors_name_the_key(decider: str, field: str, message: str) -> None:
    error = config_error(decider + "\n" + PLAN_OK)
    assert error.field == field
    assert str(error).startswith(field + ":")
    assert message in str(error)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("consecutive_failures = 2", "decider.consecutive_failures", "FAIL is final"),
        ("inconclusive_limit = 0", "decider.inconclusive_limit", ">= 1"),
        ("dry_run = 1", "decider.dry_run", "true or false"),
        ("consecutive_sucess_limit = 2", "decider.consecutive_sucess_limit", "did you mean"),
    ],
)
def test_threshold_limit_errors_name_the_key(extra: str, field: str, message: str) -> None:
    text = DECIDER.replace('kind = "threshold"', f'kind = "threshold"\n{extra}')
    error = config_error(PLAN_OK + text)
    assert error.field == field
    assert message in str(error)


def test_schema_examples_in_the_docstring_load() -> None:
    # Each "[decider]" section of the documented schema is a decider table of its own,
    # and the limit keys at its end apply to kind "relative".
    doc = policy_module.__doc__ or ""
    block = doc[doc.index("::\n", doc.index("Schema")) + 3 : doc.index(">>> policy")]
    text = "\n".join(line[4:] for line in block.splitlines())
    chunks = [chunk.strip() for chunk in text.split("\n\n")]
    tables = [chunk[chunk.index("[decider]") :] for chunk in chunks if "[decider]\n" in chunk]
    assert [table.split("\n")[1].split("#")[0].strip() for table in tables] == [
        'kind = "threshold"',
        'kind = "relative"',
        'kind = "sequential"',
        'kind = "kayenta"',
        'kind = "all"',
    ]
    for table in tables:
        round_trips(load_decider(table))
    (limit_chunk,) = [chunk for chunk in chunks if chunk.startswith("# Limits")]
    limits = [line for line in limit_chunk.splitlines() if not line.startswith("#")]
    relative_table = tables[1].replace("\n[[", "\n" + "\n".join(limits) + "\n[[", 1)
    decider = load_decider(relative_table)
    assert decider.consecutive_success_limit == 3
    round_trips(decider)


# --- the sequential example -------------------------------------------------------------


def test_sequential_example_loads_as_documented() -> None:
    policy = load_policy(SEQUENTIAL_EXAMPLE)
    assert policy.plan == linear(
        10, 20, hold=120, final_bake=300, analysis_interval=10, require_pass=True
    )
    assert policy.decider == all_of(
        sequential_errors(alpha=0.01, margin=0.05),
        sequential_latency(alpha=0.01, margin=0.03),
    )
    assert policy.simulation == SimulationSettings(requests_per_second=100, seed=1)
    assert load_policy(policy.to_toml()) == policy


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ("healthy", "outcome   promoted at 15:00"),
        ("errors", "outcome   rolled back at 7:50: analysis failed: errors: canary/stable"),
        ("latency", "outcome   rolled back at 5:20: analysis failed: latency: P(canary slower"),
    ],
)
def test_sequential_example_simulates_as_documented(
    capsys: pytest.CaptureFixture[str], scenario: str, outcome: str
) -> None:
    from canarykit._cli import main

    assert main(["simulate", str(SEQUENTIAL_EXAMPLE), "--scenario", scenario]) == 0
    assert outcome in capsys.readouterr().out
    for seed in ("2", "3"):
        assert (
            main(
                [
                    "simulate",
                    str(SEQUENTIAL_EXAMPLE),
                    "--scenario",
                    scenario,
                    "--seed",
                    seed,
                    "--json",
                ]
            )
            == 0
        )
        data = json.loads(capsys.readouterr().out)
        assert data["phase"] == ("succeeded" if scenario == "healthy" else "rolled_back")
        if scenario != "healthy":
            # Caught after the regression starts at 5:00: latency within a minute, errors
            # (at a 50% to 90% split, or against the record at 100%) by 10:30.
            limit = 360 if scenario == "latency" else 630
            assert 300 < data["finished_at"] - data["started_at"] <= limit
