"""The JSON-file store, and resuming a rollout in a new runner from its saved state."""

import json
import os

import anyio
import pytest

import canarykit as ck
from canarykit.testing import FakeRouter, VirtualClock

pytestmark = pytest.mark.anyio

TWO_STEPS = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])


def percents(splits):
    return [split.canary_percent for split in splits]


# ---------------------------------------------------------------------------- FileStore


async def test_file_store_round_trips_and_keeps_one_file_per_key(tmp_path):
    store = ck.stores.FileStore(tmp_path / "state")
    assert await store.load("web") is None
    await store.save("web", {"state": {"step": 1}, "note": "é"})
    await store.save("web", {"state": {"step": 2}})
    await store.save("api", {"state": {"step": 7}})
    assert await store.load("web") == {"state": {"step": 2}}
    assert await store.load("api") == {"state": {"step": 7}}
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["api.json", "web.json"]
    await store.delete("web")
    assert await store.load("web") is None


async def test_file_store_writes_a_temporary_file_fsyncs_renames_and_fsyncs_the_directory(
    tmp_path, monkeypatch
):
    store = ck.stores.FileStore(tmp_path)
    synced = []
    replaced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(source, target):
        replaced.append((str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    await store.save("web", {"state": {}})
    [(source, target)] = replaced
    assert os.path.dirname(source) == str(tmp_path)  # same directory: rename is atomic
    assert target == str(tmp_path / "web.json")
    # The temporary file is synced before the rename, the directory after it.
    assert synced == [source, str(tmp_path)]


async def test_a_failed_write_leaves_the_previous_state_and_no_temporary_file(
    tmp_path, monkeypatch
):
    store = ck.stores.FileStore(tmp_path)
    await store.save("web", {"state": {"step": 1}})

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ck.StateSaveError, match="No space left"):
        await store.save("web", {"state": {"step": 2}})
    monkeypatch.undo()
    assert await store.load("web") == {"state": {"step": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["web.json"]


@pytest.mark.parametrize("key", ["../escape", "a/b", "", ".hidden", "x\ny", "/etc/passwd", 7])
async def test_keys_that_could_leave_the_directory_are_refused(tmp_path, key):
    store = ck.stores.FileStore(tmp_path)
    with pytest.raises(ck.ConfigError, match=r"^key:"):
        await store.save(key, {})
    with pytest.raises(ck.ConfigError, match=r"^key:"):
        await store.load(key)
    with pytest.raises(ck.ConfigError, match=r"^key:"):
        ck.Rollout(TWO_STEPS, router=FakeRouter(), store=store, key=key)
    assert list(tmp_path.iterdir()) == []


def rewrite(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda p: p.write_text(p.read_text()[:40]), ck.CorruptStateError, "not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), ck.CorruptStateError, "not a canarykit state file"),
        (lambda p: p.write_text('{"x": NaN}'), ck.CorruptStateError, "not valid JSON"),
        (
            lambda p: rewrite(p, lambda d: d["data"]["state"].update(step=5)),
            ck.CorruptStateError,
            "checksum mismatch",
        ),
        (
            lambda p: rewrite(p, lambda d: d.update(key="api")),
            ck.CorruptStateError,
            "holds the state of key 'api'",
        ),
        (
            lambda p: rewrite(p, lambda d: d.update(version=2)),
            ck.StateVersionError,
            "newer canarykit",
        ),
        (
            lambda p: rewrite(p, lambda d: d.update(data=[1])),
            ck.CorruptStateError,
            "'data' must be a JSON object",
        ),
    ],
)
async def test_damaged_files_are_refused_naming_the_file_and_the_problem(
    tmp_path, damage, error, message
):
    store = ck.stores.FileStore(tmp_path)
    await store.save("web", {"state": {"step": 1}})
    damage(tmp_path / "web.json")
    with pytest.raises(error, match=message) as caught:
        await store.load("web")
    assert str(tmp_path / "web.json") in str(caught.value)
    assert isinstance(caught.value, ck.StateError)


async def test_a_rollout_given_a_directory_path_uses_a_file_store(tmp_path):
    rollout = ck.Rollout(TWO_STEPS, router=FakeRouter(), store=tmp_path, key="web")
    assert isinstance(rollout.store, ck.stores.FileStore)
    assert isinstance(rollout.lease, ck.stores.FileLease)
    assert rollout.lease.path == tmp_path / "web.lock"


# ---------------------------------------------------------------------------- resuming


async def test_a_bake_interrupted_at_minute_four_continues_for_one_minute(tmp_path):
    plan = ck.Plan(steps=[ck.SetWeight(20), ck.Pause(300)])
    router = FakeRouter()
    first = ck.Rollout(plan, router=router, clock=VirtualClock(), store=tmp_path, key="web")
    stopped = await first.run(stop_at=240)  # the process dies at minute 4
    assert stopped.phase is ck.Phase.PROGRESSING

    second = ck.Rollout(
        plan, router=router, clock=VirtualClock(start=240), store=tmp_path, key="web"
    )
    outcome = await second.run()
    assert second.resumed
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert outcome.finished_at == 300.0  # one more minute, not five
    assert percents(router.applied) == [20, 100]  # 20% was not applied again
    [resumed] = [e for e in outcome.timeline if e.kind == "resume"]
    assert "step 2" in resumed.reason and "router reports 20%" in resumed.reason


class AckLostRouter(FakeRouter):
    """Applies `split`, then never answers: the runner dies not knowing it took effect."""

    def __init__(self, stuck_at: float, **kwargs):
        super().__init__(**kwargs)
        self.stuck_at = stuck_at

    async def apply(self, split):
        await super().apply(split)
        if split.canary_percent == self.stuck_at:
            await anyio.sleep_forever()


async def crash_while_applying(router, store, plan=TWO_STEPS):
    """Run until `router` is stuck in an apply, then return what a crash would leave saved."""
    rollout = ck.Rollout(
        plan,
        router=router,
        clock=VirtualClock(),
        store=store,
        key="web",
        call_timeout=3600,
        on_cancel="leave",  # a crash does not roll back
    )
    saved = None
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def run():
                with pytest.raises(anyio.get_cancelled_exc_class()):
                    await rollout.run()

            tg.start_soon(run)
            while not router.calls or len(router.calls) < 4:
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            saved = await store.load("web")
            tg.cancel_scope.cancel()
    # Cancelled, not killed: make the store hold exactly what the crash left.
    await store.save("web", saved)
    return ck.machine.RolloutState.from_json(saved["state"])


async def test_a_split_applied_but_not_confirmed_before_a_crash_is_not_applied_again():
    store = ck.stores.MemoryStore()
    # Calls: read, apply 10, read back, apply 50 (stuck after taking effect).
    stuck = AckLostRouter(stuck_at=50)
    saved = await crash_while_applying(stuck, store)
    assert (saved.step, saved.target.canary_percent, saved.confirmed.canary_percent) == (2, 50, 10)

    router = FakeRouter(initial=stuck.current)
    assert router.current.canary_percent == 50
    outcome = await ck.Rollout(
        TWO_STEPS, router=router, clock=VirtualClock(start=60), store=store, key="web"
    ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router.applied) == [100]  # neither 10% nor 50% again
    assert outcome.finished_at == 120.0  # the 60 s pause after 50%, from the resume


async def test_a_split_that_never_reached_the_router_is_applied_once_on_resume():
    store = ck.stores.MemoryStore()
    stuck = FakeRouter(hang_on={4})  # the apply of 50% hangs before taking effect
    saved = await crash_while_applying(stuck, store)
    assert saved.target.canary_percent == 50

    router = FakeRouter(initial=stuck.current)
    assert router.current.canary_percent == 10
    outcome = await ck.Rollout(
        TWO_STEPS, router=router, clock=VirtualClock(start=60), store=store, key="web"
    ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router.applied) == [50, 100]


async def test_a_successor_that_cannot_read_the_router_trusts_no_stale_confirmation():
    store = ck.stores.MemoryStore()
    stuck = AckLostRouter(stuck_at=50)  # 50% took effect; the old runner never heard
    saved = await crash_while_applying(stuck, store)
    assert (saved.target.canary_percent, saved.confirmed.canary_percent) == (50, 10)

    # The successor's reads fail; its first apply (the rollback) fails too.
    unreadable = FakeRouter(initial=stuck.current, fail_on={1, 2})
    successor = ck.Rollout(
        TWO_STEPS,
        router=unreadable,
        clock=VirtualClock(start=60),
        store=store,
        key="web",
        apply_attempts=1,
    )
    with pytest.raises(ck.RouterError, match="on resuming"):
        await successor.run()
    assert unreadable.current.canary_percent == 50
    # Neither in memory nor on disk does the state claim the 10% it cannot vouch for.
    left = ck.machine.RolloutState.from_json((await store.load("web"))["state"])
    assert successor.state.confirmed is None and left.confirmed is None
    assert left.phase is ck.Phase.PAUSED and left.rollback_pending

    router = FakeRouter(initial=unreadable.current)
    outcome = await ck.Rollout(
        TWO_STEPS, router=router, clock=VirtualClock(start=90), store=store, key="web"
    ).run()
    assert outcome.phase is ck.Phase.ABORTED  # the rollback it could not finish, done
    assert percents(router.applied) == [0]


async def test_a_router_without_read_back_gets_the_target_again_idempotently():
    store = ck.stores.MemoryStore()
    blind = ck.RouterCapabilities(weights=True)
    first = FakeRouter(capabilities=blind)
    await ck.Rollout(TWO_STEPS, router=first, clock=VirtualClock(), store=store, key="web").run(
        stop_at=90
    )
    router = FakeRouter(capabilities=blind, initial=first.current)
    outcome = await ck.Rollout(
        TWO_STEPS, router=router, clock=VirtualClock(start=90), store=store, key="web"
    ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    # The step was at 50% (confirmed) with its pause running: 50% once more, then promote.
    assert percents(router.applied) == [50, 100]
    assert outcome.finished_at == 120.0


async def test_no_step_is_repeated_or_skipped_across_many_restarts():
    plan = ck.from_weights([5, 10, 25, 50, 75], hold=30, final_bake=30)
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    now = 0.0
    for _ in range(40):
        rollout = ck.Rollout(
            plan, router=router, clock=VirtualClock(start=now), store=store, key="web"
        )
        outcome = await rollout.run(stop_at=now + 7)
        now += 7
        if outcome.phase.is_terminal:
            break
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router.applied) == [5, 10, 25, 50, 75, 100, 100]
    assert outcome.finished_at == pytest.approx(plan.nominal_seconds, abs=7)


async def test_a_finished_rollout_is_reported_finished_without_touching_traffic():
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    done = await ck.Rollout(TWO_STEPS, router=router, clock=VirtualClock(), store=store).run()
    calls = list(router.calls)
    record = await store.load("rollout")
    again = ck.Rollout(TWO_STEPS, router=router, clock=VirtualClock(start=500), store=store)
    with pytest.raises(ck.ReleaseFinishedError, match="promoted at t=120 s, nothing to do"):
        await again.run()
    assert again.state == done.state
    assert router.calls == calls
    assert await store.load("rollout") == record


async def test_resuming_with_a_different_plan_is_refused_before_traffic_moves():
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    await ck.Rollout(TWO_STEPS, router=router, clock=VirtualClock(), store=store).run(stop_at=30)
    calls = list(router.calls)
    other = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(90), ck.SetWeight(50), ck.Pause(60)])
    with pytest.raises(ck.PlanMismatchError, match=r"steps\[1\] was Pause\(seconds=60.0\)"):
        await ck.Rollout(other, router=router, clock=VirtualClock(start=30), store=store).run()
    slower = ck.Plan(steps=TWO_STEPS.steps, progress_deadline=900)
    with pytest.raises(ck.PlanMismatchError, match="progress_deadline was 'the default'"):
        await ck.Rollout(slower, router=router, clock=VirtualClock(start=30), store=store).run()
    assert router.calls == calls
    # The saved rollout is still there for the right plan.
    saved = ck.machine.RolloutState.from_json((await store.load("rollout"))["state"])
    assert saved.step == 1


