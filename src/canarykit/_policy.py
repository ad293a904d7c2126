"""Policy files: a plan, a decider and simulation settings in one TOML document.

How it works: the TOML is parsed (tomllib, or tomli on Python 3.10), then each table is
read through a `PolicyTable`, which knows its dotted key path. Every key is checked
against the keys its table accepts, so a typo is refused by name ("did you mean
'hold'?") instead of being silently ignored; a missing required key is named; a bad
value is a `ConfigError` whose field is the key path, e.g. ``plan.hold``. Values are
then handed to the plan generators and decider classes, which validate them again;
their errors are re-raised with the key path in front (``initial`` becomes
``plan.initial``). Decider kinds are a registry (`register_decider_kind`), so a new
decider adds a builder without touching the loader.

Schema (durations are seconds as a number, or a string such as ``"90s"``, ``"5m"``,
``"1h30m"``, ``"250ms"``; percents are numbers in (0, 100]; indices count from 0)::

    [plan]
    shape = "linear"            # required: linear | exponential | weights | codedeploy | steps
    initial = 10                # linear, exponential: the first canary percent
    step = 20                   # linear: percent added each step (the last one ends at 100)
    factor = 2                  # exponential: growth factor (> 1)
    weights = [1, 5, 25, 50]    # weights: the canary percents in order
    name = "Canary10Percent5Minutes"  # codedeploy: a CodeDeploy configuration name
    hold = "2m"                 # linear, exponential, weights: time at each weight below 100
    final_bake = "5m"           # linear, exponential, weights: time at 100% (default 0)
    analysis_interval = "30s"   # background analysis window; required without analyze steps
    pause_limit = "30m"         # roll back after this long paused (default: wait for ever)
    require_pass = true         # promote only after a passing verdict (default true)
    consecutive_error_limit = 4 # metrics/decider errors in a row before rollback (default 4)

    # shape = "steps": an array of tables, each with exactly one of
    [[plan.steps]]
    set_weight = 10                                     # percent to the canary
    [[plan.steps]]
    pause = "5m"                                        # hold, watched by background analysis
    [[plan.steps]]
    wait_for_promotion = true                           # until an operator promotes
    [[plan.steps]]
    analyze = "5m"                                      # inline analysis that must pass ...
    interval = "1m"                                     # ... one window per interval
                                                        # (default: plan.analysis_interval)
    [[plan.steps]]
    header_route = {header = "User-Agent", regex = ".*Chrome.*"}  # or exact = / prefix =;
                                                        # an array of such tables for several
    [[plan.steps]]
    clear_header_routes = true                          # remove the header routes
    [[plan.steps]]
    mirror = 10                                         # percent copied to the canary; 0 stops

    [decider]
    kind = "threshold"          # required; see decider_kinds()
    failure_limit = 2           # failed checks (over the whole analysis) before rollback
    no_data = "inconclusive"    # fail | inconclusive | ignore
    [[decider.metrics]]         # one or more
    metric = "error_rate"       # requests, errors, error_rate, success_rate, mean_latency,
                                # p50, p95, p99, throughput, or a gauge name
    max = 0.02                  # and/or min; inclusive. Rates also take "2%"; latencies
                                # also take a duration such as "150ms"
    arm = "canary"              # canary (default) | stable

    [simulation]                # optional; used by `canarykit simulate`
    requests_per_second = 100   # total, both arms
    seed = 0

>>> policy = load_policy('''
... [plan]
... shape = "linear"
... initial = 10
... step = 45
... hold = "2m"
... analysis_interval = "30s"
... [decider]
... kind = "threshold"
... [[decider.metrics]]
... metric = "error_rate"
... max = "2%"
... ''')
>>> policy.plan.weights
(10.0, 55.0, 100.0)
>>> policy.decider.bounds
(Bound(metric='error_rate', max=0.02),)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ConfigError
from ._plan import (
    Analyze,
    Pause,
    Plan,
    SetHeaderRoutes,
    SetMirror,
    SetWeight,
    Step,
    WaitForPromotion,
    exponential,
    from_weights,
    linear,
)
from ._protocols import Decider
from ._split import HeaderRoute
from .deciders import Bound, NoDataPolicy, ThresholdDecider
from .presets import codedeploy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    # tomli is a dependency on 3.10 only, so it may be absent where mypy runs.
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "DeciderKind",
    "Policy",
    "PolicyTable",
    "SimulationSettings",
    "decider_kinds",
    "format_duration",
    "load_policy",
    "parse_duration",
    "register_decider_kind",
]

_MISSING: Any = object()


def _error(field: str, problem: str, value: Any = _MISSING) -> ConfigError:
    """Build a ConfigError; without a value its message leaves out the ", got ..." tail."""
    exc = ConfigError(field, None if value is _MISSING else value, problem)
    if value is _MISSING:
        # "plan.hold: is required" reads better than "plan.hold: is required, got None".
        exc.args = (f"{field}: {problem}",)
    return exc


# ---------------------------------------------------------------------------------------
# Durations

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = "must be a duration such as 90, '90s', '5m' or '1h30m'"


def parse_duration(field: str, value: Any, *, allow_zero: bool = False) -> float:
    """Seconds from a number of seconds or a string like ``"90s"``, ``"1h30m"``, ``"250ms"``.

    Raises `ConfigError` naming `field` for anything else, and for negative durations
    (or zero, unless `allow_zero`).

    >>> parse_duration("hold", "1h30m"), parse_duration("hold", "250ms"), parse_duration("hold", 90)
    (5400.0, 0.25, 90.0)
    """
    seconds: float
    if isinstance(value, bool):
        raise ConfigError(field, value, _DURATION_HELP)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            # A bare number in a string is seconds, like a bare number outside one.
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(field, value, text)
        if text.lower() in {"nan", "inf", "+inf", "-inf", "infinity"}:
            raise ConfigError(field, value, _DURATION_HELP)
    else:
        raise ConfigError(field, value, _DURATION_HELP)
    if not math.isfinite(seconds):
        raise ConfigError(field, value, "must be finite")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(field, value, "must be >= 0" if allow_zero else "must be > 0")
    return seconds


def _parse_units(field: str, value: str, text: str) -> float:
    seconds = 0.0
    position = 0
    while position < len(text):
        found = _DURATION_PART.match(text, position)
        if found is None:
            raise ConfigError(field, value, _DURATION_HELP)
        number, unit = found.groups()
        # Divide for milliseconds so that "100ms" is exactly 0.1, as a person wrote it.
        seconds += float(number) / 1000 if unit == "ms" else float(number) * _UNIT_SECONDS[unit]
        position = found.end()
    if position == 0:
        raise ConfigError(field, value, _DURATION_HELP)
    return seconds


def format_duration(seconds: float) -> str:
    """Write `seconds` as the shortest string `parse_duration` reads back, e.g. ``"1h30m"``.

    >>> format_duration(5400), format_duration(0.25), format_duration(90), format_duration(0)
    ('1h30m', '250ms', '1m30s', '0s')
    """
    millis = round(seconds * 1000)
    if millis < 0 or abs(millis / 1000 - seconds) > 1e-9:
        return f"{seconds!r}s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    parts = [
        f"{amount}{unit}"
        for amount, unit in ((hours, "h"), (minutes, "m"), (whole, "s"), (millis, "ms"))
        if amount
    ]
    return "".join(parts) or "0s"


# ---------------------------------------------------------------------------------------
# Reading tables


@contextlib.contextmanager
def _prefixed(prefix: str, rename: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise a constructor's ConfigError with the policy key path in front of its field."""
    try:
        yield
    except ConfigError as exc:
        field = exc.field
        for old, new in (rename or {}).items():
            if field == old or field.startswith((old + ".", old + "[")):
                field = new + field[len(old) :]
                break
        new_exc = ConfigError(f"{prefix}.{field}" if field else prefix, exc.value, exc.problem)
        raise new_exc from None


