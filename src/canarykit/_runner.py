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
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import anyio

from ._errors import (
    ClockStalled,
    ConfigError,
    DeciderError,
    InvalidTransition,
    MetricsError,
    RouterError,
    UnsupportedPlanError,
)
from ._events import (
    AnalysisError,
    CommandReceived,
    PhaseChanged,
    RolloutEvent,
    RolloutOutcome,
    RouterFailure,
    SplitConfirmed,
    TimelineEntry,
    VerdictReached,
)
from ._machine import (
    Abort,
    AnalysisKind,
    ApplyFailed,
    ApplySplit,
    CollectWindow,
    Event,
    Finish,
    Phase,
    Promote,
    PromoteFull,
    RequestPause,
    Resume,
    Retry,
    RolloutMachine,
    RolloutState,
    SplitApplied,
    Start,
    Tick,
    WindowFailed,
    WindowJudged,
)
from ._observe import Observation, Window
from ._plan import Analyze, Plan
from ._protocols import Clock, Decider, MetricsSource, StateStore, SystemClock, TrafficRouter
from ._split import STABLE_ONLY, TrafficSplit
from ._validate import finite
from ._verdict import Judgement

__all__ = ["Listener", "Rollout", "run_rollout"]

logger = logging.getLogger("canarykit")

Listener = Callable[[RolloutEvent], object]


