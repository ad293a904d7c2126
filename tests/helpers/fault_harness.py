"""Faults at every await, and kill -9: the harness shared by the tests and benchmarks/faults.py.

Faults. A `Schedule` is a plan, a router's capabilities, the runner's retry settings, and
per await point (router apply and read, metrics, an async decider, store save and load,
lease acquire, renew and release, and with `hooks` every hook, as a Python callable or as
an HTTP webhook to a loopback server, `HookServer`) which call fails and how
(`canarykit.testing.FaultPlan`: an error, a lost answer, a slow call, a hang, a wrong
answer); plus operator commands (on the rollout's clock, or on the loop's so that they
land mid-call), cancellations of run(), and early stops. `run_schedule` drives real
`Rollout`s on a `VirtualClock` through it: a chain of runs sharing one store and one
router, as a deploy tool restarted after each crash would be: a new runner each time, the
same one run() again, or two taking turns (`Schedule.runners`); after four runs with
faults, one without. The invariants (`check_run`, `run_chain`):

- run() returns, or raises only what it documents (`documented`);
- a run that ends (at its final `stop_at`) is in exactly one terminal phase or paused,
  with a reason; the outcome agrees with the state; phase changes reported to listeners
  end at most once in a terminal phase, and the last one is the state's;
- the split the state says is confirmed is the one the router last confirmed to the
  runner (`RecordingRouter.believed`), or None; SUCCEEDED means full canary in force,
  ROLLED_BACK and ABORTED stable only;
- a run stopped by a StateSaveError has rolled back (or paused with the rollback
  pending); a cancelled run that had talked to the router has too (unless told to leave
  traffic, or its lease was lost);
- no apply after the runner lost its lease, and no traffic moved after run() returned;
- over the whole chain, the canary's weight never went back, except to 0, and never up
  again after a rollback to 0.

Call timeouts are measured on the event loop's clock, so the loop's time is virtual too:
asyncio runs on `VirtualTimeLoop` (time jumps to the next timer whenever nothing is ready
to run) and trio on `trio.testing.MockClock(autojump_threshold=0)`. A hang of an hour
costs nothing, and a schedule runs the same way every time.

kill -9. `Kill9Lane` drives `benchmarks/kill9_child.py`: a parent process that has
imported canarykit once and forks a child per run (so a run starts in milliseconds
instead of the ~0.5 s an interpreter takes to import canarykit). The child runs a
rollout on the real clock with a `FileStore` and a `FileRouter` (whose split, and an
append-only log of every apply, live in files); the lane kills it with SIGKILL at a
random moment (sometimes just after a Ctrl-C), starts a new one on the same files, and so
on until the rollout ends. `check_kill9_trial` then reads the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

import canarykit as ck
from canarykit import ArmStats, Judgement, Observation, Phase, Verdict, VerdictKind
from canarykit.events import LeaseRevoked, PhaseChanged
from canarykit.testing import (
    FakeRouter,
    FaultPlan,
    FaultyDecider,
    FaultyLease,
    FaultyMetrics,
    FaultyRouter,
    FaultyStore,
    InjectedError,
    VirtualClock,
)

STABLE_ONLY = ck.TrafficSplit()
FULL_CANARY = ck.TrafficSplit(canary_percent=100.0)
ROOT = Path(__file__).resolve().parents[2]
KEY = "web"

# Seconds on the event loop's clock (virtual: see the module docstring).
CALL_TIMEOUT = 5.0
DECIDER_TIMEOUT = 8.0
SLOW = 20.0  # a "slow" call: longer than either timeout
ROLLBACK_TIMEOUT = 40.0
LEASE_TTL = 6.0  # renewed every 2 s of loop time: several times in a run with latency
RESTART_GAP = 4 * SLOW  # loop time between two runners: a stale lease has expired by then
MAX_FAULTY_RUNS = 4

# What `Rollout.run()` documents it may raise. Anything else escaping is a violation.
DOCUMENTED = (
    ck.StateError,
    ck.LeaseError,
    ck.RouterNotAtStableError,  # a fresh start found canary traffic: nothing moved
    ck.ReleaseFinishedError,
    ck.ReleaseInProgressError,
)


def documented(error: BaseException) -> bool:
    """True for an exception `Rollout.run()` documents (a RouterError only from a read)."""
    if isinstance(error, ck.RouterError):
        return "could not read the router's split" in str(error)
    return isinstance(error, DOCUMENTED)


def refused(error: BaseException | None) -> bool:
    """True when run() raised before taking the saved rollout up: it could not load it."""
    return isinstance(error, ck.StateError) and not isinstance(error, ck.StateSaveError)


# ---------------------------------------------------------------------------- virtual time


class _JumpingSelector:
    """A selector that, instead of blocking for `timeout`, moves its loop's time on."""

    def __init__(self, selector: Any, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> Any:
        events = self._selector.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # Nothing scheduled: only another thread could wake the loop. Give it a
            # (real) while, then call it what it is.
            events = self._selector.select(10.0)
            if not events:
                raise RuntimeError("virtual-time loop: every task waits for ever (deadlock)")
            return events
        self._loop.virtual_now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose `time()` is virtual: idle waits jump instead of sleeping.

    Work in other threads (`anyio.to_thread`) is not waited for before a jump, so use it
    with in-memory fakes only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.virtual_now


def run_virtual(function: Callable[[], Any], backend: str) -> Any:
    """`anyio.run(function)` with the event loop's clock virtual, on `backend`."""
    if backend == "trio":
        import trio.testing

        options: dict[str, Any] = {"clock": trio.testing.MockClock(autojump_threshold=0)}
    else:
        options = {"loop_factory": VirtualTimeLoop}
    return anyio.run(function, backend=backend, backend_options=options)


# ---------------------------------------------------------------------------- the fakes


class Timeline:
    """What reached the router and the store, in order, and which run did it."""

    def __init__(self) -> None:
        self.run = 0
        # ("apply", run, canary percent), or ("save", run, whether it records a rollback)
        self.entries: list[tuple[str, int, Any]] = []

    def traffic_went_back(self) -> str | None:
        """Why the canary's weight went back (see `traffic_went_back`), or None.

        Back up after a rollback to 0 counts only when the rollback was recorded (saved)
        or the same run did both: a rollback that its runner could not record (its store
        failing, or its lease lost) is invisible to the next runner.
        """
        weights = [percent for kind, _, percent in self.entries if kind == "apply"]
        went_back = traffic_went_back(weights)
        if went_back is None or "went up" not in went_back:
            return went_back
        recorded, rolled_back_in = False, set()
        last = 0.0
        for kind, run, value in self.entries:
            if kind == "save":
                recorded = recorded or value
                continue
            if value == 0 and last > 0:
                rolled_back_in.add(run)
            if value > 0 and (recorded or run in rolled_back_in):
                return went_back
            last = value
        return None


class TimelineRouter(FakeRouter):
    """A `FakeRouter` that notes each apply that took effect in a `Timeline`."""

    def __init__(self, timeline: Timeline, capabilities: ck.RouterCapabilities) -> None:
        super().__init__(capabilities=capabilities)
        self.timeline = timeline

    async def apply(self, split: ck.TrafficSplit) -> None:
        await super().apply(split)
        self.timeline.entries.append(("apply", self.timeline.run, split.canary_percent))


_ROLLED_BACK = {Phase.ROLLING_BACK.value, Phase.ROLLED_BACK.value, Phase.ABORTED.value}


class JsonStore:
    """A `StateStore` keeping each record as JSON text: as strict as a file, and cheap.

    With a `timeline`, it notes each save that records a rollback.
    """

    def __init__(self, timeline: Timeline | None = None) -> None:
        self.saved: dict[str, str] = {}
        self.timeline = timeline

    async def save(self, key: str, data: dict[str, Any]) -> None:
        self.saved[key] = json.dumps(data, allow_nan=False)
        if self.timeline is not None:
            state = data.get("state")
            rollback = isinstance(state, dict) and (
                state.get("phase") in _ROLLED_BACK or state.get("rollback_pending") is True
            )
            self.timeline.entries.append(("save", self.timeline.run, rollback))

    async def load(self, key: str) -> dict[str, Any] | None:
        text = self.saved.get(key)
        return None if text is None else json.loads(text)  # type: ignore[no-any-return]


class CountingStore:
    """The store as the runner sees it: counts the loads that reached the runner."""

    def __init__(self, store: ck.StateStore) -> None:
        self.store = store
        self.loads = 0

    async def save(self, key: str, data: dict[str, Any]) -> None:
        await self.store.save(key, data)

    async def load(self, key: str) -> dict[str, Any] | None:
        record = await self.store.load(key)
        self.loads += 1
        return record


class SteadyMetrics:
    """A `MetricsSource` answering a healthy observation for every window."""

    async def collect(self, window: ck.Window) -> Observation:
        return Observation(
            start=window.start,
            end=window.end,
            stable=ArmStats(requests=1000, errors=5),
            canary=ArmStats(requests=100, errors=1),
        )


class ScriptedDecider:
    """A pure `Decider` whose n-th verdict is `verdicts[n]` (PASS when not given)."""

    def __init__(self, verdicts: Mapping[int, VerdictKind]) -> None:
        self.verdicts = dict(verdicts)
        self.calls = 0

    def initial_state(self) -> int:
        return 0

    def judge(self, state: Any, observation: Observation) -> Judgement:
        self.calls += 1
        kind = self.verdicts.get(self.calls, VerdictKind.PASS)
        verdict = Verdict(kind=kind, reason=f"scripted {kind.value} (judgement {self.calls})")
        return Judgement(verdict, state=int(state) + 1)


class LoopLease:
    """`MemoryLease` on the event loop's clock, so that leases expire in virtual time."""

    def __init__(self, holders: dict[str, tuple[str, float]], holder: str, ttl: float) -> None:
        self._holders = holders
        self._holder = holder
        self._ttl = ttl

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def ttl(self) -> float:
        return self._ttl

    async def acquire(self) -> None:
        current = self._holders.get(KEY)
        now = anyio.current_time()
        if current is not None and current[0] != self._holder and current[1] > now:
            raise ck.LeaseHeldError(f"{KEY}: held by {current[0]}")
        self._holders[KEY] = (self._holder, now + self._ttl)

    async def renew(self) -> None:
        current = self._holders.get(KEY)
        if current is None or current[0] != self._holder:
            raise ck.LeaseLostError(f"{KEY}: the lease is no longer {self._holder}'s")
        self._holders[KEY] = (self._holder, anyio.current_time() + self._ttl)

    async def release(self) -> None:
        current = self._holders.get(KEY)
        if current is not None and current[0] == self._holder:
            del self._holders[KEY]


class RecordingRouter:
    """The router as the runner sees it: what its calls proved to the runner.

    `believed` is the split the router last confirmed to the runner: an apply that
    returned, followed (for read-back routers) by a read that agreed or could not tell,
    or what a read outside a read-back reported (before the start, on resuming). The
    runner's `state.confirmed` must be that split, or None (unknown).
    """

    def __init__(self, router: FaultyRouter, fake: FakeRouter) -> None:
        # `fake` is the router under the faults: its `current` is the split in force.
        self.router = router
        self.fake = fake
        self.read_back = router.capabilities.read_back
        self.believed: ck.TrafficSplit = fake.current
        self._pending: ck.TrafficSplit | None = None
        self.lease_lost = False
        self.calls = 0  # in this run
        self.violations: list[str] = []

    @property
    def capabilities(self) -> ck.RouterCapabilities:
        return self.router.capabilities

    def new_run(self) -> None:
        self._pending = None
        self.lease_lost = False
        self.calls = 0

    async def apply(self, split: ck.TrafficSplit) -> None:
        self._pending = None
        self.calls += 1
        if self.lease_lost:
            self.violations.append(f"applied {split} after the runner lost its lease")
        await self.router.apply(split)  # raises or is cancelled: nothing confirmed
        if self.read_back:
            self._pending = split
        else:
            self.believed = split

    async def read(self) -> ck.TrafficSplit | None:
        pending, self._pending = self._pending, None
        self.calls += 1
        seen = await self.router.read()
        if pending is None:
            if seen is not None:
                self.believed = seen  # a report, before the start or on resuming
        elif seen is None or seen == pending:
            self.believed = pending  # a read-back that agrees
        return seen


# ---------------------------------------------------------------------------- schedules


@attrs.frozen(kw_only=True)
class Schedule:
    """One fault-injection run: what the chain of runners does and what goes wrong."""

    plan: ck.Plan
    read_back: bool = True
    apply_attempts: int = 3
    latency: float = 0.0
    faults: Mapping[str, Mapping[int, str]] = attrs.field(factory=dict)
    verdicts: Mapping[int, VerdictKind] = attrs.field(factory=dict)
    # (time, command, on the loop's clock): at that time on the rollout's clock, or at a
    # tenth of it on the event loop's clock (so that it can land in the middle of a call).
    commands: tuple[tuple[float, str, bool], ...] = ()
    stops: tuple[float, ...] = ()  # early stop_at offsets of the first runners
    hooks: bool = False  # a hook at every hook point (their calls get faults too)
    webhooks: bool = False  # with hooks: HTTP webhooks to a `HookServer`, not callables
    cancels: tuple[float, ...] = ()  # the first runners are cancelled after these (loop) seconds
    on_cancel: str = "rollback"
    # Which runner object each run uses: "new" (a new one each time, as a restarted deploy
    # tool would), "same" (run() the same one again, as a retry loop would) or "two" (two
    # runners, say two engineers' deploy tools, taking turns).
    runners: str = "new"

    @property
    def horizon(self) -> float:
        """Rollout seconds within which any rollout ends or pauses for good."""
        plan = self.plan
        deadline = plan.progress_deadline or 0.0
        return (
            1000.0
            + plan.nominal_seconds
            + deadline * (len(plan.steps) + 2)
            + (plan.pause_limit or 0.0)
            + max((at for at, _, _ in self.commands), default=0.0)
            # Each gate may keep the rollout waiting for up to its timeout.
            + (HOOK_GATE_TIMEOUT * (len(plan.steps) + 2) if self.hooks else 0.0)
        )


HOOK_GATE_TIMEOUT = 600.0
# What each hook answers when nothing goes wrong; a "wrong" answer is the opposite.
_HOOK_ANSWERS = {
    "confirm_rollout": True,
    "create_canary": None,
    "pre_rollout": None,
    "confirm_traffic_increase": True,
    "rollback": False,
    "confirm_promotion": True,
    "retire_stable": None,
    "retire_canary": None,
    "post_rollout": None,
}


def _answer(value: bool | None) -> Callable[[Any], Any]:
    async def hook(call: Any) -> bool | None:
        return value

    return hook


def _opposite(answer: bool | None) -> bool:
    return answer is False


def faulty_hooks(faults: FaultPlan) -> ck.hooks.Hooks:
    """A hook at every point, answering as a healthy rollout expects, with `faults`."""
    hooks = {
        name: faults.wrap(f"hook.{name}", _answer(answer), wrong=_opposite)
        for name, answer in _HOOK_ANSWERS.items()
    }
    return ck.hooks.Hooks(
        **hooks, interval=30, gate_timeout=HOOK_GATE_TIMEOUT, call_timeout=CALL_TIMEOUT
    )


class HookServer:
    """Every hook point's webhook endpoint, with the faults, served in the runner's own loop.

    An HTTP server on loopback (h11 on an anyio listener), in the same virtual-time event
    loop as the runner, so the webhooks' timeouts and backoffs are virtual too. The hook at
    point ``name`` POSTs to ``/name``; each request is a call at ``hook.name`` in `faults`,
    as a Python hook's call is, and the fault takes its HTTP form: "error" answers 500
    (which the webhook tries again), "hang" never answers (its timeout trips), "slow"
    answers after `faults.slow`, "lost" decides and then closes the connection without
    answering, "wrong" answers the opposite. Otherwise it answers 200 for yes (and for a
    task done) and 403 for no.
    """

    def __init__(self, faults: FaultPlan) -> None:
        self.faults = faults
        self.url = ""
        self.asked: list[str] = []  # the hook of each request, as it came
        # (hook, status or None if lost), as answered: not a hung request, nor a slow one
        # before its time
        self.answered: list[tuple[str, int | None]] = []

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free loopback port, set `url` and serve until cancelled."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}"
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        import h11

        async with stream:
            connection = h11.Connection(h11.SERVER)
            target = ""
            try:
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await stream.receive())
                    elif isinstance(event, h11.Request):
                        target = event.target.decode()
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                status = await self._answer(target.strip("/"))
                if status is None:
                    return  # the answer is lost: the connection closes unanswered
                headers = [("content-length", "0"), ("connection", "close")]
                response = h11.Response(status_code=status, headers=headers)
                await stream.send(connection.send(response) + connection.send(h11.EndOfMessage()))
            except (anyio.EndOfStream, anyio.BrokenResourceError, h11.ProtocolError, OSError):
                return  # the webhook gave up on this request (its timeout) and hung up

    async def _answer(self, name: str) -> int | None:
        self.asked.append(name)
        try:
            kind = await self.faults.enter(f"hook.{name}")
        except InjectedError:
            self.answered.append((name, 500))
            return 500
        yes = _HOOK_ANSWERS[name] is not False
        if kind == "wrong":
            yes = not yes
        status = None if kind == "lost" else 200 if yes else 403
        self.answered.append((name, status))
        return status


