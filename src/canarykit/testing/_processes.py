"""Start and stop real servers (nginx, HAProxy, Prometheus, demo apps) for integration tests.

Every server runs in the foreground as a child process, on loopback, on a free port,
with all its files in a directory the caller owns. Starting waits for readiness with a
bounded poll; stopping ends the process by its id, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from typing_extensions import Self

from .._binaries import BinaryNotFound, find_binary

__all__ = [
    "BinaryNotFound",
    "ManagedProcess",
    "StartStop",
    "find_binary",
    "free_port",
    "http_ok",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str, *, timeout: float = 0.5) -> bool:
    """True when GET `url` answers with a 2xx status within `timeout` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


class StartStop:
    """A context manager over `start()` and `stop()`; a failed start stops what it began."""

    def start(self) -> None:
        """Start; subclasses wait here until ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop whatever was started; safe to call more than once."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(StartStop):
    """A child process that is ready when `ready()` says so, and is always stopped.

    Use it as a context manager. Output goes to `log_path`; if the process exits or is not
    ready within `start_timeout` seconds, `start()` stops it and raises `RuntimeError`
    quoting the end of its log.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        ready: Callable[[], bool],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self._ready = ready
        self._cwd = cwd
        self._env = env
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait, polling, until it is ready."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._ready():
                return
            time.sleep(0.02)
        code = self._process.poll()
        self.stop()
        state = f"exited with {code}" if code is not None else "was not ready in time"
        raise RuntimeError(f"{self.name} {state}; log ends with:\n{self.log_tail()}")

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
