"""The seed's canary flow, in canarykit terms.

The flow (a Chinese handbook's "金丝雀部署" section): deploy the new version to a few
instances, route 10% of traffic to it, watch its error rate and response time, widen to
20%, 50% and 100% while it is healthy, and roll back at once when it is not. Its sample
script sleeps a fixed 60 s between steps and reads constant metrics; here the plan holds
each weight while every window is judged, and the metrics are scripted with realistic
noise, in virtual time.

The same policy runs twice: once with a healthy canary, once with a canary whose error
rate jumps fivefold (1% to 5%) seven minutes in, at 20% traffic. Both timelines are
printed step by step.

Run it with ``python examples/seed_flow.py``.
"""

from __future__ import annotations

import math

import canarykit
from canarykit.deciders import bound, threshold
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
# Response time is watched too: a canary p99 above 250 ms counts the same.
DECIDER = threshold(bound("error_rate", max=0.02), bound("p99", max=0.25))

REQUESTS_PER_SECOND = 1000  # enough that 10% of it gives a steady error rate per minute


def show(title: str, outcome: canarykit.RolloutOutcome) -> None:
    print(f"== {title}")
    print(
        f"{'time':>6}  {'canary':>6}  {'stable err':>10}  {'canary err':>10}  "
        f"{'canary p99':>10}  verdict"
    )
    for entry in outcome.timeline:
        when = f"{entry.time:>5.0f}s  {entry.canary_percent:>5g}%"
        if entry.kind == "verdict":
            assert entry.verdict is not None
            stable = _percent(entry.stable_error_rate)
            canary = _percent(entry.canary_error_rate)
            p99 = "-" if entry.canary_p99 is None else f"{entry.canary_p99 * 1000:.0f} ms"
            print(f"{when}  {stable:>10}  {canary:>10}  {p99:>10}  {entry.verdict.value}")
        elif entry.kind == "split":
            print(f"{when}  traffic: {entry.reason} (nginx: {_nginx(entry.canary_percent)})")
        elif entry.kind == "phase":
            print(f"{when}  -> {entry.phase.value}: {entry.reason}")
        else:
            print(f"{when}  {entry.kind}: {entry.reason}")
    print(f"outcome: {outcome.phase.value} at t={outcome.finished_at:g}s ({outcome.reason})\n")


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _nginx(canary_percent: float) -> str:
    # The seed's upstream block: 90/10 is weight=9 for app-v1 and weight=1 for app-v2.
    # nginx has no weight=0: a version without traffic leaves the block.
    canary = round(canary_percent)
    if canary in (0, 100):
        return "app-v1 only" if canary == 0 else "app-v2 only"
    divisor = math.gcd(100, canary)
    return f"app-v1 weight={(100 - canary) // divisor}, app-v2 weight={canary // divisor}"


def main() -> None:
    healthy = ScriptedMetrics(requests_per_second=REQUESTS_PER_SECOND, error_rate=0.01, seed=7)
    bad = ScriptedMetrics(
        requests_per_second=REQUESTS_PER_SECOND,
        error_rate=regression(at=420, base=0.01, factor=5),  # x5 from t=7 min
        seed=7,
    )
    good_run = simulate(PLAN, decider=DECIDER, metrics=healthy).outcome
    bad_run = simulate(PLAN, decider=DECIDER, metrics=bad).outcome
    show("healthy canary", good_run)
    show("canary whose error rate jumps x5 at t=420s", bad_run)
    print(f"healthy: {good_run.phase.value}; bad: {bad_run.phase.value}")
    if not (good_run.promoted and bad_run.rolled_back):
        raise SystemExit("unexpected outcome")


if __name__ == "__main__":
    main()