# A webhook's own timeout and retries fit within the hook's call timeout (1 + 0.5 + 1 s).
WEBHOOK_TIMEOUT = 1.0
WEBHOOK_ATTEMPTS = 2


def webhook_hooks(url: str) -> ck.hooks.Hooks:
    """A `Webhook` at every hook point, posting to `HookServer` at `url`."""
    hooks = {
        name: ck.hooks.Webhook(
            f"{url}/{name}",
            name=name.replace("_", "-"),
            timeout=WEBHOOK_TIMEOUT,
            attempts=WEBHOOK_ATTEMPTS,
            backoff=0.5,
        )
        for name in _HOOK_ANSWERS
    }
    return ck.hooks.Hooks(
        **hooks, interval=30, gate_timeout=HOOK_GATE_TIMEOUT, call_timeout=CALL_TIMEOUT
    )


def _command(holder: list[ck.Rollout | None], name: str) -> None:
    rollout = holder[0]
    if rollout is None:
        return
    with contextlib.suppress(ck.InvalidTransition):
        getattr(rollout, name)()


async def _command_later(delay: float, holder: list[ck.Rollout | None], name: str) -> None:
    await anyio.sleep(delay)
    _command(holder, name)


@attrs.define
class ChainResult:
    """What one schedule did: the invariants it broke, and how its runs ended."""

    violations: list[str] = attrs.Factory(list)
    endings: list[str] = attrs.Factory(list)
    injected: int = 0
    phase: Phase | None = None
    webhooks_asked: list[str] = attrs.Factory(list)  # `HookServer.asked`
    webhook_answers: list[tuple[str, int | None]] = attrs.Factory(list)  # `HookServer.answered`


