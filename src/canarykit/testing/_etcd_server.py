"""A real etcd v3 cluster on loopback for integration tests (Debian's ``etcd-server``, 3.4).

`EtcdCluster` runs each member as a child process (``etcd --name mN ...``) on two free
loopback ports (client and peer), with its data directory under a directory the caller
owns, and waits until every member reports a healthy cluster. A test can kill a member
(SIGKILL, as a crash would) and start it again on the same data directory, so it rejoins
the cluster it left::

    with EtcdCluster(tmp / "etcd") as cluster:
        store = EtcdStore(cluster.endpoints)
        cluster.stop_member(cluster.leader_index())  # the others elect a new leader

The heartbeat and election timeout default to etcd's own (100 ms, 1000 ms). etcd gives
a lease at least ``1.5 * election timeout`` seconds (rounded up), whatever TTL was asked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._processes import ManagedProcess, StartStop, find_binary, free_port

__all__ = ["EtcdCluster"]

# How long one status or health request to a member may take.
_PROBE_TIMEOUT = 0.5


def _post(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float = _PROBE_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def _healthy(endpoint: str, context: ssl.SSLContext | None) -> bool:
    """True when the member at `endpoint` answers /health with a cluster that has a leader."""
    try:
        with urllib.request.urlopen(
            f"{endpoint}/health", timeout=_PROBE_TIMEOUT, context=context
        ) as response:
            return bool(json.loads(response.read()).get("health") == "true")
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _make_certificates(directory: Path, openssl: str) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all for a day."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=canarykit test CA")  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(extension + "\n")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=canarykit test {name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
            "-extfile", f"{name}.ext")  # fmt: skip


class EtcdCluster(StartStop):
    """An etcd cluster of `members` processes on 127.0.0.1; a context manager.

    - `directory`: the members' data directories (``m1``, ``m2``, ...) and logs.
    - `members`: how many (1-7; 3 by default, the smallest that survives losing one).
    - `heartbeat_ms`, `election_ms`: the raft timing; a smaller election timeout elects a
      new leader sooner and lowers the minimum lease TTL.
    - `tls`: serve clients over TLS (``https://`` endpoints) and require a client
      certificate; `tls_files()` gives a client's CA, certificate and key (made with
      ``openssl`` under `directory`).
    - `binary`: the etcd binary (found on PATH and in sbin by default).

    `endpoints` are the members' client URLs in member order; `leader_index()` says which
    member leads now; `stop_member(i)` kills one with SIGKILL and `start_member(i)` starts
    it again on its data directory. `close()` (or leaving the ``with``) stops them all.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        members: int = 3,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        tls: bool = False,
        binary: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 7:
            raise ConfigError("members", members, "must be an integer from 1 to 7")
        for field, value in (("heartbeat_ms", heartbeat_ms), ("election_ms", election_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 10:
                raise ConfigError(field, value, "must be an integer number of ms >= 10")
        if election_ms < 5 * heartbeat_ms:
            raise ConfigError("election_ms", election_ms, "must be at least 5 heartbeats")
        self.directory = Path(directory)
        self.binary = binary or find_binary("etcd", "etcd-server")
        self.start_timeout = start_timeout
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.names = [f"m{n + 1}" for n in range(members)]
        client_ports = [free_port() for _ in self.names]
        peer_ports = [free_port() for _ in self.names]
        scheme = "https" if tls else "http"
        self.endpoints = [f"{scheme}://127.0.0.1:{port}" for port in client_ports]
        self.tls_dir: Path | None = None
        self._context: ssl.SSLContext | None = None
        if tls:
            self.tls_dir = self.directory / "tls"
            _make_certificates(self.tls_dir, find_binary("openssl", "openssl"))
            self._context = ssl.create_default_context(cafile=self.tls_dir / "ca.pem")
            self._context.load_cert_chain(self.tls_dir / "client.pem", self.tls_dir / "client.key")
        self._peers = [f"http://127.0.0.1:{port}" for port in peer_ports]
        self._token = f"canarykit-test-{secrets.token_hex(4)}"
        self._processes: list[ManagedProcess | None] = [None] * members

    @property
    def min_lease_ttl(self) -> int:
        """The shortest lease etcd grants with these timings (a shorter TTL is raised to it)."""
        return math.ceil(1.5 * self.election_ms / 1000)

    def _argv(self, index: int, state: str) -> list[str]:
        name = self.names[index]
        cluster = ",".join(f"{n}={peer}" for n, peer in zip(self.names, self._peers, strict=True))
        return [
            self.binary,
            f"--name={name}",
            f"--data-dir={self.directory / name}",
            f"--listen-client-urls={self.endpoints[index]}",
            f"--advertise-client-urls={self.endpoints[index]}",
            f"--listen-peer-urls={self._peers[index]}",
            f"--initial-advertise-peer-urls={self._peers[index]}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self._token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            *self._tls_flags(),
            "--logger=zap",
            "--log-level=warn",
        ]

    def _tls_flags(self) -> list[str]:
        if self.tls_dir is None:
            return []
        return [
            f"--cert-file={self.tls_dir / 'server.pem'}",
            f"--key-file={self.tls_dir / 'server.key'}",
            f"--trusted-ca-file={self.tls_dir / 'ca.pem'}",
            "--client-cert-auth",
        ]

    def tls_files(self) -> dict[str, str]:
        """``ca_file``, ``cert_file`` and ``key_file`` for a client (with ``tls=True``)."""
        if self.tls_dir is None:
            raise RuntimeError("this cluster was started without tls=True")
        return {
            "ca_file": str(self.tls_dir / "ca.pem"),
            "cert_file": str(self.tls_dir / "client.pem"),
            "key_file": str(self.tls_dir / "client.key"),
        }

    def _spawn(self, index: int, state: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(
            self._argv(index, state),
            name=f"etcd {self.names[index]}",
            log_path=self.directory / f"{self.names[index]}.log",
            # Readiness is the cluster's, checked once every member runs (a member alone
            # has no quorum, so waiting for each in turn would wait forever).
            ready=lambda: True,
            start_timeout=self.start_timeout,
        )
        process.start()
        self._processes[index] = process

    def _wait_healthy(self, indices: list[int]) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = list(indices)
        while waiting:
            waiting = [i for i in waiting if not _healthy(self.endpoints[i], self._context)]
            if not waiting:
                return
            for i in waiting:
                process = self._processes[i]
                if process is None or not process.running():
                    raise RuntimeError(
                        f"etcd {self.names[i]} exited; log ends with:\n{self._tail(i)}"
                    )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"etcd {self.names[waiting[0]]} was not healthy within "
                    f"{self.start_timeout:g} s; log ends with:\n{self._tail(waiting[0])}"
                )
            time.sleep(0.05)

    def _tail(self, index: int) -> str:
        process = self._processes[index]
        return "" if process is None else process.log_tail()

    def start(self) -> None:
        """Start every member and wait until each reports a healthy cluster."""
        for index in range(len(self.names)):
            self._spawn(index, "new")
        self._wait_healthy(list(range(len(self.names))))

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL); safe to call more than once."""
        for index, process in enumerate(self._processes):
            if process is not None:
                process.stop()
                self._processes[index] = None

    close = stop

    def running(self, index: int) -> bool:
        """True while member `index` (0-based) runs."""
        return self._processes[self._index(index)] is not None

    def pid(self, index: int) -> int | None:
        """Member `index`'s process id while it runs."""
        process = self._processes[self._index(index)]
        return None if process is None else process.pid

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError("index", index, "must be a member index")
        if not 0 <= index < len(self.names):
            raise ConfigError("index", index, f"must be from 0 to {len(self.names) - 1}")
        return index

    def stop_member(self, index: int) -> None:
        """Kill member `index` with SIGKILL (a crash: no goodbye to its peers)."""
        process = self._processes[self._index(index)]
        if process is None:
            return
        pid = process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.stop()  # reaps it
        self._processes[index] = None

    def start_member(self, index: int) -> None:
        """Start member `index` again on its data directory and wait until it is healthy."""
        if self._processes[self._index(index)] is not None:
            return
        self._spawn(index, "existing")
        self._wait_healthy([index])

    def status(self, index: int) -> dict[str, Any]:
        """Member `index`'s answer to /v3/maintenance/status (member id, leader, revision)."""
        answer: dict[str, Any] = _post(
            f"{self.endpoints[self._index(index)]}/v3/maintenance/status",
            {},
            context=self._context,
        )
        return answer

    def leader_index(self, *, timeout: float = 10.0) -> int:
        """The index of the member that leads now, asking the running members.

        Waits (polling, up to `timeout` seconds) while an election is under way.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, process in enumerate(self._processes):
                if process is None:
                    continue
                try:
                    answer = self.status(index)
                except (OSError, ValueError, urllib.error.URLError):
                    continue
                leader = answer.get("leader")
                if leader in (None, "0", 0):
                    continue
                for candidate in range(len(self.names)):
                    if self._processes[candidate] is None:
                        continue
                    try:
                        member = self.status(candidate)["header"]["member_id"]
                    except (OSError, ValueError, KeyError, urllib.error.URLError):
                        continue
                    if str(member) == str(leader):
                        return candidate
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no running etcd member led within {timeout:g} s")
            time.sleep(0.05)

    def get(self, key: str) -> bytes | None:
        """The value of `key` read through any running member (None if absent): for tests."""
        body = {"key": base64.b64encode(key.encode()).decode()}
        for index, process in enumerate(self._processes):
            if process is None:
                continue
            try:
                answer = _post(
                    f"{self.endpoints[index]}/v3/kv/range",
                    body,
                    timeout=2.0,
                    context=self._context,
                )
            except (OSError, ValueError, urllib.error.URLError):
                continue
            kvs = answer.get("kvs") or []
            return base64.b64decode(kvs[0].get("value", "")) if kvs else None
        raise RuntimeError("no running etcd member answered")

    def __repr__(self) -> str:
        running = sum(process is not None for process in self._processes)
        return f"<EtcdCluster {running}/{len(self.names)} members running at {self.directory}>"
