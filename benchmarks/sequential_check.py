"""Monte-Carlo figures for the sequential deciders; the last line printed is one JSON object.

Traffic as in ALGORITHMS.md: 100 requests/s, a 10% canary, 10 s windows, 1% errors;
latency log-normal with median 100 ms and sigma 0.5. Every figure uses fixed seeds.

- errors: false rollbacks over 3 h (A/A, fixed split, and the split stepping 1, 5, 10,
  25, 50% every 10 minutes), and the time to catch a doubled and a fivefold error rate
  present from the start (median and p90, minutes).
- latency: false rollbacks over 1 h (A/A), and the time to catch +25% and +10% latency
  (median, p90), for the default margin 0.03 and for margin 0.
- per-window cost of `judge` in microseconds.

Needs numpy (for the traffic generator only). Usage:
python benchmarks/sequential_check.py [--quick]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np

from canarykit._histogram import LatencyHistogram
from canarykit._observe import ArmStats, Observation
from canarykit.deciders._sequential import SequentialErrors, SequentialLatency

WINDOW = 10.0
RATE = 100.0


def _arm(requests: int, errors: int, latency: LatencyHistogram | None = None) -> ArmStats:
    return ArmStats(requests=requests, errors=errors, latency=latency)


def error_run(
    decider: SequentialErrors,
    rng: np.random.Generator,
    windows: int,
    factor: float,
    percents: list[float],
) -> tuple[int | None, int | None]:
    """Return (first FAIL window, first early-pass window), 1-based, or None."""
    share = (
        np.array(
            [percents[min(k * len(percents) // windows, len(percents) - 1)] for k in range(windows)]
        )
        / 100.0
    )
    n_c = rng.poisson(RATE * WINDOW * share)
    n_s = rng.poisson(RATE * WINDOW * (1.0 - share))
    e_c = rng.binomial(n_c, min(0.01 * factor, 1.0))
    e_s = rng.binomial(n_s, 0.01)
    state = decider.initial_state()
    first_early = None
    for k in range(windows):
        obs = Observation(
            start=k * WINDOW,
            end=(k + 1) * WINDOW,
            stable=_arm(int(n_s[k]), int(e_s[k])),
            canary=_arm(int(n_c[k]), int(e_c[k])),
        )
        judgement = decider.judge(state, obs)
        state = judgement.state
        verdict = judgement.verdict
        if verdict.early_pass and first_early is None:
            first_early = k + 1
        if verdict.kind.value == "fail":
            return k + 1, first_early
    return None, first_early


def _bucket_probs(median: float, sigma: float) -> tuple[int, np.ndarray]:
    from scipy.stats import norm

    low, high = -100, 40  # 2**(-100/8) s is 0.17 ms; 2**(40/8) is 32 s
    edges = np.array([2.0 ** ((i - 1) / 8) for i in range(low, high + 2)])
    cdf = norm.cdf((np.log(edges) - math.log(median)) / sigma)
    probs = np.diff(cdf)
    probs[0] += cdf[0]
    probs[-1] += 1.0 - cdf[-1]
    return low, probs / probs.sum()


def _histogram(rng: np.random.Generator, n: int, low: int, probs: np.ndarray) -> LatencyHistogram:
    counts = rng.multinomial(n, probs)
    nz = np.nonzero(counts)[0]
    if not len(nz):
        return LatencyHistogram.empty()
    first, last = int(nz[0]), int(nz[-1])
    return LatencyHistogram(
        offset=low + first, counts=tuple(int(c) for c in counts[first : last + 1])
    )


def latency_run(
    decider: SequentialLatency, rng: np.random.Generator, windows: int, factor: float
) -> int | None:
    low, stable_probs = _bucket_probs(0.1, 0.5)
    _, canary_probs = _bucket_probs(0.1 * factor, 0.5)
    state = decider.initial_state()
    for k in range(windows):
        n_c = int(rng.poisson(RATE * WINDOW * 0.1))
        n_s = int(rng.poisson(RATE * WINDOW * 0.9))
        obs = Observation(
            start=k * WINDOW,
            end=(k + 1) * WINDOW,
            stable=_arm(n_s, 0, _histogram(rng, n_s, low, stable_probs)),
            canary=_arm(n_c, 0, _histogram(rng, n_c, low, canary_probs)),
        )
        judgement = decider.judge(state, obs)
        state = judgement.state
        if judgement.verdict.kind.value == "fail":
            return k + 1
    return None


def _summary(found: list[int | None], runs: int) -> dict[str, Any]:
    times = sorted(k * WINDOW / 60.0 for k in found if k is not None)
    out: dict[str, Any] = {"runs": runs, "detected": len(times)}
    if times:
        out["median_min"] = round(statistics.median(times), 2)
        out["p90_min"] = (
            round(times[min(len(times) - 1, int(0.9 * runs))], 2)
            if len(times) >= 0.9 * runs
            else None
        )
    return out


def per_window_microseconds() -> dict[str, float]:
    rng = np.random.default_rng(7)
    out = {}
    low, probs = _bucket_probs(0.1, 0.5)
    observations = []
    for k in range(1080):
        n_c, n_s = int(rng.poisson(100)), int(rng.poisson(900))
        observations.append(
            Observation(
                start=k * WINDOW,
                end=(k + 1) * WINDOW,
                stable=_arm(n_s, int(rng.binomial(n_s, 0.01)), _histogram(rng, n_s, low, probs)),
                canary=_arm(n_c, int(rng.binomial(n_c, 0.01)), _histogram(rng, n_c, low, probs)),
            )
        )
    deciders = {
        "errors": SequentialErrors(),
        "errors_early_pass": SequentialErrors(early_pass=True),
        "latency": SequentialLatency(),
    }
    for name, decider in deciders.items():
        best = math.inf
        for _ in range(3):
            state = decider.initial_state()
            start = time.perf_counter()
            for obs in observations:
                state = decider.judge(state, obs).state
            best = min(best, time.perf_counter() - start)
        out[name] = round(best / len(observations) * 1e6, 1)
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 300 if quick else 2000
    lat_runs = 100 if quick else 300
    figures: dict[str, Any] = {"per_window_us": per_window_microseconds()}
    print("per window:", figures["per_window_us"], flush=True)

    errors = SequentialErrors()
    three_hours = 3 * 3600 // int(WINDOW)
    aa = [
        error_run(errors, np.random.default_rng(seed), three_hours, 1.0, [10])[0]
        for seed in range(runs)
    ]
    figures["errors_aa_3h_false_rollback"] = sum(k is not None for k in aa) / runs
    steps = [1, 5, 10, 25, 50] + [50] * 13  # every 10 minutes over 3 hours
    stepped = [
        error_run(errors, np.random.default_rng(10_000 + seed), three_hours, 1.0, steps)[0]
        for seed in range(runs)
    ]
    figures["errors_aa_3h_stepping_split_false_rollback"] = (
        sum(k is not None for k in stepped) / runs
    )
    print("errors A/A:", figures, flush=True)
    for factor in (2.0, 5.0):
        found = [
            error_run(errors, np.random.default_rng(20_000 + seed), 180, factor, [10])[0]
            for seed in range(runs // 4)
        ]
        figures[f"errors_{factor:g}x"] = _summary(found, runs // 4)
        print(f"errors {factor}x:", figures[f"errors_{factor:g}x"], flush=True)

    early = SequentialErrors(early_pass=True, pass_margin=0.5)
    passes = [
        error_run(early, np.random.default_rng(30_000 + seed), 360, 1.0, [10])
        for seed in range(100)
    ]
    figures["errors_early_pass_aa_margin_0.5"] = _summary([p for _, p in passes], 100)
    early_bad = [
        error_run(early, np.random.default_rng(40_000 + seed), 360, 2.0, [10])
        for seed in range(100)
    ]
    figures["errors_early_pass_on_2x"] = sum(p is not None for _, p in early_bad)
    print(
        "early pass:",
        figures["errors_early_pass_aa_margin_0.5"],
        figures["errors_early_pass_on_2x"],
        flush=True,
    )

    one_hour = 3600 // int(WINDOW)
    for name, decider in (
        ("latency", SequentialLatency()),
        ("latency_margin_0", SequentialLatency(margin=0.0)),
        ("latency_edges", SequentialLatency(interpolate=False)),
    ):
        aa = [
            latency_run(decider, np.random.default_rng(50_000 + s), one_hour, 1.0)
            for s in range(lat_runs)
        ]
        figures[f"{name}_aa_1h_false_rollback"] = sum(k is not None for k in aa) / lat_runs
        for factor in (1.25, 1.10):
            found = [
                latency_run(decider, np.random.default_rng(60_000 + s), one_hour, factor)
                for s in range(lat_runs // 3)
            ]
            figures[f"{name}_{factor:g}x"] = _summary(found, lat_runs // 3)
        print(name, {k: v for k, v in figures.items() if k.startswith(name + "_")}, flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
