"""HAProxyRouter without HAProxy: weights, answer parsing, safety, and the config rewrite.

A small fake runtime API (a UNIX or TCP listener in the test's event loop) plays HAProxy's
CLI in non-interactive mode: it reads one command line, answers, and closes. It either
keeps weights like HAProxy (`FakeHAProxy`) or answers whatever a test scripts.
"""

# Imports internals on purpose: a router's helpers.

import bisect
import contextlib
import itertools
import os
import re
import stat
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import ConfigError, HeaderRoute, RouterError, TrafficSplit
from canarykit.routers import HAProxyRouter, HAProxyWeights, SplitProbe
from canarykit.routers._haproxy import MAX_WEIGHT, rewrite_weights, weights_for
from canarykit.testing.lab import HAProxyServer

pytestmark = pytest.mark.anyio


# -- weights --


@pytest.mark.parametrize(
    ("percent", "stable", "canary"),
    [
        (0, (256,), (0,)),
        (0.5, (199,), (1,)),  # exactly 1:199, neither 0% nor 1%
        (1, (198,), (2,)),
        (10, (252,), (28,)),
        (33.3, (256,), (128,)),  # 1:2 is the nearest within 256: 33.333%
        (50, (256,), (256,)),
        (99.5, (1,), (199,)),
        (100, (0,), (256,)),
    ],
)
def test_weights_for_one_server_per_arm(percent, stable, canary):
    weights = weights_for(percent)
    assert weights == HAProxyWeights(stable=stable, canary=canary)
    assert abs(weights.canary_percent - percent) < 0.05


@pytest.mark.parametrize(
    ("percent", "servers", "stable", "canary"),
    [
        (0, (3, 2), (256, 256, 256), (0, 0)),
        (10, (3, 2), (252, 252, 252), (42, 42)),  # exact and even
        (0.5, (3, 2), (199, 199, 199), (2, 1)),  # exact, canary spread as evenly as it goes
        (1, (2, 2), (198, 198), (2, 2)),
        (33.3, (3, 2), (223, 222, 222), (167, 166)),
        (50, (2, 3), (255, 255), (170, 170, 170)),
        # 199 : 1 is exact; an even 2 : 398 would not fit 256, so one stable server gets 0.
        (99.5, (2, 1), (1, 0), (199,)),
        (100, (2, 3), (0, 0), (256, 256, 256)),
    ],
)
def test_weights_for_several_servers_per_arm(percent, servers, stable, canary):
    weights = weights_for(percent, *servers)
    assert weights == HAProxyWeights(stable=stable, canary=canary)
    assert abs(weights.canary_percent - percent) < 0.05


def achievable(stable_servers, canary_servers):
    """Every canary share that arm totals within 256 per server can give, sorted."""
    shares = {
        c / (c + s)
        for c in range(MAX_WEIGHT * canary_servers + 1)
        for s in range(MAX_WEIGHT * stable_servers + 1)
        if c + s
    }
    return sorted(shares)


ACHIEVABLE = {servers: achievable(*servers) for servers in [(1, 1), (2, 1), (1, 2)]}


@given(
    percent=st.floats(min_value=0, max_value=100),
    servers=st.sampled_from(sorted(ACHIEVABLE)),
)
def test_weights_for_is_as_close_as_any_pair_of_totals_can_be(percent, servers):
    # Strictly between 0 and 100 the canary keeps some traffic, and so does stable.
    shares = ACHIEVABLE[servers] if percent in (0, 100) else ACHIEVABLE[servers][1:-1]
    index = bisect.bisect_left(shares, percent / 100)
    best = min(
        abs(float(shares[i]) - percent / 100) for i in (index - 1, index) if 0 <= i < len(shares)
    )
    weights = weights_for(percent, *servers)
    assert abs(weights.canary_percent / 100 - percent / 100) <= best + 1e-11


