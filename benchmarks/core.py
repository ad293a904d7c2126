"""Core benchmarks; the last line printed is one JSON object with the figures.

- virtual_seconds_per_wall_second: a 3-hour plan (10% more every 18 minutes, then an
  18-minute bake) with 10 s analysis windows, 1,080 in all, through the full runner
  (Rollout), the virtual clock and the threshold decider, the metrics replayed from
  observations ScriptedMetrics made beforehand; the best of five runs on asyncio.
  `..._scripted` is the same with ScriptedMetrics drawing each window's traffic
  (100 requests/s, latency histograms) as it goes: the end-to-end cost of a simulation.
- machine_rollouts_per_second: 1,000 complete rollouts of CodeDeploy's
  Linear10PercentEvery1Minute judged every minute, through the pure state machine and
  the threshold decider (no runner, no event loop), on pre-collected observations.
  `machine_microseconds_per_event` is the cost of one transition with its next_action.
- concurrent_1000_peak_rss_mb: 1,000 rollouts (the same preset judged every 10 s)
  running at once in one process (one event loop, each with its own FakeRouter and
  VirtualClock): the peak resident memory of that process, measured in a fresh
  subprocess; `..._baseline_mb` is its peak after imports, before any rollout.

Usage: python benchmarks/core.py [--quick]
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time

import anyio

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock, simulate

# The threshold decider as a user would set it for ScriptedMetrics' default traffic
# (100 requests/s, 1% errors, 50 ms median latency).
DECIDER = threshold(bound("error_rate", max=0.05), bound("p99", max=0.5), failure_limit=3)

# Three hours: 10% more every 18 minutes, then an 18-minute bake at 100%.
THREE_HOUR_PLAN = ck.linear(10, 10, hold=1080, final_bake=1080, analysis_interval=10)
assert THREE_HOUR_PLAN.nominal_seconds == 3 * 3600

# CodeDeploy's Linear10PercentEvery1Minute judged every minute (Flagger's default interval).
MACHINE_PLAN = ck.presets.linear_10_percent_every_1_minute(analysis_interval=60)
# The same judged every 10 seconds, for the 1,000 concurrent rollouts.
CONCURRENT_PLAN = ck.presets.linear_10_percent_every_1_minute(analysis_interval=10)


class Replay:
    """A metrics source that hands back observations collected beforehand, in turn.

    It isolates what the runner costs from what generating fake traffic costs.
    """

    def __init__(self, observations: list[ck.Observation]) -> None:
        self.observations = observations
        self.served = 0

    async def collect(self, window: ck.Window) -> ck.Observation:
        observation = self.observations[self.served % len(self.observations)]
        self.served += 1
        return observation


def _three_hour_observations() -> list[ck.Observation]:
    metrics = ScriptedMetrics(seed=0)
    return [
        metrics.observe(
            ck.Window(
                start=10.0 * i,
                end=10.0 * (i + 1),
                split=ck.TrafficSplit(canary_percent=min(100.0, 10.0 + 10.0 * (i // 108))),
            )
        )
        for i in range(1080)
    ]


def virtual_seconds_per_wall_second(repeats: int, *, scripted: bool) -> float:
    """Best of `repeats` runs of the 3-hour plan; metrics replayed, or scripted live."""
    observations = _three_hour_observations()
    best = float("inf")
    for seed in range(repeats):
        metrics = ScriptedMetrics(seed=seed) if scripted else Replay(observations)
        started = time.perf_counter()
        sim = simulate(THREE_HOUR_PLAN, decider=DECIDER, metrics=metrics)
        best = min(best, time.perf_counter() - started)
        assert sim.outcome.promoted, sim.outcome.reason
        assert len(sim.outcome.verdicts) == 1080
    return THREE_HOUR_PLAN.nominal_seconds / best


def machine_rollouts_per_second(count: int) -> float:
    plan = MACHINE_PLAN
    metrics = ScriptedMetrics(seed=7)
    split = ck.TrafficSplit(canary_percent=10)
    pool = [
        metrics.observe(ck.Window(start=60.0 * i, end=60.0 * (i + 1), split=split))
        for i in range(64)
    ]
    started = time.perf_counter()
    for index in range(count):
        state = ck.machine.transition(plan, ck.machine.RolloutState(), ck.machine.Start(now=0.0))
        now = 0.0
        while True:
            action = ck.machine.next_action(plan, state, now)
            if isinstance(action, ck.machine.Finish):
                break
            if isinstance(action, ck.machine.ApplySplit):
                event: object = ck.machine.SplitApplied(now, action.split)
            elif isinstance(action, ck.machine.CollectWindow):
                decider_state = action.decider_state
                if decider_state is None:
                    decider_state = DECIDER.initial_state()
                observation = pool[(index + int(action.end)) % len(pool)]
                judged = DECIDER.judge(decider_state, observation)
                event = ck.machine.WindowJudged(
                    now, action.kind, action.end, judged.verdict, judged.state
                )
            else:
                now = max(now, action.until)
                event = ck.machine.Tick(now)
            state = ck.machine.transition(plan, state, event)
        assert state.phase is ck.Phase.SUCCEEDED, state.reason
    return count / (time.perf_counter() - started)


def _concurrent_child(count: int) -> None:
    """Runs in a fresh process: prints baseline and peak RSS in MiB as JSON."""
    plan = CONCURRENT_PLAN
    baseline = _peak_rss_mb()
    outcomes: list[ck.RolloutOutcome] = []

    async def one(seed: int) -> None:
        rollout = ck.Rollout(
            plan,
            router=FakeRouter(),
            metrics=ScriptedMetrics(seed=seed),
            decider=DECIDER,
            clock=VirtualClock(),
        )
        outcomes.append(await rollout.run())

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for seed in range(count):
                tg.start_soon(one, seed)

    started = time.perf_counter()
    anyio.run(main)
    elapsed = time.perf_counter() - started
    promoted = sum(o.promoted for o in outcomes)
    print(
        json.dumps(
            {
                "baseline_mb": baseline,
                "peak_mb": _peak_rss_mb(),
                "rollouts": len(outcomes),
                "promoted": promoted,
                "seconds": elapsed,
            }
        )
    )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def concurrent(count: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["rollouts"] == count, data
    return data


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _concurrent_child(int(sys.argv[2]))
        return
    quick = "--quick" in sys.argv
    vsps = virtual_seconds_per_wall_second(repeats=1 if quick else 5, scripted=False)
    vsps_scripted = virtual_seconds_per_wall_second(repeats=1 if quick else 5, scripted=True)
    rps = machine_rollouts_per_second(count=100 if quick else 1000)
    child = concurrent(count=100 if quick else 1000)
    figures = {
        "virtual_seconds_per_wall_second": round(vsps),
        "virtual_seconds_per_wall_second_scripted": round(vsps_scripted),
        "machine_rollouts_per_second": round(rps, 1),
        "concurrent_1000_peak_rss_mb": round(child["peak_mb"], 1),
        "concurrent_1000_baseline_rss_mb": round(child["baseline_mb"], 1),
        "concurrent_1000_promoted": child["promoted"],
        "concurrent_1000_wall_seconds": round(child["seconds"], 2),
        "quick": quick,
        "python": platform.python_version(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
