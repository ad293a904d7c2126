"""Deciders compared by Monte-Carlo; the last line printed is one JSON object.

Scenario (DESIGN.md, "How a decider is judged"): 100 requests/s in total, the canary
held at 10% for up to 3 hours (`hold_plan`: a rollback at any time is the event of
interest), 1% errors per request, latency log-normal with median 100 ms and sigma 0.5.
Every run goes through the real state machine and the decider (`canarykit.testing`'s
evaluator). Regressions are present from the canary's first request (``at=0``): 2x and
5x the error rate, +10% and +25% latency.

Deciders:

- ``sequential``: checked every 10 s; on A/A runs the policy a user would deploy,
  ``sequential_errors(alpha=0.01) & sequential_latency(alpha=0.01)`` (its false
  rollbacks also counted by the metric that fired); on the error regressions
  ``sequential_errors`` alone, on the latency ones ``sequential_latency`` alone.
- ``threshold_tuned``: Flagger's rule, "canary error rate above `limit` in a window is
  a failed check; roll back after `N` failed checks" (cumulative, as Flagger counts),
  the window being the analysis interval. The grid (limit 1.5, 2, 2.5, 3, 3.5, 4, 5%;
  window 10, 30, 60 s; N 1, 2, 3, 4, 5, 6, 8, 10, 15, 20) is screened exactly, not by
  simulation (which also keeps a dense grid affordable): in this scenario
  windows are independent, a window fails with a probability computed from the
  Poisson/binomial model, so the A/A false-rollback rate is a binomial tail and the
  window of the N-th failure under 2x errors a negative binomial. "Best" is the fastest
  median detection of 2x errors among points with A/A false rollbacks <= 1%; the winner
  is then confirmed by the full Monte-Carlo runs. It reads error rates only, so the
  latency scenarios do not apply to it.
- ``kayenta_1h`` and ``kayenta_10m``: Kayenta's judge (Mann-Whitney per metric, 98%
  confidence, scores marginal 75 / pass 95) on per-minute points (60 s analysis
  windows) of the canary's error rate and latency (direction "increase"), judging the
  growing window every hour (Kayenta's recommendation; at least 50 points) or every 10
  minutes (at least 10 points).

Figures per decider: `false_rollback_rate` over A/A runs, and per regression
`detect_rate`, `median_detect_s`, `p90_detect_s` and `median_bad_requests` (excess
errors for error regressions, canary requests served slower for latency ones, until
the rollback or the end of the 3 hours). Plus `runtime_s`.

Usage: python benchmarks/deciders.py [--quick] [--workers N]
"""

from __future__ import annotations

import json
import math
import multiprocessing
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from canarykit.deciders import bound, threshold
from canarykit.testing._evaluate import (
    Evaluation,
    InjectedRegression,
    Scenario,
    evaluate,
    hold_plan,
)

RATE = 100.0
CANARY_PERCENT = 10.0
ERROR_RATE = 0.01
LATENCY_MEDIAN = 0.100
LATENCY_SIGMA = 0.5
HOLD = 3 * 3600.0
ALPHA = 0.01
SEED = 20240601

REGRESSIONS: dict[str, tuple[str, float]] = {
    "errors_2x": ("errors", 2.0),
    "errors_5x": ("errors", 5.0),
    "latency_10pct": ("latency", 1.10),
    "latency_25pct": ("latency", 1.25),
}

GRID_LIMITS = (0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05)
GRID_WINDOWS = (10.0, 30.0, 60.0)
GRID_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
MAX_FALSE_ROLLBACKS = 0.01


def scenario(name: str) -> Scenario:
    regression = None
    if name != "aa":
        kind, factor = REGRESSIONS[name]
        regression = InjectedRegression(kind, factor, at=0.0)
    return Scenario(
        requests_per_second=RATE,
        error_rate=ERROR_RATE,
        latency_median=LATENCY_MEDIAN,
        latency_sigma=LATENCY_SIGMA,
        regression=regression,
    )


