"""Promote by upgrading stable: promote-stable, traffic back to stable, the canary emptied."""

import anyio
import pytest

import canarykit as ck
from canarykit.events import HookRan
from canarykit.hooks import Hooks
from canarykit.machine import HookPoint
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

PLAN = ck.from_weights([10, 50], hold=60)


def percents(router):
    return [split.canary_percent for split in router.applied]


async def run(*, hooks, clock, router):
    events = []
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks, listeners=[events.append])
    with anyio.fail_after(10):
        outcome = await rollout.run()
    return rollout, outcome, events


async def test_promote_stable_upgrades_then_moves_traffic_back_in_steps(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    calls = []

    def record(name):
        def hook(call):
            calls.append((name, clock.now(), router.current.canary_percent))

        return hook

    hooks = Hooks(
        promote_stable=record("promote-stable"),
        retire_stable=record("retire-stable"),
        retire_canary=record("retire-canary"),
        traffic_back=[50, 0],
        traffic_back_hold=5,
    )
    rollout, outcome, events = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.SUCCEEDED
    # Up to 100% on the canary, stable upgraded there, then back 50 -> 0 with a 5 s hold.
    assert percents(router) == [10.0, 50.0, 100.0, 50.0, 0.0, 0.0]
    assert calls == [
        ("promote-stable", 120.0, 100.0),
        ("retire-canary", 125.0, 0.0),  # the canary slot emptied; stable is not retired
    ]
    assert rollout.state.confirmed.is_stable_only
    assert "stable upgraded" in outcome.reason
    assert [e.hook for e in events if isinstance(e, HookRan)] == [
        "promote-stable",
        "retire-canary",
    ]


async def test_traffic_back_at_once_is_the_default(anyio_backend):
    clock, router = VirtualClock(), FakeRouter()
    hooks = Hooks(promote_stable=lambda call: None)
    _, outcome, _ = await run(hooks=hooks, clock=clock, router=router)
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router) == [10.0, 50.0, 100.0, 0.0, 0.0]
    assert outcome.finished_at == 120.0


async def test_a_failed_promote_stable_holds_traffic_at_the_canary_and_pauses(anyio_backend):
    # Rolling back to a stable that may be half upgraded would be wrong: hold at the
    # canary, which was judged good, and say why; resuming asks again.
    clock, router = VirtualClock(), FakeRouter()
    answers = iter([False, True])
    hooks = Hooks(promote_stable=lambda call: next(answers))
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks)
    with anyio.fail_after(10):
        paused = await rollout.run(stop_at=200)
    assert paused.phase is ck.Phase.PAUSED
    assert router.current.canary_percent == 100.0
    assert "promote-stable failed" in rollout.state.reason
    assert "held at the canary" in rollout.state.reason
    rollout.resume()
    with anyio.fail_after(10):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert router.current.is_stable_only
    assert 0.0 not in percents(router)[:3]  # never sent back to stable before the upgrade


async def test_a_router_failure_moving_traffic_back_holds_at_the_canary(anyio_backend):
    class RefusesStable(FakeRouter):
        async def apply(self, split):
            if split.is_stable_only:
                raise OSError("include file not writable")
            await super().apply(split)

    clock, router = VirtualClock(), RefusesStable()
    hooks = Hooks(promote_stable=lambda call: True, traffic_back=[50, 0])
    rollout = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks, apply_attempts=1)
    with anyio.fail_after(10):
        outcome = await rollout.run(stop_at=300)
    assert outcome.phase is ck.Phase.PAUSED
    assert "moving traffic back to stable failed at 0%" in rollout.state.reason
    assert router.current.canary_percent == 100.0  # back at the canary, not in between


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([50, 10], "traffic_back"),
        ([0, 0], "traffic_back[1]"),
        ([100, 0], "traffic_back[0]"),
        ([], "traffic_back"),
        ("0", "traffic_back"),
    ],
)
def test_traffic_back_must_decrease_to_zero(value, field):
    with pytest.raises(ck.ConfigError) as info:
        Hooks(traffic_back=value)
    assert info.value.field == field


def test_promote_stable_is_a_hook_point_after_confirm_promotion():
    points = list(HookPoint)
    assert points.index(HookPoint.PROMOTE_STABLE) == points.index(HookPoint.CONFIRM_PROMOTION) + 1
    assert not HookPoint.PROMOTE_STABLE.is_gate


async def test_a_runner_stopped_while_moving_traffic_back_is_resumed_from_the_router(
    anyio_backend,
):
    # promote-stable is asked again (it must be safe to repeat), and traffic goes back
    # from where the router is, never through the canary again.
    clock, router, store = VirtualClock(), FakeRouter(), ck.stores.MemoryStore()
    upgrades = []
    hooks = Hooks(
        promote_stable=lambda call: upgrades.append(call.weight),
        traffic_back=[50, 0],
        traffic_back_hold=5,
    )
    first = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks, store=store, key="web")
    with anyio.fail_after(10):
        stopped = await first.run(stop_at=122)
    assert stopped.phase is ck.Phase.PROMOTING
    assert router.current.canary_percent == 50.0
    second = ck.Rollout(PLAN, router=router, clock=clock, hooks=hooks, store=store, key="web")
    with anyio.fail_after(10):
        outcome = await second.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert upgrades == [100.0, 50.0]
    assert percents(router)[3:] == [50.0, 50.0, 0.0, 0.0]
