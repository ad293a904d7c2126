"""``canarykit run`` leases the router's traffic target, not only the rollout's name.

Two policies that differ only in ``name`` (or sit in two folders, with two state
directories) used to get two leases and two runners on one router (issue 13, item 8).
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit.policy import Deployment
from canarykit.testing import FakeRouter, ScriptedMetrics
from helpers.policies import ERROR_RATE, PROMETHEUS, haproxy_router, policy, rollout_table

# A plan of a second: the test runs it to its end.
POLICY = policy(
    """\
[plan]
shape = "weights"
weights = [10]
hold = "1s"
analysis_interval = "1s"
""",
    ERROR_RATE,
    rollout_table("NAME", state_dir=None),
    haproxy_router(),
    PROMETHEUS,
)


class SharedRouter(FakeRouter):
    """A fake router that says which traffic it controls, and records what it applied."""

    traffic_target = "fake:the-one-router"


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SharedRouter:
    monkeypatch.setenv("CANARYKIT_LOCK_DIR", str(tmp_path / "locks"))
    shared = SharedRouter()
    monkeypatch.setattr(Deployment, "build_router", lambda self: shared)
    monkeypatch.setattr(Deployment, "build_metrics", lambda self: ScriptedMetrics())
    return shared


def policy(folder: Path, name: str) -> Path:
    folder.mkdir()
    path = folder / "p.toml"
    path.write_text(POLICY.replace("NAME", name))
    return path


def test_a_second_policy_on_the_same_router_is_refused_before_traffic_moves(
    router: SharedRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = policy(tmp_path / "a", "web")
    second = policy(tmp_path / "b", "shop")
    # The first runner holds its lease, on its name and on the router's target.
    deployment = ck.policy.load_policy(first).deployment
    held = ck.stores.FileStore(deployment.state_dir).lease("web", target=router.traffic_target)
    anyio.run(held.acquire)

    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError("the second run was not refused: it started the rollout")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(20)
    try:
        code = main(["run", str(second), "--no-status"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        anyio.run(held.release)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "traffic target fake:the-one-router is already being driven" in err
    assert router.applied == []


def test_a_run_whose_inbox_others_may_write_is_refused_before_traffic_moves(
    router: SharedRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = policy(tmp_path / "a", "web")
    state_dir = Path(ck.policy.load_policy(path).deployment.state_dir)
    inbox = state_dir / "web.commands"
    inbox.mkdir(parents=True)
    state_dir.chmod(0o700)
    inbox.chmod(0o777)  # another local user could leave commands in it
    code = main(["run", str(path), "--no-status"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "chmod 700" in err and "web.commands" in err
    assert router.applied == []