@given(
    percent=st.floats(min_value=0, max_value=100),
    stable_servers=st.integers(1, 5),
    canary_servers=st.integers(1, 5),
)
def test_weights_are_in_range_and_spread_evenly(percent, stable_servers, canary_servers):
    weights = weights_for(percent, stable_servers, canary_servers)
    assert len(weights.stable) == stable_servers and len(weights.canary) == canary_servers
    for arm in (weights.stable, weights.canary):
        assert all(0 <= w <= MAX_WEIGHT for w in arm)
        assert max(arm) - min(arm) <= 1
    # Between 0 and 100 exclusive both arms keep traffic: no arm is silently dropped.
    if 0 < percent < 100:
        assert sum(weights.stable) > 0 and sum(weights.canary) > 0


@given(
    stable_servers=st.integers(1, 4),
    canary_servers=st.integers(1, 4),
    data=st.data(),
)
def test_precision_within_the_representable_range_is_five_hundredths_of_a_point(
    stable_servers, canary_servers, data
):
    low = 100 / (1 + MAX_WEIGHT * stable_servers)
    high = 100 - 100 / (1 + MAX_WEIGHT * canary_servers)
    percent = data.draw(st.floats(min_value=low, max_value=high))
    weights = weights_for(percent, stable_servers, canary_servers)
    assert abs(weights.canary_percent - percent) <= 0.05


@given(low=st.floats(0, 100), high=st.floats(0, 100), servers=st.sampled_from([(1, 1), (3, 2)]))
def test_more_canary_never_gives_less(low, high, servers):
    low, high = sorted((low, high))
    assert weights_for(low, *servers).canary_percent <= weights_for(high, *servers).canary_percent


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"percent": -1}, "canary_percent"),
        ({"percent": 100.5}, "canary_percent"),
        ({"percent": float("nan")}, "canary_percent"),
        ({"percent": 10, "stable_servers": 0}, "stable_servers"),
        ({"percent": 10, "canary_servers": True}, "canary_servers"),
    ],
)
def test_weights_for_refuses_bad_input(kwargs, field):
    with pytest.raises(ConfigError) as caught:
        weights_for(**kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("stable", "canary", "field"),
    [
        ((257,), (1,), "stable[0]"),
        ((1,), (-1,), "canary[0]"),
        ((1,), (1.5,), "canary[0]"),
        ((), (1,), "stable"),
        ((0,), (0,), "weights"),
    ],
)
def test_haproxy_weights_refuse_what_haproxy_would(stable, canary, field):
    with pytest.raises(ConfigError) as caught:
        HAProxyWeights(stable=stable, canary=canary)
    assert caught.value.field == field


def router(**overrides):
    settings = {
        "runtime_api": "/run/haproxy/admin.sock",
        "backend": "app",
        "stable": ["v1"],
        "canary": ["v2"],
    }
    settings.update(overrides)
    return HAProxyRouter(**settings)


def test_a_split_the_weights_cannot_represent_is_refused_naming_the_nearest():
    with pytest.raises(RouterError, match=r"cannot give 0\.1% .* nearest is 0\.3891%"):
        router().weights(TrafficSplit(canary_percent=0.1))
    # Four stable servers make the smallest step 1/1025: 0.1% is then within 0.003 points.
    four = router(stable=["a", "b", "c", "d"])
    assert abs(four.weights(TrafficSplit(canary_percent=0.1)).canary_percent - 0.1) < 0.003
    # A wider tolerance accepts the nearest step.
    loose = router(weight_tolerance=0.3)
    assert loose.weights(TrafficSplit(canary_percent=0.1)) == weights_for(0.1)


