"""Operator commands for a running ``canarykit run``, and ``canarykit status``.

::

    canarykit promote POLICY.toml [--full]      # finish the step now (--full: promote)
    canarykit pause POLICY.toml [--reason TEXT]
    canarykit resume POLICY.toml
    canarykit abort POLICY.toml [--reason TEXT] # roll back to stable, end aborted
    canarykit status POLICY.toml                # the saved state, its history, who drives it

How it works. A command is a small JSON file that the command tool writes (atomically:
a temporary file, then a rename) into the rollout's inbox, ``<state_dir>/<name>.commands/``.
The ``canarykit run`` driving that rollout looks there every half second once it holds
the rollout's lease, hands each command to `Rollout` (`promote()`, `pause()`, ...),
writes the answer beside it (``<command>.done``: accepted, or refused and why) and
removes the command. The tool waits for the answer (``--wait``, 10 s) and exits 0 if the
command was accepted, 1 if it was refused or nobody answered (then it takes its command
back, so that no runner acts on it later), 2 for bad input, 5 when the rollout has
already finished (it says how and when; nothing is sent). Each file is named after the
tool's process: the runner drops the commands and answers of tools that are gone (killed
while waiting), so a command is never acted on when nobody waits for its answer. (Process
ids are this host's: the file lease that keeps one runner per rollout is too.)

With a shared store (``[state] backend = "etcd"`` or ``"postgres"``) there is no
inbox directory: the tool sends the command through the store (``store.commands(key)``,
`StoreCommands` on the runner's side), from any host that reaches it. Only the runner
holding the rollout's lease can take commands, and it answers each under its holder
name. When nobody holds the lease the tool says so at once and sends nothing (exit 1).
A command sent cannot be taken back from the store, so it carries the time its sender
stops waiting (``expires_at``); a runner that takes it after that time refuses it.
``status`` reads the saved state, the history and the lease holder from the store.

The inbox trusts only its owner: it is created 0700 and ignored (with a warning) when
others may write to it; command files are read without following links, only when
regular and at most 64 KiB, and parsed with a nesting limit. A command that cannot be
used is answered as refused and moved aside (``<command>.bad``), so no file can stop the
runner. A reason is escaped and cut (`canarykit._text.shown`) before the rollout keeps
it; answers nobody collects are removed after a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import anyio
import anyio.to_thread

from .._errors import ConfigError, CorruptStateError, InvalidTransition
from .._files import parse_json, private_dir, read_regular, write_private
from .._lease import pid_alive
from .._machine import Phase, RolloutState
from .._runner import Rollout
from .._safe import check_name
from .._stores import FileStore
from .._text import shown
from ..policy import load_policy
from ..policy._deployment import Deployment

__all__ = [
    "COMMANDS",
    "CommandInbox",
    "CommandSource",
    "StoreCommands",
    "add_control_commands",
    "add_location_arguments",
    "finished_words",
    "locate",
    "run_control",
    "serve_inbox",
    "utc_time",
]

logger = logging.getLogger("canarykit")

# The commands, and what each does, for the help.
COMMANDS = {
    "promote": "finish the current step now and go on (--full: promote the canary now)",
    "pause": "hold the rollout at its current weight; analysis keeps watching",
    "resume": "carry on from a pause",
    "abort": "roll traffic back to stable and end the rollout as aborted",
}
_POLL = 0.5  # seconds between two looks at the inbox, by the runner and by a waiting tool
# A command or an answer is a few words and a reason of at most MAX_TEXT characters; a
# bigger file is not one.
_FILE_LIMIT = 64 * 1024
# A waiting tool reads its answer within a tenth of a second: one still there after a
# minute (or a temporary file that old) has nobody waiting for it.
_STALE_AFTER = 60.0
# Commands that could not be used are kept aside (``*.bad``) this long, for a look.
_BAD_KEPT_FOR = 24 * 3600.0
# Seconds between two sweeps of the whole inbox; between them only commands are read.
_SWEEP_EVERY = 5.0
_TAKE_AT_MOST = 100  # commands handled per look, so a flood cannot stall the runner


class CommandInbox:
    """The directory where operator commands for one rollout wait for its runner.

    It is private (0700, like the state directory that holds it); each command and
    answer is a regular file of at most 64 KiB, written atomically through an exclusive
    temporary file and read without following links. A command that cannot be used (not
    JSON, nested too deep, not a regular file) is answered as refused and kept aside as
    ``<command>.bad`` for a day; answers nobody collects are removed after a minute.
    """

    def __init__(self, state_dir: str | os.PathLike[str], name: str) -> None:
        self.state_dir = Path(state_dir)
        self.directory = self.state_dir / f"{name}.commands"
        self._swept_at = -_SWEEP_EVERY

    def prepare(self) -> Path:
        """Create the state directory and the inbox private, or refuse them if not private.

        `FileRefusedError` (saying how to fix it) when other users may write to either.
        """
        private_dir(self.state_dir)
        return private_dir(self.directory, what="command inbox")

    # -- the command tool's side

    def send(self, command: str, **options: Any) -> Path:
        """Leave `command` (with `options`) for the runner; the path that names it."""
        self.prepare()
        stem = f"{time.time_ns():020d}-{os.getpid()}"
        body = json.dumps({"command": command, **options}).encode()
        path = self.directory / f"{stem}.json"
        # The runner never sees half a command (write_private renames a whole file).
        write_private(path, body, fsync=False, what="command file")
        return path

    def wait(self, path: Path, timeout: float) -> dict[str, Any] | None:
        """The runner's answer to the command at `path`, or None (and it is taken back)."""
        answer_path = path.with_suffix(".done")
        deadline = time.monotonic() + timeout
        while True:
            answer = _read_answer(answer_path)
            if answer is not None:
                answer_path.unlink(missing_ok=True)
                return answer
            if time.monotonic() >= deadline:
                path.unlink(missing_ok=True)  # taken back: nobody acts on it later
                # The runner may have answered just now: that answer counts.
                answer = _read_answer(answer_path)
                answer_path.unlink(missing_ok=True)
                return answer
            time.sleep(min(_POLL / 5, max(0.0, deadline - time.monotonic())))

    # -- the runner's side

    def drop_orphans(self) -> int:
        """Remove what nobody waits for any more; how many files.

        The commands, answers and temporary files of tools that are gone (a tool killed
        while it waits cannot take its command back, and its command must not be acted
        on when nobody is there to hear the answer), answers and temporary files older
        than a minute, and commands kept aside for more than a day.
        """
        now = time.time()
        removed = 0
        for entry in self._entries():
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            name = entry.name
            if name.endswith(".bad"):
                stale = age > _BAD_KEPT_FOR
            else:
                stale = not pid_alive(_sender(name)) or (
                    not name.endswith(".json") and age > _STALE_AFTER
                )
            if stale and _remove(Path(entry.path)):
                removed += 1
        self._swept_at = time.monotonic()
        return removed

    def take(self) -> list[tuple[Path, dict[str, Any] | str]]:
        """The commands waiting, oldest first: each its data, or why it cannot be used.

        `FileRefusedError` when the inbox exists but other users may write to it: its
        commands might be anyone's.
        """
        if not os.path.lexists(self.directory):
            return []
        self.prepare()
        if time.monotonic() - self._swept_at >= _SWEEP_EVERY:
            self.drop_orphans()
        names = sorted(
            entry.name
            for entry in self._entries()
            if entry.name.endswith(".json") and not entry.name.startswith(".")
        )
        taken: list[tuple[Path, dict[str, Any] | str]] = []
        for name in names[:_TAKE_AT_MOST]:
            path = self.directory / name
            if not pid_alive(_sender(name)):  # its tool is gone: nobody hears the answer
                _remove(path)
                continue
            try:
                data = read_regular(path, limit=_FILE_LIMIT, what="command file")
                command = parse_json(data, what=f"command file {path}")
            except FileNotFoundError:  # taken back meanwhile
                continue
            except (OSError, ValueError) as exc:  # FileRefusedError, bad bytes, too deep
                taken.append((path, str(exc)))
                continue
            if not isinstance(command, dict):
                taken.append((path, f"command file {path}: not a JSON object"))
                continue
            taken.append((path, command))
        return taken

    def answer(self, path: Path, accepted: bool, reason: str, *, bad: bool = False) -> None:
        """Answer the command at `path`, then remove it (`bad`: keep it aside as ``.bad``)."""
        body = json.dumps({"accepted": accepted, "reason": shown(reason)}).encode()
        try:
            write_private(path.with_suffix(".done"), body, fsync=False, what="answer file")
        finally:
            # Even unanswered, a command handled once is never handled again.
            if bad:
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_suffix(".bad"))
            _remove(path)

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as entries:
                return list(entries)
        except OSError:
            return []


