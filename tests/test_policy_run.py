"""The tables of a policy file that run a real rollout: [rollout], [router], [metrics],
[hooks] and [[notify]], read into a `Deployment` and built into real objects."""

# Imports internals on purpose: the policy layer's helpers; the command line (canarykit._cli is
# private), run as the `canarykit` script runs it.

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import certifi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import canarykit
import canarykit.policy._load as policy_module
from canarykit import CanaryError, ConfigError
from canarykit.hooks import FileApproval, Hooks, Webhook
from canarykit.metrics import BasicAuth, BearerAuth, PrometheusQueries, http_queries
from canarykit.notify import Severity, SlackNotifier, WebhookNotifier
from canarykit.policy import Deployment, Policy, load_policy
from canarykit.policy._deployment import _thawed
from canarykit.routers import (
    GatewayAPIRouter,
    HAProxyRouter,
    IstioRouter,
    KubernetesConnection,
    NginxRouter,
)
from helpers.toml_doc import dotted, paths, toml_key, toml_value

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_EXAMPLE = ROOT / "examples" / "deploy_policy.toml"

PLAN = """\
[plan]
shape = "linear"
initial = 10
step = 45
hold = "2m"
analysis_interval = "30s"

[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = "2%"
"""

NGINX = """
[router]
kind = "nginx"
include_path = "/etc/nginx/canary.conf"
main_config = "/etc/nginx/nginx.conf"
pid_file = "/run/nginx.pid"
stable = ["10.0.0.1:8080", "10.0.0.3:8080"]
canary = ["10.0.0.2:8080"]
"""

PROMETHEUS = """
[metrics]
kind = "prometheus"
url = "http://prometheus:9090"
stable = "v1"
canary = "v2"
"""

# A secret no error, repr or log may ever show.
SECRET = "s3cr3t-Do-Not-Show-4242"


def load(text: str) -> Policy:
    return load_policy(PLAN + textwrap.dedent(text))


def deployment(text: str) -> Deployment:
    return load(text).deployment


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


def build_error(text: str, build: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        getattr(deployment(text), build)()
    return caught.value


def round_trips(policy: Policy) -> str:
    text = policy.to_toml()
    again = load_policy(text)
    assert again == policy
    assert again.to_toml() == text
    return text


# --- [rollout] --------------------------------------------------------------------------


def test_a_policy_without_deploy_tables_has_an_empty_deployment() -> None:
    found = load("").deployment
    assert found == Deployment()
    assert (found.name, found.state_dir, found.on_interrupt) == (None, ".canarykit", "rollback")
    # Rollout's own defaults.
    assert (found.call_timeout, found.rollback_timeout, found.apply_attempts) == (30.0, 120.0, 3)
    assert not found.has_router and not found.has_metrics
    assert found.build_hooks() is None
    assert found.build_notifiers() == []
    assert repr(found) == "Deployment()"
    # And to_toml writes nothing new for it: the plan, decider and simulation only.
    assert "[rollout]" not in round_trips(load(""))


def test_rollout_settings_are_read() -> None:
    found = deployment(
        """
        [rollout]
        name = "web"
        state_dir = "/var/lib/deploy"
        on_interrupt = "leave"
        call_timeout = "15s"
        rollback_timeout = "2m"
        apply_attempts = 5
        """
    )
    assert found == Deployment(
        name="web",
        state_dir="/var/lib/deploy",
        on_interrupt="leave",
        call_timeout=15,
        rollback_timeout=120,
        apply_attempts=5,
    )
    assert repr(found) == (
        "Deployment(name='web', state_dir='/var/lib/deploy', on_interrupt='leave', "
        "call_timeout=15.0, apply_attempts=5)"
    )


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ('name = "web app"', "rollout.name: must be 1-128 letters"),
        ("name = 5", "rollout.name: must be 1-128 letters"),
        ('state_dir = ""', "rollout.state_dir: must be a non-empty string"),
        ("lease = false", "rollout.lease: is always the state directory's file lease"),
        ('on_interrupt = "pause"', "rollout.on_interrupt: must be one of 'rollback', 'leave'"),
        ('call_timeout = "0s"', "rollout.call_timeout: must be > 0"),
        ("rollback_timeout = -1", "rollout.rollback_timeout: must be > 0"),
        ("apply_attempts = 0", "rollout.apply_attempts: must be an integer >= 1"),
        ("apply_attempts = 1.5", "rollout.apply_attempts: must be an integer"),
        ('nmae = "web"', "rollout.nmae: is not a known key (did you mean 'name'?)"),
        ('key = "web"', "rollout.key: is called name here"),
        ('on_cancel = "leave"', "rollout.on_cancel: is called on_interrupt here"),
    ],
)
def test_rollout_errors_name_the_key(rollout: str, message: str) -> None:
    assert str(config_error(f"[rollout]\n{rollout}\n")).startswith(message)


def test_a_table_that_is_not_one_is_refused() -> None:
    for name in ("rollout", "router", "metrics", "hooks"):
        with pytest.raises(ConfigError) as caught:
            load_policy(f"{name} = 5\n" + PLAN)
        assert str(caught.value) == f"{name}: must be a table ([{name}]), got 5"


def test_a_misspelt_table_is_refused_by_name() -> None:
    error = config_error("[ruoter]\nkind = 'nginx'\n")
    assert str(error) == "ruoter: is not a known key (did you mean 'router'?)"
    error = config_error("[notify]\nkind = 'slack'\n")
    assert error.field == "notify"
    assert "must be an array of tables ([[notify]])" in str(error)


def test_deployment_checks_what_it_is_given_directly() -> None:
    with pytest.raises(ConfigError, match=r"^apply_attempts:"):
        Deployment(apply_attempts=0)
    with pytest.raises(ConfigError, match=r"^on_interrupt:"):
        Deployment(on_interrupt="pause")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^router.kind:"):
        Deployment(router_table={"kind": "envoy"})
    with pytest.raises(ConfigError, match=r"^router: must be a table"):
        Deployment(router_table="nginx")  # type: ignore[arg-type]
    # The tables a Deployment keeps are read again as they are: the same deployment.
    found = load_policy(DEPLOY_EXAMPLE).deployment
    again = Deployment(
        name=found.name,
        state_dir=found.state_dir,
        rollback_timeout=found.rollback_timeout,
        router_table=found.router_table,
        metrics_table=found.metrics_table,
        hooks_table=found.hooks_table,
        notify_tables=found.notify_tables,
    )
    assert again == found
    assert hash(again) == hash(found)
    with pytest.raises(TypeError):
        found.router_table["kind"] = "haproxy"  # type: ignore[index]


