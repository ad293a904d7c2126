"""A rollout is one release: finished ones are history, a new release starts afresh, and a
fresh start never jumps from where the router is to the plan's first step."""

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import canarykit as ck
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

PLAN = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])
WALL = 1796479390.0  # 2026-12-05 14:03:10 UTC


class ArchivingStore(ck.stores.MemoryStore):
    """A MemoryStore whose archive keeps every record it is given, in order."""

    def __init__(self):
        super().__init__()
        self.kept = []

    async def archive(self, key, data):
        self.kept.append((key, data))


class PlainStore:
    """A StateStore with only save and load: no archive."""

    def __init__(self):
        self.records = {}

    async def save(self, key, data):
        self.records[key] = data

    async def load(self, key):
        return self.records.get(key)


def percents(splits):
    return [split.canary_percent for split in splits]


async def finished(store, release, *, router=None, start=0.0, abort=False):
    router = FakeRouter() if router is None else router
    rollout = ck.Rollout(
        PLAN, router=router, clock=VirtualClock(start=start), store=store, release=release
    )
    if abort:
        await rollout.run(stop_at=start + 30)
        rollout.abort("bad canary")
        return await rollout.run()
    return await rollout.run()


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("release", ["", "x" * 129, "v1\n", "v1\x1b[2J", 42])
def test_a_release_id_must_be_1_to_128_printable_characters(release):
    with pytest.raises(ck.ConfigError, match="release"):
        ck.Rollout(PLAN, router=FakeRouter(), release=release)


def test_the_outage_policy_is_validated():
    with pytest.raises(ck.ConfigError, match="on_metrics_outage"):
        ck.Rollout(PLAN, router=FakeRouter(), on_metrics_outage="ignore")
    with pytest.raises(ck.ConfigError, match="metrics_outage_limit"):
        ck.Rollout(PLAN, router=FakeRouter(), metrics_outage_limit=0)


# ---------------------------------------------------------------------------- release after release


async def test_the_outcome_and_the_saved_state_name_the_release():
    store = ck.stores.MemoryStore()
    outcome = await finished(store, "v41")
    assert outcome.release == outcome.state.release == "v41"
    assert outcome.to_json()["release"] == "v41"
    saved = await store.load("rollout")
    assert saved["state"]["release"] == "v41" and saved["state"]["schema"] == 3


async def test_a_new_release_after_a_finished_one_archives_it_and_starts_afresh():
    store = ArchivingStore()
    router = FakeRouter()
    first = await finished(store, "v41", router=router)
    record = await store.load("rollout")
    router.current = ck.TrafficSplit()  # the handover left the router at stable
    second = await finished(store, "v42", router=router, start=1000)
    assert second.phase is ck.Phase.SUCCEEDED and second.release == "v42"
    assert store.kept == [("rollout", record)]
    assert store.kept[0][1]["state"]["release"] == first.release == "v41"
    assert percents(router.applied) == [10, 50, 100, 10, 50, 100]


async def test_a_new_release_on_a_store_without_archive_overwrites_the_record():
    store = PlainStore()
    router = FakeRouter()
    await finished(store, "v1", router=router, abort=True)
    outcome = await finished(store, "v2", router=router, start=500)
    assert outcome.promoted
    assert store.records["rollout"]["state"]["release"] == "v2"


@pytest.mark.parametrize("again", ["v41", None])
async def test_a_finished_release_run_again_touches_nothing_and_says_when_it_ended(again):
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    await finished(store, "v41", router=router, start=WALL - 120)
    record = await store.load("rollout")
    calls = list(router.calls)
    rollout = ck.Rollout(
        PLAN, router=router, clock=VirtualClock(start=WALL + 99), store=store, release=again
    )
    with pytest.raises(ck.ReleaseFinishedError) as caught:
        await rollout.run()
    assert str(caught.value) == (
        "release v41 finished: promoted at 2026-12-05 14:03:10 UTC, nothing to do"
    )
    error = caught.value
    assert (error.release, error.phase, error.finished_at) == ("v41", ck.Phase.SUCCEEDED, WALL)
    assert error.reason == "promoted"
    assert router.calls == calls  # not even a read
    assert await store.load("rollout") == record


async def test_a_rolled_back_release_says_so_and_can_be_retried():
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    await finished(store, "v7", router=router, abort=True)
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(start=100), store=store)
    with pytest.raises(ck.ReleaseFinishedError, match=r"release v7 finished: aborted at t=30 s"):
        await rollout.run()
    rollout.retry()
    assert (await rollout.run()).promoted


async def test_another_release_while_one_is_live_is_refused_naming_it():
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    live = ck.Rollout(PLAN, router=router, clock=VirtualClock(), store=store, release="v1")
    await live.run(stop_at=30)
    calls = list(router.calls)
    other = ck.Rollout(PLAN, router=router, clock=VirtualClock(start=40), store=store, release="v2")
    with pytest.raises(ck.ReleaseInProgressError) as caught:
        await other.run()
    message = str(caught.value)
    assert "release v1 is still in progress (progressing, canary at 10%)" in message
    assert "canarykit promote/abort POLICY, or run it with --release v1" in message
    assert (caught.value.release, caught.value.phase) == ("v1", ck.Phase.PROGRESSING)
    assert router.calls == calls
    # The same release, or none named, resumes it.
    outcome = await ck.Rollout(PLAN, router=router, clock=VirtualClock(start=40), store=store).run()
    assert outcome.promoted and outcome.release == "v1"


