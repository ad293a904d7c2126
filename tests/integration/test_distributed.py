"""Runner processes sharing a real etcd cluster or PostgreSQL, under faults: the invariants hold.

Every runner is a process of its own (tests/helpers/runner_server.py forks
tests/helpers/fencing_runner.py), with its own holder id and store object; the only file
runners share is the trial's apply log. The faults: ``kill -9`` of the runner holding the
lease, SIGSTOP of it past its TTL, a partition between it and the store (TCP proxies),
the etcd leader killed mid-rollout, PostgreSQL restarted mid-rollout. After each, the
checks of tests/helpers/distributed.py (`check_log`): no apply by a holding without the
current token, each step applied once and in order, the saved record's last apply is
the log's, and the rollout ended exactly once. benchmarks/distributed.py runs the same
trials many times.

The runner processes run on the test's event loop (asyncio or trio).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from postgres_fixtures import need_postgres

from canarykit.testing.lab import BinaryNotFound, EtcdCluster, PostgresServer, find_binary
from helpers import distributed as dist

pytest.importorskip("httpx", reason="pip install 'canarykit[etcd]'")

pytestmark = pytest.mark.anyio


def _need_etcd() -> str:
    try:
        return find_binary("etcd", "etcd-server")
    except BinaryNotFound as exc:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    binary = _need_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), binary=binary) as running:
        yield running


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), bin_dir=need_postgres())
    with server:
        yield server


@pytest.fixture(scope="module")
def lane() -> Iterator[dist.RunnerLane]:
    found = dist.RunnerLane()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def make_lab(cluster, lane, tmp_path, anyio_backend):
    def make(postgres: PostgresServer | None = None) -> dist.Lab:
        # The runner processes run on the test's event loop too.
        return dist.Lab(tmp_path, cluster, lane, postgres=postgres, runner_backend=anyio_backend)

    return make


async def _injected(lab: dist.Lab, make) -> dist.Trial:
    """The trial `make()` runs, run again (up to 3 times) while its fault was not injected
    (the first runner lost its lease to a slow renewal on a busy machine first)."""
    try:
        for _ in range(3):
            trial = await make()
            if trial.injected:
                return trial
            assert_kept(trial)  # finished and checked all the same
        pytest.fail(f"the fault was never injected: {trial.setup}")
    finally:
        await lab.aclose()


def assert_kept(trial: dist.Trial) -> None:
    assert trial.violations == []
    assert trial.stale_applies == 0
    assert trial.transitions == 0
    assert trial.ended


@pytest.mark.parametrize("backend", ["etcd", "postgres"])
async def test_after_kill_9_of_the_holder_a_waiting_runner_takes_over_within_ttl_and_renewal(
    make_lab, backend, request
):
    lab = make_lab(request.getfixturevalue("postgres") if backend == "postgres" else None)
    trial = await _injected(lab, lambda: dist.takeover_trial(lab, backend))
    assert_kept(trial)
    assert trial.takeover_s is not None and trial.takeover_s <= lab.bound
    assert trial.first_result is None  # killed: it never reported


@pytest.mark.parametrize(
    ("backend", "blind"), [("etcd", False), ("etcd", True), ("postgres", True)]
)
async def test_a_runner_stopped_past_its_lease_never_applies_after_it_wakes(
    make_lab, backend, blind, request
):
    lab = make_lab(request.getfixturevalue("postgres") if backend == "postgres" else None)
    trial = await _injected(lab, lambda: dist.stop_trial(lab, backend, blind=blind))
    assert_kept(trial)
    assert trial.first_result == "lease_lost"


@pytest.mark.parametrize(
    ("backend", "blind"), [("etcd", False), ("etcd", True), ("postgres", True)]
)
async def test_a_runner_cut_off_from_the_store_never_applies_after_the_takeover(
    make_lab, backend, blind, request
):
    lab = make_lab(request.getfixturevalue("postgres") if backend == "postgres" else None)
    trial = await _injected(lab, lambda: dist.partition_trial(lab, backend, blind=blind))
    assert_kept(trial)
    assert trial.first_result == "lease_lost"


async def test_killing_the_etcd_leader_mid_rollout_keeps_every_invariant(make_lab, cluster):
    lab = make_lab()
    trials = [await dist.leader_kill_trial(lab) for _ in range(2)]
    await lab.aclose()
    for trial in trials:
        assert_kept(trial)
    assert any(trial.injected for trial in trials)
    assert all(cluster.running(i) for i in range(3))


async def test_restarting_postgres_mid_rollout_keeps_every_invariant(make_lab, postgres):
    lab = make_lab(postgres)
    trial = await _injected(lab, lambda: dist.restart_trial(lab))
    assert_kept(trial)


async def test_rollouts_wanted_by_two_runner_processes_each_run_once(make_lab):
    lab = make_lab()
    trials = await dist.contended_rollouts(lab, 3, per_wave=3)
    await lab.aclose()
    assert len(trials) == 3
    for trial in trials:
        assert_kept(trial)


# The checks themselves, on logs written by hand: each catches what it is for.


def _apply(holder: str, token: int, weight: float) -> dict[str, object]:
    return {"holder": holder, "token": token, "weight": weight}


def _record(token: int) -> dict[str, object]:
    return {"state": {"phase": dist.SUCCEEDED}, "fencing": {"apply_token": token}}


END = {"holder": "b", "token": 9, "end": dist.SUCCEEDED}


def test_check_log_passes_a_takeover_that_reapplies_the_step_in_force():
    log = [_apply("a", 5, 10), _apply("a", 5, 25), _apply("b", 9, 25), _apply("b", 9, 50)]
    log += [_apply("b", 9, 100), END]
    found = dist.check_log(log, _record(9), {})
    assert found == {"stale": 0, "transitions": 0, "ended": True, "violations": []}


def test_check_log_counts_an_apply_by_an_older_token_or_after_the_holder_was_resumed():
    log = [_apply("a", 5, 10), _apply("b", 9, 25), _apply("a", 5, 25), _apply("b", 9, 50)]
    log += [_apply("b", 9, 100), END]
    assert dist.check_log(log, _record(9), {})["stale"] == 1
    log = [_apply("a", 5, 10), _apply("a", 5, 25), _apply("b", 9, 50), _apply("b", 9, 100), END]
    assert dist.check_log(log, _record(9), {"a": 1})["stale"] == 1


def test_check_log_counts_a_lost_step_a_repeated_one_and_a_lost_last_save():
    skipped = [_apply("a", 5, 10), _apply("a", 5, 50), _apply("a", 5, 100), END]
    assert dist.check_log(skipped, _record(5), {})["transitions"] == 1
    repeated = [_apply("a", 5, w) for w in (10, 25, 25, 50, 100)]
    assert dist.check_log([*repeated, END], _record(5), {})["transitions"] > 0
    log = [_apply("a", 5, w) for w in (10, 25, 50)] + [_apply("b", 9, 100), END]
    found = dist.check_log(log, _record(5), {})
    assert found["transitions"] == 1 and "token 5 applied last" in found["violations"][0]


def test_check_log_requires_exactly_one_end():
    log = [_apply("a", 5, w) for w in (10, 25, 50, 100)] + [END, END]
    assert "ended 2 times" in dist.check_log(log, _record(5), {})["violations"][0]
