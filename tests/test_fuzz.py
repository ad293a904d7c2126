"""Bad and hostile input: every refusal is a CanaryError that names the field.

Hypothesis feeds the policy loader valid policies with one value, key or table made
hostile (wrong types, NaN and infinities, negative and huge numbers, empty strings,
strings with a newline, ``;``, ``}`` or quotes, unicode, tables where scalars belong,
unknown keys), damaged TOML text and random bytes; and feeds the public constructors
one hostile argument each. Whatever it finds must load, or raise `ConfigError` whose
`field` names the key path (or, for a TOML syntax error, the file and line): never a
TypeError, KeyError, AttributeError, RecursionError or OverflowError from deep inside,
and never a hang. `benchmarks/fuzz.py` runs many more such inputs from a fixed seed.
"""

import contextlib
import datetime
import decimal
import fractions
import json
import math
import re
import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import canarykit as ck
from canarykit import deciders as dk
from canarykit import presets
from helpers.toml_doc import dotted, paths, toml_key, toml_value

# ---------------------------------------------------------------------------------------
# Valid policies, and writing them as TOML

THRESHOLD = {
    "kind": "threshold",
    "failure_limit": 2,
    "metrics": [{"metric": "error_rate", "max": "2%"}, {"metric": "p99", "max": "500ms"}],
}
RELATIVE = {
    "kind": "relative",
    "no_data": "fail",
    "inconclusive_limit": 2,
    "metrics": [{"metric": "error_rate", "max_ratio": 1.5, "min_difference": "0.1%"}],
}
SEQUENTIAL = {
    "kind": "sequential",
    "alpha": 0.01,
    "latency_quantiles": ["p50", 0.99],
    "min_errors": 2,
    "early_pass": True,
    "error_margin": 0.2,
}
KAYENTA = {
    "kind": "kayenta",
    "judge_every": 6,
    "min_points": 5,
    "groups": {"errors": 60, "latency": 40},
    "metrics": [
        {"metric": "error_rate", "direction": "increase", "critical": True, "group": "errors"},
        {"metric": "latency", "allowed_increase": 1.1, "group": "latency"},
    ],
}
ALL = {
    "kind": "all",
    "members": [
        {"kind": "sequential", "alpha": 0.05},
        {"kind": "relative", "metrics": [{"metric": "p99", "max_ratio": 1.2}]},
    ],
}
POLICIES = [
    {
        "plan": {"shape": "linear", "initial": 10, "step": 20, "hold": "2m"},
        "decider": THRESHOLD,
    },
    {
        "plan": {
            "shape": "steps",
            "analysis_interval": "30s",
            "pause_limit": "30m",
            "steps": [
                {"set_weight": 10},
                {"header_route": {"header": "User-Agent", "regex": ".*Chrome.*"}},
                {"analyze": "5m", "interval": "1m"},
                {"mirror": 10},
                {"clear_header_routes": True},
                {"wait_for_promotion": True},
            ],
        },
        "decider": RELATIVE,
    },
    {
        "plan": {"shape": "weights", "weights": [1, 5, 25], "hold": 60, "final_bake": "5m"},
        "decider": SEQUENTIAL,
        "simulation": {"requests_per_second": 50, "seed": 7},
    },
    {
        "plan": {"shape": "exponential", "initial": 1, "factor": 2, "hold": "1m"},
        "decider": KAYENTA,
    },
    {"plan": {"shape": "codedeploy", "name": "Linear10PercentEvery1Minute"}, "decider": ALL},
]
for _policy in POLICIES:
    _policy["plan"].setdefault("analysis_interval", 30)


