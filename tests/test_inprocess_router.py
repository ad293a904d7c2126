"""The in-process router: smooth weighted round-robin, sticky keys, header routes, and a
real rollout driven through it with the in-process recorder."""

# Imports internals on purpose: a router's helpers.

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Mapping
from fractions import Fraction

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import canarykit as ck
from canarykit import Arm, ConfigError, HeaderRoute, TrafficRouter, TrafficSplit
from canarykit.deciders import bound, threshold
from canarykit.metrics import Recorder
from canarykit.routers import WeightedRouter
from canarykit.routers._inprocess import MAX_PERIOD, canary_share, smooth_sequence
from canarykit.testing import VirtualClock, simulate

CHROME = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")

# Percents with up to two decimals, the ones a router shows exactly.
two_decimal_percents = st.integers(min_value=0, max_value=10_000).map(lambda k: k / 100)
any_percents = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
keys = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers())


def router_at(percent: float, salt: str | bytes = "test") -> WeightedRouter:
    return WeightedRouter(initial=TrafficSplit(canary_percent=percent), salt=salt)


def max_prefix_deviation(arms: list[Arm], share: Fraction) -> Fraction:
    """The largest |canary picks - n * share| over the prefixes of `arms`, exactly."""
    a, b = share.numerator, share.denominator
    canary = worst = 0
    for n, arm in enumerate(arms, 1):
        canary += arm is Arm.CANARY
        worst = max(worst, abs(canary * b - n * a))  # integers: b times the deviation
    return Fraction(worst, b)


def nginx_reference(weights: list[int], turns: int) -> list[int]:
    """nginx's smooth weighted round-robin for any number of servers, as ALGORITHMS.md has it."""
    current = [0] * len(weights)
    total = sum(weights)
    chosen = []
    for _ in range(turns):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: (current[i], -i))  # first on a tie
        current[best] -= total
        chosen.append(best)
    return chosen


# -- the TrafficRouter protocol ---------------------------------------------------------


def test_is_a_traffic_router_with_weights_header_routes_and_read_back():
    router = WeightedRouter()
    assert isinstance(router, TrafficRouter)
    caps = router.capabilities
    assert (caps.weights, caps.header_routes, caps.read_back, caps.mirroring) == (
        True,
        True,
        True,
        False,
    )


def test_starts_stable_only_or_at_the_initial_split():
    assert anyio.run(WeightedRouter().read) == TrafficSplit()
    assert all(WeightedRouter().pick() is Arm.STABLE for _ in range(100))
    initial = TrafficSplit(canary_percent=25)
    assert WeightedRouter(initial=initial).current == initial


@given(
    percent=any_percents,
    routes=st.lists(
        st.sampled_from(
            [CHROME, HeaderRoute(header="X-Canary", value="1"), HeaderRoute(header="A", value="b")]
        ),
        max_size=3,
    ),
)
def test_apply_then_read_gives_back_the_same_split(percent, routes):
    router = WeightedRouter()
    split = TrafficSplit(canary_percent=percent, header_routes=routes)
    anyio.run(router.apply, split)
    assert anyio.run(router.read) == split
    assert router.current == split


def test_apply_refuses_mirroring_and_non_splits_and_keeps_the_split_in_force():
    router = router_at(10)
    with pytest.raises(ConfigError) as err:
        anyio.run(router.apply, TrafficSplit(canary_percent=20, mirror_percent=5))
    assert err.value.field == "split.mirror_percent"
    with pytest.raises(ConfigError) as err:
        anyio.run(router.apply, {"canary_percent": 20})  # type: ignore[arg-type]
    assert err.value.field == "split"
    assert router.current == TrafficSplit(canary_percent=10)
    with pytest.raises(ConfigError) as err:
        WeightedRouter(initial=TrafficSplit(mirror_percent=1))
    assert err.value.field == "initial.mirror_percent"


def test_a_plan_with_a_mirror_step_is_refused_before_traffic_moves():
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.SetMirror(5), ck.Pause(60)])
    with pytest.raises(ck.UnsupportedPlanError):
        ck.Rollout(plan, router=WeightedRouter())


@pytest.mark.parametrize("salt", [None, 3, ["a"]])
def test_salt_must_be_text_or_bytes(salt):
    with pytest.raises(ConfigError) as err:
        WeightedRouter(salt=salt)
    assert err.value.field == "salt"


