"""Integration tests run real servers; without their binaries they skip (CI fails instead)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from canarykit.testing.lab import EtcdCluster
from helpers.real_servers import need_binary

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


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    return need_binary("nginx", "nginx-light")


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    return need_binary("haproxy", "haproxy")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return need_binary("prometheus", "prometheus")


@pytest.fixture(scope="session")
def etcd_binary() -> str:
    return need_binary("etcd", "etcd-server")


@pytest.fixture(scope="module")
def etcd_cluster(
    etcd_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdCluster]:
    """A real three-member etcd cluster, shared by the tests of a module."""
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), binary=etcd_binary) as running:
        yield running