def _phase_changes(events: list[Any]) -> list[PhaseChanged]:
    return [event for event in events if isinstance(event, PhaseChanged)]


def check_run(
    *,
    index: int,
    rollout: ck.Rollout,
    outcome: ck.RolloutOutcome | None,
    error: BaseException | None,
    events: list[Any],
    router: RecordingRouter,
    final: bool,
    loaded: bool = True,
) -> list[str]:
    """The invariants one run broke (an empty list when it kept them all).

    `loaded`: the runner loaded the saved state in this run. One that did not (it could
    not take the lease, or load) holds what it knew before, which may be stale: its state
    is not checked against the router.
    """
    where = f"run {index + 1}"
    problems: list[str] = []
    state = rollout.state
    real = router.fake.current
    if error is not None and not documented(error):
        problems.append(f"{where}: an undocumented exception escaped run(): {error!r}")
    if outcome is not None:
        if outcome.split != outcome.state.confirmed or outcome.state != state:
            problems.append(
                f"{where}: the outcome ({outcome.phase}, {outcome.split}) disagrees with the "
                f"state ({state.phase}, {state.confirmed})"
            )
        if final and not (state.is_terminal or state.phase is Phase.PAUSED):
            problems.append(f"{where}: ended neither terminal nor paused: {state.phase}")
        if state.phase is Phase.PAUSED and not state.reason:
            problems.append(f"{where}: paused without saying why")
    if loaded and state.confirmed is not None and state.confirmed != router.believed:
        problems.append(
            f"{where}: the state says {state.confirmed} is confirmed; the router last "
            f"confirmed {router.believed}"
        )
    if loaded and state.is_terminal:
        expected = FULL_CANARY if state.phase is Phase.SUCCEEDED else STABLE_ONLY
        # Aborted before it started, a rollout may never have confirmed anything.
        if real != expected or state.confirmed not in (None, real):
            problems.append(
                f"{where}: ended {state.phase} with {real} in force (state: {state.confirmed})"
            )
    if isinstance(error, ck.StateSaveError) and not router.lease_lost:
        rolled_back = state.is_terminal or (state.phase is Phase.PAUSED and state.rollback_pending)
        if not rolled_back:
            problems.append(f"{where}: could not save and did not roll back: {state.phase}")
    changes = _phase_changes(events)
    ends = [i for i, change in enumerate(changes) if change.new.is_terminal]
    if len(ends) > 1 or (ends and ends[0] != len(changes) - 1):
        problems.append(f"{where}: more than one end: {[c.new for c in changes]}")
    if changes and changes[-1].new is not state.phase:
        problems.append(f"{where}: last reported {changes[-1].new}, state is {state.phase}")
    problems.extend(f"{where}: {text}" for text in router.violations)
    router.violations.clear()
    return problems


