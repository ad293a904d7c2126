"""Fuzz the policy loader and the public constructors; the last line printed is one JSON object.

Every input is either accepted or refused with a `canarykit.CanaryError` that names a field
(`ConfigError.field`, non-empty). Anything else counts as an *unclear error*: another
exception type (TypeError, KeyError, OverflowError, RecursionError ...), a CanaryError
without a field, a ConfigError naming a field outside the table the mutation touched, a
message that cannot be built, or an input that takes longer than `HANG_SECONDS`.

Inputs, from a fixed seed (deterministic for a given canarykit):

- ``toml``: a valid policy (one of several shapes and decider kinds) with one or two
  mutations (a value replaced by a hostile one, a key deleted or added, a kind or shape
  swapped), written as TOML and loaded with `canarykit.policy.load_policy`. A policy that loads
  is also written back with `Policy.to_toml` and loaded again (it must round-trip).
- ``text``: valid TOML text damaged at the character level, and random text.
- ``file``: random bytes, or a mutated policy, in a file loaded by path.
- ``constructor``: a public constructor or factory (plans and steps, generators,
  splits, header routes, observations, histograms, deciders, presets, ``from_json``)
  called with one argument replaced by a hostile Python value; and deciders' ``judge``
  given a damaged saved state.

Usage: python benchmarks/fuzz.py [--inputs N] [--seed S] [--seconds T]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import decimal
import fractions
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import canarykit as ck
from canarykit import deciders as dk
from canarykit import presets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.toml_doc import RawToml, dotted, paths, toml_key, toml_value  # shared with the tests

HANG_SECONDS = 2.0

# ---------------------------------------------------------------------------------------
# Valid policies to mutate

_THRESHOLD = {
    "kind": "threshold",
    "failure_limit": 2,
    "no_data": "inconclusive",
    "metrics": [
        {"metric": "error_rate", "max": "2%"},
        {"metric": "p99", "max": "500ms", "arm": "canary"},
    ],
}
_RELATIVE = {
    "kind": "relative",
    "no_data": "fail",
    "inconclusive_limit": 2,
    "metrics": [
        {"metric": "error_rate", "max_ratio": 1.5, "min_difference": "0.1%", "min_requests": 100},
        {"metric": "throughput", "min_ratio": 0.8, "direction": "decrease"},
        {"metric": "p95", "max_increase": "20ms"},
    ],
}
_SEQUENTIAL = {
    "kind": "sequential",
    "alpha": 0.01,
    "errors": True,
    "latency_quantiles": ["p50", 0.99],
    "latency_margin": 0.05,
    "min_samples": 100,
    "min_errors": 2,
    "early_pass": True,
    "error_margin": 0.2,
}
_KAYENTA = {
    "kind": "kayenta",
    "judge_every": 6,
    "min_points": 5,
    "max_points": 60,
    "marginal": 75,
    "pass": 95,
    "nodata_fail_percent": 50,
    "groups": {"errors": 60, "latency": 40},
    "metrics": [
        {"metric": "error_rate", "direction": "increase", "critical": True, "group": "errors"},
        {
            "metric": "latency",
            "direction": "increase",
            "allowed_increase": 1.1,
            "group": "latency",
            "confidence": 0.98,
            "tolerance": 0.25,
            "nan_strategy": "remove",
            "outliers": "keep",
        },
    ],
}
_ALL = {
    "kind": "all",
    "inconclusive_limit": 2,
    "members": [
        {"kind": "sequential", "alpha": 0.05},
        {"kind": "relative", "metrics": [{"metric": "p99", "max_ratio": 1.2}]},
    ],
}
_ANY = {
    "kind": "any",
    "members": [
        {"kind": "threshold", "metrics": [{"metric": "cpu", "max": 0.9, "arm": "stable"}]},
        {"kind": "sequential", "errors": False, "latency_quantiles": [0.5]},
    ],
}

_PLANS: list[dict[str, Any]] = [
    {"shape": "linear", "initial": 10, "step": 20, "hold": "2m", "analysis_interval": "30s"},
    {
        "shape": "exponential",
        "initial": 1,
        "factor": 2,
        "hold": 60,
        "final_bake": "5m",
        "analysis_interval": 30,
        "pause_limit": "30m",
        "require_pass": False,
        "consecutive_error_limit": 3,
    },
    {"shape": "weights", "weights": [1, 5, 25, 50], "hold": "1m30s", "analysis_interval": "1m"},
    {"shape": "codedeploy", "name": "Canary10Percent5Minutes", "analysis_interval": 60},
    {
        "shape": "steps",
        "analysis_interval": "30s",
        "steps": [
            {"set_weight": 10},
            {"pause": "5m"},
            {"header_route": {"header": "User-Agent", "regex": ".*Chrome.*"}},
            {"analyze": "5m", "interval": "1m"},
            {"mirror": 10},
            {"header_route": [{"header": "X-Canary", "exact": "yes"}]},
            {"clear_header_routes": True},
            {"wait_for_promotion": True},
            {"set_weight": 50},
        ],
    },
]
_DECIDERS = [_THRESHOLD, _RELATIVE, _SEQUENTIAL, _KAYENTA, _ALL, _ANY]


def base_policies() -> list[dict[str, Any]]:
    """Every plan with every decider, each with and without a [simulation] table."""
    docs = []
    for index, plan in enumerate(_PLANS):
        for decider in _DECIDERS:
            doc: dict[str, Any] = {"plan": plan, "decider": decider}
            if index % 2:
                doc["simulation"] = {"requests_per_second": 50, "seed": 7}
            docs.append(copy.deepcopy(doc))
    return docs


# ---------------------------------------------------------------------------------------
# Hostile values


_KNOWN_KEYS = sorted(
    {
        *(k for plan in _PLANS for k in plan),
        *(k for d in _DECIDERS for k in d),
        *(k for d in (_THRESHOLD, _RELATIVE, _KAYENTA) for m in d["metrics"] for k in m),  # type: ignore[attr-defined]
        "set_weight",
        "pause",
        "analyze",
        "interval",
        "mirror",
        "header_route",
        "clear_header_routes",
        "wait_for_promotion",
        "requests_per_second",
        "seed",
        "min",
        "consecutive_failures",
        "consecutive_success_limit",
        "dry_run",
        "critical_increase",
        "critical_decrease",
        "must_have_data",
    }
)

TOML_HOSTILE: list[Any] = [
    None,  # stands for "delete the key"
    True,
    False,
    0,
    -1,
    1,
    7,
    100,
    101,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    0.5,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    RawToml("9" * 30),
    RawToml("9" * 5000),
    RawToml("-" + "9" * 400),
    RawToml("1979-05-27T07:32:00Z"),
    RawToml("1979-05-27"),
    RawToml("07:32:00"),
    RawToml("0x7FFFFFFF"),
    RawToml("[" * 40 + "]" * 40),
    RawToml("[" * 3000 + "]" * 3000),
    RawToml("{a = " * 2000 + "1" + "}" * 2000),
    "",
    " ",
    "\n",
    "\t",
    "5m\n",
    "1h;",
    "}",
    "{",
    "]",
    '"',
    "'",
    "\\",
    'a"b',
    "a;b}",
    "${x}",
    "nan",
    "inf",
    "-inf",
    "NaN%",
    "-1s",
    "-5m",
    "1e999s",
    "1e999",
    "9" * 400 + "s",
    "0",
    "0s",
    "0ms",
    "1 h 30 m",
    "10%",
    "101%",
    "-5%",
    "p0",
    "p100",
    "p101",
    "p-5",
    "latency",
    "errors",
    "requests",
    "threshold",
    "linear",
    "steps",
    "CodeDeployDefault.AllAtOnce",
    "Linear0PercentEvery0Minutes",
    "Canary" + "9" * 5000 + "Percent5Minutes",
    "é",
    "\u202e",
    "\u2028",
    "\U0001f600",
    "\x00",
    "\x1b[31m",
    "\x7f",
    "a" * 10_000,
    "User-Agent\n",
    "X-Evil: 1\r\nX-Other",
    "(a+)+$",
    "a{99999999999}",
    "[",
    [],
    [1],
    [1, 2, 3],
    [100, 50],
    [0.5, "p95", ""],
    [[]],
    [{}],
    [{"kind": "threshold"}],
    [math.nan],
    ["5m"],
    {},
    {"a": 1},
    {"kind": "threshold"},
    {"header": "X-A", "exact": "b", "prefix": "c"},
    {"": 1},
]


class _IntLike(int):
    pass


class _FloatLike(float):
    pass


class _StrLike(str):
    pass


class _BadFloat:
    def __float__(self) -> float:
        raise RuntimeError("no float for you")


def _recursive_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


class Endless:
    """An iterable without end; reading it all (a constructor holding it) fails loudly.

    Every cap in canarykit stops long before `LIMIT` items, so this never fills memory.
    """

    LIMIT = 2_000_000

    def __iter__(self) -> Any:
        for _ in range(self.LIMIT):
            yield 1
        raise RuntimeError("read an endless iterable to the end")

    def __repr__(self) -> str:
        return "Endless()"


PY_HOSTILE: list[Any] = [
    v
    for v in TOML_HOSTILE
    if v is not None and not isinstance(v, RawToml)  # None is tried separately below
] + [
    None,
    10**400,
    -(10**400),
    10**5000,
    2**53 + 1,
    _IntLike(5),
    _FloatLike(0.5),
    _FloatLike(math.nan),
    _StrLike("error_rate"),
    decimal.Decimal("1.5"),
    decimal.Decimal("NaN"),
    fractions.Fraction(1, 3),
    1 + 2j,
    b"bytes",
    bytearray(b"x"),
    object(),
    _BadFloat(),
    lambda: 0,
    int,
    Ellipsis,
    {1, 2},
    frozenset(),
    (1, 2),
    (),
    datetime.timedelta(seconds=-5),
    datetime.timedelta(days=10**8),
    datetime.datetime(2020, 1, 1),
    _recursive_list(),
    [1] * 50_000,
    Endless(),
]


# ---------------------------------------------------------------------------------------
# Writing TOML


def to_toml(doc: dict[str, Any], rng: random.Random) -> str:
    """Write `doc` as TOML: tables as ``[headers]`` (or, at random, inline at the top)."""
    top, tables = [], []
    inline = rng.random() < 0.2
    for key, value in doc.items():
        if isinstance(value, dict) and not inline:
            tables.append(f"[{toml_key(key)}]")
            tables.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
            tables.append("")
        else:
            top.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join([*top, "", *tables])


# ---------------------------------------------------------------------------------------
# Mutating a policy


def _tables(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _tables(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _tables(item, (*path, index))
    return found


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _table_prefix(path: tuple[Any, ...]) -> str:
    """Where an error about `path` may point: the table holding it (array indexes kept).

    A Kayenta metric's group is referred to from the decider's ``groups`` table, so an
    error there may be about a change to a metric.
    """
    parent = path[:-1]
    while parent and isinstance(parent[-1], int):
        parent = parent[:-1]
    expected = dotted(parent)
    if "metrics" in parent:
        expected += "|" + dotted((*parent[: parent.index("metrics")], "groups"))
    return expected


def mutate(doc: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str, str]:
    """One mutation of `doc` (in place); return it, a description and the table touched."""
    roll = rng.random()
    if roll < 0.6:
        found = paths(doc)
        path = rng.choice(found)
        value = rng.choice(TOML_HOSTILE)
        parent = _get(doc, path[:-1])
        if value is None:
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
            return doc, f"delete {dotted(path)}", _table_prefix(path)
        parent[path[-1]] = copy.deepcopy(value)
        return doc, f"set {dotted(path)} = {value!r:.60}", _table_prefix(path)
    if roll < 0.75:
        table_path = rng.choice(_tables(doc))
        table = _get(doc, table_path)
        key = rng.choice([*_KNOWN_KEYS, "bogus", "Hold", "kind", "", "a.b", "\u00e9", " "])
        value = copy.deepcopy(rng.choice([v for v in TOML_HOSTILE if v is not None]))
        table[key] = value
        return (
            doc,
            f"add {dotted((*table_path, key))} = {value!r:.60}",
            _table_prefix((*table_path, key)),
        )
    if roll < 0.9:
        # Swap a kind or a shape: the keys no longer fit.
        candidates = [
            p for p in paths(doc) if p and p[-1] in ("kind", "shape", "metric", "direction")
        ]
        path = rng.choice(candidates)
        choices = {
            "kind": ["threshold", "relative", "sequential", "kayenta", "all", "any", "Threshold"],
            "shape": ["linear", "exponential", "weights", "codedeploy", "steps", "LINEAR"],
            "metric": ["latency", "error_rate", "p99", "cpu", "requests", "throughput"],
            "direction": ["increase", "decrease", "either", "up"],
        }[path[-1]]
        value = rng.choice(choices)
        _get(doc, path[:-1])[path[-1]] = value
        return doc, f"swap {dotted(path)} = {value!r}", _table_prefix(path)
    # Replace a whole table or array with a hostile value.
    containers = [p for p in paths(doc) if isinstance(_get(doc, p), (dict, list))]
    path = rng.choice(containers)
    value = copy.deepcopy(rng.choice([v for v in TOML_HOSTILE if v is not None]))
    _get(doc, path[:-1])[path[-1]] = value
    return doc, f"replace {dotted(path)} = {value!r:.60}", _table_prefix(path)


def damage_text(text: str, rng: random.Random) -> str:
    """Character-level damage: insert, delete, duplicate a line, or truncate."""
    roll = rng.random()
    if not text:
        return rng.choice(["=", "[", '"', "\x00"])
    at = rng.randrange(len(text))
    if roll < 0.3:
        return text[:at] + rng.choice("=[]{}\"'\n\\#,.\x00\x7f\u2028\ufeff") + text[at:]
    if roll < 0.5:
        return text[:at] + text[at + rng.randint(1, 20) :]
    if roll < 0.7:
        lines = text.splitlines()
        line = rng.randrange(len(lines))
        return "\n".join([*lines[: line + 1], lines[line], *lines[line + 1 :]])
    if roll < 0.85:
        return text[:at]
    return text.replace("=", rng.choice([":", "==", "= =", ""]), 1)


def random_text(rng: random.Random) -> str:
    """Random text from an alphabet rich in TOML's own characters."""
    alphabet = "ab01 =[]{}.\"'\n#,\\-_+:\t\x00\u00e9\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))


