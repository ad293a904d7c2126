"""Integration tests run real servers; without their binaries they skip (CI fails instead)."""

import os

import pytest

from canarykit.testing import BinaryNotFound, find_binary


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