# -- pick(): smooth weighted round-robin --------------------------------------------------


@given(percent=two_decimal_percents)
def test_every_prefix_is_within_one_request_of_the_exact_share(percent):
    router = router_at(percent)
    period = sum(router.weights)
    picks = [router.pick() for _ in range(period + 100)]  # a period, then it starts again
    assert max_prefix_deviation(picks, Fraction(percent) / 100) < 1


@given(percent=any_percents)
def test_any_percent_gets_the_nearest_share_in_ten_thousand_and_never_zero(percent):
    router = router_at(percent)
    stable, canary = router.weights
    share = Fraction(canary, stable + canary)
    assert stable + canary <= MAX_PERIOD
    assert math.gcd(stable, canary) == 1
    if 0 < percent < 0.01:
        assert share == Fraction(1, MAX_PERIOD)
    elif 99.99 < percent < 100:
        assert share == Fraction(MAX_PERIOD - 1, MAX_PERIOD)
    else:
        assert abs(share - Fraction(percent) / 100) <= Fraction(1, 2 * MAX_PERIOD)
    assert (share > 0) == (percent > 0)
    assert (share < 1) == (percent < 100)
    picks = [router.pick() for _ in range(min(stable + canary + 5, 2000))]
    assert max_prefix_deviation(picks, share) < 1


def test_half_a_percent_is_one_request_in_two_hundred():
    router = router_at(0.5)
    assert router.weights == (199, 1)
    picks = [router.pick() for _ in range(2000)]
    assert picks.count(Arm.CANARY) == 10
    assert picks[:200].count(Arm.CANARY) == 1


@pytest.mark.parametrize(
    ("percent", "share"),
    [(33.3, Fraction(333, 1000)), (100 / 3, Fraction(1, 3)), (0.01, Fraction(1, 10_000))],
)
def test_shares_are_the_percent_in_lowest_terms(percent, share):
    assert canary_share(percent) == share


def test_a_percent_too_small_for_the_period_still_reaches_the_canary():
    assert canary_share(0.0001) == Fraction(1, MAX_PERIOD)
    assert canary_share(99.9999) == Fraction(MAX_PERIOD - 1, MAX_PERIOD)


@given(canary=st.integers(0, 300), stable=st.integers(0, 300))
def test_the_sequence_is_nginx_smooth_weighted_round_robin(canary, stable):
    if canary + stable == 0:
        return
    reference = nginx_reference([stable, canary], canary + stable)
    assert list(smooth_sequence(canary, stable)) == reference


def test_nine_to_one_gives_nine_hundred_to_one_hundred_like_nginx():
    router = router_at(10)
    picks = [router.pick() for _ in range(1000)]
    assert picks.count(Arm.CANARY) == 100
    # Smooth: the canary's turns are spread out, never two in a row.
    assert all(not (a is b is Arm.CANARY) for a, b in itertools.pairwise(picks))


@given(before=two_decimal_percents, after=two_decimal_percents, picked=st.integers(0, 500))
def test_after_a_weight_change_every_prefix_keeps_to_the_new_share(before, after, picked):
    router = router_at(before)
    for _ in range(picked):
        router.pick()
    anyio.run(router.apply, TrafficSplit(canary_percent=after))
    picks = [router.pick() for _ in range(1000)]
    assert max_prefix_deviation(picks, Fraction(after) / 100) < 1


def test_reapplying_the_same_weights_carries_on_in_the_same_sequence():
    router = router_at(50)
    assert router.pick() is Arm.STABLE
    anyio.run(router.apply, TrafficSplit(canary_percent=50, header_routes=[CHROME]))
    assert router.pick() is Arm.CANARY  # not a fresh start at STABLE


