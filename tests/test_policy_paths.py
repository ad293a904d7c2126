"""Relative paths in a policy file mean the file's folder, whatever the working directory.

The same policy started from two working directories must be the same rollout: the same
state directory (so the lease refuses the second runner) and the same router files
(issue 13, item 8).
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from canarykit._cli._control import locate
from canarykit.policy import load_policy
from helpers.policies import ERROR_RATE, WEIGHTS_PLAN, policy

PLAN = policy(WEIGHTS_PLAN, ERROR_RATE)

NGINX = """
[rollout]
name = "web"
state_dir = "state"

[router]
kind = "nginx"
include_path = "conf.d/canary.conf"
main_config = "nginx.conf"
pid_file = "../run/nginx.pid"
prefix = "."
nginx = "bin/nginx"
stable = ["127.0.0.1:8001"]
canary = ["127.0.0.1:8002"]

[metrics]
kind = "prometheus"
url = "http://127.0.0.1:9090"
stable = "v1"
canary = "v2"
verify = "ca.pem"
bearer_token_file = "secrets/token"

[hooks]
confirm_promotion = {approval_file = "approve"}
rollback = [{approval_file = "/abs/rollback"}, "http://hooks.internal/rollback"]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A policy's folder, with a sub-folder to run from as a second working directory."""
    (tmp_path / "conf" / "sub").mkdir(parents=True)
    return (tmp_path / "conf").resolve()  # the loader names the folder without symlinks


def write(folder: Path, tables: str) -> Path:
    path = folder / "p.toml"
    path.write_text(PLAN + tables)
    return path


def loaded_from(cwd: Path, source: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(cwd)
    return load_policy(source).deployment


def test_one_policy_from_two_working_directories_names_the_same_files(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder, NGINX)
    first = loaded_from(folder.parent, "conf/p.toml", monkeypatch)
    second = loaded_from(folder / "sub", "../p.toml", monkeypatch)
    assert first == second
    assert first.state_dir == str(folder / "state")
    router = first.router_table
    assert router is not None
    assert router["include_path"] == str(folder / "conf.d/canary.conf")
    assert router["main_config"] == str(folder / "nginx.conf")
    assert router["pid_file"] == str(folder / "../run/nginx.pid")
    assert router["prefix"] == str(folder)
    assert router["nginx"] == str(folder / "bin/nginx")
    metrics = first.metrics_table
    assert metrics is not None
    assert metrics["verify"] == str(folder / "ca.pem")
    assert metrics["bearer_token_file"] == str(folder / "secrets/token")
    hooks = first.hooks_table
    assert hooks is not None
    assert hooks["confirm_promotion"]["approval_file"] == str(folder / "approve")
    assert hooks["rollback"][0]["approval_file"] == "/abs/rollback"  # absolute: as written
    assert hooks["rollback"][1] == "http://hooks.internal/rollback"  # a URL: no path


def test_the_built_router_writes_the_file_beside_the_policy(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder, NGINX.replace('nginx = "bin/nginx"\n', ""))
    monkeypatch.chdir(folder / "sub")
    router = load_policy("../p.toml").deployment.build_router()
    assert Path(router.include_path) == folder / "conf.d" / "canary.conf"  # type: ignore[attr-defined]


def test_the_default_state_directory_is_beside_the_policy_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder, '[rollout]\nname = "web"\n')
    for cwd, source in ((folder.parent, "conf/p.toml"), (folder / "sub", "../p.toml")):
        deployment = loaded_from(cwd, source, monkeypatch)
        assert deployment.state_dir == str(folder / ".canarykit")
        args = argparse.Namespace(policy=source, name=None, state_dir=None)
        assert locate(args, deployment) == ("web", str(folder / ".canarykit"))


def test_haproxy_sockets_and_programs_resolve_only_when_they_are_paths(folder: Path) -> None:
    haproxy = """
[router]
kind = "haproxy"
runtime_api = "{api}"
backend = "app"
stable = ["v1"]
canary = ["v2"]
haproxy = "{binary}"
persist_config = "haproxy.cfg"
"""
    cases = [
        ("run/admin.sock", "haproxy", str(folder / "run/admin.sock"), "haproxy"),
        (
            "unix:admin.sock",
            "./haproxy",
            "unix:" + str(folder / "admin.sock"),
            str(folder / "haproxy"),
        ),
        ("127.0.0.1:9999", "/usr/sbin/haproxy", "127.0.0.1:9999", "/usr/sbin/haproxy"),
        ("/run/admin.sock", "haproxy", "/run/admin.sock", "haproxy"),
    ]
    for api, binary, want_api, want_binary in cases:
        path = write(folder, haproxy.format(api=api, binary=binary))
        router = load_policy(path).deployment.router_table
        assert router is not None
        assert (router["runtime_api"], router["haproxy"]) == (want_api, want_binary)
        assert router["persist_config"] == str(folder / "haproxy.cfg")


def test_kubernetes_files_resolve_and_a_home_path_expands(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(folder / "home"))
    path = write(
        folder,
        """
[router]
kind = "istio"
virtual_service = "app"
namespace = "default"
host = "app"
stable_subset = "v1"
canary_subset = "v2"
[router.kubernetes]
kubeconfig = "~/.kube/config"
service_account_dir = "sa"
""",
    )
    connection = load_policy(path).deployment.router_table["kubernetes"]  # type: ignore[index]
    assert connection["kubeconfig"] == str(folder / "home" / ".kube" / "config")
    assert connection["service_account_dir"] == str(folder / "sa")


def test_toml_text_keeps_relative_paths_as_written() -> None:
    text = PLAN + NGINX
    deployment = load_policy(text).deployment
    assert deployment.state_dir == "state"
    assert deployment.router_table is not None
    assert deployment.router_table["include_path"] == "conf.d/canary.conf"


def test_a_policy_written_back_names_the_absolute_paths(folder: Path) -> None:
    policy = load_policy(write(folder, NGINX))
    again = load_policy(policy.to_toml())
    assert again.deployment == policy.deployment
    assert os.path.isabs(again.deployment.state_dir)