async def test_the_saved_record_names_its_key_and_plan():
    store = ck.stores.MemoryStore()
    await ck.Rollout(
        TWO_STEPS, router=FakeRouter(), clock=VirtualClock(), store=store, key="web"
    ).run(stop_at=30)
    record = await store.load("web")
    assert record["format"] == "canarykit.rollout"
    assert record["key"] == "web"
    assert record["plan"]["steps"][1] == {"kind": "Pause", "seconds": 60.0}
    assert record["plan_fingerprint"].startswith("sha256:")
    assert record["state"]["schema"] == 3


async def test_state_of_schema_version_1_is_migrated_and_resumed():
    router = FakeRouter()
    clock = VirtualClock()
    machine = ck.machine.RolloutMachine(TWO_STEPS)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=10)))
    old = machine.state.to_json()
    old["schema"] = 1
    del old["progress_deadline_at"]
    store = ck.stores.MemoryStore()
    await store.save("rollout", {"state": old})  # as canarykit 0.1 saved it, no plan
    router.current = ck.TrafficSplit(canary_percent=10)
    clock.advance(45)
    rollout = ck.Rollout(TWO_STEPS, router=router, clock=clock, store=store)
    outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    assert percents(router.applied) == [50, 100]
    assert outcome.finished_at == 120.0  # the saved pause deadline (60) was kept


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"schema": 4}, ck.StateVersionError, "schema version 4, from a newer canarykit"),
        ({"schema": 0}, ck.StateVersionError, "reads versions 1 to 3"),
        ({"schema": "2"}, ck.CorruptStateError, "no valid schema version"),
        ({"phase": "exploded"}, ck.CorruptStateError, "phase: must be one of"),
        ({"step": -1}, ck.CorruptStateError, r"step: must be an integer >= 0"),
        ({"step": 99}, ck.CorruptStateError, "beyond the plan's 4 steps"),
        ({"paused_at": "noon"}, ck.CorruptStateError, "paused_at: must be a number"),
        ({"target": {"canary_percent": 250}}, ck.CorruptStateError, "target: is not a valid"),
        ({"surprise": 1}, ck.CorruptStateError, "unknown field"),
    ],
)
async def test_unusable_saved_state_is_refused_with_a_clear_error(change, error, message):
    store = ck.stores.MemoryStore()
    router = FakeRouter()
    await ck.Rollout(TWO_STEPS, router=router, clock=VirtualClock(), store=store).run(stop_at=30)
    record = await store.load("rollout")
    record["state"].update(change)
    await store.save("rollout", record)
    calls = list(router.calls)
    with pytest.raises(error, match=message):
        await ck.Rollout(TWO_STEPS, router=router, clock=VirtualClock(), store=store).run()
    assert router.calls == calls