async def run_chain(schedule: Schedule) -> ChainResult:
    """Drive `schedule`'s chain of runners to its end; report broken invariants."""
    clock = VirtualClock()
    current: list[ck.Rollout | None] = [None]
    async with anyio.create_task_group() as tg:
        for at, name, on_loop in schedule.commands:
            if on_loop:
                tg.start_soon(_command_later, at / 10, current, name)
            else:
                clock.call_at(at, functools.partial(_command, current, name))
        server = None
        if schedule.webhooks:
            server = HookServer(faults=FaultPlan())  # its faults are set by _run_chain
            await tg.start(server.serve)
        result = await _run_chain(schedule, clock, current, server)
        if server is not None:
            result.webhooks_asked = server.asked
            result.webhook_answers = server.answered
        tg.cancel_scope.cancel()
    return result


async def _cancel_later(delay: float, scope: anyio.CancelScope) -> None:
    await anyio.sleep(delay)
    scope.cancel()


def traffic_went_back(weights: list[float]) -> str | None:
    """Why the canary weights applied in order went back, or None if they never did.

    Weights only grow, except for a rollback to 0, after which they stay at 0.
    """
    rolled_back = False
    for before, after in itertools.pairwise(weights):
        if after < before and after != 0:
            return f"traffic went back from {before:g}% to {after:g}%: {weights}"
        if rolled_back and after > 0:
            return f"traffic went up to {after:g}% after a rollback to 0%: {weights}"
        rolled_back = rolled_back or (after == 0 and before > 0)
    return None