# ---------------------------------------------------------------------------------------
# Constructors


def _route() -> ck.HeaderRoute:
    return ck.HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")


def _histogram() -> ck.LatencyHistogram:
    return ck.LatencyHistogram.from_counts({-56: 3, -54: 1}, sum=0.031)


def _stats() -> ck.ArmStats:
    return ck.ArmStats(requests=100, errors=1, latency=_histogram(), gauges={"cpu": 0.5})


class Spec:
    """A callable, its valid arguments, and which fields an error about each may name."""

    def __init__(
        self,
        name: str,
        call: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        args: list[Any] | None = None,
        related: dict[str, tuple[str, ...]] | None = None,
        streams: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.streams = streams  # arguments taking any number of samples
        self.call = call
        self.kwargs = kwargs
        self.args = args  # for *args factories: a list of valid positional members
        self.related = related or {}

    def fields_for(self, argument: str) -> tuple[str, ...]:
        return (argument, *self.related.get(argument, ()))


def _bound() -> dk.Bound:
    return dk.bound("error_rate", max=0.02)


def _compare() -> dk.Comparison:
    return dk.compare("p99", max_ratio=1.2)


def _kmetric() -> dk.KayentaMetric:
    return dk.kayenta_metric("error_rate", direction="increase")


_PLAN_KW = {"analysis_interval": 30, "require_pass": True, "consecutive_error_limit": 4}
_SPAN = ("start", "end")


def constructor_specs() -> list[Spec]:
    """The public constructors and factories, each with valid arguments."""
    json_stats = _stats().to_json()
    json_obs = ck.Observation(start=0, end=10, stable=_stats(), canary=_stats()).to_json()
    json_window = ck.Window(start=0, end=10, split=ck.TrafficSplit(canary_percent=5)).to_json()
    json_split = ck.TrafficSplit(canary_percent=5, header_routes=[_route()]).to_json()
    json_verdict = ck.Verdict.from_metrics(
        [ck.MetricVerdict(metric="p99", kind=ck.VerdictKind.PASS, reason="ok", value=0.1)]
    ).to_json()
    return [
        Spec(
            "Plan",
            ck.Plan,
            {
                "steps": [ck.SetWeight(10), ck.Pause(60)],
                "pause_limit": 600,
                **_PLAN_KW,
            },
        ),
        Spec("SetWeight", ck.SetWeight, {"percent": 10}),
        Spec("Pause", ck.Pause, {"seconds": 60}),
        Spec(
            "Analyze",
            ck.Analyze,
            {"seconds": 60, "interval": 10},
            related={"seconds": ("interval",), "interval": ("seconds",)},
        ),
        Spec("SetHeaderRoutes", ck.SetHeaderRoutes, {"routes": [_route()]}),
        Spec("SetMirror", ck.SetMirror, {"percent": 5}),
        Spec(
            "linear",
            ck.linear,
            {"initial": 10, "step": 20, "hold": 60, "final_bake": 0, **_PLAN_KW},
            related={"initial": ("step", "weights"), "step": ("initial", "weights")},
        ),
        Spec(
            "from_weights",
            ck.from_weights,
            {"weights": [1, 5, 25], "hold": 60, "final_bake": 30, **_PLAN_KW},
        ),
        Spec(
            "exponential",
            ck.exponential,
            {"initial": 1, "factor": 2, "hold": 60, "final_bake": 0, **_PLAN_KW},
            related={"initial": ("factor", "weights"), "factor": ("initial", "weights")},
        ),
        Spec("codedeploy", presets.codedeploy, {"name": "Canary10Percent5Minutes", **_PLAN_KW}),
        Spec(
            "TrafficSplit",
            ck.TrafficSplit,
            {"canary_percent": 10, "header_routes": [_route()], "mirror_percent": 5},
        ),
        Spec(
            "HeaderRoute",
            ck.HeaderRoute,
            {"header": "User-Agent", "value": ".*Chrome.*", "match": "regex"},
            related={"match": ("value",)},
        ),
        Spec(
            "ArmStats",
            ck.ArmStats,
            {"requests": 100, "errors": 1, "latency": _histogram(), "gauges": {"cpu": 0.5}},
            related={"requests": ("errors",)},
        ),
        Spec(
            "Observation",
            ck.Observation,
            {"start": 0, "end": 10, "stable": _stats(), "canary": _stats()},
            related={"start": _SPAN, "end": _SPAN},
        ),
        Spec(
            "Window",
            ck.Window,
            {"start": 0, "end": 10, "split": ck.TrafficSplit()},
            related={"start": _SPAN, "end": _SPAN},
        ),
        Spec(
            "LatencyHistogram",
            ck.LatencyHistogram,
            {"offset": -50, "counts": (1, 0, 2), "sum": None},
            related={"counts": ("offset", "sum"), "offset": ("counts",)},
        ),
        Spec(
            "LatencyHistogram.from_counts",
            ck.LatencyHistogram.from_counts,
            {"counts": {-56: 3, -54: 1}, "sum": 0.031},
            related={"counts": ("sum",)},
        ),
        Spec(
            "LatencyHistogram.from_samples",
            ck.LatencyHistogram.from_samples,
            {"samples": [0.01, 0.02, 0.5]},
            streams=("samples",),
        ),
        Spec("LatencyHistogram.from_json", ck.LatencyHistogram.from_json, {"data": {}}),
        Spec("ArmStats.from_json", ck.ArmStats.from_json, {"data": json_stats}),
        Spec("Observation.from_json", ck.Observation.from_json, {"data": json_obs}),
        Spec("Window.from_json", ck.Window.from_json, {"data": json_window}),
        Spec("TrafficSplit.from_json", ck.TrafficSplit.from_json, {"data": json_split}),
        Spec("Verdict.from_json", ck.Verdict.from_json, {"data": json_verdict}),
        Spec(
            "bound",
            dk.bound,
            {"metric": "error_rate", "min": 0.0, "max": 0.02, "arm": "canary"},
            related={"metric": ("min", "max"), "min": ("max",), "max": ("min",)},
        ),
        Spec(
            "threshold",
            dk.threshold,
            {"failure_limit": 2, "no_data": "fail"},
            args=[_bound(), dk.bound("p99", max=0.5)],
        ),
        Spec(
            "compare",
            dk.compare,
            {
                "metric": "error_rate",
                "max_ratio": 1.5,
                "max_increase": 0.01,
                "direction": "increase",
                "min_difference": 0.001,
                "min_requests": 10,
            },
            related={
                "metric": ("max_increase", "min_difference"),
                "direction": ("max_ratio", "min_ratio", "max_increase", "max_decrease"),
                "max_ratio": ("min_ratio", "max_decrease"),
                "max_increase": ("min_ratio", "max_decrease"),
            },
        ),
        Spec("relative", dk.relative, {"no_data": "ignore"}, args=[_compare()]),
        Spec(
            "limited",
            dk.limited,
            {
                "decider": dk.threshold(_bound()),
                "failure_limit": 3,
                "consecutive_failures": 2,
                "inconclusive_limit": 2,
                "consecutive_success_limit": 2,
                "dry_run": False,
            },
        ),
        Spec(
            "kayenta_metric",
            dk.kayenta_metric,
            {
                "metric": "error_rate",
                "direction": "increase",
                "allowed_increase": 1.1,
                "allowed_decrease": 0.9,
                "critical": True,
                "critical_increase": 1.5,
                "critical_decrease": 0.5,
                "must_have_data": False,
                "nan_strategy": "remove",
                "outliers": "remove",
                "group": "errors",
                "confidence": 0.98,
                "tolerance": 0.25,
            },
        ),
        Spec(
            "kayenta",
            dk.kayenta,
            {
                "group_weights": {"errors": 100},
                "marginal_threshold": 75,
                "pass_threshold": 95,
                "judge_every": 6,
                "min_points": 5,
                "max_points": 60,
                "nodata_fail_percent": 50,
            },
            args=[dk.kayenta_metric("error_rate", group="errors")],
            related={
                "marginal_threshold": ("pass_threshold",),
                "min_points": ("max_points",),
                "args": ("group_weights",),
            },
        ),
        Spec(
            "sequential_errors",
            dk.sequential_errors,
            {
                "alpha": 0.01,
                "metric": "errors",
                "min_ratio": 1.05,
                "max_ratio": 20.0,
                "points": 30,
                "min_errors": 0,
                "early_pass": True,
                "margin": 0.2,
            },
            related={"min_ratio": ("max_ratio",)},
        ),
        Spec(
            "sequential_latency",
            dk.sequential_latency,
            {
                "alpha": 0.01,
                "quantiles": (0.5, 0.99),
                "margin": 0.05,
                "min_samples": 100,
                "early_pass": False,
                "interpolate": True,
            },
        ),
        Spec(
            "mann_whitney",
            dk.mann_whitney,
            {"canary": [1.0, 2.0, 3.0], "stable": [1.5, 2.5], "alternative": "greater"},
            streams=("canary", "stable"),
        ),
        Spec(
            "hodges_lehmann",
            dk.hodges_lehmann,
            {"canary": [1.0, 2.0, 3.0], "stable": [1.5, 2.5], "confidence": 0.9},
            streams=("canary", "stable"),
        ),
        Spec(
            "mann_whitney_histograms",
            dk.mann_whitney_histograms,
            {"canary": _histogram(), "stable": _histogram(), "alternative": "two-sided"},
        ),
        Spec(
            "hodges_lehmann_histograms",
            dk.hodges_lehmann_histograms,
            {"canary": _histogram(), "stable": _histogram(), "confidence": 0.98},
        ),
        Spec("all_of", dk.all_of, {}, args=[dk.threshold(_bound()), dk.sequential_errors()]),
        Spec("any_of", dk.any_of, {}, args=[dk.threshold(_bound()), dk.sequential_errors()]),
    ]


def _valid_json_arguments(spec: Spec) -> None:
    # LatencyHistogram.from_json's valid data is the histogram's own JSON.
    if spec.name == "LatencyHistogram.from_json":
        spec.kwargs["data"] = _histogram().to_json()


def mutate_json(data: Any, rng: random.Random) -> tuple[Any, str]:
    """Damage saved JSON-like data: a value replaced, a key deleted or added."""
    data = copy.deepcopy(data)
    found = paths(data)
    if not found or rng.random() < 0.1:
        return rng.choice(PY_HOSTILE), "replace the whole data"
    path = rng.choice(found)
    parent = _get(data, path[:-1])
    roll = rng.random()
    if roll < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
        return data, f"delete {dotted(path)}"
    if roll < 0.3 and isinstance(parent, dict):
        parent[rng.choice(["bogus", "", "sum", "counts"])] = rng.choice(PY_HOSTILE)
        return data, f"add a key beside {dotted(path)}"
    value = rng.choice(PY_HOSTILE)
    parent[path[-1]] = value
    return data, f"set {dotted(path)} = {_short(value)}"


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a value too large to show is itself hostile input
        text = f"<{type(value).__name__}>"
    return text[:60]


def deciders_to_judge() -> list[ck.Decider]:
    """Deciders whose saved state the fuzzer damages."""
    return [
        dk.threshold(_bound()),
        dk.relative(_compare()),
        dk.limited(dk.threshold(_bound()), failure_limit=2),
        dk.kayenta(_kmetric(), dk.kayenta_metric("latency"), judge_every=1, min_points=1),
        dk.sequential_errors(early_pass=True),
        dk.sequential_latency(min_samples=1),
        dk.all_of(dk.threshold(_bound()), dk.sequential_errors()),
        dk.any_of(dk.relative(_compare()), dk.sequential_latency(min_samples=1)),
    ]


# ---------------------------------------------------------------------------------------
# Running and classifying


class Hang(BaseException):
    """Raised by the alarm when one input takes longer than HANG_SECONDS."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise Hang(f"took longer than {HANG_SECONDS} s")


def classify(run: Callable[[], Any], expected_prefix: str | None = None) -> str:
    """Return "accepted" or "refused" (clearly) for `run`, or describe the unclear error.

    `expected_prefix`: a ConfigError's field must start with one of these (``|``-separated)
    or be one of them (for constructors: the argument's name or a related one).
    """
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        run()
    except ck.CanaryError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        field = getattr(exc, "field", None)
        try:
            message = str(exc)
        except Exception as inner:  # the message itself failed
            return f"{type(exc).__name__} whose message fails: {type(inner).__name__}: {inner}"
        if not isinstance(field, str) or not field.strip():
            return f"{type(exc).__name__} without a field: {message[:200]}"
        if expected_prefix is not None and not _field_matches(field, expected_prefix):
            return f"misplaced field {field!r} (expected {expected_prefix!r}): {message[:200]}"
        return "refused"
    except Hang as exc:
        return f"Hang: {exc}"
    except BaseException as exc:  # classifying everything is the point
        signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(exc, KeyboardInterrupt):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        return f"{type(exc).__name__} at {place}: {_short(str(exc))}"
    signal.setitimer(signal.ITIMER_REAL, 0)
    return "accepted"


def _field_matches(field: str, expected: str) -> bool:
    """Whether `field` starts with, or has as one of its parts, one of the `expected` names.

    ``decider.metrics[0].max`` starts with ``decider.metrics[0]``; ``header_route.header``
    (what HeaderRoute calls its header) has the part ``header``.
    """
    parts = set(re.split(r"[.\[\]]+", field))
    for prefix in expected.split("|"):
        if not prefix or prefix in parts:
            return True
        if field == prefix or field.startswith((prefix + ".", prefix + "[")):
            return True
    return False


def _roundtrip(policy: ck.policy.Policy) -> None:
    text = policy.to_toml()
    again = ck.policy.load_policy(text)
    if again.plan != policy.plan:
        raise AssertionError(f"the plan does not round-trip through to_toml:\n{text}")


def fuzz(total: int, seed: int, seconds: float) -> dict[str, Any]:
    """Run `total` inputs (or stop at `seconds`); return the counts and first unclear errors."""
    rng = random.Random(seed)
    bases = base_policies()
    specs = constructor_specs()
    for spec in specs:
        _valid_json_arguments(spec)
    judged = deciders_to_judge()
    observation = ck.Observation(start=0, end=10, stable=_stats(), canary=_stats())
    counts: dict[str, int] = {}
    unclear: list[dict[str, str]] = []
    unclear_count = 0
    causes: dict[str, int] = {}
    outcomes = {"accepted": 0, "refused": 0}
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="canarykit-fuzz-"))
    signal.signal(signal.SIGALRM, _on_alarm)
    done = 0
    try:
        for done in range(1, total + 1):
            if time.perf_counter() - started > seconds:
                done -= 1
                break
            roll = rng.random()
            expected: str | None = None
            if roll < 0.45:
                kind = "toml"
                doc = copy.deepcopy(rng.choice(bases))
                doc, what, expected = mutate(doc, rng)
                if rng.random() < 0.2:
                    doc, more, second = mutate(doc, rng)
                    what += f"; {more}"
                    expected = f"{expected}|{second}"
                text = to_toml(doc, rng)

                def run(text: str = text) -> None:
                    _roundtrip(ck.policy.load_policy(text))

            elif roll < 0.55:
                kind = "text"
                if rng.random() < 0.7:
                    text = damage_text(to_toml(copy.deepcopy(rng.choice(bases)), rng), rng)
                else:
                    text = random_text(rng)
                what = f"text {text[:80]!r}"

                def run(text: str = text) -> None:
                    _roundtrip(ck.policy.load_policy(text))

            elif roll < 0.58:
                kind = "file"
                path = tmp / f"policy-{done}.toml"
                if rng.random() < 0.5:
                    path.write_bytes(rng.randbytes(rng.randint(0, 200)))
                else:
                    doc, _, _ = mutate(copy.deepcopy(rng.choice(bases)), rng)
                    path.write_text(to_toml(doc, rng), encoding="utf-8")
                what = f"file {path.name}"

                def run(path: Path = path) -> None:
                    _roundtrip(ck.policy.load_policy(path))

            elif roll < 0.9:
                kind = "constructor"
                spec = rng.choice(specs)
                kwargs = dict(spec.kwargs)
                args = list(spec.args or [])
                choices = list(kwargs) + (["args"] if spec.args is not None else [])
                argument = rng.choice(choices)
                if spec.name.endswith("from_json"):
                    # Saved data names its fields after the data, not the argument.
                    kwargs["data"], change = mutate_json(kwargs["data"], rng)
                    what = f"{spec.name}: {change}"
                    expected = ""
                elif argument == "args":
                    index = rng.randrange(len(args) + 1)
                    value = rng.choice(PY_HOSTILE)
                    if rng.random() < 0.2:
                        args = []
                    else:
                        args[index:index] = [value]
                    what = f"{spec.name}(*args with {_short(value)} at {index})"
                    expected = "|".join(("bounds", "comparisons", "metrics", "deciders", "args"))
                    expected += "|" + "|".join(spec.related.get("args", ()))
                else:
                    value = rng.choice(PY_HOSTILE)
                    while argument in spec.streams and isinstance(value, Endless):
                        # Work in proportion to the samples given is no hang.
                        value = rng.choice(PY_HOSTILE)
                    kwargs[argument] = value
                    what = f"{spec.name}({argument}={_short(value)})"
                    expected = "|".join(spec.fields_for(argument))
                call, call_args, call_kwargs = spec.call, args, kwargs

                def run(
                    call: Callable[..., Any] = call,
                    call_args: list[Any] = call_args,
                    call_kwargs: dict[str, Any] = call_kwargs,
                ) -> None:
                    call(*call_args, **call_kwargs)

            else:
                kind = "state"
                decider = rng.choice(judged)
                state, change = mutate_json(decider.initial_state(), rng)
                what = f"{type(decider).__name__}.judge: {change}"
                expected = "state"

                def run(decider: ck.Decider = decider, state: Any = state) -> None:
                    result = decider.judge(state, observation)
                    if not isinstance(result, ck.Judgement):
                        raise AssertionError(f"judge returned {result!r}")

            if kind in ("toml", "text", "file") and expected is not None:
                # A syntax error names the source (the file, or "policy" for text).
                expected = f"{expected}|policy|{tmp}"
            counts[kind] = counts.get(kind, 0) + 1
            problem = classify(run, expected)
            if problem in ("accepted", "refused"):
                outcomes[problem] += 1
                continue
            unclear_count += 1
            cause = problem.split(": ")[0]
            causes[cause] = causes.get(cause, 0) + 1
            if len(unclear) < 20:
                unclear.append({"kind": kind, "input": what[:300], "error": problem[:400]})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for item in tmp.iterdir():
            item.unlink()
        tmp.rmdir()
    return {
        "fuzz_inputs": done,
        "fuzz_unclear_errors": unclear_count,
        "fuzz_unclear_by_cause": causes,
        "fuzz_accepted": outcomes["accepted"],
        "fuzz_refused_by_name": outcomes["refused"],
        "fuzz_inputs_by_kind": counts,
        "fuzz_seconds": round(time.perf_counter() - started, 2),
        "seed": seed,
        "first_unclear_errors": unclear,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--seconds", type=float, default=55.0, help="stop early after this")
    options = parser.parse_args()
    result = fuzz(options.inputs, options.seed, options.seconds)
    result["python"] = sys.version.split()[0]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