async def test_a_failed_rollback_is_tried_again_by_the_next_runner():
    store = ck.stores.MemoryStore()
    broken = FakeRouter(fail_on=range(4, 100))  # 10% works, then nothing does
    first = ck.Rollout(
        ck.Plan(steps=[ck.SetWeight(10), ck.SetWeight(60)]),
        router=broken,
        clock=VirtualClock(),
        store=store,
        retry_delay=0.1,
    )
    stuck = await first.run()
    assert stuck.phase is ck.Phase.PAUSED and stuck.state.rollback_pending

    router = FakeRouter(initial=broken.current)
    outcome = await ck.Rollout(first.plan, router=router, clock=VirtualClock(), store=store).run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert "retrying the rollback after a restart" in outcome.reason
    assert percents(router.applied) == [0]


class RecordingStore(ck.stores.MemoryStore):
    """Checks the write-ahead rule: each apply is saved as the target before it happens."""

    def targets(self):
        record = self.saved.get("rollout")
        return None if record is None else record["state"]["target"]["canary_percent"]


async def test_the_state_is_saved_before_every_traffic_change():
    store = RecordingStore()
    seen = []

    class CheckingRouter(FakeRouter):
        async def apply(self, split):
            seen.append((split.canary_percent, store.targets()))
            await super().apply(split)

    plan = ck.linear(10, 30, hold=60)
    await ck.Rollout(plan, router=CheckingRouter(), clock=VirtualClock(), store=store).run()
    assert [applied for applied, _ in seen] == [10, 40, 70, 100, 100]
    assert all(applied == saved for applied, saved in seen)


