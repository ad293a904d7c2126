"""Operator commands for a running ``canarykit run``, and ``canarykit status``.

::

    canarykit promote POLICY.toml [--full]      # finish the step now (--full: promote)
    canarykit pause POLICY.toml [--reason TEXT]
    canarykit resume POLICY.toml
    canarykit abort POLICY.toml [--reason TEXT] # roll back to stable, end aborted
    canarykit status POLICY.toml                # the saved state, and who drives it

How it works. A command is a small JSON file that the command tool writes (atomically:
a temporary file, then a rename) into the rollout's inbox, ``<state_dir>/<name>.commands/``.
The ``canarykit run`` driving that rollout looks there every half second once it holds
the rollout's lease, hands each command to `Rollout` (`promote()`, `pause()`, ...),
writes the answer beside it (``<command>.done``: accepted, or refused and why) and
removes the command. The tool waits for the answer (``--wait``, 10 s) and exits 0 if the
command was accepted, 1 if it was refused or nobody answered (then it takes its command
back, so that no runner acts on it later), 2 for bad input. Each file is named after the
tool's process: the runner drops the commands and answers of tools that are gone (killed
while waiting), so a command is never acted on when nobody waits for its answer. (Process
ids are this host's: the file lease that keeps one runner per rollout is too.)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio

from ._errors import ConfigError, CorruptStateError, InvalidTransition
from ._policy import load_policy
from ._policy_run import Deployment
from ._runner import Rollout
from ._stores import FileStore

__all__ = [
    "COMMANDS",
    "CommandInbox",
    "add_control_commands",
    "add_location_arguments",
    "locate",
    "run_control",
    "serve_inbox",
]

# The commands, and what each does, for the help.
COMMANDS = {
    "promote": "finish the current step now and go on (--full: promote the canary now)",
    "pause": "hold the rollout at its current weight; analysis keeps watching",
    "resume": "carry on from a pause",
    "abort": "roll traffic back to stable and end the rollout as aborted",
}
_POLL = 0.5  # seconds between two looks at the inbox, by the runner and by a waiting tool


class CommandInbox:
    """The directory where operator commands for one rollout wait for its runner."""

    def __init__(self, state_dir: str | os.PathLike[str], name: str) -> None:
        self.directory = Path(state_dir) / f"{name}.commands"

    # -- the command tool's side

    def send(self, command: str, **options: Any) -> Path:
        """Leave `command` (with `options`) for the runner; the path that names it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{time.time_ns():020d}-{os.getpid()}"
        body = json.dumps({"command": command, **options}).encode()
        temporary = self.directory / f".{stem}.tmp"
        temporary.write_bytes(body)
        path = self.directory / f"{stem}.json"
        os.replace(temporary, path)  # the runner never sees half a command
        return path

    def wait(self, path: Path, timeout: float) -> dict[str, Any] | None:
        """The runner's answer to the command at `path`, or None (and it is taken back)."""
        answer_path = path.with_suffix(".done")
        deadline = time.monotonic() + timeout
        while True:
            answer = _read_json(answer_path)
            if answer is not None:
                answer_path.unlink(missing_ok=True)
                return answer
            if time.monotonic() >= deadline:
                path.unlink(missing_ok=True)  # taken back: nobody acts on it later
                # The runner may have answered just now: that answer counts.
                answer = _read_json(answer_path)
                answer_path.unlink(missing_ok=True)
                return answer
            time.sleep(min(_POLL / 5, max(0.0, deadline - time.monotonic())))

    # -- the runner's side

    def drop_orphans(self) -> int:
        """Remove the commands and answers of tools that are gone; how many files.

        A tool that is killed while it waits cannot take its command back: its command
        must not be acted on later, when nobody is there to hear the answer.
        """
        removed = 0
        for path in self._files("*"):
            if not _alive(_sender(path)):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def take(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """The commands waiting, oldest first (None for one that cannot be read)."""
        self.drop_orphans()
        return [(path, _read_json(path)) for path in sorted(self._files("*.json"))]

    def answer(self, path: Path, accepted: bool, reason: str) -> None:
        """Answer the command at `path`, then remove it."""
        body = json.dumps({"accepted": accepted, "reason": reason}).encode()
        temporary = path.with_suffix(".done.tmp")
        temporary.write_bytes(body)
        os.replace(temporary, path.with_suffix(".done"))
        path.unlink(missing_ok=True)

    def _files(self, pattern: str) -> list[Path]:
        try:
            return [p for p in self.directory.glob(pattern) if p.is_file()]
        except OSError:
            return []


def _sender(path: Path) -> int | None:
    """The process id of the tool that wrote `path` (``<time>-<pid>.<suffix>``)."""
    stem = path.name.lstrip(".").split(".", 1)[0]
    pid = stem.rpartition("-")[2]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int | None) -> bool:
    """True if process `pid` still runs (on this host: the lease is a lock on this host)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _apply(rollout: Rollout, command: dict[str, Any] | None) -> tuple[bool, str]:
    """Hand `command` to `rollout`: (accepted, why or the phase it left the rollout in)."""
    if command is None:
        return False, "the command file could not be read"
    name = command.get("command")
    reason = command.get("reason")
    given = (reason,) if isinstance(reason, str) and reason else ()  # else the default
    actions: dict[str, Callable[[], None]] = {
        "promote": rollout.promote_full if command.get("full") else rollout.promote,
        "pause": functools.partial(rollout.pause, *given),
        "resume": rollout.resume,
        "abort": functools.partial(rollout.abort, *given),
    }
    if not isinstance(name, str) or name not in actions:
        return False, f"unknown command {name!r}"
    try:
        actions[name]()
    except InvalidTransition as exc:
        return False, str(exc)
    return True, f"the rollout is {rollout.phase.value.replace('_', ' ')}"


async def serve_inbox(rollout: Rollout, inbox: CommandInbox, started: anyio.Event) -> None:
    """Hand the inbox's commands to `rollout` until cancelled, once `started` is set.

    `started` is set by the first event of the run: the runner holds the lease by then,
    so a second ``canarykit run`` of the same rollout, refused its lease, never takes
    (nor clears) the commands meant for the first.
    """
    await started.wait()
    while True:
        for path, command in inbox.take():
            accepted, reason = _apply(rollout, command)
            inbox.answer(path, accepted, reason)
        await anyio.sleep(_POLL)


# ---------------------------------------------------------------------------------------
# The command line


def add_control_commands(commands: Any) -> None:
    """Add ``promote``, ``pause``, ``resume``, ``abort`` and ``status`` to the subcommands."""
    for name, summary in COMMANDS.items():
        parser = commands.add_parser(
            name,
            help=f"{summary} (sent to the running `canarykit run`)",
            description=(
                f"Tell the `canarykit run` driving POLICY's rollout to {summary}. Exit code "
                "0 when it accepted the command, 1 when it refused it or did not answer, "
                "2 for bad input."
            ),
        )
        add_location_arguments(parser)
        if name == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip the remaining steps: promote now"
            )
        if name in ("pause", "abort"):
            parser.add_argument("--reason", default=None, help="why (shown in events)")
        parser.add_argument(
            "--wait",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="how long to wait for the runner's answer (default 10)",
        )
    status = commands.add_parser(
        "status",
        help="show a rollout's saved state and who drives it",
        description="Show the state `canarykit run` saved for POLICY's rollout.",
    )
    add_location_arguments(status)


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """POLICY.toml, ``--name`` and ``--state-dir``: which rollout, for run and the commands."""
    parser.add_argument("policy", metavar="POLICY.toml", help="the policy file")
    parser.add_argument(
        "--name",
        default=None,
        help="the rollout's name, its key in the state directory "
        "(default: [rollout] name, else the policy file's name without .toml)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the state and the lease live (default: [rollout] state_dir)",
    )


def locate(args: argparse.Namespace, deployment: Deployment) -> tuple[str, str]:
    """The rollout's name and state directory, from the arguments and the policy."""
    name = args.name or deployment.name or Path(args.policy).stem
    return name, args.state_dir or deployment.state_dir


