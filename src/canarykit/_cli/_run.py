"""``canarykit run``: a real rollout from a policy file, shown as it happens.

How it works. The policy's ``[router]``, ``[metrics]``, ``[hooks]`` and ``[[notify]]``
tables are built into their objects (`Deployment`), and a `Rollout` runs the plan with a
`FileStore` in the ``[rollout]`` state directory, keyed by the rollout's name (or, with
``[state] backend = "etcd"`` or ``"postgres"``, with that store, which every host that
reaches it shares). So running the same command again after a crash, a reboot or a
kill (on this host, or on another with a shared store) continues where the rollout
stopped, and the store's lease refuses a second runner of the same name.

Every event is printed as one line (time, phase, canary weight, what happened); free text
in it (a reason from an operator, a server or a webhook) has its control characters
escaped and is at most `canarykit._text.MAX_TEXT` characters long, so it cannot break
the line, forge another or move the cursor. When the
status stream (stderr) is a terminal, a status line below them is redrawn every second:
the step, the weight, the time left in the step or how long a gate has been waiting.
When it is not, the lines are all there is: plain text, fit for a CI log. With ``--json``
the lines go to stderr and stdout gets only the outcome, as one JSON object.

A rollout is one release: ``--release ID`` (or ``[rollout] release``) names it. Once a
rollout has finished, running the policy with a new release id starts a new one (the
finished record goes to the state directory's history); with the same id, or none, the
command moves no traffic and exits 5 saying how and when that release finished. A router
found away from stable is refused unless ``--adopt`` (or ``[rollout] adopt``) says to
start from its current split; ``canarykit init`` puts it at stable.

Warnings logged while the rollout runs (a metrics source retrying, a notifier failing)
are lines too, with the time: the first of a kind in full, then at most one
``retrying Prometheus (3 tries so far, last: ...)`` per window, and a summary line once
the next event comes.

Exit codes (`exit_code`), which say only what the router confirmed: 0 promoted; 3 rolled
back or aborted with the router confirmed at stable; 6 ended or stopped with the split
unknown or not confirmed at stable (the last line says which split the router last
confirmed); 4 stopped paused; 5 nothing to do (the release already finished); 130
interrupted; 2 bad input; 1 any other failure (another runner holds the rollout, a
release still in progress, a router not at stable without ``--adopt``, ...).

SIGINT (Ctrl-C) and SIGTERM (a CI runner stopping the job) cancel the run: the rollout
rolls traffic back to stable under its shielded scope (within ``rollback_timeout``) and
the command exits 130, unless the policy (``on_interrupt = "leave"``) or
``--leave-traffic`` says to leave traffic where it is (the state is saved, so running the
command again continues the rollout). A second signal while rolling back is reported,
not obeyed: the rollback has its own deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
import anyio.abc
import attrs

from .._durations import format_duration
from .._errors import ConfigError, ReleaseFinishedError
from .._events import RolloutEvent, RolloutOutcome, TimelineEntry
from .._machine import Phase
from .._plan import Analyze, Pause, SetHeaderRoutes, SetMirror, SetWeight, WaitForPromotion
from .._runner import Rollout
from .._stores import FileStore
from .._text import shown
from ..policy import Policy, load_policy
from ..policy._deployment import check_plan_on_router, check_release
from ._control import (
    CommandInbox,
    CommandSource,
    StoreCommands,
    add_location_arguments,
    finished_words,
    locate,
    serve_inbox,
)

if TYPE_CHECKING:
    from ..notify import Notifier

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_TO_DO",
    "EXIT_NOT_AT_STABLE",
    "EXIT_PAUSED",
    "EXIT_PROMOTED",
    "EXIT_ROLLED_BACK",
    "EXIT_USAGE",
    "RunDisplay",
    "add_run_command",
    "execute",
    "exit_code",
    "run_run",
]

EXIT_PROMOTED = 0  # promoted
EXIT_FAILED = 1  # any other failure: the message says what
EXIT_USAGE = 2  # bad input: the policy file, an argument, a missing extra
EXIT_ROLLED_BACK = 3  # rolled back or aborted, and the router confirmed stable
EXIT_PAUSED = 4  # stopped paused (a gate, an inconclusive verdict, ...): a person must look
EXIT_NOTHING_TO_DO = 5  # the release already finished: no traffic moved
EXIT_NOT_AT_STABLE = 6  # ended or stopped with the split unknown or not confirmed at stable
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM: rolled back (or left, as told)

EXIT_CODES = {
    EXIT_PROMOTED: "promoted",
    EXIT_FAILED: "any other failure (another runner, a release in progress, a router "
    "not at stable without --adopt, state that cannot be used): the message says what",
    EXIT_USAGE: "bad input: the policy file, an argument, an extra not installed",
    EXIT_ROLLED_BACK: "rolled back or aborted, and the router confirmed all traffic on stable",
    EXIT_PAUSED: "stopped paused: a person must look (the last line says where traffic is)",
    EXIT_NOTHING_TO_DO: "nothing to do: this release already finished (no traffic moved)",
    EXIT_NOT_AT_STABLE: "ended or stopped with the split unknown or not confirmed at stable "
    "(the last line says what the router last confirmed)",
    EXIT_INTERRUPTED: "interrupted by SIGINT or SIGTERM (traffic rolled back unless told "
    "to leave it)",
}
"""What each exit code of ``canarykit run`` means."""

_STATUS_EVERY = 1.0  # seconds between two redraws of the status line
# Repeated warnings of one kind are summarised: at most one line per this many seconds
# (the plan's analysis interval when it has one).
_LOG_WINDOW = 60.0


def add_run_command(commands: Any) -> None:
    """Add ``run`` to the command line's subcommands."""
    run = commands.add_parser(
        "run",
        help="run a real rollout from a policy file, showing its progress",
        description=(
            "Run POLICY's plan for real: move traffic through its [router], judge its "
            "[metrics] with its [decider], and call its [hooks] and [[notify]]. The state "
            "is saved under the rollout's name: run the same command again to continue "
            "after a crash. Exit code 0 promoted, 3 rolled back or aborted with the "
            "router confirmed at stable, 6 ended with the split unknown or not at "
            "stable, 4 stopped paused, 5 nothing to do (the release already finished), "
            "130 interrupted (traffic rolled back unless told to leave it), 2 bad "
            "input, 1 any other failure."
        ),
    )
    add_location_arguments(run)
    run.add_argument(
        "--release",
        default=None,
        metavar="ID",
        help="the release this rollout ships, e.g. v1.4.2 (default: [rollout] release); "
        "a new id after a finished rollout starts a new one, the same id does nothing",
    )
    run.add_argument(
        "--adopt",
        action="store_true",
        help="start from the router's current split when it is not at stable (default: "
        "refuse; `canarykit init` puts it at stable)",
    )
    run.add_argument(
        "--leave-traffic",
        action="store_true",
        help="on SIGINT or SIGTERM leave traffic where it is instead of rolling back",
    )
    run.add_argument(
        "--json", action="store_true", help="print the outcome as JSON (the lines go to stderr)"
    )
    run.add_argument(
        "--no-status",
        action="store_true",
        help="no status line, even on a terminal: only the event lines",
    )