async def _run_chain(
    schedule: Schedule,
    clock: VirtualClock,
    current: list[ck.Rollout | None],
    server: HookServer | None,
) -> ChainResult:
    result = ChainResult()
    faults = FaultPlan(dict(schedule.faults), slow=SLOW, latency=schedule.latency)  # type: ignore[arg-type]
    if server is not None:
        server.faults = faults
    hooks = None
    if schedule.hooks:
        hooks = faulty_hooks(faults) if server is None else webhook_hooks(server.url)
    capabilities = ck.RouterCapabilities(weights=True, read_back=schedule.read_back)
    timeline = Timeline()
    fake = TimelineRouter(timeline, capabilities)
    router = RecordingRouter(FaultyRouter(fake, faults), fake)
    metrics = FaultyMetrics(SteadyMetrics(), faults)
    decider = FaultyDecider(ScriptedDecider(schedule.verdicts), faults)
    store = CountingStore(FaultyStore(JsonStore(timeline), faults))
    holders: dict[str, tuple[str, float]] = {}
    events: list[Any] = []  # this run's events

    def listen(event: Any) -> None:
        events.append(event)
        if isinstance(event, LeaseRevoked):
            router.lease_lost = True

    runners: dict[int, ck.Rollout] = {}
    index = 0
    while True:
        clean = index >= MAX_FAULTY_RUNS
        faults.enabled = not clean
        early = index < len(schedule.stops) and not clean
        stop_at = clock.now() + (schedule.stops[index] if early else schedule.horizon)
        cancel = None if clean or index >= len(schedule.cancels) else schedule.cancels[index]
        name = {"new": index + 1, "same": 1, "two": 1 + index % 2}[schedule.runners]
        rollout = runners.get(name)
        if rollout is None:
            lease = FaultyLease(LoopLease(holders, f"runner-{name}", LEASE_TTL), faults)
            rollout = runners[name] = ck.Rollout(
                schedule.plan,
                router=router,
                metrics=metrics,
                decider=decider,
                clock=clock,
                listeners=[listen],
                call_timeout=CALL_TIMEOUT,
                decider_timeout=DECIDER_TIMEOUT,
                apply_attempts=schedule.apply_attempts,
                retry_delay=1.0,
                rollback_timeout=ROLLBACK_TIMEOUT,
                on_cancel=schedule.on_cancel,  # type: ignore[arg-type]
                store=store,
                key=KEY,
                lease=lease,
                hooks=hooks,
            )
        events.clear()
        timeline.run = index
        router.new_run()
        loads = store.loads
        current[0] = rollout
        outcome: ck.RolloutOutcome | None = None
        error: BaseException | None = None
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                if cancel is not None:
                    tg.start_soon(_cancel_later, cancel, scope)
                try:
                    outcome = await rollout.run(stop_at=stop_at)
                except Exception as exc:  # judged by check_run
                    error = exc
                tg.cancel_scope.cancel()
        cancelled = scope.cancelled_caught
        current[0] = None
        applied = len(fake.applied)
        await anyio.sleep(RESTART_GAP)  # a call left running would land now
        if len(fake.applied) != applied:
            result.violations.append(f"run {index + 1}: traffic moved after run() returned")
        ended = outcome is not None and not early
        result.violations += check_run(
            index=index,
            rollout=rollout,
            outcome=outcome,
            error=error,
            events=events,
            router=router,
            final=ended,
            # Loaded and taken up: not refused (a damaged record, say) nor failed to load.
            loaded=store.loads > loads and not refused(error),
        )
        state = rollout.state
        rolled_back = state.is_terminal or (state.phase is Phase.PAUSED and state.rollback_pending)
        # A run that reached its stop_at leaves traffic where it is: a cancellation that
        # comes while it hands the rollout back (releasing its lease) has nothing to undo.
        stopped = clock.now() >= stop_at
        must_roll_back = schedule.on_cancel == "rollback" and not router.lease_lost and not stopped
        # Once it has talked to the router, a cancelled runner rolls back (or says it could
        # not); cancelled before that, it may not hold the lease and touches nothing.
        if cancelled and must_roll_back and router.calls and not rolled_back:
            result.violations.append(
                f"run {index + 1}: cancelled, and neither rolled back nor paused: {state.phase}"
            )
        how = type(error).__name__ if error is not None else rollout.phase.value
        how = "cancelled" if cancelled else how
        result.endings.append(how + (" (clean)" if clean else ""))
        result.phase = rollout.phase
        if rollout.phase.is_terminal or ended or (clean and error is not None):
            break
        index += 1
    went_back = timeline.traffic_went_back()
    if went_back:
        result.violations.append(went_back)
    result.injected = len(faults.injected)
    return result


