"""A dress rehearsal on loopback: a real proxy, two real app versions, a real Prometheus.

`CanaryLab` starts two `DemoApp` versions (v1 stable, v2 canary), a real nginx or HAProxy
in front of them with its canarykit router, and a real Prometheus scraping both, all on
free loopback ports under one directory. `CanaryLab.rehearse` then runs a rollout with
the router and a `PrometheusSource` while a `LoadGenerator` sends traffic through the
proxy, optionally switching a fault on in v2 part-way, and reports what users saw::

    with CanaryLab(tmp, proxy="nginx") as lab:
        report = anyio.run(lab.rehearse, plan, decider, Fault(error_rate=0.05))
        assert report.outcome.rolled_back and report.canary_served_after_end == 0

It needs the nginx (or haproxy) and prometheus binaries, and the `test` extra.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs

from .._clock import SystemClock
from .._errors import ConfigError
from .._events import SplitConfirmed
from .._plan import Plan
from .._protocols import Decider, TrafficRouter
from .._runner import Rollout
from .._split import STABLE_ONLY, TrafficSplit
from ._demo_app import DemoApp
from ._load import LoadGenerator
from ._processes import StartStop

__all__ = ["CanaryLab", "Fault", "Rehearsal"]


@attrs.frozen(kw_only=True)
class Fault:
    """A regression to switch on in the canary: a share of 500s and extra seconds per request.

    It starts once the canary has been confirmed at `at_percent` or more (the first
    canary step by default), so the rollout sees a healthy canary before it goes bad.
    """

    error_rate: float = 0.0
    extra_latency: float = 0.0
    at_percent: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ConfigError("error_rate", self.error_rate, "must be in [0, 1]")
        if not 0 <= self.extra_latency <= 30:
            raise ConfigError("extra_latency", self.extra_latency, "must be in [0, 30] seconds")
        if not 0 <= self.at_percent <= 100:
            raise ConfigError("at_percent", self.at_percent, "must be in [0, 100]")


@attrs.frozen(kw_only=True)
class Rehearsal:
    """What a rehearsal did and what users saw.

    - `outcome`: the rollout's `RolloutOutcome`.
    - `read_back`: the split the router reports after the rollout ended.
    - `fault_at`: when the fault was switched on (epoch seconds), or None.
    - `canary_last_served`: when v2 last answered a request, or None.
    - `served_after_end`: requests sent after the rollout ended, by the version that answered.
    - `bad_requests`: requests answered with a 5xx after the fault began (over the whole
      run when there was no fault).
    - `slow_requests`: requests that took longer than 100 ms, counted likewise.
    - `unanswered`: requests that got no HTTP answer at all (a connection closed by a
      reload, a timeout), counted likewise.
    - `requests`: all requests sent.
    """

    outcome: Any
    read_back: TrafficSplit | None
    fault_at: float | None
    canary_last_served: float | None
    served_after_end: dict[str | None, int]
    bad_requests: int
    slow_requests: int
    unanswered: int
    requests: int

    @property
    def seconds_to_rollback(self) -> float | None:
        """Seconds from the fault's onset to the last request the canary served."""
        if self.fault_at is None or self.canary_last_served is None:
            return None
        return max(0.0, self.canary_last_served - self.fault_at)


