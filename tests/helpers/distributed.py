"""Runners on several "hosts" sharing etcd or PostgreSQL: faults, and the invariants they keep.

Shared by tests/integration/test_distributed.py and benchmarks/distributed.py. Every
runner is a process of its own running tests/helpers/fencing_runner.py (`RunnerLane`
forks them from runner_server.py, which imported canarykit once, so a runner starts in
milliseconds), with its own holder id and store object and no file shared with the
others except the trial's apply log: the runner's router appends one JSON line per
apply (holder, token, weight, time) and one when its rollout ended. Each trial is a
rollout key of its own. `check_log` reads the log and the saved record:

- no stale apply: no apply by a holding whose token is below one already applied, and
  none by a holder after the test saw another take over and let the old one run again
  (`stale`);
- no transition lost or applied twice: each holding applies the plan's steps in order
  and each once; all holdings together apply every step of the plan and the promotion
  (a new holding re-applying the step in force after a takeover is not a second
  transition); and the saved record of the ended rollout is the last holder's: its
  phase is succeeded and the token it says applied last is the log's (`transitions`);
- every rollout ends exactly once (one ``end`` line), with nothing applied after it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from canarykit import Phase
from canarykit.stores import EtcdStore, PostgresStore
from canarykit.testing.lab import TcpProxy

HERE = Path(__file__).resolve().parent
# Where the trials' rollouts live: an etcd key prefix, a PostgreSQL table prefix.
PREFIX = "dist/"
TABLE = "dist"
# How every trial's rollout ends: healthy, so it runs to the end (promoted).
SUCCEEDED = Phase.SUCCEEDED.value

# The plan every runner drives: these weights, each held for a short pause; then the
# promotion sends everyone to the canary. The applies a rollout makes, in order:
STEPS = (10.0, 25.0, 50.0)
WEIGHTS = (*STEPS, 100.0)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The entries of an apply log, in the order they were appended (torn lines skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line torn by kill -9: never completed
    return entries


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` (0-1) percentile of `values`, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


async def save_latencies(
    stores: Sequence[Any], rollouts: int, rounds: int, *, key_prefix: str = "r"
) -> tuple[list[float], list[str]]:
    """Milliseconds of each save when `rollouts` rollouts save at once, `rounds` times.

    Rollout ``i`` saves through ``stores[i % len(stores)]`` (several connections, as
    several runners would have). Each round starts every save together and waits for all.
    Returns the times of the saves that succeeded and the errors of those that failed.
    """
    times: list[float] = []
    failures: list[str] = []

    async def one(store: Any, key: str, data: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            await store.save(key, data)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return
        times.append(1000 * (time.perf_counter() - started))

    for round_ in range(rounds):
        async with anyio.create_task_group() as tg:
            for index in range(rollouts):
                data = {"state": {"phase": "progressing", "step": round_, "i": index}}
                tg.start_soon(one, stores[index % len(stores)], f"{key_prefix}{index}", data)
    return times, failures


async def poll_until(
    check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.02
) -> Any:
    """Await `check()` every `interval` until it returns something true; None at timeout."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            found = await check()
        except Exception:  # the store is down or partitioned right now: ask again
            found = None
        if found:
            return found
        if time.monotonic() >= give_up:
            return None
        await anyio.sleep(interval)


# ---------------------------------------------------------------------------------------
# Runner processes


class RunnerLane:
    """A `runner_server.py` process that forks runners on request (see its docstring).

    Signals go to the runners directly, by pid; `alive` asks the server which ended.
    `close()` kills the runners still running (SIGKILL, by their pids) and ends the server.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "runner_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.started: set[int] = set()
        self.exits: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def start(self, argv: list[str], out: Path, postgres: str | None = None) -> int:
        """Fork a runner with `argv` (fencing_runner's arguments); its output goes to `out`."""
        request: dict[str, Any] = {"op": "run", "argv": argv, "out": str(out)}
        if postgres is not None:
            request["postgres"] = postgres
        pid = int(self._ask(request)["pid"])
        self.started.add(pid)
        return pid

    def alive(self, pid: int) -> bool:
        """True until runner `pid` has ended (and been reaped)."""
        if pid not in self.exits:
            for ended, how in self._ask({"op": "ended"})["ended"].items():
                self.exits[int(ended)] = how
        return pid not in self.exits

    def close(self) -> None:
        for pid in self.started:
            if pid not in self.exits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@attrs.define
class Runner:
    """One runner process: its pid, holder id and output file."""

    pid: int
    holder: str
    out: Path

    def result(self) -> dict[str, Any] | None:
        """The runner's JSON result (its output's last line), or None before it ended."""
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict) and "result" in found:
                    return found
        return None