def _kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class PolicyTable:
    """One table of a policy file being read: typed getters that name the key path.

    Decider builders receive the ``[decider]`` table as a `PolicyTable`: they first call
    `check_keys` with the keys they accept, then read values with the getters, each of
    which raises `ConfigError` naming the dotted path of the key. A getter given a
    `default` returns it, unchecked, when the key is absent; without one, an absent key
    is an error ("is required").

    >>> table = PolicyTable({"hold": "2m"}, "plan")
    >>> table.duration("hold")
    120.0
    >>> table.duration("final_bake", default=0.0)
    0.0
    """

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def __repr__(self) -> str:
        return f"PolicyTable(path={self.path!r}, keys={sorted(self.data)!r})"

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def field(self, key: str) -> str:
        """Return the dotted path of `key` in this table, e.g. ``plan.hold``."""
        return f"{self.path}.{key}" if self.path else key

    def check_keys(
        self, allowed: Collection[str], *, elsewhere: Mapping[str, str] | None = None
    ) -> None:
        """Refuse any key not in `allowed`; `elsewhere` maps a known key to why it is not."""
        for key in self.data:
            if key in allowed:
                continue
            if elsewhere and key in elsewhere:
                raise _error(self.field(key), elsewhere[key])
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected {_one_of(allowed)}"
            raise _error(self.field(key), f"is not a known key ({hint})")

    def raw(self, key: str, default: Any = _MISSING, *, needed_for: str = "") -> Any:
        """Return the value of `key` as parsed; raise if it is missing and has no default."""
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise _error(self.field(key), f"is required{needed_for}")
        return default

    def number(self, key: str, default: Any = _MISSING, *, above: float | None = None) -> float:
        """Read a finite number (integer or float), greater than `above` when given."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.field(key), value, "must be a number")
        if not math.isfinite(value):
            raise ConfigError(self.field(key), value, "must be finite")
        if above is not None and not value > above:
            raise ConfigError(self.field(key), value, f"must be > {above:g}")
        return float(value)

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
        """Read an integer, at least `minimum` when given."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.field(key), value, "must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(self.field(key), value, f"must be an integer >= {minimum}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        """Read ``true`` or ``false``."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if not isinstance(value, bool):
            raise ConfigError(self.field(key), value, "must be true or false")
        return value

    def string(self, key: str, default: Any = _MISSING) -> str:
        """Read a non-empty string."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.field(key), value, "must be a non-empty string")
        return value

    def choice(self, key: str, choices: Collection[str], default: Any = _MISSING) -> str:
        """Read one of `choices`."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if value not in choices:
            raise ConfigError(self.field(key), value, f"must be {_one_of(choices)}")
        return str(value)

    def duration(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        allow_zero: bool = False,
        needed_for: str = "",
    ) -> float:
        """Read a duration in seconds (see `parse_duration`)."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key, needed_for=needed_for)
        return parse_duration(self.field(key), value, allow_zero=allow_zero)

    def table(self, key: str) -> PolicyTable:
        """Read a sub-table, e.g. ``[plan]``."""
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise ConfigError(self.field(key), value, f"must be a table ([{self.field(key)}])")
        return PolicyTable(value, self.field(key))

    def tables(self, key: str, *, needed_for: str = "") -> list[PolicyTable]:
        """Read a non-empty array of tables, e.g. ``[[decider.metrics]]``."""
        value = self.raw(key, needed_for=needed_for)
        where = self.field(key)
        if not isinstance(value, list):
            raise ConfigError(where, value, f"must be an array of tables ([[{where}]])")
        if not value:
            raise ConfigError(where, value, f"must hold at least one table ([[{where}]])")
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}[{index}]", item, "must be a table")
            result.append(PolicyTable(item, f"{where}[{index}]"))
        return result


def _one_of(choices: Collection[str]) -> str:
    quoted = [repr(c) for c in choices]
    if len(quoted) == 1:
        return quoted[0]
    return "one of " + ", ".join(quoted)


# ---------------------------------------------------------------------------------------
# The decider registry


@attrs.frozen(kw_only=True)
class DeciderKind:
    """How one ``[decider] kind`` is read from and written to a policy file.

    `build` turns the ``[decider]`` table into a decider; `dump` (optional) turns a
    decider of one of `types` back into the table's keys (``kind`` included) for
    `Policy.to_toml`.
    """

    name: str
    build: Callable[[PolicyTable], Decider]
    dump: Callable[[Any], dict[str, Any]] | None = None
    types: tuple[type, ...] = ()


_DECIDER_KINDS: dict[str, DeciderKind] = {}


def register_decider_kind(
    name: str,
    build: Callable[[PolicyTable], Decider],
    *,
    dump: Callable[[Any], dict[str, Any]] | None = None,
    types: tuple[type, ...] = (),
) -> DeciderKind:
    """Make ``[decider] kind = name`` build a decider with `build` (replacing any before).

    >>> from canarykit.deciders import bound, threshold
    >>> def always_low_errors(table):
    ...     table.check_keys({"kind"})
    ...     return threshold(bound("error_rate", max=0.01))
    >>> register_decider_kind("low_errors", always_low_errors).name
    'low_errors'
    >>> "low_errors" in decider_kinds()
    True
    >>> _ = _DECIDER_KINDS.pop("low_errors")
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError("name", name, "must be a lower-case identifier such as 'threshold'")
    kind = DeciderKind(name=name, build=build, dump=dump, types=types)
    _DECIDER_KINDS[name] = kind
    return kind


def decider_kinds() -> tuple[str, ...]:
    """Return the ``[decider] kind`` names a policy file may use, sorted."""
    return tuple(sorted(_DECIDER_KINDS))


_RATES = ("error_rate", "success_rate")
_LATENCIES = ("mean_latency", "p50", "p95", "p99")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*$")


def _limit(table: PolicyTable, key: str, metric: str) -> float | None:
    value = table.raw(key, None)
    if value is None:
        return None
    if isinstance(value, str) and metric in _RATES:
        found = _PERCENT.match(value)
        if found is None:
            raise ConfigError(table.field(key), value, "must be a fraction or a percent like '2%'")
        return float(found.group(1)) / 100
    if isinstance(value, str) and metric in _LATENCIES:
        return parse_duration(table.field(key), value, allow_zero=True)
    return table.number(key)


def _build_threshold(table: PolicyTable) -> Decider:
    table.check_keys({"kind", "failure_limit", "no_data", "metrics"})
    failure_limit = table.integer("failure_limit", 1, minimum=1)
    no_data = table.choice("no_data", [p.value for p in NoDataPolicy], "inconclusive")
    bounds = []
    for item in table.tables("metrics"):
        item.check_keys({"metric", "min", "max", "arm"})
        metric = item.string("metric")
        low, high = _limit(item, "min", metric), _limit(item, "max", metric)
        if low is None and high is None:
            raise _error(item.path, "needs min, max or both")
        arm = item.choice("arm", ("canary", "stable"), "canary")
        with _prefixed(item.path):
            bounds.append(Bound(metric=metric, min=low, max=high, arm=arm))
    with _prefixed(table.path):
        return ThresholdDecider(bounds=bounds, failure_limit=failure_limit, no_data=no_data)


def _dump_threshold(decider: ThresholdDecider) -> dict[str, Any]:
    metrics = []
    for item in decider.bounds:
        entry: dict[str, Any] = {"metric": item.metric}
        if item.min is not None:
            entry["min"] = item.min
        if item.max is not None:
            entry["max"] = item.max
        entry["arm"] = item.arm.name.lower()
        metrics.append(entry)
    return {
        "kind": "threshold",
        "failure_limit": decider.failure_limit,
        "no_data": decider.no_data.value,
        "metrics": metrics,
    }


register_decider_kind(
    "threshold", _build_threshold, dump=_dump_threshold, types=(ThresholdDecider,)
)


# ---------------------------------------------------------------------------------------
# The plan

_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # shape: (required keys, optional keys)
    "linear": (("initial", "step", "hold"), ("final_bake",)),
    "exponential": (("initial", "factor", "hold"), ("final_bake",)),
    "weights": (("weights", "hold"), ("final_bake",)),
    "codedeploy": (("name",), ()),
    "steps": (("steps",), ()),
}
_PLAN_COMMON = (
    "shape",
    "analysis_interval",
    "pause_limit",
    "require_pass",
    "consecutive_error_limit",
)
_STEP_KINDS = (
    "set_weight",
    "pause",
    "wait_for_promotion",
    "analyze",
    "header_route",
    "clear_header_routes",
    "mirror",
)
_HEADER_MATCHES = ("exact", "prefix", "regex")