async def test_a_store_that_cannot_save_rolls_back_and_raises():
    class BrokenStore(ck.stores.MemoryStore):
        async def save(self, key, data):
            if self.saves >= 2:
                raise OSError("disk full")
            await super().save(key, data)

    router = FakeRouter()
    rollout = ck.Rollout(
        ck.linear(10, 30, hold=60),
        router=router,
        clock=VirtualClock(),
        store=BrokenStore(),
        retry_delay=0.5,
    )
    with pytest.raises(ck.StateSaveError, match="3 attempts, the last: OSError: disk full"):
        await rollout.run()
    assert rollout.phase is ck.Phase.ABORTED
    assert router.current.is_stable_only
    assert percents(router.applied) == [10, 0]  # it never moved on to 40%


# ---------------------------------------------------------------------------- the machine


def at_step_two():
    machine = ck.machine.RolloutMachine(TWO_STEPS)
    machine.handle(ck.machine.Start(0.0))
    machine.handle(ck.machine.SplitApplied(0.0, ck.TrafficSplit(canary_percent=10)))
    machine.handle(ck.machine.Tick(60.0))
    assert machine.state.target.canary_percent == 50
    return machine


def test_recovered_with_the_target_in_force_completes_the_step():
    machine = at_step_two()
    machine.handle(ck.machine.Recovered(70.0, ck.TrafficSplit(canary_percent=50)))
    assert machine.state.step == 3
    assert machine.next_action(70.0) == ck.machine.WaitUntil(until=130.0)