def to_toml(doc):
    lines = []
    for table, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{toml_key(table)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{toml_key(table)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


def table_of(path):
    """The key path of the table holding `path`, where an error about it may point."""
    parent = list(path[:-1])
    while parent and isinstance(parent[-1], int):
        parent.pop()
    expected = [dotted(parent)]
    if "metrics" in parent:  # Kayenta's [decider.groups] refers to the metrics' groups
        expected.append(dotted((*parent[: parent.index("metrics")], "groups")))
    return expected


def copy(value):
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------
# Hostile values

HOSTILE_TEXT = [
    "",
    " ",
    "\n",
    "5m\n",
    "1h;",
    "}",
    '"',
    "'",
    "\\",
    "a;b}",
    "${x}",
    "nan",
    "inf",
    "-1s",
    "1e999",
    "9" * 400,
    "10%",
    "-5%",
    "101%",
    "p0",
    "p101",
    "latency",
    "\u202e",
    "\U0001f600",
    "\x00",
    "\x1b[31m",
    "User-Agent\n",
    "a{99999999999}",
    "(",
]
toml_scalars = st.one_of(
    st.sampled_from([0, -1, 1, 101, 2**63 - 1, -(2**63), 0.0, -0.0, 1e-300, 1e308, -1e308]),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False]),
    st.sampled_from(HOSTILE_TEXT),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
)
toml_values = st.one_of(
    toml_scalars,
    st.lists(toml_scalars, max_size=4),
    st.dictionaries(st.text(max_size=6), toml_scalars, max_size=3),
    st.sampled_from([[], [[]], [{}], {}, {"kind": "threshold"}, [{"kind": "sequential"}]]),
)
KNOWN_KEYS = sorted(
    {k for doc in POLICIES for path in paths(doc) for k in path if isinstance(k, str)}
    | {"consecutive_failures", "dry_run", "min", "arm", "prefix", "exact", "factor", "name"}
)


class Hostile:
    """A Python value that misbehaves when converted."""

    def __float__(self):
        raise RuntimeError("no float")

    def __index__(self):
        raise RuntimeError("no int")

    def __iter__(self):
        raise RuntimeError("no iteration")


def _recursive():
    items = [1]
    items.append(items)
    return items


class Endless:
    """An iterable without end, as a generator can be; it fails loudly, not by eating memory.

    Every cap in canarykit stops reading long before `LIMIT` items; reading them all
    means a constructor tried to hold an endless iterable in memory.
    """

    LIMIT = 2_000_000

    def __iter__(self):
        for _ in range(self.LIMIT):
            yield 1
        raise AssertionError("read an endless iterable to the end")

    def __repr__(self):
        return "Endless()"


python_values = st.one_of(
    toml_values,
    st.none(),
    st.sampled_from(
        [
            10**400,
            -(10**400),
            2**53 + 1,
            decimal.Decimal("1.5"),
            decimal.Decimal("NaN"),
            fractions.Fraction(1, 3),
            1 + 2j,
            b"bytes",
            bytearray(b"x"),
            object(),
            Hostile(),
            int,
            len,
            Ellipsis,
            {1, 2},
            (),
            (1, 2),
            datetime.timedelta(seconds=-5),
            datetime.timedelta(days=10**8),
            datetime.datetime(2020, 1, 1),
            _recursive(),
            iter([1, 2]),
        ]
    ),
    st.builds(Endless),
)