def _read_plan(table: PolicyTable) -> Plan:
    shape = table.choice("shape", tuple(_SHAPES))
    required, optional = _SHAPES[shape]
    takes = required + optional
    elsewhere = {
        key: f"is not used by shape {shape!r} (it takes {', '.join(takes)})"
        for other, (req, opt) in _SHAPES.items()
        if other != shape
        for key in req + opt
        if key not in takes
    }
    table.check_keys(_PLAN_COMMON + takes, elsewhere=elsewhere)
    needed = f" for shape {shape!r}"
    for key in required:
        table.raw(key, needed_for=needed)

    options: dict[str, Any] = {}
    if "analysis_interval" in table:
        options["analysis_interval"] = table.duration("analysis_interval")
    if "pause_limit" in table:
        options["pause_limit"] = table.duration("pause_limit")
    if "require_pass" in table:
        options["require_pass"] = table.boolean("require_pass")
    if "consecutive_error_limit" in table:
        options["consecutive_error_limit"] = table.integer("consecutive_error_limit", minimum=1)

    plan: Plan
    if shape == "steps":
        steps = _read_steps(table, options.get("analysis_interval"))
        with _prefixed(table.path):
            plan = Plan(steps=steps, **options)
    elif shape == "codedeploy":
        name = table.string("name")
        with _prefixed(table.path):
            plan = codedeploy(name, **options)
    else:
        hold = table.duration("hold", allow_zero=True)
        bake = table.duration("final_bake", 0.0, allow_zero=True)
        if shape == "weights" and not isinstance(table.raw("weights"), list):
            raise ConfigError(table.field("weights"), table.raw("weights"), "must be an array")
        with _prefixed(table.path):
            # The generators validate percents and factors themselves; _prefixed puts
            # "plan." in front of the field they name.
            if shape == "linear":
                initial, step = table.raw("initial"), table.raw("step")
                plan = linear(initial, step, hold=hold, final_bake=bake, **options)
            elif shape == "exponential":
                initial, factor = table.raw("initial"), table.raw("factor")
                plan = exponential(initial, factor, hold=hold, final_bake=bake, **options)
            else:
                plan = from_weights(table.raw("weights"), hold=hold, final_bake=bake, **options)

    if plan.analysis_interval is None and not any(isinstance(s, Analyze) for s in plan.steps):
        raise _error(
            table.field("analysis_interval"),
            "is required unless the plan has analyze steps (otherwise the decider never "
            "looks at the canary)",
        )
    return plan


