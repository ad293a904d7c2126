"""Fixtures for tests against a real PostgreSQL: a server per module, a fresh table prefix per test.

Import the fixtures a test module uses (``from postgres_fixtures import ...``). Without the
server binaries or psycopg they skip, naming the install command; with
CANARYKIT_REQUIRE_INTEGRATION=1 (CI) they fail instead.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Imports internals on purpose: where the lab finds PostgreSQL's programs.
from canarykit.testing._postgres_server import postgres_bin_dir
from canarykit.testing.lab import BinaryNotFound, PostgresServer

_tables = itertools.count(1)


def _missing(why: str) -> None:
    if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {why}")
    pytest.skip(why)


def need_postgres() -> Path:
    """The server binaries' directory, and psycopg importable; skip (or fail in CI) if not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed; install it with: pip install 'canarykit[postgres]'")
    try:
        return postgres_bin_dir()
    except BinaryNotFound as exc:
        _missing(str(exc))
        raise  # pragma: no cover - _missing does not return


def start_postgres(directory: Path) -> PostgresServer:
    """A started server whose log goes to `directory` (the caller closes it)."""
    server = PostgresServer(directory, bin_dir=need_postgres())
    server.start()
    return server


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server shared by a module's tests (each test uses its own tables)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), bin_dir=need_postgres())
    with server:
        yield server


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, for tests that restart or stop it."""
    server = PostgresServer(tmp_path / "postgres", bin_dir=need_postgres())
    with server:
        yield server


@pytest.fixture
def table() -> str:
    """A table prefix no other test of this session uses."""
    return f"t{os.getpid()}_{next(_tables)}"
