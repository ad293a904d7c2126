"""Files a policy names are read safely: no FIFO hangs a run, no link leads elsewhere.

A FIFO as a token file used to block ``canarykit run`` before it started; a symbolic link
as a secret file could make canarykit send someone else's file as its token (issue 13,
items 1 and 12). The policy file itself is read the same way (a link there is the
operator's own, and followed).
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canarykit import ConfigError
from canarykit._cli import main
from canarykit.policy import load_policy
from helpers.policies import (
    ERROR_RATE,
    PROMETHEUS,
    WEIGHTS_PLAN,
    haproxy_router,
    policy,
    rollout_table,
)

pytest.importorskip("httpx")

SECRET = "s3cr3t-token-value-0123456789"
POLICY = policy(
    WEIGHTS_PLAN, ERROR_RATE, rollout_table(state_dir=None), haproxy_router(), PROMETHEUS
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def within(seconds: float, call: Callable[[], Any]) -> BaseException | None:
    """Run `call` in a thread; the exception it raised (None if none). Fails if it hangs."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return raised[0] if raised else None


def policy_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(POLICY + extra)
    return path


@needs_fifo
def test_a_fifo_as_the_token_file_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token")
    policy = load_policy(policy_with(tmp_path, 'bearer_token_file = "token"\n'))
    error = within(5, policy.deployment.build_metrics)
    assert isinstance(error, ConfigError)
    assert error.field == "metrics.bearer_token_file"
    assert "FIFO" in str(error) and str(tmp_path / "token") in str(error)


@needs_fifo
def test_canarykit_run_with_a_fifo_token_exits_2_without_moving_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "password")
    path = policy_with(tmp_path, 'basic_user = "u"\nbasic_password_file = "password"\n')
    codes: list[int] = []
    assert within(10, lambda: codes.append(main(["run", str(path), "--no-status"]))) is None
    assert codes == [2]
    err = capsys.readouterr().err
    assert err.startswith("canarykit: error: metrics.basic_password_file: is a FIFO")
    assert "Traceback" not in err


@needs_fifo
def test_a_fifo_as_the_ca_bundle_or_the_policy_file_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ca.pem")
    policy = load_policy(policy_with(tmp_path, 'verify = "ca.pem"\n'))
    error = within(5, policy.deployment.build_metrics)
    assert isinstance(error, ConfigError) and error.field == "metrics.verify"
    assert "FIFO" in str(error)
    os.mkfifo(tmp_path / "fifo.toml")
    error = within(5, lambda: load_policy(tmp_path / "fifo.toml"))
    assert isinstance(error, ConfigError)
    assert "cannot read the policy file (is a FIFO" in str(error)


def test_a_secret_file_linked_to_an_unrelated_file_is_refused_unread(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-users-secrets"
    elsewhere.mkdir()
    (elsewhere / "db_password").write_text(f"db_password={SECRET}\n")
    config = tmp_path / "config"
    config.mkdir()
    (config / "token").symlink_to(elsewhere / "db_password")
    policy = load_policy(policy_with(config, 'bearer_token_file = "token"\n'))
    with pytest.raises(ConfigError) as caught:
        policy.deployment.build_metrics()
    assert caught.value.field == "metrics.bearer_token_file"
    assert "symbolic link" in str(caught.value) and "outside its own folder" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_secret_mounted_as_kubernetes_does_is_read_through_its_links(tmp_path: Path) -> None:
    # A Kubernetes secret volume: token -> ..data/token, ..data -> ..2026_12_05/
    (tmp_path / "..2026_12_05").mkdir()
    (tmp_path / "..2026_12_05" / "token").write_text(SECRET + "\n")
    (tmp_path / "..data").symlink_to("..2026_12_05")
    (tmp_path / "token").symlink_to("..data/token")
    policy = load_policy(policy_with(tmp_path, 'bearer_token_file = "token"\n'))
    source = policy.deployment.build_metrics()
    assert source.auth.token == SECRET  # type: ignore[attr-defined]


def test_a_directory_or_an_oversize_file_is_no_secret(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"x" * 70_000)
    for name, problem in (("dir", "is a directory"), ("big", "is 70000 bytes, more than")):
        policy = load_policy(policy_with(tmp_path, f'bearer_token_file = "{name}"\n'))
        with pytest.raises(ConfigError, match=problem):
            policy.deployment.build_metrics()


def test_a_policy_file_reached_through_a_link_is_read(tmp_path: Path) -> None:
    real = policy_with(tmp_path, "")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "current.toml").symlink_to(real)
    assert load_policy(tmp_path / "links" / "current.toml").deployment.name == "web"
