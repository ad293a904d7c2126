"""A real nginx for integration tests, with an `NginxRouter` wired to it.

`NginxServer` writes a main nginx.conf that follows the router's include contract (see
`NginxRouter.render_main_config`) into a directory it owns, with ``daemon off;``, the pid
file, the error log and every temporary path inside that directory, listening on a free
loopback port, and runs ``nginx -p DIR -c DIR/nginx.conf`` as a child process::

    with DemoApp(tmp, version="v1") as v1, DemoApp(tmp, version="v2") as v2:
        with NginxServer(tmp / "nginx", stable=[v1.address], canary=[v2.address]) as nginx:
            await nginx.router.apply(TrafficSplit(canary_percent=10))
            # requests to nginx.url now split 90 / 10
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .._split import STABLE_ONLY, TrafficSplit
from ..routers._nginx import NginxRouter
from ..routers._probe import SplitProbe
from ._processes import ManagedProcess, StartStop, find_binary, free_port

__all__ = ["NginxServer"]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NginxServer(StartStop):
    """nginx in the foreground on 127.0.0.1, fronting the given stable and canary servers.

    Use it as a context manager; `router` is an `NginxRouter` for it, `url` its address.

    - `directory`: where the config, include file, pid file, logs and temp files go.
    - `stable`, `canary`: server addresses of each arm (``host:port``).
    - `initial`: the split written before nginx starts (stable only by default).
    - `port`: the port to listen on (a free one by default).
    - `worker_processes`: nginx workers (1 keeps sequential requests in one worker; the
      router works with any number).
    - `binary`: the nginx binary (found on PATH and in sbin by default).
    - `verify`, `reload`, `timeout`, `name`: passed to the router.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        stable: Sequence[str],
        canary: Sequence[str],
        initial: TrafficSplit = STABLE_ONLY,
        port: int | None = None,
        worker_processes: int = 1,
        binary: str | None = None,
        name: str = "canarykit",
        reload: Literal["signal", "command"] = "signal",
        timeout: float = 10.0,
        verify: SplitProbe | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.directory / "nginx.conf"
        self.include_path = self.directory / "canary.conf"
        self.pid_file = self.directory / "nginx.pid"
        self.error_log = self.directory / "error.log"
        self.initial = initial
        self.worker_processes = worker_processes
        self._binary = binary
        self.router = NginxRouter(
            include_path=self.include_path,
            main_config=self.config_path,
            pid_file=self.pid_file,
            prefix=self.directory,
            stable=stable,
            canary=canary,
            name=name,
            nginx=binary,
            reload=reload,
            timeout=timeout,
            verify=verify,
        )
        self._start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    def main_config(self) -> str:
        """The nginx.conf this server runs."""
        return self.router.render_main_config(
            listen=f"127.0.0.1:{self.port}",
            directory=self.directory,
            foreground=True,
            worker_processes=self.worker_processes,
        )

    def start(self) -> None:
        """Write the config and the initial include file, start nginx, wait until it listens."""
        binary = self._binary or find_binary("nginx", "nginx-light")
        self.router.nginx = binary
        # nginx opens prefix/logs/error.log before it reads the config; give it a home.
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.main_config(), encoding="utf-8")
        self.router.write(self.initial)
        self.pid_file.unlink(missing_ok=True)
        self._process = ManagedProcess(
            [binary, "-p", str(self.directory), "-c", str(self.config_path)],
            name="nginx",
            log_path=self.directory / "nginx.out",
            ready=lambda: self.pid_file.exists() and _listening(self.port),
            start_timeout=self._start_timeout,
        )
        try:
            self._process.start()
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nerror_log ends with:\n{self.error_log_tail()}") from None

    def stop(self) -> None:
        """Stop nginx (SIGTERM to the master, which stops its workers)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    @property
    def pid(self) -> int | None:
        """The master's process id while running."""
        return None if self._process is None else self._process.pid

    def error_log_tail(self, lines: int = 20) -> str:
        """The last lines of nginx's error log."""
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<NginxServer at {self.url}>"