def run_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``canarykit run`` with parsed `args`; return the exit code."""
    policy = load_policy(args.policy)
    deployment = policy.deployment
    name, state_dir = locate(args, deployment)
    on_cancel: Literal["rollback", "leave"] = (
        "leave" if args.leave_traffic else deployment.on_interrupt
    )
    # Built here, before any traffic moves: a bad table is refused by its key path, and
    # so is a step the router could never apply (not found at that step, traffic live).
    router = deployment.build_router()
    check_plan_on_router(policy.plan, router)
    metrics = deployment.build_metrics()
    hooks = deployment.build_hooks()
    notifiers = deployment.build_notifiers()
    release = deployment.release
    if args.release is not None:
        release = check_release("--release", args.release)
    shared = deployment.state_backend != "file"
    # [state] backend: the state, the lease and the commands in a store several hosts
    # share (etcd, PostgreSQL); else files in the state directory, on this host.
    store: Any = deployment.build_store() if shared else FileStore(state_dir)
    ttl = {} if deployment.lease_ttl is None else {"ttl": deployment.lease_ttl}
    try:
        # The lease is the rollout name's and, when the router names what it controls,
        # that traffic target's too: two names or two state directories, one router, one
        # runner.
        lease = store.lease(name, target=_traffic_target(router), **ttl)
        rollout = Rollout(
            policy.plan,
            router=router,
            metrics=metrics,
            decider=policy.decider,
            store=store,
            key=name,
            lease=lease,
            hooks=hooks,
            on_cancel=on_cancel,
            call_timeout=deployment.call_timeout,
            rollback_timeout=deployment.rollback_timeout,
            apply_attempts=deployment.apply_attempts,
            release=release,
            adopt=args.adopt or deployment.adopt,
            on_metrics_outage=deployment.on_metrics_outage,
            metrics_outage_limit=deployment.metrics_outage_limit,
        )
    except ConfigError as exc:
        if exc.field == "key":
            raise ConfigError("--name", exc.value, exc.problem) from None
        raise
    inbox: CommandInbox | CommandSource
    if shared:
        # Sent from any host that reaches the store; only the lease holder takes them.
        inbox = StoreCommands(store, name)
        state_dir = f"{deployment.state_backend}: {store!r}"
    else:
        # An inbox others may write to would let them steer this rollout: refused before
        # any traffic moves (FileRefusedError says how to fix it).
        inbox = CommandInbox(state_dir, name)
        inbox.prepare()
    status = None if args.no_status or not err.isatty() else err
    return execute(
        rollout,
        out=out,
        lines=err if args.json else out,
        status=status,
        notifiers=notifiers,
        inbox=inbox,
        json_outcome=args.json,
        leaves_traffic=on_cancel == "leave",
        heading=(policy, str(args.policy), str(state_dir)),
        release=release,
        close_store=shared,
    )


def _traffic_target(router: object) -> str | None:
    """What `router` controls, as its ``traffic_target`` names it (None if it does not).

    E.g. ``nginx:/etc/nginx/canary.conf``: the include file, an HAProxy backend, a
    Kubernetes object.
    """
    target = getattr(router, "traffic_target", None)
    return target if isinstance(target, str) and target else None


def execute(
    rollout: Rollout,
    *,
    out: TextIO,
    lines: TextIO,
    status: TextIO | None = None,
    notifiers: Sequence[Notifier] = (),
    inbox: CommandInbox | CommandSource | None = None,
    json_outcome: bool = False,
    leaves_traffic: bool = False,
    heading: tuple[Policy, str, str] | None = None,
    release: str | None = None,
    close_store: bool = False,
) -> int:
    """Run `rollout` (in a new event loop) showing its progress; return the exit code.

    `lines` gets the event lines, `status` (a terminal, or None) the status line and `out`
    the outcome (as JSON with `json_outcome`). Operator commands come from `inbox` (a
    `CommandInbox` or a store's `StoreCommands`: see `canarykit._cli._control`). SIGINT
    and SIGTERM cancel the run. A release that had already finished is reported as such
    (`EXIT_NOTHING_TO_DO`), never as an outcome. With `close_store`, the rollout's store
    (an etcd or PostgreSQL client, bound to the run's event loop) is closed in that loop
    when the run ends.
    """
    window = rollout.plan.analysis_interval or _LOG_WINDOW
    display = RunDisplay(rollout, lines, status, leaves_traffic=leaves_traffic, window=window)
    rollout.add_listener(display)
    if heading is not None:
        display.header(*heading, release=release)
    try:
        with display.capture_logs():
            outcome, interrupted = anyio.run(
                _drive, rollout, display, list(notifiers), inbox, close_store
            )
    except ReleaseFinishedError as exc:  # nothing ran: no outcome to show
        display.close()
        _nothing_to_do(out if json_outcome else lines, rollout.key, str(exc), json_outcome)
        return EXIT_NOTHING_TO_DO
    except BaseException:
        display.close()
        raise
    display.close()
    if interrupted is None and outcome.phase.is_terminal and not outcome.timeline:
        # Nothing happened in this run: the saved rollout had finished before it started.
        # It is no outcome of this run, so it is not shown as one.
        message = finished_words(outcome.state, key=rollout.key, release=release)
        _nothing_to_do(out if json_outcome else lines, rollout.key, message, json_outcome)
        return EXIT_NOTHING_TO_DO
    code = exit_code(outcome, interrupted)
    if json_outcome:
        data = {"name": rollout.key, "interrupted": interrupted, "exit_code": code}
        json.dump({**data, **outcome.to_json()}, out, indent=2)
        out.write("\n")
    else:
        display.summary(outcome, interrupted)
    return code


def _nothing_to_do(out: TextIO, key: str, message: str, as_json: bool) -> None:
    if as_json:
        data = {"name": key, "nothing_to_do": True, "exit_code": EXIT_NOTHING_TO_DO}
        json.dump({**data, "message": shown(message)}, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{shown(message)}\n")
        out.flush()


def exit_code(outcome: RolloutOutcome, interrupted: str | None = None) -> int:
    """The exit code of ``canarykit run`` for `outcome`: it says only what the router confirmed.

    3 needs a rollback or abort that the router confirmed at stable: an unknown split,
    or one left off stable, is 6 whatever the phase says.
    """
    if interrupted is not None:
        return EXIT_INTERRUPTED
    phase = outcome.phase
    split = outcome.split
    if phase is Phase.SUCCEEDED:
        return EXIT_PROMOTED
    if phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        confirmed = split is not None and split.is_stable_only
        return EXIT_ROLLED_BACK if confirmed else EXIT_NOT_AT_STABLE
    if phase is Phase.PAUSED and split is not None and not outcome.state.rollback_pending:
        return EXIT_PAUSED
    return EXIT_NOT_AT_STABLE


async def _drive(
    rollout: Rollout,
    display: RunDisplay,
    notifiers: list[Notifier],
    inbox: CommandInbox | CommandSource | None,
    close_store: bool = False,
) -> tuple[RolloutOutcome, str | None]:
    """Run the rollout until it ends or a signal cancels it; the outcome and the signal."""
    try:
        return await _drive_open(rollout, display, notifiers, inbox)
    finally:
        aclose = getattr(rollout.store, "aclose", None) if close_store else None
        if aclose is not None:
            # Shielded and bounded: the outcome stands whether or not the client closes.
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    await aclose()
                except Exception as exc:
                    logging.getLogger("canarykit").warning(
                        "canarykit: could not close the state store: %s", shown(exc)
                    )


async def _drive_open(
    rollout: Rollout,
    display: RunDisplay,
    notifiers: list[Notifier],
    inbox: CommandInbox | CommandSource | None,
) -> tuple[RolloutOutcome, str | None]:
    interrupted: list[str] = []
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        for notifier in notifiers:
            await tg.start(_keep_open, notifier, rollout)
        if inbox is not None:
            started = anyio.Event()
            rollout.add_listener(lambda event: started.set())
            tg.start_soon(serve_inbox, rollout, inbox, started)
        with anyio.CancelScope() as run_scope:
            # Started (its handlers installed) before the rollout can move any traffic.
            await tg.start(_watch_signals, run_scope, display, rollout, interrupted)
            if display.status is not None:
                tg.start_soon(display.refresh)
            try:
                await rollout.run()
            except Exception as exc:  # carried out by hand: not wrapped in a group
                error = exc
        tg.cancel_scope.cancel()  # the watchers, and the notifiers (which drain first)
    if error is not None:
        raise error
    return rollout.outcome, interrupted[0] if interrupted else None


async def _keep_open(
    notifier: Notifier, rollout: Rollout, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Enter `notifier`, attach it to `rollout` and keep it open until cancelled."""
    async with notifier:
        notifier.attach(rollout)
        task_status.started()
        await anyio.sleep_forever()


async def _watch_signals(
    scope: anyio.CancelScope,
    display: RunDisplay,
    rollout: Rollout,
    interrupted: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """Cancel `scope` at the first SIGINT or SIGTERM; report (not obey) any later one."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = f"{_stamp(time.time())}  {signal.Signals(signum).name}"
            if interrupted:
                display.line(f"{name} again: the rollback has its own deadline; still waiting")
                continue
            interrupted.append(signal.Signals(signum).name)
            if rollout.phase.is_terminal:
                display.line(f"{name}: the rollout has ended already")
            elif rollout.state.confirmed is not None and rollout.state.confirmed.is_stable_only:
                display.line(f"{name}: stopping; no canary traffic to roll back")
            elif display.leaves_traffic:
                display.line(f"{name}: stopping, leaving traffic where it is (state saved)")
            else:
                display.line(f"{name}: rolling traffic back to stable")
            scope.cancel()


# ---------------------------------------------------------------------------------------
# What the user sees


def _step_text(step: Any) -> str:
    if isinstance(step, SetWeight):
        return f"set weight {step.percent:g}%"
    if isinstance(step, Pause):
        return f"pause {format_duration(step.seconds)}"
    if isinstance(step, WaitForPromotion):
        return "wait for promotion"
    if isinstance(step, Analyze):
        return f"analyze {format_duration(step.seconds)}"
    if isinstance(step, SetHeaderRoutes):
        return "header routes" if step.routes else "clear header routes"
    if isinstance(step, SetMirror):
        return f"mirror {step.percent:g}%"
    return type(step).__name__


def _stamp(when: float) -> str:
    """A time of day as the event lines show it: HH:MM:SS, local time."""
    return time.strftime("%H:%M:%S", time.localtime(when))


def _span(seconds: float) -> str:
    """A span of wall time as h:mm:ss or m:ss."""
    whole = max(0, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to ($COLUMNS, else 80, when unknown)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        columns = 0
    # 0: not a terminal, or one whose size was never set (a bare pty).
    return columns or shutil.get_terminal_size().columns


class RunDisplay:
    """A rollout's events as lines and, on a terminal, a status line kept below them.

    Given to the rollout as a listener. `lines` gets one line per event; `status` (a
    terminal, or None) gets the status line, rewritten in place (a carriage return, then
    erase to the end of the line) by `refresh` every second and after each event line.
    """

    def __init__(
        self,
        rollout: Rollout,
        lines: TextIO,
        status: TextIO | None,
        *,
        leaves_traffic: bool = False,
        window: float = _LOG_WINDOW,
    ) -> None:
        self.rollout = rollout
        self.lines = lines
        self.status = status
        self.leaves_traffic = leaves_traffic  # a cancelled run leaves traffic where it is
        self.started = time.monotonic()
        self._shown = False  # a status line is on screen
        self._writing = threading.RLock()  # log records may come from worker threads
        self._repeats = _Repeats(window)

    def header(
        self, policy: Policy, path: str, state_dir: str, *, release: str | None = None
    ) -> None:
        """The lines before the rollout starts: what runs, where its state lives."""
        plan = policy.plan
        weights = " -> ".join(f"{w:g}%" for w in plan.weights) or "no weight steps"
        where = f"policy {shown(path)}; state in {shown(state_dir)}"
        self.line(f"rollout   {self.rollout.key} ({where})")
        if release is not None:
            self.line(f"release   {shown(release)}")
        self.line(f"plan      canary {weights}; {len(plan.steps)} steps")
        self.line(f"router    {shown(repr(self.rollout.router))}")
        self.line(f"decider   {shown(policy.decider)}")

    def __call__(self, event: RolloutEvent) -> None:
        """The listener: one line for `event`."""
        self.line(self._entry_text(TimelineEntry.for_event(event, self.rollout.state)))

    def _entry_text(self, entry: TimelineEntry) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(entry.time))
        # A reason is free text from outside (an operator, a server): escaped, so that it
        # stays on its line and cannot forge others or move the cursor.
        what = shown(entry.reason)
        if entry.kind == "verdict" and entry.verdict is not None:
            what = f"{entry.verdict.value}: {what}"
        what = f"{entry.kind}: {what}" if what else entry.kind
        return f"{stamp}  {entry.phase.value:<11}  {entry.canary_percent:>5g}%  {what}"

    def line(self, text: str) -> None:
        """Print `text` as a line above the status line (after any pending summary)."""
        with self._writing:
            for summary in self._repeats.settle():
                self._write(summary)
            self._write(text)

    def _write(self, text: str) -> None:
        with self._writing:
            self._clear()
            self.lines.write(text + "\n")
            self.lines.flush()
            self.redraw()

    def log(self, record: logging.LogRecord) -> None:
        """Show a warning logged during the run: its time, and repeats summarised."""
        with self._writing:
            text = self._repeats.add(record)
            if text is not None:
                self._write(text)

    @contextlib.contextmanager
    def capture_logs(self) -> Iterator[None]:
        """Show canarykit's warnings as lines (see `log`) while the block runs."""
        handler = _LogLines(self)
        target = logging.getLogger("canarykit")
        # With a handler of its own, logging's last-resort handler (unstamped, on stderr)
        # no longer shows the records; handlers an application set up still do.
        target.addHandler(handler)
        try:
            yield
        finally:
            target.removeHandler(handler)
            with self._writing:
                for summary in self._repeats.settle():
                    self._write(summary)

    def status_text(self) -> str:
        """The status line: phase, step, weight, and what the rollout waits for."""
        rollout = self.rollout
        state = rollout.state
        now = rollout.clock.now()
        steps = rollout.plan.steps
        parts = [rollout.key, state.phase.value.replace("_", " ")]
        if state.step < len(steps):
            parts.append(f"step {state.step + 1}/{len(steps)} {_step_text(steps[state.step])}")
        confirmed = state.confirmed
        parts.append("canary ?" if confirmed is None else f"canary {confirmed.canary_percent:g}%")
        if state.gate is not None and state.gate_since is not None:
            parts.append(f"waiting for {state.gate.value} for {_span(now - state.gate_since)}")
        elif state.phase is Phase.PAUSED:
            parts.append(f"paused: {shown(state.pause_reason or state.reason)}")
        elif state.step_deadline is not None and state.phase is Phase.PROGRESSING:
            parts.append(f"{_span(state.step_deadline - now)} left in the step")
        parts.append(f"running {_span(time.monotonic() - self.started)}")
        return " | ".join(parts)

    def redraw(self) -> None:
        """Draw the status line again (on a terminal only)."""
        if self.status is None:
            return
        # One row only: a wrapped status line could not be erased by "\r".
        text = self.status_text()[: max(10, _columns(self.status) - 1)]
        self.status.write(f"\r\x1b[K{text}")
        self.status.flush()
        self._shown = True

    async def refresh(self) -> None:
        """Redraw the status line every second, until cancelled."""
        while True:
            self.redraw()
            await anyio.sleep(_STATUS_EVERY)

    def _clear(self) -> None:
        if self.status is not None and self._shown:
            self.status.write("\r\x1b[K")
            self.status.flush()
            self._shown = False

    def close(self) -> None:
        """Erase the status line, leaving only the event lines."""
        with self._writing:
            self._clear()
            self.status = None

    def summary(self, outcome: RolloutOutcome, interrupted: str | None) -> None:
        """The closing lines: how the rollout ended and where traffic is."""
        word = {
            Phase.SUCCEEDED: "promoted",
            Phase.ROLLED_BACK: "rolled back",
            Phase.ABORTED: "aborted",
        }.get(outcome.phase, f"stopped {outcome.phase.value.replace('_', ' ')}")
        split = "unknown" if outcome.split is None else f"{outcome.split.canary_percent:g}%"
        why = f": {shown(outcome.reason)}" if outcome.reason not in ("", word) else ""
        after = f" ({interrupted})" if interrupted else ""
        self.line(f"outcome   {word}{after}{why}")
        took = _span(time.monotonic() - self.started)
        wanted_stable = outcome.rolled_back or outcome.phase is Phase.ROLLING_BACK
        wanted_stable = wanted_stable or outcome.state.rollback_pending
        if outcome.split is None or (wanted_stable and not outcome.split.is_stable_only):
            # Never "rolled back" alone when the router did not confirm stable.
            if outcome.split is None:
                where = "the router confirmed no split: where traffic is, is unknown"
            else:
                where = f"the router last confirmed canary {split}"
            self.line(f"          traffic NOT confirmed on stable: {where}; took {took}")
        else:
            self.line(f"          canary traffic at {split}; took {took}")


class _LogLines(logging.Handler):
    """A logging handler that hands canarykit's warnings to a `RunDisplay`."""

    def __init__(self, display: RunDisplay) -> None:
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.log(record)
        except Exception:  # a display that cannot write must not break the rollout
            self.handleError(record)


# Who a logger speaks for, in a summary line: "retrying Prometheus (...)".
_SOURCES = {
    "canarykit.metrics.prometheus": "Prometheus",
    "canarykit.notify": "a notifier",
}


@attrs.define
class _Repeat:
    """Warnings of one kind (one logger, one message template) since the last summary."""

    source: str
    first: float
    shown_at: float
    last_at: float
    last: str
    count: int = 1
    unshown: int = 0


class _Repeats:
    """Warnings summarised by kind: the first in full, then one line per `window` at most.

    `add` returns the line to show now (or None); `settle` returns a summary line for
    each kind that repeated since it was last shown, and forgets them all (called before
    every event line, so each summary sits where the retries happened).
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._kinds: dict[tuple[str, str], _Repeat] = {}

    def add(self, record: logging.LogRecord) -> str | None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its template
            message = str(record.msg)
        text = shown(message)
        now = record.created
        key = (record.name, str(record.msg))
        kind = self._kinds.get(key)
        if kind is None:
            source = _SOURCES.get(record.name, "canarykit")
            self._kinds[key] = _Repeat(
                source=source, first=now, shown_at=now, last_at=now, last=text
            )
            return f"{_stamp(now)}  {record.levelname.lower()}: {text}"
        kind.count += 1
        kind.last, kind.last_at = text, now
        if now - kind.shown_at < self.window:
            kind.unshown += 1
            return None
        kind.shown_at, kind.unshown = now, 0
        return f"{_stamp(now)}  retrying {kind.source} ({kind.count} tries so far, last: {text})"

    def settle(self) -> list[str]:
        lines = [
            f"{_stamp(kind.last_at)}  {kind.source}: {kind.count} tries from "
            f"{_stamp(kind.first)} to {_stamp(kind.last_at)}; last: {kind.last}"
            for kind in self._kinds.values()
            if kind.count > 1 and kind.unshown
        ]
        self._kinds.clear()
        return lines
