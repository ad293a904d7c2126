"""Faults at every await: wrappers that make a router, metrics, decider, store or lease fail.

How this works. A `FaultPlan` says which call misbehaves and how: for each point (say
``"router.apply"``) a map from the call's number (from 1, counted per point) to a kind of
fault. The wrappers (`FaultyRouter`, `FaultyMetrics`, `FaultyDecider`, `FaultyStore`,
`FaultyLease`) count every call at their points and consult the plan before passing the
call on. A test asks "what if the second apply hangs and the third collection answers
garbage?" without writing a fake for each case::

    faults = FaultPlan({"router.apply": {2: "hang"}, "metrics.collect": {3: "wrong"}})
    router = FaultyRouter(FakeRouter(), faults)
    metrics = FaultyMetrics(ScriptedMetrics(), faults)

The kinds of fault:

- ``"error"``: raise `InjectedError` before the wrapped object is called (nothing happens).
- ``"lost"``: call the wrapped object, so the call takes effect, then raise
  `InjectedError`, as when the answer is lost on the way back.
- ``"slow"``: wait `slow` seconds first (longer than any sane call timeout), then call.
- ``"hang"``: never return (until cancelled).
- ``"wrong"``: answer wrongly, each wrapper in its own way: a router applies or reports a
  split other than the one asked for or in force; metrics return garbage instead of an
  `Observation`; a decider returns garbage instead of a `Judgement`; a store saves or
  loads a damaged record; a lease says another runner holds it or took it over.

Waits (`slow`, `hang` and the per-call `latency`) are on the event loop's clock, the one
the runner's call timeouts use, not on the rollout's `Clock`.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import anyio
import attrs

from .._errors import ConfigError, LeaseHeldError, LeaseLostError
from .._lease import Lease
from .._observe import Observation, Window
from .._protocols import Decider, MetricsSource, RouterCapabilities, StateStore, TrafficRouter
from .._safe import check_name
from .._split import TrafficSplit
from .._validate import finite
from .._verdict import Judgement

__all__ = [
    "FAULT_KINDS",
    "FAULT_POINTS",
    "FaultKind",
    "FaultPlan",
    "FaultyDecider",
    "FaultyLease",
    "FaultyMetrics",
    "FaultyRouter",
    "FaultyStore",
    "InjectedError",
    "InjectedFault",
]

FaultKind = Literal["error", "lost", "slow", "hang", "wrong"]
FAULT_KINDS: tuple[str, ...] = ("error", "lost", "slow", "hang", "wrong")

# The points the wrappers count calls at, one per method a runner awaits.
FAULT_POINTS: tuple[str, ...] = (
    "router.apply",
    "router.read",
    "metrics.collect",
    "decider.judge",
    "store.save",
    "store.load",
    "lease.acquire",
    "lease.renew",
    "lease.release",
)

T = TypeVar("T")


class InjectedError(Exception):
    """The error a faulty wrapper raises where its `FaultPlan` says "error" or "lost"."""


@attrs.frozen(kw_only=True)
class InjectedFault:
    """One fault a `FaultPlan` injected: at which point, on which call, of which kind."""

    point: str
    call: int
    kind: str


def _check_faults(faults: Any) -> dict[str, dict[int, str]]:
    if not isinstance(faults, Mapping):
        raise ConfigError("faults", faults, "must map points to {call number: kind}")
    checked: dict[str, dict[int, str]] = {}
    for point, calls in faults.items():
        check_name("faults", point)
        if not isinstance(calls, Mapping):
            raise ConfigError(f"faults[{point!r}]", calls, "must map call numbers to kinds")
        checked[point] = {}
        for number, kind in calls.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigError(f"faults[{point!r}]", number, "call numbers start at 1")
            if kind not in FAULT_KINDS:
                raise ConfigError(
                    f"faults[{point!r}][{number}]", kind, f"must be one of {', '.join(FAULT_KINDS)}"
                )
            checked[point][number] = kind
    return checked


class FaultPlan:
    """Which calls misbehave, and how: ``{point: {call number: kind}}``.

    >>> faults = FaultPlan({"router.apply": {2: "error"}})
    >>> faults.fault_at("router.apply", 2)
    'error'

    Points are the names in `FAULT_POINTS` (or any name given to `wrap`); calls are
    numbered from 1 per point, over the life of the plan, so one plan shared by a runner
    and the runner that resumes after it keeps counting. `slow` is how long a "slow" call
    waits before going on and `latency` how long every call waits first (seconds on the
    event loop's clock). `injected` lists the faults injected so far, `calls` how many
    calls each point has seen. Set `enabled` to False to let every call through.
    """

    def __init__(
        self,
        faults: Mapping[str, Mapping[int, FaultKind]] | None = None,
        *,
        slow: float = 3600.0,
        latency: float = 0.0,
    ) -> None:
        self.faults = _check_faults({} if faults is None else faults)
        self.slow = finite("slow", slow)
        if self.slow <= 0:
            raise ConfigError("slow", slow, "must be > 0")
        self.latency = finite("latency", latency)
        if self.latency < 0:
            raise ConfigError("latency", latency, "must be >= 0")
        self.enabled = True
        self.calls: dict[str, int] = {}
        self.injected: list[InjectedFault] = []

    def fault_at(self, point: str, call: int) -> str | None:
        """The kind of fault planned for call number `call` at `point`, or None."""
        return self.faults.get(point, {}).get(call)

    async def enter(self, point: str) -> str | None:
        """Count a call at `point` and misbehave before it as planned.

        Raises for "error", never returns for "hang", waits for "slow"; returns the kind
        ("lost" and "wrong" are for the wrapper to act on after the call) or None.
        """
        number = self.calls[point] = self.calls.get(point, 0) + 1
        kind = self.fault_at(point, number) if self.enabled else None
        if kind is not None:
            self.injected.append(InjectedFault(point=point, call=number, kind=kind))
        if self.latency:
            await anyio.sleep(self.latency)
        if kind == "error":
            raise InjectedError(f"{point} call {number}: injected error")
        if kind == "hang":
            await anyio.sleep_forever()
        if kind == "slow":
            await anyio.sleep(self.slow)
        return kind

    def wrap(
        self,
        point: str,
        function: Callable[..., Awaitable[T]],
        *,
        wrong: Callable[[T], T] | None = None,
    ) -> Callable[..., Awaitable[T]]:
        """`function` (async) with this plan's faults at `point`: for hooks and the like.

        A "wrong" fault passes the function's answer through `wrong` (unchanged if None).
        """
        check_name("point", point)

        async def faulty(*args: Any, **kwargs: Any) -> T:
            kind = await self.enter(point)
            result = await function(*args, **kwargs)
            if kind == "lost":
                raise InjectedError(f"{point}: injected error after the call took effect")
            if kind == "wrong" and wrong is not None:
                return wrong(result)
            return result

        return faulty

    def __repr__(self) -> str:
        planned = sum(len(calls) for calls in self.faults.values())
        return f"<FaultPlan {planned} planned, {len(self.injected)} injected>"


def _lost(point: str, kind: str | None) -> None:
    if kind == "lost":
        raise InjectedError(f"{point}: injected error after the call took effect")


def _other_split(split: TrafficSplit) -> TrafficSplit:
    """A split that is not `split` and that no weight-only plan asks for: mirroring moved."""
    mirror = 7.5 if split.mirror_percent != 7.5 else 2.5
    return attrs.evolve(split, mirror_percent=mirror)


class FaultyRouter:
    """A `TrafficRouter` passing calls on to `router`, with the faults planned for them.

    Its points are "router.apply" and "router.read". "wrong" on `apply` applies another
    split than the one asked for (its mirror percent moved), which only a read-back can
    catch; on `read` it reports another split than the one in force.
    """

    def __init__(self, router: TrafficRouter, faults: FaultPlan) -> None:
        self.router = router
        self.faults = faults

    @property
    def capabilities(self) -> RouterCapabilities:
        """The wrapped router's capabilities."""
        return self.router.capabilities

    async def apply(self, split: TrafficSplit) -> None:
        """Apply `split` through the wrapped router, unless the plan says otherwise."""
        kind = await self.faults.enter("router.apply")
        await self.router.apply(_other_split(split) if kind == "wrong" else split)
        _lost("router.apply", kind)

    async def read(self) -> TrafficSplit | None:
        """The wrapped router's split, unless the plan says otherwise."""
        kind = await self.faults.enter("router.read")
        split = await self.router.read()
        _lost("router.read", kind)
        if kind == "wrong" and split is not None:
            return _other_split(split)
        return split

    def __repr__(self) -> str:
        return f"FaultyRouter({self.router!r}, {self.faults!r})"


class _Garbage:
    """What a "wrong" metrics source or decider returns: not the type asked for."""

    def __init__(self, point: str, call: int) -> None:
        self.point = point
        self.call = call

    def __repr__(self) -> str:
        return f"<garbage from {self.point} call {self.call}>"


class FaultyMetrics:
    """A `MetricsSource` passing calls on to `metrics`, with the faults planned for them.

    Its point is "metrics.collect". "wrong" returns garbage in place of an `Observation`.
    """

    def __init__(self, metrics: MetricsSource, faults: FaultPlan) -> None:
        self.metrics = metrics
        self.faults = faults

    async def collect(self, window: Window) -> Observation:
        """The wrapped source's observation of `window`, unless the plan says otherwise."""
        kind = await self.faults.enter("metrics.collect")
        observation = await self.metrics.collect(window)
        _lost("metrics.collect", kind)
        if kind == "wrong":
            garbage: Any = _Garbage("metrics.collect", self.faults.calls["metrics.collect"])
            return garbage  # type: ignore[no-any-return]
        return observation

    def __repr__(self) -> str:
        return f"FaultyMetrics({self.metrics!r}, {self.faults!r})"


class FaultyDecider:
    """An async `Decider` over `decider`, with the faults planned for "decider.judge".

    `judge` always returns an awaitable, so the runner awaits it (with its decider
    timeout). "wrong" answers garbage in place of a `Judgement`.
    """

    def __init__(self, decider: Decider, faults: FaultPlan) -> None:
        self.decider = decider
        self.faults = faults

    def initial_state(self) -> Any:
        """The wrapped decider's initial state."""
        return self.decider.initial_state()

    def judge(self, state: Any, observation: Observation) -> Awaitable[Judgement]:
        """The wrapped decider's judgement, awaited, unless the plan says otherwise."""
        return self._judge(state, observation)

    async def _judge(self, state: Any, observation: Observation) -> Judgement:
        kind = await self.faults.enter("decider.judge")
        judged = self.decider.judge(state, observation)
        if not isinstance(judged, Judgement):
            judged = await judged
        _lost("decider.judge", kind)
        if kind == "wrong":
            garbage: Any = _Garbage("decider.judge", self.faults.calls["decider.judge"])
            return garbage  # type: ignore[no-any-return]
        return judged

    def __repr__(self) -> str:
        return f"FaultyDecider({self.decider!r}, {self.faults!r})"


def _damaged(record: dict[str, Any]) -> dict[str, Any]:
    """`record` damaged in a way a runner must notice: its state lost a field."""
    damaged = copy.deepcopy(record)
    state = damaged.get("state")
    if isinstance(state, dict) and state:
        state.pop(sorted(state)[0])
    else:
        damaged["state"] = "garbage"
    return damaged


class FaultyStore:
    """A `StateStore` passing calls on to `store`, with the faults planned for them.

    Its points are "store.save" and "store.load". "wrong" on `save` saves a damaged record
    (its state missing a field); on `load` it returns a damaged copy of what is saved.
    """

    def __init__(self, store: StateStore, faults: FaultPlan) -> None:
        self.store = store
        self.faults = faults

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Save through the wrapped store, unless the plan says otherwise."""
        kind = await self.faults.enter("store.save")
        await self.store.save(key, _damaged(data) if kind == "wrong" else data)
        _lost("store.save", kind)

    async def load(self, key: str) -> dict[str, Any] | None:
        """Load through the wrapped store, unless the plan says otherwise."""
        kind = await self.faults.enter("store.load")
        record = await self.store.load(key)
        _lost("store.load", kind)
        if kind == "wrong" and record is not None:
            return _damaged(record)
        return record

    def __repr__(self) -> str:
        return f"FaultyStore({self.store!r}, {self.faults!r})"


class FaultyLease:
    """A `Lease` passing calls on to `lease`, with the faults planned for them.

    Its points are "lease.acquire", "lease.renew" and "lease.release". "wrong" on `acquire`
    raises `LeaseHeldError` (another runner claims the rollout); on `renew` it raises
    `LeaseLostError` (another runner took it over).
    """

    def __init__(self, lease: Lease, faults: FaultPlan) -> None:
        self.lease = lease
        self.faults = faults

    @property
    def holder(self) -> str:
        """The wrapped lease's holder."""
        return self.lease.holder

    @property
    def ttl(self) -> float:
        """The wrapped lease's ttl."""
        return self.lease.ttl

    async def acquire(self) -> None:
        """Acquire through the wrapped lease, unless the plan says otherwise."""
        kind = await self.faults.enter("lease.acquire")
        if kind == "wrong":
            raise LeaseHeldError("injected: another runner holds the lease")
        await self.lease.acquire()
        _lost("lease.acquire", kind)

    async def renew(self) -> None:
        """Renew through the wrapped lease, unless the plan says otherwise."""
        kind = await self.faults.enter("lease.renew")
        if kind == "wrong":
            raise LeaseLostError("injected: another runner took the lease over")
        await self.lease.renew()
        _lost("lease.renew", kind)

    async def release(self) -> None:
        """Release through the wrapped lease, unless the plan says otherwise."""
        kind = await self.faults.enter("lease.release")
        await self.lease.release()
        _lost("lease.release", kind)

    def __repr__(self) -> str:
        return f"FaultyLease({self.lease!r}, {self.faults!r})"