class CanaryLab(StartStop):
    """Two demo app versions behind a real proxy with its router, scraped by Prometheus.

    Use it as a context manager. After entering: `router` (an `NginxRouter` or an
    `HAProxyRouter`), `metrics` (a `PrometheusSource` for versions v1 and v2), `url` (the
    proxy), `stable` and `canary` (the `DemoApp`s) and `prometheus`.

    - `proxy`: "nginx" or "haproxy".
    - `scrape_interval`: Prometheus' scrape interval in seconds (0.5); analysis windows
      must be at least four of these long (the Prometheus source's preflight refuses
      shorter ones).
    - `latency`: each app's own time per request, in seconds.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        proxy: Literal["nginx", "haproxy"] = "nginx",
        scrape_interval: float = 0.5,
        latency: float = 0.002,
    ) -> None:
        if proxy not in ("nginx", "haproxy"):
            raise ConfigError("proxy", proxy, "must be 'nginx' or 'haproxy'")
        self.directory = Path(directory)
        self.proxy = proxy
        self.scrape_interval = scrape_interval
        self.latency = latency
        self._stack = contextlib.ExitStack()
        self.router: TrafficRouter
        self.metrics: Any
        self.url = ""

    def start(self) -> None:
        """Start the apps, Prometheus and the proxy; wait until Prometheus scrapes both apps."""
        from ..metrics import PrometheusSource
        from ._prometheus_server import PrometheusServer

        self.directory.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        try:
            self.stable = stack.enter_context(
                DemoApp(self.directory, version="v1", latency=self.latency)
            )
            self.canary = stack.enter_context(
                DemoApp(self.directory, version="v2", latency=self.latency)
            )
            self.prometheus = stack.enter_context(
                PrometheusServer(
                    self.directory / "prometheus",
                    targets=[self.stable.address, self.canary.address],
                    scrape_interval=self.scrape_interval,
                )
            )
            server = stack.enter_context(self._proxy_server())
            self.router = server.router
            self.url = server.url
            for app in (self.stable, self.canary):
                self.prometheus.wait_for_target(app.address)
            self.metrics = PrometheusSource(
                url=self.prometheus.url,
                stable="v1",
                canary="v2",
                settle=self.scrape_interval,
            )
        except BaseException:
            stack.close()
            raise

    def _proxy_server(self) -> Any:
        directory = self.directory / self.proxy
        directory.mkdir(exist_ok=True)
        stable, canary = [self.stable.address], [self.canary.address]
        if self.proxy == "nginx":
            from ._nginx_server import NginxServer

            return NginxServer(directory, stable=stable, canary=canary)
        from ._haproxy_server import HAProxyServer

        return HAProxyServer(directory, stable=stable, canary=canary)

    def stop(self) -> None:
        """Stop everything the lab started."""
        self._stack.close()

    def load(self, *, rate: float = 100.0, concurrency: int = 8) -> LoadGenerator:
        """A load generator aimed at the proxy."""
        return LoadGenerator(f"{self.url}/", rate=rate, concurrency=concurrency)

    async def reset(self) -> None:
        """Heal both apps and send all traffic to stable, for the next rehearsal."""
        for app in (self.stable, self.canary):
            await anyio.to_thread.run_sync(app.set_fault)
        await self.router.apply(STABLE_ONLY)

    async def rehearse(
        self,
        plan: Plan,
        decider: Decider,
        fault: Fault | None = None,
        *,
        rate: float = 100.0,
        linger: float = 2.0,
        **rollout_options: Any,
    ) -> Rehearsal:
        """Run `plan` with real traffic at `rate` per second; switch `fault` on in v2.

        Traffic continues for `linger` seconds after the rollout ends, so the report can
        tell where users' requests went once it was over.
        """
        await self.reset()
        load = self.load(rate=rate)
        fault_at: list[float] = []

        async def start_fault(split: TrafficSplit) -> None:
            assert fault is not None
            await anyio.to_thread.run_sync(
                lambda: self.canary.set_fault(
                    error_rate=fault.error_rate, extra_latency=fault.extra_latency
                )
            )
            fault_at.append(time.time())

        async with anyio.create_task_group() as group:

            def listener(event: object) -> None:
                if (
                    fault is not None
                    and not fault_at
                    and isinstance(event, SplitConfirmed)
                    and event.split.canary_percent > 0
                    and event.split.canary_percent >= fault.at_percent
                ):
                    fault_at.append(math.nan)  # claimed; the real time is set once it is on
                    group.start_soon(start_fault, event.split)

            group.start_soon(load.run)
            rollout = Rollout(
                plan,
                router=self.router,
                metrics=self.metrics,
                decider=decider,
                clock=SystemClock(),
                listeners=[listener],
                **rollout_options,
            )
            outcome = await rollout.run()
            ended = time.time()
            await anyio.sleep(linger)
            load.stop()
        fault_time = fault_at[-1] if fault_at and not math.isnan(fault_at[-1]) else None
        since = fault_time if fault_time is not None else -math.inf
        responses = [r for r in load.responses if r.at >= since]
        return Rehearsal(
            outcome=outcome,
            read_back=await self.router.read(),
            fault_at=fault_time,
            canary_last_served=load.last_served_by("v2"),
            served_after_end=dict(
                Counter(r.version for r in load.responses if r.at - r.latency >= ended)
            ),
            bad_requests=sum(1 for r in responses if r.status is not None and r.status >= 500),
            slow_requests=sum(1 for r in responses if r.latency > 0.1),
            unanswered=sum(1 for r in responses if r.status is None),
            requests=len(load.responses),
        )

    def __repr__(self) -> str:
        return f"<CanaryLab {self.proxy} at {self.url or 'not started'}>"