@attrs.define
class Trial:
    """What one trial saw: the fault, the takeover time, and what the checks found."""

    kind: str
    backend: str
    key: str
    takeover_s: float | None = None
    stale_applies: int = 0
    transitions: int = 0  # lost or duplicated transitions
    violations: list[str] = attrs.Factory(list)
    ended: bool = False
    runners: int = 0
    # How the runner the fault hit ended: its result (``lease_lost``...), or None if killed.
    first_result: str | None = None
    # Runners started because every runner of the rollout stopped short of its end.
    finishers: int = 0
    # Why the fault could not be injected (None: it was); the rollout is checked anyway.
    setup: str | None = None

    @property
    def injected(self) -> bool:
        return self.setup is None

    @property
    def ok(self) -> bool:
        return not self.violations and not self.stale_applies and not self.transitions


class Lab:
    """A three-member etcd (and maybe a PostgreSQL), a runner lane and the trial settings.

    - `ttl`: the runners' lease TTL (seconds); `hold`: each step's pause; `WEIGHTS` the
      plan's steps. `bound` is the takeover target: TTL + one renewal (ttl/3) + 1 s.
    - `runner_backend`: the event loop the runner processes use (asyncio or trio).
    """

    def __init__(
        self,
        directory: Path,
        cluster: Any,
        lane: RunnerLane,
        *,
        postgres: Any = None,
        ttl: float = 2.0,
        hold: float = 0.4,
        rng: random.Random | None = None,
        runner_backend: str = "asyncio",
    ) -> None:
        self.directory = directory
        self.runner_backend = runner_backend
        self.cluster = cluster
        self.lane = lane
        self.postgres = postgres
        self.ttl = ttl
        self.hold = hold
        self.rng = rng or random.Random(16)
        self.bound = ttl + ttl / 3 + 1.0
        self._names = itertools.count(1)
        self._tag = secrets.token_hex(3)
        self._stores: dict[str, Any] = {}

    def key(self, kind: str) -> str:
        """A rollout key no other trial of any lab on these servers uses."""
        return f"{kind}-{self._tag}-{next(self._names)}"

    def store(self, backend: str) -> Any:
        """The test's own store object on `backend`, for reading leases and states."""
        found = self._stores.get(backend)
        if found is None:
            if backend == "etcd":
                found = EtcdStore(self.cluster.endpoints, prefix=PREFIX, timeout=1.0, deadline=5.0)
            else:
                found = PostgresStore(self.postgres.dsn, table=TABLE, timeout=3.0)
            self._stores[backend] = found
        return found

    async def aclose(self) -> None:
        for store in self._stores.values():
            await store.aclose()
        self._stores.clear()

    def start(
        self,
        key: str,
        backend: str,
        *,
        wait: float = 60.0,
        blind: bool = False,
        endpoints: Sequence[str] | None = None,
        dsn: str | None = None,
    ) -> Runner:
        """Start a runner of rollout `key` with a new holder id; `endpoints`/`dsn` to reach
        the store some other way (through a proxy)."""
        holder = f"{key}-h{next(self._names)}"
        out = self.directory / f"{holder}.out"
        argv = [
            "--endpoints",
            ",".join(endpoints or self.cluster.endpoints),
            "--holder",
            holder,
            "--log",
            str(self.log(key)),
            "--prefix",
            PREFIX if backend == "etcd" else TABLE,
            "--key",
            key,
            "--ttl",
            str(self.ttl),
            "--steps",
            ",".join(f"{w:g}" for w in STEPS),
            "--hold",
            str(self.hold),
            "--wait-for-lease",
            str(wait),
            "--backend",
            self.runner_backend,
        ]
        if blind:
            argv.append("--blind-renewals")
        postgres = None
        if backend == "postgres":
            postgres = dsn or self.postgres.dsn
        pid = self.lane.start(argv, out, postgres)
        return Runner(pid, holder, out)

    def log(self, key: str) -> Path:
        return self.directory / f"{key}.log"

    async def holder(self, key: str, backend: str) -> str | None:
        """Who holds `key`'s lease now (None: nobody, or the store did not answer)."""
        try:
            found = await self.store(backend).holder_of(key)
        except Exception:
            return None
        if not found or found.get("overdue"):
            return None
        holder = found.get("holder")
        return holder if isinstance(holder, str) else None

    async def wait_holder(self, key: str, backend: str, holder: str, timeout: float) -> bool:
        async def check() -> bool:
            return await self.holder(key, backend) == holder

        return bool(await poll_until(check, timeout))

    async def wait_applied(self, key: str, holder: str, timeout: float) -> bool:
        async def check() -> bool:
            return any(e.get("holder") == holder and "weight" in e for e in read_log(self.log(key)))

        return bool(await poll_until(check, timeout))

    async def wait_ended(self, runners: Sequence[Runner], timeout: float) -> bool:
        async def check() -> bool:
            return not any(self.lane.alive(r.pid) for r in runners)

        return bool(await poll_until(check, timeout, interval=0.05))

    async def finish(self, trial: Trial, runners: list[Runner]) -> None:
        """Wait for the runners; while the rollout has not ended, start another to end it."""
        for _ in range(4):
            if not await self.wait_ended(runners, 90):
                trial.violations.append(f"a runner of {trial.key} did not end within 90 s")
                return
            if any("end" in e for e in read_log(self.log(trial.key))):
                return
            # Every runner stopped short (lost its lease, say): one more resumes the rollout.
            results = [(r.result() or {}).get("reason") for r in runners]
            print(f"{trial.key}: not ended by {results}; starting another", file=sys.stderr)
            runners = [self.start(trial.key, trial.backend)]
            trial.runners += 1
            trial.finishers += 1
        trial.violations.append(f"{trial.key}: no runner ended the rollout")

    async def check(self, trial: Trial, stale_from: dict[str, int] | None = None) -> Trial:
        """Check `trial`'s apply log and saved state against the invariants."""
        entries = read_log(self.log(trial.key))
        try:
            record = await self.store(trial.backend).load(trial.key)
        except Exception as exc:
            trial.violations.append(f"{trial.key}: the saved state could not be read: {exc}")
            record = None
        found = check_log(entries, record, stale_from or {})
        trial.stale_applies += found["stale"]
        trial.transitions += found["transitions"]
        trial.violations += [f"{trial.key}: {v}" for v in found["violations"]]
        trial.ended = found["ended"]
        return trial


