"""NginxRouter against a real nginx fronting two real demo apps (v1 stable, v2 canary).

Each test gets its own nginx (about 50 ms to start); the two apps are shared. Counting
is done with SplitProbe: sequential requests over one keep-alive connection to a single
nginx worker, whose smooth weighted round-robin is exact.
"""

import re
import socket
import urllib.request

import anyio
import pytest

from canarykit import HeaderRoute, RouterError, TrafficSplit
from canarykit.routers import NginxRouter, SplitProbe
from canarykit.testing.lab import NginxServer
from helpers.real_servers import demo_apps

pytestmark = pytest.mark.anyio

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@pytest.fixture(scope="module")
def apps(tmp_path_factory, nginx_binary):
    directory = tmp_path_factory.mktemp("apps")
    with demo_apps(directory, "v1", "v2") as apps:
        yield apps


@pytest.fixture
def nginx(tmp_path, apps, nginx_binary):
    v1, v2 = apps
    with NginxServer(
        tmp_path / "nginx", stable=[v1.address], canary=[v2.address], binary=nginx_binary
    ) as server:
        yield server


def probe(server, requests, **settings):
    return SplitProbe(url=server.url + "/", requests=requests, **settings)


def served_by_v2(app):
    """Requests v2 has answered with a 200 so far, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{app.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^http_requests_total\{code="200",version="v2"\} (\S+)$', text, re.M)
    assert found, text
    return int(float(found.group(1)))


# nginx does the balancing; one event loop is enough for the longest count here.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ten_percent_gives_100_of_1000_sequential_requests(nginx):
    split = TrafficSplit(canary_percent=10)
    await nginx.router.apply(split)
    result = await probe(nginx, 1000).measure(split)
    assert 90 <= result.canary <= 110, result.describe()
    assert result.unclassified == 0


async def test_half_a_percent_is_neither_zero_nor_one_percent(nginx):
    split = TrafficSplit(canary_percent=0.5)
    await nginx.router.apply(split)
    result = await probe(nginx, 200).measure(split)
    # 0% would give 0 and 1% would give 2; 199:1 gives exactly 1.
    assert result.canary == 1, result.describe()


@pytest.mark.parametrize(("percent", "canary"), [(0, 0), (100, 50)])
async def test_zero_and_full_send_nothing_to_the_other_arm(nginx, percent, canary):
    await nginx.router.apply(TrafficSplit(canary_percent=50))
    split = TrafficSplit(canary_percent=percent)
    await nginx.router.apply(split)
    result = await probe(nginx, 50).measure(split)
    assert (result.canary, result.stable) == (canary, 50 - canary)


@pytest.mark.parametrize(
    ("bad_split", "nginx_says"),
    [
        # canarykit's RE2 check accepts nesting this deep, nginx's PCRE does not ("parentheses
        # are too deeply nested"): nginx -t must catch it.
        (
            TrafficSplit(
                canary_percent=50,
                header_routes=[
                    HeaderRoute(
                        header="User-Agent", value="(" * 251 + "a" + ")" * 251, match="regex"
                    )
                ],
            ),
            "pcre",
        ),
    ],
)
async def test_failed_validation_keeps_the_old_file_and_the_old_split(nginx, bad_split, nginx_says):
    good = TrafficSplit(canary_percent=10)
    await nginx.router.apply(good)
    before = nginx.include_path.read_bytes()
    with pytest.raises(RouterError, match="nginx refused the configuration") as caught:
        await nginx.router.apply(bad_split)
    assert nginx_says in str(caught.value).lower()
    assert nginx.include_path.read_bytes() == before
    assert await nginx.router.read() == good
    result = await probe(nginx, 50).measure(good)
    assert result.canary == 5, result.describe()


async def test_an_unknown_server_fails_validation_and_changes_nothing(tmp_path, nginx, apps):
    await nginx.router.apply(TrafficSplit(canary_percent=10))
    before = nginx.include_path.read_bytes()
    router = NginxRouter(
        include_path=nginx.include_path,
        main_config=nginx.config_path,
        pid_file=nginx.pid_file,
        prefix=nginx.directory,
        stable=[apps[0].address],
        canary=["no-such-host.invalid:80"],
        nginx=nginx.router.nginx,
    )
    with pytest.raises(RouterError, match="host not found"):
        await router.apply(TrafficSplit(canary_percent=50))
    assert nginx.include_path.read_bytes() == before


@pytest.mark.parametrize(
    ("http_block", "problem"),
    [
        ("server { listen 127.0.0.1:1; return 200; }", "does not include"),
        ('include "{include}"; server { listen 127.0.0.1:1; return 200; }', "proxies through"),
    ],
    ids=["no include", "no proxy_pass through the variable"],
)
async def test_a_main_config_breaking_the_contract_is_refused_before_reloading(
    tmp_path, nginx, http_block, problem
):
    await nginx.router.apply(TrafficSplit(canary_percent=10))
    before = nginx.include_path.read_bytes()
    other = tmp_path / "other.conf"
    http_block = http_block.replace("{include}", str(nginx.include_path))
    other.write_text(
        f'pid "{tmp_path}/other.pid";\nerror_log "{tmp_path}/other.log";\n'
        f"events {{ }}\nhttp {{ {http_block} }}\n"
    )
    router = NginxRouter(
        include_path=nginx.include_path,
        main_config=other,
        pid_file=nginx.pid_file,
        prefix=nginx.directory,
        stable=nginx.router.stable,
        canary=nginx.router.canary,
        nginx=nginx.router.nginx,
    )
    with pytest.raises(RouterError, match=problem):
        await router.apply(TrafficSplit(canary_percent=50))
    assert nginx.include_path.read_bytes() == before
    assert await nginx.router.read() == TrafficSplit(canary_percent=10)


async def test_a_chrome_user_agent_reaches_v2_at_zero_weight(nginx):
    route = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    split = TrafficSplit(canary_percent=0, header_routes=[route])
    await nginx.router.apply(split)
    chrome = await probe(nginx, 50, headers={"User-Agent": CHROME}).check(split)
    firefox = await probe(nginx, 50, headers={"User-Agent": FIREFOX}).check(split)
    assert (chrome.canary, firefox.canary) == (50, 0)


async def test_exact_and_prefix_routes_match_case_sensitively(nginx):
    routes = [
        HeaderRoute(header="X-Canary", value="Yes; {really}"),
        HeaderRoute(header="X-Team", value="qa-", match="prefix"),
    ]
    split = TrafficSplit(canary_percent=0, header_routes=routes)
    await nginx.router.apply(split)
    for headers, expected in [
        ({"X-Canary": "Yes; {really}"}, 10),
        ({"X-Canary": "yes; {really}"}, 0),  # nginx's plain map keys would match this
        ({"X-Team": "qa-berlin"}, 10),
        ({"X-Team": "QA-berlin"}, 0),
        ({}, 0),
    ]:
        result = await probe(nginx, 10, headers=headers).measure(split)
        assert result.canary == expected, (headers, result.describe())


async def test_mirroring_copies_requests_to_v2(nginx, apps):
    _, v2 = apps
    split = TrafficSplit(canary_percent=0, mirror_percent=100)
    await nginx.router.apply(split)
    before = served_by_v2(v2)
    result = await probe(nginx, 50).measure(split)
    assert result.canary == 0  # the answers all came from v1
    with anyio.fail_after(5):
        while served_by_v2(v2) - before < 50:
            await anyio.sleep(0.02)
    assert served_by_v2(v2) - before == 50


async def test_mirroring_a_share_copies_about_that_share(nginx, apps):
    _, v2 = apps
    split = TrafficSplit(canary_percent=0, mirror_percent=50)
    await nginx.router.apply(split)
    before = served_by_v2(v2)
    await probe(nginx, 100).measure(split)
    await anyio.sleep(0.2)  # mirror subrequests finish after their answers
    mirrored = served_by_v2(v2) - before
    # split_clients on the random $request_id: binomial(100, 0.5), sd 5.
    assert 20 <= mirrored <= 80, mirrored


async def test_read_back_returns_the_applied_split(nginx):
    split = TrafficSplit(
        canary_percent=12.5,
        header_routes=[HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")],
        mirror_percent=5,
    )
    await nginx.router.apply(split)
    assert await nginx.router.read() == split


async def test_verification_by_probe_passes_within_tolerance(nginx):
    nginx.router.verify = probe(nginx, 100, tolerance=1.0)
    await nginx.router.apply(TrafficSplit(canary_percent=10))
    assert nginx.router.last_apply_seconds is not None


async def test_verification_by_probe_fails_with_the_numbers(nginx):
    nginx.router.verify = probe(nginx, 100, canary_value="v3")  # nothing answers as v3
    with pytest.raises(RouterError, match="canary answered 0 of 100 requests"):
        await nginx.router.apply(TrafficSplit(canary_percent=10))


async def test_reload_by_command_works_too(tmp_path, apps, nginx_binary):
    v1, v2 = apps
    with NginxServer(
        tmp_path / "nginx",
        stable=[v1.address],
        canary=[v2.address],
        binary=nginx_binary,
        reload="command",
        worker_processes=2,
    ) as server:
        split = TrafficSplit(canary_percent=25)
        await server.router.apply(split)
        result = await probe(server, 100).measure(split)
        assert result.canary == 25, result.describe()


async def test_apply_after_nginx_stopped_fails_and_keeps_the_old_file(nginx):
    await nginx.router.apply(TrafficSplit(canary_percent=10))
    before = nginx.include_path.read_bytes()
    nginx.stop()
    with pytest.raises(RouterError, match="nginx"):
        await nginx.router.apply(TrafficSplit(canary_percent=20))
    assert nginx.include_path.read_bytes() == before


# Only asyncio: the master blocks for about 2 s retrying the bind, whatever the loop.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_reload_the_master_refuses_keeps_the_old_file_and_split(nginx):
    good = TrafficSplit(canary_percent=10)
    await nginx.router.apply(good)
    before = nginx.include_path.read_bytes()
    # nginx -T does not bind, so it passes; the master's reload cannot bind and gives up.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config = nginx.config_path.read_text()
        listen = f"        listen 127.0.0.1:{nginx.port};\n"
        nginx.config_path.write_text(
            config.replace(listen, listen + f"        listen 127.0.0.1:{taken};\n")
        )
        nginx.router.timeout = 0.5
        with pytest.raises(RouterError, match="started no workers"):
            await nginx.router.apply(TrafficSplit(canary_percent=50))
        assert nginx.include_path.read_bytes() == before
        assert await nginx.router.read() == good
        # Old workers, then those of the second reload (the restored file), serve 10%;
        # a switch between them mid-sequence may shift a request or two, never to 50%.
        result = await probe(nginx, 100).measure(good)
        assert 8 <= result.canary <= 12, result.describe()