# --- [router] ---------------------------------------------------------------------------


def test_nginx_router_is_built_with_the_table_settings() -> None:
    found = deployment(
        NGINX
        + """
        prefix = "/etc/nginx"
        name = "shop"
        nginx = "/usr/sbin/nginx"
        reload = "command"
        timeout = "20s"
        """
    )
    assert found.has_router
    router = found.build_router()
    assert isinstance(router, NginxRouter)
    assert router.include_path == Path("/etc/nginx/canary.conf")
    assert router.main_config == Path("/etc/nginx/nginx.conf")
    assert router.pid_file == Path("/run/nginx.pid")
    assert router.prefix == Path("/etc/nginx")
    assert router.stable == ("10.0.0.1:8080", "10.0.0.3:8080")
    assert router.canary == ("10.0.0.2:8080",)
    assert (router.name, router.nginx, router.reload, router.timeout) == (
        "shop",
        "/usr/sbin/nginx",
        "command",
        20.0,
    )
    assert router.verify is None


def test_nginx_defaults_are_the_constructors() -> None:
    router = deployment(NGINX).build_router()
    default = NginxRouter(
        include_path="/etc/nginx/canary.conf",
        main_config="/etc/nginx/nginx.conf",
        pid_file="/run/nginx.pid",
        stable=["10.0.0.1:8080", "10.0.0.3:8080"],
        canary=["10.0.0.2:8080"],
    )
    assert isinstance(router, NginxRouter)
    for attribute in ("name", "nginx", "reload", "timeout", "prefix"):
        assert getattr(router, attribute) == getattr(default, attribute), attribute


def test_haproxy_router_is_built_with_the_table_settings() -> None:
    router = deployment(
        """
        [router]
        kind = "haproxy"
        runtime_api = "127.0.0.1:9999"
        backend = "app"
        stable = ["v1a", "v1b"]
        canary = ["v2"]
        timeout = 3
        weight_tolerance = 0.5
        persist_config = "/etc/haproxy/haproxy.cfg"
        haproxy = "/usr/sbin/haproxy"
        """
    ).build_router()
    assert isinstance(router, HAProxyRouter)
    assert (router.runtime_api, router.backend, router.stable, router.canary) == (
        "127.0.0.1:9999",
        "app",
        ("v1a", "v1b"),
        ("v2",),
    )
    assert (router.timeout, router.weight_tolerance, router.haproxy) == (
        3.0,
        0.5,
        "/usr/sbin/haproxy",
    )
    assert router.persist_config == Path("/etc/haproxy/haproxy.cfg")


def test_gateway_api_router_is_built_with_its_kubernetes_connection() -> None:
    found = deployment(
        """
        [router]
        kind = "gateway-api"
        route = "shop"
        namespace = "prod"
        stable_service = "shop-v1"
        canary_service = "shop-v2"
        port = 8080
        rule = "main"
        conflict_attempts = 7
        [router.kubernetes]
        kubeconfig = "/home/deploy/kubeconfig"
        context = "prod-eu"
        in_cluster = false
        timeout = "30s"
        field_manager = "deploy-bot"
        trust_env = false
        """
    )
    router = found.build_router()
    assert isinstance(router, GatewayAPIRouter)
    target = router.target
    assert (target.route, target.namespace, target.stable_service, target.canary_service) == (
        "shop",
        "prod",
        "shop-v1",
        "shop-v2",
    )
    assert (target.port, target.rule, router.conflict_attempts) == (8080, "main", 7)
    assert router.connection == KubernetesConnection(
        kubeconfig="/home/deploy/kubeconfig",
        context="prod-eu",
        in_cluster=False,
        timeout=30.0,
        field_manager="deploy-bot",
        trust_env=False,
    )
    text = round_trips(load_policy(to_toml({"router": _thawed(found.router_table)})))
    assert "[router.kubernetes]" in text


def test_istio_router_is_built_with_the_table_settings() -> None:
    router = deployment(
        """
        [router]
        kind = "istio"
        virtual_service = "app"
        namespace = "default"
        host = "app.default.svc.cluster.local"
        stable_subset = "v1"
        canary_subset = "v2"
        route = "primary"
        destination_rule = "app-rule"
        create_subsets = true
        subset_label = "track"
        """
    ).build_router()
    assert isinstance(router, IstioRouter)
    target = router.target
    assert (target.virtual_service, target.namespace, target.host) == (
        "app",
        "default",
        "app.default.svc.cluster.local",
    )
    assert (target.stable_subset, target.canary_subset, target.route) == ("v1", "v2", "primary")
    assert (target.destination_rule, target.subset_label, router.create_subsets) == (
        "app-rule",
        "track",
        True,
    )
    assert router.connection == KubernetesConnection()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'backend = "app"',
            "router.backend: is not used by router kind 'nginx' (it takes include_path, "
            "main_config, pid_file, stable, canary, prefix, name, nginx, reload, timeout, slots)",
        ),
        ("[router.kubernetes]", "router.kubernetes: is not used by router kind 'nginx'"),
        ("verify = true", "router.verify: has no TOML form (a SplitProbe is a Python object)"),
        ('include_pth = "x"', "router.include_pth: is not a known key (did you mean "),
        ('reload = "restart"', "router.reload: must be one of 'signal', 'command'"),
        ("timeout = 0", "router.timeout: must be > 0"),
        ('timeout = "fast"', "router.timeout: must be a duration"),
        ('name = ""', "router.name: must be a non-empty string"),
    ],
)
def test_router_errors_name_the_key(extra: str, message: str) -> None:
    assert str(config_error(NGINX + extra + "\n")).startswith(message)


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ("[router]\n", "router.kind: is required"),
        ('[router]\nkind = "envoy"\n', "router.kind: must be one of 'nginx', 'haproxy', "),
        ('[router]\nkind = "nginx"\n', "router.include_path: is required for router kind 'nginx'"),
        (
            '[router]\nkind = "istio"\nroute = "r"\nport = 80\n',
            "router.port: is not used by router kind 'istio'",
        ),
        (NGINX.replace('["10.0.0.2:8080"]', '"10.0.0.2:8080"'), "router.canary: must be a non-"),
        (NGINX.replace('["10.0.0.2:8080"]', "[8080]"), "router.canary[0]: must be a non-empty"),
        (
            '[router]\nkind = "gateway-api"\nroute = "r"\nnamespace = "n"\nstable_service = "a"\n'
            'canary_service = "b"\n[router.kubernetes]\ncontxt = "x"\n',
            "router.kubernetes.contxt: is not a known key (did you mean 'context'?)",
        ),
    ],
)
def test_router_table_errors(router: str, message: str) -> None:
    assert str(config_error(router)).startswith(message)


