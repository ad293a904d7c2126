"""Real servers in tests: a server's binary or a skip, and demo app versions to route to.

Without a binary a test skips, naming the package to install; CI sets
CANARYKIT_REQUIRE_INTEGRATION=1 so that a missing one fails instead of passing unseen.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from canarykit.testing.lab import BinaryNotFound, DemoApp, find_binary


def need_binary(name: str, package: str) -> str:
    """The binary's path; skip (or fail, when CANARYKIT_REQUIRE_INTEGRATION=1) if missing."""
    try:
        return find_binary(name, package)
    except BinaryNotFound as exc:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {exc}")
        pytest.skip(str(exc))


@contextlib.contextmanager
def demo_apps(directory: Path, *versions: str) -> Iterator[tuple[DemoApp, ...]]:
    """One running `DemoApp` per version named (``"v1", "v2"``), answering without delay."""
    with contextlib.ExitStack() as stack:
        yield tuple(
            stack.enter_context(DemoApp(directory, version=version, latency=0.0))
            for version in versions
        )
