"""A real PostgreSQL server for integration tests, on a free loopback port.

`PostgresServer` runs ``initdb`` into a fresh private directory, then
``postgres -D DIR/data -k DIR -p PORT -c listen_addresses=127.0.0.1`` in the foreground
as a child process, and waits (bounded) until ``pg_isready`` answers::

    with PostgresServer(tmp_path) as server:
        store = PostgresStore(server.dsn)

PostgreSQL refuses to run as root. When the tests run as root (CI does), both commands
run as the ``postgres`` user through ``setpriv``, which replaces itself with the server:
the child's process id is the server's own, so stopping it by that id stops the server
(``runuser`` would stay in between as a parent that a SIGKILL would leave the server
behind). The data directory is then created outside the caller's directory, which
pytest keeps private to root, and owned by ``postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from ._processes import BinaryNotFound, ManagedProcess, StartStop, free_port

__all__ = ["PostgresServer", "postgres_bin_dir"]

# Debian keeps the server binaries out of PATH, one directory per major version.
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_PACKAGE = "postgresql"


def postgres_bin_dir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries (Debian's layout).

    Falls back to the directory of ``initdb`` on PATH; `BinaryNotFound` (naming the
    package to install) when there is neither.
    """
    found = []
    for directory in glob.glob(_BIN_GLOB):
        major = Path(directory).parent.name
        if major.isdigit() and os.access(Path(directory) / "postgres", os.X_OK):
            found.append((int(major), Path(directory)))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    raise BinaryNotFound("postgres", _PACKAGE)


def _as_postgres() -> list[str]:
    """The command prefix that runs the next command as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise BinaryNotFound("setpriv", "util-linux")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise BinaryNotFound("the postgres user", _PACKAGE) from None
    return [setpriv, "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]


class PostgresServer(StartStop):
    """PostgreSQL on 127.0.0.1 with trust authentication for user ``postgres``.

    Use it as a context manager. `directory` receives the server's log; the cluster
    lives in a private temporary directory removed by `close()` (and by leaving the
    ``with`` block). `dsn` is a libpq connection string for the ``postgres`` database;
    `host` and `port` are its parts. `restart()` stops the server (fast shutdown: open
    connections are cut, as when a real server restarts) and starts it again on the same
    port and data; `stop()` stops it and keeps the data for a later `start()`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()
        for name in ("initdb", "postgres", "pg_isready"):
            if not os.access(self.bin_dir / name, os.X_OK):
                raise BinaryNotFound(name, _PACKAGE)
        self._prefix = _as_postgres()
        self.directory = Path(directory)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dsn = f"host={self.host} port={self.port} dbname=postgres user=postgres"
        self._start_timeout = start_timeout
        self._root: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory (None before the first `start`)."""
        return None if self._root is None else self._root / "data"

    def _init(self) -> Path:
        root = Path(tempfile.mkdtemp(prefix="canarykit-pg-"))
        self._root = root
        if self._prefix:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            *self._prefix,
            str(self.bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # a test cluster: a power cut losing it costs nothing
        ]
        with (self.directory / "initdb.log").open("ab") as log:
            # cwd: the postgres user may not be allowed into the caller's directory.
            done = subprocess.run(
                argv,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            tail = (self.directory / "initdb.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"initdb exited with {done.returncode}:\n{tail}")
        return root

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return done.returncode == 0

    def start(self) -> None:
        """Create the cluster (first time only), start the server and wait until it answers."""
        root = self._root if self._root is not None else self._init()
        argv = [
            *self._prefix,
            str(self.bin_dir / "postgres"),
            "-D",
            str(root / "data"),
            "-k",
            str(root),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "fsync=off",  # test data; keeps a restart quick on a busy machine
        ]
        self._process = ManagedProcess(
            argv,
            name="postgres",
            log_path=self.directory / "postgres.log",
            ready=self._ready,
            cwd=root,
            start_timeout=self._start_timeout,
        )
        self._process.start()

    def stop(self) -> None:
        """Stop the server with a fast shutdown (SIGINT); the data stays for `start`."""
        process, self._process = self._process, None
        if process is None:
            return
        pid = process.pid
        if pid is not None:
            # SIGTERM alone is a "smart" shutdown, which waits for every client to leave.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        process.stop(timeout=10.0)

    def restart(self) -> None:
        """Stop the server (cutting its connections) and start it again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            text = (self.directory / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self._process is not None else "stopped"
        return f"<PostgresServer 127.0.0.1:{self.port} {state}>"