def _sender(name: str) -> int | None:
    """The process id of the tool that wrote file `name` (``<time>-<pid>.<suffix>``)."""
    stem = name.lstrip(".").split(".", 1)[0]
    pid = stem.rpartition("-")[2]
    return int(pid) if pid.isdigit() and len(pid) <= 10 else None


def _remove(path: Path) -> bool:
    """Remove a file, link, FIFO or empty directory planted in the inbox; True if gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError:  # a directory (EISDIR on Linux, EPERM on macOS)
        try:
            path.rmdir()
        except OSError:
            return False
    return True


def _read_answer(path: Path) -> dict[str, Any] | None:
    """The runner's answer at `path`, None while there is none."""
    try:
        answer = parse_json(read_regular(path, limit=_FILE_LIMIT, what="answer file"), what="")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"accepted": False, "reason": f"the answer could not be read: {exc}"}
    if not isinstance(answer, dict):
        return {"accepted": False, "reason": "the answer could not be read"}
    return answer


def _apply(rollout: Rollout, command: dict[str, Any] | str) -> tuple[bool, str]:
    """Hand `command` to `rollout`: (accepted, why or the phase it left the rollout in)."""
    if isinstance(command, str):
        return False, f"the command could not be used: {command}"
    name = command.get("command")
    reason = command.get("reason")
    # Free text from a file: escaped and cut before the rollout keeps or shows it.
    given = (shown(reason),) if isinstance(reason, str) and reason else ()  # else the default
    actions: dict[str, Callable[[], None]] = {
        "promote": rollout.promote_full if command.get("full") is True else rollout.promote,
        "pause": functools.partial(rollout.pause, *given),
        "resume": rollout.resume,
        "abort": functools.partial(rollout.abort, *given),
    }
    if not isinstance(name, str) or name not in actions:
        return False, f"unknown command {shown(repr(name), limit=100)}"
    try:
        actions[name]()
    except InvalidTransition as exc:
        return False, str(exc)
    return True, f"the rollout is {rollout.phase.value.replace('_', ' ')}"


