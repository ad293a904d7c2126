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
    kind = "threshold"          # required: threshold | relative | sequential | kayenta |
                                # all | any (see decider_kinds())
    failure_limit = 2           # failed checks (over the whole analysis) before rollback
    no_data = "inconclusive"    # fail | inconclusive | ignore
    [[decider.metrics]]         # one or more
    metric = "error_rate"       # requests, errors, error_rate, success_rate, mean_latency,
                                # p50, p95, p99, throughput, or a gauge name
    max = 0.02                  # and/or min; inclusive. Rates also take "2%"; latencies
                                # also take a duration such as "150ms"
    arm = "canary"              # canary (default) | stable

    # kind = "relative": each metric of the canary against the stable one, per window
    [decider]
    kind = "relative"
    no_data = "inconclusive"    # fail | inconclusive | ignore
    [[decider.metrics]]         # one or more, each with at least one limit
    metric = "error_rate"       # as for threshold
    max_ratio = 1.5             # canary <= 1.5 x stable (>= 1); min_ratio in (0, 1] bounds a fall
    max_increase = "0.5%"       # canary <= stable + 0.5 points; max_decrease bounds a fall.
                                # Rates also take "0.5%", latencies a duration ("20ms")
    min_difference = "0.1%"     # changes this small always pass (default 0)
    min_requests = 100          # per arm, before the metric is judged (default 0)
    direction = "increase"      # increase | decrease | either; default: what the limits say

    # kind = "sequential": anytime-valid tests, checked every window at no extra risk
    [decider]
    kind = "sequential"
    alpha = 0.01                # false-rollback probability per rollout, per test (<= 0.5)
    errors = true               # test the canary's error rate against stable (default true)
    latency_quantiles = ["p50", "p95", "p99"]  # or [0.5, 0.95, 0.99]; absent or [] = no
                                # latency test (then errors must be true)
    latency_margin = 0.0        # slowdown tolerated, relative (0.05 = 5%; default 0)
    min_samples = 100           # latencies per arm before the latency test judges
    min_errors = 0              # errors in both arms together before the error test judges
    early_pass = true           # pass early once a regression is ruled out (default false)
    error_margin = 0.2          # with early_pass: the error-rate ratio ruled out is 1 + this

    # kind = "kayenta": Kayenta's Mann-Whitney judge with group scores
    [decider]
    kind = "kayenta"
    judge_every = 60            # windows between judgements (NOT_YET in between)
    min_points = 50             # points per arm (latency: requests) before judging
    max_points = 360            # points kept per arm and metric
    marginal = 75               # a score <= this fails
    pass = 95                   # a score >= this passes; in between is inconclusive
    nodata_fail_percent = 50    # score 0 when this share of metrics has no data; false: never
    groups = {errors = 60, latency = 40}  # group weights ([decider.groups] works too);
                                # groups without one share what is left of 100
    [[decider.metrics]]         # one or more
    metric = "error_rate"       # a metric as for threshold, or "latency" (the histogram)
    direction = "increase"      # increase | decrease | either (default)
    allowed_increase = 1.1      # mean ratio a High needs (>= 1; default 1)
    allowed_decrease = 1.0      # mean ratio a Low needs (in (0, 1]; default 1)
    critical = true             # a High/Low/Nodata fails the whole judgement (default false)
    critical_increase = 1.5     # with critical: the mean ratio that is critical (default 1)
    critical_decrease = 0.5
    must_have_data = false      # no data is a failure (NodataFailure)
    nan_strategy = "remove"     # remove | replace (missing points become 0)
    outliers = "remove"         # remove (beyond 3 IQR) | keep
    group = "errors"            # default: the metric's name
    confidence = 0.98           # of the Hodges-Lehmann interval
    tolerance = 0.25            # of the shift, relative to its estimate
    [[decider.metrics]]
    metric = "latency"          # the latency histograms, compared as a whole
    direction = "increase"
    group = "latency"

    # kind = "all" (every member must pass: the worst verdict wins) or "any" (the best wins)
    [decider]
    kind = "all"
    [[decider.members]]         # two or more, each a decider table with its own kind
    kind = "sequential"
    [[decider.members]]
    kind = "relative"
    [[decider.members.metrics]]
    metric = "p99"
    max_ratio = 1.2

    # Limits (Argo Rollouts' measurement limits), for any kind above: given any of these,
    # the decider is wrapped in limited(...). A kind refuses, by name, those it has no use
    # for: threshold counts failed checks with its own failure_limit and its FAIL is final
    # (no consecutive_failures); a failed sequential test stays failed and is never
    # inconclusive (only consecutive_success_limit and dry_run); all / any take failure
    # counts on their members; a run (consecutive_*) is refused around a Kayenta judge
    # with judge_every > 1, whose NOT_YET between judgements would restart every run.
    failure_limit = 3           # FAIL windows (in all) before rollback (default 1)
    consecutive_failures = 2    # FAIL windows in a row before rollback
    inconclusive_limit = 2      # INCONCLUSIVE windows (in all) before pausing (default 1)
    consecutive_success_limit = 3  # PASS windows in a row before a PASS (default 1)
    dry_run = false             # judge and report, but always PASS (never acted on)

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
from decimal import Decimal
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
from .deciders import (
    AllOf,
    AnyOf,
    Bound,
    Direction,
    KayentaJudge,
    KayentaMetric,
    Limits,
    NoDataPolicy,
    RelativeDecider,
    SequentialErrors,
    SequentialLatency,
    ThresholdDecider,
    all_of,
    any_of,
    compare,
    kayenta,
    kayenta_metric,
    limited,
    relative,
    sequential_errors,
    sequential_latency,
)
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
    `Policy.to_toml`, or returns None for a decider of those types that this kind does
    not write (the next kind whose `types` match is tried). A value that is a list of
    tables is written as an array of tables (``[[decider.metrics]]``), nested ones too.
    """

    name: str
    build: Callable[[PolicyTable], Decider]
    dump: Callable[[Any], dict[str, Any] | None] | None = None
    types: tuple[type, ...] = ()


_DECIDER_KINDS: dict[str, DeciderKind] = {}


def register_decider_kind(
    name: str,
    build: Callable[[PolicyTable], Decider],
    *,
    dump: Callable[[Any], dict[str, Any] | None] | None = None,
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


def _build_decider(table: PolicyTable) -> Decider:
    """Build the decider of a ``[decider]`` table (or a member's table) from its kind."""
    kind = table.choice("kind", decider_kinds())
    return _DECIDER_KINDS[kind].build(table)


# --- limits: limited(...) around any built-in kind ---------------------------------------

_LIMIT_KEYS = (
    "failure_limit",
    "consecutive_failures",
    "inconclusive_limit",
    "consecutive_success_limit",
    "dry_run",
)
_FINAL = (
    "is not used by kind {kind!r}: its FAIL is final (a {what} that has failed stays "
    "failed), so counting failed windows would only delay the rollback"
)
_ON_MEMBERS = (
    "is not used by kind {kind!r}: failures are counted per member; set it in the "
    "member's table ([[decider.members]])"
)
# For each built-in kind, the limit keys it refuses and why; every other limit key wraps
# the decider in limited(). (kind = "threshold" keeps failure_limit as its own key.)
_LIMIT_REFUSALS: dict[str, dict[str, str]] = {
    "threshold": {
        "consecutive_failures": _FINAL.format(kind="threshold", what="threshold decider")
        + " (failure_limit counts failed checks over the whole analysis)",
    },
    "relative": {},
    "sequential": {
        "failure_limit": _FINAL.format(kind="sequential", what="sequential test")
        + "; alpha sets how sure it must be",
        "consecutive_failures": _FINAL.format(kind="sequential", what="sequential test")
        + "; alpha sets how sure it must be",
        "inconclusive_limit": "is not used by kind 'sequential': a sequential test is never "
        "inconclusive",
    },
    "kayenta": {},
    "all": {
        "failure_limit": _ON_MEMBERS.format(kind="all"),
        "consecutive_failures": _ON_MEMBERS.format(kind="all"),
    },
    "any": {
        "failure_limit": _ON_MEMBERS.format(kind="any"),
        "consecutive_failures": _ON_MEMBERS.format(kind="any"),
    },
}
_RUN_KEYS = ("consecutive_failures", "consecutive_success_limit")


def _own_limit_keys(kind: str) -> tuple[str, ...]:
    return ("failure_limit",) if kind == "threshold" else ()


def _intermittent(decider: Decider) -> bool:
    """Whether `decider` says NOT_YET between judgements (Kayenta with judge_every > 1)."""
    if isinstance(decider, KayentaJudge):
        return decider.judge_every > 1
    if isinstance(decider, Limits):
        return _intermittent(decider.decider)
    if isinstance(decider, AllOf):
        return any(_intermittent(member) for member in decider.deciders)
    if isinstance(decider, AnyOf):
        return all(_intermittent(member) for member in decider.deciders)
    return False


def _limit_refusal(kind: str, key: str, decider: Decider) -> str | None:
    """Why `key` cannot wrap `decider` (of `kind`) in limited(), or None if it can."""
    if key in _own_limit_keys(kind):
        return f"is kind {kind!r}'s own key"
    refused = _LIMIT_REFUSALS[kind].get(key)
    if refused is not None:
        return refused
    if key in _RUN_KEYS and _intermittent(decider):
        return (
            "cannot be reached: a Kayenta judgement comes only every judge_every windows, "
            "NOT_YET in between, and any other verdict restarts a run (use judge_every = 1, "
            "or failure_limit)"
        )
    return None


def _check_decider_keys(table: PolicyTable, kind: str, own: Collection[str]) -> None:
    """Refuse unknown keys, and the limit keys `kind` does not take, by name."""
    refusals = _LIMIT_REFUSALS[kind]
    limits = tuple(key for key in _LIMIT_KEYS if key not in refusals and key not in own)
    table.check_keys((*own, *limits), elsewhere=refusals)


def _with_limits(table: PolicyTable, kind: str, decider: Decider) -> Decider:
    """Wrap `decider` in limited() when the table gives any limit key (else return it)."""
    own = _own_limit_keys(kind)
    keys = [key for key in _LIMIT_KEYS if key in table and key not in own]
    if not keys:
        return decider
    options: dict[str, Any] = {}
    for key in keys:
        reason = _limit_refusal(kind, key, decider)
        if reason is not None:
            raise _error(table.field(key), reason)
        if key == "dry_run":
            options[key] = table.boolean(key)
        else:
            options[key] = table.integer(key, minimum=1)
    with _prefixed(table.path):
        return limited(decider, **options)


def _dump_limits(decider: Limits, path: str) -> dict[str, Any]:
    inner = decider.decider
    if isinstance(inner, Limits):
        raise ConfigError(
            path, decider, "nests limited() in limited(), which one decider table cannot hold"
        )
    data = _dump_decider(inner, path)
    kind = data.get("kind")
    if kind not in _LIMIT_REFUSALS:
        raise ConfigError(
            path, decider, f"wraps a decider of kind {kind!r} in limited(), which it cannot hold"
        )
    assert isinstance(kind, str)
    values: dict[str, Any] = {
        "failure_limit": decider.failure_limit,
        "consecutive_failures": decider.consecutive_failures,
        "inconclusive_limit": decider.inconclusive_limit,
        "consecutive_success_limit": decider.consecutive_success_limit,
        "dry_run": decider.dry_run,
    }
    defaults: dict[str, Any] = {
        "failure_limit": 1 if decider.consecutive_failures is None else None,
        "consecutive_failures": None,
        "inconclusive_limit": 1,
        "consecutive_success_limit": 1,
        "dry_run": False,
    }
    limits: dict[str, Any] = {}
    for key in _LIMIT_KEYS:
        value = values[key]
        reason = _limit_refusal(kind, key, inner)
        if reason is None:
            if value is not None:
                limits[key] = value
        elif value != defaults[key]:
            raise ConfigError(
                f"{path}.{key}",
                value,
                f"cannot be written for kind {kind!r} (in a policy file it {reason})",
            )
    # Scalars first: the writer puts arrays of tables after them anyway.
    return {**data, **limits}


# --- kind = "threshold" ------------------------------------------------------------------


def _build_threshold(table: PolicyTable) -> Decider:
    _check_decider_keys(table, "threshold", ("kind", "failure_limit", "no_data", "metrics"))
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
        decider = ThresholdDecider(bounds=bounds, failure_limit=failure_limit, no_data=no_data)
    return _with_limits(table, "threshold", decider)


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


# --- kind = "relative" -------------------------------------------------------------------

_RATIO_KEYS = ("max_ratio", "min_ratio")
_DIFFERENCE_KEYS = ("max_increase", "max_decrease")
_COMPARISON_KEYS = (
    "metric",
    *_RATIO_KEYS,
    *_DIFFERENCE_KEYS,
    "direction",
    "min_difference",
    "min_requests",
)


_THRESHOLD_ONLY = {
    "max": "is a threshold key; kind 'relative' limits the change: max_ratio or max_increase",
    "min": "is a threshold key; kind 'relative' limits the change: min_ratio or max_decrease",
    "arm": "is a threshold key; kind 'relative' compares the canary with the stable arm",
}


def _build_relative(table: PolicyTable) -> Decider:
    _check_decider_keys(table, "relative", ("kind", "no_data", "metrics"))
    no_data = table.choice("no_data", [p.value for p in NoDataPolicy], "inconclusive")
    comparisons = []
    for item in table.tables("metrics"):
        item.check_keys(_COMPARISON_KEYS, elsewhere=_THRESHOLD_ONLY)
        metric = item.string("metric")
        options: dict[str, Any] = {}
        for key in _RATIO_KEYS:
            if key in item:
                options[key] = item.number(key)
        for key in (*_DIFFERENCE_KEYS, "min_difference"):
            value = _limit(item, key, metric)
            if value is not None:
                options[key] = value
        if not any(key in options for key in (*_RATIO_KEYS, *_DIFFERENCE_KEYS)):
            raise _error(
                item.path, "needs a limit: max_ratio, max_increase, min_ratio or max_decrease"
            )
        if "direction" in item:
            options["direction"] = item.choice("direction", [d.value for d in Direction])
        if "min_requests" in item:
            options["min_requests"] = item.integer("min_requests", minimum=0)
        with _prefixed(item.path):
            comparisons.append(compare(metric, **options))
    with _prefixed(table.path, {"comparisons": "metrics"}):
        decider = relative(*comparisons, no_data=no_data)
    return _with_limits(table, "relative", decider)


def _dump_relative(decider: RelativeDecider) -> dict[str, Any]:
    metrics = []
    for item in decider.comparisons:
        # The direction always agrees with the limits (Comparison checks it), so the
        # limits alone give it back.
        entry: dict[str, Any] = {"metric": item.metric}
        for key in (*_RATIO_KEYS, *_DIFFERENCE_KEYS):
            value = getattr(item, key)
            if value is not None:
                entry[key] = value
        if item.min_difference:
            entry["min_difference"] = item.min_difference
        if item.min_requests:
            entry["min_requests"] = item.min_requests
        metrics.append(entry)
    return {"kind": "relative", "no_data": decider.no_data.value, "metrics": metrics}


# --- kind = "sequential" -----------------------------------------------------------------

_SEQUENTIAL_KEYS = (
    "kind",
    "alpha",
    "errors",
    "latency_quantiles",
    "latency_margin",
    "min_samples",
    "min_errors",
    "early_pass",
    "error_margin",
)
_LEVEL_NAME = re.compile(r"^p(\d+(?:\.\d+)?)$")
# SequentialErrors / SequentialLatency settings that have no policy key: what they must
# be for the decider to be written.
_ERRORS_FIXED = {"metric": "errors", "min_ratio": 1.05, "max_ratio": 20.0, "points": 30}
_LATENCY_FIXED = {"interpolate": True}


def _quantiles(table: PolicyTable) -> list[float]:
    value = table.raw("latency_quantiles", [])
    field = table.field("latency_quantiles")
    if not isinstance(value, list):
        raise ConfigError(
            field, value, "must be an array such as [0.5, 0.95, 0.99] or ['p50', 'p95', 'p99']"
        )
    levels = []
    for index, item in enumerate(value):
        level: float | None = None
        if isinstance(item, str):
            found = _LEVEL_NAME.match(item.strip())
            if found is not None:
                level = float(Decimal(found.group(1)) / 100)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            level = float(item)
        if level is None or not 0 < level < 1:
            raise ConfigError(
                f"{field}[{index}]", item, "must be a level in (0, 1) such as 0.95, or 'p95'"
            )
        levels.append(level)
    return levels


def _build_sequential(table: PolicyTable) -> Decider:
    _check_decider_keys(table, "sequential", _SEQUENTIAL_KEYS)
    alpha = table.number("alpha", 0.01)
    errors = table.boolean("errors", True)
    quantiles = _quantiles(table)
    if not errors and not quantiles:
        raise _error(
            table.field("latency_quantiles"),
            "is required when errors = false (otherwise the decider tests nothing)",
        )
    for key, used, needs in (
        ("min_errors", errors, "errors = true"),
        ("error_margin", errors, "errors = true"),
        ("latency_margin", bool(quantiles), "latency_quantiles"),
        ("min_samples", bool(quantiles), "latency_quantiles"),
    ):
        if key in table and not used:
            raise _error(table.field(key), f"is only used with {needs}")
    early_pass = table.boolean("early_pass", False)
    if "error_margin" in table and not early_pass:
        raise _error(
            table.field("error_margin"), "is only used with early_pass = true (it is its margin)"
        )
    tests: list[Decider] = []
    if errors:
        min_errors = table.integer("min_errors", 0, minimum=0)
        margin = table.number("error_margin", 0.2)
        with _prefixed(table.path, {"margin": "error_margin"}):
            tests.append(
                sequential_errors(
                    alpha=alpha, min_errors=min_errors, early_pass=early_pass, margin=margin
                )
            )
    if quantiles:
        latency_margin = table.number("latency_margin", 0.0)
        min_samples = table.integer("min_samples", 100, minimum=1)
        rename = {"margin": "latency_margin", "quantiles": "latency_quantiles"}
        with _prefixed(table.path, rename):
            tests.append(
                sequential_latency(
                    alpha=alpha,
                    quantiles=quantiles,
                    margin=latency_margin,
                    min_samples=min_samples,
                    early_pass=early_pass,
                )
            )
    decider = tests[0] if len(tests) == 1 else all_of(*tests)
    return _with_limits(table, "sequential", decider)


def _sequential_problem(test: SequentialErrors | SequentialLatency) -> ConfigError | None:
    """Why `test` cannot be written as kind "sequential", or None."""
    fixed = _ERRORS_FIXED if isinstance(test, SequentialErrors) else _LATENCY_FIXED
    for name, value in fixed.items():
        if getattr(test, name) != value:
            problem = f"cannot be written to a policy file (kind 'sequential' has it at {value!r})"
            return ConfigError(name, getattr(test, name), problem)
    if isinstance(test, SequentialErrors) and not test.early_pass and test.margin != 0.2:
        problem = "cannot be written without early_pass (it is the early-pass margin)"
        return ConfigError("error_margin", test.margin, problem)
    return None


def _dump_sequential(decider: Any) -> dict[str, Any] | None:
    errors: SequentialErrors | None = None
    latency: SequentialLatency | None = None
    if isinstance(decider, AllOf):
        # Only sequential_errors(...) & sequential_latency(...) with shared settings is one
        # "sequential" table; anything else is written as kind "all".
        members = decider.deciders
        if len(members) != 2:
            return None
        one, two = members
        if not (isinstance(one, SequentialErrors) and isinstance(two, SequentialLatency)):
            return None
        errors, latency = one, two
        if (
            errors.alpha != latency.alpha
            or errors.early_pass != latency.early_pass
            or _sequential_problem(errors)
            or _sequential_problem(latency)
        ):
            return None
    elif isinstance(decider, SequentialErrors):
        errors = decider
    else:
        assert isinstance(decider, SequentialLatency)
        latency = decider
    for test in (errors, latency):
        problem = None if test is None else _sequential_problem(test)
        if problem is not None:
            raise problem
    first = errors if errors is not None else latency
    assert first is not None
    data: dict[str, Any] = {
        "kind": "sequential",
        "alpha": first.alpha,
        "errors": errors is not None,
    }
    if errors is not None:
        data["min_errors"] = errors.min_errors
    if latency is not None:
        data["latency_quantiles"] = list(latency.quantiles)
        data["latency_margin"] = latency.margin
        data["min_samples"] = latency.min_samples
    data["early_pass"] = first.early_pass
    if errors is not None and errors.early_pass:
        data["error_margin"] = errors.margin
    return data


# --- kind = "kayenta" --------------------------------------------------------------------

_KAYENTA_KEYS = (
    "kind",
    "judge_every",
    "min_points",
    "max_points",
    "marginal",
    "pass",
    "nodata_fail_percent",
    "groups",
    "metrics",
)
# Each metric key with its default (as KayentaMetric has it); group defaults to the metric.
_KAYENTA_METRIC_DEFAULTS: dict[str, Any] = {
    "direction": "either",
    "allowed_increase": 1.0,
    "allowed_decrease": 1.0,
    "critical": False,
    "critical_increase": None,
    "critical_decrease": None,
    "must_have_data": False,
    "nan_strategy": "remove",
    "outliers": "remove",
    "group": "",
    "confidence": 0.98,
    "tolerance": 0.25,
}
_KAYENTA_CHOICES = {
    "direction": ("increase", "decrease", "either"),
    "nan_strategy": ("remove", "replace"),
    "outliers": ("keep", "remove"),
}


def _kayenta_metric(item: PolicyTable) -> KayentaMetric:
    item.check_keys(("metric", *_KAYENTA_METRIC_DEFAULTS))
    metric = item.string("metric")
    options: dict[str, Any] = {}
    for key in _KAYENTA_METRIC_DEFAULTS:
        if key not in item:
            continue
        if key in _KAYENTA_CHOICES:
            options[key] = item.choice(key, _KAYENTA_CHOICES[key])
        elif key in ("critical", "must_have_data"):
            options[key] = item.boolean(key)
        elif key == "group":
            options[key] = item.string(key)
        else:
            options[key] = item.number(key)
    with _prefixed(item.path):
        return kayenta_metric(metric, **options)


def _build_kayenta(table: PolicyTable) -> Decider:
    _check_decider_keys(table, "kayenta", _KAYENTA_KEYS)
    metrics = [_kayenta_metric(item) for item in table.tables("metrics")]
    options: dict[str, Any] = {
        "judge_every": table.integer("judge_every", 60, minimum=1),
        "min_points": table.integer("min_points", 50, minimum=1),
        "max_points": table.integer("max_points", 360, minimum=1),
        "marginal_threshold": table.number("marginal", 75.0),
        "pass_threshold": table.number("pass", 95.0),
    }
    if "nodata_fail_percent" in table:
        percent = table.raw("nodata_fail_percent")
        if percent is False:
            options["nodata_fail_percent"] = None
        elif isinstance(percent, bool):
            raise ConfigError(
                table.field("nodata_fail_percent"),
                percent,
                "must be a percent in (0, 100], or false for never",
            )
        else:
            options["nodata_fail_percent"] = table.number("nodata_fail_percent")
    if "groups" in table:
        groups = table.table("groups")
        known = sorted({m.group for m in metrics})
        weights = {}
        for name in groups.data:
            weight = groups.number(name)
            if weight < 0:
                raise ConfigError(groups.field(name), groups.raw(name), "must be >= 0")
            if name not in known:
                raise _error(
                    groups.field(name), f"is not a metric group (the groups: {', '.join(known)})"
                )
            weights[name] = weight
        options["group_weights"] = weights
    rename = {"marginal_threshold": "marginal", "pass_threshold": "pass", "group_weights": "groups"}
    with _prefixed(table.path, rename):
        decider = kayenta(*metrics, **options)
    return _with_limits(table, "kayenta", decider)


def _dump_kayenta(decider: KayentaJudge) -> dict[str, Any]:
    metrics = []
    for item in decider.metrics:
        entry: dict[str, Any] = {"metric": item.metric}
        for key, default in _KAYENTA_METRIC_DEFAULTS.items():
            value = getattr(item, key)
            if key == "group":
                default = item.metric
            if value is not None and value != default:
                entry[key] = value
        metrics.append(entry)
    data: dict[str, Any] = {
        "kind": "kayenta",
        "judge_every": decider.judge_every,
        "min_points": decider.min_points,
        "max_points": decider.max_points,
        "marginal": decider.marginal_threshold,
        "pass": decider.pass_threshold,
        "nodata_fail_percent": (
            False if decider.nodata_fail_percent is None else decider.nodata_fail_percent
        ),
    }
    if decider.group_weights:
        data["groups"] = dict(decider.group_weights)
    data["metrics"] = metrics
    return data


# --- kind = "all" / "any" ----------------------------------------------------------------


def _build_composite(table: PolicyTable, kind: str) -> Decider:
    _check_decider_keys(table, kind, ("kind", "members"))
    members = table.tables("members")
    if len(members) < 2:
        raise _error(
            table.field("members"),
            "must hold at least two deciders (for one, use its table as [decider] itself)",
        )
    deciders = [_build_decider(member) for member in members]
    with _prefixed(table.path, {"deciders": "members"}):
        combined = all_of(*deciders) if kind == "all" else any_of(*deciders)
    return _with_limits(table, kind, combined)


def _build_all(table: PolicyTable) -> Decider:
    return _build_composite(table, "all")


def _build_any(table: PolicyTable) -> Decider:
    return _build_composite(table, "any")


def _dump_composite(decider: AllOf | AnyOf) -> dict[str, Any]:
    # Member paths are relative ("members[1]"); _dump_decider puts the parent's in front.
    members = [_dump_decider(member, f"members[{i}]") for i, member in enumerate(decider.deciders)]
    return {"kind": "all" if isinstance(decider, AllOf) else "any", "members": members}


register_decider_kind(
    "threshold", _build_threshold, dump=_dump_threshold, types=(ThresholdDecider,)
)
register_decider_kind("relative", _build_relative, dump=_dump_relative, types=(RelativeDecider,))
register_decider_kind(
    "sequential",
    _build_sequential,
    dump=_dump_sequential,
    types=(SequentialErrors, SequentialLatency, AllOf),
)
register_decider_kind("kayenta", _build_kayenta, dump=_dump_kayenta, types=(KayentaJudge,))
register_decider_kind("all", _build_all, dump=_dump_composite, types=(AllOf,))
register_decider_kind("any", _build_any, dump=_dump_composite, types=(AnyOf,))


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
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
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


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _dump_decider(decider: Decider, path: str) -> dict[str, Any]:
    """The table of `decider` (``kind`` included), through its kind's ``dump``.

    `path` names the decider in errors: ``decider`` at the top, or relative to the
    parent (``members[1]``) inside a member, as the parent's dump adds its own path.
    """
    if isinstance(decider, Limits):
        return _dump_limits(decider, path)
    for kind in _DECIDER_KINDS.values():
        if kind.dump is not None and isinstance(decider, kind.types):
            with _prefixed(path):
                data = kind.dump(decider)
            if data is not None:
                return data
    raise ConfigError(path, decider, "has no registered decider kind that can write it")


def _table_lines(path: str, data: Mapping[str, Any]) -> list[str]:
    """The keys of a table, then its arrays of tables as ``[[path.key]]``, recursively."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables += [(key, v) for v in value]
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        where = f"{path}.{_toml_key(key)}"
        lines += ["", f"[[{where}]]", *_table_lines(where, table)]
    return lines


def _decider_lines(decider: Decider) -> list[str]:
    return _table_lines("decider", _dump_decider(decider, "decider"))


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
    decider = _build_decider(top.table("decider"))
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