def run_schedule(schedule: Schedule, backend: str = "asyncio") -> ChainResult:
    """Run `schedule` in virtual time on `backend`; the result lists broken invariants."""
    result: ChainResult = run_virtual(functools.partial(run_chain, schedule), backend)
    return result


# ---------------------------------------------------------------------------- strategies

# The calls a fault may hit, per point: about as many as a chain of runners makes.
_POINT_CALLS = {
    "router.apply": 8,
    "router.read": 8,
    "metrics.collect": 10,
    "decider.judge": 10,
    "store.save": 15,
    "store.load": 3,
    "lease.acquire": 3,
    "lease.renew": 4,
    "lease.release": 3,
}
_HOOK_CALLS = {f"hook.{name}": 3 for name in _HOOK_ANSWERS} | {"hook.rollback": 10}
_KINDS = ("error", "lost", "slow", "hang", "wrong")
_COMMANDS = ("abort", "pause", "resume", "promote", "promote_full")


def schedules(*, dense: bool = False) -> Any:
    """A hypothesis strategy for `Schedule`s (hypothesis is imported only when asked).

    `dense`: up to 12 faults on the first calls that move traffic or record it (router
    and store), instead of up to 8 anywhere.
    """
    from hypothesis import strategies as st

    # Every strategy is built once, here: building them inside a draw costs more than
    # running the rollout.
    weights = st.sets(st.sampled_from([5, 10, 20, 25, 40, 50, 75]), min_size=1, max_size=4)
    after = st.sampled_from(["pause", "pause", "analyze", "none", "wait"])
    pause = st.sampled_from([30, 60, 120])
    if dense:
        points, calls, most = ["router.apply", "router.read", "store.save"], 10, 12
    else:
        points, calls, most = sorted(_POINT_CALLS), 30, 8
    fault = st.tuples(st.sampled_from(points), st.integers(1, calls), st.sampled_from(_KINDS))
    hook_fault = st.tuples(
        st.sampled_from(sorted(_HOOK_CALLS)), st.integers(1, 30), st.sampled_from(_KINDS)
    )
    verdict = st.tuples(
        st.integers(1, 24),
        st.sampled_from([VerdictKind.FAIL, VerdictKind.INCONCLUSIVE, VerdictKind.NOT_YET]),
    )
    command = st.tuples(st.integers(0, 900).map(float), st.sampled_from(_COMMANDS), st.booleans())
    options = st.fixed_dictionaries(
        {
            "analysis_interval": st.sampled_from([None, 30, 45]),
            "require_pass": st.booleans(),
            "consecutive_error_limit": st.integers(1, 4),
            "pause_limit": st.sampled_from([None, None, 600]),
            "progress_deadline": st.sampled_from([120, 300]),
            "on_progress_deadline": st.sampled_from(["rollback", "pause"]),
        }
    )
    runner = st.tuples(
        st.sampled_from([True, True, True, False]),  # read-back
        st.integers(1, 3),  # apply attempts
        st.sampled_from([0.0, 0.5, 1.0]),  # latency of every call
    )
    stops = st.lists(st.sampled_from([1.0, 20.0, 45.0, 100.0, 250.0]), max_size=2)
    cancels = st.lists(st.sampled_from([0.2, 1.0, 3.0, 6.0, 12.0, 30.0]), max_size=2)
    restarts = st.tuples(
        cancels.map(tuple),
        st.sampled_from(["rollback", "rollback", "leave"]),
        st.sampled_from(["new", "new", "same", "two"]),
    )

    @st.composite
    def build(draw: Any) -> Schedule:
        steps: list[Any] = []
        for weight in sorted(draw(weights)):
            steps.append(ck.SetWeight(weight))
            then = draw(after)
            if then == "pause":
                steps.append(ck.Pause(draw(pause)))
            elif then == "analyze":
                steps.append(ck.Analyze(seconds=60, interval=30))
            elif then == "wait":
                steps.append(ck.WaitForPromotion())
        read_back, attempts, latency = draw(runner)
        faults: dict[str, dict[int, str]] = {}
        drawn = draw(st.lists(fault, min_size=1, max_size=most))
        hooks = not dense and draw(st.integers(0, 3)) == 0
        webhooks = hooks and draw(st.booleans())
        if hooks:
            drawn += draw(st.lists(hook_fault, max_size=4))
        for point, number, kind in drawn:
            if kind == "wrong" and point == "router.apply" and not read_back:
                kind = "lost"  # a wrong split is only caught by a read-back
            call = 1 + (number - 1) % {**_POINT_CALLS, **_HOOK_CALLS}[point]
            faults.setdefault(point, {})[call] = kind
        return Schedule(
            plan=ck.Plan(steps=steps, **draw(options)),
            read_back=read_back,
            apply_attempts=attempts,
            latency=latency,
            faults=faults,
            verdicts=dict(draw(st.lists(verdict, max_size=2))),
            commands=tuple(draw(st.lists(command, max_size=2))),
            stops=tuple(draw(stops)),
            hooks=hooks,
            webhooks=webhooks,
            **dict(zip(("cancels", "on_cancel", "runners"), draw(restarts), strict=True)),
        )

    return build()