class CommandSource(Protocol):
    """Where a runner finds its operator commands: a file inbox, or a store's commands.

    `take` returns the commands waiting, oldest first, each with a ticket (what `answer`
    needs to answer it) and its data (``{"command": "pause", "reason": ...}``), or, for a
    command that cannot be used, why; `answer` answers one and makes sure it is never
    taken again (`bad`: it could not be used). `serve_inbox` is the one loop that serves
    any of them.
    """

    async def take(self) -> list[tuple[Any, dict[str, Any] | str]]:
        """The commands waiting, oldest first: (ticket, data or why it cannot be used)."""
        ...

    async def answer(self, ticket: Any, accepted: bool, reason: str, *, bad: bool) -> None:
        """Answer the command `ticket` names: accepted, or refused and why."""
        ...


class _InboxSource:
    """A `CommandInbox` as a `CommandSource`: its file work runs in a worker thread."""

    def __init__(self, inbox: CommandInbox) -> None:
        self.inbox = inbox

    async def take(self) -> list[tuple[Any, dict[str, Any] | str]]:
        taken = await anyio.to_thread.run_sync(self.inbox.take, abandon_on_cancel=True)
        return list(taken)

    async def answer(self, ticket: Any, accepted: bool, reason: str, *, bad: bool) -> None:
        answer = functools.partial(self.inbox.answer, ticket, accepted, reason, bad=bad)
        await anyio.to_thread.run_sync(answer, abandon_on_cancel=True)


