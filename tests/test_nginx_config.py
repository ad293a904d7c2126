"""NginxRouter's include file: weights, header routes, mirroring, the strict parser, safety.

Pure tests: no nginx binary. tests/integration/test_nginx.py runs the same files in nginx.
"""

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import ConfigError, HeaderRoute, RouterError, TrafficSplit
from canarykit.routers import NginxRouter

STABLE = ["127.0.0.1:8001"]
CANARY = ["127.0.0.1:8002"]


def make_router(**overrides):
    settings = {
        "include_path": "/etc/nginx/canary.conf",
        "main_config": "/etc/nginx/nginx.conf",
        "pid_file": "/run/nginx.pid",
        "stable": STABLE,
        "canary": CANARY,
    }
    settings.update(overrides)
    return NginxRouter(**settings)


def split_servers(text, upstream="canarykit_split"):
    """{address: weight, or 0 for down} of one upstream block."""
    block = re.search(rf"^upstream {upstream} \{{\n(.*?)^\}}", text, re.S | re.M).group(1)
    servers = {}
    for line in block.splitlines():
        found = re.fullmatch(r"    server (\S+?)(?: weight=(\d+)| (down))?;", line)
        assert found, line
        servers[found.group(1)] = 0 if found.group(3) else int(found.group(2) or 1)
    return servers


def canary_share(text, stable, canary):
    servers = split_servers(text)
    stable_total = sum(servers[a] for a in stable)
    canary_total = sum(servers[a] for a in canary)
    return Fraction(canary_total, stable_total + canary_total)


@pytest.mark.parametrize("percent", [0, 0.5, 1, 10, 33.3, 50, 99.5, 100])
def test_weights_give_the_exact_share(percent):
    router = make_router()
    text = router.render(TrafficSplit(canary_percent=percent))
    assert canary_share(text, STABLE, CANARY) == Fraction(str(percent)) / 100


def test_half_a_percent_is_199_to_1_not_rounded():
    servers = split_servers(make_router().render(TrafficSplit(canary_percent=0.5)))
    assert servers == {"127.0.0.1:8001": 199, "127.0.0.1:8002": 1}


@pytest.mark.parametrize("percent", [0.5, 10, 33.3, 99.5])
def test_several_servers_per_arm_share_their_arm_evenly(percent):
    stable = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    canary = ["10.0.1.1:80", "10.0.1.2:80"]
    router = make_router(stable=stable, canary=canary)
    text = router.render(TrafficSplit(canary_percent=percent))
    servers = split_servers(text)
    assert len({servers[a] for a in stable}) == 1
    assert len({servers[a] for a in canary}) == 1
    assert canary_share(text, stable, canary) == Fraction(str(percent)) / 100


def test_weights_are_reduced_by_their_common_divisor():
    assert NginxRouter.weights_for(50) == (1, 1)
    assert NginxRouter.weights_for(25, stable_servers=3, canary_servers=1) == (1, 1)


@given(st.integers(min_value=0, max_value=100 * 10**6), st.integers(1, 5), st.integers(1, 5))
def test_micro_percents_are_kept_exactly(micro, stable_count, canary_count):
    percent = micro / 10**6
    stable_weight, canary_weight = NginxRouter.weights_for(percent, stable_count, canary_count)
    canary_total = canary_weight * canary_count
    total = stable_weight * stable_count + canary_total
    assert Fraction(canary_total, total) == Fraction(micro, 100 * 10**6)


def test_zero_percent_marks_the_canary_down_and_full_marks_stable_down():
    router = make_router()
    assert split_servers(router.render(TrafficSplit(canary_percent=0))) == {
        "127.0.0.1:8001": 1,
        "127.0.0.1:8002": 0,
    }
    assert split_servers(router.render(TrafficSplit(canary_percent=100))) == {
        "127.0.0.1:8001": 0,
        "127.0.0.1:8002": 1,
    }


def test_each_arm_has_its_own_upstream_without_weights():
    text = make_router().render(TrafficSplit(canary_percent=10))
    assert "upstream canarykit_stable {\n    server 127.0.0.1:8001;\n}" in text
    assert "upstream canarykit_canary {\n    server 127.0.0.1:8002;\n}" in text