def test_recovered_with_another_split_applies_the_target_again():
    machine = at_step_two()
    machine.handle(ck.machine.Recovered(70.0, ck.TrafficSplit(canary_percent=10)))
    assert machine.state.step == 2
    assert machine.next_action(70.0) == ck.machine.ApplySplit(ck.TrafficSplit(canary_percent=50))


def test_recovered_without_a_read_back_forgets_the_confirmation():
    machine = at_step_two()
    machine.handle(ck.machine.Recovered(70.0, None))
    assert machine.state.confirmed is None
    assert machine.next_action(70.0) == ck.machine.ApplySplit(ck.TrafficSplit(canary_percent=50))


def test_plan_fingerprints_are_stable_and_tell_plans_apart():
    # Imports internals on purpose: the plan fingerprint saved records carry.
    from canarykit._state_json import plan_fingerprint

    same = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])
    assert plan_fingerprint(same) == plan_fingerprint(TWO_STEPS)
    other = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(61)])
    assert plan_fingerprint(other) != plan_fingerprint(TWO_STEPS)
    paused = ck.Plan(steps=TWO_STEPS.steps, on_progress_deadline="pause")
    assert plan_fingerprint(paused) != plan_fingerprint(TWO_STEPS)


# ---------------------------------------------------------------------------- saved stages

# States as canarykit wrote them before stages were rows of the transition table (the
# format has not changed since: the stage is saved as the phase and two flags).
HELD_ROLLBACK = {
    "aborting": False,
    "confirmed": {"canary_percent": 10.0, "header_routes": [], "mirror_percent": 0.0},
    "consecutive_errors": 0,
    "decider_state": None,
    "finished_at": None,
    "gap_until": None,
    "hold_remaining": None,
    "last_verdict": None,
    "outage_until": None,
    "pause_reason": "rollback failed (router down); canary traffic last confirmed at 10%",
    "paused_at": 3.0,
    "phase": "paused",
    "progress_deadline_at": None,
    "reason": "rollback failed (router down); canary traffic last confirmed at 10%",
    "release": None,
    "rollback_pending": True,
    "schema": 3,
    "started_at": 0.0,
    "step": 1,
    "step_deadline": None,
    "step_decider_state": None,
    "step_entered": True,
    "step_window_start": None,
    "step_windows": 0,
    "target": {"canary_percent": 10.0, "header_routes": [], "mirror_percent": 0.0},
    "window_start": None,
}
ABORT_IN_FLIGHT = {
    **HELD_ROLLBACK,
    "aborting": True,
    "pause_reason": None,
    "paused_at": None,
    "phase": "rolling_back",
    "reason": "bad build",
    "rollback_pending": False,
    "target": {"canary_percent": 0.0, "header_routes": [], "mirror_percent": 0.0},
}
HELD_ABORT = {**HELD_ROLLBACK, "aborting": True}
SAVED_PLAN = ck.Plan(steps=[ck.SetWeight(10), ck.SetWeight(50)])