class StoreCommands:
    """A store's operator commands (``store.commands(key)``) as a `CommandSource`.

    For stores shared by several hosts (`EtcdStore`, `PostgresStore`): only the holder of
    the rollout's lease can take the commands and answer them, under its holder name. A
    command carries the time its sender stops waiting (``expires_at``, seconds since the
    epoch, on the sender's clock); one taken after that time is refused, not acted on,
    since nobody is there to hear the answer (the command tool cannot take a command
    back from the store once it has been sent).
    """

    def __init__(self, store: Any, key: str) -> None:
        self.store = store
        self.key = key
        self.commands = store.commands(key)

    async def take(self) -> list[tuple[Any, dict[str, Any] | str]]:
        taken: list[tuple[Any, dict[str, Any] | str]] = []
        now = time.time()
        for ident, command, options in await self.commands.take():
            expires = options.get("expires_at")
            number = isinstance(expires, (int, float)) and not isinstance(expires, bool)
            if number and now > expires:
                why = (
                    f"{shown(command, limit=100)} came after its sender stopped waiting "
                    f"(at {utc_time(expires)}): not acted on"
                )
                taken.append((ident, why))
                continue
            taken.append((ident, {**options, "command": command}))
        return taken

    async def answer(self, ticket: Any, accepted: bool, reason: str, *, bad: bool) -> None:
        await self.commands.answer(ticket, accepted, shown(reason))

    def __repr__(self) -> str:
        return f"<StoreCommands of {self.key!r} in {self.store!r}>"


async def serve_inbox(
    rollout: Rollout, inbox: CommandInbox | CommandSource, started: anyio.Event
) -> None:
    """Hand the commands of `inbox` to `rollout` until cancelled, once `started` is set.

    `inbox` is a `CommandInbox` (files) or any `CommandSource` (`StoreCommands`).
    `started` is set by the first event of the run: the runner holds the lease by then,
    so a second ``canarykit run`` of the same rollout, refused its lease, never takes
    (nor clears) the commands meant for the first. Nothing in the inbox can stop the
    runner: a command that cannot be used is answered as refused, and an inbox that is
    not private (or a store that cannot be reached) is ignored, with a warning, until it
    can be used again.
    """
    source = _InboxSource(inbox) if isinstance(inbox, CommandInbox) else inbox
    await started.wait()
    warned = ""
    while True:
        try:
            taken = await source.take()
        except Exception as exc:  # not private, cannot be read, the store is unreachable
            if str(exc) != warned:
                warned = str(exc)
                logger.warning("canarykit: operator commands are ignored: %s", shown(exc))
            taken = []
        else:
            warned = ""
        for ticket, command in taken:
            try:
                accepted, reason = _apply(rollout, command)
            except Exception as exc:  # a rollout that refuses a command some other way
                accepted, reason = False, f"the command failed: {exc}"
            bad = isinstance(command, str)
            try:
                await source.answer(ticket, accepted, reason, bad=bad)
            except Exception as exc:
                logger.warning("canarykit: could not answer %s: %s", ticket, shown(exc))
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
    """The rollout's name and state directory, from the arguments and the policy.

    ``--state-dir`` is refused when the policy keeps its state elsewhere (``[state]
    backend``): it would name files nothing reads.
    """
    name = args.name or deployment.name or Path(args.policy).stem
    if args.state_dir and deployment.state_backend != "file":
        raise ConfigError(
            "--state-dir",
            args.state_dir,
            f"is for the file backend: this policy keeps its state in "
            f"{deployment.state_backend} ([state] backend)",
        )
    return name, args.state_dir or deployment.state_dir


