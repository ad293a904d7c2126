"""FanOutRouter with fake members: all apply, all confirm, all go back on a partial failure.

FakeRouter numbers its calls across `apply` and `read`: a fan-out's first apply reads
every member (call 1), applies (call 2) and reads back (call 3).
"""

from __future__ import annotations

import anyio
import pytest

from canarykit import (
    ConfigError,
    HeaderRoute,
    RouterCapabilities,
    RouterError,
    TrafficSplit,
    from_weights,
)
from canarykit.deciders import bound, threshold
from canarykit.events import RouterCallFailed
from canarykit.routers import FanOutRouter
from canarykit.testing import FakeRouter, ScriptedMetrics, simulate

pytestmark = pytest.mark.anyio

TEN = TrafficSplit(canary_percent=10)
FIFTY = TrafficSplit(canary_percent=50)


def members(count=3, **faults):
    """`count` fakes on targets lb-0, lb-1, ...; `faults` maps 'lb-N' to FakeRouter options."""
    return [FakeRouter(traffic_target=f"lb-{i}", **faults.get(f"lb{i}", {})) for i in range(count)]


async def test_apply_goes_to_every_member_and_each_confirms():
    routers = members()
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    assert [r.current for r in routers] == [TEN] * 3
    assert [r.calls for r in routers] == [["read", "apply", "read"]] * 3
    assert fan.confirmed == TEN
    assert await fan.read() == TEN


async def test_a_partial_failure_puts_every_member_back_to_the_last_common_split():
    routers = members(lb1={"fail_on": {4}})  # lb-1's second apply fails
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    with pytest.raises(RouterError, match=r"1 of 3 routers failed .*lb-1: RouterFault") as caught:
        await fan.apply(FIFTY)
    assert "every router is back at canary 10%" in str(caught.value)
    assert [r.current for r in routers] == [TEN] * 3
    # lb-1 never moved, so it is read and left alone; the others get 10% again.
    assert routers[1].applied == [TEN]
    assert routers[0].applied == routers[2].applied == [TEN, FIFTY, TEN]
    assert fan.confirmed == TEN
    await fan.apply(FIFTY)  # the retry the runner makes
    assert [r.current for r in routers] == [FIFTY] * 3


async def test_a_member_whose_read_back_differs_is_a_failure_and_goes_back():
    class Lagging(FakeRouter):
        """A load balancer that silently keeps 10% when told 50%."""

        async def apply(self, split):
            await super().apply(TEN if split == FIFTY else split)

    routers = [*members(2), Lagging(traffic_target="lb-lag")]
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    with pytest.raises(RouterError, match="lb-lag: RouterError: read back canary 10%"):
        await fan.apply(FIFTY)
    assert [r.current for r in routers] == [TEN] * 3


async def test_a_members_config_error_is_raised_as_it_is_after_the_put_back():
    class Refusing(FakeRouter):
        async def apply(self, split):
            if split == FIFTY:
                raise ConfigError("canary_percent", 50, "not here")
            await super().apply(split)

    routers = [*members(2), Refusing(traffic_target="lb-r")]
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    with pytest.raises(ConfigError, match="not here"):
        await fan.apply(FIFTY)
    assert [r.current for r in routers] == [TEN] * 3


async def test_a_put_back_that_fails_is_named():
    routers = members(lb0={"fail_on": {5, 7}})  # its read-back, then its put-back fail
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    with pytest.raises(RouterError, match=r"putting every router back to canary 10% failed too"):
        await fan.apply(FIFTY)


async def test_members_on_different_splits_have_nothing_to_go_back_to():
    routers = members(2)
    routers[1].current = FIFTY
    fan = FanOutRouter(routers)
    with pytest.raises(RouterError, match="different splits: lb-0: canary 0%, lb-1: canary 50%"):
        await fan.read()
    routers[0].fail_on = {3}
    with pytest.raises(RouterError, match="no split in common before, so each is left"):
        await fan.apply(TEN)
    assert fan.confirmed is None
    await fan.apply(TEN)
    assert fan.confirmed == TEN


async def test_a_cancelled_apply_puts_every_member_back_first():
    routers = members(lb2={"hang_on": {5}})
    fan = FanOutRouter(routers)
    await fan.apply(TEN)
    with anyio.move_on_after(0.2):
        await fan.apply(FIFTY)
    assert [r.current for r in routers] == [TEN] * 3


def test_capabilities_are_what_every_member_can_do():
    full = FakeRouter(traffic_target="a")
    weights_only = FakeRouter(
        traffic_target="b", capabilities=RouterCapabilities(weights=True, read_back=True)
    )
    assert FanOutRouter([full, weights_only]).capabilities == RouterCapabilities(
        weights=True, header_routes=False, mirroring=False, read_back=True
    )


def test_the_target_names_every_member_in_one_order():
    a, b = FakeRouter(traffic_target="nginx:/a"), FakeRouter(traffic_target="haproxy:/b")
    assert FanOutRouter([a, b]).traffic_target == "fanout:haproxy:/b + nginx:/a"
    assert FanOutRouter([b, a]).traffic_target == FanOutRouter([a, b]).traffic_target


@pytest.mark.parametrize(
    ("routers", "field"),
    [
        ([FakeRouter()], "routers"),
        ("lb", "routers"),
        ([FakeRouter(traffic_target="x"), FakeRouter(traffic_target="x")], "routers[1]"),
        ([FakeRouter(), object()], "routers[1]"),
    ],
)
def test_members_are_checked(routers, field):
    with pytest.raises(ConfigError) as caught:
        FanOutRouter(routers)
    assert caught.value.field == field


def test_check_split_asks_every_member():
    class Picky(FakeRouter):
        def check_split(self, split):
            if split.header_routes:
                raise ConfigError("header_routes", split.header_routes, "weights only")

    fan = FanOutRouter([FakeRouter(traffic_target="a"), Picky(traffic_target="b")])
    fan.check_split(TEN)
    routes = (HeaderRoute(header="X-Canary", value="1"),)
    with pytest.raises(ConfigError, match="weights only"):
        fan.check_split(TrafficSplit(header_routes=routes))


def test_a_rollout_over_a_fan_out_retries_a_partial_failure_and_promotes():
    routers = members(lb1={"fail_on": {6}})  # lb-1's second apply (its sixth call)
    plan = from_weights([10, 50], hold=60, final_bake=60, analysis_interval=30)
    events = []
    outcome = simulate(
        plan,
        router=FanOutRouter(routers),
        metrics=ScriptedMetrics(requests_per_second=100, error_rate=0.0, seed=1),
        decider=threshold(bound("error_rate", max=0.02)),
        listeners=[events.append],
    ).outcome
    assert outcome.promoted
    failures = [event for event in events if isinstance(event, RouterCallFailed)]
    assert len(failures) == 1
    assert "lb-1: RouterFault" in failures[0].reason
    assert {r.current.canary_percent for r in routers} == {100}