@pytest.mark.parametrize(
    "split",
    [
        TrafficSplit(canary_percent=10, mirror_percent=5),
        TrafficSplit(
            canary_percent=10,
            header_routes=[HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")],
        ),
    ],
)
def test_header_routes_and_mirroring_are_refused(split):
    assert router().capabilities.header_routes is False
    assert router().capabilities.mirroring is False
    with pytest.raises(RouterError, match="cannot"):
        router().weights(split)


def test_capabilities_are_weights_and_read_back():
    capabilities = router().capabilities
    assert (capabilities.weights, capabilities.read_back) == (True, True)


# -- safety --

HOSTILE = [
    "v2\nset weight app/v1 0",
    "v2;set weight app/v1 0",
    "v2; shutdown sessions server app/v1",
    "v2}",
    'v2"',
    "v2'",
    "v2 extra",
    "v2\r",
    "",
    "v2/../v1",
]


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
@pytest.mark.parametrize("field", ["backend", "stable", "canary"])
def test_hostile_names_are_refused_naming_the_field(field, bad):
    value = bad if field == "backend" else [bad]
    with pytest.raises(ConfigError) as caught:
        router(**{field: value})
    assert caught.value.field == (field if field == "backend" else f"{field}[0]")


@pytest.mark.parametrize(
    "bad",
    [
        "/tmp/hap.sock\nset weight app/v1 0",
        "/tmp/hap;.sock",
        "/tmp/hap}.sock",
        '/tmp/"hap.sock',
        "/tmp/hap sock",
        "127.0.0.1:9999;x",
        "127.0.0.1:99999",
        "hap.sock",
        42,
    ],
    ids=repr,
)
def test_hostile_runtime_api_addresses_are_refused(bad):
    with pytest.raises(ConfigError) as caught:
        router(runtime_api=bad)
    assert caught.value.field == "runtime_api"


def test_other_settings_are_checked():
    for field, value in [
        ("timeout", 0),
        ("weight_tolerance", -0.1),
        ("verify", "yes"),
        ("stable", "v1"),
        ("stable", []),
    ]:
        with pytest.raises(ConfigError) as caught:
            router(**{field: value})
        assert caught.value.field == field
    with pytest.raises(ConfigError, match="twice"):
        router(stable=["v1", "v1"])
    with pytest.raises(ConfigError, match="also a stable server"):
        router(stable=["v1"], canary=["v1"])


names = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc"]),
    min_size=1,
    max_size=20,
)


@given(backend=names, server=names)
def test_no_accepted_name_can_add_a_runtime_command(backend, server):
    try:
        hap = router(backend=backend, canary=[server])
    except ConfigError:
        return
    line = "; ".join(hap.commands(weights_for(10)))
    # Two commands, each exactly four words; nothing that HAProxy would read as more.
    assert line.count(";") == 1
    assert not any(char in line for char in "\n\r\"'\\#")
    for command in line.split("; "):
        words = command.split()
        assert words[:2] == ["set", "weight"] and len(words) == 4
        assert words[2] in (f"{backend}/v1", f"{backend}/{server}")


def test_runtime_api_forms():
    assert router(runtime_api="/run/hap.sock").runtime_api == "unix:/run/hap.sock"
    assert router(runtime_api="unix:/run/hap.sock").runtime_api == "unix:/run/hap.sock"
    assert router(runtime_api=Path("/run/hap.sock")).runtime_api == "unix:/run/hap.sock"
    assert router(runtime_api="127.0.0.1:9999").runtime_api == "127.0.0.1:9999"
    assert router(runtime_api="[::1]:9999").runtime_api == "[::1]:9999"
    assert router(runtime_api="haproxy.internal:9999").runtime_api == "haproxy.internal:9999"


# -- a fake runtime API --


class FakeHAProxy:
    """Keeps server weights and answers get/set weight like HAProxy 2.6; records lines."""

    def __init__(self, weights, *, backend="app", apply_sets=True):
        self.weights = dict(weights)
        self.backend = backend
        self.apply_sets = apply_sets
        self.lines: list[str] = []

    def __call__(self, line):
        self.lines.append(line)
        return "".join(self.answer(command.strip()) for command in line.split(";"))

    def answer(self, command):
        words = command.split()
        if len(words) < 3 or words[1] != "weight" or words[0] not in ("get", "set"):
            return "Unknown command, but maybe one of the following ones is a better match:\n\n"
        backend, _, server = words[2].partition("/")
        if backend != self.backend:
            return "No such backend.\n\n"
        if server not in self.weights:
            return "No such server.\n\n"
        if words[0] == "get":
            return f"{self.weights[server]} (initial 1)\n\n"
        weight = int(words[3])
        if not 0 <= weight <= 256:
            return "Absolute weight can only be between 0 and 256 inclusive.\n\n"
        if self.apply_sets:
            self.weights[server] = weight
        return "\n"