# ---------------------------------------------------------------------------- fresh start


@pytest.mark.parametrize(
    "found",
    [
        ck.TrafficSplit(canary_percent=100),
        ck.TrafficSplit(mirror_percent=5),
        ck.TrafficSplit(header_routes=[ck.HeaderRoute(header="X-Canary", value="1")]),
    ],
)
async def test_a_fresh_start_on_a_router_not_at_stable_is_refused_and_records_nothing(found):
    store = ck.stores.MemoryStore()
    router = FakeRouter(initial=found)
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(), store=store, release="v2")
    with pytest.raises(ck.RouterNotAtStableError) as caught:
        await rollout.run()
    assert caught.value.found == found
    message = str(caught.value)
    assert "the router is not at stable" in message
    assert "--adopt" in message and "canarykit init POLICY" in message
    assert router.applied == []
    assert await store.load("rollout") is None  # a re-run after `init` starts cleanly


async def test_adopting_a_split_skips_the_steps_below_it_and_never_goes_down():
    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=30))
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock(), adopt=True)
    outcome = await rollout.run()
    assert outcome.promoted
    assert percents(router.applied) == [50, 100]
    started = next(e for e in outcome.timeline if e.kind == "phase")
    assert "adopted" in started.reason and "skipped steps 1-2" in started.reason
    assert "continuing at step 3 (set weight 50%)" in started.reason


async def test_adopting_full_canary_promotes_without_moving_traffic_down():
    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=100))
    outcome = await ck.Rollout(PLAN, router=router, clock=VirtualClock(), adopt=True).run()
    assert outcome.promoted
    assert percents(router.applied) == [100]


async def test_a_router_without_read_back_starts_with_its_split_unknown():
    router = FakeRouter(capabilities=ck.RouterCapabilities(weights=True, read_back=False))
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock())
    rollout.abort("changed my mind")
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.split is None  # never confirmed: no claim that traffic is on stable
    assert router.calls == []


async def test_the_outcome_split_is_what_the_router_confirmed_after_a_rollback():
    router = FakeRouter()
    rollout = ck.Rollout(PLAN, router=router, clock=VirtualClock())
    await rollout.run(stop_at=30)
    rollout.abort()
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert outcome.split == router.current == ck.TrafficSplit()


weights = st.lists(st.integers(1, 100), min_size=1, max_size=6).map(sorted)


@settings(max_examples=200, deadline=None)
@given(weights=weights, found=st.integers(1, 100), mirror=st.sampled_from([0, 5]))
def test_adoption_never_applies_less_canary_than_found_before_the_first_kept_step(
    weights, found, mirror
):
    steps = []
    for weight in weights:
        steps += [ck.SetWeight(weight), ck.Pause(10)]
    plan = ck.Plan(steps=steps)
    split = ck.TrafficSplit(canary_percent=found, mirror_percent=mirror)
    machine = ck.machine.RolloutMachine(plan)
    machine.handle(ck.machine.Start(0.0, split, adopt=True))
    assert machine.state.confirmed == split
    applied = []
    now = 0.0
    for _ in range(100):
        action = machine.next_action(now)
        if isinstance(action, ck.machine.Finish):
            break
        if isinstance(action, ck.machine.ApplySplit):
            applied.append(action.split.canary_percent)
            machine.handle(ck.machine.SplitApplied(now, action.split))
        else:
            now = action.until
            machine.handle(ck.machine.Tick(now))
    assert machine.state.phase is ck.Phase.SUCCEEDED
    assert applied and all(percent >= found for percent in applied)
    kept = [w for w in weights if w >= found]
    # Each kept weight above the found one once, then the promotion's 100%.
    assert applied == [float(w) for w in _distinct(kept) if w != found] + [100.0]


def _distinct(values):
    out = []
    for value in values:
        if not out or out[-1] != value:
            out.append(value)
    return out


class UnreadableAtFirst(FakeRouter):
    """A router whose include file someone wrote by hand: it cannot be read until fixed."""

    broken = True

    async def read(self):
        if self.broken:
            raise ck.RouterError("the include file is not canarykit's (edited by hand?)")
        return await super().read()


async def test_a_first_read_that_fails_saves_nothing_so_the_same_release_runs_once_fixed(
    anyio_backend,
):
    store = ck.stores.MemoryStore()
    router = UnreadableAtFirst()
    plan = ck.Plan(steps=[ck.SetWeight(10)])

    def rollout():
        return ck.Rollout(
            plan, router=router, store=store, key="web", release="v7", clock=VirtualClock()
        )

    with pytest.raises(ck.RouterError, match="edited by hand"):
        await rollout().run()
    assert router.applied == []  # nothing moved, not even a "rollback" onto a foreign file
    assert await store.load("web") is None  # and nothing was saved as aborted for good
    router.broken = False  # canarykit init, say
    outcome = await rollout().run()
    assert outcome.promoted and outcome.release == "v7"
