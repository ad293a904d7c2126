"""A traffic router for your own load balancer, in about 20 lines.

The router below drives a made-up nginx setup: it writes the ``upstream`` block with
weights (90/10 becomes ``weight=9`` / ``weight=1``) into a file that nginx includes, and
reads the weights back so canarykit can check that every change took effect. A real one
would also run ``nginx -s reload`` after writing. Then a short plan runs against it, with
scripted metrics in virtual time, so this script finishes in well under a second.

Below it, two subclasses of the built-in routers through their override points:
`FleetNginxRouter` drives nginx on several hosts (the file delivered by your own means,
reloads through systemctl) and `RelayHAProxyRouter` sends HAProxy's runtime-API commands
through another command (``ssh HOST socat stdio SOCKET``). docs/custom_router.md shows
them; tests/test_router_override_examples.py runs them against real nginx and HAProxy.

Run it with ``python examples/custom_router.py``.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

import canarykit
from canarykit.deciders import bound, threshold
from canarykit.routers import HAProxyRouter, NginxRouter
from canarykit.testing import ScriptedMetrics, simulate


class NginxUpstreamRouter:
    """Weights in an nginx ``upstream`` block: stable on app-v1, the canary on app-v2."""

    capabilities = canarykit.RouterCapabilities(weights=True, read_back=True)

    def __init__(self, path: Path) -> None:
        self.path = anyio.Path(path)

    async def apply(self, split: canarykit.TrafficSplit) -> None:
        canary = round(split.canary_percent * 10)  # per mille, so 0.5% works too
        divisor = math.gcd(1000, canary)  # 90/10 is written weight=9 / weight=1
        servers = [("app-v1", (1000 - canary) // divisor), ("app-v2", canary // divisor)]
        lines = [f"    server {host}:3000 weight={w};" for host, w in servers if w]
        await self.path.write_text("upstream app {\n" + "\n".join(lines) + "\n}\n")
        # A real router would now run: await anyio.run_process(["nginx", "-s", "reload"])

    async def read(self) -> canarykit.TrafficSplit | None:
        text = await self.path.read_text()
        weights = dict(re.findall(r"server (app-v[12]):\S+ weight=(\d+);", text))
        stable, canary = int(weights.get("app-v1", 0)), int(weights.get("app-v2", 0))
        return canarykit.TrafficSplit(canary_percent=100 * canary / (stable + canary))


class FleetNginxRouter(NginxRouter):
    """NginxRouter for nginx on several hosts: its file goes out and comes back your way.

    `push(host, text)` writes the include file on a host (None: removes it), `fetch(host)`
    reads it (None: there is none), `run(host, argv)` runs a command there and raises if
    it fails. The other settings are NginxRouter's (`include_path` as on the hosts).
    ``systemctl reload`` returns once nginx is signalled: new workers take over about
    100 ms later (NginxRouter's own reload waits for them).
    """

    def __init__(
        self,
        *,
        hosts: Sequence[str],
        push: Callable[[str, str | None], Awaitable[None]],
        fetch: Callable[[str], Awaitable[str | None]],
        run: Callable[[str, list[str]], Awaitable[None]],
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.hosts, self.push, self.fetch, self.run = list(hosts), push, fetch, run

    async def deliver(self, text: str | None) -> None:
        for host in self.hosts:
            await self.push(host, text)

    async def validate(self, split: canarykit.TrafficSplit) -> None:
        for host in self.hosts:
            await self.run(host, ["nginx", "-t"])

    async def reload_nginx(self) -> None:
        for host in self.hosts:
            await self.run(host, ["systemctl", "reload", "nginx"])

    async def read_text(self) -> str | None:
        texts = {await self.fetch(host) for host in self.hosts}
        if len(texts) > 1:  # read-back fails: the hosts do not serve one split
            raise canarykit.RouterError(f"the hosts hold {len(texts)} different files")
        return texts.pop()


class RelayHAProxyRouter(HAProxyRouter):
    """HAProxyRouter whose runtime-API commands go through a command, such as ssh.

    `relay` reads one command line on its input and prints HAProxy's answer, for example
    ``["ssh", "lb1", "socat", "stdio", "/run/haproxy.sock"]``.
    """

    def __init__(self, *, relay: Sequence[str], **settings: Any) -> None:
        super().__init__(**settings)
        self.relay = list(relay)

    async def send(self, line: str) -> str:
        with anyio.fail_after(self.timeout):
            result = await anyio.run_process(self.relay, input=f"{line}\n".encode())
        return result.stdout.decode()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "upstream.conf"
        path.write_text("upstream app {\n    server app-v1:3000 weight=1;\n}\n")  # today
        router = NginxUpstreamRouter(path)

        def show(event: canarykit.events.RolloutEvent) -> None:
            if isinstance(event, canarykit.events.SplitConfirmed):
                print(f"t={event.time:>4.0f}s  canary at {event.split.canary_percent:g}%:")
                print("        " + path.read_text().replace("\n", "\n        ").rstrip())

        plan = canarykit.from_weights([10, 50], hold=120, final_bake=120, analysis_interval=30)
        simulation = simulate(
            plan,
            router=router,
            metrics=ScriptedMetrics(requests_per_second=1000, error_rate=0.01, seed=1),
            decider=threshold(bound("error_rate", max=0.02)),
            listeners=[show],
        )
        outcome = simulation.outcome
        print(
            f"outcome: {outcome.phase.value} after {outcome.finished_at:g} virtual seconds "
            f"({outcome.reason}); {len(outcome.verdicts)} windows judged"
        )
        print("final upstream block:\n" + path.read_text())
        if not outcome.promoted:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