@pytest.mark.parametrize(
    ("router", "field", "problem"),
    [
        (NGINX.replace("10.0.0.2:8080", "10.0.0.1:8080"), "router.canary[0]", "is also a stable"),
        (NGINX.replace("10.0.0.3:8080", "nowhere"), "router.stable[1]", "must be 'host:port'"),
        (NGINX + 'name = "a-b"\n', "router.name", "must be letters, digits and '_'"),
        (NGINX + 'prefix = "/etc/ng inx"\n', "router.prefix", "must not contain spaces"),
        (
            '[router]\nkind = "haproxy"\nruntime_api = "x"\nbackend = "a"\nstable = ["s"]\n'
            'canary = ["c"]\n',
            "router.runtime_api",
            "must be 'host:port'",
        ),
        (
            '[router]\nkind = "istio"\nvirtual_service = "a"\nnamespace = "b"\nhost = "c"\n'
            'stable_subset = "v1"\ncanary_subset = "v2"\n[router.kubernetes]\ncontext = "a\\tb"\n',
            "router.kubernetes.context",
            "must be a context name",
        ),
        (
            '[router]\nkind = "istio"\nvirtual_service = "a"\nnamespace = "b"\nhost = "c"\n'
            'stable_subset = "v1"\ncanary_subset = "v2"\nconflict_attempts = 500\n',
            "router.conflict_attempts",
            "from 1 to 100",
        ),
    ],
)
def test_router_constructor_errors_come_out_with_the_key_path(
    router: str, field: str, problem: str
) -> None:
    # Loading takes these (only the constructor can judge them); building names the key.
    error = build_error(router, "build_router")
    assert error.field == field
    assert problem in str(error)


def test_building_without_a_router_or_metrics_table_names_it() -> None:
    empty = deployment("")
    with pytest.raises(ConfigError) as caught:
        empty.build_router()
    assert caught.value.field == "router"
    assert "no [router]" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        empty.build_metrics()
    assert caught.value.field == "metrics"


# --- [metrics] --------------------------------------------------------------------------


def test_prometheus_source_is_built_with_the_table_settings() -> None:
    found = deployment(
        PROMETHEUS
        + """
        timeout = "3s"
        attempts = 5
        backoff = "500ms"
        deadline = "15s"
        settle = "2s"
        verify = false
        """
    )
    assert found.has_metrics
    source = found.build_metrics()
    assert source.url == "http://prometheus:9090"
    assert (source.stable, source.canary) == ("v1", "v2")
    assert (source.timeout, source.attempts, source.backoff) == (3.0, 5, 0.5)
    assert (source.deadline, source.settle, source.verify) == (15.0, 2.0, False)
    assert source.auth is None
    assert dict(source.headers) == {}
    # No [metrics.http] nor [metrics.queries]: http_queries() as it comes.
    assert source.queries == http_queries()


def test_metrics_http_table_gives_http_queries() -> None:
    source = deployment(
        PROMETHEUS
        + """
        [metrics.http]
        arm_label = "track"
        requests_metric = "requests_total"
        status_label = "status"
        error_status = "5..|429"
        latency_metric = false
        matchers = {job = "shop", env = "prod"}
        gauges = {cpu = 'avg(cpu{track="{arm}"})'}
        """
    ).build_metrics()
    assert source.queries == http_queries(
        arm_label="track",
        requests_metric="requests_total",
        status_label="status",
        error_status="5..|429",
        latency_metric=None,
        matchers={"job": "shop", "env": "prod"},
        gauges={"cpu": 'avg(cpu{track="{arm}"})'},
    )


def test_metrics_queries_table_gives_prometheus_queries() -> None:
    source = deployment(
        PROMETHEUS
        + """
        [metrics.queries]
        requests = 'sum(increase(hits_total{track="{arm}"}[{window}]))'
        errors = 'sum(increase(hits_total{track="{arm}",code=~"5.."}[{window}]))'
        latency_buckets = 'sum by (le) (increase(lat_bucket{track="{arm}"}[{window}]))'
        latency_sum = 'sum(increase(lat_sum{track="{arm}"}[{window}]))'
        """
    ).build_metrics()
    assert source.queries == PrometheusQueries(
        requests='sum(increase(hits_total{track="{arm}"}[{window}]))',
        errors='sum(increase(hits_total{track="{arm}",code=~"5.."}[{window}]))',
        latency_buckets='sum by (le) (increase(lat_bucket{track="{arm}"}[{window}]))',
        latency_sum='sum(increase(lat_sum{track="{arm}"}[{window}]))',
    )


def test_prometheus_credentials_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROM_TOKEN", SECRET + "\n")  # as `$(cat token)` might leave it
    monkeypatch.setenv("PROM_TENANT", "tenant-7")
    found = deployment(
        PROMETHEUS
        + """
        bearer_token_env = "PROM_TOKEN"
        headers_env = {X-Scope-OrgID = "PROM_TENANT"}
        """
    )
    source = found.build_metrics()
    assert source.auth == BearerAuth(token=SECRET)
    assert dict(source.headers) == {"X-Scope-OrgID": "tenant-7"}
    for shown in (repr(source), repr(found), repr(load(PROMETHEUS + "bearer_token_env = 'X'"))):
        assert SECRET not in shown and "tenant-7" not in shown


def test_prometheus_credentials_come_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    source = deployment(PROMETHEUS + f'bearer_token_file = "{token}"\n').build_metrics()
    assert source.auth == BearerAuth(token=SECRET)

    monkeypatch.setenv("PROM_PASSWORD", SECRET)
    source = deployment(
        PROMETHEUS + 'basic_user = "grafana"\nbasic_password_env = "PROM_PASSWORD"\n'
    ).build_metrics()
    assert source.auth == BasicAuth(username="grafana", password=SECRET)
    source = deployment(
        PROMETHEUS + f'basic_user = "grafana"\nbasic_password_file = "{token}"\n'
    ).build_metrics()
    assert source.auth == BasicAuth(username="grafana", password=SECRET)