@asynccontextmanager
async def runtime_api(tmp_path, answer: Callable[[str], str | None], *, tcp=False):
    """Serve `answer(line)` per connection; None means: never answer (hold the line)."""
    if tcp:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        address = f"127.0.0.1:{port}"
    else:
        path = tmp_path / "fake.sock"
        listener = await anyio.create_unix_listener(path)
        address = str(path)

    async def serve(stream):
        async with stream:
            received = b""
            while not received.endswith(b"\n"):
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            text = answer(received.decode())
            if text is None:
                await anyio.sleep_forever()
            # The router may hang up first (on a flood of an answer): that is its right.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(text.encode())

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        yield address
        group.cancel_scope.cancel()


async def test_apply_sets_the_weights_and_read_gives_the_split_back(tmp_path):
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address)
        split = TrafficSplit(canary_percent=33.3)
        await hap.apply(split)
        assert fake.weights == {"v1": 256, "v2": 128}
        assert await hap.read() == split
        assert await hap.current_weights() == {"v1": 256, "v2": 128}
        assert hap.last_apply_seconds is not None


async def test_the_tcp_runtime_api_works_too(tmp_path):
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake, tcp=True) as address:
        hap = router(runtime_api=address)
        await hap.apply(TrafficSplit(canary_percent=10))
        assert fake.weights == {"v1": 252, "v2": 28}


async def test_rising_weights_are_set_first_so_no_instant_has_every_server_at_zero(tmp_path):
    fake = FakeHAProxy({"v1": 0, "v2": 256})
    async with runtime_api(tmp_path, fake) as address:
        await router(runtime_api=address).apply(TrafficSplit(canary_percent=0))
    sets = [line for line in fake.lines if line.startswith("set")]
    assert sets == ["set weight app/v1 256; set weight app/v2 0\n"]
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        await router(runtime_api=address).apply(TrafficSplit(canary_percent=100))
    sets = [line for line in fake.lines if line.startswith("set")]
    assert sets == ["set weight app/v2 256; set weight app/v1 0\n"]


async def test_applying_the_weights_in_force_sends_no_set(tmp_path):
    fake = FakeHAProxy({"v1": 252, "v2": 28})
    async with runtime_api(tmp_path, fake) as address:
        await router(runtime_api=address).apply(TrafficSplit(canary_percent=10))
    assert not any(line.startswith("set") for line in fake.lines)


async def test_many_long_server_names_are_split_over_several_command_lines(tmp_path):
    stable = [f"stable-{i:03d}-" + "s" * 100 for i in range(30)]
    canary = [f"canary-{i:03d}-" + "c" * 100 for i in range(20)]
    fake = FakeHAProxy(dict.fromkeys(stable, 256) | dict.fromkeys(canary, 0))
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address, stable=stable, canary=canary)
        await hap.apply(TrafficSplit(canary_percent=10))
        assert await hap.read() == TrafficSplit(canary_percent=10)
    expected = hap.weights(TrafficSplit(canary_percent=10))
    assert [fake.weights[name] for name in stable] == list(expected.stable)
    assert [fake.weights[name] for name in canary] == list(expected.canary)
    assert max(len(line) for line in fake.lines) <= 4001
    assert sum(line.startswith("set") for line in fake.lines) > 1


@pytest.mark.parametrize(
    ("weights", "percent"),
    [
        ({"v1": 252, "v2": 28}, 10.0),  # what weights_for(10) gives: reads back as 10
        ({"v1": 3, "v2": 1}, 25.0),  # set by hand: 25% exactly
        ({"v1": 100, "v2": 7}, 700 / 107),  # no short decimal gives these: the exact ratio
        ({"v1": 0, "v2": 9}, 100.0),
    ],
)
async def test_a_fresh_router_reads_the_split_from_the_weights(tmp_path, weights, percent):
    async with runtime_api(tmp_path, FakeHAProxy(weights)) as address:
        assert await router(runtime_api=address).read() == TrafficSplit(canary_percent=percent)


async def test_every_server_at_weight_zero_reads_as_an_error(tmp_path):
    async with runtime_api(tmp_path, FakeHAProxy({"v1": 0, "v2": 0})) as address:
        with pytest.raises(RouterError, match="every server of backend app has weight 0"):
            await router(runtime_api=address).read()
        # ... and apply repairs it.
        hap = router(runtime_api=address)
        await hap.apply(TrafficSplit(canary_percent=50))
        assert await hap.read() == TrafficSplit(canary_percent=50)


