"""Forks `fencing_runner` processes on request, so a runner starts in milliseconds.

``python tests/helpers/runner_server.py`` imports canarykit and tests/helpers/fencing_runner.py
once, then reads JSON requests, one per line, on stdin and answers each with one line:

- ``{"op": "run", "argv": [...], "out": PATH}`` -> ``{"pid": N}``: forks a runner that
  runs ``fencing_runner.py`` with `argv` (its arguments), its stdout and stderr going to
  PATH (the last line is the runner's JSON result). ``"postgres": DSN`` in the request
  runs it on a `PostgresStore` on DSN (``--dsn``, tables named by ``--prefix``) in place
  of the `EtcdStore` on ``--endpoints``.
- ``{"op": "ended"}`` -> ``{"ended": {"<pid>": {"exit": code} | {"signal": number}}}``:
  the runners that ended since the last ``ended`` request (reaped without waiting).

Each runner is a separate process with its own holder id, store object and connections,
as on another host; the test signals it by its pid (SIGKILL, SIGSTOP, SIGCONT). The
server exits at the end of its input.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fencing_runner  # the runner the fencing tests use


def _without_endpoints(argv: list[str]) -> list[str]:
    """`argv` without its ``--endpoints URLS`` (a PostgreSQL runner has ``--dsn``)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--endpoints":
            skip = True
        elif not arg.startswith("--endpoints="):
            kept.append(arg)
    return kept


def _child(argv: list[str], out: str, postgres: str | None) -> None:
    code = 1
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        if postgres is not None:
            argv = [*_without_endpoints(argv), "--dsn", postgres]
        code = fencing_runner.cli(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)  # never return into the server's loop


def _reap() -> dict[str, dict[str, int]]:
    ended: dict[str, dict[str, int]] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        if os.WIFSIGNALED(status):
            ended[str(pid)] = {"signal": os.WTERMSIG(status)}
        else:
            ended[str(pid)] = {"exit": os.WEXITSTATUS(status)}


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["argv"], request["out"], request.get("postgres"))
            answer: dict[str, Any] = {"pid": pid}
        else:
            answer = {"ended": _reap()}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
