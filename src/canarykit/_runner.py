"""The async driver: the only place in canarykit's core that awaits.

How this works. `Rollout.run()` asks the pure state machine for the next action and does
it: apply a split through the router (bounded by a timeout, retried with backoff, checked
by read-back where the router has it), collect and judge a window, or sleep on the clock
until a deadline or an operator command. Each result goes back to the machine as an
event. Operator commands (`promote`, `pause`, `abort`, ...) are applied to the machine at
once, from whatever task calls them, and wake the driver.

Rollback is sacred: applying the stable-only split runs under a shielded cancel scope with
its own deadline. Cancelling `run()` (or an unexpected error) aborts the rollout and rolls
back before the cancellation propagates, unless `on_cancel="leave"` was chosen. If even
the rollback cannot be confirmed, the rollout pauses and reports the split the router last
confirmed, so it never ends in an unknown state.

Call timeouts are measured on the event loop's own clock, not the rollout's `Clock`, so
they bound a hung call in virtual time as well.

Saving and resuming. With a `store`, the state is saved, with the plan's fingerprint,
before every action that follows a change of state: what the runner is about to do is on
disk before it does it. A new `Rollout` given the same store and key continues from there
when `run()` starts (see `Rollout`). A lease keeps a second runner off the same key.

Fencing. With a `FencedLease` (the default of `EtcdStore`, `PostgresStore` and
`MemoryStore`), the runner proves before every router apply, with the lease's `check()`,
that its holding is still the current one: a runner frozen past its lease (SIGSTOP, a
partition) that wakes up after another took over learns it there, and stops without
applying. Any error from `check()` counts as a lost lease. Each saved record carries
the holding's token and the token checked before the last apply (``fencing``), so the
record says which holding moved traffic. A save the store refuses with `LeaseLostError`
(its write was fenced by a newer holding's token) is a lost lease too, never a failed
save: the runner stops without rolling back through a router its successor now drives.

Await points. Everything the runner waits for is a call on an object it was given, so a
fault-injection test can wrap that object. By name, in the order a run meets them:

=================  =====================================================================
lease.acquire      `Lease.acquire`, before anything else
lease.renew        `Lease.renew`, in a background task every ``ttl / 3`` (real time)
load               `StateStore.load`, once, under the lease
archive            the store's optional ``archive``, when a new release follows a finished one
start.read         `TrafficRouter.read` before the first step (read-back routers)
recover.read       `TrafficRouter.read` when continuing a saved rollout
read.backoff       `Clock.sleep_until` between attempts of those two reads
save               `StateStore.save`, before each action that follows a change of state
save.backoff       `Clock.sleep_until` between save attempts
lease.check        `FencedLease.check`, before each apply (fenced leases only)
apply              `TrafficRouter.apply`
apply.read_back    `TrafficRouter.read` verifying an apply (read-back routers)
apply.backoff      `Clock.sleep_until` between apply attempts
collect            `MetricsSource.collect`
judge              `Decider.judge`, when it returns an awaitable
hook               a hook of `Hooks` (a gate, a check, a lifecycle call), when one is due
wait               `Clock.sleep_until` until the next deadline or operator command
lease.release      `Lease.release`, at the end
=================  =====================================================================

`AWAIT_POINTS` lists these names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

import anyio
import attrs

if sys.version_info < (3, 11):  # pragma: no cover - exercised on Python 3.10 only
    # anyio's dependency there, so it may be absent where mypy runs.
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from ._clock import SystemClock
from ._errors import (
    CanaryError,
    ClockStalled,
    ConfigError,
    CorruptStateError,
    InvalidTransition,
    LeaseError,
    LeaseLostError,
    MetricsError,
    NoDataError,
    PlanMismatchError,
    ReleaseFinishedError,
    ReleaseInProgressError,
    RouterError,
    RouterNotAtStableError,
    StateError,
    StateSaveError,
    UnsupportedPlanError,
)
from ._events import (
    CommandReceived,
    LeaseRevoked,
    PhaseChanged,
    RolloutEvent,
    RolloutOutcome,
    RolloutResumed,
    RouterCallFailed,
    SplitConfirmed,
    TimelineEntry,
    describe_split,
)
from ._hooks import HookDriver, Hooks
from ._judging import Judged, WindowJudge
from ._lease import FencedLease, Lease
from ._machine import (
    AbortRequested,
    ApplyFailed,
    ApplySplit,
    CollectWindow,
    Event,
    Finish,
    FullPromotionRequested,
    HookAnswered,
    HookPoint,
    PauseRequested,
    Phase,
    PromoteRequested,
    Recovered,
    ResumeRequested,
    RetryRequested,
    RolloutMachine,
    RolloutState,
    RunHook,
    SplitApplied,
    Start,
    Tick,
    _is_release,
    next_action,
    plan_splits,
    when,
)
from ._observe import ArmStats, Observation, Window
from ._plan import Analyze, Pause, Plan, SetHeaderRoutes, SetMirror, SetWeight
from ._protocols import Clock, Decider, MetricsSource, StateStore, TrafficRouter
from ._retry import backoff_delay, describe_failure
from ._safe import check_name
from ._split import TrafficSplit
from ._state_json import plan_fingerprint, plan_to_json
from ._stores import FileStore
from ._text import shown
from ._validate import finite
from ._verdict import Judgement

__all__ = [
    "AWAIT_POINTS",
    "Listener",
    "Rollout",
    "run_rollout",
]

logger = logging.getLogger("canarykit")

AWAIT_POINTS = (
    "lease.acquire",
    "lease.renew",
    "load",
    "archive",
    "start.read",
    "recover.read",
    "read.backoff",
    "save",
    "save.backoff",
    "lease.check",
    "apply",
    "apply.read_back",
    "apply.backoff",
    "collect",
    "judge",
    "hook",
    "wait",
    "lease.release",
)

# What the runner saves under its key: the machine's state and the plan it belongs to.
RECORD_FORMAT = "canarykit.rollout"


def _percent(split: TrafficSplit | None) -> str:
    return "unknown" if split is None else f"{split.canary_percent:g}%"


def _release_name(release: str | None) -> str:
    return "the rollout (no release id)" if release is None else f"release {release}"


Listener = Callable[[RolloutEvent], object]


class _Stop:
    """Why `_try_apply` stopped early without a failure to report."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_SUPERSEDED = _Stop("superseded")  # the rollout wants another split now
_DEADLINE = _Stop("progress deadline")  # the step's progress deadline passed
_STOP_AT = _Stop("stop_at")  # the run reached the time it was asked to stop at
_NO_REQUESTS = ArmStats(requests=0)  # both arms of a window a source had no data for


def _check_covers(observation: Observation, window: Window) -> None:
    """Refuse an observation of another window (a stale cache, a wrong offset) as an error.

    A source may align its edges a little (to a scrape or a bucket): within 5% of the
    window's length or 1 s, whichever is more.
    """
    slack = max(1.0, 0.05 * window.duration)
    if abs(observation.start - window.start) > slack or abs(observation.end - window.end) > slack:
        raise MetricsError(
            f"collect() returned an observation of [{observation.start:g}, "
            f"{observation.end:g}) for the window [{window.start:g}, {window.end:g})"
        )


def _positive(field: str, value: Any) -> float:
    number = finite(field, value)
    if not number > 0:
        raise ConfigError(field, value, "must be > 0")
    return number


def _brief(step: Any) -> str:
    if not isinstance(step, dict):
        return repr(step)
    fields = ", ".join(f"{k}={v!r}" for k, v in step.items() if k != "kind")
    return f"{step.get('kind', '?')}({fields})"


