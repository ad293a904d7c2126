"""The metrics source's optional preflight check, made by the runner before traffic moves.

`PrometheusSource.preflight` refuses windows shorter than four scrape intervals (its own
tests, against a fake and a real Prometheus, are in test_prometheus_unit.py and
integration/test_prometheus_scrape.py); here, what the runner does with any source's.
"""

from __future__ import annotations

import logging

import anyio
import pytest

import canarykit as ck
from canarykit import Observation, Window
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock

pytestmark = pytest.mark.anyio

DECIDER = threshold(bound("error_rate", max=0.05))
PLAN = ck.linear(10, 30, hold=120, analysis_interval=30)


class Checked:
    """ScriptedMetrics with a preflight that records what it was asked and does `then`."""

    def __init__(self, then: BaseException | None = None, hang: bool = False) -> None:
        self.inner = ScriptedMetrics(seed=1)
        self.then = then
        self.hang = hang
        self.asked: list[float] = []

    async def collect(self, window: Window) -> Observation:
        return self.inner.observe(window)

    async def preflight(self, *, analysis_interval: float) -> None:
        self.asked.append(analysis_interval)
        if self.hang:
            await anyio.sleep_forever()
        if self.then is not None:
            raise self.then


class Unchecked:
    """A source without preflight."""

    async def collect(self, window: Window) -> Observation:
        return ScriptedMetrics(seed=1).observe(window)


def rollout(plan: ck.Plan, metrics: object, **options: object) -> ck.Rollout:
    options.setdefault("router", FakeRouter())
    options.setdefault("clock", VirtualClock())
    return ck.Rollout(plan, metrics=metrics, decider=DECIDER, **options)


def too_short() -> ck.ConfigError:
    return ck.ConfigError(
        "analysis_interval",
        30.0,
        "must be at least 4 scrape intervals (60 s): Prometheus scrapes the target "
        "{job='web'} behind the queries every 15 s",
    )


async def test_refused_windows_end_the_rollout_before_traffic_moves(anyio_backend, tmp_path):
    metrics = Checked(then=too_short())
    run = rollout(PLAN, metrics, store=tmp_path / "state", key="web")
    with pytest.raises(ck.ConfigError) as caught:
        await run.run()
    assert caught.value.field == "analysis_interval"
    assert metrics.asked == [30.0]
    assert run.router.applied == []
    assert run.phase is ck.Phase.PENDING
    assert run.timeline == ()
    # Nothing was recorded: once the windows are fixed, the same release simply runs.
    assert not list((tmp_path / "state").glob("web*.json"))


async def test_preflight_is_given_the_plans_shortest_window(anyio_backend):
    plan = ck.Plan(
        steps=[ck.SetWeight(10), ck.Analyze(seconds=60, interval=20), ck.SetWeight(100)],
        analysis_interval=45,
    )
    metrics = Checked()
    outcome = await rollout(plan, metrics).run()
    assert metrics.asked == [20.0]
    assert outcome.phase is ck.Phase.SUCCEEDED


async def test_a_plan_without_analysis_windows_is_not_preflighted(anyio_backend):
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(100)])
    metrics = Checked(then=too_short())
    outcome = await ck.Rollout(
        plan, router=FakeRouter(), metrics=metrics, clock=VirtualClock()
    ).run()
    assert metrics.asked == []
    assert outcome.phase is ck.Phase.SUCCEEDED


async def test_a_source_without_preflight_runs_as_before(anyio_backend):
    run = rollout(PLAN, Unchecked())
    outcome = await run.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert [s.canary_percent for s in run.router.applied] == [10, 40, 70, 100, 100]


async def test_a_preflight_that_fails_otherwise_is_logged_and_the_rollout_runs(
    anyio_backend, caplog
):
    metrics = Checked(then=ConnectionError("prometheus is down"))
    with caplog.at_level(logging.WARNING, logger="canarykit"):
        outcome = await rollout(PLAN, metrics).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert "preflight check of 30 s windows failed" in caplog.text
    assert "ConnectionError: prometheus is down" in caplog.text


async def test_a_preflight_that_hangs_is_cut_short_at_the_call_timeout(anyio_backend, caplog):
    metrics = Checked(hang=True)
    with caplog.at_level(logging.WARNING, logger="canarykit"):
        with anyio.fail_after(10):
            outcome = await rollout(PLAN, metrics, call_timeout=0.05).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert "timed out after 0.05 s, so it was not made" in caplog.text


async def test_a_resumed_rollout_is_not_preflighted_again(anyio_backend, tmp_path):
    # Traffic moved already: refusing the windows now would only roll it back.
    shared = {"store": tmp_path / "state", "key": "web", "router": FakeRouter()}
    shared["clock"] = VirtualClock()
    first = rollout(PLAN, Checked(), **shared)
    await first.run(stop_at=100)
    assert first.phase is ck.Phase.PROGRESSING
    metrics = Checked(then=too_short())
    outcome = await rollout(PLAN, metrics, **shared).run()
    assert metrics.asked == []
    assert outcome.phase is ck.Phase.SUCCEEDED