def test_a_ca_bundle_path_verifies_with_that_bundle() -> None:
    source = deployment(PROMETHEUS + f'verify = "{certifi.where()}"\n').build_metrics()
    assert isinstance(source.verify, ssl.SSLContext)
    error = build_error(PROMETHEUS + 'verify = "/no/such/ca.pem"\n', "build_metrics")
    assert error.field == "metrics.verify"
    assert "cannot load the CA certificates" in str(error)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('bearer_token = "abc"', "metrics.bearer_token: would put a secret in the policy file"),
        ('basic_password = "abc"', "metrics.basic_password: would put a secret in the policy"),
        ("headers = {a = 'b'}", "metrics.headers: takes its values from environment variables"),
        ("auth = 'x'", "metrics.auth: is given as bearer_token_env"),
        (
            'bearer_token_env = "A"\nbearer_token_file = "/t"',
            "metrics.bearer_token_file: cannot be given with bearer_token_env",
        ),
        ('basic_user = "u"', "metrics.basic_password_env: is required with basic_user"),
        ('basic_password_env = "P"', "metrics.basic_user: is required with basic_password_env"),
        ('bearer_token_env = "A=B"', "metrics.bearer_token_env: must be the name of an env"),
        ("headers_env = {'X Y' = 'V'}", 'metrics.headers_env."X Y": must be an HTTP header name'),
        ("attempts = 0", "metrics.attempts: must be an integer >= 1"),
        ("settle = -1", "metrics.settle: must be >= 0"),
        ("verify = 1", "metrics.verify: must be true, false or a CA bundle's path"),
        ("[metrics.http]\n[metrics.queries]", "metrics.queries: cannot be given with http"),
        ("[metrics.queries]\nerrors = '0'", "metrics.queries.requests: is required"),
        ("[metrics.http]\nlatency_metric = true", "metrics.http.latency_metric: must be a non-"),
        ("[metrics.http]\nmatchers = {job = 5}", "metrics.http.matchers.job: must be a string"),
        ("[metrics.http]\nmatcher = {}", "metrics.http.matcher: is not a known key (did you"),
    ],
)
def test_metrics_errors_name_the_key(extra: str, message: str) -> None:
    assert str(config_error(PROMETHEUS + extra + "\n")).startswith(message)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ("[metrics]\n", "metrics.kind: is required"),
        ('[metrics]\nkind = "datadog"\n', "metrics.kind: must be 'prometheus', got 'datadog'"),
        ('[metrics]\nkind = "prometheus"\n', "metrics.url: is required"),
    ],
)
def test_a_wrong_or_missing_metrics_kind_is_refused(metrics: str, message: str) -> None:
    assert str(config_error(metrics)).startswith(message)


@pytest.mark.parametrize(
    ("metrics", "field", "problem"),
    [
        (PROMETHEUS.replace("http:", "ftp:"), "metrics.url", "must be an http:// or https://"),
        (PROMETHEUS.replace('"v2"', '"v1"'), "metrics.canary", "must differ from stable"),
        (PROMETHEUS + "attempts = 101\n", "metrics.attempts", "must be an int in [1, 100]"),
        (
            PROMETHEUS + "[metrics.http]\nmatchers = {job = 'a\"b'}\n",
            "metrics.http.matchers['job']",
            "quotes",
        ),
        (
            PROMETHEUS + "[metrics.queries]\nrequests = 'up{x={arm}}'\nerrors = '0'\n",
            "metrics.queries.requests",
            "{arm} must be inside a quoted string",
        ),
        (
            PROMETHEUS + "[metrics.http]\narm_label = 'code'\n",
            "metrics.http.status_label",
            "must differ",
        ),
    ],
)
def test_metrics_constructor_errors_come_out_with_the_key_path(
    metrics: str, field: str, problem: str
) -> None:
    error = build_error(metrics, "build_metrics")
    assert error.field == field
    assert problem in str(error)


@pytest.mark.parametrize(
    ("extra", "field", "variable"),
    [
        ('bearer_token_env = "CANARYKIT_TEST_UNSET"', "metrics.bearer_token_env", None),
        (
            'basic_user = "u"\nbasic_password_env = "CANARYKIT_TEST_UNSET"',
            "metrics.basic_password_env",
            None,
        ),
        (
            "headers_env = {X-Tenant = 'CANARYKIT_TEST_UNSET'}",
            "metrics.headers_env.X-Tenant",
            None,
        ),
        ('bearer_token_env = "CANARYKIT_TEST_EMPTY"', "metrics.bearer_token_env", "empty"),
    ],
)
def test_a_missing_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, extra: str, field: str, variable: str | None
) -> None:
    monkeypatch.delenv("CANARYKIT_TEST_UNSET", raising=False)
    monkeypatch.setenv("CANARYKIT_TEST_EMPTY", "  ")
    error = build_error(PROMETHEUS + extra + "\n", "build_metrics")
    assert error.field == field
    assert "CANARYKIT_TEST_" in str(error)
    assert ("is empty" if variable == "empty" else "is not set") in str(error)


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    error = build_error(PROMETHEUS + f'bearer_token_file = "{missing}"\n', "build_metrics")
    assert error.field == "metrics.bearer_token_file"
    assert str(missing) in str(error) and "cannot be read" in str(error)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    error = build_error(PROMETHEUS + f'bearer_token_file = "{empty}"\n', "build_metrics")
    assert "is empty" in str(error)


def test_a_bad_secret_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROM_TOKEN", SECRET[:6] + "\x07" + SECRET[6:])
    error = build_error(PROMETHEUS + 'bearer_token_env = "PROM_TOKEN"\n', "build_metrics")
    assert error.field == "metrics.bearer_token_env"
    assert SECRET[6:] not in str(error) and SECRET[6:] not in repr(error.value)


# --- [hooks] ----------------------------------------------------------------------------


def test_hooks_are_built_point_by_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE_URL", "https://gate.internal/confirm?token=" + SECRET)
    monkeypatch.setenv("GATE_AUTH", "Bearer " + SECRET)
    found = deployment(
        """
        [hooks]
        interval = "30s"
        gate_timeout = "2h"
        call_timeout = "45s"
        pre_rollout = "http://smoke.internal/run"
        confirm_traffic_increase = {approval_file = "/run/deploy/web.approval"}
        post_rollout = ["http://a.internal/done", {url = "http://b.internal/done"}]
        [hooks.confirm_promotion]
        url_env = "GATE_URL"
        name = "gate"
        timeout = "5s"
        attempts = 4
        backoff = "250ms"
        namespace = "shop"
        metadata = {team = "web"}
        headers_env = {Authorization = "GATE_AUTH"}
        [[hooks.rollback]]
        url = "http://alerts.internal/rollback"
        """
    )
    hooks = found.build_hooks()
    assert isinstance(hooks, Hooks)
    assert (hooks.interval, hooks.gate_timeout, hooks.call_timeout) == (30.0, 7200.0, 45.0)
    (smoke,) = hooks.pre_rollout
    assert isinstance(smoke, Webhook) and smoke.name == "webhook"
    (approval,) = hooks.confirm_traffic_increase
    assert isinstance(approval, FileApproval)
    assert approval.path == "/run/deploy/web.approval"
    (gate,) = hooks.confirm_promotion
    assert isinstance(gate, Webhook)
    assert (gate.name, gate.timeout, gate.attempts, gate.backoff) == ("gate", 5.0, 4, 0.25)
    assert (gate.namespace, gate.metadata) == ("shop", {"team": "web"})
    assert gate._headers["Authorization"] == "Bearer " + SECRET
    assert len(hooks.post_rollout) == 2
    assert all(isinstance(hook, Webhook) for hook in hooks.post_rollout)
    assert len(hooks.rollback) == 1
    assert hooks.create_canary == hooks.retire_stable == hooks.retire_canary == ()
    for shown in (repr(hooks), repr(found), repr(gate)):
        assert SECRET not in shown
        assert "token" not in shown
    assert repr(found) == (
        "Deployment(hooks=['pre_rollout', 'confirm_traffic_increase', 'confirm_promotion', "
        "'rollback', 'post_rollout'])"
    )