def _read_steps(table: PolicyTable, analysis_interval: float | None) -> list[Step]:
    steps: list[Step] = []
    for item in table.tables("steps", needed_for=" for shape 'steps'"):
        present = [key for key in _STEP_KINDS if key in item]
        if len(present) != 1:
            problem = f"needs exactly one of {', '.join(_STEP_KINDS)}"
            raise ConfigError(item.path, sorted(item.data), problem)
        kind = present[0]
        item.check_keys(
            (kind, "interval") if kind == "analyze" else (kind,),
            elsewhere={"interval": "is only used with analyze"},
        )
        steps.append(_read_step(item, kind, analysis_interval))
    return steps


def _read_step(item: PolicyTable, kind: str, analysis_interval: float | None) -> Step:
    if kind == "set_weight":
        with _prefixed(item.path, {"percent": kind}):
            return SetWeight(item.raw(kind))
    if kind == "pause":
        return Pause(item.duration(kind))
    if kind == "wait_for_promotion":
        if item.boolean(kind) is not True:
            raise ConfigError(item.field(kind), False, "must be true (leave the step out instead)")
        return WaitForPromotion()
    if kind == "analyze":
        seconds = item.duration(kind)
        if "interval" in item or analysis_interval is None:
            interval = item.duration("interval", needed_for=" (or set plan.analysis_interval)")
        else:
            interval = analysis_interval
        with _prefixed(item.path, {"seconds": kind}):
            return Analyze(seconds, interval)
    if kind == "header_route":
        # Typed as Any: the attrs plugin cannot type SetHeaderRoutes' `converter=tuple`.
        routes: Any = tuple(_read_routes(item))
        return SetHeaderRoutes(routes)
    if kind == "clear_header_routes":
        if item.boolean(kind) is not True:
            raise ConfigError(item.field(kind), False, "must be true (leave the step out instead)")
        return SetHeaderRoutes(())
    assert kind == "mirror"
    with _prefixed(item.path, {"percent": kind}):
        return SetMirror(item.raw(kind))


