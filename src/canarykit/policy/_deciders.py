"""The ``[decider]`` kinds of a policy file: how each is read and written back."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

import attrs

from .._errors import ConfigError
from .._protocols import Decider
from ..deciders import (
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
from ..deciders._relative import DEFAULT_RECORD_WINDOWS
from ._table import (
    PolicyTable,
    _error,
    _prefixed,
    parse_duration,
    parse_fraction,
    parse_percent,
)

__all__ = ["DeciderKind", "decider_kinds", "register_decider_kind"]

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
    >>> from canarykit.policy._deciders import _DECIDER_KINDS  # undo, for this example
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


def _limit(table: PolicyTable, key: str, metric: str) -> float | None:
    """A limit on `metric`: rates also take "2%" (0.02), latencies a duration ("150ms")."""
    value = table.raw(key, None)
    if value is None:
        return None
    if metric in _RATES:
        return parse_fraction(table.field(key), value)
    if isinstance(value, str) and metric in _LATENCIES:
        return parse_duration(table.field(key), value, allow_zero=True)
    if isinstance(value, str) and value.strip().endswith("%"):
        raise ConfigError(
            table.field(key),
            value,
            f"must be a number: {metric!r} has no unit canarykit knows, so a percent "
            "could mean 0.02 or 2 (percent strings are for error_rate and success_rate)",
        )
    return table.number(key)


def _fraction(table: PolicyTable, key: str, default: float) -> float:
    """A fraction key (a margin, a probability): 0.05 or "5%"; `default` when absent."""
    if key not in table:
        return default
    return parse_fraction(table.field(key), table.raw(key))


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
    _check_decider_keys(table, "relative", ("kind", "no_data", "record_windows", "metrics"))
    no_data = table.choice("no_data", [p.value for p in NoDataPolicy], "inconclusive")
    record_windows = table.integer("record_windows", DEFAULT_RECORD_WINDOWS, minimum=1)
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
        decider = relative(*comparisons, no_data=no_data, record_windows=record_windows)
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
    data: dict[str, Any] = {"kind": "relative", "no_data": decider.no_data.value}
    if decider.record_windows != DEFAULT_RECORD_WINDOWS:
        data["record_windows"] = decider.record_windows
    data["metrics"] = metrics
    return data


# --- kind = "sequential" -----------------------------------------------------------------

_SEQUENTIAL_KEYS = (
    "kind",
    "alpha",
    "errors",
    "latency",
    "latency_quantiles",
    "latency_margin",
    "min_samples",
    "min_errors",
    "early_pass",
    "error_margin",
    "pass_margin",
)
_LEVEL_NAME = re.compile(r"^p(\d+(?:\.\d+)?)$")
# SequentialErrors / SequentialLatency settings that have no policy key: what they must
# be for the decider to be written.
_ERRORS_FIXED = {"metric": "errors", "min_ratio": 1.05, "max_ratio": 10.0, "points": 20}
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
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and 0 < item < 1:
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
    # The latency test runs when asked (latency = true) or when tail guards are listed,
    # as before there was a latency key.
    quantiles = _quantiles(table) if "latency_quantiles" in table else None
    latency = table.boolean("latency", bool(quantiles))
    if not errors and not latency:
        raise _error(
            table.field("latency"),
            "must be true when errors = false (otherwise the decider tests nothing)",
        )
    for key, used, needs in (
        ("min_errors", errors, "errors = true"),
        ("error_margin", errors, "errors = true"),
        ("latency_margin", latency, "latency = true"),
        # latency_quantiles = [] alone still means "no latency test", as it used to
        ("latency_quantiles", latency or "latency" not in table, "latency = true"),
        ("min_samples", latency, "latency = true"),
    ):
        if key in table and not used:
            raise _error(table.field(key), f"is only used with {needs}")
    early_pass = table.boolean("early_pass", False)
    if "pass_margin" in table and not early_pass:
        raise _error(
            table.field("pass_margin"), "is only used with early_pass = true (it is its margin)"
        )
    pass_margin = _fraction(table, "pass_margin", 0.2)
    tests: list[Decider] = []
    if errors:
        min_errors = table.integer("min_errors", 0, minimum=0)
        margin = _fraction(table, "error_margin", 0.05)
        with _prefixed(table.path, {"margin": "error_margin"}):
            tests.append(
                sequential_errors(
                    alpha=alpha,
                    min_errors=min_errors,
                    margin=margin,
                    early_pass=early_pass,
                    pass_margin=pass_margin,
                )
            )
    if latency:
        latency_margin = _fraction(table, "latency_margin", 0.03)
        min_samples = table.integer("min_samples", 100, minimum=1)
        rename = {"margin": "latency_margin", "quantiles": "latency_quantiles"}
        with _prefixed(table.path, rename):
            tests.append(
                sequential_latency(
                    alpha=alpha,
                    quantiles=quantiles or (),
                    margin=latency_margin,
                    min_samples=min_samples,
                    early_pass=early_pass,
                    pass_margin=pass_margin,
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
    if not test.early_pass and test.pass_margin != 0.2:
        problem = "cannot be written without early_pass (it is the early-pass margin)"
        return ConfigError("pass_margin", test.pass_margin, problem)
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
            or errors.pass_margin != latency.pass_margin
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
        data["error_margin"] = errors.margin
    data["latency"] = latency is not None
    if latency is not None:
        data["latency_quantiles"] = list(latency.quantiles)
        data["latency_margin"] = latency.margin
        data["min_samples"] = latency.min_samples
    data["early_pass"] = first.early_pass
    if first.early_pass:
        data["pass_margin"] = first.pass_margin
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
# allowed_increase / allowed_decrease default (None) to the neutral effect size.
_KAYENTA_METRIC_DEFAULTS: dict[str, Any] = {
    "direction": "either",
    "effect_size": "mean_ratio",
    "allowed_increase": None,
    "allowed_decrease": None,
    "critical": False,
    "critical_increase": None,
    "critical_decrease": None,
    "must_have_data": False,
    "nan_strategy": "remove",
    "outliers": "remove",
    "outlier_factor": 3.0,
    "classifier": "mann_whitney",
    "muted": False,
    "group": "",
    "confidence": 0.98,
    "tolerance": 0.25,
}
_KAYENTA_CHOICES = {
    "direction": ("increase", "decrease", "either"),
    "effect_size": ("mean_ratio", "cles"),
    "nan_strategy": ("remove", "replace"),
    "outliers": ("keep", "remove", "ksigma"),
    "classifier": ("mann_whitney", "mean_inequality"),
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
        elif key in ("critical", "must_have_data", "muted"):
            options[key] = item.boolean(key)
        elif key == "group" and isinstance(item.raw(key), list):
            # An array of group names: a metric in several groups.
            names = item.raw(key)
            if not names or not all(isinstance(name, str) and name for name in names):
                raise ConfigError(
                    item.field(key), names, "must be a group name or an array of them"
                )
            options["groups"] = names
        elif key == "group":
            options[key] = item.string(key)
        elif key in ("confidence", "tolerance"):
            options[key] = parse_fraction(item.field(key), item.raw(key))  # 0.98 or "98%"
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
            options["nodata_fail_percent"] = parse_percent(
                table.field("nodata_fail_percent"), percent
            )
    if "groups" in table:
        groups = table.table("groups")
        known = sorted({group for m in metrics for group in m.groups})
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
        neutral = 0.5 if item.effect_size == "cles" else 1.0
        for key, default in _KAYENTA_METRIC_DEFAULTS.items():
            value = getattr(item, key)
            if key == "group":
                default = item.metric
                if len(item.groups) > 1:
                    value = list(item.groups)
            elif key in ("allowed_increase", "allowed_decrease"):
                default = neutral
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


# ---------------------------------------------------------------------------------------
# The gauges a policy's metrics source declares, for the metric-name check
# (`canarykit._decider_checks`).


def declared_gauges(
    metrics_table: Mapping[str, Any] | None, simulation_gauges: Collection[str]
) -> tuple[frozenset[str], str] | None:
    """The gauge names the policy's metrics source declares, and where; None if none does.

    ``[metrics]`` is the source a run uses, so its gauges (``[metrics.http] gauges`` or
    ``[metrics.queries] gauges``; none without either) are the ones when it is given;
    otherwise ``[simulation] gauges``, the source ``canarykit simulate`` scripts, when it
    declares any. A policy with neither declares no source: None.
    """
    if metrics_table is not None:
        gauges: set[str] = set()
        for section in ("http", "queries"):
            table = metrics_table.get(section)
            if isinstance(table, Mapping) and isinstance(table.get("gauges"), Mapping):
                gauges.update(table["gauges"])
        return frozenset(gauges), "[metrics.http] or [metrics.queries] gauges"
    if simulation_gauges:
        return frozenset(simulation_gauges), "[simulation] gauges"
    return None
