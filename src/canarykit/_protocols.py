"""The interfaces a rollout is assembled from.

Everything the runner talks to is a `typing.Protocol`, so a team's own load balancer,
metrics system or judge plugs in without inheriting from anything:

- `TrafficRouter`: applies a `TrafficSplit`, reads the current one back where it can, and
  declares what it supports in `capabilities`.
- `MetricsSource`: collects an `Observation` (both arms) for a `Window`.
- `Decider`: folds observations into a `Verdict`; pure and synchronous, or async.
- `Clock`: `now()` and `sleep_until()`; `SystemClock` (in `_clock`), a virtual one in
  `canarykit.testing`.
- `StateStore`: saves and loads a rollout's state as JSON-able data.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

import attrs

from ._observe import Observation, Window
from ._split import TrafficSplit
from ._verdict import Judgement

__all__ = [
    "Clock",
    "Decider",
    "MetricsSource",
    "RouterCapabilities",
    "StateStore",
    "TrafficRouter",
]


@attrs.frozen(kw_only=True)
class RouterCapabilities:
    """What a traffic router can do. A plan needing more is refused before traffic moves.

    - `weights`: it can send a percentage of traffic to the canary.
    - `header_routes`: it can send requests matching a header rule to the canary.
    - `mirroring`: it can copy a percentage of traffic to the canary.
    - `read_back`: `read()` reports the split actually in force, so the runner can verify.
    """

    weights: bool = True
    header_routes: bool = False
    mirroring: bool = False
    read_back: bool = False

    def missing(self, needed: RouterCapabilities) -> list[str]:
        """Names of the capabilities in `needed` that this router lacks."""
        return [
            name
            for name in ("weights", "header_routes", "mirroring", "read_back")
            if getattr(needed, name) and not getattr(self, name)
        ]


@runtime_checkable
class TrafficRouter(Protocol):
    """Moves traffic between the stable and the canary version.

    `apply` must be idempotent: the runner may apply the same split again after a timeout
    or a restart. It raises on failure (any exception; the runner wraps it in
    `RouterError`), and `ConfigError` for a split it can never apply, which the runner
    does not retry. `read` returns the split in force, or None when the router cannot
    tell.

    Two optional parts, found with ``getattr`` (the built-in routers have both):

    - ``check_split(split) -> None`` raises `ConfigError` for any split `apply` would
      refuse, without I/O. `Rollout` calls it for every split of its plan, so that a
      plan the router cannot carry out is refused before traffic moves.
    - ``traffic_target: str`` (a read-only property) names what the router controls,
      the same for any two routers that drive the same traffic: ``nginx:`` and the
      resolved include file, ``haproxy:`` with the runtime API and backend,
      ``HTTPRoute prod/shop``; None for a router inside the process (`WeightedRouter`).
      A rollout's default lease covers it, so that two rollouts (from two policies, or
      two state directories) cannot drive one target.
    """

    @property
    def capabilities(self) -> RouterCapabilities:
        """What this router supports."""
        ...

    async def apply(self, split: TrafficSplit) -> None:
        """Make `split` the one in force; return only once it is."""
        ...

    async def read(self) -> TrafficSplit | None:
        """The split in force, or None if this router cannot read it back."""
        ...


@runtime_checkable
class MetricsSource(Protocol):
    """Collects what both arms did during a window.

    A source may also have ``async preflight(*, analysis_interval)``, which the runner
    awaits before traffic moves with the plan's shortest window (`PrometheusSource`
    refuses windows shorter than four scrape intervals): its `ConfigError` ends the run
    with nothing moved; any other failure is logged and the rollout starts.
    """

    async def collect(self, window: Window) -> Observation:
        """An observation of both arms for `window`; raise `NoDataError` when there is none.

        The observation's start and end are the window's (within 5% of its length or
        1 s); one of another window is refused as a metrics error.
        """
        ...


@runtime_checkable
class Decider(Protocol):
    """Judges the canary, one window at a time, as a fold over observations.

    `initial_state()` gives the state before any window (JSON-able data: failure counts,
    running sums). `judge(state, observation)` returns a `Judgement` (the verdict and the
    next state), or an awaitable of one for deciders that ask a person or a remote service.
    A pure decider is a plain synchronous function of its inputs, testable without an
    event loop.
    """

    def initial_state(self) -> Any:
        """The state before the first window."""
        ...

    def judge(self, state: Any, observation: Observation) -> Judgement | Awaitable[Judgement]:
        """The verdict after one more window, and the state to pass next time."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Where a rollout's time comes from. Deadlines are absolute, in the clock's seconds."""

    def now(self) -> float:
        """The current time in seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline`; `deadline` may be `math.inf` (until cancelled)."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Keeps a rollout's saved state, by key, as JSON-able data.

    A store may also have ``async archive(key, data)``: keep a finished rollout's record
    as history before a new release's rollout replaces it under the same key
    (`FileStore` and `MemoryStore` have it). Without it the record is overwritten.
    """

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    async def load(self, key: str) -> dict[str, Any] | None:
        """The data stored under `key`, or None."""
        ...
