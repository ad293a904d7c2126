"""Release after release on loopback: real proxy, real app processes, real Prometheus.

`ReleaseLab` runs several releases in a row with one of the two handover models, and
counts from outside, by which app instance answered each real request, where traffic
was while canarykit said it was somewhere:

- ``"upgrade-stable"`` (Flagger's primary and canary): slot ``a`` is stable, slot ``b``
  the canary. Each release starts the new version in ``b`` (create-canary); once it is
  judged good and has all traffic, promote-stable restarts ``a`` with the new version,
  traffic goes back to ``a`` in steps, and retire-canary stops ``b``.
- ``"slots"`` (blue/green): a `SlotRouter` over slots ``a`` and ``b``; each release
  starts the new version in the idle slot, which the router presents as the canary; after
  promotion the roles swap, and the old live slot is stopped.

Each app answers with an ``X-Instance`` header naming its slot, so two instances of one
version (a canary and an upgraded stable) are told apart. It needs the nginx (or haproxy)
and prometheus binaries, and the `test` extra.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import attrs

from .._clock import SystemClock
from .._errors import ConfigError
from .._events import SplitConfirmed, VerdictReached
from .._hooks import Hooks
from .._plan import Plan
from .._protocols import Decider, TrafficRouter
from .._runner import Rollout
from .._verdict import VerdictKind
from ._demo_app import DemoApp
from ._load import LoadGenerator, Response
from ._processes import StartStop, free_port

__all__ = ["ReleaseLab", "ReleaseResult", "StepShare"]

Model = Literal["upgrade-stable", "slots"]
_SLOTS = ("a", "b")


@attrs.frozen(kw_only=True)
class StepShare:
    """One confirmed split, against what real requests saw while it was in force.

    `claimed`: the canary percent canarykit confirmed; `counted`: the percent of answered
    requests (in [`since`, `until`), epoch seconds) that the canary's instance answered.
    """

    since: float
    until: float
    claimed: float
    counted: float
    requests: int

    @property
    def error(self) -> float:
        """|counted - claimed|, in percentage points."""
        return abs(self.counted - self.claimed)


@attrs.frozen(kw_only=True)
class ReleaseResult:
    """One release: its outcome, the shares per confirmed split, and rollback timing.

    `rollback_s`: for a rolled-back release, seconds from the end of its first failed
    window to the router's confirmation of stable; `rollback_from_traffic_s` from its
    first canary traffic (when the bad version began to serve) instead.
    """

    release: str
    version: str
    bad: bool
    outcome: Any
    shares: tuple[StepShare, ...]
    seconds: float
    rollback_s: float | None = None
    rollback_from_traffic_s: float | None = None
    stable_after: str | None = None

    @property
    def max_share_error(self) -> float:
        """The largest |counted - claimed| over this release's steps (0 when none)."""
        return max((share.error for share in self.shares), default=0.0)