def check_log(
    entries: list[dict[str, Any]], record: Any, stale_from: dict[str, int]
) -> dict[str, Any]:
    """The invariants on one rollout's apply log and its saved record.

    `stale_from` maps a holder to the log position from which it must not apply (the test
    saw another holder take over before it let this one run again). Returns ``stale``
    (applies by a holding without the current token), ``transitions`` (steps lost or
    applied twice), ``ended`` and ``violations`` (what else broke).
    """
    violations: list[str] = []
    stale = 0
    highest: int | None = None
    per_token: dict[Any, list[float]] = {}
    merged: list[float] = []
    end_at = None
    ends = [i for i, e in enumerate(entries) if "end" in e]
    if len(ends) > 1:
        violations.append(f"the rollout ended {len(ends)} times")
    if ends:
        end_at = ends[0]
        if entries[end_at]["end"] != SUCCEEDED:
            violations.append(f"it ended {entries[end_at]['end']}, not {SUCCEEDED}")
    for index, entry in enumerate(entries):
        if "weight" not in entry:
            continue
        token = entry.get("token")
        if not isinstance(token, int):
            violations.append(f"an apply without a token: {entry}")
            stale += 1
            continue
        if (highest is not None and token < highest) or index >= stale_from.get(
            entry["holder"], len(entries)
        ):
            stale += 1
            continue  # a stale apply is counted once, not also as a transition
        highest = token if highest is None else max(highest, token)
        if end_at is not None and index > end_at:
            violations.append(f"an apply after the end: {entry}")
        weight = float(entry["weight"])
        per_token.setdefault(token, []).append(weight)
        if not merged or merged[-1] != weight:
            merged.append(weight)
    transitions = 0
    for token, weights in per_token.items():
        # One holding applies each step once, in the plan's order.
        again = sum(1 for a, b in itertools.pairwise(weights) if b <= a)
        if again:
            violations.append(f"token {token} applied {weights}: a step again or backwards")
            transitions += again
    expected = list(WEIGHTS) if ends else list(WEIGHTS[: len(merged)])
    if merged != expected:
        missing = sum(1 for w in expected if w not in merged)
        extra = len(merged) - len(set(merged)) + sum(1 for w in merged if w not in expected)
        violations.append(f"the steps applied were {merged}, not {expected}")
        transitions += max(1, missing + extra)
    if ends:
        transitions += _check_record(record, entries, violations)
    return {
        "stale": stale,
        "transitions": transitions,
        "ended": bool(ends),
        "violations": violations,
    }