def run_control(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``canarykit promote|pause|resume|abort|status``; return the exit code."""
    name, state_dir = locate(args, load_policy(args.policy).deployment)
    store = FileStore(state_dir)  # checks the name as a key
    try:
        store.path(name)
    except ConfigError as exc:
        raise ConfigError("--name", exc.value, exc.problem) from None
    if args.command == "status":
        return _status(store, name, out)
    if not (args.wait > 0 and args.wait < float("inf")):
        raise ConfigError("--wait", args.wait, "must be a finite number of seconds > 0")
    options: dict[str, Any] = {}
    if getattr(args, "full", False):
        options["full"] = True
    if getattr(args, "reason", None):
        options["reason"] = args.reason
    inbox = CommandInbox(state_dir, name)
    answer = inbox.wait(inbox.send(args.command, **options), args.wait)
    if answer is None:
        holder = store.lease(name).read_holder()
        who = "the lease file names no runner"
        if holder is not None:
            who = f"the lease was last taken by {holder.get('holder')} (pid {holder.get('pid')})"
        err.write(
            f"canarykit: no answer from a runner of {name!r} within {args.wait:g} s ({who}); "
            "the command was taken back\n"
        )
        return 1
    verdict = "accepted" if answer.get("accepted") else "refused"
    out.write(f"{args.command}: {verdict}: {answer.get('reason', '')}\n")
    return 0 if answer.get("accepted") else 1


def _status(store: FileStore, name: str, out: TextIO) -> int:
    from ._machine import RolloutState

    record = anyio.run(store.load, name)
    if record is None:
        out.write(f"{name}: nothing saved in {store.directory}\n")
        return 1
    if not isinstance(record.get("state"), dict):
        raise CorruptStateError(f"{store.path(name)}: the record holds no rollout state")
    state = RolloutState.from_json(record["state"])
    plan = record.get("plan") or {}
    steps = plan.get("steps") if isinstance(plan, dict) else None
    where = f"step {state.step + 1}" + (f"/{len(steps)}" if isinstance(steps, list) else "")
    weight = "unknown" if state.confirmed is None else f"{state.confirmed.canary_percent:g}%"
    lines = [
        f"rollout   {name} ({store.path(name)})",
        f"phase     {state.phase.value.replace('_', ' ')} at {where}; canary {weight}",
    ]
    if state.gate is not None:
        lines.append(f"gate      waiting for {state.gate.value}")
    if state.reason:
        lines.append(f"reason    {state.reason}")
    holder = store.lease(name).read_holder()
    if holder is not None:
        held = "released" if holder.get("released") else "held"
        lines.append(f"lease     {held} by {holder.get('holder')} (pid {holder.get('pid')})")
    out.write("\n".join(lines) + "\n")
    return 0