def test_without_header_routes_every_request_uses_the_weighted_upstream():
    text = make_router().render(TrafficSplit(canary_percent=10))
    assert 'map "" $canarykit_upstream {\n    default canarykit_split;\n}' in text


def test_the_seed_user_agent_route_is_a_map_to_the_canary():
    route = HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    text = make_router().render(TrafficSplit(header_routes=[route]))
    assert (
        "map $http_user_agent $canarykit_upstream {\n"
        '    "~^(?:.*Chrome.*)$" canarykit_canary;\n'
        "    default canarykit_split;\n"
        "}"
    ) in text


def test_several_header_routes_chain_their_maps():
    routes = [
        HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex"),
        HeaderRoute(header="X-Canary", value="yes"),
    ]
    text = make_router().render(TrafficSplit(canary_percent=5, header_routes=routes))
    assert "map $http_user_agent $canarykit_upstream {" in text
    assert "    default $canarykit_route_1;" in text
    assert "map $http_x_canary $canarykit_route_1 {" in text
    assert '    "~^yes$" canarykit_canary;\n    default canarykit_split;' in text


def nginx_unquote(key):
    """What nginx's config parser makes of a quoted map key (two backslashes become one)."""
    assert key.startswith('"~') and key.endswith('"')
    return re.sub(r"\\(.)", r"\1", key[2:-1]) if "\\\\" in key else key[2:-1]


def rendered_regex(route):
    text = make_router().render(TrafficSplit(header_routes=[route]))
    key = re.search(r'^    ("~.*") canarykit_canary;$', text, re.M).group(1)
    return nginx_unquote(key)


header_values = st.text(
    alphabet=st.sampled_from("aAbC/.()*+?[]{}^$|\\ -;:09"), min_size=1, max_size=12
)


@given(value=header_values, sample=header_values, match=st.sampled_from(["exact", "prefix"]))
def test_exact_and_prefix_routes_match_in_nginx_what_they_match_in_python(value, sample, match):
    if value.endswith("\\"):
        value += "x"  # a trailing backslash is refused (see the safety tests)
    route = HeaderRoute(header="X-Canary", value=value, match=match)
    # re.search is how nginx applies a map regex.
    for candidate in (sample, value, value + sample, value.upper()):
        assert (re.search(rendered_regex(route), candidate) is not None) == route.matches(candidate)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        (".*Chrome.*", "Mozilla/5.0 Chrome/120", "Mozilla/5.0 Firefox/120"),
        ("Chrome|Edge", "Edge", "Chrome Edge"),  # alternation stays inside the anchors
        (r"v\d{2,3}", "v123", "v1234"),
        (r"a\\b", "a\\b", "ab"),  # a literal backslash survives nginx's unquoting
    ],
)
def test_regex_routes_are_full_matches_as_in_python(pattern, yes, no):
    route = HeaderRoute(header="User-Agent", value=pattern, match="regex")
    regex = rendered_regex(route)
    assert route.matches(yes) and re.search(regex, yes)
    assert not route.matches(no) and not re.search(regex, no)


def test_mirroring_off_writes_no_mirror_directive():
    text = make_router().render(TrafficSplit(canary_percent=10))
    assert "\nmirror " not in text
    assert 'split_clients "${request_id}" $canarykit_mirror {\n    * "";\n}' in text


def test_a_mirrored_share_is_a_split_clients_on_the_request_id():
    text = make_router().render(TrafficSplit(mirror_percent=12.5))
    assert 'split_clients "${request_id}" $canarykit_mirror {\n    12.5% 1;\n    * "";\n}' in text
    assert text.endswith("mirror /_canarykit_mirror;\n")


def test_mirroring_everything_needs_no_split():
    text = make_router().render(TrafficSplit(mirror_percent=100))
    assert 'split_clients "${request_id}" $canarykit_mirror {\n    * 1;\n}' in text


def test_a_mirror_share_split_clients_cannot_express_is_refused():
    with pytest.raises(ConfigError) as caught:
        make_router().render(TrafficSplit(mirror_percent=12.345))
    assert caught.value.field == "mirror_percent"


