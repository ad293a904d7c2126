"""Integration tests run real servers; without their binaries they skip (CI fails instead)."""

import os
from pathlib import Path

import pytest

from canarykit.testing.lab import BinaryNotFound, find_binary

HERE = Path(__file__).resolve().parent


# First, so the marks are on before `-m` deselects by them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ `integration`, so `-m "not integration"` skips them.

    A conftest's `pytestmark` is not applied to the tests beside it, and this hook sees the
    whole session's items, so it marks only the ones that live under this directory.
    """
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


def need_binary(name: str, package: str) -> str:
    """The binary's path; skip (or fail, when CANARYKIT_REQUIRE_INTEGRATION=1) if missing."""
    try:
        return find_binary(name, package)
    except BinaryNotFound as exc:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    return need_binary("nginx", "nginx-light")


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    return need_binary("haproxy", "haproxy")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return need_binary("prometheus", "prometheus")