def test_every_hook_point_of_hooks_is_a_key() -> None:
    points = [point.value.replace("-", "_") for point in canarykit.machine.HookPoint]
    assert set(points) <= set(attrs.fields_dict(Hooks))
    table = "\n".join(f'{point} = "http://hooks.internal/{point}"' for point in points)
    hooks = deployment(f"[hooks]\n{table}\n").build_hooks()
    assert hooks is not None
    assert {point.value.replace("-", "_") for point in hooks.points} == set(points)


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ('confirm-promotion = "http://x"', "hooks.confirm-promotion: is not a known key (did you"),
        ("confirm_promotion = 5", "hooks.confirm_promotion: must be a webhook URL, a table"),
        ('confirm_promotion = ""', "hooks.confirm_promotion: must be a webhook URL"),
        ("confirm_promotion = []", "hooks.confirm_promotion: must hold at least one hook"),
        ("rollback = [[]]", "hooks.rollback[0]: must be a webhook URL"),
        ("rollback = {timeout = 5}", "hooks.rollback.url: is required (or url_env or approval"),
        (
            "rollback = {url = 'http://x', url_env = 'X'}",
            "hooks.rollback.url_env: cannot be given with url",
        ),
        (
            "rollback = {approval_file = '/a', timeout = 5}",
            "hooks.rollback.timeout: is a webhook setting; an approval_file hook takes only",
        ),
        ("rollback = {url = 'http://x', tiemout = 5}", "hooks.rollback.tiemout: is not a known"),
        ("rollback = {url = 'http://x', attempts = 0}", "hooks.rollback.attempts: must be an"),
        ("rollback = {url = 'http://x', headers = {}}", "hooks.rollback.headers: takes its"),
        ("rollback = {url = 'http://x', metadata = 5}", "hooks.rollback.metadata: must be a"),
        ("interval = 0", "hooks.interval: must be > 0"),
        ("gate_timeout = 'forever'", "hooks.gate_timeout: must be a duration"),
    ],
)
def test_hook_errors_name_the_key(hooks: str, message: str) -> None:
    assert str(config_error(f"[hooks]\n{hooks}\n")).startswith(message)


@pytest.mark.parametrize(
    ("hooks", "field"),
    [
        ('rollback = "ftp://x.internal/a"', "hooks.rollback"),
        ('rollback = ["http://ok.internal", "not a url"]', "hooks.rollback[1]"),
        ("rollback = {url = 'http://x', name = 'a b'}", "hooks.rollback.name"),
        ("rollback = {url = 'ftp://x'}", "hooks.rollback.url"),
        ("rollback = {url_env = 'CANARYKIT_TEST_URL'}", "hooks.rollback.url_env"),
        ("rollback = {url_env = 'CANARYKIT_TEST_UNSET'}", "hooks.rollback.url_env"),
        (
            "rollback = {url = 'http://x', headers_env = {A = 'CANARYKIT_TEST_UNSET'}}",
            "hooks.rollback.headers_env.A",
        ),
    ],
)
def test_hook_constructor_errors_come_out_with_the_key_path(
    monkeypatch: pytest.MonkeyPatch, hooks: str, field: str
) -> None:
    monkeypatch.setenv("CANARYKIT_TEST_URL", "ftp://secret.internal/" + SECRET)
    monkeypatch.delenv("CANARYKIT_TEST_UNSET", raising=False)
    error = build_error(f"[hooks]\n{hooks}\n", "build_hooks")
    assert error.field == field
    assert SECRET not in str(error)


# --- [[notify]] -------------------------------------------------------------------------


def test_a_slack_notifier_takes_its_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://hooks.slack.com/services/T000/B000/" + SECRET
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    found = deployment(
        """
        [rollout]
        name = "shop"

        [[notify]]
        kind = "slack"
        url_env = "SLACK_WEBHOOK_URL"
        min_severity = "warn"
        every_verdict = true
        channel = "#deploys"
        username = "canary"
        timeout = "2s"
        attempts = 5
        backoff = "500ms"
        queue_size = 10
        drain_timeout = "20s"
        """
    )
    (slack,) = found.build_notifiers()
    assert isinstance(slack, SlackNotifier)
    assert slack._url == url
    assert (slack.rollout, slack.min_severity, slack.every_verdict) == (
        "shop",
        Severity.WARN,
        True,
    )
    assert (slack.channel, slack.username) == ("#deploys", "canary")
    assert (slack.timeout, slack.attempts, slack.backoff) == (2.0, 5, 0.5)
    assert (slack.queue_size, slack.drain_timeout) == (10, 20.0)
    assert SECRET not in repr(slack) and SECRET not in repr(found)
    assert repr(found) == "Deployment(name='shop', notify=['slack'])"
    (renamed,) = found.build_notifiers(rollout="checkout")
    assert renamed.rollout == "checkout"


