"""``canarykit init`` against a real nginx and a real HAProxy fronting two demo apps.

nginx: the include file is made at stable (validated, reloaded when nginx runs), counted
from outside; a hand-written file is left alone, described without its values, and
replaced only with --force. HAProxy: the weights are read and reported, at stable or not.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import stat

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit.routers import SplitProbe
from canarykit.testing.lab import HAProxyServer, NginxServer
from helpers.policies import ERROR_RATE, WEIGHTS_PLAN, policy, rollout_table
from helpers.real_servers import demo_apps, need_binary

# Real nginx and HAProxy processes: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.usefixtures("lock_dir")]

STABLE = ck.TrafficSplit(canary_percent=0)
SECRET = "Bearer s3cr3t-t0ken-never-shown"
HAND_WRITTEN = f"""upstream shop {{
    server 127.0.0.1:1 weight=9;
    server 127.0.0.1:2 weight=1;
}}
proxy_set_header Authorization "{SECRET}";
"""

PLAN = policy(WEIGHTS_PLAN, ERROR_RATE, rollout_table("shop"))


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    need_binary("nginx", "nginx-light")
    directory = tmp_path_factory.mktemp("apps")
    with demo_apps(directory, "v1", "v2") as apps:
        yield apps


@pytest.fixture
def nginx(tmp_path, apps):
    v1, v2 = apps
    path = need_binary("nginx", "nginx-light")
    with NginxServer(
        tmp_path / "nginx", stable=[v1.address], canary=[v2.address], binary=path
    ) as server:
        yield server


def nginx_policy(tmp_path, server):
    router = server.router
    text = PLAN.format(state=tmp_path / "state") + (
        "[router]\n"
        'kind = "nginx"\n'
        f'include_path = "{router.include_path}"\n'
        f'main_config = "{router.main_config}"\n'
        f'pid_file = "{router.pid_file}"\n'
        f'prefix = "{router.prefix}"\n'
        f'nginx = "{router.nginx}"\n'
        f"stable = {list(router.stable)!r}\n".replace("'", '"')
        + f"canary = {list(router.canary)!r}\n".replace("'", '"')
    )
    path = tmp_path / "shop.toml"
    path.write_text(text)
    return str(path)


async def init(*argv):
    return await anyio.to_thread.run_sync(main, ["init", *argv])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_init_puts_a_promoted_nginx_back_at_stable_counted_from_outside(
    tmp_path, nginx, capsys
):
    await nginx.router.apply(ck.TrafficSplit(canary_percent=100))
    policy = nginx_policy(tmp_path, nginx)
    assert await init(policy) == 0
    out = capsys.readouterr().out
    assert "validated by nginx -T and reloaded" in out
    assert "init: the router is at stable" in out
    assert await nginx.router.read() == STABLE
    # Counted from outside: 100 sequential requests, none answered by v2.
    await SplitProbe(url=nginx.url + "/", requests=100, tolerance=0.0).check(STABLE)
    # Already there: a second init changes nothing and says so.
    assert await init(policy) == 0
    assert "already sends all traffic to stable" in capsys.readouterr().out


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hand_written_file_is_described_not_quoted_and_replaced_only_with_force(
    tmp_path, nginx, capsys
):
    nginx.include_path.write_text(HAND_WRITTEN)
    policy = nginx_policy(tmp_path, nginx)
    assert await init(policy) == 1
    err = capsys.readouterr().err
    assert "is not canarykit's: it holds 5 lines" in err, err
    assert "upstream x1" in err and "server x2" in err and "--force" in err
    assert SECRET not in err and "s3cr3t" not in err and "127.0.0.1:1" not in err
    assert nginx.include_path.read_text() == HAND_WRITTEN  # left alone

    assert await init(policy, "--force") == 0
    out = capsys.readouterr().out
    kept = nginx.include_path.with_name("canary.conf.before-canarykit")
    assert f"kept as {kept}" in out and SECRET not in out
    assert kept.read_text() == HAND_WRITTEN
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert await nginx.router.read() == STABLE


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_before_nginx_starts_the_file_is_written_and_validated(tmp_path, apps, capsys):
    v1, v2 = apps
    path = need_binary("nginx", "nginx-light")
    server = NginxServer(tmp_path / "nginx", stable=[v1.address], canary=[v2.address], binary=path)
    with server:
        policy = nginx_policy(tmp_path, server)
    # Stopped: no pid file; the main config stays. Start from no include file at all.
    server.include_path.unlink()
    assert not server.pid_file.exists()
    assert await init(policy) == 0
    out = capsys.readouterr().out
    assert "nginx is not running" in out and "validated by nginx -T" in out
    assert await server.router.read() == STABLE


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_init_refuses_while_a_saved_rollout_is_in_progress(tmp_path, nginx, capsys):
    policy = nginx_policy(tmp_path, nginx)
    store = ck.stores.FileStore(tmp_path / "state")
    state = ck.machine.RolloutState(
        phase=ck.Phase.PAUSED, confirmed=ck.TrafficSplit(canary_percent=10)
    )
    await store.save("shop", {"state": state.to_json(), "release": "v7"})
    assert await init(policy) == 1
    err = capsys.readouterr().err
    assert "release v7" in err and "still paused" in err and "--force" in err


# ---------------------------------------------------------------------------- HAProxy


@pytest.fixture
def haproxy(tmp_path, apps):
    v1, v2 = apps
    path = need_binary("haproxy", "haproxy")
    with HAProxyServer(
        tmp_path / "haproxy", stable=[v1.address], canary=[v2.address], binary=path
    ) as server:
        yield server


def haproxy_policy(tmp_path, server):
    router = server.router
    text = PLAN.format(state=tmp_path / "state") + (
        "[router]\n"
        'kind = "haproxy"\n'
        f'runtime_api = "{router.runtime_api}"\n'
        f'backend = "{router.backend}"\n'
        f"stable = {list(router.stable)!r}\n".replace("'", '"')
        + f"canary = {list(router.canary)!r}\n".replace("'", '"')
    )
    path = tmp_path / "shop.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_init_reports_haproxy_weights_and_whether_they_are_at_stable(
    tmp_path, haproxy, capsys
):
    policy = haproxy_policy(tmp_path, haproxy)
    assert await init(policy) == 0
    out = capsys.readouterr().out
    stable, canary = haproxy.router.stable[0], haproxy.router.canary[0]
    assert f"stable servers: {stable} " in out and f"canary servers: {canary} 0" in out, out
    assert "init: the router is at stable" in out

    await haproxy.router.apply(ck.TrafficSplit(canary_percent=10))
    assert await init(policy) == 6
    out = capsys.readouterr().out
    assert "NOT at stable: canary 10%" in out and "--adopt" in out, out
    assert (await haproxy.router.read()).canary_percent == 10  # reported, not changed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_canarykit_file_for_other_servers_is_named_as_such(tmp_path, nginx, capsys):
    other = ck.routers.NginxRouter(
        include_path=nginx.include_path,
        main_config=nginx.router.main_config,
        pid_file=nginx.router.pid_file,
        stable=["127.0.0.1:7"],
        canary=["127.0.0.1:8"],
    )
    other.write(ck.TrafficSplit(canary_percent=10))
    policy = nginx_policy(tmp_path, nginx)
    assert await init(policy) == 1
    err = capsys.readouterr().err
    assert "was written by canarykit for other settings" in err and "127.0.0.1:7" in err, err
    assert await init(policy, "--force") == 0
    assert await nginx.router.read() == STABLE


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_policy_with_slots_inits_the_first_slot_then_reports_the_live_one(
    tmp_path, nginx, capsys
):
    nginx.router.include_path.unlink()  # no slot live yet
    policy = nginx_policy(tmp_path, nginx)
    with open(policy, "a") as file:
        file.write('slots = ["blue", "green"]\n')
    built = ck.policy.load_policy(policy).deployment.build_router()
    assert repr(built) == "SlotRouter(slots=['blue', 'green'], live='unknown')"
    assert await init(policy) == 0
    out = capsys.readouterr().out
    assert "making blue live" in out and "slot blue is live; the next release goes to green" in out
    # A release promoted to green leaves all traffic there: green is then the live slot,
    # found without moving anything, and the next release goes to blue.
    await nginx.router.apply(ck.TrafficSplit(canary_percent=100))
    assert await init(policy) == 0
    assert "slot green is live; the next release goes to blue" in capsys.readouterr().out
    v1, v2 = nginx.router.stable, nginx.router.canary
    await SplitProbe(url=nginx.url + "/", requests=50, tolerance=0.0).check(
        ck.TrafficSplit(canary_percent=100)  # every request still to green's servers
    )
    assert (v1, v2) == (nginx.router.stable, nginx.router.canary)


def test_slots_must_name_two_different_slots(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text(
        PLAN.format(state=tmp_path / "state")
        + '[router]\nkind = "haproxy"\nruntime_api = "127.0.0.1:9"\nbackend = "app"\n'
        'stable = ["a"]\ncanary = ["b"]\nslots = ["blue", "blue"]\n'
    )
    with pytest.raises(ck.ConfigError, match=r"^router\.slots: must name two different"):
        ck.policy.load_policy(policy).deployment.build_router()