SPLITS = [
    TrafficSplit(),
    TrafficSplit(canary_percent=0.5),
    TrafficSplit(canary_percent=33.3),
    TrafficSplit(canary_percent=100),
    TrafficSplit(
        canary_percent=10,
        header_routes=[
            HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex"),
            HeaderRoute(header="X-Canary", value="a b\\c", match="prefix"),
        ],
        mirror_percent=2.5,
    ),
]


@pytest.mark.parametrize("split", SPLITS)
def test_read_back_parses_the_split_it_wrote(split):
    router = make_router(stable=["10.0.0.1:80", "10.0.0.2:80"], canary=["unix:/run/v2.sock"])
    assert router.parse(router.render(split)) == split


@given(st.integers(min_value=0, max_value=100 * 10**6))
def test_read_back_is_exact_for_every_micro_percent(micro):
    split = TrafficSplit(canary_percent=micro / 10**6)
    router = make_router()
    assert router.parse(router.render(split)) == split


FOREIGN_EDITS = {
    "weight changed": lambda t: t.replace("weight=9;", "weight=8;"),
    "server added": lambda t: t.replace(
        "    server 127.0.0.1:8002 weight=1;\n",
        "    server 127.0.0.1:8002 weight=1;\n    server 127.0.0.1:8003 weight=1;\n",
    ),
    "directive appended": lambda t: t + "include /etc/passwd;\n",
    "comment added": lambda t: t + "# tuned by hand\n",
    "banner removed": lambda t: t.split("\n", 1)[1],
    "recorded split changed": lambda t: t.replace('"canary_percent":10.0', '"canary_percent":20.0'),
    "recorded split broken": lambda t: t.replace('"canary_percent":10.0', '"canary_percent":"x"'),
    "map default changed": lambda t: t.replace(
        "default canarykit_split", "default canarykit_canary"
    ),
    "mirror added": lambda t: t + "mirror /_canarykit_mirror;\n",
    "truncated": lambda t: t[: len(t) // 2],
    "no final newline": lambda t: t.rstrip("\n"),
    "block left open": lambda t: t[: t.rindex("}")],
    "indentation changed": lambda t: t.replace(
        "    server 127.0.0.1:8001", "\tserver 127.0.0.1:8001"
    ),
    "empty": lambda t: "",
}


@pytest.mark.parametrize("edit", FOREIGN_EDITS.values(), ids=FOREIGN_EDITS.keys())
def test_read_back_refuses_a_file_edited_by_someone_else(edit):
    router = make_router()
    text = router.render(TrafficSplit(canary_percent=10))
    edited = edit(text)
    assert edited != text
    with pytest.raises(RouterError, match="not canarykit's"):
        router.parse(edited)


def test_read_back_refuses_a_file_written_for_other_servers():
    text = make_router(canary=["127.0.0.1:9999"]).render(TrafficSplit(canary_percent=10))
    with pytest.raises(RouterError, match="written for"):
        make_router().parse(text)


def test_read_back_names_the_line_that_differs():
    router = make_router()
    text = router.render(TrafficSplit(canary_percent=10)).replace("weight=9;", "weight=8;")
    with pytest.raises(RouterError, match=r"line 6: found '    server 127.0.0.1:8001 weight=8;'"):
        router.parse(text)


def test_a_router_with_another_name_writes_other_names():
    text = make_router(name="shop").render(TrafficSplit(canary_percent=10))
    assert "upstream shop_split {" in text
    assert "$shop_upstream" in text and "$shop_mirror" in text
    assert "canarykit_" not in text


def test_main_config_shows_the_include_contract():
    router = make_router(include_path="/srv/nginx/canary.conf", pid_file="/srv/nginx/nginx.pid")
    config = router.render_main_config(listen="127.0.0.1:8080", directory="/srv/nginx")
    assert 'include "/srv/nginx/canary.conf";' in config
    assert "proxy_pass http://$canarykit_upstream;" in config
    assert "location = /_canarykit_mirror {" in config
    assert "proxy_pass http://canarykit_canary$request_uri;" in config
    assert 'pid "/srv/nginx/nginx.pid";' in config
    assert "daemon off;" not in config
    assert "daemon off;" in router.render_main_config(foreground=True)
    assert config.count("{") == config.count("}")


def test_capabilities_cover_weights_routes_mirroring_and_read_back():
    capabilities = make_router().capabilities
    assert capabilities.weights and capabilities.header_routes
    assert capabilities.mirroring and capabilities.read_back


# -- safety: nothing that could end a directive reaches the file --

BAD_TEXT = ["a\nb", "a;b", "a}b", 'a"b', "a'b", "a b", "a{b"]


@pytest.mark.parametrize("bad", BAD_TEXT)
@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("stable[0]", lambda bad: make_router(stable=[f"10.0.0.1{bad}:80"])),
        ("stable[1]", lambda bad: make_router(stable=["10.0.0.1:80", f"host{bad}:80"])),
        ("canary[0]", lambda bad: make_router(canary=[f"127.0.0.1:80{bad}"])),
        ("name", lambda bad: make_router(name=f"canary{bad}")),
        ("include_path", lambda bad: make_router(include_path=f"/etc/nginx/c{bad}.conf")),
        ("main_config", lambda bad: make_router(main_config=f"/etc/nginx/n{bad}.conf")),
        ("pid_file", lambda bad: make_router(pid_file=f"/run/n{bad}.pid")),
        ("prefix", lambda bad: make_router(prefix=f"/etc/n{bad}")),
        ("nginx", lambda bad: make_router(nginx=f"/usr/sbin/nginx{bad}")),
    ],
)
def test_names_addresses_and_paths_with_directive_breakers_are_refused(field, make, bad):
    with pytest.raises(ConfigError) as caught:
        make(bad)
    assert caught.value.field == field


