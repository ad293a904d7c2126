"""One rollout runner as its own process, on an etcd store, recording every apply to a log.

Used by tests/integration/test_fencing.py and the distributed benchmark: each runner is a
separate ``python`` process with its own holder identity, its own `EtcdStore` (its own
HTTP client) and no file shared with the others except the append-only apply log.

Usage::

    python tests/helpers/fencing_runner.py (--endpoints URL[,URL...] | --dsn DSN) --holder NAME \\
        --log PATH [--prefix canarykit/] [--key web] [--release r1] [--ttl 2] \\
        [--steps 10,20,30] [--hold 0.5] [--wait-for-lease 0] [--call-timeout 5] \\
        [--blind-renewals] [--unfenced-saves] [--backend asyncio|trio]

- The plan: ``SetWeight(s)`` for each of `--steps` (percent), each followed by a
  ``Pause(--hold)`` seconds on the real clock. The lease is the store's own `EtcdLease`
  with `--ttl` seconds, so the store's writes are fenced by it.
- `--wait-for-lease S`: while another runner holds the lease, try again every 0.1 s for
  up to S seconds (then exit 4); 0 gives up at once. A runner that gets the lease
  resumes what is saved under the key.
- `--blind-renewals`: the runner is told its lease lasts an hour while a task of the
  helper keeps the etcd lease alive on its real TTL, its failures unseen: the runner's
  own clock check can never stop it, only the engine's fencing can (the store's fenced
  save, then the `check()` before each apply).
- `--unfenced-saves`: the state is saved through a second `EtcdStore` object, which did
  not hand the lease out and so does not fence its writes: with `--blind-renewals`,
  only the `check()` before each apply stops a stale runner (its stale save then
  overwrites its successor's state once: why stores fence their writes).
- The router records, with one ``O_APPEND`` write per line, a JSON object per apply:
  ``{"holder", "token", "weight", "pid", "time"}`` (``token`` is the lease holding's
  fencing token at the apply). When `run()` returns a finished rollout, the runner
  appends ``{"holder", "token", "end": <phase>, "pid", "time"}``.
- The last line on stdout is JSON: ``{"holder", "result", "phase", "reason"}``, result
  one of ``ended``, ``stopped`` (run returned unfinished), ``lease_lost``,
  ``lease_held``, ``error``. Exit status: 0 ended or stopped, 3 lease lost, 4 the lease
  was never obtained, 1 any other error.

Note on the stop moment: the runner proves its lease right before each apply; a process
frozen in the microseconds between that check and the router call would still apply
once on waking (closing that gap needs a router that itself checks the token). Tests
stop a runner while it waits in a pause, as a runner spends nearly all its time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

import anyio
import anyio.abc

import canarykit as ck
from canarykit.stores import EtcdLease, EtcdStore, PostgresStore


class RecordingRouter:
    """A weights-only router without read-back that appends each apply to the log."""

    def __init__(self, log: str, holder: str) -> None:
        self.log = log
        self.holder = holder
        self.lease: EtcdLease | None = None
        self.current: ck.TrafficSplit | None = None
        self.last_token: int | None = None  # of the last apply (the lease is released by the end)

    @property
    def capabilities(self) -> ck.RouterCapabilities:
        return ck.RouterCapabilities(weights=True)

    def record(self, **fields: Any) -> None:
        token = None if self.lease is None else self.lease.token
        entry = {"holder": self.holder, "token": token, **fields}
        entry.update(pid=os.getpid(), time=time.time())
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write: lines of several processes never interleave
        finally:
            os.close(fd)

    async def apply(self, split: ck.TrafficSplit) -> None:
        self.record(weight=split.canary_percent)
        self.current = split
        self.last_token = None if self.lease is None else self.lease.token

    async def read(self) -> ck.TrafficSplit | None:
        return None  # no read-back: a resumed runner applies its target again


class BlindRenewals:
    """Wraps the store's lease so that the runner's own clock can never see it lost.

    The runner is told the lease lasts an hour (so its check of the last renewal's age
    never fires, and its renewals, every 20 minutes, change nothing); the etcd lease is
    kept alive by a task of this wrapper, whose failures go unseen. Only the engine's
    fencing (the store's fenced save, the `check()` before each apply) can stop the
    runner: what a runner whose clock lied would have left.
    """

    CLAIMED_TTL = 3600.0

    def __init__(self, lease: EtcdLease, tg: anyio.abc.TaskGroup) -> None:
        self.inner = lease
        self._tg = tg
        self._keeping: anyio.CancelScope | None = None

    @property
    def holder(self) -> str:
        return self.inner.holder

    @property
    def ttl(self) -> float:
        return self.CLAIMED_TTL

    @property
    def token(self) -> int | None:
        return self.inner.token

    async def acquire(self) -> None:
        await self.inner.acquire()
        self._keeping = anyio.CancelScope()
        self._tg.start_soon(self._keep_alive, self._keeping)

    async def _keep_alive(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(self.inner.ttl / 3)
                # The point: nobody learns here that the lease is gone.
                with contextlib.suppress(Exception):
                    await self.inner.renew()

    async def renew(self) -> None:
        pass  # done by `_keep_alive`, on the lease's real TTL

    async def check(self) -> int:
        return await self.inner.check()

    async def release(self) -> None:
        if self._keeping is not None:
            self._keeping.cancel()
        await self.inner.release()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoints", help="etcd client URLs, comma-separated")
    where.add_argument("--dsn", help="a PostgreSQL connection string (tables named --prefix)")
    parser.add_argument("--holder", required=True, help="this runner's lease holder id")
    parser.add_argument("--log", required=True, help="the append-only apply log")
    parser.add_argument("--prefix", default="canarykit/")
    parser.add_argument("--key", default="web")
    parser.add_argument("--release", default="r1")
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--steps", default="10,20,30,40,50")
    parser.add_argument("--hold", type=float, default=0.5)
    parser.add_argument("--wait-for-lease", type=float, default=0.0)
    parser.add_argument("--call-timeout", type=float, default=5.0)
    parser.add_argument("--blind-renewals", action="store_true")
    parser.add_argument("--unfenced-saves", action="store_true")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> ck.Plan:
    steps: list[Any] = []
    for percent in args.steps.split(","):
        steps += [ck.SetWeight(float(percent)), ck.Pause(args.hold)]
    return ck.Plan(steps=steps)


def store_of(args: argparse.Namespace) -> Any:
    """The runner's store: etcd on ``--endpoints``, or PostgreSQL on ``--dsn``."""
    if args.dsn is not None:
        return PostgresStore(args.dsn, table=args.prefix, timeout=5.0)
    return EtcdStore(args.endpoints.split(","), prefix=args.prefix)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    router = RecordingRouter(args.log, args.holder)
    give_up_at = time.monotonic() + args.wait_for_lease
    async with (
        store_of(args) as store,
        store_of(args) as other_store,
        anyio.create_task_group() as tg,
    ):
        # A store that did not hand the lease out does not fence its writes by it.
        state_store = other_store if args.unfenced_saves else store
        while True:
            lease = store.lease(args.key, holder=args.holder, ttl=args.ttl)
            router.lease = lease
            rollout = ck.Rollout(
                plan_of(args),
                router=router,
                store=state_store,
                key=args.key,
                release=args.release,
                lease=BlindRenewals(lease, tg) if args.blind_renewals else lease,
                call_timeout=args.call_timeout,
            )
            try:
                outcome = await rollout.run()
            except ck.LeaseHeldError as exc:
                if time.monotonic() >= give_up_at:
                    tg.cancel_scope.cancel()
                    return {"result": "lease_held", "phase": None, "reason": str(exc)}
                await anyio.sleep(0.1)
                continue
            except ck.LeaseLostError as exc:
                tg.cancel_scope.cancel()
                return {"result": "lease_lost", "phase": rollout.phase.value, "reason": str(exc)}
            tg.cancel_scope.cancel()
            if outcome.phase.is_terminal:
                router.record(end=outcome.phase.value, token=router.last_token)
                return {"result": "ended", "phase": outcome.phase.value, "reason": outcome.reason}
            return {"result": "stopped", "phase": outcome.phase.value, "reason": outcome.reason}


_CODES = {"ended": 0, "stopped": 0, "lease_lost": 3, "lease_held": 4}


def cli(argv: list[str]) -> int:
    """Run one runner with `argv`; print its JSON result last; the exit status."""
    arguments = parse(argv)
    try:
        answer = anyio.run(main, arguments, backend=arguments.backend)
    except Exception as exc:  # reported as the result, for the harness
        answer = {"result": "error", "phase": None, "reason": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({"holder": arguments.holder, **answer}), flush=True)
    return _CODES.get(answer["result"], 1)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