# ---------------------------------------------------------------------------- deciders
# Deciders are built inside the worker processes from picklable specs.


def build(spec: tuple[str, dict[str, Any]]) -> Any:
    kind, options = spec
    if kind == "threshold":
        return threshold(
            bound("error_rate", max=options["limit"]),
            failure_limit=options["count"],
            no_data="ignore",
        )
    if kind.startswith("sequential"):
        from canarykit.deciders._sequential import sequential_errors, sequential_latency

        if kind == "sequential_errors":
            return sequential_errors(alpha=ALPHA)
        if kind == "sequential_latency":
            return sequential_latency(alpha=ALPHA)
        return sequential_errors(alpha=ALPHA) & sequential_latency(alpha=ALPHA)
    if kind == "kayenta":
        from canarykit.deciders._kayenta import kayenta, kayenta_metric

        return kayenta(
            kayenta_metric("error_rate", direction="increase"),
            kayenta_metric("latency", direction="increase"),
            judge_every=options["judge_every"],
            min_points=options["min_points"],
            max_points=options["max_points"],
        )
    raise ValueError(kind)


def available(kind: str) -> bool:
    try:
        if kind.startswith("sequential"):
            import canarykit.deciders._sequential
        elif kind == "kayenta":
            import canarykit.deciders._kayenta  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- tuning


def _log_pmf_poisson(k: int, mean: float) -> float:
    return -mean + k * math.log(mean) - math.lgamma(k + 1)


def window_fail_probability(mean: float, p: float, limit: float) -> float:
    """P(errors / requests > limit) in one window: Poisson(mean) requests, each failing w.p. p.

    Failures and successes are independent Poisson counts (thinning), as the evaluator
    draws them.
    """
    bad, good = mean * p, mean * (1.0 - p)
    e_max = int(bad + 15 * math.sqrt(bad) + 30)
    s_low = max(0, int(good - 15 * math.sqrt(good)))
    s_high = int(good + 15 * math.sqrt(good) + 30)
    total = 0.0
    for e in range(e_max):
        pe = math.exp(_log_pmf_poisson(e, bad))
        if pe < 1e-18:
            continue
        # e / (e + s) > limit  <=>  s < e (1 - limit) / limit
        bound_s = e * (1.0 - limit) / limit
        for s in range(s_low, min(s_high, math.ceil(bound_s))):
            if s < bound_s and e + s > 0:
                total += pe * math.exp(_log_pmf_poisson(s, good))
    return total


def binomial_tail(n: int, q: float, at_least: int) -> float:
    """P(Binomial(n, q) >= at_least)."""
    if at_least <= 0:
        return 1.0
    if at_least > n:
        return 0.0
    below = 0.0
    for k in range(at_least):
        below += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(q)
            + (n - k) * math.log1p(-q)
        )
    return max(0.0, 1.0 - below)


def nth_failure_window(q: float, count: int, windows: int, level: float) -> int | None:
    """Smallest k <= windows with P(count failures within k windows) >= level, or None."""
    low, high = count, windows
    if binomial_tail(windows, q, count) < level:
        return None
    while low < high:
        mid = (low + high) // 2
        if binomial_tail(mid, q, count) >= level:
            high = mid
        else:
            low = mid + 1
    return low


def judged_windows(window: float, hold: float) -> int:
    # The last window ends with the hold: the hold's end (a Tick) promotes first.
    return math.ceil(hold / window - 1e-9) - 1


