from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from canarykit._errors import ConfigError
from canarykit._plan import (
    Analyze,
    Pause,
    Plan,
    SetHeaderRoutes,
    SetMirror,
    SetWeight,
    WaitForPromotion,
    linear,
)
from canarykit._policy import (
    _DECIDER_KINDS,
    Policy,
    PolicyTable,
    SimulationSettings,
    decider_kinds,
    format_duration,
    load_policy,
    parse_duration,
    register_decider_kind,
)
from canarykit._split import HeaderMatch, HeaderRoute
from canarykit.deciders import NoDataPolicy, ThresholdDecider, bound, threshold

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
        header_route = [{header = "X-Canary", exact = "yes"}, {header = "X-Env", prefix = "qa"}]
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
                HeaderRoute(header="X-Env", value="qa", match=HeaderMatch.PREFIX),
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
    assert decider_kinds() == ("threshold",)


def test_bad_kind_names_are_refused() -> None:
    with pytest.raises(ConfigError):
        register_decider_kind("Not A Name", lambda table: threshold(bound("cpu", max=1)))


# --- error paths: every one names its key ----------------------------------------------

LINEAR = """
[plan]
shape = "linear"
initial = 10
step = 20
hold = "2m"
analysis_interval = "30s"
"""


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
        ("initial = 10", 'initial = "10%"', "plan.initial", "must be a number"),
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
    error = config_error(policy_text(replace_line(LINEAR, old, new)))
    assert error.field == field
    assert str(error).startswith(field + ":")
    if message:
        assert message in str(error)


def test_bad_duration_message_is_exact() -> None:
    error = config_error(policy_text(replace_line(LINEAR, 'hold = "2m"', 'hold = "abc"')))
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
        ('[decider]\nkind = "magic"', "decider.kind", "must be 'threshold'"),
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
    error = config_error(policy_text(replace_line(LINEAR, "step = 20", "step = -5")))
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
