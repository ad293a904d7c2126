"""The seed's canary flow, in canarykit terms.

The flow (a Chinese handbook's "金丝雀部署" section): deploy the new version to a few
instances, route 10% of traffic to it, watch its error rate and response time and
compare its CPU and memory with the old version's, widen to 20%, 50% and 100% while it
is healthy, and roll back at once when it is not. Its sample
script sleeps a fixed 60 s between steps and reads constant metrics; here the plan holds
each weight while every window is judged, and the metrics are scripted with realistic
noise, in virtual time.

The same policy runs three times: with a healthy canary, with a canary whose error rate
jumps fivefold (1% to 5%) seven minutes in, at 20% traffic, and with a canary that leaks
memory. The timelines are printed step by step, each window's CPU and memory of the old
version (v1) against the new one (v2) beside the verdict.

Run it with ``python examples/seed_flow.py``.
"""

from __future__ import annotations

import math

import canarykit
from canarykit.deciders import bound, compare, relative, threshold
from canarykit.testing import ScriptedMetrics, regression, simulate

# The seed's CanaryConfig: initialTraffic 10, then 20 -> 50 -> 100, a monitoring
# duration per step, and an error threshold. The plan ends at exactly 100% and keeps
# watching for five more minutes there (a regression at 100% still rolls back).
PLAN = canarykit.from_weights(
    [10, 20, 50, 100],
    hold=300,  # monitoringDuration: five minutes at each weight below 100%
    final_bake=300,  # then five minutes at 100%, still watched
    analysis_interval=60,  # one verdict per minute, both arms over the same window
)
# errorThreshold: roll back at the first window whose canary error rate is above 2%.
# Response time is watched too: a canary p99 above 250 ms counts the same. And the new
# version's CPU and memory per instance against the old one's, in the same window: more
# than 25% more CPU, or 20% more memory, rolls back too.
DECIDER = threshold(bound("error_rate", max=0.02), bound("p99", max=0.25)) & relative(
    compare("cpu_cores", max_ratio=1.25), compare("memory_bytes", max_ratio=1.2)
)

REQUESTS_PER_SECOND = 1000  # enough that 10% of it gives a steady error rate per minute


# CPU and memory per instance, as gauges (in production, from Prometheus: see "CPU and
# memory" in docs/adapters.md). Each is a function of the time, the version (arm) and the
# canary's share of traffic; here both versions use 0.4 cores and 250 MB ...
def cpu_cores(t: float, arm: canarykit.Arm, canary_percent: float) -> float:
    return 0.4


def memory_bytes(t: float, arm: canarykit.Arm, canary_percent: float) -> float:
    return 250e6


# ... except in the third run, where the new version leaks 600 MB an hour.
def leaking_memory_bytes(t: float, arm: canarykit.Arm, canary_percent: float) -> float:
    if arm is canarykit.Arm.CANARY:
        return 250e6 + 600e6 * t / 3600
    return 250e6


def show(title: str, outcome: canarykit.RolloutOutcome, metrics: ScriptedMetrics) -> None:
    print(f"== {title}")
    print(
        f"{'time':>6}  {'canary':>6}  {'stable err':>10}  {'canary err':>10}  "
        f"{'canary p99':>10}  {'cpu v1/v2':>9}  {'MB v1/v2':>9}  verdict"
    )
    for entry in outcome.timeline:
        when = f"{entry.time:>5.0f}s  {entry.canary_percent:>5g}%"
        if entry.kind == "verdict":
            assert entry.verdict is not None
            stable = _percent(entry.stable_error_rate)
            canary = _percent(entry.canary_error_rate)
            p99 = "-" if entry.canary_p99 is None else f"{entry.canary_p99 * 1000:.0f} ms"
            cpu, memory = _resources(metrics, entry)
            print(
                f"{when}  {stable:>10}  {canary:>10}  {p99:>10}  {cpu:>9}  {memory:>9}  "
                f"{entry.verdict.value}"
            )
        elif entry.kind == "split":
            print(f"{when}  traffic: {entry.reason} (nginx: {_nginx(entry.canary_percent)})")
        elif entry.kind == "phase":
            print(f"{when}  -> {entry.phase.value}: {entry.reason}")
        else:
            print(f"{when}  {entry.kind}: {entry.reason}")
    print(f"outcome: {outcome.phase.value} at t={outcome.finished_at:g}s ({outcome.reason})\n")


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _resources(metrics: ScriptedMetrics, entry: canarykit.TimelineEntry) -> tuple[str, str]:
    # The scripted data of a window depend only on the window: observing it again gives
    # exactly the readings the decider judged.
    assert entry.window_start is not None and entry.window_end is not None
    split = canarykit.TrafficSplit(canary_percent=entry.canary_percent)
    window = canarykit.Window(start=entry.window_start, end=entry.window_end, split=split)
    observed = metrics.observe(window)
    old, new = observed.stable.gauges, observed.canary.gauges
    cpu = f"{old['cpu_cores']:.2f}/{new['cpu_cores']:.2f}"
    memory = f"{old['memory_bytes'] / 1e6:.0f}/{new['memory_bytes'] / 1e6:.0f}"
    return cpu, memory


def _nginx(canary_percent: float) -> str:
    # The seed's upstream block: 90/10 is weight=9 for app-v1 and weight=1 for app-v2.
    # nginx has no weight=0: a version without traffic leaves the block.
    canary = round(canary_percent)
    if canary in (0, 100):
        return "app-v1 only" if canary == 0 else "app-v2 only"
    divisor = math.gcd(100, canary)
    return f"app-v1 weight={(100 - canary) // divisor}, app-v2 weight={canary // divisor}"


def main() -> None:
    gauges = {"cpu_cores": cpu_cores, "memory_bytes": memory_bytes}
    healthy = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND, error_rate=0.01, gauges=gauges, seed=7
    )
    bad = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND,
        error_rate=regression(at=420, base=0.01, factor=5),  # x5 from t=7 min
        gauges=gauges,
        seed=7,
    )
    leaking = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND,
        error_rate=0.01,
        gauges={"cpu_cores": cpu_cores, "memory_bytes": leaking_memory_bytes},
        seed=7,
    )
    good_run = simulate(PLAN, decider=DECIDER, metrics=healthy).outcome
    bad_run = simulate(PLAN, decider=DECIDER, metrics=bad).outcome
    leak_run = simulate(PLAN, decider=DECIDER, metrics=leaking).outcome
    show("healthy canary", good_run, healthy)
    show("canary whose error rate jumps x5 at t=420s", bad_run, bad)
    show("canary that leaks 600 MB of memory an hour", leak_run, leaking)
    print(
        f"healthy: {good_run.phase.value}; bad: {bad_run.phase.value}; "
        f"leaking: {leak_run.phase.value}"
    )
    if not (good_run.promoted and bad_run.rolled_back and leak_run.rolled_back):
        raise SystemExit("unexpected outcome")
    if "memory_bytes" not in leak_run.reason:
        raise SystemExit(f"the leak was not what rolled back: {leak_run.reason}")


if __name__ == "__main__":
    main()
