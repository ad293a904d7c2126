"""Header regexes: RE2's syntax, nothing a backtracking engine takes exponential time on,
and the in-process router's own budget for Python's engine."""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it; the input checks; the split module's constants; a router's helpers.

from __future__ import annotations

import io
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarykit import ConfigError, HeaderRoute, TrafficSplit
from canarykit._cli import main
from canarykit._safe import MAX_REGEX_LENGTH, backtracking_steps, check_regex
from canarykit._split import MAX_MATCHED_VALUE
from canarykit.routers import WeightedRouter
from canarykit.routers._inprocess import MAX_BACKTRACKING

REFUSED = [
    ("(a+)+$", "nest a variable repetition"),
    ("(a*)*", "nest a variable repetition"),
    (r"(\d+\.)+\d+", "nest a variable repetition"),
    ("(a?){10}", "nest a variable repetition"),
    ("(a|a)*", "start with different literal characters"),
    ("(a|ab)+", "start with different literal characters"),
    (r"(\w|\da)+", "start with different literal characters"),
    (r"(a)\1", "backreferences"),
    ("(?P<x>a)(?P=x)", "backreferences"),
    ("(?=a)a", "lookahead and lookbehind"),
    ("(?<=a)b", "lookahead and lookbehind"),
    ("(?!a)b", "negative lookahead"),
    ("(?<!a)b", "negative lookahead"),
    ("(?>ab)c", "atomic groups"),
    ("a*+b", "possessive repetitions"),
    ("a++b", "possessive repetitions"),
    ("(a)?(?(1)b|c)", "conditionals"),
    ("(?x)a b", "inline flags"),
    (r"(?a:\w)", "inline flags"),
    (r"abc\Z", r"\Z"),
    (r"\u0041", r"\u"),
    (r"\N{LATIN SMALL LETTER A}", r"\N"),
    (r"\012", "octal"),
    ("a{,3}", "{,n}"),
    ("[[:alpha:]]+", "POSIX classes"),
    ("a{1001}", "at most 1000 times"),
    ("(a{100}){20}", "counted repetitions are spelled out"),
    ("a" * (MAX_REGEX_LENGTH + 1), f"at most {MAX_REGEX_LENGTH} characters"),
    ("(" * 500 + ")" * 499, "not a regular expression"),
]

ACCEPTED = [
    ".*Chrome.*",
    "(Chrome|Firefox)+",
    "^(?:v2|canary)$",
    r"v2(\.[0-9]+)?",
    r"[a-z]{2,5}-\d{3}",
    "(?i)beta",
    r"\x41[]{,]",
    r"\bword\b",
    "(a{3})+",
    "[^;]*;",
]


@pytest.mark.parametrize(("pattern", "why"), REFUSED)
def test_header_regexes_outside_re2_or_exponential_are_refused_naming_the_field(
    pattern: str, why: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        HeaderRoute(header="X-User", value=pattern, match="regex")
    assert raised.value.field == "header_route.value"
    assert why in raised.value.problem


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_common_re2_header_regexes_are_accepted(pattern: str) -> None:
    assert HeaderRoute(header="X-User", value=pattern, match="regex").value == pattern


def test_exact_and_prefix_values_are_not_read_as_regexes() -> None:
    assert HeaderRoute(header="X-User", value="(a+)+$", match="exact").matches("(a+)+$")
    assert HeaderRoute(header="X-User", value="(?=a", match="prefix").matches("(?=a)b")


def test_a_split_and_a_plan_refuse_a_bad_regex_when_they_are_built() -> None:
    from canarykit import Plan, SetHeaderRoutes

    with pytest.raises(ConfigError, match="backreferences"):
        TrafficSplit(header_routes=[HeaderRoute(header="X", value=r"(a)\1", match="regex")])
    with pytest.raises(ConfigError, match="lookahead"):
        Plan(steps=[SetHeaderRoutes([HeaderRoute(header="X", value="(?=a)a", match="regex")])])


@pytest.mark.parametrize("pattern", ["(a+)+$", r"(a)\1", "(?=a)a"])
def test_render_istio_refuses_a_regex_envoy_cannot_run(pattern: str) -> None:
    err = io.StringIO()
    argv = ["render", "istio", "--name", "app", "--stable", "v1", "--canary", "v2"]
    code = main_with_stderr([*argv, "--header", f"X-User={pattern}"], err)
    assert code == 2
    message = err.getvalue()
    assert "header_route.value" in message and pattern.replace("\\", "\\\\") in message
    assert "Traceback" not in message


def main_with_stderr(argv: list[str], err: io.StringIO) -> int:
    import contextlib

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        return main(argv)


def test_regexes_match_as_re2_does_ascii_classes_and_the_whole_value() -> None:
    route = HeaderRoute(header="X-Id", value=r"\d+", match="regex")
    assert route.matches("123")
    assert not route.matches("١٢٣")  # Arabic-Indic digits: \d is ASCII in RE2
    assert not route.matches("123x")


def test_a_value_longer_than_the_limit_never_matches_a_regex() -> None:
    route = HeaderRoute(header="X-User", value="a*", match="regex")
    assert route.matches("a" * MAX_MATCHED_VALUE)
    assert not route.matches("a" * (MAX_MATCHED_VALUE + 1))


def test_weighted_router_refuses_a_regex_over_its_backtracking_budget() -> None:
    costly = HeaderRoute(header="X-User", value="a*a*a*b", match="regex")
    with pytest.raises(ConfigError) as raised:
        WeightedRouter(initial=TrafficSplit(header_routes=[costly]))
    assert raised.value.field == "initial.header_routes[0].value"
    router = WeightedRouter()
    with pytest.raises(ConfigError, match="backtracks"):
        router.check_split(TrafficSplit(header_routes=[costly]))


def test_the_worst_allowed_regex_costs_milliseconds_in_pick() -> None:
    # Two adjacent unbounded repetitions over the same characters, forced to fail: the
    # most a pattern within the budget can make Python's engine backtrack.
    worst = "a*a*"
    assert backtracking_steps(worst, MAX_MATCHED_VALUE) <= MAX_BACKTRACKING
    route = HeaderRoute(header="X-User", value=worst, match="regex")
    router = WeightedRouter(initial=TrafficSplit(header_routes=[route]))
    for value, budget in (("a" * 30 + "!", 0.005), ("a" * (MAX_MATCHED_VALUE - 1) + "!", 0.5)):
        started = time.perf_counter()
        arm = router.pick({"X-User": value})
        elapsed = time.perf_counter() - started
        assert arm.value == "stable"
        assert elapsed < budget, (len(value), elapsed)


def test_the_reported_exponential_pattern_cannot_reach_pick() -> None:
    # Issue 13: (a+)+$ took 0.89 s on "a" * 24 + "!" and doubled with each "a".
    with pytest.raises(ConfigError):
        check_regex("value", "(a+)+$")


@settings(max_examples=300)
@given(st.text(alphabet="ab()|*+?{}1,[]^$.\\-:=<!>P", max_size=24))
def test_any_pattern_is_accepted_or_refused_by_name_never_crashing(pattern: str) -> None:
    try:
        check_regex("value", pattern)
    except ConfigError as exc:
        assert exc.field == "value"
        return
    steps = backtracking_steps(pattern, 31)
    assert steps >= 1
    if steps <= 10_000:
        # What the in-process budget would allow on a short value stays fast here too.
        started = time.perf_counter()
        re.fullmatch(pattern, "a" * 30 + "!", re.ASCII)
        assert time.perf_counter() - started < 0.5