def _plan_difference(key: str, saved: Any, now: dict[str, Any]) -> str:
    """Why the saved plan is not this one, for PlanMismatchError."""
    detail = "its fingerprint differs"
    if isinstance(saved, dict):
        saved_steps = saved.get("steps")
        steps = now["steps"]
        if isinstance(saved_steps, list):
            for index, (old, new) in enumerate(zip(saved_steps, steps, strict=False)):
                if old != new:
                    detail = f"steps[{index}] was {_brief(old)}, now {_brief(new)}"
                    break
            else:
                if len(saved_steps) != len(steps):
                    detail = f"it had {len(saved_steps)} steps, this one has {len(steps)}"
                else:
                    for name in sorted((set(saved) | set(now)) - {"steps"}):
                        if saved.get(name) != now.get(name):
                            old_value = saved.get(name, "the default")
                            new_value = now.get(name, "the default")
                            detail = f"{name} was {old_value!r}, now {new_value!r}"
                            break
    return (
        f"{key}: the saved rollout ran a different plan ({detail}); resume it with the plan "
        "it started with, or start a new rollout under a new key"
    )


def _as_json(state: RolloutState) -> Any:
    """`state` as a store gives it back: through JSON (tuples become lists)."""
    return json.loads(json.dumps(state.to_json()))


def _decode_record(record: Any, key: str, plan: Plan, fingerprint: str) -> RolloutState:
    """The state in a saved record, checked against the key and the plan."""
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
        raise CorruptStateError(f"{key}: the saved record holds no rollout state")
    saved_format = record.get("format")
    if saved_format is None:
        # Saved before records carried the plan: nothing to check the plan against.
        logger.warning("%s: saved state carries no plan fingerprint; not checking the plan", key)
    elif saved_format != RECORD_FORMAT:
        raise CorruptStateError(f"{key}: the saved record is not a rollout ({saved_format!r})")
    else:
        if record.get("key") != key:
            raise CorruptStateError(f"{key}: the saved record belongs to key {record.get('key')!r}")
        if record.get("plan_fingerprint") != fingerprint:
            raise PlanMismatchError(_plan_difference(key, record.get("plan"), plan_to_json(plan)))
    try:
        state = RolloutState.from_json(record["state"])
    except StateError as exc:
        raise type(exc)(f"{key}: {exc}") from None
    if state.step > len(plan.steps):
        raise CorruptStateError(
            f"{key}: saved step {state.step} is beyond the plan's {len(plan.steps)} steps"
        )
    return state


def _last_apply(record: dict[str, Any]) -> dict[str, Any] | None:
    """The holder and token of a saved record's last apply, carried on (None if unknown)."""
    fencing = record.get("fencing")
    if not isinstance(fencing, dict):
        return None
    holder, token = fencing.get("apply_holder"), fencing.get("apply_token")
    if not isinstance(holder, str) or isinstance(token, bool) or not isinstance(token, int):
        return None
    return {"apply_holder": holder, "apply_token": token}


def _traffic_target(router: TrafficRouter) -> str | None:
    """The router's optional ``traffic_target`` (see `TrafficRouter`), or None."""
    target = getattr(router, "traffic_target", None)
    if target is None:
        return None
    if not isinstance(target, str) or not target:
        raise ConfigError("router.traffic_target", target, "must be a non-empty string or None")
    return target


def _check_plan_splits(plan: Plan, router: TrafficRouter) -> None:
    """Refuse, before traffic moves, a plan with a split the router would refuse to apply.

    A router may have ``check_split(split)``, which raises `ConfigError` for what its
    `apply` would refuse (see `TrafficRouter`). The error names the step.
    """
    check = getattr(router, "check_split", None)
    if not callable(check):
        return
    checked: set[TrafficSplit] = set()
    for index, split in plan_splits(plan):
        if split in checked:
            continue
        checked.add(split)
        try:
            check(split)
        except ConfigError as exc:
            step = None if index is None else plan.steps[index]
            field = exc.field
            if isinstance(step, SetHeaderRoutes) and field.startswith("header_routes"):
                field = "routes" + field[len("header_routes") :]
            elif isinstance(step, (SetWeight, SetMirror)) and field.endswith("percent"):
                field = "percent"
            where = "promotion" if index is None else f"steps[{index}]"
            raise UnsupportedPlanError(
                f"{where}.{field}",
                exc.value,
                f"{type(router).__name__} would refuse it when the step is applied: {exc.problem}",
            ) from None


def _source_gauges(metrics: MetricsSource | None) -> tuple[frozenset[str], str] | None:
    """The gauge names `metrics` is known to report, and where they are set; None if unknown.

    Known for the sources whose gauges are fixed when they are built: `ScriptedMetrics`
    (its ``gauges``) and `PrometheusSource` (its ``queries.gauges``). Any other source
    may report any gauge.
    """
    # Looked up, not imported: an instance of either class means its module is loaded,
    # and a run with another source need not load them (the Prometheus one wants httpx).
    scripted = sys.modules.get("canarykit.testing._scripted")
    if scripted is not None and isinstance(metrics, scripted.ScriptedMetrics):
        return frozenset(
            metrics.gauges
        ), "ScriptedMetrics gauges, from [simulation] gauges in a policy"
    prometheus = sys.modules.get("canarykit.metrics._prometheus")
    if prometheus is not None and isinstance(metrics, prometheus.PrometheusSource):
        return frozenset(metrics.queries.gauges), "PrometheusSource queries.gauges"
    return None


def _check_decider_fits(plan: Plan, decider: Decider | None, metrics: MetricsSource | None) -> None:
    """Refuse, before traffic moves, a decider that could only wait at some window.

    The checks a policy file gets when it is loaded: every metric a decider reads by name
    is built in or a gauge the source reports (`check_metric_names`), and a watched
    stage at 100% is one the decider can judge (`check_full_canary_steps`). Otherwise
    every such window would have no data, and the rollout would pause until its pause
    limit without ever judging the canary.
    """
    # Imported here: the checks load every decider module, and `import canarykit` must
    # not (a run loads them once it has a decider to check).
    from ._decider_checks import check_full_canary_steps, check_metric_names

    gauges = _source_gauges(metrics)
    if decider is not None:
        check_metric_names(decider, gauges)
        # An analyze step with its own decider is, for the plan's decider, a pause: only
        # the background analysis (if any) is its to judge there.
        steps = [
            Pause(step.seconds) if isinstance(step, Analyze) and step.decider is not None else step
            for step in plan.steps
        ]
        check_full_canary_steps(attrs.evolve(plan, steps=steps), decider)
    for index, step in enumerate(plan.steps):
        if isinstance(step, Analyze) and step.decider is not None:
            check_metric_names(step.decider, gauges, f"plan.steps[{index}].decider")