@pytest.mark.parametrize(
    ("saved", "stage", "phase"),
    [
        (HELD_ROLLBACK, "ROLLBACK_PENDING", ck.Phase.PAUSED),
        (HELD_ABORT, "ABORT_PENDING", ck.Phase.PAUSED),
        (ABORT_IN_FLIGHT, "ABORTING", ck.Phase.ROLLING_BACK),
    ],
)
def test_a_saved_state_with_the_old_flags_loads_into_its_stage_and_saves_the_same(
    saved, stage, phase
):
    state = ck.machine.RolloutState.from_json(json.loads(json.dumps(saved)))
    assert state.stage is ck.machine.Stage[stage]
    assert state.phase is phase  # what outcomes and `canarykit status` show, as before
    assert state.rollback_pending is saved["rollback_pending"]
    assert state.aborting is saved["aborting"]
    assert state.to_json() == saved  # the format did not change: older versions read it


@pytest.mark.parametrize(
    ("saved", "ended"),
    [
        (HELD_ROLLBACK, ck.Phase.ROLLED_BACK),
        (HELD_ABORT, ck.Phase.ABORTED),
        (ABORT_IN_FLIGHT, ck.Phase.ABORTED),
    ],
)
def test_a_saved_rollback_resumed_by_a_new_runner_ends_as_its_flags_said(saved, ended):
    machine = ck.machine.RolloutMachine(
        SAVED_PLAN, ck.machine.RolloutState.from_json(json.loads(json.dumps(saved)))
    )
    machine.handle(ck.machine.Recovered(now=10.0, current=ck.TrafficSplit(canary_percent=10)))
    rolling = "ABORTING" if ended is ck.Phase.ABORTED else "ROLLING_BACK"
    assert machine.state.stage is ck.machine.Stage[rolling]
    assert machine.next_action(10.0) == ck.machine.ApplySplit(ck.TrafficSplit())
    machine.handle(ck.machine.SplitApplied(now=11.0, split=ck.TrafficSplit()))
    assert machine.state.phase is ended


def test_a_saved_held_rollback_refuses_promotion_by_the_table_and_a_resume_rolls_back():
    held = ck.machine.RolloutState.from_json(json.loads(json.dumps(HELD_ROLLBACK)))
    machine = ck.machine.RolloutMachine(SAVED_PLAN, held)
    with pytest.raises(ck.InvalidTransition) as refused:
        machine.handle(ck.machine.PromoteRequested(now=5.0))
    assert str(refused.value) == (
        "promote: not while a failed rollback is pending (it is held after a failed "
        "rollback (canary at 10%)); you can resume or abort it to try the rollback again"
    )
    assert machine.state is held
    machine.handle(ck.machine.ResumeRequested(now=6.0))
    assert machine.state.stage is ck.machine.Stage.ROLLING_BACK


async def test_a_runner_resumes_a_held_rollback_saved_in_the_earlier_format():
    store = ck.stores.MemoryStore()
    broken = FakeRouter(fail_on=range(3, 100))  # 10% works, then nothing does
    first = ck.Rollout(SAVED_PLAN, router=broken, clock=VirtualClock(), store=store, key="web")
    stuck = await first.run()
    assert stuck.state.stage is ck.machine.Stage.ROLLBACK_PENDING
    record = await store.load("web")
    record["state"] = json.loads(json.dumps(HELD_ROLLBACK))  # as an earlier version saved it
    await store.save("web", record)

    router = FakeRouter(initial=ck.TrafficSplit(canary_percent=10))
    outcome = await ck.Rollout(
        SAVED_PLAN, router=router, clock=VirtualClock(start=20), store=store, key="web"
    ).run()
    assert outcome.phase is ck.Phase.ROLLED_BACK
    assert percents(router.applied) == [0]
