"""HAProxyRouter against a real HAProxy fronting real demo apps (v1 stable, v2 canary).

Each test gets its own HAProxy (about 50 ms to start); the apps are shared. Counting is
done with SplitProbe: sequential requests over one keep-alive connection.
"""

import anyio
import pytest

from canarykit import RouterError, TrafficSplit
from canarykit.routers import HAProxyRouter, SplitProbe
from canarykit.testing.lab import HAProxyServer
from helpers.real_servers import demo_apps

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def apps(tmp_path_factory, haproxy_binary):
    directory = tmp_path_factory.mktemp("apps")
    # Two stable servers: the router spreads the stable share over both.
    with demo_apps(directory, "v1", "v1", "v2") as apps:
        yield apps


@pytest.fixture
def haproxy(tmp_path, apps, haproxy_binary):
    v1, _, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy", stable=[v1.address], canary=[v2.address], binary=haproxy_binary
    ) as server:
        yield server


def probe(server, requests, **settings):
    return SplitProbe(url=server.url + "/", requests=requests, **settings)


@pytest.mark.parametrize("percent", [0.5, 10, 33.3, 50])
async def test_apply_sets_the_weights_and_reads_the_split_back(haproxy, percent):
    split = TrafficSplit(canary_percent=percent)
    await haproxy.router.apply(split)
    assert await haproxy.router.read() == split
    expected = haproxy.router.weights_for(percent)
    assert await haproxy.router.current_weights() == {
        "stable1": expected.stable[0],
        "canary1": expected.canary[0],
    }
    # A router that did not apply it reads the same split from the weights alone.
    fresh = HAProxyRouter(
        runtime_api=haproxy.socket_path, backend="app", stable=["stable1"], canary=["canary1"]
    )
    assert await fresh.read() == split


# HAProxy does the balancing; one event loop is enough for the longer counts here.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_split_converges_within_one_point(haproxy, anyio_backend):
    # Start mid-way through a 90/10 cycle, as a rollout would, then move to 50/50.
    await haproxy.router.apply(TrafficSplit(canary_percent=10))
    await probe(haproxy, 37).measure(TrafficSplit(canary_percent=10))
    split = TrafficSplit(canary_percent=50)
    await haproxy.router.apply(split)
    converged = await probe(haproxy, 200, tolerance=1.0, converge=True).check(split)
    assert converged.unclassified == 0
    # After convergence, 1,000 requests are within a point of the target.
    result = await probe(haproxy, 1000).measure(split)
    assert result.error_points <= 1.0, result.describe()


@pytest.mark.parametrize(("percent", "canary"), [(0, 0), (100, 60)])
async def test_zero_and_full_send_nothing_to_the_other_arm(haproxy, percent, canary):
    await haproxy.router.apply(TrafficSplit(canary_percent=50))
    split = TrafficSplit(canary_percent=percent)
    await haproxy.router.apply(split)
    result = await probe(haproxy, 60).measure(split)
    assert (result.canary, result.stable, result.unclassified) == (canary, 60 - canary, 0)
    assert await haproxy.router.read() == split


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_half_a_percent_is_neither_zero_nor_one_percent(haproxy, anyio_backend):
    split = TrafficSplit(canary_percent=0.5)
    await haproxy.router.apply(split)
    result = await probe(haproxy, 1000).measure(split)
    # 199:1 gives one canary answer per 200 requests once its turn comes: a canary server
    # brought up from weight 0 may wait most of a cycle first. 0% gives 0, 1% gives 10.
    assert 4 <= result.canary <= 6, result.describe()


@pytest.mark.parametrize(
    ("settings", "answer"),
    [
        ({"canary": ["canary9"]}, "'No such server.' to 'get weight app/canary9'"),
        ({"backend": "nope"}, "'No such backend.' to 'get weight nope/stable1'"),
    ],
)
async def test_haproxy_error_answers_are_router_errors_and_change_nothing(
    haproxy, settings, answer
):
    await haproxy.router.apply(TrafficSplit(canary_percent=10))
    before = await haproxy.router.current_weights()
    options = {"backend": "app", "stable": ["stable1"], "canary": ["canary1"], **settings}
    wrong = HAProxyRouter(runtime_api=haproxy.socket_path, **options)
    with pytest.raises(RouterError) as caught:
        await wrong.apply(TrafficSplit(canary_percent=50))
    assert answer in str(caught.value)
    assert await haproxy.router.current_weights() == before