# ---------------------------------------------------------------------------- kill -9

KILL9_WEIGHTS = (5.0, 10.0, 25.0, 50.0, 75.0)
KILL9_ANALYSIS = 0.1  # background analysis every 0.1 s: many saves for a kill to land in
KILL9_RUNS = 12  # runners a trial may kill before it lets one finish
KILL9_TIMEOUT = 30.0  # real seconds a child may take before the trial gives up on it
KILL9_INTERRUPTS = 0.25  # the share of kills that come 0-40 ms after a Ctrl-C


class FileRouter:
    """A `TrafficRouter` whose split lives in a file, so it survives the process.

    The file holds the split and a version, one more at each apply. `apply` first
    appends the split and its version to an append-only log (one ``write`` of one line,
    with the process id and the time), then, after a short while (a router's reload),
    replaces the split file atomically. A kill between the two leaves a logged split that
    never took effect: the next apply logs the same version again. So the splits users
    were sent to, in order, are for each version up to the file's the last one logged
    (`applied_splits`).
    """

    capabilities = ck.RouterCapabilities(weights=True, read_back=True)

    def __init__(self, directory: Path) -> None:
        self.split_path = directory / "router.json"
        self.log_path = directory / "router.log"

    def _load(self) -> tuple[int, ck.TrafficSplit]:
        try:
            data = json.loads(self.split_path.read_text())
        except FileNotFoundError:
            return 0, STABLE_ONLY
        return data["version"], ck.TrafficSplit.from_json(data["split"])

    async def apply(self, split: ck.TrafficSplit) -> None:
        version = self._load()[0] + 1
        line = json.dumps(
            {"pid": os.getpid(), "at": time.time(), "version": version, "split": split.to_json()}
        )
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        await anyio.sleep(0.005)
        temporary = self.split_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"version": version, "split": split.to_json()}))
        os.replace(temporary, self.split_path)

    async def read(self) -> ck.TrafficSplit:
        return self._load()[1]


def applied_splits(directory: Path) -> list[tuple[float, ck.TrafficSplit]]:
    """(time, split) of each apply of a `FileRouter` that took effect, in order."""
    final = FileRouter(directory)._load()[0]
    last: dict[int, dict[str, Any]] = {}
    for line in (directory / "router.log").read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line torn by a kill, never completed
            entry = json.loads(line)
            last[entry["version"]] = entry
    return [
        (last[version]["at"], ck.TrafficSplit.from_json(last[version]["split"]))
        for version in range(1, final + 1)
    ]


def kill9_plan(pauses: list[float]) -> ck.Plan:
    """Weights 5, 10, 25, 50, 75 %, each held for its pause, with background analysis."""
    steps: list[Any] = []
    for weight, pause in zip(KILL9_WEIGHTS, pauses, strict=True):
        steps += [ck.SetWeight(weight), ck.Pause(pause)]
    return ck.Plan(steps=steps, analysis_interval=KILL9_ANALYSIS)


def kill9_child(directory: Path, pauses: list[float], backend: str) -> int:
    """One runner of a kill -9 trial: run (or resume) the rollout on the real clock.

    Writes ``started.<pid>`` before it acts and ``outcome.json`` once the rollout ends.
    Returns the exit code: 0, or 130 after Ctrl-C (SIGINT: the runner rolls back).
    """
    from canarykit.deciders import bound, threshold

    rollout = ck.Rollout(
        kill9_plan(pauses),
        router=FileRouter(directory),
        metrics=SteadyMetrics(),
        decider=threshold(bound("error_rate", max=0.05)),
        store=ck.stores.FileStore(directory / "state"),
        key=KEY,
        call_timeout=5,
    )
    (directory / f"started.{os.getpid()}").touch()
    try:
        outcome = anyio.run(rollout.run, backend=backend)
    except KeyboardInterrupt:
        return 130
    except ck.ReleaseFinishedError:
        # Finished by a runner killed before it wrote its outcome: this one reports it.
        outcome = rollout.outcome
    record = {
        "pid": os.getpid(),
        "phase": outcome.phase.value,
        "split": None if outcome.split is None else outcome.split.to_json(),
        "resumed": rollout.resumed,
    }
    temporary = directory / f"outcome.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, directory / "outcome.json")
    return 0


