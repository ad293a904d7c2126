"""A real HAProxy for integration tests, with an `HAProxyRouter` wired to it.

`HAProxyServer` writes a haproxy.cfg into a directory it owns: a frontend on a free
loopback port, one backend with the stable and canary servers, ``balance roundrobin``
and an admin ``stats socket``; then it runs ``haproxy -f CFG -db`` (foreground) as a
child process::

    with DemoApp(tmp, version="v1") as v1, DemoApp(tmp, version="v2") as v2:
        with HAProxyServer(tmp / "haproxy", stable=[v1.address], canary=[v2.address]) as hap:
            await hap.router.apply(TrafficSplit(canary_percent=10))
            # requests to hap.url now split 90 / 10

Why ``balance roundrobin``: it is HAProxy's dynamic weighted round-robin, which takes
weight changes from the runtime API at once and spreads sequential requests evenly in
the weights' ratio (``static-rr`` ignores weight changes at run time; ``random`` and
``leastconn`` would make the split noisy or load-dependent).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .._errors import ConfigError
from .._safe import check_address, check_name
from .._split import STABLE_ONLY, TrafficSplit
from ..routers._haproxy import HAProxyRouter, weights_for
from ..routers._probe import SplitProbe
from ._processes import ManagedProcess, StartStop, find_binary, free_port

__all__ = ["HAProxyServer"]

# sun_path holds 108 bytes on Linux; keep a margin for the NUL and HAProxy's own suffix
# (it binds "PATH.PID.tmp" and renames it into place).
_MAX_SOCKET_PATH = 90


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _check_servers(field: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(field, value, "must be a non-empty list of 'host:port' addresses")
    servers = tuple(check_address(f"{field}[{i}]", item) for i, item in enumerate(value))
    for i, address in enumerate(servers):
        if address.startswith("unix:"):
            raise ConfigError(f"{field}[{i}]", address, "must be 'host:port' here")
    return servers


class HAProxyServer(StartStop):
    """HAProxy in the foreground on 127.0.0.1, fronting the given stable and canary servers.

    Use it as a context manager; `router` is an `HAProxyRouter` for it, `url` its address,
    `config_path` and `socket_path` its config file and runtime API socket.

    - `directory`: where the config, the socket (unless its path would be too long for
      a UNIX socket: then a short temporary directory) and the log go.
    - `stable`, `canary`: server addresses of each arm (``host:port``); the servers are
      named ``stable1``, ``stable2``, ... and ``canary1``, ... in backend `backend`.
    - `initial`: the split whose weights the config file starts with (stable only).
    - `port`: the port to listen on (a free one by default).
    - `socket_level`: the runtime API's level; the router needs ``admin``, the others are
      for testing what a refusal looks like.
    - `persist`: give the router ``persist_config=config_path``, so applied weights
      survive `restart`.
    - `binary`: the haproxy binary (found on PATH and in sbin by default).
    - `verify`, `timeout`, `weight_tolerance`: passed to the router.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        stable: Sequence[str],
        canary: Sequence[str],
        backend: str = "app",
        initial: TrafficSplit = STABLE_ONLY,
        port: int | None = None,
        socket_level: Literal["admin", "operator", "user"] = "admin",
        persist: bool = False,
        binary: str | None = None,
        timeout: float = 5.0,
        weight_tolerance: float = 0.1,
        verify: SplitProbe | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.stable = _check_servers("stable", stable)
        self.canary = _check_servers("canary", canary)
        self.backend = check_name("backend", backend)
        if not isinstance(initial, TrafficSplit):
            raise ConfigError("initial", initial, "must be a TrafficSplit")
        self.initial = initial
        if socket_level not in ("admin", "operator", "user"):
            raise ConfigError("socket_level", socket_level, "must be 'admin', 'operator' or 'user'")
        self.socket_level = socket_level
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.directory / "haproxy.cfg"
        self._socket_dir: str | None = None
        self.socket_path = self.directory / "hap.sock"
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="ck-hap-")
            self.socket_path = Path(self._socket_dir) / "hap.sock"
        self.stable_names = tuple(f"stable{i}" for i in range(1, len(self.stable) + 1))
        self.canary_names = tuple(f"canary{i}" for i in range(1, len(self.canary) + 1))
        self._binary = binary
        self.router = HAProxyRouter(
            runtime_api=self.socket_path,
            backend=self.backend,
            stable=self.stable_names,
            canary=self.canary_names,
            timeout=timeout,
            weight_tolerance=weight_tolerance,
            verify=verify,
            persist_config=self.config_path if persist else None,
            haproxy=binary,
        )
        self._start_timeout = start_timeout
        self._process: ManagedProcess | None = None
        self._written = False

    def config(self) -> str:
        """The haproxy.cfg this server starts with."""
        weights = weights_for(self.initial.canary_percent, len(self.stable), len(self.canary))
        servers = [
            f"    server {name} {address} weight {weight}"
            for name, address, weight in zip(
                self.stable_names + self.canary_names,
                self.stable + self.canary,
                weights.stable + weights.canary,
                strict=True,
            )
        ]
        return "\n".join(
            [
                "# haproxy.cfg written by canarykit.testing.HAProxyServer",
                "global",
                f"    stats socket {self.socket_path} mode 600 level {self.socket_level}",
                "defaults",
                "    mode http",
                "    timeout connect 2s",
                "    timeout client 30s",
                "    timeout server 30s",
                "frontend canarykit_front",
                f"    bind 127.0.0.1:{self.port}",
                f"    default_backend {self.backend}",
                f"backend {self.backend}",
                "    # Dynamic weighted round-robin: takes runtime weight changes at once.",
                "    balance roundrobin",
                *servers,
                "",
            ]
        )

    def start(self) -> None:
        """Write the config (the first time only), start HAProxy, wait until it serves.

        A later start (see `restart`) keeps the config file as it is, with whatever the
        router persisted into it.
        """
        binary = self._binary or find_binary("haproxy", "haproxy")
        self.router.haproxy = binary
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if not self._written:
            self.config_path.write_text(self.config(), encoding="utf-8")
            self._written = True
        self.socket_path.unlink(missing_ok=True)
        self._process = ManagedProcess(
            [binary, "-f", str(self.config_path), "-db"],
            name="haproxy",
            log_path=self.directory / "haproxy.log",
            ready=lambda: self.socket_path.exists() and _listening(self.port),
            start_timeout=self._start_timeout,
        )
        self._process.start()

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL) by its process id."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._socket_dir is not None:
            # The short directory made for the socket; `start` makes it again.
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop HAProxy and start it again from the config file as it is now."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """HAProxy's process id while running."""
        return None if self._process is None else self._process.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of HAProxy's output."""
        return "" if self._process is None else self._process.log_tail(lines)

    def __repr__(self) -> str:
        return f"<HAProxyServer at {self.url}>"