async def test_a_socket_without_admin_level_is_a_permission_error(tmp_path, apps, haproxy_binary):
    v1, _, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy",
        stable=[v1.address],
        canary=[v2.address],
        socket_level="user",
        binary=haproxy_binary,
    ) as server:
        # `get weight` is allowed at level user, `set weight` is not.
        assert await server.router.read() == TrafficSplit(canary_percent=0)
        with pytest.raises(RouterError, match="'Permission denied' to 'set weight app/canary1"):
            await server.router.apply(TrafficSplit(canary_percent=10))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_several_servers_per_arm(tmp_path, apps, haproxy_binary, anyio_backend):
    v1, v1b, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy",
        stable=[v1.address, v1b.address],
        canary=[v2.address],
        binary=haproxy_binary,
    ) as server:
        split = TrafficSplit(canary_percent=20)
        await server.router.apply(split)
        assert await server.router.current_weights() == {
            "stable1": 256,
            "stable2": 256,
            "canary1": 128,
        }
        result = await probe(server, 500).measure(split)
        assert result.error_points <= 1.0, result.describe()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_verify_probes_the_split_after_apply(haproxy, anyio_backend):
    haproxy.router.verify = probe(haproxy, 100, tolerance=1.0)
    await haproxy.router.apply(TrafficSplit(canary_percent=10))
    # A probe that counts the wrong header sees 0% and fails the apply with the numbers.
    haproxy.router.verify = probe(haproxy, 100, tolerance=1.0, header="X-Nothing")
    with pytest.raises(RouterError, match="100 answers had no arm marker"):
        await haproxy.router.apply(TrafficSplit(canary_percent=20))


async def test_persisted_weights_survive_a_restart(tmp_path, apps, haproxy_binary):
    v1, _, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy",
        stable=[v1.address],
        canary=[v2.address],
        persist=True,
        binary=haproxy_binary,
    ) as server:
        original = server.config_path.read_bytes()
        split = TrafficSplit(canary_percent=20)
        await server.router.apply(split)
        # The file started at 0%: only the canary's server line changed, and only its weight.
        canary_line = f"    server canary1 {v2.address} weight ".encode()
        assert canary_line + b"0\n" in original
        assert server.config_path.read_bytes() == original.replace(
            canary_line + b"0\n", canary_line + b"64\n"
        )
        server.restart()
        fresh = HAProxyRouter(
            runtime_api=server.socket_path, backend="app", stable=["stable1"], canary=["canary1"]
        )
        assert await fresh.read() == split
        result = await probe(server, 50).measure(split)
        assert result.canary == 10, result.describe()


async def test_a_config_haproxy_rejects_is_left_alone_and_so_are_the_weights(
    tmp_path, apps, haproxy_binary
):
    v1, _, v2 = apps
    with HAProxyServer(
        tmp_path / "haproxy",
        stable=[v1.address],
        canary=[v2.address],
        persist=True,
        binary=haproxy_binary,
    ) as server:
        await server.router.apply(TrafficSplit(canary_percent=10))
        # Someone breaks another part of the file; HAProxy keeps running the old one.
        with server.config_path.open("a") as config:
            config.write("    no_such_keyword here\n")
        broken = server.config_path.read_bytes()
        with pytest.raises(RouterError, match=r"haproxy -c refused .*no_such_keyword"):
            await server.router.apply(TrafficSplit(canary_percent=50))
        assert server.config_path.read_bytes() == broken
        assert await server.router.read() == TrafficSplit(canary_percent=10)
        leftovers = [p.name for p in server.config_path.parent.iterdir() if p.name.startswith(".")]
        assert leftovers == []


async def test_applies_from_two_tasks_do_not_interleave(haproxy):
    splits = [TrafficSplit(canary_percent=p) for p in (10, 20, 30, 40)]
    async with anyio.create_task_group() as group:
        for split in splits:
            group.start_soon(haproxy.router.apply, split)
    # Whichever came last, the weights are exactly one split's, and read-back names it.
    assert await haproxy.router.read() in splits
