import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs more examples, the same ones every time (a red run is reproducible, never luck);
# a developer's run stays quick and explores new ones.
settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of traffic-target locks of the test's own, not the user's.

    ``canarykit run`` leases the router's traffic target in ``$CANARYKIT_LOCK_DIR`` (the
    documented variable, docs/security.md): tests that run the command use this fixture
    (``pytestmark = pytest.mark.usefixtures("lock_dir")``) so they never meet a lock of a
    real rollout, or of a test running next to them.
    """
    directory = tmp_path / "target-locks"
    monkeypatch.setenv("CANARYKIT_LOCK_DIR", str(directory))
    return directory
