"""What a decider can judge: the metric names it reads, and a watched stage at 100%.

Checked where a plan and its decider meet, before any traffic moves: by `Rollout(...)`
and when a policy file loads (with the gauges its source declares). A name no source
provides has no data in any window, and a decider that needs the stable arm has nothing
to compare with at 100%: either would pause a rollout until its limit instead of
judging the canary.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from ._errors import ConfigError, field_error
from ._observe import METRIC_NAMES
from ._plan import Analyze, Pause, Plan, SetHeaderRoutes, SetMirror, SetWeight, WaitForPromotion
from ._protocols import Decider
from .deciders import AllOf, AnyOf, KayentaJudge, Limits, RelativeDecider, ThresholdDecider

__all__ = ["check_full_canary_steps", "check_metric_names"]


def _named_metrics(decider: Decider, path: str) -> list[tuple[str, str, str]]:
    """(key path, metric name, kind) of each metric `decider` reads by name."""
    if isinstance(decider, Limits):
        return _named_metrics(decider.decider, path)
    if isinstance(decider, (AllOf, AnyOf)):
        return [
            named
            for index, member in enumerate(decider.deciders)
            for named in _named_metrics(member, f"{path}.members[{index}]")
        ]
    items: tuple[Any, ...]
    if isinstance(decider, ThresholdDecider):
        kind, items = "threshold", decider.bounds
    elif isinstance(decider, RelativeDecider):
        kind, items = "relative", decider.comparisons
    elif isinstance(decider, KayentaJudge):
        kind, items = "kayenta", decider.metrics
    else:
        return []
    names: list[str] = [item.metric for item in items]
    return [(f"{path}.metrics[{i}].metric", name, kind) for i, name in enumerate(names)]


# How alike a name must be to a known one to be refused as its typo when the policy
# declares no source: "eror_rate" (0.95) is, "errors_total" (0.67 to "errors") is not.
_TYPO = 0.85
_QUANTILE_NAME = re.compile(r"p\d+(?:\.\d+)?")
_BUILT_IN_TEXT = ", ".join(sorted(METRIC_NAMES))


def check_metric_names(
    decider: Decider, declared: tuple[frozenset[str], str] | None, path: str = "decider"
) -> None:
    """Refuse a metric name that is neither built in nor a gauge the policy's source declares.

    A name no source provides would have no data in every window: the rollout would pause
    until its pause limit and never judge the canary. With `declared` (see
    `declared_gauges`) every other name is refused; without (no source in the policy: a
    source built in Python may report any gauge) only the names that cannot be gauges a
    person meant: one close to a built-in name (a typo, "eror_rate"), a latency quantile
    other than p50, p95 and p99, and Kayenta's "latency" outside kind "kayenta". Each
    refusal names the key and says what was meant where it can (did you mean ...?).
    """
    for field, metric, kind in _named_metrics(decider, path):
        if metric in METRIC_NAMES or (metric == "latency" and kind == "kayenta"):
            continue
        gauges, where = declared if declared is not None else (frozenset(), "")
        if metric in gauges:
            continue
        known = sorted(METRIC_NAMES | gauges | ({"latency"} if kind == "kayenta" else set()))
        close = [name for name in known if name.lower() == metric.lower()]
        close = close or difflib.get_close_matches(metric, known, n=1)
        # Without a declared source, only a near-certain typo is refused ("eror_rate", "P99").
        typo = bool(close) and (
            close[0].lower() == metric.lower()
            or difflib.SequenceMatcher(None, metric, close[0]).ratio() >= _TYPO
        )
        if metric == "latency":
            problem = (
                "is kind 'kayenta''s name for the whole latency histogram; kind "
                f"{kind!r} reads a number per window: p50, p95, p99 or mean_latency"
            )
        elif _QUANTILE_NAME.fullmatch(metric) and metric not in gauges:
            problem = (
                "is not a latency quantile canarykit computes (p50, p95, p99; or "
                "mean_latency), nor a gauge the policy's source declares"
            )
        elif declared is not None:
            listed = ", ".join(sorted(gauges)) or "none"
            problem = (
                f"is not a built-in metric ({_BUILT_IN_TEXT}) nor a gauge the policy's "
                f"source declares (in {where}: {listed}); every window would have no data"
            )
        elif typo:
            problem = f"is not a built-in metric ({_BUILT_IN_TEXT})"
        else:
            continue  # a gauge of a source given in Python, which the policy cannot see
        if close:
            problem += f"; did you mean {close[0]!r}?"
        raise ConfigError(field, metric, problem)


def _watched_stages(plan: Plan) -> list[tuple[int, float, bool]]:
    """(step index, canary percent, whether stable has traffic) of each watched stage.

    A stage is a step during which time passes (a pause, an inline analysis, a wait for
    an operator) and windows are judged: background analysis (``analysis_interval``) or
    the step's own analysis. The stable version has traffic below 100%.
    """
    stages = []
    percent = 0.0
    routed = mirrored = False
    for index, step in enumerate(plan.steps):
        if isinstance(step, SetWeight):
            percent = step.percent
        elif isinstance(step, SetHeaderRoutes):
            routed = bool(step.routes)
        elif isinstance(step, SetMirror):
            mirrored = step.percent > 0
        elif isinstance(step, (Pause, WaitForPromotion, Analyze)):
            if isinstance(step, Pause) and step.seconds == 0:
                continue
            started = percent > 0 or routed or mirrored
            if isinstance(step, Analyze) or (plan.analysis_interval is not None and started):
                stages.append((index, percent, percent < 100))
    return stages


def _without_record(decider: Decider, path: str) -> tuple[str, str] | None:
    """(key path, why) when `decider` cannot judge a window at 100%, else None."""
    if isinstance(decider, Limits):
        return _without_record(decider.decider, path)
    if isinstance(decider, (AllOf, AnyOf)):
        problems = [
            _without_record(member, f"{path}.members[{index}]")
            for index, member in enumerate(decider.deciders)
        ]
        found = [problem for problem in problems if problem is not None]
        # all: any member that cannot judge holds the verdict back; any: only if none can.
        if isinstance(decider, AllOf) or len(found) == len(problems):
            return found[0] if found else None
        return None
    if isinstance(decider, KayentaJudge):
        # Kayenta compares the canary's points with the stable points it keeps (up to
        # max_points, from before 100%), unless a missing point counts as 0.
        for index, metric in enumerate(decider.metrics):
            if metric.nan_strategy == "replace":
                return (
                    f"{path}.metrics[{index}].nan_strategy",
                    "with nan_strategy = 'replace' every missing stable point counts as 0 "
                    "(a healthy canary would fail)",
                )
    if isinstance(decider, ThresholdDecider):
        for index, bound in enumerate(decider.bounds):
            if bound.arm.name == "STABLE" and bound.metric in METRIC_NAMES:
                return (
                    f"{path}.metrics[{index}].arm",
                    f"a bound on the stable arm's {bound.metric} has no data there",
                )
    return None


def check_full_canary_steps(plan: Plan, decider: Decider, path: str = "decider") -> None:
    """Refuse a policy whose decider could only pause (or fail) at a watched 100% stage.

    At 100% the stable version has no traffic. Kind "relative" judges the canary against
    its stable record from the windows before, and kind "kayenta" against the stable
    points it keeps (up to ``max_points``), so both need a watched stage below 100%
    first, and a pause rather than an analyze step at 100% (an analyze step starts
    from a fresh state). A threshold on the stable arm has nothing to read there, and Kayenta with
    ``nan_strategy = "replace"`` would count each missing stable point as 0: both are
    refused outright. Otherwise every window there would say "no data" and pause until
    the pause limit, never promoting a healthy canary.
    """
    stages = _watched_stages(plan)
    full = next((index for index, percent, _ in stages if percent >= 100), None)
    if full is None:
        return
    kind = _kept_stable(decider)
    inline = next(
        (i for i, percent, _ in stages if percent >= 100 and isinstance(plan.steps[i], Analyze)),
        None,
    )
    if kind is not None and inline is not None:
        # The runner starts each analyze step from the decider's initial state.
        raise field_error(
            f"plan.steps[{inline}].analyze",
            f"cannot be judged by kind {kind!r} at 100%: an analyze step starts from a fresh "
            "decider state, with no stable values from before to compare the canary with; "
            "watch 100% with a pause (background analysis keeps the record) instead",
        )
    where = f"plan.steps[{full}] (a watched stage at 100%, such as final_bake)"
    problem = _without_record(decider, path)
    if problem is not None:
        field, why = problem
        raise field_error(
            field,
            f"cannot judge {where}: the stable version has no traffic at 100% and {why}; "
            "end the watched plan below 100% (final_bake = 0) or use kind 'relative'",
        )
    recorded = any(stable for index, _, stable in stages if index < full)
    if not recorded and kind is not None:
        raise field_error(
            path,
            f"kind {kind!r} cannot judge {where}: no watched stage below 100% comes first, "
            "so there are no stable values from before to compare the canary with; watch "
            "a stage below 100% first",
        )


def _kept_stable(decider: Decider) -> str | None:
    """The kind judging 100% with stable values kept from before, or None."""
    if isinstance(decider, Limits):
        return _kept_stable(decider.decider)
    if isinstance(decider, (AllOf, AnyOf)):
        kinds = [_kept_stable(member) for member in decider.deciders]
        return next((kind for kind in kinds if kind is not None), None)
    if isinstance(decider, RelativeDecider):
        return "relative"
    if isinstance(decider, KayentaJudge):
        return "kayenta"
    return None