async def test_weights_changed_behind_the_routers_back_fail_the_apply(tmp_path):
    fake = FakeHAProxy({"v1": 256, "v2": 0}, apply_sets=False)
    async with runtime_api(tmp_path, fake) as address:
        with pytest.raises(RouterError, match="something else changed them"):
            await router(runtime_api=address).apply(TrafficSplit(canary_percent=10))


GET_ERRORS = [
    "No such server.\n\n",
    "No such backend.\n\n",
    "Permission denied\n\n",
    "Require 'backend/server'.\n\n",
    "Unknown command, but maybe one of the following ones is a better match:\n  help\n\n",
    "50 (initial 10)\n",  # no closing empty line
    "300 (initial 10)\n\n",  # beyond 256
    "fifty (initial 10)\n\n",
    "HTTP/1.1 400 Bad Request\r\n\r\n",  # not HAProxy's CLI at all
    "\x00\xff garbage",
]


@pytest.mark.parametrize("answer", GET_ERRORS, ids=repr)
async def test_every_unexpected_get_answer_is_a_router_error_quoting_it(tmp_path, answer):
    async with runtime_api(tmp_path, lambda line: answer) as address:
        with pytest.raises(RouterError) as caught:
            await router(runtime_api=address).read()
    message = str(caught.value)
    assert repr(answer.strip("\n"))[:40] in message
    assert "'get weight app/v1'" in message


async def test_an_extra_answer_after_the_expected_ones_is_an_error(tmp_path):
    async with runtime_api(tmp_path, lambda line: "9 (initial 9)\n\n" * 2 + "more\n\n") as address:
        with pytest.raises(RouterError, match=r"answered 'more' more than"):
            await router(runtime_api=address).read()


async def test_an_empty_answer_is_an_error(tmp_path):
    async with runtime_api(tmp_path, lambda line: "") as address:
        with pytest.raises(RouterError, match="answered an empty answer to 'get weight app/v1'"):
            await router(runtime_api=address).read()


@pytest.mark.parametrize(
    "refusal",
    ["Permission denied\n\n", "Absolute weight can only be between 0 and 256 inclusive.\n\n"],
)
async def test_a_refused_set_is_a_router_error_quoting_haproxy(tmp_path, refusal):
    fake = FakeHAProxy({"v1": 256, "v2": 0})

    def answer(line):
        return refusal if line.startswith("set") else fake(line)

    async with runtime_api(tmp_path, answer) as address:
        with pytest.raises(RouterError) as caught:
            await router(runtime_api=address).apply(TrafficSplit(canary_percent=10))
    message = str(caught.value)
    assert repr(refusal.strip("\n")) in message
    assert "'set weight app/v2 28'" in message and "partly set" in message


async def test_an_unknown_server_fails_before_any_weight_changes(tmp_path):
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        with pytest.raises(RouterError, match=r"'No such server\.' to 'get weight app/v3'"):
            await router(runtime_api=address, canary=["v3"]).apply(TrafficSplit(canary_percent=10))
    assert not any(line.startswith("set") for line in fake.lines)
    assert fake.weights == {"v1": 256, "v2": 0}


async def test_a_silent_runtime_api_times_out_as_a_router_error(tmp_path):
    async with runtime_api(tmp_path, lambda line: None) as address:
        with pytest.raises(
            RouterError, match=r"did not answer 'get weight app/v1; .*' within 0\.2 s"
        ):
            await router(runtime_api=address, timeout=0.2).read()


async def test_a_flood_of_an_answer_is_cut_off(tmp_path):
    async with runtime_api(tmp_path, lambda line: "x" * (1 << 20) + "y" * 10) as address:
        with pytest.raises(RouterError, match="answered more than 1048576 bytes"):
            await router(runtime_api=address).read()


async def test_no_socket_is_a_router_error(tmp_path):
    with pytest.raises(RouterError, match="cannot talk to HAProxy's runtime API"):
        await router(runtime_api=str(tmp_path / "missing.sock")).read()