# ---------------------------------------------------------------------------------------
# The policy loader


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds=5.0):
    """Fail, rather than hang, when one input takes too long (no-op without SIGALRM)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(_signum, _frame):
        raise Hang(f"one input took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_loads_or_names(text, expected_prefixes):
    """`text` loads (and round-trips), or is refused naming a key under one of the prefixes."""
    try:
        with time_limit():
            policy = ck.policy.load_policy(text)
    except ck.ConfigError as exc:
        field = exc.field
        assert isinstance(field, str) and field.strip(), exc
        assert str(exc)  # the message can be built
        allowed = [*expected_prefixes, "policy"]
        assert any(
            not prefix or field == prefix or field.startswith((prefix + ".", prefix + "["))
            for prefix in allowed
        ), f"{field!r} is not under {allowed}: {exc}"
        return None
    with time_limit():
        again = ck.policy.load_policy(policy.to_toml())
    assert again.plan == policy.plan
    return policy


@given(data=st.data())
def test_a_policy_with_a_hostile_value_loads_or_names_the_key(data):
    doc = copy(data.draw(st.sampled_from(POLICIES)))
    path = data.draw(st.sampled_from(paths(doc)), label="path")
    value = data.draw(toml_values, label="value")
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    assert_loads_or_names(to_toml(doc), table_of(path))


@given(data=st.data())
def test_a_policy_with_a_key_removed_or_added_loads_or_names_the_key(data):
    doc = copy(data.draw(st.sampled_from(POLICIES)))
    tables = [p for p in paths(doc) if isinstance(_get(doc, p), dict)]
    if data.draw(st.booleans(), label="remove"):
        path = data.draw(st.sampled_from(paths(doc)), label="path")
        parent = _get(doc, path[:-1])
        parent.pop(path[-1])
        expected = table_of(path)
    else:
        table = data.draw(st.sampled_from(tables), label="table")
        key = data.draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), label="key")
        _get(doc, table)[key] = data.draw(toml_values, label="value")
        expected = table_of((*table, key))
    assert_loads_or_names(to_toml(doc), expected)


def _get(doc, path):
    for part in path:
        doc = doc[part]
    return doc


@given(
    policy=st.sampled_from(POLICIES),
    position=st.floats(0, 1),
    inserted=st.text(max_size=5) | st.sampled_from(["=", "[", "]]", '"', "\n[plan]\n", "\x00"]),
)
def test_damaged_toml_text_loads_or_names_where(policy, position, inserted):
    text = to_toml(policy)
    at = int(position * len(text))
    assert_loads_or_names(text[:at] + inserted + text[at:], [""])


@given(text=st.text(max_size=200))
def test_any_text_loads_or_is_refused_with_a_named_field(text):
    assert_loads_or_names(text, [""])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=300))
def test_any_file_loads_or_is_refused_naming_the_file(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policy.toml"
        path.write_bytes(content)
        try:
            with time_limit():
                ck.policy.load_policy(path)
        except ck.ConfigError as exc:
            assert isinstance(exc.field, str) and exc.field.strip(), exc
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                assert exc.field == str(path), exc  # not text: the file is named


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[plan]\nshape = "linear"\nhold = 5m\n', encoding="utf-8")
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy(path)
    assert caught.value.field == str(path)
    assert "line 3" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = " + "[" * 5000 + "]" * 5000, "nests arrays or inline tables too deeply"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "nests arrays or inline tables too deeply"),
        ("[plan]\nshape = 'linear'\ninitial = " + "9" * 5000, "line 3: a number with too many"),
        ("a = 1\n" * 200_000, "too large for a policy"),
    ],
    ids=["deep arrays", "deep inline tables", "a 5000-digit integer", "a huge document"],
)
def test_pathological_toml_is_refused_naming_the_source(text, message):
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy(text)
    assert caught.value.field == "policy"
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("no/such/policy.toml", "No such file"),
        ("bad\x00path.toml", "null byte"),
        ("/", "cannot read"),
    ],
)
def test_an_unreadable_policy_path_is_named(source, problem):
    with pytest.raises(ck.ConfigError, match=re.escape(problem)) as caught:
        ck.policy.load_policy(source)
    assert caught.value.field == source


def test_an_odd_key_is_quoted_in_the_field():
    policy = to_toml(POLICIES[0]).replace("[decider]", '[decider]\n"a.b\\n" = 1')
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy(policy)
    assert caught.value.field == 'decider."a.b\\n"'
    with pytest.raises(ck.ConfigError) as caught:
        ck.policy.load_policy('"" = 1\n' + to_toml(POLICIES[0]))
    assert caught.value.field == '""'


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        ({"initial": 0.0000001, "step": 0.0000001}, "plan.step"),
        ({"initial": 1, "step": 0.01}, "plan.step"),
        ({"shape": "exponential", "initial": 1e-7, "factor": 2}, "plan.factor"),
        ({"shape": "exponential", "initial": 1, "factor": 1.000001}, "plan.factor"),
        ({"hold": 9223372036854775807, "final_bake": 1e308}, None),
        ({"hold": "1" + "0" * 400}, "plan.hold"),
    ],
    ids=[
        "linear stalls",
        "linear too long",
        "exponential stalls",
        "exponential too long",
        "huge",
        "overflow",
    ],
)
def test_generated_plans_end_or_are_refused(plan, field):
    doc = copy(POLICIES[0])
    doc["plan"].update(plan)
    if plan.get("shape") == "exponential":
        del doc["plan"]["step"]
    text = to_toml(doc)
    if field is None:
        policy = assert_loads_or_names(text, [])
        assert policy is not None and policy.plan.weights[-1] == 100
        return
    with pytest.raises(ck.ConfigError) as caught, time_limit():
        ck.policy.load_policy(text)
    assert caught.value.field == field


# ---------------------------------------------------------------------------------------
# The public constructors


def route():
    return ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")


def histogram():
    return ck.LatencyHistogram.from_counts({-56: 3, -54: 1}, sum=0.031)


def stats():
    return ck.ArmStats(requests=100, errors=1, latency=histogram(), gauges={"cpu": 0.5})


PLAN_OPTIONS = {"analysis_interval": 30, "require_pass": True, "consecutive_error_limit": 4}
# (name, callable, valid keyword arguments, {argument: other fields an error may name})
CONSTRUCTORS = [
    ("Plan", ck.Plan, {"steps": [ck.SetWeight(10)], "pause_limit": 60, **PLAN_OPTIONS}, {}),
    ("SetWeight", ck.SetWeight, {"percent": 10}, {}),
    ("Pause", ck.Pause, {"seconds": 60}, {}),
    (
        "Analyze",
        ck.Analyze,
        {"seconds": 60, "interval": 10},
        {"seconds": ("interval",), "interval": ("seconds",)},
    ),
    ("SetHeaderRoutes", ck.SetHeaderRoutes, {"routes": [route()]}, {}),
    ("SetMirror", ck.SetMirror, {"percent": 5}, {}),
    (
        "linear",
        ck.linear,
        {"initial": 10, "step": 20, "hold": 60, "final_bake": 0, **PLAN_OPTIONS},
        {"initial": ("step", "weights"), "step": ("weights",)},
    ),
    ("from_weights", ck.from_weights, {"weights": [1, 5, 25], "hold": 60, **PLAN_OPTIONS}, {}),
    (
        "exponential",
        ck.exponential,
        {"initial": 1, "factor": 2, "hold": 60, **PLAN_OPTIONS},
        {"initial": ("factor", "weights"), "factor": ("weights",)},
    ),
    ("codedeploy", presets.codedeploy, {"name": "Canary10Percent5Minutes", **PLAN_OPTIONS}, {}),
    (
        "TrafficSplit",
        ck.TrafficSplit,
        {"canary_percent": 10, "header_routes": [route()], "mirror_percent": 5},
        {},
    ),
    (
        "HeaderRoute",
        ck.HeaderRoute,
        {"header": "User-Agent", "value": ".*Chrome.*", "match": "regex", "percent": 50},
        {"match": ("value",)},
    ),
    (
        "ArmStats",
        ck.ArmStats,
        {"requests": 100, "errors": 1, "latency": histogram(), "gauges": {"cpu": 0.5}},
        {"requests": ("errors",)},
    ),
    (
        "Observation",
        ck.Observation,
        {"start": 0, "end": 10, "stable": stats(), "canary": stats()},
        {"start": ("end",), "end": ("start",)},
    ),
    (
        "Window",
        ck.Window,
        {"start": 0, "end": 10, "split": ck.TrafficSplit()},
        {"start": ("end",)},
    ),
    (
        "LatencyHistogram",
        ck.LatencyHistogram,
        {"offset": -50, "counts": (1, 0, 2), "sum": None},
        {"counts": ("offset", "sum"), "offset": ("counts",)},
    ),
    (
        "LatencyHistogram.from_counts",
        ck.LatencyHistogram.from_counts,
        {"counts": {-56: 3, -54: 1}, "sum": 0.031},
        {"counts": ("sum",)},
    ),
    (
        "bound",
        dk.bound,
        {"metric": "error_rate", "min": 0.0, "max": 0.02, "arm": "canary"},
        {"metric": ("min", "max"), "min": ("max",), "max": ("min",)},
    ),
    (
        "threshold",
        dk.threshold,
        {"failure_limit": 2, "no_data": "fail"},
        {},
    ),
    (
        "compare",
        dk.compare,
        {"metric": "error_rate", "max_ratio": 1.5, "max_increase": 0.01, "min_requests": 10},
        {
            "metric": ("max_increase",),
            "max_ratio": ("min_ratio", "max_decrease"),
            "max_increase": ("min_ratio", "max_decrease"),
        },
    ),
    (
        "limited",
        dk.limited,
        {
            "decider": dk.threshold(dk.bound("p99", max=0.5)),
            "failure_limit": 3,
            "consecutive_failures": 2,
            "inconclusive_limit": 2,
            "consecutive_success_limit": 2,
            "dry_run": False,
        },
        {},
    ),
    (
        "kayenta_metric",
        dk.kayenta_metric,
        {
            "metric": "error_rate",
            "direction": "increase",
            "allowed_increase": 1.1,
            "allowed_decrease": 0.9,
            "critical": True,
            "critical_increase": 1.5,
            "must_have_data": False,
            "nan_strategy": "replace",
            "outliers": "keep",
            "group": "errors",
            "confidence": 0.98,
            "tolerance": 0.25,
        },
        {},
    ),
    (
        "kayenta",
        dk.kayenta,
        {
            "group_weights": {"error_rate": 100},
            "marginal_threshold": 75,
            "pass_threshold": 95,
            "judge_every": 6,
            "min_points": 5,
            "max_points": 60,
            "nodata_fail_percent": 50,
        },
        {"marginal_threshold": ("pass_threshold",), "min_points": ("max_points",)},
    ),
    (
        "sequential_errors",
        dk.sequential_errors,
        {"alpha": 0.01, "metric": "errors", "min_ratio": 1.05, "max_ratio": 20.0, "points": 30},
        {"min_ratio": ("max_ratio",)},
    ),
    (
        "sequential_latency",
        dk.sequential_latency,
        {"alpha": 0.01, "quantiles": (0.5, 0.99), "margin": 0.05, "min_samples": 100},
        {},
    ),
    (
        "mann_whitney",
        dk.mann_whitney,
        {"canary": [1.0, 2.0], "stable": [1.5], "alternative": "greater"},
        {},
    ),
    (
        "hodges_lehmann_histograms",
        dk.hodges_lehmann_histograms,
        {"canary": histogram(), "stable": histogram(), "confidence": 0.98},
        {},
    ),
]
# Positional members for the factories that take them: (*bounds), (*comparisons) ...
MEMBERS = {
    "threshold": [dk.bound("error_rate", max=0.02)],
    "kayenta": [dk.kayenta_metric("error_rate")],
}


def field_names(field):
    return set(re.split(r"[.\[\]]+", field))


def assert_built_or_named(call, args, kwargs, names):
    try:
        with time_limit():
            call(*args, **kwargs)
    except ck.ConfigError as exc:
        assert str(exc)
        assert names & field_names(exc.field), f"{exc.field!r} names none of {names}: {exc}"


@given(data=st.data())
def test_a_constructor_given_a_hostile_argument_is_built_or_names_it(data):
    name, call, kwargs, related = data.draw(st.sampled_from(CONSTRUCTORS), label="constructor")
    argument = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    value = data.draw(python_values, label="value")
    if name == "mann_whitney" and isinstance(value, Endless):
        return  # samples are read to the end, by design
    kwargs = {**kwargs, argument: value}
    names = {argument, *related.get(argument, ())}
    if name == "ArmStats" and argument == "gauges":
        names.add("gauges")
    assert_built_or_named(call, MEMBERS.get(name, []), kwargs, names)


@given(name=st.sampled_from(sorted(MEMBERS)), value=python_values, at=st.integers(0, 1))
def test_a_factory_given_a_hostile_member_names_it(name, value, at):
    call = {"threshold": dk.threshold, "kayenta": dk.kayenta}[name]
    members = list(MEMBERS[name])
    members.insert(at, value)
    assert_built_or_named(call, members, {}, {"bounds", "metrics"})


@given(values=st.lists(python_values, min_size=1, max_size=3))
def test_composites_given_hostile_members_name_them(values):
    for combine in (dk.all_of, dk.any_of):
        assert_built_or_named(combine, [dk.sequential_errors(), *values], {}, {"deciders"})


def saved_data():
    json_values = st.recursive(
        toml_scalars | st.none(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=8,
    )
    return json_values


SAVED = [
    (ck.ArmStats.from_json, stats().to_json()),
    (
        ck.Observation.from_json,
        ck.Observation(start=0, end=1, stable=stats(), canary=stats()).to_json(),
    ),
    (ck.Window.from_json, ck.Window(start=0, end=1, split=ck.TrafficSplit()).to_json()),
    (ck.TrafficSplit.from_json, ck.TrafficSplit(header_routes=[route()]).to_json()),
    (ck.HeaderRoute.from_json, route().to_json()),
    (ck.LatencyHistogram.from_json, histogram().to_json()),
    (
        ck.Verdict.from_json,
        ck.Verdict.from_metrics(
            [ck.MetricVerdict(metric="p99", kind=ck.VerdictKind.PASS, reason="ok", value=0.1)]
        ).to_json(),
    ),
]


def damage(data, draw):
    """`data` with one value replaced by a hostile one, or one key deleted."""
    data = copy(data)
    where = paths(data)
    if not where:
        return draw(saved_data())
    path = draw(st.sampled_from(where))
    parent = _get(data, path[:-1])
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(saved_data())
    return data


@given(data=st.data())
def test_damaged_saved_values_are_refused_naming_a_field(data):
    load, saved = data.draw(st.sampled_from(SAVED), label="from_json")
    damaged = damage(saved, data.draw) if data.draw(st.booleans()) else data.draw(saved_data())
    try:
        with time_limit():
            load(damaged)
    except ck.ConfigError as exc:
        assert isinstance(exc.field, str) and exc.field.strip()
        assert str(exc)


DECIDERS = [
    dk.threshold(dk.bound("error_rate", max=0.02)),
    dk.relative(dk.compare("p99", max_ratio=1.2)),
    dk.limited(dk.threshold(dk.bound("error_rate", max=0.02)), failure_limit=2),
    dk.kayenta(
        dk.kayenta_metric("error_rate"), dk.kayenta_metric("latency"), judge_every=1, min_points=1
    ),
    dk.sequential_errors(early_pass=True),
    dk.sequential_latency(min_samples=1),
    dk.all_of(dk.threshold(dk.bound("p99", max=1)), dk.sequential_errors()),
    dk.any_of(dk.relative(dk.compare("p99", max_ratio=2)), dk.sequential_latency(min_samples=1)),
]
OBSERVATION = ck.Observation(start=0, end=10, stable=stats(), canary=stats())


@given(data=st.data())
def test_a_damaged_decider_state_is_refused_naming_the_state(data):
    # A rollout resumed from a corrupted store hands the decider whatever was saved.
    decider = data.draw(st.sampled_from(DECIDERS), label="decider")
    state = damage(decider.initial_state(), data.draw)
    try:
        with time_limit():
            judged = decider.judge(state, OBSERVATION)
    except ck.ConfigError as exc:
        assert exc.field.startswith("state"), exc
    else:
        assert isinstance(judged, ck.Judgement)


# ---------------------------------------------------------------------------------------
# What the fuzzing found, pinned


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ck.SetWeight(10**400), "percent"),
        (lambda: ck.Pause(10**400), "seconds"),
        (lambda: ck.TrafficSplit(canary_percent=10**400), "canary_percent"),
        (lambda: ck.Observation(start=0, end=10**400, stable=stats(), canary=stats()), "end"),
        (lambda: ck.ArmStats(requests=1, gauges={"cpu": 10**400}), "gauges['cpu']"),
        (lambda: ck.LatencyHistogram.from_samples([10**400]), "samples[0]"),
        (lambda: ck.LatencyHistogram.from_samples(5), "samples"),
        (lambda: ck.LatencyHistogram.from_counts({1: 1}, sum=10**400), "sum"),
        (lambda: ck.LatencyHistogram(counts=5), "counts"),
        (lambda: ck.LatencyHistogram(counts=Endless()), "counts"),
        (lambda: dk.bound("p99", max=10**400), "max"),
        (lambda: dk.compare("p99", max_ratio=10**400), "max_ratio"),
        (
            lambda: dk.kayenta(dk.kayenta_metric("x"), group_weights={"x": 10**400}),
            "group_weights['x']",
        ),
        (lambda: dk.sequential_errors(alpha=10**400), "alpha"),
        (lambda: dk.sequential_latency(quantiles=[10**400]), "quantiles[0]"),
        (lambda: dk.sequential_latency(quantiles=2.0), "quantiles[0]"),
        (lambda: dk.mann_whitney([1], [10**400]), "stable[0]"),
        (lambda: ck.exponential(1e-7, 2, hold=1), "factor"),
        (lambda: ck.linear(1e-300, 1e-300, hold=1), "step"),
        (lambda: ck.linear(1, 0.001, hold=1), "step"),
        (lambda: ck.from_weights(range(1, 10**12), hold=1), "weights"),
        (lambda: ck.linear(10, 10, hold=1, bogus=1), "bogus"),
        (lambda: ck.linear(10, 10, hold=1, steps=[]), "steps"),
        (lambda: presets.codedeploy("AllAtOnce", bogus=1), "bogus"),
        (lambda: presets.codedeploy(5), "name"),
        (lambda: presets.codedeploy("Canary10Percent" + "9" * 5000 + "Minutes"), "name"),
        (lambda: presets.codedeploy("Canary\u0661\u0660Percent5Minutes"), "name"),
        (lambda: ck.Plan(steps=(ck.SetWeight(1) for _ in Endless())), "steps"),
        (lambda: ck.SetHeaderRoutes(7), "routes"),
        (lambda: ck.SetHeaderRoutes(Endless()), "routes"),
        (lambda: ck.TrafficSplit(header_routes=5), "header_routes"),
        (lambda: ck.HeaderRoute(header="User-Agent\n", value="x"), "header_route.header"),
        (lambda: ck.HeaderRoute(header="X-'a'", value="x"), "header_route.header"),
        (lambda: ck.HeaderRoute(header="X", value="a\u2028b"), "header_route.value"),
        (lambda: ck.HeaderRoute(header="X", value="a\tb"), "header_route.value"),
        (
            lambda: ck.HeaderRoute(header="X", value="a{99999999999}", match="regex"),
            "header_route.value",
        ),
        (
            lambda: ck.HeaderRoute(header="X", value="(" * 5000 + ")" * 5000, match="regex"),
            "header_route.value",
        ),
        (lambda: dk.bound("cpu\nFAKE LOG LINE", max=1), "metric"),
        (lambda: dk.compare("\x1b[2J", max_ratio=2), "metric"),
        (lambda: dk.kayenta_metric("cpu", group="a\nb"), "group"),
        (lambda: dk.sequential_errors(metric="e\rrors"), "metric"),
        (lambda: ck.Verdict(kind="bogus", reason="x"), "kind"),
        (lambda: ck.Verdict(kind=ck.VerdictKind.PASS, reason="x", metrics=5), "metrics"),
        (lambda: ck.Verdict(kind=ck.VerdictKind.PASS, reason="x", metrics=[None]), "metrics[0]"),
        (lambda: ck.MetricVerdict(metric="p99", kind=None, reason="x"), "kind"),
        (lambda: ck.Judgement(None), "verdict"),
        (lambda: ck.ArmStats.from_json({}), "stats.requests"),
        (lambda: ck.ArmStats.from_json(5), "stats"),
        (lambda: ck.Observation.from_json({"start": 0}), "observation.end"),
        (lambda: ck.Window.from_json([]), "window"),
        (lambda: ck.TrafficSplit.from_json({"canary_percent": 1}), "split.header_routes"),
        (lambda: ck.HeaderRoute.from_json({"header": "X"}), "header_route.value"),
        (
            lambda: ck.Verdict.from_json({"kind": "pass", "reason": "", "metrics": 5}),
            "verdict.metrics",
        ),
        (lambda: ck.Verdict.from_json({"kind": 3, "reason": "", "metrics": []}), "verdict.kind"),
    ],
)
def test_each_hostile_value_found_is_refused_naming_its_field(build, field):
    with pytest.raises(ck.ConfigError) as caught, time_limit():
        build()
    assert caught.value.field == field
    assert str(caught.value)


def test_a_verdict_kind_given_as_text_is_the_kind():
    # A decider that writes "fail" must roll back, not slip through as an unknown kind.
    assert ck.Verdict(kind="fail", reason="x").kind is ck.VerdictKind.FAIL
    assert ck.MetricVerdict(metric="p99", kind="PASS", reason="x").kind is ck.VerdictKind.PASS


def test_a_saved_judgement_schedule_far_ahead_does_not_hang():
    judge = dk.kayenta(dk.kayenta_metric("error_rate"), judge_every=1, min_points=1)
    state = judge.initial_state()
    state["windows"] = 2**53 - 1
    with time_limit():
        judged = judge.judge(state, OBSERVATION)
    assert judged.state["next_judgement"] == 2**53 + 1


def test_a_policy_with_huge_durations_writes_back_and_reads_the_same():
    doc = copy(POLICIES[0])
    doc["plan"].update({"hold": 1e300, "analysis_interval": 2**62})
    policy = ck.policy.load_policy(to_toml(doc))
    assert ck.policy.load_policy(policy.to_toml()).plan == policy.plan


def test_an_integer_too_long_to_print_is_still_refused_by_name():
    with pytest.raises(ck.ConfigError) as caught:
        ck.SetWeight(10**5000)
    assert caught.value.field == "percent"