def tune_threshold(hold: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Screen the grid exactly; return the winner and every grid point."""
    points: list[dict[str, Any]] = []
    for window in GRID_WINDOWS:
        mean = RATE * CANARY_PERCENT / 100.0 * window
        windows = judged_windows(window, hold)
        for limit in GRID_LIMITS:
            q_aa = window_fail_probability(mean, ERROR_RATE, limit)
            q_2x = window_fail_probability(mean, 2 * ERROR_RATE, limit)
            for count in GRID_COUNTS:
                frr = binomial_tail(windows, q_aa, count)
                median = nth_failure_window(q_2x, count, windows, 0.5)
                p90 = nth_failure_window(q_2x, count, windows, 0.9)
                points.append(
                    {
                        "limit": limit,
                        "window_s": window,
                        "count": count,
                        "false_rollback_rate": frr,
                        "median_detect_s_2x": None if median is None else median * window,
                        "p90_detect_s_2x": None if p90 is None else p90 * window,
                    }
                )
    eligible = [
        p
        for p in points
        if p["false_rollback_rate"] <= MAX_FALSE_ROLLBACKS and p["median_detect_s_2x"] is not None
    ]
    best = min(
        eligible,
        key=lambda p: (
            p["median_detect_s_2x"],
            math.inf if p["p90_detect_s_2x"] is None else p["p90_detect_s_2x"],
            p["false_rollback_rate"],
        ),
    )
    return best, points


# ---------------------------------------------------------------------------- running


def _task(task: tuple[str, tuple[str, dict[str, Any]], float, str, int, int, float]) -> Any:
    entry, spec, window, scenario_name, runs, first, hold = task
    plan = hold_plan(CANARY_PERCENT, hold, analysis_interval=window)
    result = evaluate(
        plan,
        build(spec),
        scenario(scenario_name),
        runs=runs,
        seed=SEED,
        first_run=first,
        horizon=hold,
    )
    return entry, scenario_name, result


def _chunks(runs: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(0, runs, size):
        yield first, min(size, runs - first)


def figures(result: Evaluation) -> dict[str, Any]:
    def rounded(value: float | None, digits: int = 1) -> float | None:
        return None if value is None else round(value, digits)

    if result.scenario.regression is None:
        return {
            "false_rollback_rate": round(result.false_rollback_rate, 5),
            "runs": result.runs,
            "windows": result.windows,
        }
    return {
        "detect_rate": round(result.detect_rate or 0.0, 4),
        "median_detect_s": rounded(result.median_detect_seconds),
        "p90_detect_s": rounded(result.p90_detect_seconds),
        "median_bad_requests": rounded(result.median_bad_requests),
        "runs": result.runs,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    workers = 1 if quick else 2
    if "--workers" in sys.argv:
        workers = int(sys.argv[sys.argv.index("--workers") + 1])
    hold = 1800.0 if quick else HOLD
    aa_runs = 40 if quick else 2000
    regression_runs = 30 if quick else 500
    chunk = 20 if quick else 125
    started = time.perf_counter()

    best, grid = tune_threshold(hold)
    entries: dict[str, dict[str, Any]] = {}
    tasks: list[tuple[str, tuple[str, dict[str, Any]], float, str, int, int, float]] = []

    def add(entry: str, spec: Any, window: float, scenarios: dict[str, int], config: Any) -> None:
        if config is not None:
            entries[entry] = {"config": config}
        for name, runs in scenarios.items():
            for first, count in _chunks(runs, chunk):
                tasks.append((entry, spec, window, name, count, first, hold))

    everything = {"aa": aa_runs, **dict.fromkeys(REGRESSIONS, regression_runs)}
    errors_only = {"errors_2x": regression_runs, "errors_5x": regression_runs}
    latency_only = {"latency_10pct": regression_runs, "latency_25pct": regression_runs}
    if available("sequential"):
        # One entry: the combined policy on A/A runs, each test alone on its own kind.
        add(
            "sequential",
            ("sequential", {}),
            10.0,
            {"aa": aa_runs},
            {
                "aa": f"sequential_errors(alpha={ALPHA}) & sequential_latency(alpha={ALPHA})",
                "errors": f"sequential_errors(alpha={ALPHA})",
                "latency": f"sequential_latency(alpha={ALPHA})",
                "window_s": 10.0,
            },
        )
        add("sequential", ("sequential_errors", {}), 10.0, errors_only, None)
        add("sequential", ("sequential_latency", {}), 10.0, latency_only, None)
    add(
        "threshold_tuned",
        ("threshold", {"limit": best["limit"], "count": best["count"]}),
        best["window_s"],
        {"aa": aa_runs, **errors_only},
        {
            "rule": "canary error_rate > limit in a window is a failed check; "
            "roll back after count failed checks",
            "limit": best["limit"],
            "window_s": best["window_s"],
            "count": best["count"],
            "screened_false_rollback_rate": round(best["false_rollback_rate"], 5),
            "screened_median_detect_s_2x": best["median_detect_s_2x"],
            "grid_points": len(grid),
            "grid_points_within_1pct": sum(
                p["false_rollback_rate"] <= MAX_FALSE_ROLLBACKS for p in grid
            ),
        },
    )
    if available("kayenta"):
        for entry, every, min_points in (("kayenta_1h", 60, 50), ("kayenta_10m", 10, 10)):
            add(
                entry,
                ("kayenta", {"judge_every": every, "min_points": min_points, "max_points": 360}),
                60.0,
                everything,
                f"Mann-Whitney on per-minute error_rate and latency, judged every "
                f"{every} min on the growing window (min_points {min_points})",
            )

    # Longest tasks first, so the two processes finish together.
    tasks.sort(key=lambda t: (t[3] != "aa", -t[4] / t[2]))
    parts: dict[tuple[str, str], list[Evaluation]] = defaultdict(list)
    done = 0
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            for entry, name, result in pool.imap_unordered(_task, tasks):
                parts[(entry, name)].append(result)
                done += 1
                print(f"  {done}/{len(tasks)} {entry} {name}", file=sys.stderr, flush=True)
    else:
        for task in tasks:
            entry, name, result = _task(task)
            parts[(entry, name)].append(result)

    compute_s = 0.0
    windows = 0
    for (entry, name), results in sorted(parts.items()):
        combined = Evaluation.combine(results)
        compute_s += combined.seconds
        windows += combined.windows
        data = figures(combined)
        if name == "aa":
            entries[entry].update(data)
            cost = combined.seconds / max(combined.windows, 1) * 1e6
            entries[entry]["aa_microseconds_per_window"] = round(cost, 1)
            reasons: dict[str, int] = defaultdict(int)
            for run in combined.results:
                if run.outcome == "rolled_back":
                    # "analysis failed: errors: ..." -> "errors"; Kayenta's reason is its
                    # score by group, e.g. "score 50 (error_rate 0, latency 100)".
                    what = run.reason.removeprefix("analysis failed: ")
                    reasons[what.split(":")[0].split(";")[0].strip()] += 1
            if reasons:
                entries[entry]["false_rollbacks_by_metric"] = dict(reasons)
        else:
            entries[entry][name] = data

    runtime = time.perf_counter() - started
    for entry, data in entries.items():
        row = [f"{entry:<19}", f"A/A {data.get('false_rollback_rate', '-')!s:<8}"]
        for name in REGRESSIONS:
            item = data.get(name)
            if item is None:
                row.append(f"{name} n/a")
            else:
                row.append(
                    f"{name} {item['detect_rate']:.3f} med {item['median_detect_s']} "
                    f"p90 {item['p90_detect_s']} bad {item['median_bad_requests']}"
                )
        print("  ".join(row))
    output = {
        **entries,
        "scenario": {
            "requests_per_second": RATE,
            "canary_percent": CANARY_PERCENT,
            "error_rate": ERROR_RATE,
            "latency_median_s": LATENCY_MEDIAN,
            "latency_sigma": LATENCY_SIGMA,
            "hold_s": hold,
            "regression_at_s": 0.0,
            "seed": SEED,
        },
        "microseconds_per_window": round(compute_s / max(windows, 1) * 1e6, 1),
        "windows": windows,
        "workers": workers,
        "quick": quick,
        "python": platform.python_version(),
        "runtime_s": round(runtime, 1),
    }
    print(json.dumps(output))


if __name__ == "__main__":
    main()