def test_a_webhook_notifier_takes_headers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTS_AUTH", "Bearer " + SECRET)
    found = deployment(
        """
        [[notify]]
        kind = "webhook"
        url = "http://events.internal/canary"
        headers_env = {Authorization = "EVENTS_AUTH"}

        [[notify]]
        kind = "slack"
        url = "https://hooks.slack.com/services/T/B/x"
        """
    )
    events, slack = found.build_notifiers()
    assert isinstance(events, WebhookNotifier) and isinstance(slack, SlackNotifier)
    assert events._extra_headers == {"Authorization": "Bearer " + SECRET}
    assert events.rollout == "rollout"  # no [rollout] name: Notifier.attach gives the key
    assert events.min_severity is Severity.INFO
    assert SECRET not in repr(events)


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ('kind = "slack"', "notify[0].url: is required (or url_env)"),
        ('kind = "teams"\nurl = "http://x"', "notify[0].kind: must be one of 'slack', 'webhook'"),
        ('url = "http://x"', "notify[0].kind: is required"),
        (
            'kind = "slack"\nurl = "http://x"\nurl_env = "X"',
            "notify[0].url_env: cannot be given with url",
        ),
        (
            'kind = "webhook"\nurl = "http://x"\nchannel = "#a"',
            "notify[0].channel: is not used by notify kind 'webhook'",
        ),
        (
            'kind = "slack"\nurl = "http://x"\nheaders_env = {A = "B"}',
            "notify[0].headers_env: is not used by notify kind 'slack'",
        ),
        ('kind = "slack"\nurl = "http://x"\nrollout = "web"', "notify[0].rollout: is the rollout"),
        ('kind = "slack"\nurl = "http://x"\nmin_severity = "debug"', "notify[0].min_severity:"),
        ('kind = "slack"\nurl = "http://x"\nqueue_size = 0', "notify[0].queue_size: must be an"),
        ('kind = "slack"\nurl = "http://x"\nchanel = "#a"', "notify[0].chanel: is not a known key"),
    ],
)
def test_notify_errors_name_the_key(notify: str, message: str) -> None:
    assert str(config_error(f"[[notify]]\n{notify}\n")).startswith(message)


@pytest.mark.parametrize(
    ("notify", "field"),
    [
        ('kind = "slack"\nurl = "ftp://hooks.slack.com/x"', "notify[0].url"),
        ('kind = "slack"\nurl_env = "CANARYKIT_TEST_URL"', "notify[0].url_env"),
        ('kind = "slack"\nurl_env = "CANARYKIT_TEST_UNSET"', "notify[0].url_env"),
        ('kind = "slack"\nurl = "https://x"\nchannel = "' + "c" * 81 + '"', "notify[0].channel"),
    ],
)
def test_notify_constructor_errors_come_out_with_the_key_path(
    monkeypatch: pytest.MonkeyPatch, notify: str, field: str
) -> None:
    monkeypatch.setenv("CANARYKIT_TEST_URL", "hooks.slack.com/services/" + SECRET)
    monkeypatch.delenv("CANARYKIT_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_policy(PLAN + f"[[notify]]\n{notify}\n").deployment.build_notifiers()
    assert caught.value.field == field
    assert SECRET not in str(caught.value)


def test_a_url_written_in_the_file_is_never_shown() -> None:
    url = "https://hooks.slack.com/services/T000/B000/" + SECRET
    text = f"""
        [hooks]
        rollback = "{url}"
        confirm_promotion = {{url = "{url}", name = "gate"}}

        [[notify]]
        kind = "slack"
        url = "{url}"
        """
    policy = load(text)
    assert SECRET not in repr(policy)
    assert SECRET in policy.to_toml()  # what the file said, written back
    found = policy.deployment
    for built in (found.build_hooks(), *found.build_notifiers()):
        assert SECRET not in repr(built)
    error = config_error(text + "channel = 5\n")
    assert error.field == "notify[0].channel"
    assert SECRET not in str(error)


# --- extras -----------------------------------------------------------------------------


def test_loading_a_deploy_policy_imports_neither_httpx_nor_lightkube() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import canarykit
        policy = canarykit.policy.load_policy({str(DEPLOY_EXAMPLE)!r})
        policy.to_toml()
        assert policy.deployment.has_router and policy.deployment.has_metrics
        extras = ("httpx", "httpx2", "lightkube")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in extras)
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_a_missing_extra_raises_the_constructors_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx now fails
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T/B/x")
    found = deployment(
        PROMETHEUS + "[hooks]\nrollback = 'http://x'\n"
        "[[notify]]\nkind = 'slack'\nurl_env = 'SLACK_URL'\n"
    )
    with pytest.raises(ModuleNotFoundError, match=re.escape("canarykit[prometheus]")):
        found.build_metrics()
    with pytest.raises(ModuleNotFoundError, match="httpx"):
        found.build_hooks()
    with pytest.raises(ModuleNotFoundError, match="httpx"):
        found.build_notifiers()


# --- the example, the schema and to_toml ------------------------------------------------


def test_deploy_example_loads_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_policy(DEPLOY_EXAMPLE)
    found = policy.deployment
    assert repr(found) == (
        f"Deployment(name='shop', state_dir={str(ROOT / 'examples' / '.canarykit')!r}, "
        "rollback_timeout=30.0, router='nginx', "
        "metrics='prometheus', hooks=['confirm_promotion', 'rollback'], notify=['slack'])"
    )
    assert (found.state_dir, found.on_interrupt, found.rollback_timeout) == (
        str(ROOT / "examples" / ".canarykit"),
        "rollback",
        30.0,
    )
    assert policy.plan.weights == (10.0, 30.0, 50.0, 70.0, 90.0, 100.0)
    round_trips(policy)

    router = found.build_router()
    assert isinstance(router, NginxRouter)
    assert router.stable == ("10.0.1.10:8080", "10.0.1.11:8080")
    assert router.canary == ("10.0.2.10:8080",)

    for variable in ("PROMETHEUS_TOKEN", "RELEASE_GATE_TOKEN", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=r"^metrics.bearer_token_env: .*PROMETHEUS_TOKEN"):
        found.build_metrics()
    monkeypatch.setenv("PROMETHEUS_TOKEN", SECRET)
    monkeypatch.setenv("RELEASE_GATE_TOKEN", "Bearer " + SECRET)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/" + SECRET)
    source = found.build_metrics()
    assert source.auth == BearerAuth(token=SECRET)
    assert source.queries == http_queries(arm_label="version", matchers={"job": "shop"})
    hooks = found.build_hooks()
    assert hooks is not None
    assert [hook.name for hook in hooks.confirm_promotion] == ["release-gate"]
    assert [hook.name for hook in hooks.rollback] == ["alert-rollback"]
    assert hooks.gate_timeout == 4 * 3600
    (slack,) = found.build_notifiers()
    assert isinstance(slack, SlackNotifier)
    assert (slack.rollout, slack.min_severity, slack.channel) == ("shop", Severity.WARN, "#deploys")
    shown = " ".join(repr(x) for x in (policy, source, hooks, slack))
    assert SECRET not in shown