def _check_record(record: Any, entries: list[dict[str, Any]], violations: list[str]) -> int:
    """The saved record of an ended rollout against the log: 1 when its last write is lost."""
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
        violations.append("the rollout ended but no state is saved")
        return 1
    state = record["state"]
    lost = 0
    if state.get("phase") != SUCCEEDED:
        violations.append(f"the saved phase is {state.get('phase')!r}, not {SUCCEEDED}")
        lost = 1
    applies = [e for e in entries if "weight" in e]
    fencing = record.get("fencing")
    if isinstance(fencing, dict) and applies:
        last = applies[-1]
        if fencing.get("apply_token") != last.get("token"):
            violations.append(
                f"the saved record says token {fencing.get('apply_token')} applied last; "
                f"the log says {last.get('token')}"
            )
            lost = 1
    return lost


# ---------------------------------------------------------------------------------------
# Trials: each on a rollout key of its own, so several run at once


async def _first_holder(lab: Lab, key: str, backend: str, **options: Any) -> tuple[Trial, Runner]:
    """Start a runner and wait until it holds the lease and has applied its first step."""
    trial = Trial(kind="", backend=backend, key=key)
    first = lab.start(key, backend, **options)
    trial.runners = 1
    if not await lab.wait_holder(key, backend, first.holder, 20):
        trial.setup = "the first runner was not seen holding the lease"
    elif not await lab.wait_applied(key, first.holder, 20):
        trial.setup = "the first runner never applied"
    return trial, first


async def _not_set_up(lab: Lab, trial: Trial, first: Runner, second: Runner) -> bool:
    """True when the fault cannot be injected as meant, because the first runner never
    held the lease and applied, or lost it already (a renewal slower than TTL/3 on a busy
    machine); the rollout is then finished and checked all the same."""
    if trial.setup is None and await lab.holder(trial.key, trial.backend) == first.holder:
        return False
    trial.setup = trial.setup or "the first runner lost its lease before the fault"
    await lab.finish(trial, [first, second])
    await lab.check(trial)
    return True


async def takeover_trial(lab: Lab, backend: str = "etcd") -> Trial:
    """kill -9 of the holder mid-rollout; a waiting runner takes over. `takeover_s` is
    from the kill to the moment the store names the new holder."""
    key = lab.key(f"kill9-{backend}")
    trial, first = await _first_holder(lab, key, backend)
    trial.kind = "kill9"
    second = lab.start(key, backend)
    trial.runners += 1
    await anyio.sleep(lab.rng.uniform(0.05, lab.hold))
    if await _not_set_up(lab, trial, first, second):
        return trial
    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    if await lab.wait_holder(key, backend, second.holder, lab.bound + 10):
        trial.takeover_s = time.monotonic() - killed
    else:
        trial.violations.append(f"{key}: no takeover within {lab.bound + 10:g} s")
    await lab.finish(trial, [first, second])
    return await lab.check(trial)


async def stop_trial(lab: Lab, backend: str = "etcd", *, blind: bool = False) -> Trial:
    """SIGSTOP of the holder past its TTL; another takes over; SIGCONT. The first must
    never apply again. With `blind`, its renewal failures go unseen (only the check
    before each apply and the fenced writes stop it)."""
    key = lab.key(f"stop-{backend}")
    trial, first = await _first_holder(lab, key, backend, blind=blind)
    trial.kind = "sigstop-blind" if blind else "sigstop"
    second = lab.start(key, backend)
    trial.runners += 1
    await anyio.sleep(lab.rng.uniform(0.05, lab.hold))
    if await _not_set_up(lab, trial, first, second):
        return trial
    os.kill(first.pid, signal.SIGSTOP)
    stale_from: dict[str, int] = {}
    try:
        if not await lab.wait_holder(key, backend, second.holder, lab.bound + 10):
            trial.violations.append(f"{key}: no takeover while the holder was stopped")
        await lab.wait_applied(key, second.holder, 10)
        stale_from[first.holder] = len(read_log(lab.log(key)))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    await lab.finish(trial, [first, second])
    trial.first_result = (first.result() or {}).get("result")
    return await lab.check(trial, stale_from)


