"""Runners on several "hosts" sharing a real etcd and PostgreSQL; the last line printed is JSON.

A three-member etcd 3.4 cluster and a PostgreSQL server on loopback. Every runner is a
process of its own (forked by tests/helpers/runner_server.py from a server that imported
canarykit once) running tests/helpers/fencing_runner.py: one `Rollout` of three short
steps (10, 25, 50 %, each held `--hold` s, then promoted to 100 %) with the store's own
fenced lease (TTL `--ttl` s), its own holder id and store object, and a router that
appends every apply (holder, token, weight) to the trial's log; nothing else is shared.
Each trial is a rollout key of its own, checked by tests/helpers/distributed.py against its log and
its saved record: no apply by a holding without the current token, each step applied
once in order (a re-apply by a new holding after a takeover is not a second transition),
the saved record's last apply is the log's last, and the rollout ends exactly once.

- ``takeover_s_p50``, ``takeover_s_p99`` (etcd; ``..._postgres`` too): ``kill -9`` of the
  runner holding the lease mid-rollout, a second runner already waiting; from the kill
  to the store naming the new holder. ``takeover_target_s`` = TTL + renewal (TTL/3) + 1 s.
- ``stale_applies`` over ``stale_trials``: SIGSTOP of the holder past its TTL (then
  SIGCONT once another holds the lease and applied) and partitions between the holder
  and the store (TCP proxies: connections reset or frozen, new ones hang), on etcd and
  PostgreSQL; half of each with the runner's renewal failures hidden from it
  (``--blind-renewals``), so only the check before each apply and the fenced writes
  stop it. A stale apply is one by the old holder after the test let it run again, or
  one whose token is below a token already applied.
- ``leader_kill_trials`` with ``violations``: the etcd leader killed (SIGKILL) mid-rollout,
  a standby waiting; restarted when the rollout ended. ``postgres_restart_trials``: the
  server restarted mid-rollout. ``violations`` counts every broken invariant of every
  trial of the run.
- ``rollouts`` completed by ``runner_processes`` processes, two wanting each rollout
  and 2 x 4 at a time on one cluster, with ``lost_or_duplicated_transitions``.
- ``save_ms_p99_etcd``, ``save_ms_p99_postgres``, ``save_ms_p99_file``: 1,000 rollouts
  saving at once (1,000 keys), `--save-rounds` times, through ``save_clients`` store
  objects for etcd and PostgreSQL (as that many runner processes would) and one
  `FileStore`, in the same run; with the ratios to the file store.

Targets: takeover p99 <= takeover_target_s, stale_applies 0 over >= 100 trials,
>= 20 leader kills with 0 violations, 0 lost or duplicated transitions.

Usage: python benchmarks/distributed.py [--quick] [--lanes N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from canarykit.stores import EtcdStore, FileStore, PostgresStore  # noqa: E402
from canarykit.testing.lab import EtcdCluster, PostgresServer  # noqa: E402
from helpers import distributed as dist  # noqa: E402  (shared with the tests)

FULL = {
    "takeover": 20,
    "takeover_postgres": 10,
    "stop": 32,
    "stop_postgres": 20,
    "partition": 32,
    "partition_postgres": 20,
    "leader_kill": 20,
    "postgres_restart": 5,
    "rollouts": 40,
    "save_rollouts": 1000,
    "save_rounds": 3,
}
QUICK = {
    "takeover": 3,
    "takeover_postgres": 2,
    "stop": 2,
    "stop_postgres": 2,
    "partition": 2,
    "partition_postgres": 2,
    "leader_kill": 2,
    "postgres_restart": 1,
    "rollouts": 4,
    "save_rollouts": 200,
    "save_rounds": 1,
}
SAVE_CLIENTS = 10


def _p(values: list[float], share: float) -> float | None:
    return round(dist.percentile(values, share), 3) if values else None


async def faults(lab: dist.Lab, sizes: dict[str, int], lanes: int) -> dict[str, Any]:
    trials: list[dist.Trial] = []
    pg = lab.postgres is not None

    async def batch(count: int, make: Any) -> list[dist.Trial]:
        found = await dist.in_lanes(count, lanes, make)
        trials.extend(found)
        return found

    kill9 = await batch(sizes["takeover"], lambda i: dist.takeover_trial(lab, "etcd"))
    kill9_pg = (
        await batch(sizes["takeover_postgres"], lambda i: dist.takeover_trial(lab, "postgres"))
        if pg
        else []
    )
    stale: list[dist.Trial] = []
    stale += await batch(sizes["stop"], lambda i: dist.stop_trial(lab, "etcd", blind=i % 2 == 1))
    stale += await batch(
        sizes["partition"], lambda i: dist.partition_trial(lab, "etcd", blind=i % 2 == 1)
    )
    if pg:
        stale += await batch(
            sizes["stop_postgres"], lambda i: dist.stop_trial(lab, "postgres", blind=i % 2 == 1)
        )
        stale += await batch(
            sizes["partition_postgres"],
            lambda i: dist.partition_trial(lab, "postgres", blind=i % 2 == 1),
        )
    shared = await dist.contended_rollouts(lab, sizes["rollouts"])
    trials += shared
    # These stop a server everyone uses: one at a time, after the others.
    trials += await dist.in_lanes(sizes["leader_kill"], 1, lambda i: dist.leader_kill_trial(lab))
    restarts = (
        await dist.in_lanes(sizes["postgres_restart"], 1, lambda i: dist.restart_trial(lab))
        if pg
        else []
    )
    trials += restarts

    stale = [t for t in stale if t.injected]
    bad = [t for t in trials if not t.ok]
    for trial in bad:
        print(f"violation: {trial}", file=sys.stderr)
    for trial in trials:
        if not trial.injected:
            print(f"not injected: {trial}", file=sys.stderr)
    takeovers = [t.takeover_s for t in kill9 if t.injected and t.takeover_s is not None]
    takeovers_pg = [t.takeover_s for t in kill9_pg if t.injected and t.takeover_s is not None]
    return {
        "takeover_s_p50": _p(takeovers, 0.5),
        "takeover_s_p99": _p(takeovers, 0.99),
        "takeover_trials": len(takeovers),
        "takeover_s_p50_postgres": _p(takeovers_pg, 0.5),
        "takeover_s_p99_postgres": _p(takeovers_pg, 0.99),
        "takeover_trials_postgres": len(takeovers_pg),
        "takeover_target_s": round(lab.bound, 3),
        "stale_applies": sum(t.stale_applies for t in trials),
        "stale_trials": len(stale),
        "stale_trial_kinds": dict(sorted(Counter(f"{t.kind} {t.backend}" for t in stale).items())),
        # How the stopped or cut-off runner ended (lease_lost: it noticed and stopped).
        "stale_old_runner_results": dict(Counter(str(t.first_result) for t in stale)),
        "leader_kill_trials": sum(t.kind == "leader-kill" and t.injected for t in trials),
        "postgres_restart_trials": sum(t.injected for t in restarts),
        # Trials whose runners all stopped short (lost their leases: the etcd leader's
        # election outlasts a renewal of TTL/3), so a fresh runner finished the rollout.
        "leader_kill_resumed_by_a_new_runner": sum(
            t.finishers > 0 for t in trials if t.kind == "leader-kill"
        ),
        "postgres_restart_resumed_by_a_new_runner": sum(t.finishers > 0 for t in restarts),
        "trials_resumed_by_a_new_runner": sum(t.finishers > 0 for t in trials),
        # The first runner lost its lease before the fault (a slow renewal on a busy
        # machine): the rollout was still finished and checked, the fault not counted.
        "faults_not_injected": sum(not t.injected for t in trials),
        "violations": len(bad),
        "rollouts": sum(t.ended for t in shared),
        "runner_processes": sum(t.runners for t in shared),
        "lost_or_duplicated_transitions": sum(t.transitions for t in trials),
        "rollouts_ended_all_trials": sum(t.ended for t in trials),
        "trials": len(trials),
    }


async def saves(lab: dist.Lab, directory: Path, rollouts: int, rounds: int) -> dict[str, Any]:
    endpoints = lab.cluster.endpoints
    # Long bounds: a burst of 1,000 saves queues in the clients; this measures the wait.
    etcd = [
        EtcdStore(endpoints[i % 3 :] + endpoints[: i % 3], prefix="save/", timeout=30, deadline=60)
        for i in range(SAVE_CLIENTS)
    ]
    found: dict[str, Any] = {"save_rollouts": rollouts, "save_rounds": rounds}
    times, failed = await dist.save_latencies(etcd, rollouts, rounds)
    for store in etcd:
        await store.aclose()
    found |= {"save_ms_p50_etcd": _p(times, 0.5), "save_ms_p99_etcd": _p(times, 0.99)}
    found["save_failures_etcd"] = len(failed)
    if lab.postgres is not None:
        pg = [
            PostgresStore(lab.postgres.dsn, table="save", timeout=60) for _ in range(SAVE_CLIENTS)
        ]
        times, failed = await dist.save_latencies(pg, rollouts, rounds)
        for store in pg:
            await store.aclose()
        found |= {"save_ms_p50_postgres": _p(times, 0.5), "save_ms_p99_postgres": _p(times, 0.99)}
        found["save_failures_postgres"] = len(failed)
    times, failed = await dist.save_latencies([FileStore(directory / "files")], rollouts, rounds)
    found |= {"save_ms_p50_file": _p(times, 0.5), "save_ms_p99_file": _p(times, 0.99)}
    found["save_failures_file"] = len(failed)
    found["save_clients"] = SAVE_CLIENTS
    file_p99 = found["save_ms_p99_file"]
    for name in ("etcd", "postgres"):
        value = found.get(f"save_ms_p99_{name}")
        if value is not None and file_p99:
            found[f"save_p99_{name}_to_file_ratio"] = round(value / file_p99, 2)
    return found


async def run(directory: Path, options: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if options.quick else FULL
    with ExitStack() as stack:
        cluster = stack.enter_context(EtcdCluster(directory / "etcd"))
        postgres = None
        if not options.no_postgres:
            postgres = stack.enter_context(PostgresServer(directory / "postgres"))
        lane = dist.RunnerLane()
        stack.callback(lane.close)
        (directory / "trials").mkdir()
        lab = dist.Lab(
            directory / "trials",
            cluster,
            lane,
            postgres=postgres,
            ttl=options.ttl,
            hold=options.hold,
            rng=random.Random(options.seed),
        )
        try:
            figures = await saves(lab, directory, sizes["save_rollouts"], sizes["save_rounds"])
            figures |= await faults(lab, sizes, options.lanes)
        finally:
            await lab.aclose()
    figures |= {
        "ttl_s": options.ttl,
        "etcd_members": 3,
        "postgres": not options.no_postgres,
        "quick": options.quick,
        "seed": options.seed,
        "cpus": os.cpu_count(),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few trials of each (CI)")
    parser.add_argument("--lanes", type=int, default=4, help="trials at once")
    parser.add_argument("--ttl", type=float, default=2.0, help="the runners' lease TTL (s)")
    parser.add_argument("--hold", type=float, default=0.4, help="each step's pause (s)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--seed", type=int, default=16)
    options = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ck-distributed-") as directory:
        figures = anyio.run(run, Path(directory), options)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
