"""SlotRouter: the idle slot is the canary; after promotion the slots swap, moving nothing."""

import pytest

import canarykit as ck
from canarykit.routers import SlotRouter

pytestmark = pytest.mark.anyio


class Balancer:
    """One load balancer: the share of traffic on slot b, as HAProxy's weights hold it."""

    def __init__(self, on_b=0.0):
        self.on_b = on_b
        self.applies = 0


class Orientation:
    """A router over `balancer` whose stable servers are slot `live`."""

    capabilities = ck.RouterCapabilities(weights=True, read_back=True)
    traffic_target = "lb"

    def __init__(self, balancer, live):
        self.balancer, self.live = balancer, live

    async def apply(self, split):
        self.balancer.applies += 1
        p = split.canary_percent
        self.balancer.on_b = p if self.live == "a" else 100.0 - p

    async def read(self):
        b = self.balancer.on_b
        return ck.TrafficSplit(canary_percent=b if self.live == "a" else 100.0 - b)


def slots(balancer):
    return SlotRouter({"a": Orientation(balancer, "a"), "b": Orientation(balancer, "b")})


async def test_the_live_slot_is_read_from_the_router_and_the_idle_one_is_the_canary(
    anyio_backend,
):
    balancer = Balancer(on_b=100.0)  # b is live
    router = slots(balancer)
    assert (await router.read()).is_stable_only
    assert (router.live, router.idle) == ("b", "a")
    await router.apply(ck.TrafficSplit(canary_percent=20))
    assert balancer.on_b == 80.0  # 20% to the idle slot a


async def test_after_promotion_the_slots_swap_without_moving_traffic(anyio_backend):
    balancer = Balancer()
    router = slots(balancer)
    await router.apply(ck.TrafficSplit(canary_percent=100))  # promoted: all traffic on b
    assert await router.swap() == "b"
    assert balancer.on_b == 100.0  # nothing moved
    assert (await router.read()).is_stable_only  # the next release starts from stable
    assert router.idle == "a"


async def test_swap_is_refused_unless_the_idle_slot_has_all_traffic(anyio_backend):
    balancer = Balancer()
    router = slots(balancer)
    await router.apply(ck.TrafficSplit(canary_percent=50))
    with pytest.raises(ck.RouterError, match="does not have all traffic"):
        await router.swap()


async def test_a_fresh_slot_router_cannot_guess_the_orientation_of_a_split(anyio_backend):
    # HAProxy's weights do not say which group is "stable": between the slots, refuse.
    with pytest.raises(ck.RouterError, match="cannot tell which slot is live"):
        await slots(Balancer(on_b=30.0)).read()


def test_a_slot_router_takes_exactly_two_slots():
    with pytest.raises(ck.ConfigError) as info:
        SlotRouter({"a": Orientation(Balancer(), "a")})
    assert info.value.field == "routers"
