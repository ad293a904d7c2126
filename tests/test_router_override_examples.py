"""The router subclasses of docs/custom_router.md (examples/custom_router.py), run for real.

`FleetNginxRouter` drives two real nginx instances standing in for two hosts: `push`,
`fetch` and `run` are the "remote" parts, here files and commands on this machine.
`RelayHAProxyRouter` sends its commands through a child process that relays them to a
real HAProxy's runtime-API socket, as ``ssh HOST socat stdio SOCKET`` would.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from canarykit import RouterError, TrafficSplit
from canarykit.routers import HAProxyRouter, NginxRouter, SplitProbe
from canarykit.testing.lab import HAProxyServer, NginxServer
from helpers.real_servers import demo_apps, need_binary

# Real nginx and HAProxy processes: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]

_spec = importlib.util.spec_from_file_location(
    "custom_router_example", Path(__file__).parent.parent / "examples" / "custom_router.py"
)
assert _spec is not None and _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

# What `socat stdio SOCKET` does for one command line: stdin to the socket, answer to stdout.
RELAY = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(sys.stdin.buffer.read())
    while chunk := s.recv(65536):
        sys.stdout.buffer.write(chunk)
"""


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("apps")
    with demo_apps(directory, "v1", "v2") as apps:
        yield apps


@pytest.fixture
def hosts(tmp_path, apps):
    nginx = need_binary("nginx", "nginx-light")
    v1, v2 = apps
    with (
        NginxServer(tmp_path / "a", stable=[v1.address], canary=[v2.address], binary=nginx) as a,
        NginxServer(tmp_path / "b", stable=[v1.address], canary=[v2.address], binary=nginx) as b,
    ):
        yield {"host-a": a, "host-b": b}


def fleet(hosts, *, refuse_on=()):
    """A FleetNginxRouter whose hosts are local nginx instances; `refuse_on` fails nginx -t."""
    nginx = need_binary("nginx", "nginx-light")
    commands = []

    async def push(host, text):
        path = hosts[host].include_path
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text, encoding="utf-8")

    async def fetch(host):
        path = hosts[host].include_path
        return path.read_text(encoding="utf-8") if path.exists() else None

    async def run(host, argv):
        commands.append((host, argv))
        if argv == ["nginx", "-t"] and host in refuse_on:
            raise RouterError(f"{host}: nginx -t failed (as scripted)")
        local = {("nginx", "-t"): ["-t"], ("systemctl", "reload", "nginx"): ["-s", "reload"]}
        server = hosts[host]
        base = [nginx, "-p", str(server.directory), "-c", str(server.config_path)]
        await anyio.run_process(base + local[tuple(argv)])

    first = hosts["host-a"]
    router = example.FleetNginxRouter(
        hosts=list(hosts),
        push=push,
        fetch=fetch,
        run=run,
        include_path=first.include_path,
        main_config=first.config_path,
        pid_file=first.pid_file,
        stable=first.router.stable,
        canary=first.router.canary,
    )
    return router, commands


async def test_fleet_nginx_router_delivers_reloads_and_reads_back_on_every_host(hosts):
    router, commands = fleet(hosts)
    split = TrafficSplit(canary_percent=25)
    await router.apply(split)
    assert await router.read() == split
    # `systemctl reload` (here `nginx -s reload`) returns once nginx is signalled; its
    # master starts new workers and retires the old ones about 100 ms later.
    await anyio.sleep(0.5)
    for host, server in hosts.items():
        assert await server.router.read() == split, host
        # The host's nginx serves it: a converging probe sees 25% through each one.
        await SplitProbe(url=server.url + "/", requests=200, tolerance=2.0, converge=True).check(
            split
        )
    assert [argv for _, argv in commands] == [["nginx", "-t"]] * 2 + [
        ["systemctl", "reload", "nginx"]
    ] * 2


async def test_fleet_nginx_router_puts_the_previous_file_back_when_a_host_refuses(hosts):
    router, commands = fleet(hosts, refuse_on={"host-b"})
    before = {host: server.include_path.read_text() for host, server in hosts.items()}
    with pytest.raises(RouterError, match="host-b: nginx -t failed"):
        await router.apply(TrafficSplit(canary_percent=50))
    assert {host: server.include_path.read_text() for host, server in hosts.items()} == before
    assert ["systemctl", "reload", "nginx"] not in [argv for _, argv in commands]


async def test_fleet_nginx_read_back_refuses_hosts_that_differ(hosts):
    router, _ = fleet(hosts)
    await hosts["host-a"].router.apply(TrafficSplit(canary_percent=10))
    with pytest.raises(RouterError, match="2 different files"):
        await router.read()


def test_the_fleet_router_overrides_only_nginx_routers_documented_steps():
    overridden = {
        name for name, value in vars(example.FleetNginxRouter).items() if callable(value)
    } - {"__init__"}
    assert overridden == {"deliver", "validate", "reload_nginx", "read_text"}
    for name in overridden:
        assert getattr(NginxRouter, name).__doc__, name


@pytest.fixture
def haproxy(tmp_path, apps):
    v1, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy",
        stable=[v1.address],
        canary=[v2.address],
        binary=need_binary("haproxy", "haproxy"),
    ) as server:
        yield server


def relayed(server, relay):
    return example.RelayHAProxyRouter(
        relay=relay,
        runtime_api=server.socket_path,
        backend=server.backend,
        stable=server.stable_names,
        canary=server.canary_names,
    )


async def test_relay_haproxy_router_sets_the_weights_through_its_relay(haproxy):
    router = relayed(haproxy, [sys.executable, "-c", RELAY, str(haproxy.socket_path)])
    split = TrafficSplit(canary_percent=33.3)
    await router.apply(split)
    assert await router.read() == split
    # The weights are HAProxy's own: the socket router reads the same ones.
    direct = HAProxyRouter(
        runtime_api=haproxy.socket_path,
        backend=haproxy.backend,
        stable=haproxy.stable_names,
        canary=haproxy.canary_names,
    )
    expected = direct.weights_for(33.3)
    assert await direct.current_weights() == {
        "stable1": expected.stable[0],
        "canary1": expected.canary[0],
    }


async def test_relay_haproxy_router_fails_when_its_relay_does(haproxy):
    router = relayed(haproxy, [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(subprocess.CalledProcessError):
        await router.apply(TrafficSplit(canary_percent=10))
    assert await haproxy.router.read() == TrafficSplit(canary_percent=0)


async def test_relay_answers_that_are_not_haproxys_are_refused(haproxy):
    router = relayed(haproxy, [sys.executable, "-c", "print('Unknown command.')"])
    with pytest.raises(RouterError, match="Unknown command"):
        await router.apply(TrafficSplit(canary_percent=10))