class Kill9Lane:
    """A `benchmarks/kill9_child.py serve` process: it forks runners on request.

    The runners are its children, and this process kills them with SIGKILL directly;
    `wait` asks the server to reap one and say how it ended.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "kill9_child.py"), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.live: set[int] = set()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the kill -9 server died (exit {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, directory: Path, pauses: list[float], backend: str) -> int:
        pid = int(
            self._ask({"op": "run", "dir": str(directory), "pauses": pauses, "backend": backend})[
                "pid"
            ]
        )
        self.live.add(pid)
        return pid

    def wait(self, pid: int) -> dict[str, Any]:
        answer = self._ask({"op": "wait", "pid": pid})
        self.live.discard(pid)
        return answer

    def close(self) -> None:
        for pid in list(self.live):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.wait(pid)
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Kill9Lane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.define
class Kill9Trial:
    """What one kill -9 trial did and which invariants it broke."""

    kills: int = 0
    interrupts: int = 0  # Ctrl-C (SIGINT) sent, each followed by a kill after a grace period
    runs: int = 0
    killed_at_applies: list[int] = attrs.Factory(list)  # applies in effect at each kill
    violations: list[str] = attrs.Factory(list)
    seconds: float = 0.0


def run_kill9_trial(
    lane: Kill9Lane, directory: Path, rng: random.Random, backend: str = "asyncio"
) -> Kill9Trial:
    """Run a rollout, killing its runner at random moments until one finishes; check it."""
    started = time.perf_counter()
    trial = Kill9Trial()
    pauses = [rng.choice([0.1, 0.15, 0.2, 0.25, 0.3]) for _ in KILL9_WEIGHTS]
    for run in range(KILL9_RUNS + 1):
        trial.runs += 1
        pid = lane.start(directory, pauses, backend)
        marker = directory / f"started.{pid}"
        outcome = directory / "outcome.json"
        deadline = time.monotonic() + KILL9_TIMEOUT
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        # The kill comes at a random moment after the runner's first action; the last
        # runner is left to finish. Some kills come a moment after a Ctrl-C, as a CI
        # runner's do: the runner is rolling back when it dies, or has just finished.
        kill_at = time.monotonic() + rng.uniform(0.0, 0.9) if run < KILL9_RUNS else deadline
        interrupt = rng.random() < KILL9_INTERRUPTS
        while time.monotonic() < min(kill_at, deadline) and not outcome.exists():
            time.sleep(0.002)
        if not outcome.exists():
            applies = FileRouter(directory)._load()[0]
            if interrupt:
                trial.interrupts += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
                time.sleep(rng.uniform(0.0, 0.04))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ended = lane.wait(pid)
        if ended.get("signal") == signal.SIGKILL or ended.get("exit") == 130:
            trial.kills += 1
            trial.killed_at_applies.append(applies)
            if run == KILL9_RUNS:
                trial.violations.append(f"the last runner did not finish in {KILL9_TIMEOUT} s")
            continue
        if ended.get("exit") != 0:
            log = (directory / f"child.{pid}.log").read_text(errors="replace")[-2000:]
            trial.violations.append(f"runner {pid} failed ({ended}): {log}")
        break
    trial.violations += check_kill9_trial(directory, pauses, interrupted=trial.interrupts > 0)
    trial.seconds = time.perf_counter() - started
    return trial


def check_kill9_trial(
    directory: Path, pauses: list[float], *, interrupted: bool = False
) -> list[str]:
    """The invariants a finished kill -9 trial broke, read from its files.

    Without a Ctrl-C the rollout (a healthy canary) must succeed; after one it may also
    end aborted or rolled back, at stable.
    """
    problems: list[str] = []
    outcome_path = directory / "outcome.json"
    if not outcome_path.exists():
        return ["no runner finished the rollout"]
    outcome = json.loads(outcome_path.read_text())
    phase = Phase(outcome["phase"])
    real = anyio.run(FileRouter(directory).read)
    expected_end = {
        Phase.SUCCEEDED: FULL_CANARY,
        Phase.ABORTED: STABLE_ONLY,
        Phase.ROLLED_BACK: STABLE_ONLY,
    }
    stopped = phase in (Phase.ABORTED, Phase.ROLLED_BACK)
    if phase is not Phase.SUCCEEDED and not (interrupted and stopped):
        problems.append(f"ended {phase.value} ({'after' if interrupted else 'without'} a Ctrl-C)")
    reported = None if outcome["split"] is None else ck.TrafficSplit.from_json(outcome["split"])
    if reported != real or real != expected_end.get(phase):
        problems.append(f"ended {phase.value} with {real} in force; the outcome says {reported}")
    try:
        record = anyio.run(ck.stores.FileStore(directory / "state").load, KEY)
    except ck.CanaryError as exc:
        problems.append(f"the saved state cannot be read: {exc}")
    else:
        saved = ck.machine.RolloutState.from_json(record["state"]) if record else None
        if saved is None or saved.phase is not phase or saved.confirmed not in (None, real):
            problems.append(f"the saved state does not say {phase.value} at {real}: {saved}")
    # No step repeated, none skipped: the distinct splits applied, in order, are the
    # plan's (a split applied again right after itself, on resuming, is allowed), up to a
    # rollback to stable if it was aborted; and once at stable, traffic stays there.
    applied = applied_splits(directory) if (directory / "router.log").exists() else []
    splits = [split for _, split in applied]
    went_back = traffic_went_back([split.canary_percent for split in splits])
    if went_back:
        problems.append(went_back)
    distinct = [s for i, s in enumerate(splits) if i == 0 or s != splits[i - 1]]
    expected = [ck.TrafficSplit(canary_percent=w) for w in KILL9_WEIGHTS] + [FULL_CANARY]
    steps = distinct
    if stopped and distinct and distinct[-1] == STABLE_ONLY:
        steps = distinct[:-1]
    complete = steps == expected
    if not (complete if phase is Phase.SUCCEEDED else steps == expected[: len(steps)]):
        problems.append(
            f"applied {[s.canary_percent for s in distinct]}, "
            f"the plan says {[s.canary_percent for s in expected]}"
        )
    else:
        # No pause cut short: each step's first apply comes at least its predecessor's
        # pause after the predecessor's first apply (the pause starts once confirmed).
        first: dict[float, float] = {}
        for at, split in applied:
            first.setdefault(split.canary_percent, at)
        for (weight, pause), following in zip(
            zip(KILL9_WEIGHTS, pauses, strict=True), [*KILL9_WEIGHTS[1:], 100.0], strict=True
        ):
            if weight in first and following in first:
                held = first[following] - first[weight]
                if held < pause - 0.005:
                    problems.append(f"{weight:g}% was held {held:.3f} s, its pause is {pause} s")
    return problems