async def test_the_probe_is_checked_and_runs_in_convergence_mode(tmp_path):
    # Nothing listens at the probe's URL: the probe's failure proves it ran after the apply.
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    probe = SplitProbe(url="http://127.0.0.1:9/", requests=10, timeout=0.5)
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address, verify=probe)
        with pytest.raises(RouterError, match="split probe request"):
            await hap.apply(TrafficSplit(canary_percent=10))
    assert fake.weights == {"v1": 252, "v2": 28}


# -- the config file --

CONFIG = (
    "# haproxy.cfg\r\n"
    "global\r\n"
    "    stats socket /run/hap.sock mode 600 level admin\r\n"
    "backend other\r\n"
    "    server v1 10.0.0.9:80 weight 5\r\n"
    "backend app\r\n"
    "    balance roundrobin\r\n"
    "\tserver  v1\t10.0.0.1:80 check weight 10   # the old one\r\n"
    "    server v2 10.0.0.2:80 check inter 2s\r\n"
    "    server v9 10.0.0.3:80 weight 7\r\n"
    "listen stats\r\n"
    "    bind :8404\r\n"
)


def test_rewrite_changes_only_the_named_servers_of_the_backend():
    new = rewrite_weights(CONFIG, "app", {"v1": 252, "v2": 28})
    old_lines, new_lines = CONFIG.splitlines(keepends=True), new.splitlines(keepends=True)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    assert changed == [7, 8]
    assert new_lines[7] == "\tserver  v1\t10.0.0.1:80 check weight 252   # the old one\r\n"
    assert new_lines[8] == "    server v2 10.0.0.2:80 check inter 2s weight 28\r\n"


def test_rewrite_finds_servers_in_a_listen_section_and_keeps_a_missing_final_newline():
    text = "listen app\n    bind :80\n    server v1 a:1\n    server v2 b:2 weight 3"
    assert rewrite_weights(text, "app", {"v1": 0, "v2": 256}) == (
        "listen app\n    bind :80\n    server v1 a:1 weight 0\n    server v2 b:2 weight 256"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("backend web\n    server v1 a:1\n    server v2 a:2\n", "has no section 'backend app'"),
        ("backend app\n    server v1 a:1\n", r"has no server \['v2'\]"),
        ("backend app\n  server v1 a:1\n  server v1 a:3\n  server v2 a:2\n", "listed twice"),
        ('backend app\n    server v1 a:1 cookie "x"\n    server v2 a:2\n', "quotes"),
        ("backend app\n  server v1 a:1 weight 1 weight 2\n  server v2 a:2\n", "more than once"),
        (
            "backend app\n  server v1 a:1\n  server v2 a:2\nbackend app\n  server v3 a:3\n",
            "more than one",
        ),
    ],
)
def test_rewrite_refuses_what_it_cannot_do_for_sure(text, problem):
    with pytest.raises(RouterError, match=problem):
        rewrite_weights(text, "app", {"v1": 1, "v2": 2})


def fake_haproxy(tmp_path, *, valid):
    """A stand-in `haproxy -c`: records its arguments and the file it checked."""
    script = tmp_path / "fake-haproxy"
    record = tmp_path / "checked"
    outcome = "exit 0" if valid else "echo '[ALERT] config : parsing error' >&2; exit 1"
    script.write_text(
        f'#!/bin/sh\necho "$@" > {record}\nfor last; do :; done\ncp "$last" {record}.cfg\n'
        f"{outcome}\n"
    )
    script.chmod(0o755)
    return str(script), record


async def test_persist_writes_the_checked_config_after_the_weights_are_in_force(tmp_path):
    config = tmp_path / "conf" / "haproxy.cfg"
    config.parent.mkdir()
    original = CONFIG.encode() + b"# \xff not UTF-8, kept as is\r\n"
    config.write_bytes(original)
    config.chmod(0o640)
    binary, record = fake_haproxy(tmp_path, valid=True)
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address, persist_config=config, haproxy=binary)
        await hap.apply(TrafficSplit(canary_percent=10))
    expected = rewrite_weights(
        original.decode(errors="surrogateescape"), "app", {"v1": 252, "v2": 28}
    ).encode(errors="surrogateescape")
    assert config.read_bytes() == expected
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert record.read_text().split()[:2] == ["-c", "-f"]
    assert Path(f"{record}.cfg").read_bytes() == expected  # it checked the new text
    assert os.listdir(config.parent) == ["haproxy.cfg"]  # no temporary file left


