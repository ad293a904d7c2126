"""Operator commands through a shared store: ``canarykit run`` on one "host", commands on another.

The policy names ``[state] backend = "etcd"`` with a real three-member etcd cluster on
loopback, or ``"postgres"`` with a real PostgreSQL server. ``canarykit run`` drives nginx
(the lab's, with Prometheus and real load) in its own process and working directory;
``canarykit status`` and ``promote`` run in other processes, from another directory
holding their own copy of the policy: no file is shared, as with a runner in CI and an
engineer on a laptop. The state, the lease and the commands live only in the store.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time

import anyio
import pytest

# The fixtures are imported, so a test's parameter "redefines" one.
from postgres_fixtures import postgres  # noqa: F401 (a fixture)

import canarykit as ck
from canarykit.testing import CanaryLab
from canarykit.testing.lab import BinaryNotFound, EtcdCluster, find_binary

pytest.importorskip("httpx", reason="pip install 'canarykit[etcd]'")

pytestmark = pytest.mark.anyio

POLICY = """
[rollout]
name = "web"
call_timeout = "5s"
rollback_timeout = "20s"

{state}

[plan]
shape = "steps"
analysis_interval = "3s"
[[plan.steps]]
set_weight = 10
[[plan.steps]]
wait_for_promotion = true
[[plan.steps]]
set_weight = 50
[[plan.steps]]
pause = "3s"

[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = "2%"

[router]
kind = "nginx"
include_path = "{router.include_path}"
main_config = "{router.main_config}"
pid_file = "{router.pid_file}"
prefix = "{router.prefix}"
stable = ["{stable}"]
canary = ["{canary}"]

[metrics]
kind = "prometheus"
url = "{prometheus}"
stable = "v1"
canary = "v2"
settle = 1
"""
TIMEOUT = 120.0  # seconds a command may take before the test kills it


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def etcd_binary() -> str:
    try:
        return find_binary("etcd", "etcd-server")
    except BinaryNotFound as exc:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"CANARYKIT_REQUIRE_INTEGRATION=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def cluster(etcd_binary, tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), binary=etcd_binary) as running:
        yield running


@pytest.fixture(scope="module")
def lab(tmp_path_factory, nginx_binary, prometheus_binary):
    with CanaryLab(tmp_path_factory.mktemp("lab"), proxy="nginx") as lab:
        yield lab


ETCD = """
[state]
backend = "etcd"
endpoints = {endpoints}
prefix = "{prefix}"
ttl = "4s"
"""
POSTGRES = """
[state]
backend = "postgres"
dsn = "{dsn}"
table = "{table}"
ttl = "4s"
"""


@pytest.fixture(params=["etcd", "postgres"])
def state(request):
    """The ``[state]`` table of a fresh place in a real etcd cluster or PostgreSQL server."""
    if request.param == "etcd":
        cluster = request.getfixturevalue("cluster")
        endpoints = "[" + ", ".join(f'"{url}"' for url in cluster.endpoints) + "]"
        return ETCD.format(endpoints=endpoints, prefix=f"t-{secrets.token_hex(4)}/")
    server = request.getfixturevalue("postgres")
    return POSTGRES.format(dsn=server.dsn, table=f"t{secrets.token_hex(4)}")


def host(tmp_path, name, lab, state):
    """A directory of its own with its own copy of the policy, as another machine has."""
    directory = tmp_path / name
    directory.mkdir()
    policy = directory / "web.toml"
    policy.write_text(
        POLICY.format(
            state=state,
            router=lab.router,
            stable=lab.stable.address,
            canary=lab.canary.address,
            prometheus=lab.prometheus.url,
        )
    )
    return directory, policy


def command(directory, *argv, timeout=60):
    """``canarykit ARGV`` run to completion in `directory`: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "canarykit", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=directory,
    )
    return done.returncode, done.stdout, done.stderr


def run_in(directory, policy):
    """``canarykit run POLICY`` in `directory`, to its end: (exit code, stdout, stderr)."""
    with subprocess.Popen(
        [sys.executable, "-m", "canarykit", "run", str(policy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=directory,
    ) as process:
        watchdog = threading.Timer(TIMEOUT, process.kill)
        watchdog.start()
        out, err = process.communicate()
        watchdog.cancel()
    return process.returncode, out, err


async def test_an_operator_on_another_host_promotes_through_the_store(lab, state, tmp_path):
    await lab.reset()
    runner_dir, runner_policy = host(tmp_path, "runner", lab, state)
    laptop, laptop_policy = host(tmp_path, "laptop", lab, state)
    backend = "etcd" if 'backend = "etcd"' in state else "postgres"
    store = "EtcdStore([" if backend == "etcd" else "PostgresStore('postgresql://postgres@"
    seen = {}

    async def operator():
        # Once the rollout waits at 10%, look at it, then promote it, as a person would.
        while (await lab.router.read()).canary_percent != 10:
            await anyio.sleep(0.2)
        await anyio.sleep(4)  # a window or so at 10%
        seen["status"] = await anyio.to_thread.run_sync(command, laptop, "status", laptop_policy)
        started = time.monotonic()
        seen["promote"] = await anyio.to_thread.run_sync(command, laptop, "promote", laptop_policy)
        seen["promote_took"] = time.monotonic() - started

    load = lab.load(rate=100)
    async with anyio.create_task_group() as group:
        group.start_soon(load.run)
        group.start_soon(operator)
        code, out, err = await anyio.to_thread.run_sync(run_in, runner_dir, runner_policy)
        load.stop()

    assert code == 0, (out, err)
    assert await lab.router.read() == ck.TrafficSplit(canary_percent=100)
    assert f"state in {backend}: {store}" in out.splitlines()[0], out
    code, status, _ = seen["status"]
    assert code == 0, status
    assert status.startswith(f"rollout   web ({store}"), status
    assert "phase     paused at step 2/4; canary 10%" in status, status
    assert "reason    waiting for promotion" in status
    assert "lease     held by " in status and "; token " in status, status
    code, promoted, _ = seen["promote"]
    # Acknowledged by the runner holding the lease, which names itself.
    assert code == 0 and promoted.startswith("promote: accepted by "), promoted
    assert promoted.endswith(": the rollout is progressing\n"), promoted
    assert seen["promote_took"] < 10
    assert "command: promote" in out, out

    code, status, _ = command(laptop, "status", laptop_policy)
    assert code == 0 and "phase     succeeded" in status, status
    assert "lease     not held: no runner drives it now" in status
    code, again, _ = command(laptop, "promote", laptop_policy)
    assert code == 5 and again.startswith("promote: the rollout already succeeded at "), again
    # Nothing was kept on either host: the state lives in the store.
    assert sorted(p.name for p in runner_dir.iterdir()) == ["web.toml"]
    assert sorted(p.name for p in laptop.iterdir()) == ["web.toml"]


async def test_with_no_runner_the_command_is_refused_at_once(lab, state, tmp_path):
    laptop, policy = host(tmp_path, "laptop", lab, state)
    store = "EtcdStore([" if 'backend = "etcd"' in state else "PostgresStore("
    started = time.monotonic()
    code, out, err = await anyio.to_thread.run_sync(
        command, laptop, "pause", policy, "--wait", "30"
    )

    assert code == 1 and out == "", err
    assert err.startswith(
        "canarykit: no runner holds the lease of web: nothing will act on this command"
    ), err
    assert time.monotonic() - started < 15  # said at once, not after the 30 s --wait
    code, status, _ = await anyio.to_thread.run_sync(command, laptop, "status", policy)
    assert code == 1 and status.startswith(f"web: nothing saved in {store}"), status