def run_control(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``canarykit promote|pause|resume|abort|status``; return the exit code."""
    deployment = load_policy(args.policy).deployment
    name, state_dir = locate(args, deployment)
    if deployment.state_backend != "file":
        try:
            check_name("key", name)
        except ConfigError as exc:
            raise ConfigError("--name", exc.value, exc.problem) from None
        _check_wait(args)
        return anyio.run(_control_by_store, deployment.build_store(), name, args, out, err)
    store = FileStore(state_dir)  # checks the name as a key
    try:
        store.path(name)
    except ConfigError as exc:
        raise ConfigError("--name", exc.value, exc.problem) from None
    if args.command == "status":
        return _status(store, name, out)
    _check_wait(args)
    options = _options(args)
    finished = _finished_record(store, name)
    if finished is not None:
        out.write(_finished_command(args.command, *finished) + "\n")
        return EXIT_NOTHING_TO_DO
    inbox = CommandInbox(state_dir, name)
    answer = inbox.wait(inbox.send(args.command, **options), args.wait)
    if answer is None:
        finished = _finished_record(store, name, unless_held=False)
        if finished is not None:  # the rollout ended while the command waited
            out.write(_finished_command(args.command, *finished) + "\n")
            return EXIT_NOTHING_TO_DO
        err.write(
            f"canarykit: no answer from a runner of {name!r} within {args.wait:g} s "
            f"({_last_holder(store, name)}); the command was taken back\n"
        )
        return 1
    accepted = answer.get("accepted") is True
    verdict = "accepted" if accepted else "refused"
    out.write(f"{args.command}: {verdict}: {shown(answer.get('reason', ''))}\n")
    return 0 if accepted else 1


def _check_wait(args: argparse.Namespace) -> None:
    wait = getattr(args, "wait", None)
    if wait is not None and not (wait > 0 and wait < float("inf")):
        raise ConfigError("--wait", wait, "must be a finite number of seconds > 0")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options from its arguments: ``full``, ``reason``."""
    options: dict[str, Any] = {}
    if getattr(args, "full", False):
        options["full"] = True
    if getattr(args, "reason", None):  # its length is checked with the arguments
        options["reason"] = args.reason
    return options


# ---------------------------------------------------------------------------------------
# Commands through a store shared by several hosts (etcd, PostgreSQL)

# After its --wait, the tool reads once more for an answer this much later: a runner may
# have taken the command just before it expired and be writing its answer.
_ANSWER_GRACE = 1.0


async def _control_by_store(
    store: Any, name: str, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``canarykit promote|...|status`` through `store`, from any host that reaches it."""
    async with store:
        if args.command == "status":
            return await _store_status(store, name, out)
        options = _options(args)
        finished = await _store_finished(store, name)
        holder = await _live_holder(store, name)
        if finished is not None and holder is None:
            out.write(_finished_command(args.command, *finished) + "\n")
            return EXIT_NOTHING_TO_DO
        if holder is None:
            # Not sent: a runner starting later must not act on a command nobody waits for.
            err.write(
                f"canarykit: no runner holds the lease of {name}: nothing will act on this "
                f"command (not sent; is `canarykit run` running with this policy?)\n"
            )
            return 1
        # Once sent, a command cannot be taken back from the store: it says when its
        # sender stops waiting, and a runner refuses it after that time.
        options["expires_at"] = time.time() + args.wait
        commands = store.commands(name)
        ident = await commands.send(args.command, options)
        answer = await commands.wait(ident, args.wait + _ANSWER_GRACE)
        if answer is None:
            finished = await _store_finished(store, name)
            if finished is not None:  # the rollout ended while the command waited
                out.write(_finished_command(args.command, *finished) + "\n")
                return EXIT_NOTHING_TO_DO
            now = await _live_holder(store, name)
            who = "no runner holds its lease now" if now is None else _holder_words(now)
            err.write(
                f"canarykit: no answer from the runner of {name!r} within {args.wait:g} s "
                f"({who}); the command expired at {utc_time(options['expires_at'])}: a "
                "runner that takes it later refuses it\n"
            )
            return 1
    accepted = answer.get("accepted") is True
    verdict = "accepted" if accepted else "refused"
    by = answer.get("holder")
    who = f" by {shown(by, limit=200)}" if isinstance(by, str) else ""
    out.write(f"{args.command}: {verdict}{who}: {shown(answer.get('reason', ''))}\n")
    return 0 if accepted else 1


async def _live_holder(store: Any, name: str) -> dict[str, Any] | None:
    """Who holds `name`'s lease now, or None when nobody does (or its holder is overdue)."""
    holder = await store.holder_of(name)
    if not isinstance(holder, dict) or holder.get("overdue"):
        return None
    return holder


def _holder_words(holder: Mapping[str, Any]) -> str:
    """``deploy-7:4711:9f2c (pid 4711 on deploy-7); token 812, expires in 12 s``."""
    words = shown(holder.get("holder"), limit=200)
    if holder.get("pid") is not None or holder.get("host") is not None:
        words += (
            f" (pid {shown(holder.get('pid'), limit=20)} on {shown(holder.get('host'), limit=200)})"
        )
    left = holder.get("ttl_left", holder.get("expires_in"))
    extra = [f"token {shown(holder.get('token'), limit=30)}"]
    if isinstance(left, (int, float)) and not isinstance(left, bool):
        extra.append(f"expires in {max(0.0, float(left)):.0f} s unless renewed")
    return f"{words}; {', '.join(extra)}"


async def _store_finished(store: Any, name: str) -> tuple[RolloutState, str | None] | None:
    """The saved state and release when `name`'s rollout in `store` has finished."""
    try:
        record = await store.load(name)
        state = RolloutState.from_json(record["state"]) if isinstance(record, dict) else None
    except Exception:  # damaged or unreadable: the runner (or status) says so
        return None
    if state is None or not state.is_terminal:
        return None
    release = record.get("release") if isinstance(record, dict) else None
    return state, release if isinstance(release, str) else None


async def _store_status(store: Any, name: str, out: TextIO) -> int:
    """``canarykit status`` for a rollout kept in a shared store."""
    record = await store.load(name)
    try:
        history = _history_words(await store.history(name))
    except Exception as exc:  # the history cannot be read: said, not fatal
        history = [f"history   cannot be read: {shown(exc)}"]
    try:
        holder = await store.holder_of(name)
    except Exception as exc:
        lease = f"unknown: {shown(exc)}"
    else:
        lease = _store_lease_line(holder)
    return _write_status(name, repr(store), record, lease, history, out)


def _store_lease_line(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "not held: no runner drives it now"
    if holder.get("overdue"):
        return f"overdue: {_holder_words(holder)} stopped renewing it; another runner may take it"
    return f"held by {_holder_words(holder)}"


EXIT_NOTHING_TO_DO = 5  # as for `canarykit run`: the rollout had finished

_ENDED = {
    Phase.SUCCEEDED: ("promoted", "succeeded"),
    Phase.ROLLED_BACK: ("rolled back", "was rolled back"),
    Phase.ABORTED: ("aborted", "was aborted"),
}


def utc_time(when: float | None, *, now: float | None = None) -> str:
    """`when` (seconds since the epoch) for people: ``14:03:10 UTC`` today, else with the date."""
    if when is None:
        return "an unknown time"
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
    if time.strftime("%Y-%m-%d", time.gmtime(when)) == day:
        return time.strftime("%H:%M:%S UTC", time.gmtime(when))
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def finished_words(state: RolloutState, *, key: str, release: str | None = None) -> str:
    """How a finished rollout ended and when, as a rerun says it: nothing to do."""
    word = _ENDED.get(state.phase, (state.phase.value.replace("_", " "), ""))[0]
    who = f"release {shown(release, limit=200)}" if release else f"the last rollout of {key}"
    return f"{who} finished: {word} at {utc_time(state.finished_at)}, nothing to do"


def _finished_command(command: str, state: RolloutState, release: str | None) -> str:
    """``pause: the rollout already succeeded at 14:03:10 UTC (release v42); nothing to pause``."""
    verb = _ENDED.get(state.phase, ("", "ended"))[1]
    which = f" (release {shown(release, limit=200)})" if release else ""
    return (
        f"{command}: the rollout already {verb} at {utc_time(state.finished_at)}{which}; "
        f"nothing to {command}"
    )


def _finished_record(
    store: FileStore, name: str, *, unless_held: bool = True
) -> tuple[RolloutState, str | None] | None:
    """The saved state and release when `name`'s rollout has finished, else None.

    With `unless_held`, None also while a live runner holds the lease: it may be starting
    the next release, and the command is its to answer.
    """
    try:
        record = anyio.run(store.load, name)
        state = RolloutState.from_json(record["state"]) if isinstance(record, dict) else None
    except Exception:  # damaged or unreadable: the runner (or status) says so
        return None
    if state is None or not state.is_terminal:
        return None
    if unless_held and _held_by_live_runner(store, name):
        return None
    release = record.get("release") if isinstance(record, dict) else None
    return state, release if isinstance(release, str) else None


def _held_by_live_runner(store: FileStore, name: str) -> bool:
    try:
        holder = store.lease(name).read_holder()
    except OSError:
        return False
    return holder is not None and not holder.get("released") and not holder.get("stale")


def _last_holder(store: FileStore, name: str) -> str:
    """Who last held `name`'s lease, for a command nobody answered."""
    try:
        holder = store.lease(name).read_holder()
    except OSError as exc:  # FileRefusedError: a link or a FIFO in its place
        return f"the lease file cannot be read: {shown(exc)}"
    if holder is None:
        return "the lease file names no runner"
    gone = "; that process is gone" if holder.get("stale") else ""
    return (
        f"the lease was last taken by {shown(holder.get('holder'), limit=200)} "
        f"(pid {shown(holder.get('pid'), limit=20)}){gone}"
    )


def _status(store: FileStore, name: str, out: TextIO) -> int:
    record = anyio.run(store.load, name)
    if record is None:
        out.write(f"{name}: nothing saved in {store.directory.absolute()}\n")
        history = _history_lines(store, name)
        if history:
            out.write("\n".join(history) + "\n")
        return 1
    if not isinstance(record.get("state"), dict):
        raise CorruptStateError(f"{store.path(name)}: the record holds no rollout state")
    where = str(store.path(name).absolute())
    return _write_status(
        name, where, record, _lease_line(store, name), _history_lines(store, name), out
    )


def _write_status(
    name: str,
    kept_in: str,
    record: dict[str, Any] | None,
    lease: str,
    history: list[str],
    out: TextIO,
) -> int:
    """The lines of ``canarykit status``: the saved state of `name` (kept in `kept_in`)."""
    if record is None:
        out.write(
            "\n".join([f"{name}: nothing saved in {kept_in}", f"lease     {lease}", *history])
        )
        out.write("\n")
        return 1
    if not isinstance(record.get("state"), dict):
        raise CorruptStateError(f"{kept_in}: the record of {name} holds no rollout state")
    state = RolloutState.from_json(record["state"])
    plan = record.get("plan") or {}
    steps = plan.get("steps") if isinstance(plan, dict) else None
    where = _step_words(state, len(steps) if isinstance(steps, list) else None)
    weight = "unknown" if state.confirmed is None else f"{state.confirmed.canary_percent:g}%"
    lines = [f"rollout   {name} ({kept_in})"]
    release = record.get("release")
    if isinstance(release, str):
        lines.append(f"release   {shown(release, limit=200)}")
    lines.append(f"phase     {state.phase.value.replace('_', ' ')} at {where}; canary {weight}")
    if state.is_terminal:
        lines.append(f"finished  {utc_time(state.finished_at)}")
        lines.append(f"traffic   {_traffic_words(state)}")
    if state.gate is not None:
        lines.append(f"gate      waiting for {state.gate.value}")
    if state.reason:
        # Free text, perhaps from a command file or a server: shown escaped, one line.
        lines.append(f"reason    {shown(state.reason)}")
    lines.append(f"lease     {lease}")
    lines += history
    out.write("\n".join(lines) + "\n")
    return 0


def _step_words(state: RolloutState, count: int | None) -> str:
    """``step 3/8``; never past the step count: ``step 8/8 (all done)`` once they are."""
    if count is None:
        return f"step {state.step + 1}"
    if state.step >= count:
        return f"step {count}/{count} (all done)"
    return f"step {state.step + 1}/{count}"


def _traffic_words(state: RolloutState) -> str:
    """Where a finished rollout left traffic, saying only what the router confirmed."""
    confirmed = state.confirmed
    if state.phase is Phase.SUCCEEDED:
        if confirmed is None:
            return "unknown: the router confirmed no split"
        return f"canary {confirmed.canary_percent:g}%, as the router confirmed"
    if confirmed is not None and confirmed.is_stable_only:
        return "all on stable, as the router confirmed"
    if confirmed is None:
        return "NOT confirmed on stable: the router confirmed no split (unknown)"
    return (
        f"NOT confirmed on stable: the router last confirmed canary {confirmed.canary_percent:g}%"
    )


def _history_lines(store: FileStore, name: str) -> list[str]:
    """The rollouts of earlier releases, newest first: release, how it ended, when."""
    try:
        records = anyio.run(store.history, name)
    except Exception as exc:  # the history directory cannot be used: said, not fatal
        return [f"history   cannot be read: {shown(exc)}"]
    return _history_words(records)


def _history_words(records: list[dict[str, Any]]) -> list[str]:
    """One line per archived record, newest first (as `history` returns them)."""
    lines: list[str] = []
    for record in records:
        lines.append(f"{'history' if not lines else '':<10}{_history_entry(record)}")
    return lines


def _history_entry(record: Mapping[str, Any]) -> str:
    if "damaged" in record:
        return f"(damaged: {shown(record.get('damaged'), limit=300)})"
    release = record.get("release")
    which = shown(release, limit=200) if isinstance(release, str) else "(no release id)"
    try:
        state = RolloutState.from_json(record["state"])
    except Exception as exc:
        return f"{which}: (unreadable state: {shown(exc, limit=200)})"
    word = _ENDED.get(state.phase, (state.phase.value.replace("_", " "), ""))[0]
    traffic = "" if state.phase is Phase.SUCCEEDED else f"; traffic {_traffic_words(state)}"
    return f"{which}: {word} at {utc_time(state.finished_at)}{traffic}"


def _lease_line(store: FileStore, name: str) -> str:
    """Who drives the rollout, by its lock file: held, released, or stale (holder gone)."""
    try:
        holder = store.lease(name).read_holder()
    except OSError as exc:  # FileRefusedError: a link or a FIFO in its place
        return f"unknown: {shown(exc)}"
    if holder is None:
        return "never taken"
    who = (
        f"{shown(holder.get('holder'), limit=200)} (pid {shown(holder.get('pid'), limit=20)} "
        f"on {shown(holder.get('host'), limit=200)})"
    )
    if holder.get("released"):
        return f"released by {who}"
    if holder.get("stale"):
        return f"stale: taken by {who}, whose process is gone"
    return f"held by {who}"
