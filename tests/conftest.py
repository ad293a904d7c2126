import os

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
