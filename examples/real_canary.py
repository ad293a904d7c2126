"""A canary run for real: nginx in front of two app versions, Prometheus watching them.

Starts everything on loopback (needs the nginx and prometheus binaries; on Debian:
``apt-get install nginx-light prometheus``), sends real traffic through nginx, and runs
the same plan twice with canarykit's `NginxRouter` and `PrometheusSource`: once with a
healthy v2, which ends promoted with nginx sending everything to v2, and once with a v2
that fails 5% of its requests, which ends rolled back with traffic really back on v1.

    python examples/real_canary.py [--proxy haproxy]
"""

import sys
import tempfile

import anyio

import canarykit
from canarykit.deciders import bound, threshold
from canarykit.testing import CanaryLab, Fault

# 10% for two 3-second windows, then 50%, then 100% for a final bake: short, for a demo.
PLAN = canarykit.from_weights([10, 50], hold=6, final_bake=6, analysis_interval=3)
DECIDER = threshold(bound("error_rate", max=0.02), bound("p99", max=0.1))


def show(title: str, report) -> None:
    outcome = report.outcome
    print(f"{title}: {outcome.phase.value} ({outcome.reason})")
    for entry in outcome.timeline:
        if entry.kind in ("split", "verdict"):
            print(f"    {entry.kind:7}  canary {entry.canary_percent:5.1f}%  {entry.reason}")
    print(f"    the router reads back: canary {report.read_back.canary_percent:g}%")
    print(f"    requests sent after the end, by version: {report.served_after_end}")
    if report.fault_at is not None:
        print(
            f"    fault to last canary answer: {report.seconds_to_rollback:.1f} s, "
            f"{report.bad_requests} failed requests served meanwhile"
        )


async def main(lab: CanaryLab) -> None:
    healthy = await lab.rehearse(PLAN, DECIDER)
    show("healthy v2", healthy)
    faulty = await lab.rehearse(PLAN, DECIDER, Fault(error_rate=0.05))
    show("v2 failing 5% of requests", faulty)
    assert healthy.outcome.promoted and set(healthy.served_after_end) == {"v2"}
    assert faulty.outcome.rolled_back and set(faulty.served_after_end) == {"v1"}


if __name__ == "__main__":
    proxy = "haproxy" if sys.argv[1:] == ["--proxy", "haproxy"] else "nginx"
    with tempfile.TemporaryDirectory() as tmp, CanaryLab(tmp, proxy=proxy) as lab:
        print(f"{proxy} at {lab.url}, Prometheus at {lab.prometheus.url}")
        anyio.run(main, lab)