def _read_routes(item: PolicyTable) -> list[HeaderRoute]:
    value = item.raw("header_route")
    if isinstance(value, Mapping):
        tables = [PolicyTable(value, item.field("header_route"))]
    elif isinstance(value, list):
        tables = item.tables("header_route")
    else:
        raise ConfigError(
            item.field("header_route"),
            value,
            "must be a table such as {header = 'User-Agent', regex = '.*Chrome.*'}",
        )
    routes = []
    for route in tables:
        route.check_keys(("header", *_HEADER_MATCHES))
        header = route.string("header")
        matches = [key for key in _HEADER_MATCHES if key in route]
        if len(matches) != 1:
            raise _error(route.path, "needs exactly one of exact, prefix, regex")
        match = matches[0]
        with _prefixed(route.path, {"header_route.header": "header", "header_route.value": match}):
            routes.append(HeaderRoute(header=header, value=route.raw(match), match=match))
    return routes


# ---------------------------------------------------------------------------------------
# The policy


def _int_to_float(value: Any) -> Any:
    # 100 and 100.0 are the same rate; keep bools and strings for the validator to refuse.
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _positive_rate(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("requests_per_second", value, "must be a number")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("requests_per_second", value, "must be a finite number > 0")


def _integer_seed(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("seed", value, "must be an integer")


@attrs.frozen(kw_only=True)
class SimulationSettings:
    """How ``canarykit simulate`` drives a policy: total traffic and the random seed.

    >>> SimulationSettings()
    SimulationSettings(requests_per_second=100.0, seed=0)
    """

    requests_per_second: float = attrs.field(
        default=100.0, converter=_int_to_float, validator=_positive_rate
    )
    seed: int = attrs.field(default=0, validator=_integer_seed)


@attrs.frozen(kw_only=True)
class Policy:
    """A deploy policy: the plan, the decider that judges it, and simulation settings.

    Load one from TOML with `load_policy`; write one back with `to_toml`.
    """

    plan: Plan
    decider: Decider
    simulation: SimulationSettings = attrs.field(factory=SimulationSettings)

    def to_toml(self) -> str:
        """Write the policy as TOML that `load_policy` reads back to an equal policy.

        The plan is written as ``shape = "steps"`` (a generator's shape is not kept);
        the decider through its kind's ``dump``.
        """
        lines = ["[plan]", 'shape = "steps"']
        plan = self.plan
        if plan.analysis_interval is not None:
            lines.append(f"analysis_interval = {_toml_duration(plan.analysis_interval)}")
        if plan.pause_limit is not None:
            lines.append(f"pause_limit = {_toml_duration(plan.pause_limit)}")
        lines.append(f"require_pass = {_toml_value(plan.require_pass)}")
        lines.append(f"consecutive_error_limit = {plan.consecutive_error_limit}")
        for index, step in enumerate(plan.steps):
            lines += ["", "[[plan.steps]]", *_step_lines(index, step)]
        lines += ["", "[decider]", *_decider_lines(self.decider)]
        lines += [
            "",
            "[simulation]",
            f"requests_per_second = {_toml_value(self.simulation.requests_per_second)}",
            f"seed = {self.simulation.seed}",
        ]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_duration(seconds: float) -> str:
    text = format_duration(seconds)
    # Fall back to plain seconds when the short form would not read back exactly.
    exact = parse_duration("", text, allow_zero=True) == seconds
    return json.dumps(text) if exact else repr(seconds)


def _step_lines(index: int, step: Step) -> list[str]:
    if isinstance(step, SetWeight):
        return [f"set_weight = {step.percent!r}"]
    if isinstance(step, Pause):
        return [f"pause = {_toml_duration(step.seconds)}"]
    if isinstance(step, WaitForPromotion):
        return ["wait_for_promotion = true"]
    if isinstance(step, Analyze):
        if step.decider is not None:
            raise ConfigError(
                f"plan.steps[{index}].decider", step.decider, "cannot be written to a policy file"
            )
        return [
            f"analyze = {_toml_duration(step.seconds)}",
            f"interval = {_toml_duration(step.interval)}",
        ]
    if isinstance(step, SetHeaderRoutes):
        if not step.routes:
            return ["clear_header_routes = true"]
        routes = [{"header": r.header, r.match.value: r.value} for r in step.routes]
        return [f"header_route = {_toml_value(routes)}"]
    assert isinstance(step, SetMirror)
    return [f"mirror = {step.percent!r}"]


def _decider_lines(decider: Decider) -> list[str]:
    for kind in _DECIDER_KINDS.values():
        if kind.dump is not None and isinstance(decider, kind.types):
            data = kind.dump(decider)
            break
    else:
        raise ConfigError("decider", decider, "has no registered decider kind that can write it")
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables += [(key, v) for v in value]
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[[decider.{key}]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return lines


def _read_simulation(table: PolicyTable) -> SimulationSettings:
    table.check_keys(("requests_per_second", "seed"))
    rate = table.number("requests_per_second", 100.0, above=0)
    seed = table.integer("seed", 0)
    with _prefixed(table.path):
        return SimulationSettings(requests_per_second=rate, seed=seed)


def _read_policy(data: Mapping[str, Any]) -> Policy:
    top = PolicyTable(data, "")
    top.check_keys(("plan", "decider", "simulation"))
    plan = _read_plan(top.table("plan"))
    decider_table = top.table("decider")
    kinds = decider_kinds()
    kind = decider_table.choice("kind", kinds)
    decider = _DECIDER_KINDS[kind].build(decider_table)
    if "simulation" in top:
        simulation = _read_simulation(top.table("simulation"))
    else:
        simulation = SimulationSettings()
    return Policy(plan=plan, decider=decider, simulation=simulation)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        if found is None:
            raise _error(source, f"is not valid TOML ({message})") from None
        line, column = int(found.group(1)), int(found.group(2))
        lines = text.splitlines()
        problem = f"invalid TOML at line {line}, column {column}: {message[: found.start()]}"
        if 0 < line <= len(lines):
            raise ConfigError(source, lines[line - 1].strip(), problem) from None
        raise _error(source, problem) from None
    return data


def _looks_like_path(text: str) -> bool:
    # A policy's TOML always holds "=" or a "[table]" header (or is a multi-line text);
    # a path holds none of these in practice.
    stripped = text.strip()
    return bool(stripped) and "\n" not in text and "=" not in text and not stripped.startswith("[")


def load_policy(source: str | os.PathLike[str]) -> Policy:
    """Read a policy from a TOML file, or from TOML text.

    `source` is a path (a `pathlib.Path`, or a string such as ``"policy.toml"``) or the
    TOML itself (a string holding a newline, ``=`` or a ``[table]`` header). Anything
    wrong raises `ConfigError` naming the key path (``plan.hold``), or the file and line
    for a TOML syntax error.
    """
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _error(str(path), f"cannot read the policy file ({reason})") from None
        name = str(path)
    elif isinstance(source, str):
        text, name = source, "policy"
    else:
        raise ConfigError("source", source, "must be a path or TOML text")
    return _read_policy(_parse_toml(text, name))