def test_deploy_example_simulates(capsys: pytest.CaptureFixture[str]) -> None:
    from canarykit._cli import main

    assert main(["simulate", str(DEPLOY_EXAMPLE)]) == 0
    assert "outcome   promoted at 15:00" in capsys.readouterr().out
    assert main(["simulate", str(DEPLOY_EXAMPLE), "--scenario", "errors", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phase"] == "rolled_back"


def _schema_chunks() -> list[str]:
    doc = policy_module.__doc__ or ""
    block = doc[doc.index("::\n", doc.index("Schema")) + 3 : doc.index(">>> policy")]
    text = "\n".join(line[4:] for line in block.splitlines())
    chunks = [chunk.strip() for chunk in text.split("\n\n")]
    start = next(i for i, chunk in enumerate(chunks) if "[rollout]\n" in chunk)
    return chunks[start:]


def test_schema_examples_in_the_docstring_load_build_and_round_trip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chunks = _schema_chunks()

    def chunk(header: str) -> str:
        (found,) = [c for c in chunks if re.search(rf"^{re.escape(header)}", c, re.M)]
        return found

    routers = [c for c in chunks if re.search(r"^\[router\]$", c, re.M)]
    kinds = [re.findall(r'^kind = "(.*?)"', c, re.M) for c in routers]
    assert kinds == [["nginx"], ["haproxy"], ["gateway-api"], ["istio"]]
    for name in ("PROMETHEUS_TOKEN", "PROMETHEUS_TENANT", "PROMOTION_GATE_URL"):
        monkeypatch.setenv(name, "https://secret.internal/" + SECRET)
    for name in ("GATE_AUTHORIZATION", "SLACK_WEBHOOK_URL", "EVENTS_AUTHORIZATION"):
        monkeypatch.setenv(name, "https://hooks.slack.com/services/T/B/" + SECRET)
    common = [chunk("[rollout]"), chunk("[metrics]"), chunk("[hooks]"), chunk("[[notify]]")]
    built = []
    for router in routers:
        for queries in (chunk("[metrics.http]"), chunk("[metrics.queries]")):
            policy = load_policy("\n\n".join([PLAN, *common, router, queries]))
            round_trips(policy)
            found = policy.deployment
            built += [found.build_router(), found.build_metrics(), found.build_hooks()]
            built += found.build_notifiers()
    assert SECRET not in " ".join(repr(item) for item in built)


def test_to_toml_writes_hooks_in_every_form_back() -> None:
    policy = load(
        """
        [hooks]
        pre_rollout = "http://a.internal/x"
        create_canary = ["http://b.internal/x", {approval_file = "/tmp/ok"}]
        confirm_rollout = {url = "http://c.internal/x", metadata = {"a b" = "c"}}
        [[hooks.rollback]]
        url = "http://d.internal/x"
        backoff = 0.0001
        [[hooks.rollback]]
        url_env = "ROLLBACK_URL"
        timeout = 1e-9
        """
    )
    text = round_trips(policy)
    assert "[[hooks.rollback]]" in text
    assert "[hooks.confirm_rollout]" in text


def test_to_toml_writes_any_string_back() -> None:
    odd = 'a"b\\c\u007f\U0001f600\u2028\t'
    policy = load(NGINX + f"nginx = {policy_module._toml_string(odd)}\n")
    assert policy.deployment.router_table is not None
    assert policy.deployment.router_table["nginx"] == odd
    round_trips(policy)


# --- hostile input ----------------------------------------------------------------------

VALID = [
    {
        "rollout": {"name": "web", "call_timeout": "5s", "apply_attempts": 2},
        "router": {
            "kind": "nginx",
            "include_path": "/etc/nginx/canary.conf",
            "main_config": "/etc/nginx/nginx.conf",
            "pid_file": "/run/nginx.pid",
            "stable": ["10.0.0.1:8080"],
            "canary": ["10.0.0.2:8080"],
            "reload": "command",
            "timeout": "20s",
        },
        "metrics": {
            "kind": "prometheus",
            "url": "http://prometheus:9090",
            "stable": "v1",
            "canary": "v2",
            "bearer_token_env": "FUZZ_TOKEN",
            "headers_env": {"X-Tenant": "FUZZ_TENANT"},
            "http": {"matchers": {"job": "shop"}, "latency_metric": False},
        },
        "hooks": {
            "interval": "30s",
            "confirm_promotion": {
                "url_env": "FUZZ_URL",
                "timeout": "5s",
                "metadata": {"team": "web"},
                "headers_env": {"Authorization": "FUZZ_TOKEN"},
            },
            "rollback": ["http://alerts.internal/rollback", {"approval_file": "/tmp/x"}],
        },
        "notify": [
            {"kind": "slack", "url_env": "FUZZ_URL", "min_severity": "warn", "channel": "#d"},
            {"kind": "webhook", "url": "http://events.internal/x", "headers_env": {"A": "FUZZ_T"}},
        ],
    },
    {
        "router": {
            "kind": "haproxy",
            "runtime_api": "/run/haproxy.sock",
            "backend": "app",
            "stable": ["v1"],
            "canary": ["v2"],
            "weight_tolerance": 0.5,
        },
        "metrics": {
            "kind": "prometheus",
            "url": "https://prometheus:9090",
            "stable": "v1",
            "canary": "v2",
            "basic_user": "grafana",
            "basic_password_env": "FUZZ_TOKEN",
            "verify": True,
            "queries": {"requests": 'sum(a{v="{arm}"})', "errors": "vector(0)"},
        },
    },
    {
        "router": {
            "kind": "gateway-api",
            "route": "shop",
            "namespace": "prod",
            "stable_service": "a",
            "canary_service": "b",
            "port": 8080,
            "kubernetes": {"context": "prod", "timeout": "5s", "in_cluster": False},
        },
        "hooks": {"post_rollout": ["http://x.internal/a", "http://y.internal/b"]},
    },
    {
        "router": {
            "kind": "istio",
            "virtual_service": "app",
            "namespace": "default",
            "host": "app",
            "stable_subset": "v1",
            "canary_subset": "v2",
            "create_subsets": True,
            "conflict_attempts": 3,
        },
        "metrics": {
            "kind": "prometheus",
            "url": "http://prometheus:9090",
            "stable": "v1",
            "canary": "v2",
            "bearer_token_file": "/nonexistent/canarykit-token",
        },
    },
]
FUZZ_ENV = {
    "FUZZ_TOKEN": SECRET,
    "FUZZ_TENANT": SECRET + "-tenant",
    "FUZZ_URL": "https://hooks.slack.com/services/T/B/" + SECRET,
    "FUZZ_T": "Bearer " + SECRET,
}
HOSTILE_TEXT = [
    "",
    " ",
    "\n",
    "}",
    '"',
    "\\",
    "a;b}",
    "${x}",
    "nan",
    "-1s",
    "9" * 400,
    "\u202e",
    "\U0001f600",
    "\x00",
    "\x7f",
    "/dev/zero",
    "/",
    "unix:/x",
    "http://",
    "https://user:pw@host/x?token=1",
    "FUZZ_TOKEN",
    "nginx",
    "istio",
    "slack",
    "prometheus",
]
scalars = st.one_of(
    st.sampled_from([0, -1, 1, 101, 2**63 - 1, -(2**63), 0.0, 1e-300, 1e308, -1e308]),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False]),
    st.sampled_from(HOSTILE_TEXT),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    st.sampled_from([[], [[]], [{}], {}, {"kind": "nginx"}, [{"url": "http://x"}]]),
)


