"""``canarykit run``: a real rollout from a policy file, shown as it happens.

How it works. The policy's ``[router]``, ``[metrics]``, ``[hooks]`` and ``[[notify]]``
tables are built into their objects (`Deployment`), and a `Rollout` runs the plan with a
`FileStore` in the ``[rollout]`` state directory, keyed by the rollout's name. So running
the same command again after a crash, a reboot or a kill continues where the rollout
stopped, and the store's lease refuses a second runner of the same name.

Every event is printed as one line (time, phase, canary weight, what happened); free text
in it (a reason from an operator, a server or a webhook) has its control characters
escaped and is at most `canarykit._text.MAX_TEXT` characters long, so it cannot break
the line, forge another or move the cursor. When the
status stream (stderr) is a terminal, a status line below them is redrawn every second:
the step, the weight, the time left in the step or how long a gate has been waiting.
When it is not, the lines are all there is: plain text, fit for a CI log. With ``--json``
the lines go to stderr and stdout gets only the outcome, as one JSON object.

SIGINT (Ctrl-C) and SIGTERM (a CI runner stopping the job) cancel the run: the rollout
rolls traffic back to stable under its shielded scope (within ``rollback_timeout``) and
the command exits 130, unless the policy (``on_interrupt = "leave"``) or
``--leave-traffic`` says to leave traffic where it is (the state is saved, so running the
command again continues the rollout). A second signal while rolling back is reported,
not obeyed: the rollback has its own deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
import anyio.abc

from ._cli_control import CommandInbox, add_location_arguments, locate, serve_inbox
from ._errors import ConfigError
from ._events import RolloutEvent, RolloutOutcome, TimelineEntry
from ._machine import Phase
from ._plan import Analyze, Pause, SetHeaderRoutes, SetMirror, SetWeight, WaitForPromotion
from ._policy import Policy, format_duration, load_policy
from ._policy_run import check_plan_on_router
from ._runner import Rollout
from ._stores import FileStore
from ._text import shown

if TYPE_CHECKING:
    from .notify import Notifier

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_PAUSED",
    "EXIT_ROLLED_BACK",
    "RunDisplay",
    "add_run_command",
    "execute",
    "run_run",
]

EXIT_ROLLED_BACK = 3  # rolled back or aborted: traffic is back on stable
EXIT_PAUSED = 4  # stopped paused (a rollback not confirmed, a gate, ...): a person must look
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM: rolled back (or left, as told)

_STATUS_EVERY = 1.0  # seconds between two redraws of the status line


def add_run_command(commands: Any) -> None:
    """Add ``run`` to the command line's subcommands."""
    run = commands.add_parser(
        "run",
        help="run a real rollout from a policy file, showing its progress",
        description=(
            "Run POLICY's plan for real: move traffic through its [router], judge its "
            "[metrics] with its [decider], and call its [hooks] and [[notify]]. The state "
            "is saved under the rollout's name: run the same command again to continue "
            "after a crash. Exit code 0 promoted, 3 rolled back or aborted, 4 stopped "
            "paused, 130 interrupted (traffic rolled back unless told to leave it), "
            "2 bad input, 1 any other failure."
        ),
    )
    add_location_arguments(run)
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
    store = FileStore(state_dir)
    try:
        # The lease is the rollout name's and, when the router names what it controls,
        # that traffic target's too: two names or two state directories, one router, one
        # runner.
        lease = store.lease(name, target=_traffic_target(router))
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
        )
    except ConfigError as exc:
        if exc.field == "key":
            raise ConfigError("--name", exc.value, exc.problem) from None
        raise
    # An inbox others may write to would let them steer this rollout: refused before any
    # traffic moves (FileRefusedError says how to fix it).
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
    inbox: CommandInbox | None = None,
    json_outcome: bool = False,
    leaves_traffic: bool = False,
    heading: tuple[Policy, str, str] | None = None,
) -> int:
    """Run `rollout` (in a new event loop) showing its progress; return the exit code.

    `lines` gets the event lines, `status` (a terminal, or None) the status line and `out`
    the outcome (as JSON with `json_outcome`). Operator commands come from `inbox` (see
    `canarykit._cli_control`). SIGINT and SIGTERM cancel the run.
    """
    display = RunDisplay(rollout, lines, status, leaves_traffic=leaves_traffic)
    rollout.add_listener(display)
    if heading is not None:
        display.header(*heading)
    outcome, interrupted = anyio.run(_drive, rollout, display, list(notifiers), inbox)
    display.close()
    if json_outcome:
        data = {"name": rollout.key, "interrupted": interrupted}
        json.dump({**data, **outcome.to_json()}, out, indent=2)
        out.write("\n")
    else:
        display.summary(outcome, interrupted)
    if interrupted is not None:
        return EXIT_INTERRUPTED
    if outcome.phase is Phase.SUCCEEDED:
        return 0
    return EXIT_ROLLED_BACK if outcome.rolled_back else EXIT_PAUSED


async def _drive(
    rollout: Rollout,
    display: RunDisplay,
    notifiers: list[Notifier],
    inbox: CommandInbox | None,
) -> tuple[RolloutOutcome, str | None]:
    """Run the rollout until it ends or a signal cancels it; the outcome and the signal."""
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
            name = signal.Signals(signum).name
            if interrupted:
                display.line(f"{name} again: the rollback has its own deadline; still waiting")
                continue
            interrupted.append(name)
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
    ) -> None:
        self.rollout = rollout
        self.lines = lines
        self.status = status
        self.leaves_traffic = leaves_traffic  # a cancelled run leaves traffic where it is
        self.started = time.monotonic()
        self._shown = False  # a status line is on screen

    def header(self, policy: Policy, path: str, state_dir: str) -> None:
        """The lines before the rollout starts: what runs, where its state lives."""
        plan = policy.plan
        weights = " -> ".join(f"{w:g}%" for w in plan.weights) or "no weight steps"
        where = f"policy {shown(path)}; state in {shown(state_dir)}"
        self.line(f"rollout   {self.rollout.key} ({where})")
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
        """Print `text` as a line above the status line."""
        self._clear()
        self.lines.write(text + "\n")
        self.lines.flush()
        self.redraw()

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
        self.line(f"          canary traffic at {split}; took {took}")