@pytest.mark.parametrize("bad", ["a\nb", "a;b", "a}b", 'a"b', "a'b", "a b", "a_b", "a:b"])
def test_header_names_with_directive_breakers_are_refused(bad):
    with pytest.raises(ConfigError) as caught:
        route = HeaderRoute(header=f"X-{bad}", value="yes")
        make_router().render(TrafficSplit(header_routes=[route]))
    assert caught.value.field in ("header_route.header", "header_routes[0].header")


@pytest.mark.parametrize("match", ["exact", "prefix", "regex"])
@pytest.mark.parametrize("bad", ['a"b', "a'b", "a`b", "a\nb", "a\rb", "ab\\"])
def test_header_values_that_could_leave_their_quotes_are_refused(bad, match):
    with pytest.raises(ConfigError) as caught:
        route = HeaderRoute(header="User-Agent", value=bad, match=match)
        make_router().render(TrafficSplit(header_routes=[route]))
    assert caught.value.field in ("header_route.value", "header_routes[0].value")


@pytest.mark.parametrize("harmless", ["a;b", "a}b", "a{1,2}", "a b#c", "$host"])
def test_semicolons_and_braces_stay_inside_the_quotes_of_a_route(harmless):
    route = HeaderRoute(header="X-Canary", value=harmless)
    text = make_router().render(TrafficSplit(header_routes=[route]))
    assert make_router().parse(text) == TrafficSplit(header_routes=[route])
    line = next(line for line in text.splitlines() if "canarykit_canary;" in line)
    assert re.fullmatch(r'    "~[^"]*" canarykit_canary;', line)


def test_the_same_server_in_both_arms_is_refused():
    with pytest.raises(ConfigError) as caught:
        make_router(stable=["127.0.0.1:8001"], canary=["127.0.0.1:8001"])
    assert caught.value.field == "canary[0]"


def test_a_server_listed_twice_is_refused():
    with pytest.raises(ConfigError) as caught:
        make_router(stable=["127.0.0.1:8001", "127.0.0.1:8001"])
    assert caught.value.field == "stable[1]"


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("stable", {"stable": []}),
        ("stable", {"stable": "127.0.0.1:8001"}),
        ("name", {"name": "canary-kit"}),
        ("reload", {"reload": "restart"}),
        ("timeout", {"timeout": 0}),
        ("verify", {"verify": "yes"}),
    ],
)
def test_other_bad_settings_name_their_field(field, overrides):
    with pytest.raises(ConfigError) as caught:
        make_router(**overrides)
    assert caught.value.field == field


@pytest.mark.parametrize("bad", ["127.0.0.1:80;", "unix:/tmp/x.sock", "host\n:80"])
def test_main_config_listen_address_is_checked(bad):
    with pytest.raises(ConfigError) as caught:
        make_router().render_main_config(listen=bad)
    assert caught.value.field == "listen"