async def partition_trial(lab: Lab, backend: str = "etcd", *, blind: bool = False) -> Trial:
    """The holder's links to the store cut (TCP proxies) past its TTL; another runner, which
    reaches the store, takes over; the links heal. The cut-off one must never apply again."""
    key = lab.key(f"partition-{backend}")
    if backend == "etcd":
        targets = [_host_port(url) for url in lab.cluster.endpoints]
    else:
        targets = [(lab.postgres.host, lab.postgres.port)]
    proxies = [TcpProxy(host, port) for host, port in targets]
    try:
        via = [f"http://{p.address}" for p in proxies]
        dsn = None
        if backend == "postgres":
            dsn = f"host=127.0.0.1 port={proxies[0].port} dbname=postgres user=postgres"
        trial, first = await _first_holder(lab, key, backend, blind=blind, endpoints=via, dsn=dsn)
        trial.kind = "partition-blind" if blind else "partition"
        second = lab.start(key, backend)
        trial.runners += 1
        await anyio.sleep(lab.rng.uniform(0.05, lab.hold))
        if await _not_set_up(lab, trial, first, second):
            return trial
        # Reset or frozen connections; new ones hang.
        drop = lab.rng.random() < 0.5
        for proxy in proxies:
            proxy.partition(drop=drop)
        stale_from: dict[str, int] = {}
        try:
            took_over = await lab.wait_holder(key, backend, second.holder, lab.bound + 10)
            if not took_over:
                trial.violations.append(f"{key}: no takeover during the partition")
            stale_from[first.holder] = len(read_log(lab.log(key)))
            await lab.wait_applied(key, second.holder, 10)
        finally:
            for proxy in proxies:
                proxy.heal()
        await lab.finish(trial, [first, second])
        trial.first_result = (first.result() or {}).get("result")
        return await lab.check(trial, stale_from)
    finally:
        for proxy in proxies:
            proxy.close()


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("://", 1)[1].rpartition(":")
    return host, int(port)


async def leader_kill_trial(lab: Lab) -> Trial:
    """Stop the etcd leader (SIGKILL) mid-rollout; the rollout goes on through the others
    (or a standby takes over if the holder's lease ran out meanwhile). The member is
    started again once the rollout ended."""
    key = lab.key("leader")
    trial, first = await _first_holder(lab, key, "etcd")
    trial.kind = "leader-kill"
    second = lab.start(key, "etcd")
    trial.runners += 1
    await anyio.sleep(lab.rng.uniform(0.0, lab.hold))
    if await _not_set_up(lab, trial, first, second):
        return trial
    leader = await anyio.to_thread.run_sync(lambda: lab.cluster.leader_index())
    lab.cluster.stop_member(leader)
    try:
        await lab.finish(trial, [first, second])
    finally:
        await anyio.to_thread.run_sync(lab.cluster.start_member, leader)
    return await lab.check(trial)


async def restart_trial(lab: Lab) -> Trial:
    """Restart PostgreSQL mid-rollout (a fast shutdown cuts every connection)."""
    key = lab.key("pgrestart")
    trial, first = await _first_holder(lab, key, "postgres")
    trial.kind = "postgres-restart"
    second = lab.start(key, "postgres")
    trial.runners += 1
    await anyio.sleep(lab.rng.uniform(0.0, lab.hold))
    if await _not_set_up(lab, trial, first, second):
        return trial
    await anyio.to_thread.run_sync(lab.postgres.restart)
    await lab.finish(trial, [first, second])
    return await lab.check(trial)


async def contended_rollouts(lab: Lab, rollouts: int, per_wave: int = 4) -> list[Trial]:
    """`rollouts` rollouts, `per_wave` at a time, each wanted by two runner processes at
    once (so 2 x `per_wave` processes share the cluster); each checked against its log."""
    trials: list[Trial] = []
    done = 0
    while done < rollouts:
        wave = min(per_wave, rollouts - done)
        started: list[tuple[Trial, list[Runner]]] = []
        for _ in range(wave):
            key = lab.key("shared")
            trial = Trial(kind="shared", backend="etcd", key=key, runners=2)
            started.append((trial, [lab.start(key, "etcd"), lab.start(key, "etcd")]))

        async def one(trial: Trial, runners: list[Runner]) -> None:
            await lab.finish(trial, runners)
            trials.append(await lab.check(trial))

        async with anyio.create_task_group() as tg:
            for trial, runners in started:
                tg.start_soon(one, trial, runners)
        done += wave
    return trials


async def in_lanes(count: int, lanes: int, trial: Callable[[int], Awaitable[Trial]]) -> list[Trial]:
    """Run `trial(i)` for i < `count`, at most `lanes` at once."""
    found: list[Trial] = []
    limit = anyio.CapacityLimiter(lanes)

    async def one(index: int) -> None:
        async with limit:
            found.append(await trial(index))

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)
    return found
