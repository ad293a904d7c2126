"""The runners a kill -9 trial kills: one rollout on files, resumed by the next runner.

``python benchmarks/kill9_child.py run DIR [--pauses P ...] [--backend B]`` runs (or
resumes) the trial's rollout in this process: a `FileStore` in ``DIR/state``, a router
whose split and log of applies are files in DIR (`fault_harness.FileRouter`), the real
clock. See `fault_harness.kill9_child`.

``python benchmarks/kill9_child.py serve`` imports canarykit once and then forks one
runner per request, so that a runner starts in milliseconds rather than the half second
an interpreter needs to import canarykit; the kill -9 test and benchmarks/faults.py kill
the forked runners with SIGKILL. Requests and answers are JSON lines on stdin/stdout:

- ``{"op": "run", "dir": DIR, "pauses": [...], "backend": "asyncio"}`` -> ``{"pid": N}``
  (the runner's output goes to ``DIR/child.N.log``);
- ``{"op": "wait", "pid": N}`` -> ``{"pid": N, "exit": code}`` (0, or 130 after a
  Ctrl-C) or ``{"pid": N, "signal": number}``, once the runner has ended (and been
  reaped).

The server exits at the end of its input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import fault_harness  # from tests/helpers/, shared with the kill -9 test


def run_forked(directory: Path, pauses: list[float], backend: str) -> int:
    """Fork a runner; in the child, run the rollout and leave with os._exit."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        log = os.open(directory / f"child.{os.getpid()}.log", os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)  # sys.stdout and sys.stderr write to the log from here on
        code = fault_harness.kill9_child(directory, pauses, backend)
    except KeyboardInterrupt:  # Ctrl-C before the rollout's run() began
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        # Never return into the server's loop, and skip its atexit handlers and buffers.
        os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            directory = Path(request["dir"])
            pid = run_forked(directory, request["pauses"], request.get("backend", "asyncio"))
            answer: dict[str, int] = {"pid": pid}
        else:
            pid = int(request["pid"])
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                answer = {"pid": pid, "signal": os.WTERMSIG(status)}
            else:
                answer = {"pid": pid, "exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve")
    run = commands.add_parser("run")
    run.add_argument("directory", type=Path)
    run.add_argument("--pauses", type=float, nargs=5, default=[0.2] * 5)
    run.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    options = parser.parse_args()
    if options.command == "serve":
        serve()
    else:
        options.directory.mkdir(parents=True, exist_ok=True)
        sys.exit(fault_harness.kill9_child(options.directory, options.pauses, options.backend))


if __name__ == "__main__":
    main()