class ReleaseLab(StartStop):
    """Two app slots behind a real proxy, scraped by Prometheus, for releases in a row.

    Use it as a context manager, then ``await lab.release("r2", "v2", plan, decider)``
    for each release inside ``async with lab.traffic():``, which sends real requests
    through the proxy meanwhile. ``bad=True`` makes the new version fail
    `bad_error_rate` of its requests from the start. The releases are those of one
    policy: the same `key` and state directory (a `FileStore` under `directory`); only
    the release id differs. `live` names the slot that has stable traffic.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        proxy: Literal["nginx", "haproxy"] = "nginx",
        model: Model = "upgrade-stable",
        scrape_interval: float = 0.5,
        latency: float = 0.002,
        rate: float = 100.0,
        bad_error_rate: float = 0.3,
        traffic_back: Sequence[float] = (50.0, 0.0),
        traffic_back_hold: float = 1.0,
        margin: float = 0.3,
        linger: float = 1.0,
        key: str = "web",
    ) -> None:
        if proxy not in ("nginx", "haproxy"):
            raise ConfigError("proxy", proxy, "must be 'nginx' or 'haproxy'")
        if model not in ("upgrade-stable", "slots"):
            raise ConfigError("model", model, "must be 'upgrade-stable' or 'slots'")
        self.directory = Path(directory)
        self.proxy = proxy
        self.model = model
        self.scrape_interval = scrape_interval
        self.latency = latency
        self.rate = rate
        self.bad_error_rate = bad_error_rate
        self.traffic_back = tuple(traffic_back)
        self.traffic_back_hold = traffic_back_hold
        self.margin = margin
        self.linger = linger
        self.key = key
        self._stack = contextlib.ExitStack()
        self.ports = {slot: 0 for slot in _SLOTS}
        self.apps: dict[str, DemoApp | None] = {slot: None for slot in _SLOTS}
        self.live = "a"
        self.router: TrafficRouter
        self.url = ""
        self.load: LoadGenerator | None = None
        # (epoch seconds, canary percent, the canary's slot) for every confirmed split.
        self.confirmations: list[tuple[float, float, str]] = []

    # ------------------------------------------------------------------ processes

    def address(self, slot: str) -> str:
        """The loopback address of `slot`'s app."""
        return f"127.0.0.1:{self.ports[slot]}"

    def start(self) -> None:
        """Start v1 in slot a, Prometheus scraping both slots, and the proxy."""
        from ._prometheus_server import PrometheusServer

        self.directory.mkdir(parents=True, exist_ok=True)
        for slot in _SLOTS:
            self.ports[slot] = free_port()
        self._start_app("a", "v1")
        self._stack.callback(self._stop_apps)
        self.prometheus = self._stack.enter_context(
            PrometheusServer(
                self.directory / "prometheus",
                targets=[self.address(slot) for slot in _SLOTS],
                scrape_interval=self.scrape_interval,
            )
        )
        self.router = self._make_router()
        self.prometheus.wait_for_target(self.address("a"))

    def _make_router(self) -> TrafficRouter:
        directory = self.directory / self.proxy
        directory.mkdir(exist_ok=True)
        a, b = [self.address("a")], [self.address("b")]
        if self.proxy == "nginx":
            from ._nginx_server import NginxServer

            server: Any = self._stack.enter_context(NginxServer(directory, stable=a, canary=b))
        else:
            from ._haproxy_server import HAProxyServer

            server = self._stack.enter_context(HAProxyServer(directory, stable=a, canary=b))
        self.url = server.url
        self.server = server
        if self.model == "upgrade-stable":
            router: TrafficRouter = server.router
            return router
        from ..routers._slots import SlotRouter

        return SlotRouter.swapping(server.router, slots=("a", "b"))

    def start_app(self, slot: str, version: str, error_rate: float = 0.0) -> None:
        """Start `version` in `slot` (stopping what ran there) and wait until it is scraped."""
        self._stop_app(slot)
        self._start_app(slot, version, error_rate)
        self.prometheus.wait_for_target(self.address(slot))

    def _start_app(self, slot: str, version: str, error_rate: float = 0.0) -> None:
        app = DemoApp(
            self.directory,
            version=version,
            port=self.ports[slot],
            instance=slot,
            error_rate=error_rate,
            latency=self.latency,
        )
        app.start()
        self.apps[slot] = app

    def _stop_app(self, slot: str) -> None:
        app = self.apps[slot]
        if app is not None:
            app.stop()
            self.apps[slot] = None

    def _stop_apps(self) -> None:
        for slot in _SLOTS:
            self._stop_app(slot)

    def stop(self) -> None:
        """Stop everything the lab started."""
        self._stack.close()

    def version_in(self, slot: str) -> str | None:
        """The version `slot` runs, or None when it is empty."""
        app = self.apps[slot]
        return None if app is None else app.version

    # ------------------------------------------------------------------ traffic

    @contextlib.asynccontextmanager
    async def traffic(self) -> Any:
        """Send real requests through the proxy for as long as the block runs."""
        load = LoadGenerator(f"{self.url}/", rate=self.rate, concurrency=8, timeout=5.0)
        self.load = load
        async with anyio.create_task_group() as group:
            group.start_soon(load.run)
            try:
                yield load
            finally:
                await anyio.sleep(self.margin * 2)
                load.stop()

    def shares(self, since: float, until: float) -> tuple[StepShare, ...]:
        """Each confirmed split in [since, until) against the requests answered under it."""
        assert self.load is not None
        marks = [mark for mark in self.confirmations if since <= mark[0] < until]
        found = []
        for index, (at, percent, canary) in enumerate(marks):
            end = marks[index + 1][0] if index + 1 < len(marks) else until
            # Skip the moment of the change itself: a request in flight through an old
            # worker, or sent just before the confirmation, belongs to neither side.
            start, stop = at + self.margin, end - self.margin
            answered = [r for r in self.load.responses if start <= r.at < stop and r.instance]
            if len(answered) < 20:
                continue  # too short to count
            served = sum(1 for r in answered if r.instance == canary)
            counted = 100.0 * served / len(answered)
            found.append(
                StepShare(
                    since=start,
                    until=stop,
                    claimed=percent,
                    counted=counted,
                    requests=len(answered),
                )
            )
        return tuple(found)

    # ------------------------------------------------------------------ releases

    async def release(
        self,
        release: str,
        version: str,
        plan: Plan,
        decider: Decider,
        *,
        bad: bool = False,
        **rollout_options: Any,
    ) -> ReleaseResult:
        """Run one release of `version` with this lab's handover model."""
        from ..metrics import PrometheusSource

        started = time.time()
        stable_slot = self.live
        canary_slot = "b" if self.model == "upgrade-stable" else _other(stable_slot)
        stable_version = self.version_in(stable_slot)
        assert stable_version is not None
        verdicts: list[VerdictReached] = []

        def listener(event: object) -> None:
            if isinstance(event, SplitConfirmed):
                self.confirmations.append((time.time(), event.split.canary_percent, canary_slot))
            elif isinstance(event, VerdictReached):
                verdicts.append(event)

        async def create_canary(call: object) -> None:
            error_rate = self.bad_error_rate if bad else 0.0
            await anyio.to_thread.run_sync(self._start_app, canary_slot, version, error_rate)
            await anyio.to_thread.run_sync(
                self.prometheus.wait_for_target, self.address(canary_slot)
            )

        async def retire_canary(call: object) -> None:
            await anyio.to_thread.run_sync(self._stop_app, canary_slot)

        async def promote_stable(call: object) -> None:
            # The canary has all traffic: restart stable's app with the new version.
            def upgrade() -> None:
                self._stop_app(stable_slot)
                self._start_app(stable_slot, version)

            await anyio.to_thread.run_sync(upgrade)

        async def retire_stable(call: object) -> None:
            # Blue/green: the new version is live in the other slot; empty the old one.
            await anyio.to_thread.run_sync(self._stop_app, stable_slot)

        # The hooks take a HookCall; the attrs converter accepts any callable.
        options: dict[str, Any] = {"create_canary": create_canary, "call_timeout": 30}
        options["retire_canary"] = retire_canary
        if self.model == "upgrade-stable":
            options["promote_stable"] = promote_stable
            options["traffic_back"] = self.traffic_back
            options["traffic_back_hold"] = self.traffic_back_hold
        else:
            options["retire_stable"] = retire_stable
        hooks = Hooks(**options)
        metrics = PrometheusSource(
            url=self.prometheus.url,
            stable=stable_version,
            # The same release again finds stable already at its version; that rollout
            # ends before it reads a metric, but the source must name two versions.
            canary=version if version != stable_version else f"{version}.again",
            settle=self.scrape_interval,
        )
        saved: dict[str, Any] = {
            "store": self.directory / "state",
            "key": self.key,
            "release": release,
        }
        saved.update(rollout_options)
        rollout = Rollout(
            plan,
            router=self.router,
            metrics=metrics,
            decider=decider,
            clock=SystemClock(),
            hooks=hooks,
            listeners=[listener],
            **saved,
        )
        outcome = await rollout.run()
        if self.model == "slots" and outcome.phase.value == "succeeded":
            from ..routers._slots import SlotRouter

            assert isinstance(self.router, SlotRouter)
            await self.router.swap()
            self.live = canary_slot
            # Traffic-neutral: the new live slot is stable now, the old one the canary.
            split = await self.router.read()
            assert split is not None
            self.confirmations.append((time.time(), split.canary_percent, stable_slot))
        ended = time.time()
        await anyio.sleep(self.linger)  # traffic under the final split, to count it
        rollback_s = from_traffic = None
        failed = [v for v in verdicts if v.verdict.kind is VerdictKind.FAIL]
        if failed:
            back = [at for at, percent, _ in self.confirmations if at >= started and percent == 0]
            first_traffic = [
                at for at, percent, _ in self.confirmations if at >= started and percent > 0
            ]
            if back and first_traffic:
                rollback_s = back[-1] - failed[0].end
                from_traffic = back[-1] - first_traffic[0]
        return ReleaseResult(
            release=release,
            version=version,
            bad=bad,
            outcome=outcome,
            shares=self.shares(started, ended + self.linger),
            seconds=ended - started,
            rollback_s=rollback_s,
            rollback_from_traffic_s=from_traffic,
            stable_after=self.version_in(self.live),
        )

    def served_by(self, since: float, until: float = math.inf) -> dict[str | None, int]:
        """Requests answered in [since, until), by version."""
        assert self.load is not None
        counts: dict[str | None, int] = {}
        responses: list[Response] = self.load.responses
        for response in responses:
            if since <= response.at < until:
                counts[response.version] = counts.get(response.version, 0) + 1
        return counts

    def __repr__(self) -> str:
        return f"<ReleaseLab {self.model} on {self.proxy} at {self.url or 'not started'}>"


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"
