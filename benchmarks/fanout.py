"""FanOutRouter benchmark: partial failures across five real load balancers; last line JSON.

Three real nginx instances and two real HAProxy instances (one worker each, no backends
needed: neither connects to a server to load its weights) are the members of one
`FanOutRouter`. Each trial picks a split other than the one in force and one member to
fail once at a random point of its apply, through the routers' override points:

- nginx: in `deliver` (nothing written), in `validate` (the file is put back), in
  `reload_nginx` before signalling (put back), or after the new workers run (the new
  split is served, and the fan-out must take it back);
- HAProxy: in `send`, on the 1st, 2nd or 3rd command line of the apply (read weights,
  set weights, read back), before the line goes out or after HAProxy took it (the
  weights changed, then the transport failed).

After each trial every member is read by a fresh router of its own (not the fan-out's
members, whose read-back could remember what they applied). A trial is inconsistent
unless all five report one split and it is the fan-out's `confirmed` (the trial's
split when the apply returned, the one before when it raised).

- fanout_trials, fanout_failed_applies, fanout_inconsistent_end_states (target 0);
- fanout_apply_ms_median: a fan-out apply without a fault (all five, at once) against
  one_nginx_apply_ms_median, one NginxRouter's apply in the same run, and their ratio.

Usage: python benchmarks/fanout.py [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio

from canarykit import RouterError, TrafficSplit
from canarykit.routers import FanOutRouter, HAProxyRouter, NginxRouter
from canarykit.testing.lab import HAProxyServer, NginxServer, find_binary, free_port

SPLITS = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
NGINX_FAULTS = ("deliver", "validate", "reload", "after_reload")


class FlakyNginx(NginxRouter):
    """An NginxRouter that fails once, at the step `fault` names, then works again."""

    fault: str | None = None

    def _trip(self, step: str) -> None:
        if self.fault == step:
            self.fault = None
            raise RouterError(f"injected fault in {step}")

    async def deliver(self, text: str | None) -> None:
        self._trip("deliver")
        await super().deliver(text)

    async def validate(self, split: TrafficSplit) -> None:
        self._trip("validate")
        await super().validate(split)

    async def reload_nginx(self) -> None:
        self._trip("reload")
        await super().reload_nginx()
        self._trip("after_reload")


class FlakyHAProxy(HAProxyRouter):
    """An HAProxyRouter whose `send` fails once: on line `fault_line`, before or after."""

    fault_line: int | None = None
    fault_after = False  # True: HAProxy takes the line, then the transport fails
    _lines = 0

    def arm(self, line: int, *, after: bool) -> None:
        self.fault_line, self.fault_after, self._lines = line, after, 0

    async def send(self, line: str) -> str:
        self._lines += 1
        if self._lines != self.fault_line:
            return await super().send(line)
        self.fault_line = None
        if self.fault_after:
            await super().send(line)
        raise RouterError(f"injected fault on command line {self._lines}")


class Lab:
    """Three nginx and two HAProxy instances, each with a flaky router and a fresh reader."""

    def __init__(self, directory: Path, stack: ExitStack) -> None:
        nginx = find_binary("nginx", "nginx-light")
        haproxy = find_binary("haproxy", "haproxy")
        # Backends are never contacted: nginx and HAProxy only load the addresses.
        stable, canary = [f"127.0.0.1:{free_port()}"], [f"127.0.0.1:{free_port()}"]
        self.nginx = [
            stack.enter_context(
                NginxServer(directory / f"nginx{i}", stable=stable, canary=canary, binary=nginx)
            )
            for i in range(3)
        ]
        self.haproxy = [
            stack.enter_context(
                HAProxyServer(
                    directory / f"haproxy{i}", stable=stable, canary=canary, binary=haproxy
                )
            )
            for i in range(2)
        ]
        self.flaky_nginx = [
            FlakyNginx(
                include_path=s.include_path,
                main_config=s.config_path,
                pid_file=s.pid_file,
                prefix=s.directory,
                stable=stable,
                canary=canary,
                nginx=nginx,
            )
            for s in self.nginx
        ]
        self.flaky_haproxy = [
            FlakyHAProxy(
                runtime_api=s.socket_path,
                backend=s.backend,
                stable=s.stable_names,
                canary=s.canary_names,
            )
            for s in self.haproxy
        ]
        self.members: list[Any] = [*self.flaky_nginx, *self.flaky_haproxy]
        self.fan = FanOutRouter(self.members)

    def arm(self, rng: random.Random) -> str:
        """Make one member, picked by `rng`, fail once at a point picked by `rng`."""
        member = rng.choice(self.members)
        if isinstance(member, FlakyNginx):
            member.fault = rng.choice(NGINX_FAULTS)
            return f"nginx {member.fault}"
        line, after = rng.randint(1, 3), rng.random() < 0.5
        member.arm(line, after=after)
        return f"haproxy line {line} {'after' if after else 'before'}"

    def disarm(self) -> None:
        for member in self.members:
            if isinstance(member, FlakyNginx):
                member.fault = None
            else:
                member.fault_line = None

    async def end_state(self) -> list[TrafficSplit | None]:
        """Every member's split, read by the server's own router (nothing remembered)."""
        readers: list[Any] = [s.router for s in self.nginx]
        readers += [
            HAProxyRouter(
                runtime_api=s.socket_path,
                backend=s.backend,
                stable=s.stable_names,
                canary=s.canary_names,
            )
            for s in self.haproxy
        ]
        return [await reader.read() for reader in readers]


async def trial(lab: Lab, rng: random.Random) -> dict[str, Any]:
    """One apply with one fault armed; whether the members end on one confirmed split."""
    current = lab.fan.confirmed
    choices = [p for p in SPLITS if current is None or p != current.canary_percent]
    split = TrafficSplit(canary_percent=rng.choice(choices))
    fault = lab.arm(rng)
    failed = False
    try:
        await lab.fan.apply(split)
    except RouterError:
        failed = True
    lab.disarm()  # a fault that did not fire must not fire in the next trial
    seen = await lab.end_state()
    expected = current if failed else split
    consistent = all(s == expected for s in seen) and lab.fan.confirmed == expected
    return {"fault": fault, "failed": failed, "consistent": consistent, "seen": seen}


async def run(directory: Path, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with ExitStack() as stack:
        lab = Lab(directory, stack)
        await lab.fan.apply(TrafficSplit(canary_percent=0))
        outcomes = [await trial(lab, rng) for _ in range(trials)]
        # Apply times without faults: the fan-out (all five at once) and one nginx alone.
        single = lab.nginx[0].router
        fan_ms, one_ms = [], []
        for index in range(20):
            split = TrafficSplit(canary_percent=10.0 if index % 2 else 20.0)
            started = time.perf_counter()
            await lab.fan.apply(split)
            fan_ms.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            await single.apply(TrafficSplit(canary_percent=30.0 if index % 2 else 40.0))
            one_ms.append(1000 * (time.perf_counter() - started))
            await single.apply(split)  # the fan-out's members stay on one split
    bad = [o for o in outcomes if not o["consistent"]]
    for outcome in bad:
        print(f"inconsistent: {outcome}", file=sys.stderr)
    fan_median, one_median = statistics.median(fan_ms), statistics.median(one_ms)
    return {
        "fanout_trials": trials,
        "fanout_members": "3 nginx + 2 haproxy",
        "fanout_failed_applies": sum(o["failed"] for o in outcomes),
        "fanout_inconsistent_end_states": len(bad),
        "fanout_faults": dict(sorted(_count(o["fault"] for o in outcomes).items())),
        "fanout_apply_ms_median": round(fan_median, 1),
        "one_nginx_apply_ms_median": round(one_median, 1),
        "fanout_to_one_router_ratio": round(fan_median / one_median, 2),
        "seed": seed,
        "cpus": os.cpu_count(),
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ck-fanout-") as directory:
        figures = anyio.run(run, Path(directory), args.trials, args.seed)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