def _positive(field: str, value: Any) -> float:
    number = finite(field, value)
    if not number > 0:
        raise ConfigError(field, value, "must be > 0")
    return number


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Rollout:
    """One canary rollout: a plan driven through a router, watched by metrics and a decider.

    Build it, start `run()` in a task, and control it from other tasks with `promote()`,
    `promote_full()`, `pause()`, `resume()`, `abort()` and `retry()`::

        rollout = Rollout(plan, router=router, metrics=metrics, decider=decider)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_chat_for_commands, rollout)
            outcome = await rollout.run()

    Parameters beyond the plan and its parts:

    - `clock`: where time comes from (`SystemClock()` by default; a `VirtualClock` in tests).
    - `listeners`: callables given every `RolloutEvent`; their errors are logged, not raised.
    - `call_timeout`: seconds allowed for each router or metrics call (30).
    - `decider_timeout`: seconds allowed for an async decider's verdict (300).
    - `apply_attempts`, `retry_delay`: tries per split and the first backoff (3, 1 s; the
      delay doubles each time).
    - `rollback_timeout`: seconds the shielded rollback may take in all (120).
    - `on_cancel`: "rollback" (default) sends traffic back to stable when `run()` is
      cancelled; "leave" leaves it where it is.
    - `store`, `key`: where to save the state after every change, for a later resume.

    A plan that needs what the router cannot do is refused here, before traffic moves.
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
        store: StateStore | None = None,
        key: str = "rollout",
        state: RolloutState | None = None,
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
        if on_cancel not in ("rollback", "leave"):
            raise ConfigError("on_cancel", on_cancel, "must be 'rollback' or 'leave'")
        if isinstance(apply_attempts, bool) or not isinstance(apply_attempts, int):
            raise ConfigError("apply_attempts", apply_attempts, "must be an integer >= 1")
        if apply_attempts < 1:
            raise ConfigError("apply_attempts", apply_attempts, "must be an integer >= 1")
        self.plan = plan
        self.router = router
        self.metrics = metrics
        self.decider = decider
        self.clock: Clock = SystemClock() if clock is None else clock
        self.key = key
        self._listeners = list(listeners)
        self._call_timeout = _positive("call_timeout", call_timeout)
        self._decider_timeout = _positive("decider_timeout", decider_timeout)
        self._apply_attempts = apply_attempts
        self._retry_delay = _positive("retry_delay", retry_delay)
        self._rollback_timeout = _positive("rollback_timeout", rollback_timeout)
        self._on_cancel = on_cancel
        self._store = store
        self._machine = RolloutMachine(plan, state)
        self._timeline: list[TimelineEntry] = []
        self._wake_scope: anyio.CancelScope | None = None
        self._interrupted = False  # set when a command cancels the wake scope
        self._running = False

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

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every event from now on."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ commands

    def promote(self) -> None:
        """Finish the current step now and go on (also ends a pause)."""
        self._command(Promote(self.clock.now()), "promote")

    def promote_full(self) -> None:
        """Skip the remaining steps and promote the canary."""
        self._command(PromoteFull(self.clock.now()), "promote_full")

    def pause(self, reason: str = "paused by operator") -> None:
        """Hold the rollout at its current split; analysis keeps watching."""
        self._command(RequestPause(self.clock.now(), reason), "pause", reason)

    def resume(self) -> None:
        """Carry on from a pause."""
        self._command(Resume(self.clock.now()), "resume")

    def abort(self, reason: str = "aborted by operator") -> None:
        """Roll back to stable and end as aborted."""
        self._command(Abort(self.clock.now(), reason), "abort", reason)

    def retry(self) -> None:
        """Start an aborted or rolled-back rollout again from its first step; then `run()`."""
        self._command(Retry(self.clock.now()), "retry")

    def _command(self, event: Event, name: str, reason: str = "") -> None:
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
        """
        if self._running:
            raise InvalidTransition("this rollout is already running")
        self._running = True
        try:
            await self._drive(math.inf if stop_at is None else stop_at)
        except anyio.get_cancelled_exc_class():
            if self._on_cancel == "rollback":
                await self._emergency_rollback("cancelled while running")
            raise
        except BaseException as exc:
            await self._emergency_rollback(f"stopped by an unexpected error: {exc!r}")
            raise
        finally:
            self._running = False
        return self._outcome()

    async def _drive(self, stop_at: float) -> None:
        if self.phase is Phase.PENDING:
            current = await self._read_current()
            self._handle(Start(self.clock.now(), current))
        ticked_at = -math.inf
        while True:
            if self._store is not None:
                await self._save()
            now = self.clock.now()
            action = self._machine.next_action(now)
            if isinstance(action, Finish):
                return
            if isinstance(action, ApplySplit):
                await self._apply(action.split)
            elif isinstance(action, CollectWindow):
                await self._collect(action)
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
                    await self._wait(min(action.until, stop_at))
                except ClockStalled:
                    return

    async def _read_current(self) -> TrafficSplit:
        if not self.router.capabilities.read_back:
            return STABLE_ONLY
        try:
            with anyio.fail_after(self._call_timeout):
                current = await self.router.read()
        except Exception as exc:
            raise RouterError(
                f"could not read the router's split before starting: "
                f"{_describe(exc, self._call_timeout)}"
            ) from exc
        return STABLE_ONLY if current is None else current

    async def _wait(self, until: float) -> None:
        with anyio.CancelScope() as scope:
            self._wake_scope = scope
            try:
                await self.clock.sleep_until(until)
            finally:
                self._wake_scope = None

    async def _apply(self, split: TrafficSplit) -> None:
        rolling_back = self.phase is Phase.ROLLING_BACK
        with anyio.CancelScope(shield=rolling_back) as scope:
            if rolling_back:
                scope.deadline = anyio.current_time() + self._rollback_timeout
            reason = await self._try_apply(split)
            if reason is None:
                return
        if scope.cancelled_caught:
            reason = f"rollback not confirmed within {self._rollback_timeout:g} s"
        self._handle(ApplyFailed(self.clock.now(), split, reason or "unknown"))

    async def _try_apply(self, split: TrafficSplit) -> str | None:
        """Apply with retries; None once confirmed, else the last failure's reason."""
        reason = "not attempted"
        for attempt in range(1, self._apply_attempts + 1):
            try:
                with anyio.fail_after(self._call_timeout):
                    await self.router.apply(split)
                if self.router.capabilities.read_back:
                    with anyio.fail_after(self._call_timeout):
                        seen = await self.router.read()
                    if seen is not None and seen != split:
                        raise RouterError(
                            f"read back canary {seen.canary_percent:g}% after applying "
                            f"{split.canary_percent:g}%"
                        )
            except Exception as exc:
                reason = _describe(exc, self._call_timeout)
                now = self.clock.now()
                self._emit(RouterFailure(time=now, split=split, attempt=attempt, reason=reason))
                if attempt < self._apply_attempts:
                    await self.clock.sleep_until(now + self._retry_delay * 2 ** (attempt - 1))
                continue
            self._handle(SplitApplied(self.clock.now(), split))
            return None
        return reason

    async def _collect(self, action: CollectWindow) -> None:
        split = self.state.confirmed or self.state.target
        window = Window(start=action.start, end=action.end, split=split)
        observation = await self._observe(window)
        if observation is None:
            return  # an operator command cut the collection short; it is asked for again
        now = self.clock.now()
        if isinstance(observation, Observation):
            judged = await self._judge(action, observation)
            if isinstance(judged, Judgement):
                verdict = judged.verdict
                self._emit(
                    VerdictReached(
                        time=now,
                        kind=action.kind,
                        start=action.start,
                        end=action.end,
                        verdict=verdict,
                        observation=observation,
                    )
                )
                self._handle(WindowJudged(now, action.kind, action.end, verdict, judged.state))
                return
            reason = judged
        else:
            reason = observation
        self._emit(AnalysisError(time=now, kind=action.kind, end=action.end, reason=reason))
        self._handle(WindowFailed(now, action.kind, action.end, reason))

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
            except Exception as exc:
                return f"metrics: {_describe(exc, self._call_timeout)}"
            finally:
                self._wake_scope = None
        if scope.cancelled_caught:
            if self._interrupted:
                return None
            return f"metrics: timed out after {self._call_timeout:g} s"
        return observation

    async def _judge(self, action: CollectWindow, observation: Observation) -> Judgement | str:
        """The decider's judgement of `observation`, or why there is none."""
        decider = self._decider_for(action.kind)
        try:
            state = action.decider_state
            if state is None:
                state = decider.initial_state()
            judged = decider.judge(state, observation)
            if inspect.isawaitable(judged):
                with anyio.fail_after(self._decider_timeout):
                    judged = await judged
            if not isinstance(judged, Judgement):
                raise DeciderError(f"judge() returned {type(judged).__name__}")
        except Exception as exc:
            return f"decider: {_describe(exc, self._decider_timeout)}"
        return judged

    def _decider_for(self, kind: AnalysisKind) -> Decider:
        if kind is AnalysisKind.STEP:
            step = self.plan.steps[self.state.step]
            if isinstance(step, Analyze) and step.decider is not None:
                return step.decider
        assert self.decider is not None
        return self.decider

    async def _emergency_rollback(self, reason: str) -> None:
        with anyio.CancelScope(shield=True):
            if not self.phase.is_terminal:
                # A rollout still pending is simply aborted; anything else rolls back.
                with contextlib.suppress(InvalidTransition):
                    self._handle(Abort(self.clock.now(), reason))
            while self.phase is Phase.ROLLING_BACK:
                action = self._machine.next_action(self.clock.now())
                if not isinstance(action, ApplySplit):
                    break
                await self._apply(action.split)
            await self._save()

    async def _save(self) -> None:
        if self._store is None:
            return
        try:
            with anyio.fail_after(self._call_timeout):
                await self._store.save(self.key, {"state": self.state.to_json()})
        except Exception as exc:
            logger.warning("%s: could not save state: %s", self.key, exc)

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
            logger.log(level, "%s: %s %s", self.key, entry.kind, entry.reason)
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