async def test_a_config_haproxy_refuses_changes_neither_the_file_nor_the_weights(tmp_path):
    config = tmp_path / "conf" / "haproxy.cfg"
    config.parent.mkdir()
    config.write_bytes(CONFIG.encode())
    binary, _ = fake_haproxy(tmp_path, valid=False)
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address, persist_config=config, haproxy=binary)
        with pytest.raises(RouterError, match=r"haproxy -c refused .*\[ALERT\] config : parsing"):
            await hap.apply(TrafficSplit(canary_percent=10))
    assert config.read_bytes() == CONFIG.encode()
    assert fake.weights == {"v1": 256, "v2": 0}
    assert os.listdir(config.parent) == ["haproxy.cfg"]


async def test_a_config_without_the_servers_is_refused_before_any_change(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text("backend app\n    server v1 a:1\n")
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        hap = router(runtime_api=address, persist_config=config, haproxy="/bin/false")
        with pytest.raises(RouterError, match=r"cannot write the weights into .* no server"):
            await hap.apply(TrafficSplit(canary_percent=10))
    assert fake.weights == {"v1": 256, "v2": 0}


# -- the test launcher's config (no HAProxy needed) --


def test_haproxy_server_config_has_the_servers_the_socket_and_roundrobin(tmp_path):
    server = HAProxyServer(
        tmp_path,
        stable=["127.0.0.1:8001", "127.0.0.1:8002"],
        canary=["127.0.0.1:8003"],
        initial=TrafficSplit(canary_percent=10),
        port=18080,
    )
    config = server.config()
    assert "    balance roundrobin\n" in config
    assert f"    stats socket {server.socket_path} mode 600 level admin\n" in config
    assert "    bind 127.0.0.1:18080\n" in config
    servers = re.findall(r"server (\S+) (\S+) weight (\d+)", config)
    assert servers == [
        ("stable1", "127.0.0.1:8001", "252"),
        ("stable2", "127.0.0.1:8002", "252"),
        ("canary1", "127.0.0.1:8003", "56"),
    ]
    assert server.router.stable == ("stable1", "stable2")
    assert server.router.canary == ("canary1",)


def test_haproxy_server_puts_a_socket_with_a_long_path_in_a_short_directory(tmp_path):
    deep = tmp_path.joinpath(*itertools.repeat("d" * 20, 5))
    server = HAProxyServer(deep, stable=["127.0.0.1:8001"], canary=["127.0.0.1:8002"])
    try:
        assert len(str(server.socket_path)) <= 90
        assert server.router.runtime_api == f"unix:{server.socket_path}"
    finally:
        server.stop()
    assert not server.socket_path.parent.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stable", ["127.0.0.1:80\n    server evil 1.2.3.4:80"]),
        ("canary", ["127.0.0.1:80;"]),
        ("backend", "app\nfrontend evil"),
        ("socket_level", "admin\n"),
    ],
)
def test_haproxy_server_refuses_what_would_break_its_config(tmp_path, field, value):
    settings = {"stable": ["127.0.0.1:8001"], "canary": ["127.0.0.1:8002"], field: value}
    with pytest.raises(ConfigError) as caught:
        HAProxyServer(tmp_path, **settings)
    assert caught.value.field.startswith(field)


def test_one_router_serves_one_event_loop_after_another(tmp_path):
    # Made outside any event loop, used by concurrent applies on asyncio and then on trio.
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    hap = router(runtime_api=str(tmp_path / "fake.sock"))
    splits = [TrafficSplit(canary_percent=p) for p in (10, 20, 30)]

    async def applies():
        async with runtime_api(tmp_path, fake), anyio.create_task_group() as group:
            for split in splits:
                group.start_soon(hap.apply, split)
        (tmp_path / "fake.sock").unlink()

    for backend in ("asyncio", "trio"):
        anyio.run(applies, backend=backend)
        assert fake.weights in [
            {"v1": w.stable[0], "v2": w.canary[0]} for w in map(hap.weights, splits)
        ]