def to_toml(doc: dict[str, Any]) -> str:
    """`PLAN` and the tables of `doc`; a table replaced by a scalar goes before `PLAN`."""
    head, lines = [], [PLAN]
    for name, body in doc.items():
        key = toml_key(name)
        if isinstance(body, list) and all(isinstance(item, dict) for item in body):
            for item in body:
                lines += [
                    f"[[{key}]]",
                    *(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()),
                ]
        elif isinstance(body, dict):
            lines += [f"[{key}]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in body.items())]
        else:
            head.append(f"{key} = {toml_value(body)}")
    return "\n".join(head + lines) + "\n"


def under(field: str, prefix: str) -> bool:
    return not prefix or field == prefix or field.startswith((prefix + ".", prefix + "["))


@contextlib.contextmanager
def fuzz_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in FUZZ_ENV}
    os.environ.update(FUZZ_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


BUILDS = {
    "build_router": "router",
    "build_metrics": "metrics",
    "build_hooks": "hooks",
    "build_notifiers": "notify",
}


def build_all(policy: Policy) -> tuple[dict[str, str], list[str]]:
    """The field of each build's ConfigError, and what every build and error shows."""
    errors, shown = {}, [repr(policy)]
    with fuzz_environment():
        for build in BUILDS:
            try:
                shown.append(repr(getattr(policy.deployment, build)()))
            except ConfigError as exc:
                errors[build] = exc.field
                shown.append(str(exc))
            except CanaryError as exc:  # pragma: no cover - reported with its type
                raise AssertionError(f"{type(exc).__name__} is not a ConfigError: {exc}") from exc
    return errors, shown


def check_loads_and_builds(doc: dict[str, Any], table: str, original: dict[str, Any]) -> None:
    """`doc` (`original` made hostile under `table`) loads, round-trips and builds, or is
    refused naming a key under `table`.

    A build fails naming a key of its own table: under `table` when that is the table
    changed, else as it fails for `original`. Nothing else may come out, and no error or
    repr may show the secrets in the environment.
    """
    top = re.split(r"[.\[]", table, maxsplit=1)[0]
    try:
        policy = load_policy(to_toml(doc))
    except ConfigError as exc:
        assert under(exc.field, table) or exc.field == "policy", (exc.field, table, str(exc))
        assert SECRET not in str(exc)
        return
    assert load_policy(policy.to_toml()) == policy
    errors, shown = build_all(policy)
    assert SECRET not in " ".join(shown)
    expected, _ = build_all(load_policy(to_toml(original)))
    for build, field in errors.items():
        assert under(field, BUILDS[build]), (build, field)
        if not top or BUILDS[build] == top:
            assert under(field, top), (field, top)
        else:
            assert field == expected.get(build), (build, field, expected)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_deploy_table_with_a_hostile_value_loads_or_names_the_key(data: Any) -> None:
    original = data.draw(st.sampled_from(VALID))
    doc = json.loads(json.dumps(original))
    path = data.draw(st.sampled_from(paths(doc)), label="path")
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(values, label="value")
    table = list(path[:-1])
    while table and isinstance(table[-1], int) and table[0] != "notify":
        table.pop()
    check_loads_and_builds(doc, dotted(tuple(table)), original)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_deploy_table_with_a_key_removed_or_added_loads_or_names_the_key(data: Any) -> None:
    original = data.draw(st.sampled_from(VALID))
    doc = json.loads(json.dumps(original))
    tables = [p for p in paths(doc) if isinstance(_get(doc, p), dict)]
    if data.draw(st.booleans(), label="remove"):
        path = data.draw(st.sampled_from(paths(doc)), label="path")
        _get(doc, path[:-1]).pop(path[-1])
        table = path[:-1]
    else:
        table = data.draw(st.sampled_from(tables), label="table")
        keys = sorted({k for p in paths(VALID) for k in p if isinstance(k, str)})
        key = data.draw(st.sampled_from(keys) | st.text(max_size=8), label="key")
        _get(doc, table)[key] = data.draw(values, label="value")
    while table and isinstance(table[-1], int) and table[0] != "notify":
        table = table[:-1]
    check_loads_and_builds(doc, dotted(table), original)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def test_the_valid_fuzz_documents_load_and_build() -> None:
    found = []
    for doc in VALID:
        check_loads_and_builds(doc, "", doc)
        policy = load_policy(to_toml(doc))
        assert policy.deployment.has_router
        found.append(build_all(policy)[0])
    # The last one names a token file that is not there, so that reading one is fuzzed.
    assert found == [
        {},
        {},
        {"build_metrics": "metrics"},
        {"build_metrics": "metrics.bearer_token_file"},
    ]


def test_max_response_bytes_reaches_every_http_component(monkeypatch) -> None:
    monkeypatch.setenv("HOOK_URL", "https://gate.example/confirm")
    found = deployment(
        """
        [router]
        kind = "gateway-api"
        route = "shop"
        namespace = "prod"
        stable_service = "shop-v1"
        canary_service = "shop-v2"
        [router.kubernetes]
        max_response_bytes = 10000
        [metrics]
        kind = "prometheus"
        url = "http://127.0.0.1:9090"
        stable = "v1"
        canary = "v2"
        max_response_bytes = 20000
        [hooks.confirm_promotion]
        url_env = "HOOK_URL"
        max_response_bytes = 30000
        [[notify]]
        kind = "webhook"
        url_env = "HOOK_URL"
        max_response_bytes = 40000
        """
    )
    assert found.build_router().connection.max_response_bytes == 10000
    assert found.build_metrics().max_response_bytes == 20000
    (gate,) = found.build_hooks().confirm_promotion
    assert gate.max_response_bytes == 30000
    (notifier,) = found.build_notifiers()
    assert notifier.max_response_bytes == 40000
    error = config_error(
        '[metrics]\nkind = "prometheus"\nurl = "http://x"\nstable = "a"\ncanary = "b"\n'
        "max_response_bytes = 0\n"
    )
    assert error.field == "metrics.max_response_bytes"