class Rollout:
    """One canary rollout: a plan driven through a router, watched by metrics and a decider.

    Build it, start `run()` in a task, and control it from other tasks with `promote()`,
    `promote_full()`, `pause()`, `resume()`, `abort()` and `retry()`::

        rollout = Rollout(plan, router=router, metrics=metrics, decider=decider)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_chat_for_commands, rollout)
            outcome = await rollout.run()

    A command the rollout's phase does not accept raises `InvalidTransition`, as does one
    that comes while `run()` is taking the rollout up (its lease, its saved state, which
    would undo the command) or handing it back (releasing the lease, when nobody would act
    on it): try it again a moment later.

    Parameters beyond the plan and its parts:

    - `clock`: where time comes from (`SystemClock()` by default; a `VirtualClock` in tests).
    - `listeners`: callables given every event; their errors are logged, not raised.
    - `call_timeout`: seconds allowed for each router, metrics, store or lease call (30).
    - `decider_timeout`: seconds allowed for an async decider's verdict (300).
    - `apply_attempts`, `retry_delay`: tries per split (and per save) and the first
      backoff (3, 1 s; the delay doubles each time).
    - `rollback_timeout`: seconds the shielded rollback may take in all (120).
    - `on_cancel`: "rollback" (default) sends traffic back to stable when `run()` is
      cancelled or interrupted (KeyboardInterrupt); "leave" leaves it where it is.
    - `store`, `key`: where to save the state, and under which name (1-128 letters,
      digits, ``_``, ``.``, ``-``). `store` is a `StateStore`, or a directory path for a
      `FileStore`.
    - `lease`: who may drive this key; by default the store's own, from any store with a
      ``lease(key, target=...)`` method (`FileStore`, `MemoryStore`, `EtcdStore`,
      `PostgresStore`), none without a store. The default also covers the router's
      ``traffic_target`` when it has one (see `TrafficRouter`), so that another rollout,
      under another key or in another state directory, cannot drive the same traffic.
    - `state`: start from this state instead of what the store holds (advanced).
    - `hooks`: gates, checks and lifecycle calls at Flagger's hook points (`Hooks`):
      confirm-rollout, create-canary and pre-rollout before traffic moves, a gate before
      each weight increase and before promotion, a rollback check, and the calls after
      the end. A rollout waiting at a gate shows it in `state.gate`; it is saved, and a
      resumed rollout waits on.
    - `release`: the release this rollout is for (1-128 printable characters), saved in
      its state and reported in its outcome; see "Release after release" below.
    - `adopt`: at a fresh start, take the split the router reports as the rollout's own
      (see "Starting" below) instead of refusing a router that is not at stable.
    - `on_metrics_outage`, `metrics_outage_limit`: what happens when analysis windows
      fail `plan.consecutive_error_limit` times in a row (the metrics source is down, say).
      "rollback" (the default) rolls back, as Argo Rollouts does when an analysis run
      reaches its ``consecutiveErrorLimit`` (4 there and here). "pause" holds traffic
      where it is instead: the rollout pauses, keeps collecting windows, resumes on its
      own with the first window judged, and rolls back when the outage has lasted
      `metrics_outage_limit` seconds (1800) without one (the plan's `pause_limit` does
      not apply to such a pause). A failed verdict still rolls back at once.

    Starting. With nothing saved, the rollout first reads the router (read-back routers).
    A router found not at stable (canary traffic, header routes or mirroring) is refused
    with `RouterNotAtStableError` before anything moves or is saved: the rollout never
    jumps from, say, 100% canary to its first 10%. With `adopt=True` it starts from that
    split instead: taken as confirmed, the steps before the first `SetWeight` at or above
    its weight skipped (a `PhaseChanged` reason says which). A router without read-back
    cannot be asked: the rollout starts with its split unknown until the first apply, so
    that the outcome never claims a stable it never saw.

    Release after release. A rollout's record carries its `release`. When the saved
    rollout has finished (promoted, rolled back or aborted): with a different `release`,
    its record is archived (the store's optional ``archive(key, record)``, as
    `FileStore` and `MemoryStore` have; without one it is overwritten) and a new rollout
    starts; with the same release, or none given, `run()` raises `ReleaseFinishedError`
    without touching the router or the store (`retry()` then `run()` runs it again).
    A saved rollout that is still live and names another release is refused with
    `ReleaseInProgressError`: finish it (promote or abort it) or run it with its release.

    No unwatched time. On resuming a live rollout with background analysis, the time
    since the last window ended ran unwatched: the first window collected covers all of
    it (up to `canarykit._machine.MAX_GAP_WINDOW`, one hour; a longer gap is judged in
    consecutive windows of that length), and no step ends, nor is traffic moved to a next
    step, before it has been judged. Its verdict counts as any window's: a failure rolls
    back. Without background analysis nothing watches between steps to begin with.

    Resuming. A rollout with a store continues what is saved under its key: create a
    `Rollout` with the same plan, store and key in the new process and `run()` it::

        rollout = Rollout(plan, router=router, metrics=metrics, decider=decider,
                          store=FileStore("/var/lib/deploy/canary"), key="web-v2.4.1")
        outcome = await rollout.run()   # starts, or continues after a crash

    `run()` first takes the lease (`LeaseHeldError` at once if another runner has it),
    then loads the saved state. Nothing saved: the rollout starts. A rollout that ended:
    `run()` returns its outcome without touching traffic (`retry()` runs it again).
    Otherwise it reads the router's split back and goes on from the step it was in: a split
    applied but not confirmed before the crash counts once confirmed by the read-back, a
    different one (or any, for a router without read-back) is applied again (idempotently),
    and timers run on from their saved deadlines (a 5-minute pause interrupted at minute 4
    holds for one more minute). A router found at stable where the saved state had canary
    traffic was rolled back behind the state's back (by a runner killed before it could
    record it, or by a person): the rollout rolls back rather than expose users again; so it
    does when a read-back router cannot be read at all (`RouterError`). A record saved for
    another plan raises `PlanMismatchError`; a damaged one `CorruptStateError`; one from a
    newer canarykit `StateVersionError`; in each case before any traffic moves.
    `resumed` says whether a saved rollout was continued; a `RolloutResumed` event and
    timeline entry report it.

    If the state cannot be saved (after `apply_attempts` tries), the rollout rolls back
    and `run()` raises `StateSaveError`: it never moves traffic on a step it could not
    record. If the lease is lost mid-rollout, the runner stops at once without touching
    traffic or the store again, emits `LeaseRevoked`, and `run()` raises `LeaseLostError`.
    With a `FencedLease` the lease is also proven (`check()`) before every apply, and
    a save the store refuses with `LeaseLostError` is a lost lease as well (see
    "Fencing" in the module documentation).

    A plan that needs what the router cannot do is refused here, before traffic moves:
    a capability it lacks, or a split its ``check_split`` refuses (`UnsupportedPlanError`
    naming the step). So is a decider that could only wait, as when a policy file is
    loaded (`ConfigError` naming the key): a metric that is neither built in nor a gauge
    the source reports (when the source says which: `ScriptedMetrics`,
    `PrometheusSource`), or a watched stage at 100% it cannot judge. A metrics source
    with ``preflight(*, analysis_interval)``, as `PrometheusSource` has, is given the
    plan's shortest window at a fresh start, before traffic moves; its `ConfigError` (the
    windows are too short for its scrape interval) ends `run()` with nothing moved or
    saved, and a preflight that fails otherwise, or takes longer than `call_timeout`, is
    logged and the rollout starts. A `ConfigError` from a router, metrics or hook call at run time
    can never succeed: it is not retried; the rollout rolls back and `run()` raises it.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        router: TrafficRouter,
        metrics: MetricsSource | None = None,
        decider: Decider | None = None,
        clock: Clock | None = None,
        listeners: Iterable[Listener] = (),
        call_timeout: float = 30.0,
        decider_timeout: float = 300.0,
        apply_attempts: int = 3,
        retry_delay: float = 1.0,
        rollback_timeout: float = 120.0,
        on_cancel: Literal["rollback", "leave"] = "rollback",
        store: StateStore | str | os.PathLike[str] | None = None,
        key: str = "rollout",
        lease: Lease | None = None,
        state: RolloutState | None = None,
        hooks: Hooks | None = None,
        release: str | None = None,
        adopt: bool = False,
        on_metrics_outage: Literal["rollback", "pause"] = "rollback",
        metrics_outage_limit: float = 1800.0,
    ) -> None:
        if not isinstance(plan, Plan):
            raise ConfigError("plan", plan, "must be a canarykit.Plan")
        if not isinstance(router, TrafficRouter):
            raise ConfigError("router", router, "must implement the TrafficRouter protocol")
        missing = router.capabilities.missing(plan.requirements())
        if missing:
            raise UnsupportedPlanError(
                "router", router, f"cannot do what the plan needs: {', '.join(missing)}"
            )
        _check_plan_splits(plan, router)
        analysed = plan.analysis_interval is not None or any(
            isinstance(step, Analyze) for step in plan.steps
        )
        if analysed and metrics is None:
            raise ConfigError("metrics", None, "a plan with analysis needs a metrics source")
        if metrics is not None and not isinstance(metrics, MetricsSource):
            raise ConfigError("metrics", metrics, "must implement the MetricsSource protocol")
        needs_decider = plan.analysis_interval is not None or any(
            isinstance(step, Analyze) and step.decider is None for step in plan.steps
        )
        if needs_decider and decider is None:
            raise ConfigError("decider", None, "a plan with analysis needs a decider")
        if decider is not None and not isinstance(decider, Decider):
            raise ConfigError("decider", decider, "must implement the Decider protocol")
        _check_decider_fits(plan, decider, metrics)
        if on_cancel not in ("rollback", "leave"):
            raise ConfigError("on_cancel", on_cancel, "must be 'rollback' or 'leave'")
        if isinstance(apply_attempts, bool) or not isinstance(apply_attempts, int):
            raise ConfigError("apply_attempts", apply_attempts, "must be an integer >= 1")
        if apply_attempts < 1:
            raise ConfigError("apply_attempts", apply_attempts, "must be an integer >= 1")
        check_name("key", key)
        if isinstance(store, (str, os.PathLike)):
            store = FileStore(store)
        if store is not None and not isinstance(store, StateStore):
            raise ConfigError("store", store, "must implement the StateStore protocol")
        store_lease = getattr(store, "lease", None)
        if lease is None and store is not None and callable(store_lease):
            # Keyed by what the router controls too: two policies, or two state
            # directories, must not drive one nginx include file or HTTPRoute. A store's
            # own lease is the one its writes are fenced by (EtcdStore, PostgresStore).
            lease = store_lease(key, target=_traffic_target(router))
        if lease is not None:
            if not isinstance(lease, Lease):
                raise ConfigError("lease", lease, "must implement the Lease protocol")
            _positive("lease.ttl", lease.ttl)
        if state is not None and not isinstance(state, RolloutState):
            raise ConfigError("state", state, "must be a RolloutState")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise ConfigError("hooks", hooks, "must be a canarykit.hooks.Hooks")
        if release is not None and not _is_release(release):
            why = "must be 1-128 printable characters, without control characters"
            raise ConfigError("release", release, why)
        if not isinstance(adopt, bool):
            raise ConfigError("adopt", adopt, "must be true or false")
        if on_metrics_outage not in ("rollback", "pause"):
            why = "must be 'rollback' or 'pause'"
            raise ConfigError("on_metrics_outage", on_metrics_outage, why)
        self.release = release
        self._adopt = adopt
        self._outage_limit: float | None = None
        outage_limit = _positive("metrics_outage_limit", metrics_outage_limit)
        if on_metrics_outage == "pause":
            self._outage_limit = outage_limit
        explicit_state = state is not None
        if state is None and release is not None:
            state = RolloutState(release=release)
        self.plan = plan
        self.router = router
        self.metrics = metrics
        self.decider = decider
        self.clock: Clock = SystemClock() if clock is None else clock
        self.key = key
        self.store: StateStore | None = store
        self.lease: Lease | None = lease
        self._listeners = list(listeners)
        self._call_timeout = _positive("call_timeout", call_timeout)
        self._decider_timeout = _positive("decider_timeout", decider_timeout)
        self._apply_attempts = apply_attempts
        self._retry_delay = _positive("retry_delay", retry_delay)
        self._rollback_timeout = _positive("rollback_timeout", rollback_timeout)
        self._on_cancel = on_cancel
        self._machine = RolloutMachine(plan, state)
        self._judging = WindowJudge(
            plan, decider, outage_limit=self._outage_limit, decider_timeout=self._decider_timeout
        )
        self._fingerprint = plan_fingerprint(plan) if store is not None else ""
        self._plan_json = plan_to_json(plan) if store is not None else {}
        self._timeline: list[TimelineEntry] = []
        self._wake_scope: anyio.CancelScope | None = None
        self._interrupted = False  # set when a command cancels the wake scope
        self._running = False
        # run() is taking the rollout up (its lease, its saved state) or handing it back:
        # a command then would be undone by the loaded state, or acted on by nobody.
        self._busy = False
        # Saving and resuming.
        self._skip_load = explicit_state  # an explicit state wins over the store's, once
        self._resumed = False
        self._recover_pending = False
        self._saved_state: RolloutState | None = None
        # The lease: lost (and why), and until when (event-loop time) the last renewal lasts.
        self._lease_lost: str | None = None
        self._lease_valid_until = -math.inf
        # Fencing: who last applied a split under which token (from the record, then
        # from this runner's own `check()` before each apply), saved in every record.
        self._applied_by: dict[str, Any] | None = None
        self._drive_scope: anyio.CancelScope | None = None
        self._stop_at = math.inf
        self.hooks = Hooks() if hooks is None else hooks
        self._hook_driver = HookDriver(self.hooks, key, self.clock)

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> RolloutState:
        """The machine's current state."""
        return self._machine.state

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._machine.state.phase

    @property
    def timeline(self) -> tuple[TimelineEntry, ...]:
        """What has happened so far."""
        return tuple(self._timeline)

    @property
    def outcome(self) -> RolloutOutcome:
        """Where the rollout stands now, as `run()` would return it.

        For a caller that cancelled `run()` (after it rolled back, say) or reads a rollout
        that another task drives.
        """
        return self._outcome()

    @property
    def resumed(self) -> bool:
        """True when `run()` continued a rollout saved in the store (by another process)."""
        return self._resumed

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every event from now on."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ commands

    def promote(self) -> None:
        """Finish the current step now and go on (also ends a pause)."""
        self._command(PromoteRequested(self.clock.now()), "promote")

    def promote_full(self) -> None:
        """Skip the remaining steps and promote the canary."""
        self._command(FullPromotionRequested(self.clock.now()), "promote_full")

    def pause(self, reason: str = "paused by operator") -> None:
        """Hold the rollout at its current split; analysis keeps watching."""
        self._command(PauseRequested(self.clock.now(), reason), "pause", reason)

    def resume(self) -> None:
        """Carry on from a pause."""
        self._command(ResumeRequested(self.clock.now()), "resume")

    def abort(self, reason: str = "aborted by operator") -> None:
        """Roll back to stable and end as aborted."""
        self._command(AbortRequested(self.clock.now(), reason), "abort", reason)

    def retry(self) -> None:
        """Start an aborted or rolled-back rollout again from its first step; then `run()`."""
        self._command(RetryRequested(self.clock.now()), "retry")

    def _command(self, event: Event, name: str, reason: str = "") -> None:
        if self._busy:
            why = "run() is taking the rollout up or handing it back"
            self._emit(CommandReceived(time=event.now, command=name, reason=why, accepted=False))
            raise InvalidTransition(f"{name}: {why}; try again in a moment")
        try:
            self._handle(event, CommandReceived(time=event.now, command=name, reason=reason))
        except InvalidTransition as exc:  # nothing changed; record it and tell the caller
            refused = CommandReceived(time=event.now, command=name, reason=str(exc), accepted=False)
            self._emit(refused)
            raise
        if self._wake_scope is not None:
            self._interrupted = True
            self._wake_scope.cancel()

    # ------------------------------------------------------------------ running

    async def run(self, *, stop_at: float | None = None) -> RolloutOutcome:
        """Drive the rollout until it ends and return the outcome.

        With `stop_at` (a time on the rollout's clock) the run returns at that time even if
        the rollout has not ended, leaving traffic where it is; the outcome reports the
        phase and the split. A run also returns, paused, when the clock reports that
        nothing could ever wake it (`ClockStalled`, in virtual time).

        With a store, the first `run()` continues what is saved under the key (see the
        class documentation). Raises `LeaseHeldError` when another runner holds the
        rollout, `LeaseLostError` when this one lost its lease mid-run, the
        `StateError` kinds for saved state that cannot be used or saved, and
        `RouterError` when a read-back router's split cannot be read (after
        `apply_attempts` tries) before the first step, or on resuming a saved rollout:
        the rollout is then aborted (and rolled back, if it had moved traffic). Raises,
        before anything moves or is saved, `RouterNotAtStableError` for a fresh start on
        a router not at stable (without `adopt`), `ReleaseFinishedError` when the saved
        rollout has finished for this release, and `ReleaseInProgressError` when a live
        one is another release's.
        """
        if self._running:
            raise InvalidTransition("this rollout is already running")
        self._running = True
        self._busy = self.store is not None  # until the saved state is taken up
        try:
            await self._acquire_lease()
            error: BaseException | None = None
            try:
                # Errors are carried out of the task group by hand: raised inside it, they
                # would reach the caller wrapped in an exception group.
                async with anyio.create_task_group() as tg:
                    # Shielded, so that the lease is still renewed while a cancelled run()
                    # rolls back (which may take longer than the lease lasts); stopped below.
                    renewing = anyio.CancelScope(shield=True)
                    if self.lease is not None:
                        tg.start_soon(self._keep_lease, self.lease, renewing)
                    try:
                        with anyio.CancelScope() as self._drive_scope:
                            await self._restore()
                            self._busy = False
                            await self._guarded_drive(math.inf if stop_at is None else stop_at)
                    except anyio.get_cancelled_exc_class():
                        raise
                    except BaseException as exc:
                        error = exc
                    finally:
                        self._drive_scope = None
                        self._busy = self.lease is not None  # while the lease is released
                        renewing.cancel()
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # A Ctrl-C that landed in the lease renewal, or (on trio) at the task
                # group's exit: the caller gets the KeyboardInterrupt it catches. By then
                # the drive was cancelled, so it has rolled back (or ended already).
                if group.split(KeyboardInterrupt)[0] is None:
                    raise
                raise KeyboardInterrupt from group
            finally:
                await self._release_lease()
            if error is not None:
                raise error
            if self._lease_lost is not None:
                raise LeaseLostError(self._lost_message())
        finally:
            self._running = False
            self._busy = False
        return self._outcome()

    async def _guarded_drive(self, stop_at: float) -> None:
        """`_drive`, rolling back when it is cancelled, interrupted or fails."""
        try:
            await self._drive(stop_at)
        except anyio.get_cancelled_exc_class():
            await self._stop("cancelled while running")
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                await self._stop("interrupted (KeyboardInterrupt)")
            elif not isinstance(exc, (LeaseError, RouterNotAtStableError)) and self._started:
                if isinstance(exc, CanaryError):
                    reason = f"stopped: {exc}"
                else:
                    reason = f"stopped by an unexpected error: {exc!r}"
                # When the store is what failed, the rollback must not wait for it first.
                await self._emergency_rollback(reason, record=not isinstance(exc, StateSaveError))
            raise

    @property
    def _started(self) -> bool:
        """False until the machine took `Start`: nothing was applied or saved before it.

        A failure before then (the router's first read, say: a file canarykit did not
        write) leaves no record, so that once it is fixed (``canarykit init``) the same
        release simply runs; an aborted record would make it "finished" for good.
        """
        return self.phase is not Phase.PENDING or self._machine.state.started_at is not None

    async def _stop(self, reason: str) -> None:
        """Cancelled or interrupted: roll back unless told to leave traffic where it is."""
        if self._on_cancel == "rollback":
            await self._emergency_rollback(reason)
            return
        with anyio.CancelScope(shield=True):
            await self._save(strict=False)  # so that a resume knows where traffic was left

    async def _drive(self, stop_at: float) -> None:
        self._stop_at = stop_at
        if self.phase is Phase.PENDING:
            current = await self._read_current()
            if self.phase is Phase.PENDING:  # an abort() during the read ended it already
                if current is not None and not current.is_stable_only and not self._adopt:
                    raise RouterNotAtStableError(self._not_at_stable(current), current)
                await self._preflight()  # await point: start.preflight
            if self.phase is Phase.PENDING:  # nor during the metrics source's check
                start = Start(self.clock.now(), current, self.hooks.points, adopt=self._adopt)
                self._handle(start)
        elif self._recover_pending and not self.phase.is_terminal:
            await self._recover()
            self._recover_pending = False  # only once done: an interrupted one is redone
        ticked_at = -math.inf
        while True:
            if self.store is not None:
                # An operator's command may change the state while it is being saved:
                # save again, so that the next action follows from what is on disk.
                while self._machine.state is not self._saved_state:
                    await self._save(strict=True)
            now = self.clock.now()
            action = self._machine.next_action(now)
            if isinstance(action, Finish):
                return
            if isinstance(action, ApplySplit):
                if await self._apply(action.split) is _STOP_AT:
                    return
            elif isinstance(action, CollectWindow):
                await self._collect(action)
            elif isinstance(action, RunHook):
                if await self._run_hook(action.point) is _STOP_AT:
                    return
            elif action.until <= now:
                # A deadline has passed. Windows due at the same moment were collected
                # first (next_action puts them ahead), so the step ends on fresh data.
                if ticked_at == now:
                    raise AssertionError(f"rollout made no progress at {now}: {action}")
                ticked_at = now
                self._handle(Tick(now))
            elif now >= stop_at:
                return
            else:
                try:
                    await self._wait(min(action.until, stop_at))  # await point: wait
                except ClockStalled:
                    return

    async def _preflight(self) -> None:
        """Let the metrics source check the plan's shortest window, before traffic moves.

        A source may have ``preflight(*, analysis_interval)`` (`PrometheusSource` checks
        the windows against its targets' scrape interval). Its `ConfigError` can never
        pass on a retry: it ends the run before the start, as a router that cannot be
        used does. A check that cannot finish (a timeout after `call_timeout`, another
        error) says nothing about the plan: it is logged, and the rollout starts.
        """
        check = getattr(self.metrics, "preflight", None)
        windows = [step.interval for step in self.plan.steps if isinstance(step, Analyze)]
        if self.plan.analysis_interval is not None:
            windows.append(self.plan.analysis_interval)
        if not callable(check) or not windows:
            return
        shortest = min(windows)
        with anyio.move_on_after(self._call_timeout) as scope:
            try:
                await check(analysis_interval=shortest)
            except ConfigError:
                raise
            except Exception as exc:
                logger.warning(
                    "%s: the metrics source's preflight check of %g s windows failed, so "
                    "it was not made: %s",
                    self.key,
                    shortest,
                    describe_failure(exc, self._call_timeout),
                )
        if scope.cancelled_caught:
            logger.warning(
                "%s: the metrics source's preflight check of %g s windows timed out after "
                "%g s, so it was not made",
                self.key,
                shortest,
                self._call_timeout,
            )

    async def _run_hook(self, point: HookPoint) -> _Stop | None:
        """Call the hooks at `point` and report their answer to the machine and listeners.

        `_STOP_AT` when `run(stop_at=...)` came while traffic was moving back to stable
        after promote-stable: nothing is reported, so the next run asks it again.
        """
        # An operator command cuts a gate's or the rollback check's call short (the next
        # action says what now); a task (create, retire, ...) always runs to its end.
        interruptible = point.is_gate or point is HookPoint.ROLLBACK
        self._interrupted = False
        with anyio.CancelScope() as scope:
            if interruptible:
                self._wake_scope = scope
            try:
                answered, events = await self._hook_driver.ask(
                    point, self.plan, self.state
                )  # await point: hook
            finally:
                self._wake_scope = None
        if scope.cancelled_caught:
            return None
        for event in events:  # before the phase change the answer may cause: its cause
            self._emit(event)
        if point is HookPoint.PROMOTE_STABLE and answered.yes:
            failed = await self._traffic_back()
            if failed is _STOP_AT:
                return _STOP_AT
            if isinstance(failed, str):
                answered = HookAnswered(self.clock.now(), point, False, failed)
        self._handle(answered)
        return None

    async def _traffic_back(self) -> str | _Stop | None:
        """After promote-stable: move traffic back to stable, step by step, each read back.

        Returns why it could not (the machine then holds traffic at the canary), or None.
        Each confirmed step is reported (`SplitApplied`), so a restart goes on from it.
        """
        hold = self.hooks.traffic_back_hold
        steps = self.hooks.traffic_back
        for index, percent in enumerate(steps):
            split = TrafficSplit(canary_percent=percent)
            reason = "not attempted"
            for attempt in range(1, self._apply_attempts + 1):
                await self._prove_lease()  # await point: lease.check
                try:
                    await self._apply_and_read_back(split)
                except Exception as exc:
                    reason = describe_failure(exc, self._call_timeout)
                    now = self.clock.now()
                    self._emit(
                        RouterCallFailed(time=now, split=split, attempt=attempt, reason=reason)
                    )
                    if isinstance(exc, ConfigError) or attempt == self._apply_attempts:
                        break
                    retry_at = now + backoff_delay(self._retry_delay, attempt)
                    await self._wait(retry_at)  # await point: apply.backoff
                    continue
                self._handle(SplitApplied(self.clock.now(), split))
                break
            if self.state.confirmed != split:
                return f"moving traffic back to stable failed at {percent:g}%: {reason}"
            if hold > 0 and index < len(steps) - 1:
                until = self.clock.now() + hold
                if until > self._stop_at:
                    await self._wait(self._stop_at)  # await point: wait
                    return _STOP_AT  # traffic as it is; the next run goes on from the router
                await self._wait(until)  # await point: wait
        return None

    async def _read_current(self) -> TrafficSplit | None:
        """The router's split before the start; None when it cannot say (never assumed)."""
        if not self.router.capabilities.read_back:
            return None
        return await self._read_router("before starting")  # await point: start.read

    def _not_at_stable(self, found: TrafficSplit) -> str:
        first = next((s for s in self.plan.steps if isinstance(s, SetWeight)), None)
        jump = "" if first is None else f" to the plan's first {first.percent:g}%"
        return (
            f"{self.key}: the router is not at stable: it has {describe_split(found)}. "
            f"Nothing moved: canarykit will not jump from there{jump}. Either start from "
            "this split (--adopt, or Rollout(adopt=True): the steps below it are skipped), "
            "or make the router's starting state, all traffic on stable, with "
            "canarykit init POLICY"
        )

    async def _read_router(self, when: str) -> TrafficSplit | None:
        """The router's split, read with retries like an apply; `RouterError` if it cannot.

        A rollout is not started, or continued, on a guess: one failed read must not end
        it, and a router that cannot be read at all must not get the target blindly (it
        may have been rolled back by a runner that could not record it).
        """
        reason = "not attempted"
        for attempt in range(1, self._apply_attempts + 1):
            try:
                with anyio.fail_after(self._call_timeout):
                    return await self.router.read()
            except ConfigError:
                raise  # it can never succeed: no retry
            except Exception as exc:
                reason = describe_failure(exc, self._call_timeout)
                if attempt < self._apply_attempts:
                    delay = backoff_delay(self._retry_delay, attempt)
                    await self._wait(self.clock.now() + delay)  # await point: read.backoff
                    if self.phase.is_terminal:
                        return None  # aborted meanwhile (before starting): nothing to read for
        raise RouterError(
            f"could not read the router's split {when} ({self._apply_attempts} attempts, "
            f"the last: {reason})"
        )

    async def _recover(self) -> None:
        """Continue a saved rollout: tell the machine what the router reports now."""
        saved = self.state
        current: TrafficSplit | None = None
        unread = self.router.capabilities.read_back
        try:
            if unread:
                current = await self._read_router("on resuming")  # await point: recover.read
                unread = False
        finally:
            if unread and not self.phase.is_terminal:
                # Unread, the saved `confirmed` may be stale: the runner before may have
                # stopped in the middle of applying its target. Whatever comes next (the
                # rollback, as a rule) must not trust it, nor may the state that is saved.
                self._handle(Recovered(self.clock.now(), None, self.hooks.points))
        now = self.clock.now()
        self._emit(
            RolloutResumed(
                time=now,
                phase=saved.phase,
                step=saved.step,
                confirmed=saved.confirmed,
                current=current,
            )
        )
        self._handle(Recovered(now, current, self.hooks.points))

    async def _wait(self, until: float) -> None:
        """Sleep on the clock until `until`, or until an operator command comes."""
        with anyio.CancelScope() as scope:
            self._wake_scope = scope
            try:
                await self.clock.sleep_until(until)
            finally:
                self._wake_scope = None

    async def _apply(self, split: TrafficSplit) -> _Stop | None:
        """Apply `split`; a `_Stop` if the attempts stopped early (no failure to report)."""
        rolling_back = self.phase is Phase.ROLLING_BACK
        result: str | _Stop | None = "not attempted"
        with anyio.CancelScope(shield=rolling_back) as scope:
            if rolling_back:
                scope.deadline = anyio.current_time() + self._rollback_timeout
            result = await self._try_apply(split)
            if result is None or isinstance(result, _Stop):
                return result
        reason = result if isinstance(result, str) else "unknown"
        if scope.cancelled_caught:
            reason = f"rollback not confirmed within {self._rollback_timeout:g} s"
        self._handle(ApplyFailed(self.clock.now(), split, reason))
        return None

    async def _apply_and_read_back(self, split: TrafficSplit) -> None:
        """One try: apply `split`, then read it back (`RouterError` if the router differs)."""
        with anyio.fail_after(self._call_timeout):
            await self.router.apply(split)  # await point: apply
        if self.router.capabilities.read_back:
            with anyio.fail_after(self._call_timeout):
                seen = await self.router.read()  # await point: apply.read_back
            if seen is not None and seen != split:
                raise RouterError(
                    f"read back canary {seen.canary_percent:g}% after applying "
                    f"{split.canary_percent:g}%"
                )

    async def _try_apply(self, split: TrafficSplit) -> str | _Stop | None:
        """Apply with retries: None once confirmed, a `_Stop`, or the last failure's reason."""
        reason = "not attempted"
        for attempt in range(1, self._apply_attempts + 1):
            target = self.state.target
            if target is not split and target != split:
                return _SUPERSEDED  # an operator command changed what the rollout wants
            await self._prove_lease()  # await point: lease.check
            try:
                await self._apply_and_read_back(split)
            except Exception as exc:
                reason = describe_failure(exc, self._call_timeout)
                now = self.clock.now()
                self._emit(RouterCallFailed(time=now, split=split, attempt=attempt, reason=reason))
                if isinstance(exc, ConfigError):
                    # The router refuses this split and always will: no retry. Rolling
                    # back, report it to the machine (which holds and pauses); otherwise
                    # stop the run, which rolls back and raises it.
                    if self.phase is Phase.ROLLING_BACK:
                        return reason
                    raise
                if attempt < self._apply_attempts:
                    retry_at = now + backoff_delay(self._retry_delay, attempt)
                    deadline = self._progress_deadline()
                    if deadline is not None:
                        if now >= deadline:
                            return _DEADLINE  # the machine decides what happens now
                        retry_at = min(retry_at, deadline)
                    if retry_at > self._stop_at and self.phase is not Phase.ROLLING_BACK:
                        await self._wait(self._stop_at)  # await point: apply.backoff
                        if self.clock.now() >= self._stop_at:
                            return _STOP_AT  # `run(stop_at=...)` returns, traffic as it is
                        continue  # an operator command came first
                    await self._wait(retry_at)  # await point: apply.backoff
                continue
            self._handle(SplitApplied(self.clock.now(), split))
            return None
        return reason

    def _progress_deadline(self) -> float | None:
        state = self.state
        return state.progress_deadline_at if state.phase is Phase.PROGRESSING else None

    async def _collect(self, action: CollectWindow) -> None:
        split = self.state.confirmed or self.state.target
        window = Window(start=action.start, end=action.end, split=split)
        observed = await self._observe(window)
        if observed is None:
            return  # an operator command cut the collection short; it is asked for again
        now = self.clock.now()
        # The judging step `evaluate` shares (see `canarykit._judging`); only the wait
        # for an async decider is the runner's own.
        judging = self._judging
        observation, answer = judging.judge(self.state, action, observed, window.split)
        if not isinstance(answer, (Judgement, str)):
            answer = await self._await_judgement(answer)  # await point: judge
        self._emit(judging.fact(action, now, answer, observation))
        self._handle(judging.event(action, now, answer))

    async def _observe(self, window: Window) -> Observation | str | None:
        """The observation for `window`, why there is none, or None if a command came first."""
        assert self.metrics is not None
        # One scope serves as the call timeout and as the operator's wake-up: a slow
        # collection should not hold up an abort.
        deadline = anyio.current_time() + self._call_timeout
        self._interrupted = False
        with anyio.CancelScope(deadline=deadline) as scope:
            self._wake_scope = scope
            try:
                observation = await self.metrics.collect(window)
                if not isinstance(observation, Observation):
                    raise MetricsError(f"collect() returned {type(observation).__name__}")
                _check_covers(observation, window)
            except ConfigError:
                raise  # a source that can never work: the run stops and rolls back
            except NoDataError:
                # The source answered, with nothing to report: that is the decider's call
                # (its no-data policy), not a metrics failure that counts towards rollback.
                observation = Observation(
                    start=window.start, end=window.end, stable=_NO_REQUESTS, canary=_NO_REQUESTS
                )
            except Exception as exc:
                return f"metrics: {describe_failure(exc, self._call_timeout)}"
            finally:
                self._wake_scope = None
        if scope.cancelled_caught:
            if self._interrupted:
                return None
            return f"metrics: timed out after {self._call_timeout:g} s"
        return observation

    async def _await_judgement(self, awaitable: Awaitable[Any]) -> Judged:
        """An async decider's judgement, awaited under `decider_timeout`, or why there is none."""
        try:
            with anyio.fail_after(self._decider_timeout):
                judged = await awaitable
        except Exception as exc:
            return self._judging.failure(exc)
        return self._judging.settle(judged)

    async def _emergency_rollback(self, reason: str, *, record: bool = True) -> None:
        with anyio.CancelScope(shield=True):
            if not self._lease_ok():
                return  # another runner may own the rollout now: touch nothing
            if not self.phase.is_terminal:
                # A rollout still pending is simply aborted; anything else rolls back.
                with contextlib.suppress(InvalidTransition):
                    self._handle(AbortRequested(self.clock.now(), reason))
            if record and self.phase is Phase.ROLLING_BACK:
                # Saved before it is done, as every action is: a runner killed during the
                # rollback leaves a state that the next runner rolls back too.
                await self._save(strict=False)
            while self.phase is Phase.ROLLING_BACK and self._lease_ok():
                action = self._machine.next_action(self.clock.now())
                if not isinstance(action, ApplySplit):
                    break
                await self._apply(action.split)
            await self._save(strict=False)

    # ------------------------------------------------------------------ store and lease

    def _record(self, state: RolloutState) -> dict[str, Any]:
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "key": self.key,
            "plan_fingerprint": self._fingerprint,
            "plan": self._plan_json,
            "state": state.to_json(),
        }
        lease = self.lease
        if isinstance(lease, FencedLease):
            # Which holding saved this, and which one last moved traffic (perhaps a
            # runner before this one: carried over from the record it resumed).
            applied = self._applied_by or {"apply_holder": None, "apply_token": None}
            record["fencing"] = {"holder": lease.holder, "token": lease.token, **applied}
        return record

    async def _restore(self) -> None:
        """Load the state saved under the key, if there is a store.

        At the first run() it is the rollout to continue. At a later run() of the same
        runner it replaces this runner's state only if another runner saved over it
        meanwhile (having taken the lease this one lost or released): a stale runner must
        not drive from its old state. A load that failed is done again at the next run().
        """
        store = self.store
        if store is None or self._skip_load:
            self._skip_load = False
            return
        try:
            with anyio.fail_after(self._call_timeout):
                record = await store.load(self.key)  # await point: load
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"{self.key}: could not load the saved state: "
                f"{describe_failure(exc, self._call_timeout)}"
            ) from exc
        if record is None:
            return
        mine = None if self._saved_state is None else _as_json(self._saved_state)
        if mine is not None and isinstance(record, dict) and record.get("state") == mine:
            return  # still what this runner saved last: its own state is the latest
        if await self._another_release(store, record):
            return
        state = _decode_record(record, self.key, self.plan, self._fingerprint)
        self._hook_driver.check_resumable(state)
        self._machine.state = state
        self._saved_state = state
        self._applied_by = _last_apply(record)
        self._resumed = True
        self._recover_pending = not state.is_terminal and state.phase is not Phase.PENDING

    async def _another_release(self, store: StateStore, record: Any) -> bool:
        """Check the saved rollout's release against this one's, before anything else.

        True when the saved rollout finished and this is a new release: its record was
        archived and this rollout starts afresh. Raises `ReleaseFinishedError` for a
        finished one of the same release (or none named), `ReleaseInProgressError` for a
        live one of another release. False otherwise: the saved rollout is resumed.
        """
        try:
            saved = RolloutState.from_json(record["state"])
        except (StateError, KeyError, TypeError):
            return False  # `_decode_record` says what is wrong with it
        release = self.release
        if saved.is_terminal and isinstance(next_action(self.plan, saved, 0.0), RunHook):
            return False  # its hooks after the end are still due: it finishes them first
        if saved.is_terminal and release is not None and saved.release != release:
            archive = getattr(store, "archive", None)
            if callable(archive):
                try:
                    with anyio.fail_after(self._call_timeout):
                        await archive(self.key, record)  # await point: archive
                except LeaseLostError as exc:
                    # Fenced by a newer holding (this runner was stalled since it took the
                    # lease): not a store failure, a lost lease.
                    self._lose_lease(f"the store refused to archive the last release: {exc}")
                    raise LeaseLostError(self._lost_message()) from exc
                except Exception as exc:
                    raise StateError(
                        f"{self.key}: could not keep the finished rollout of "
                        f"{_release_name(saved.release)} before starting release {release}: "
                        f"{describe_failure(exc, self._call_timeout)}"
                    ) from exc
            self._machine.state = RolloutState(release=release)
            return True
        if saved.is_terminal:
            with contextlib.suppress(StateError):
                # Loaded, so that `retry()` then `run()` runs it again; nothing is saved.
                state = _decode_record(record, self.key, self.plan, self._fingerprint)
                self._machine.state = self._saved_state = state
                self._resumed = True
            ended = {Phase.SUCCEEDED: "promoted", Phase.ROLLED_BACK: "rolled back"}
            how = ended.get(saved.phase, "aborted")
            finished = saved.finished_at if saved.finished_at is not None else math.nan
            name = _release_name(saved.release)
            hint = "" if saved.release else " (name a new release to start the next rollout)"
            raise ReleaseFinishedError(
                f"{name} finished: {how} at {when(saved.finished_at)}, nothing to do{hint}",
                release=saved.release,
                phase=saved.phase,
                finished_at=finished,
                reason=saved.reason,
            )
        if release is not None and saved.release != release:
            other = "--release " + saved.release if saved.release else "no --release"
            raise ReleaseInProgressError(
                f"{self.key}: {_release_name(saved.release)} is still in progress "
                f"({saved.phase.value.replace('_', ' ')}, canary at "
                f"{_percent(saved.confirmed)}); release {release} cannot start before it "
                f"ends. Finish it: canarykit promote/abort POLICY, or run it with {other}",
                release=saved.release,
                phase=saved.phase,
            )
        return False

    async def _save(self, *, strict: bool) -> None:
        """Save the state if it changed. `strict`: retry, then raise `StateSaveError`."""
        store = self.store
        state = self._machine.state
        if store is None or state is self._saved_state:
            return
        if not self._lease_ok():
            if strict:
                self._check_lease()
            return
        record = self._record(state)
        attempts = self._apply_attempts if strict else 1
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                with anyio.fail_after(self._call_timeout):
                    await store.save(self.key, record)  # await point: save
            except LeaseLostError as exc:
                # Fenced by a newer holding: another runner drives the rollout now. Not a
                # failed save (whose rollback would move its traffic): a lost lease.
                self._lose_lease(f"the store refused the state write: {exc}")
                if strict:
                    raise LeaseLostError(self._lost_message()) from exc
                return
            except Exception as exc:
                reason = describe_failure(exc, self._call_timeout)
                logger.warning(
                    "%s: could not save the state (attempt %d of %d): %s",
                    self.key,
                    attempt,
                    attempts,
                    reason,
                )
                if attempt < attempts:
                    delay = backoff_delay(self._retry_delay, attempt)
                    await self._wait(self.clock.now() + delay)  # await point: save.backoff
                continue
            self._saved_state = state
            return
        if strict:
            raise StateSaveError(
                f"{self.key}: could not save the rollout's state ({attempts} attempts, the "
                f"last: {reason}); stopped before moving traffic on an unrecorded step"
            )

    async def _acquire_lease(self) -> None:
        lease = self.lease
        if lease is None:
            return
        started = anyio.current_time()
        try:
            with anyio.fail_after(self._call_timeout):
                await lease.acquire()  # await point: lease.acquire
        except LeaseError:
            raise
        except Exception as exc:
            raise LeaseError(
                f"{self.key}: could not take the rollout's lease: "
                f"{describe_failure(exc, self._call_timeout)}"
            ) from exc
        self._lease_lost = None
        self._lease_valid_until = started + lease.ttl

    async def _keep_lease(self, lease: Lease, scope: anyio.CancelScope) -> None:
        """Renew the lease every ttl/3 (real time); once it is lost, stop the rollout at once."""
        period = lease.ttl / 3
        with scope:
            while self._lease_lost is None:
                await anyio.sleep(period)
                lost = await self._renew(lease, period)
                if lost is not None:
                    self._lose_lease(lost)
                    return

    async def _renew(self, lease: Lease, period: float) -> str | None:
        """Renew once, retrying failures while the last renewal lasts; why it is lost, or None.

        `LeaseLostError` (the engine says the lease is another's) loses it at once. Any other
        failure (a timeout, an etcd leader election, a dropped connection) is tried again
        until the last successful renewal runs out: the runner acts only while that renewal
        lasts (and proves a fenced lease before every apply), so retrying never acts on a
        lease that may be someone else's, and a blip shorter than the ttl no longer hands
        the rollout to another runner.
        """
        failure = "no attempt had time"
        while (left := self._lease_valid_until - anyio.current_time()) > 0:
            started = anyio.current_time()
            budget = min(period, left)
            try:
                with anyio.fail_after(budget):
                    await lease.renew()  # await point: lease.renew
            except LeaseLostError as exc:
                return f"renewing it failed: {describe_failure(exc, budget)}"
            except Exception as exc:
                failure = describe_failure(exc, budget)
                logger.warning("%s: renewing the lease failed, trying again: %s", self.key, failure)
                await anyio.sleep(min(period / 4, max(0.0, left - budget)))
                continue
            self._lease_valid_until = started + lease.ttl
            return None
        return f"renewing it failed until its {lease.ttl:g} s ran out: {failure}"

    async def _release_lease(self) -> None:
        lease = self.lease
        if lease is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self._call_timeout):
                    await lease.release()  # await point: lease.release
            except Exception as exc:
                logger.warning("%s: could not release the lease: %s", self.key, exc)

    def _lease_ok(self) -> bool:
        """True while the lease (if any) is held and its last renewal has not run out."""
        lease = self.lease
        if lease is None:
            return True
        if self._lease_lost is not None:
            return False
        if anyio.current_time() >= self._lease_valid_until:
            self._lose_lease(f"not renewed within its {lease.ttl:g} s")
            return False
        return True

    def _check_lease(self) -> None:
        if not self._lease_ok():
            raise LeaseLostError(self._lost_message())

    async def _prove_lease(self) -> None:
        """Before an apply: the lease still ours, proven by the engine for a `FencedLease`.

        A clock check cannot see that this process was frozen past its lease while another
        runner took over; the fenced lease's `check()` asks the engine. Any failure (the
        engine says no, cannot be reached, takes longer than `call_timeout`) is a lost
        lease: nothing is applied. The token is kept for the records saved after the apply.
        """
        self._check_lease()
        lease = self.lease
        if not isinstance(lease, FencedLease):
            return
        try:
            with anyio.fail_after(self._call_timeout):
                token = await lease.check()  # await point: lease.check
        except Exception as exc:
            self._lose_lease(
                f"checking it before an apply failed: {describe_failure(exc, self._call_timeout)}"
            )
            raise LeaseLostError(self._lost_message()) from exc
        self._check_lease()  # the check itself may have taken the rest of the lease
        self._applied_by = {"apply_holder": lease.holder, "apply_token": token}

    def _lose_lease(self, reason: str) -> None:
        if self._lease_lost is not None:
            return
        self._lease_lost = reason
        holder = "" if self.lease is None else self.lease.holder
        logger.error("%s: lost the lease (%s); stopping without touching traffic", self.key, reason)
        self._emit(LeaseRevoked(time=self.clock.now(), holder=holder, reason=reason))
        if self._drive_scope is not None:
            self._drive_scope.cancel()

    def _lost_message(self) -> str:
        return (
            f"{self.key}: lost the rollout's lease ({self._lease_lost}); stopped without "
            f"touching traffic or the saved state again (canary last confirmed at "
            f"{_percent(self.state.confirmed)}); another runner may be driving it"
        )

    # ------------------------------------------------------------------ bookkeeping

    def _handle(self, event: Event, command: CommandReceived | None = None) -> None:
        before = self._machine.state
        self._machine.handle(event)
        after = self._machine.state
        if command is not None:
            self._emit(command)
        if after.confirmed != before.confirmed and after.confirmed is not None:
            self._emit(SplitConfirmed(time=event.now, split=after.confirmed))
        if after.phase is not before.phase:
            self._emit(
                PhaseChanged(
                    time=event.now,
                    old=before.phase,
                    new=after.phase,
                    step=after.step,
                    reason=after.reason,
                )
            )

    def _emit(self, event: RolloutEvent) -> None:
        entry = TimelineEntry.for_event(event, self._machine.state)
        self._timeline.append(entry)
        if logger.isEnabledFor(logging.INFO):
            level = logging.WARNING if entry.kind == "error" else logging.INFO
            # The reason may come from outside (an operator, a server): one log line each.
            logger.log(level, "%s: %s %s", self.key, entry.kind, shown(entry.reason))
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("%s: a listener failed on %s", self.key, type(event).__name__)

    def _outcome(self) -> RolloutOutcome:
        state = self.state
        return RolloutOutcome(
            phase=state.phase,
            reason=state.reason,
            split=state.confirmed,
            started_at=state.started_at,
            finished_at=self.clock.now(),
            timeline=tuple(self._timeline),
            state=state,
            release=state.release,
        )

    def __repr__(self) -> str:
        return f"<Rollout {self.key!r} {self.phase.value} at step {self.state.step}>"


async def run_rollout(
    plan: Plan,
    *,
    router: TrafficRouter,
    metrics: MetricsSource | None = None,
    decider: Decider | None = None,
    **options: Any,
) -> RolloutOutcome:
    """Run a canary rollout to its end: ``await run_rollout(plan, router=..., ...)``.

    Shorthand for ``await Rollout(plan, ...).run()``; see `Rollout` for the options.
    """
    rollout = Rollout(plan, router=router, metrics=metrics, decider=decider, **options)
    return await rollout.run()