def test_concurrent_picks_from_threads_take_distinct_turns():
    router = router_at(10)
    counts: list[int] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        counts.append(sum(router.pick() is Arm.CANARY for _ in range(25_000)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 10_000  # exactly 10% of the 100,000 turns taken


# -- header routes ----------------------------------------------------------------------


def test_a_matching_header_goes_to_the_canary_even_at_zero_percent():
    router = WeightedRouter(initial=TrafficSplit(header_routes=[CHROME]))
    chrome = {"User-Agent": "Mozilla/5.0 Chrome/126.0"}
    firefox = {"User-Agent": "Mozilla/5.0 Firefox/127.0"}
    assert router.pick(chrome) is Arm.CANARY
    assert router.pick(headers=firefox) is Arm.STABLE
    assert router.pick({}) is Arm.STABLE
    assert router.pick() is Arm.STABLE
    assert router.pick_for("user-1", headers=chrome) is Arm.CANARY
    assert router.pick_for("user-1", headers=firefox) is Arm.STABLE


@pytest.mark.parametrize("name", ["user-agent", "USER-AGENT", "uSeR-aGeNt"])
def test_header_names_match_whatever_their_case(name):
    router = WeightedRouter(initial=TrafficSplit(header_routes=[CHROME]))
    assert router.pick({name: "Chrome/1"}) is Arm.CANARY


class CaseInsensitive(Mapping[str, str]):
    """A header mapping like httpx's or starlette's."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = {k.lower(): v for k, v in items.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_header_mappings_other_than_dicts_work():
    router = WeightedRouter(
        initial=TrafficSplit(header_routes=[HeaderRoute(header="X-Canary", value="always")])
    )
    assert router.pick(CaseInsensitive({"x-canary": "always"})) is Arm.CANARY
    assert router.pick(CaseInsensitive({"x-canary": "never"})) is Arm.STABLE


def test_header_routed_requests_take_no_round_robin_turn():
    routed = router_at(50)
    anyio.run(routed.apply, TrafficSplit(canary_percent=50, header_routes=[CHROME]))
    plain = router_at(50)
    chrome = {"User-Agent": "Chrome"}
    sequence = []
    for i in range(20):
        if i % 3 == 0:
            assert routed.pick(chrome) is Arm.CANARY
        sequence.append(routed.pick({"User-Agent": "curl"}))
    assert sequence == [plain.pick() for _ in range(20)]


def test_header_routes_go_away_with_the_next_split():
    router = WeightedRouter(initial=TrafficSplit(header_routes=[CHROME]))
    anyio.run(router.apply, TrafficSplit())
    assert router.pick({"User-Agent": "Chrome"}) is Arm.STABLE


# -- pick_for(): sticky, monotone assignment ----------------------------------------------


@given(key=keys, percent=any_percents)
def test_a_key_goes_to_the_canary_exactly_when_its_position_is_below_the_share(key, percent):
    router = router_at(percent)
    expected = Arm.CANARY if router.key_position(key) < percent / 100 else Arm.STABLE
    if percent in (0.0, 100.0):
        expected = Arm.CANARY if percent else Arm.STABLE
    assert router.pick_for(key) is expected
    assert router.pick_for(key) is expected  # and again


@given(key=keys, low=any_percents, high=any_percents)
def test_raising_the_percent_never_moves_a_key_back_to_stable(key, low, high):
    low, high = min(low, high), max(low, high)
    router = router_at(low)
    was_canary = router.pick_for(key) is Arm.CANARY
    anyio.run(router.apply, TrafficSplit(canary_percent=high))
    if was_canary:
        assert router.pick_for(key) is Arm.CANARY


def test_stepping_from_one_to_a_hundred_percent_never_flips_a_key_back():
    router = WeightedRouter(salt="monotone")
    user_keys = [f"user-{i}" for i in range(2000)]
    on_canary: set[str] = set()
    for percent in range(1, 101):
        anyio.run(router.apply, TrafficSplit(canary_percent=percent))
        now_on = {key for key in user_keys if router.pick_for(key) is Arm.CANARY}
        assert on_canary <= now_on
        on_canary = now_on
    assert on_canary == set(user_keys)


@pytest.mark.parametrize("percent", [0.5, 1, 10, 33.3, 50, 99])
def test_the_share_of_100k_keys_is_within_one_point_of_the_percent(percent):
    router = router_at(percent, salt="share-check")
    canary = sum(router.pick_for(f"session-{i}") is Arm.CANARY for i in range(100_000))
    assert abs(canary / 1000 - percent) <= 1.0


def test_zero_and_a_hundred_percent_are_none_and_every_key():
    assert all(router_at(0).pick_for(i) is Arm.STABLE for i in range(1000))
    assert all(router_at(100).pick_for(i) is Arm.CANARY for i in range(1000))


def test_the_same_salt_agrees_across_routers_and_different_salts_pick_different_users():
    a1, a2 = router_at(10, salt="release-1"), router_at(10, salt=b"release-1")
    b = router_at(10, salt="release-2")
    users = [f"user-{i}" for i in range(10_000)]
    picked_a = {u for u in users if a1.pick_for(u) is Arm.CANARY}
    assert picked_a == {u for u in users if a2.pick_for(u) is Arm.CANARY}
    picked_b = {u for u in users if b.pick_for(u) is Arm.CANARY}
    # Independent draws at 10% share about 1% of users; the same salt would share 10%.
    assert len(picked_a & picked_b) < 300


def test_keys_may_be_text_bytes_or_ints():
    router = router_at(50)
    assert router.pick_for(12345) is router.pick_for("12345") is router.pick_for(b"12345")
    assert router.pick_for("café") is router.pick_for("café".encode())


@pytest.mark.parametrize("key", [None, 1.5, True, ("a",)])
def test_other_keys_are_refused(key):
    for percent in (0, 50, 100):
        with pytest.raises(ConfigError) as err:
            router_at(percent).pick_for(key)
        assert err.value.field == "key"


def test_repr_shows_the_weights():
    router = router_at(0.5)
    assert repr(router) == "<WeightedRouter canary 0.5% (1 in 200)>"


# -- a real rollout through the router and the recorder -----------------------------------

PLAN = ck.linear(10, 30, hold=60, analysis_interval=10)  # 10, 40, 70, 100%
DECIDER = threshold(bound("error_rate", max=0.05), bound("p99", max=0.5))


class App:
    """The application: 200 requests a virtual second, routed and recorded in-process.

    Errors are deterministic: one stable request in 100 fails, and one canary request in
    100 when healthy or one in 4 when broken.
    """

    def __init__(self, router: WeightedRouter, recorder: Recorder, *, broken: bool) -> None:
        self.router = router
        self.recorder = recorder
        self.canary_failure_every = 4 if broken else 100
        self.served = {Arm.STABLE: 0, Arm.CANARY: 0}

    def serve_one_second(self) -> None:
        for request in range(200):
            arm = self.router.pick()
            self.served[arm] += 1
            every = self.canary_failure_every if arm is Arm.CANARY else 100
            ok = self.served[arm] % every != 0
            self.recorder.record(arm, ok, 0.020 + 0.001 * (request % 30))


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "broken"])
async def test_a_rollout_with_traffic_running_beside_it(broken):
    clock = VirtualClock(start=1000.0)
    router = WeightedRouter()
    recorder = Recorder(clock=clock)
    app = App(router, recorder, broken=broken)

    async def traffic() -> None:
        while True:
            app.serve_one_second()
            await clock.sleep_until(clock.now() + 1)

    rollout = ck.Rollout(PLAN, router=router, metrics=recorder, decider=DECIDER, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(traffic)
        outcome = await rollout.run()
        tg.cancel_scope.cancel()
    if broken:
        assert outcome.phase is ck.Phase.ROLLED_BACK, outcome
        assert outcome.finished_at - 1000.0 <= 20  # judged on the first window
        assert router.current.is_stable_only
        assert all(router.pick() is Arm.STABLE for _ in range(100))
    else:
        assert outcome.phase is ck.Phase.SUCCEEDED, outcome
        assert router.current.is_full_canary
        assert len(outcome.verdicts) >= 18  # 3 minutes of 10 s windows, all judged
        assert all(router.pick() is Arm.CANARY for _ in range(100))
    assert app.served[Arm.CANARY] > 0


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "broken"])
def test_simulate_with_scripted_traffic_each_virtual_second(broken):
    clock = VirtualClock(start=0.0, solo=True)
    router = WeightedRouter()
    recorder = Recorder(clock=clock)
    app = App(router, recorder, broken=broken)

    def second(at: float) -> None:
        app.serve_one_second()
        clock.call_at(at + 1, lambda: second(at + 1))

    clock.call_at(0.0, lambda: second(0.0))
    sim = simulate(PLAN, decider=DECIDER, metrics=recorder, router=router, clock=clock, until=3600)
    assert sim.outcome.verdicts
    if broken:
        assert sim.outcome.rolled_back, sim.outcome
        assert sim.outcome.finished_at <= 20
    else:
        assert sim.outcome.promoted, sim.outcome
        # Each 10 s window saw 2,000 requests, split as the router was told.
        first = recorder.observe(ck.Window(start=0, end=10, split=TrafficSplit(canary_percent=10)))
        assert (first.stable.requests, first.canary.requests) == (1800, 200)
