"""Policy files: a plan, a decider, simulation settings and how to deploy, in one TOML document.

How it works: the TOML is parsed (tomllib, or tomli on Python 3.10), then each table is
read through a `PolicyTable`, which knows its dotted key path. Every key is checked
against the keys its table accepts, so a typo is refused by name ("did you mean
'hold'?") instead of being silently ignored; a missing required key is named; a bad
value is a `ConfigError` whose field is the key path, e.g. ``plan.hold``. Values are
then handed to the plan generators and decider classes, which validate them again;
their errors are re-raised with the key path in front (``initial`` becomes
``plan.initial``). Decider kinds are a registry (`register_decider_kind`), so a new
decider adds a builder without touching the loader. The tables that run a real rollout
(``[rollout]``, ``[router]``, ``[metrics]``, ``[hooks]``, ``[[notify]]``) are checked the
same way but only built, extras and secrets included, by `Deployment`'s ``build_*``
methods (``canarykit run``), so ``canarykit simulate`` needs neither.

Schema (durations are seconds as a number, or a string such as ``"90s"``, ``"5m"``,
``"1h30m"``, ``"250ms"``; percents are numbers in (0, 100] or strings such as ``"20%"``,
and fractions (error rates, margins) numbers such as 0.02 or strings such as ``"2%"``;
indices count from 0)::

    [plan]
    shape = "linear"            # required: linear | exponential | weights | codedeploy | steps
    initial = 10                # linear, exponential: the first canary percent
    step = 20                   # linear: percent added each step (the last one ends at 100)
    factor = 2                  # exponential: growth factor (> 1)
    weights = [1, 5, 25, 50]    # weights: the canary percents in order
    name = "Canary10Percent5Minutes"  # codedeploy: a CodeDeploy configuration name
    hold = "2m"                 # linear, exponential, weights: time at each weight below 100
    final_bake = "5m"           # linear, exponential, weights: time at 100% (default 0)
    analysis_interval = "30s"   # background analysis window; required without analyze steps
    pause_limit = "30m"         # roll back after this long paused (default: wait for ever)
    require_pass = true         # promote only after a passing verdict (default true)
    consecutive_error_limit = 4 # metrics/decider errors in a row before rollback (default 4)
    progress_deadline = "10m"   # a step stuck this long past its own length ends (default 10m)
    on_progress_deadline = "rollback"  # rollback (default) | pause

    # shape = "steps": an array of tables, each with exactly one of
    [[plan.steps]]
    set_weight = 10                                     # percent to the canary
    [[plan.steps]]
    pause = "5m"                                        # hold, watched by background analysis
    [[plan.steps]]
    wait_for_promotion = true                           # until an operator promotes
    [[plan.steps]]
    analyze = "5m"                                      # inline analysis that must pass ...
    interval = "1m"                                     # ... one window per interval
                                                        # (default: plan.analysis_interval)
    [[plan.steps]]
    header_route = {header = "User-Agent", regex = ".*Chrome.*"}  # or exact = / prefix =;
                                                        # percent = 10 sends only 10% of the
                                                        # matching requests to the canary;
                                                        # an array of such tables for several
    [[plan.steps]]
    clear_header_routes = true                          # remove the header routes
    [[plan.steps]]
    mirror = 10                                         # percent copied to the canary; 0 stops

    [decider]
    kind = "threshold"          # required: threshold | relative | sequential | kayenta |
                                # all | any (see decider_kinds())
    failure_limit = 2           # failed checks (over the whole analysis) before rollback
    no_data = "inconclusive"    # fail | inconclusive | ignore
    [[decider.metrics]]         # one or more
    metric = "error_rate"       # requests, errors, error_rate, success_rate, mean_latency,
                                # p50, p95, p99, throughput, or a gauge the policy's source
                                # declares ([metrics] or [simulation] gauges); any other
                                # name is refused (did you mean ...?)
    max = 0.02                  # and/or min; inclusive. Rates also take "2%"; latencies
                                # also take a duration such as "150ms"
    arm = "canary"              # canary (default) | stable

    # kind = "relative": each metric of the canary against the stable one, per window
    [decider]
    kind = "relative"
    no_data = "inconclusive"    # fail | inconclusive | ignore
    record_windows = 10         # stable windows kept per metric: at 100% the canary is
                                # judged against them (default 10)
    [[decider.metrics]]         # one or more, each with at least one limit
    metric = "error_rate"       # as for threshold
    max_ratio = 1.5             # canary <= 1.5 x stable (>= 1); min_ratio in (0, 1] bounds a fall
    max_increase = "0.5%"       # canary <= stable + 0.5 points; max_decrease bounds a fall.
                                # Rates also take "0.5%", latencies a duration ("20ms")
    min_difference = "0.1%"     # changes this small always pass (default 0)
    min_requests = 100          # per arm, before the metric is judged (default 0)
    direction = "increase"      # increase | decrease | either; default: what the limits say

    # kind = "sequential": anytime-valid tests, checked every window at no extra risk
    [decider]
    kind = "sequential"
    alpha = 0.01                # false-rollback probability per rollout, per test (<= 0.5)
    errors = true               # test the canary's error rate against stable (default true)
    error_margin = "5%"         # an error-rate increase that is not a regression (default 5%)
    latency = true              # test latency (default: true when latency_quantiles is given)
    latency_margin = "3%"       # a slowdown that is not a regression (default 3%)
    latency_quantiles = ["p99"] # opt-in tail guards, or [0.99] (default []: the
                                # whole-distribution test alone)
    min_samples = 100           # latencies per arm before the latency test judges
    min_errors = 0              # errors in both arms together before the error test judges
    early_pass = true           # pass early once a regression is ruled out (default false)
    pass_margin = "20%"         # with early_pass: the increase ruled out (default 20%)

    # kind = "kayenta": Kayenta's Mann-Whitney judge with group scores
    [decider]
    kind = "kayenta"
    judge_every = 60            # windows between judgements (NOT_YET in between)
    min_points = 50             # points per arm (latency: requests) before judging
    max_points = 360            # points kept per arm and metric
    marginal = 75               # a score <= this fails
    pass = 95                   # a score >= this passes; in between is inconclusive
    nodata_fail_percent = 50    # score 0 when this share of metrics has no data; false: never
    groups = {errors = 60, latency = 40}  # group weights ([decider.groups] works too);
                                # groups without one share what is left of 100
    [[decider.metrics]]         # one or more
    metric = "error_rate"       # a metric as for threshold, or "latency" (the histogram)
    direction = "increase"      # increase | decrease | either (default)
    allowed_increase = 1.1      # mean ratio a High needs (>= 1; default 1)
    allowed_decrease = 1.0      # mean ratio a Low needs (in (0, 1]; default 1)
    critical = true             # a High/Low/Nodata fails the whole judgement (default false)
    critical_increase = 1.5     # with critical: the mean ratio that is critical (default 1)
    critical_decrease = 0.5
    must_have_data = false      # no data is a failure (NodataFailure)
    nan_strategy = "remove"     # remove | replace (missing points become 0)
    outliers = "remove"         # remove (Kayenta's fences) | ksigma | keep
    outlier_factor = 3.0        # IQRs beyond the quartiles (never inside the 1st/99th
                                # percentiles); sigmas for ksigma
    effect_size = "mean_ratio"  # mean_ratio | cles (allowed_*/critical_* in this measure;
                                # CLES neutral 0.5)
    classifier = "mann_whitney"  # mann_whitney | mean_inequality
    muted = false               # reported, not scored
    group = "errors"            # default: the metric's name; an array for several groups
    confidence = 0.98           # of the Hodges-Lehmann interval
    tolerance = 0.25            # of the shift, relative to its estimate
    [[decider.metrics]]
    metric = "latency"          # the latency histograms, compared as a whole
    direction = "increase"
    group = "latency"

    # kind = "all" (every member must pass: the worst verdict wins) or "any" (the best wins)
    [decider]
    kind = "all"
    [[decider.members]]         # two or more, each a decider table with its own kind
    kind = "sequential"
    [[decider.members]]
    kind = "relative"
    [[decider.members.metrics]]
    metric = "p99"
    max_ratio = 1.2

    # Limits (Argo Rollouts' measurement limits), for any kind above: given any of these,
    # the decider is wrapped in limited(...). A kind refuses, by name, those it has no use
    # for: threshold counts failed checks with its own failure_limit and its FAIL is final
    # (no consecutive_failures); a failed sequential test stays failed and is never
    # inconclusive (only consecutive_success_limit and dry_run); all / any take failure
    # counts on their members; a run (consecutive_*) is refused around a Kayenta judge
    # with judge_every > 1, whose NOT_YET between judgements would restart every run.
    failure_limit = 3           # FAIL windows (in all) before rollback (default 1)
    consecutive_failures = 2    # FAIL windows in a row before rollback
    inconclusive_limit = 2      # INCONCLUSIVE windows (in all) before pausing (default 1)
    consecutive_success_limit = 3  # PASS windows in a row before a PASS (default 1)
    dry_run = false             # judge and report, but always PASS (never acted on)

    [simulation]                # optional; used by `canarykit simulate` and `evaluate`
    requests_per_second = 100   # total, both arms
    seed = 0
    header_share = 0.6          # share of requests a header route matches (default 0.5;
                                # "60%" works too), or per header:
                                # {"User-Agent" = 0.6, "X-Beta" = "2%"}
    [simulation.gauges]         # optional: gauges both arms report, by name
    cpu_cores = 0.25            # a number: both arms alike, exactly
    memory_bytes = {value = 2e8, canary_per_hour = 5e7, at = "10m", noise = 0.01}
                                # value: both arms' level (required); canary_factor: the
                                # canary's level x this from `at` (default 1); canary_per_hour:
                                # and growing this much an hour, a leak (default 0); at:
                                # when the canary's change starts (default 0); noise: each
                                # window's relative spread, log-normal (default 0)

    # The tables below are optional; `canarykit run` uses them (Deployment), `canarykit
    # simulate` ignores them. Secrets never go in the file: a key ending in _env names an
    # environment variable, one ending in _file a file, read when the rollout starts.
    # Relative paths (state_dir, include_path, pid_file, runtime_api, approval_file, *_file,
    # verify, kubeconfig, ...) are relative to the policy file's folder.
    [rollout]
    name = "web"                # the rollout's key for its saved state and lease
                                # (default: the policy file's name without .toml)
    state_dir = ".canarykit"    # where the state and lease files live (default .canarykit
                                # beside the policy file; [state] backend "file" only);
                                # the lease lets one runner at a time drive a rollout name
    release = "v1.4.2"          # the release id this rollout ships (--release wins): after
                                # a finished rollout, a new id starts a new one (the old
                                # record goes to the history), the same id or none is
                                # "nothing to do" (exit 5)
    adopt = false               # start from the router's current split when it is not at
                                # stable (default false: refuse; `canarykit init` resets it)
    on_interrupt = "rollback"   # what SIGINT/SIGTERM do to traffic: rollback (default) | leave
    on_metrics_outage = "rollback"  # when the metrics source keeps failing: rollback
                                # (default) | pause (hold traffic where it is)
    metrics_outage_limit = "10m"  # with pause: roll back after this long without metrics
                                # (default 30m)
    call_timeout = "30s"        # each router, metrics, store or lease call (default 30s)
    rollback_timeout = "2m"     # a rollback, confirmed by read-back (default 2m)
    apply_attempts = 3          # tries of each traffic change before rolling back (default 3)

    # [state]: where the state, the lease and the operator commands live. Without it (or
    # with backend = "file"), in [rollout] state_dir on this host. With etcd or PostgreSQL
    # every runner and every `canarykit promote|pause|resume|abort|status` that reaches
    # the store shares them: the lease keeps one runner per rollout name across hosts,
    # its token fences the runner's writes, and only the lease holder takes commands.
    [state]
    backend = "etcd"            # file (default: [rollout] state_dir) | etcd (the etcd
                                # extra) | postgres (the postgres extra)
    ttl = "15s"                 # the lease without renewal (default 30s for file, else
                                # 15s; etcd grants at least 2s)
    endpoints = ["https://etcd-1:2379", "https://etcd-2:2379", "https://etcd-3:2379"]
                                # etcd, required: the members' client URLs
    prefix = "canarykit/"       # etcd: where its keys live (ends with /; default canarykit/)
    dsn = "host=db.internal dbname=deploys user=canary sslmode=verify-full"
                                # postgres, required (or dsn_env / dsn_file, which may
                                # hold a password): a libpq connection string; a password
                                # in it is refused (give it with password_env or _file)
    table = "canarykit"         # postgres: the tables' name prefix (default canarykit)
    ca_file = "/etc/canarykit/ca.pem"  # TLS: the CA of the servers' certificates
                                # (etcd: https:// endpoints; postgres: sslrootcert)
    cert_file = "/etc/canarykit/client.pem"  # TLS: a client certificate (postgres: sslcert)
    key_file = "/etc/canarykit/client.key"  # TLS: its key (postgres: sslkey)
    username = "deploy"         # etcd: its own authentication, with a password from
    password_env = "ETCD_PASSWORD"  # a variable, or password_file = "/run/secrets/etcd"
                                # (postgres: the password of the dsn's user)

    # [router]: one kind; the other keys are its constructor's (canarykit.routers). A
    # SplitProbe (verify) has no TOML form: build the router in Python for that.
    [router]
    kind = "nginx"              # NginxRouter: nginx | haproxy | gateway-api | istio
    include_path = "/etc/nginx/canary.conf"  # required: the file the router owns
    main_config = "/etc/nginx/nginx.conf"    # required: the nginx.conf that includes it
    pid_file = "/run/nginx.pid" # required: the master's pid file
    stable = ["10.0.0.1:8080"]  # required: host:port, [v6]:port or unix:/path
    canary = ["10.0.0.2:8080"]  # required
    prefix = "/etc/nginx"       # nginx -p (default: none)
    name = "canarykit"          # prefix of the upstreams and variables written
    nginx = "/usr/sbin/nginx"   # the binary (default: found on PATH and in sbin)
    reload = "signal"           # signal (SIGHUP to the master) | command (nginx -s reload)
    timeout = "10s"             # each validation, reload and switch-over
    slots = ["blue", "green"]   # alternate slots (SlotRouter): stable = blue's servers,
                                # canary = green's; each release goes to the idle one

    [router]
    kind = "haproxy"            # HAProxyRouter: weights through the runtime API
    runtime_api = "/run/haproxy/admin.sock"  # required: stats socket path or host:port
    backend = "app"             # required: the backend holding the servers
    stable = ["v1a", "v1b"]     # required: server names
    canary = ["v2"]             # required
    timeout = "5s"              # each exchange with the runtime API
    slots = ["blue", "green"]   # as for nginx
    weight_tolerance = 0.1      # percentage points a split may be off (default 0.1)
    persist_config = "/etc/haproxy/haproxy.cfg"  # also write the weights there (opt-in)
    haproxy = "/usr/sbin/haproxy"  # the binary for haproxy -c

    [router]
    kind = "gateway-api"        # GatewayAPIRouter: an HTTPRoute (the kubernetes extra)
    route = "shop"              # required: the HTTPRoute
    namespace = "prod"          # required
    stable_service = "shop-v1"  # required
    canary_service = "shop-v2"  # required
    port = 8080                 # the canary backendRef's port (default: the stable one's)
    rule = "main"               # the rule to split (default: the route's one rule)
    conflict_attempts = 5       # tries when someone else changes the route meanwhile
    [router.kubernetes]         # gateway-api and istio: KubernetesConnection (optional)
    kubeconfig = "/home/deploy/.kube/config"  # default: $KUBECONFIG, else ~/.kube/config
    context = "prod"            # default: the kubeconfig's current context
    in_cluster = false          # true: the pod's service account (default: guessed)
    service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    timeout = "10s"             # each request, its answer read in full (default 10s)
    max_response_bytes = 3145728  # the largest answer read (default 3 MiB)
    field_manager = "canarykit" # recorded in managedFields
    trust_env = true            # proxy and certificate settings from the environment

    [router]
    kind = "istio"              # IstioRouter: a VirtualService (the kubernetes extra)
    virtual_service = "app"     # required
    namespace = "default"       # required
    host = "app"                # required
    stable_subset = "v1"        # required
    canary_subset = "v2"        # required
    route = "main"              # the http route to split (default: the one to stable)
    destination_rule = "app"    # default: the host's first label
    create_subsets = false      # create the DestinationRule's missing subsets
    subset_label = "version"    # the pod label the subsets select
    conflict_attempts = 5       # and [router.kubernetes] as for gateway-api

    [metrics]
    kind = "prometheus"         # PrometheusSource (the prometheus extra)
    url = "http://prometheus:9090"  # required; no credentials or query string in it
    stable = "v1"               # required: the stable arm's label value ({arm})
    canary = "v2"               # required
    timeout = "5s"              # one HTTP request (default 5s)
    attempts = 3                # tries per query (default 3)
    backoff = "250ms"           # before the first retry, doubling (default 250ms)
    deadline = "20s"            # a whole collect, retries included (default 20s)
    settle = "0s"               # wait after a window's end before querying (default 0s)
    max_response_bytes = 4194304  # the largest answer read (default 4 MiB)
    verify = true               # TLS: true | false | "/path/to/ca.pem" (a CA bundle)
    bearer_token_env = "PROMETHEUS_TOKEN"  # Authorization: Bearer, from a variable ...
    # bearer_token_file = "/var/run/secrets/prometheus/token"  # ... or from a file; or
    # basic_user = "grafana" with basic_password_env = "VAR" (or basic_password_file)
    headers_env = {X-Scope-OrgID = "PROMETHEUS_TENANT"}  # more headers, values from variables

    # The queries: [metrics.http] (http_queries) or [metrics.queries] (PrometheusQueries);
    # neither: http_requests_total{version, code} and http_request_duration_seconds.
    [metrics.http]
    arm_label = "version"       # the label that tells the arms apart
    requests_metric = "http_requests_total"  # a request counter with a status label
    status_label = "code"
    error_status = "5.."        # a regex: the statuses that are errors
    latency_metric = "http_request_duration_seconds"  # a classic histogram; false: none
    matchers = {job = "shop"}   # label equalities every selector must hold
    gauges = {cpu = 'avg(rate(process_cpu_seconds_total{version="{arm}"}[{window}]))'}

    [metrics.queries]           # PromQL templates: {arm} (in quotes) and {window}
    requests = 'sum(increase(hits_total{track="{arm}"}[{window}]))'  # required
    errors = 'sum(increase(hits_total{track="{arm}",code=~"5.."}[{window}]))'  # required
    latency_buckets = 'sum by (le) (increase(latency_bucket{track="{arm}"}[{window}]))'
    latency_sum = 'sum(increase(latency_sum{track="{arm}"}[{window}]))'
    gauges = {cpu = 'avg(cpu{track="{arm}"})'}

    [hooks]                     # canarykit.hooks.Hooks
    interval = "1m"             # between asks of a closed gate, and rollback checks
    gate_timeout = "2h"         # abort when a gate stays closed this long (default: never)
    call_timeout = "1m"         # each call of a hook, its retries included
    traffic_back = [50, 0]      # after promote_stable: canary percents on the way back to
                                # stable, each read back (default [0]: at once)
    traffic_back_hold = "30s"   # the time at each of them but the last (default 0s)
    # One key per point: confirm_rollout, create_canary, pre_rollout,
    # confirm_traffic_increase, rollback, confirm_promotion, promote_stable (upgrade the
    # stable servers; then traffic goes back to them), retire_stable, retire_canary,
    # post_rollout. Each takes a webhook URL (a Webhook: yes on 2xx), a
    # table as below, or an array of these (all must say yes; rollback: the first yes).
    pre_rollout = "http://smoke-tests.internal/run"
    confirm_traffic_increase = {approval_file = "/run/deploy/web.approval"}  # FileApproval:
                                # `echo approve > FILE` opens the gate, `echo deny` aborts
    post_rollout = ["http://deploys.internal/done", "http://audit.internal/canary"]
    [hooks.confirm_promotion]   # a Webhook
    url_env = "PROMOTION_GATE_URL"  # the URL, or url = "https://..." (one of them)
    name = "promotion-gate"     # shown in logs (default "webhook")
    timeout = "10s"             # each try (default 10s)
    attempts = 3                # tries on timeouts, connection errors, 408, 425, 429, 5xx
    backoff = "1s"              # before the first retry, doubling (default 1s)
    max_response_bytes = 1048576  # the largest 2xx answer read (default 1 MiB)
    namespace = "shop"          # sent in the body, as Flagger's payload
    metadata = {team = "web"}   # sent in the body
    headers_env = {Authorization = "GATE_AUTHORIZATION"}  # headers, values from variables
    [[hooks.rollback]]          # an array of tables works too
    url = "http://alerts.internal/canary/rollback"

    [[notify]]                  # one table per notifier; a background task posts
    kind = "slack"              # slack (SlackNotifier) | webhook (WebhookNotifier)
    url_env = "SLACK_WEBHOOK_URL"  # a Slack webhook URL is a secret: give it in a variable
                                # (url = "https://..." works, but puts it in the file)
    min_severity = "warn"       # info (default) | warn | error
    every_verdict = false       # also passing and not-yet verdicts, one per window
    channel = "#deploys"        # slack: overrides that legacy webhooks honour
    username = "canarykit"
    timeout = "5s"              # each attempt (default 5s)
    attempts = 3                # in all (default 3)
    backoff = "1s"              # before the first retry, doubling (default 1s)
    queue_size = 100            # notices waiting in memory (default 100)
    drain_timeout = "10s"       # to deliver what is queued once the rollout ends
    max_response_bytes = 1048576  # the largest 2xx answer read (default 1 MiB)
    [[notify]]
    kind = "webhook"            # Notice.to_json() as the body
    url = "http://events.internal/canary"
    headers_env = {Authorization = "EVENTS_AUTHORIZATION"}  # webhook: headers from variables

>>> policy = load_policy('''
... [plan]
... shape = "linear"
... initial = 10
... step = 45
... hold = "2m"
... analysis_interval = "30s"
... [decider]
... kind = "threshold"
... [[decider.metrics]]
... metric = "error_rate"
... max = "2%"
... ''')
>>> policy.plan.weights
(10.0, 55.0, 100.0)
>>> policy.decider.bounds
(Bound(metric='error_rate', max=0.02),)
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ConfigError, FileRefusedError
from .._files import read_regular
from .._plan import (
    DEFAULT_PROGRESS_DEADLINE,
    PROGRESS_DEADLINE_POLICIES,
    Analyze,
    Pause,
    Plan,
    SetHeaderRoutes,
    SetMirror,
    SetWeight,
    Step,
    WaitForPromotion,
    exponential,
    from_weights,
    linear,
)
from .._protocols import Decider
from .._split import HeaderRoute
from ..presets import codedeploy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    # tomli is a dependency on 3.10 only, so it may be absent where mypy runs.
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
from .._decider_checks import check_full_canary_steps, check_metric_names
from ._deciders import _build_decider, _dump_decider, declared_gauges
from ._deployment import (
    _DEPLOYMENT_TABLES,
    _SUB_TABLES,
    Deployment,
    _deployment_tables,
    _read_deployment,
    duration_value,
)
from ._table import PolicyTable, _error, _prefixed, parse_fraction, parse_percent

__all__ = ["Policy", "SimulationSettings", "load_policy"]
# ---------------------------------------------------------------------------------------
# The plan

_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # shape: (required keys, optional keys)
    "linear": (("initial", "step", "hold"), ("final_bake",)),
    "exponential": (("initial", "factor", "hold"), ("final_bake",)),
    "weights": (("weights", "hold"), ("final_bake",)),
    "codedeploy": (("name",), ()),
    "steps": (("steps",), ()),
}
_PLAN_COMMON = (
    "shape",
    "analysis_interval",
    "pause_limit",
    "require_pass",
    "consecutive_error_limit",
    "progress_deadline",
    "on_progress_deadline",
)
_STEP_KINDS = (
    "set_weight",
    "pause",
    "wait_for_promotion",
    "analyze",
    "header_route",
    "clear_header_routes",
    "mirror",
)
_HEADER_MATCHES = ("exact", "prefix", "regex")


def _read_plan(table: PolicyTable) -> Plan:
    shape = table.choice("shape", tuple(_SHAPES))
    required, optional = _SHAPES[shape]
    takes = required + optional
    elsewhere = {
        key: f"is not used by shape {shape!r} (it takes {', '.join(takes)})"
        for other, (req, opt) in _SHAPES.items()
        if other != shape
        for key in req + opt
        if key not in takes
    }
    table.check_keys(_PLAN_COMMON + takes, elsewhere=elsewhere)
    needed = f" for shape {shape!r}"
    for key in required:
        table.raw(key, needed_for=needed)

    options: dict[str, Any] = {}
    if "analysis_interval" in table:
        options["analysis_interval"] = table.duration("analysis_interval")
    if "pause_limit" in table:
        options["pause_limit"] = table.duration("pause_limit")
    if "require_pass" in table:
        options["require_pass"] = table.boolean("require_pass")
    if "consecutive_error_limit" in table:
        options["consecutive_error_limit"] = table.integer("consecutive_error_limit", minimum=1)
    if "progress_deadline" in table:
        options["progress_deadline"] = table.duration("progress_deadline")
    if "on_progress_deadline" in table:
        options["on_progress_deadline"] = table.choice(
            "on_progress_deadline", PROGRESS_DEADLINE_POLICIES
        )

    plan: Plan
    if shape == "steps":
        steps = _read_steps(table, options.get("analysis_interval"))
        with _prefixed(table.path):
            plan = Plan(steps=steps, **options)
    elif shape == "codedeploy":
        name = table.string("name")
        with _prefixed(table.path):
            plan = codedeploy(name, **options)
    else:
        hold = table.duration("hold", allow_zero=True)
        bake = table.duration("final_bake", 0.0, allow_zero=True)
        if shape == "weights" and not isinstance(table.raw("weights"), list):
            raise ConfigError(table.field("weights"), table.raw("weights"), "must be an array")
        # Percents are read first (a number or "20%"), naming their key path themselves.
        weights: list[float] = []
        initial = step = 0.0
        if shape == "weights":
            weights = [
                parse_percent(f"{table.field('weights')}[{index}]", weight)
                for index, weight in enumerate(table.raw("weights"))
            ]
        else:
            initial = _plan_percent(table, "initial")
        if shape == "linear":
            step = _plan_percent(table, "step")
        with _prefixed(table.path):
            # The generators validate percents and factors themselves; _prefixed puts
            # "plan." in front of the field they name.
            if shape == "linear":
                plan = linear(initial, step, hold=hold, final_bake=bake, **options)
            elif shape == "exponential":
                plan = exponential(
                    initial, table.raw("factor"), hold=hold, final_bake=bake, **options
                )
            else:
                plan = from_weights(weights, hold=hold, final_bake=bake, **options)

    if plan.analysis_interval is None and not any(isinstance(s, Analyze) for s in plan.steps):
        raise _error(
            table.field("analysis_interval"),
            "is required unless the plan has analyze steps (otherwise the decider never "
            "looks at the canary)",
        )
    return plan


def _plan_percent(table: PolicyTable, key: str) -> float:
    """A plan's percent key: a number or a string such as ``"20%"`` (the same: 20)."""
    return parse_percent(table.field(key), table.raw(key))


def _read_steps(table: PolicyTable, analysis_interval: float | None) -> list[Step]:
    steps: list[Step] = []
    for item in table.tables("steps", needed_for=" for shape 'steps'"):
        present = [key for key in _STEP_KINDS if key in item]
        if len(present) != 1:
            problem = f"needs exactly one of {', '.join(_STEP_KINDS)}"
            raise ConfigError(item.path, sorted(item.data), problem)
        kind = present[0]
        item.check_keys(
            (kind, "interval") if kind == "analyze" else (kind,),
            elsewhere={"interval": "is only used with analyze"},
        )
        steps.append(_read_step(item, kind, analysis_interval))
    return steps


def _read_step(item: PolicyTable, kind: str, analysis_interval: float | None) -> Step:
    if kind == "set_weight":
        weight = _plan_percent(item, kind)
        with _prefixed(item.path, {"percent": kind}):
            return SetWeight(weight)
    if kind == "pause":
        return Pause(item.duration(kind))
    if kind == "wait_for_promotion":
        if item.boolean(kind) is not True:
            raise ConfigError(item.field(kind), False, "must be true (leave the step out instead)")
        return WaitForPromotion()
    if kind == "analyze":
        seconds = item.duration(kind)
        if "interval" in item or analysis_interval is None:
            interval = item.duration("interval", needed_for=" (or set plan.analysis_interval)")
        else:
            interval = analysis_interval
        with _prefixed(item.path, {"seconds": kind}):
            return Analyze(seconds, interval)
    if kind == "header_route":
        # Typed as Any: the attrs plugin cannot type SetHeaderRoutes' `converter=tuple`.
        routes: Any = tuple(_read_routes(item))
        return SetHeaderRoutes(routes)
    if kind == "clear_header_routes":
        if item.boolean(kind) is not True:
            raise ConfigError(item.field(kind), False, "must be true (leave the step out instead)")
        return SetHeaderRoutes(())
    assert kind == "mirror"
    mirrored = _plan_percent(item, kind)
    with _prefixed(item.path, {"percent": kind}):
        return SetMirror(mirrored)


def _read_routes(item: PolicyTable) -> list[HeaderRoute]:
    value = item.raw("header_route")
    if isinstance(value, Mapping):
        tables = [PolicyTable(value, item.field("header_route"))]
    elif isinstance(value, list):
        tables = item.tables("header_route")
    else:
        raise ConfigError(
            item.field("header_route"),
            value,
            "must be a table such as {header = 'User-Agent', regex = '.*Chrome.*'}",
        )
    routes = []
    for route in tables:
        route.check_keys(("header", "percent", *_HEADER_MATCHES))
        header = route.string("header")
        matches = [key for key in _HEADER_MATCHES if key in route]
        if len(matches) != 1:
            raise _error(route.path, "needs exactly one of exact, prefix, regex")
        match = matches[0]
        names = {
            "header_route.header": "header",
            "header_route.value": match,
            "header_route.percent": "percent",
        }
        percent = _plan_percent(route, "percent") if "percent" in route else 100.0
        with _prefixed(route.path, names):
            routes.append(
                HeaderRoute(header=header, value=route.raw(match), match=match, percent=percent)
            )
    return routes


# ---------------------------------------------------------------------------------------
# The policy


def _int_to_float(value: Any) -> Any:
    # 100 and 100.0 are the same rate; keep bools and strings for the validator to refuse.
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _positive_rate(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("requests_per_second", value, "must be a number")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("requests_per_second", value, "must be a finite number > 0")


def _integer_seed(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("seed", value, "must be an integer")


def _header_share(value: Any) -> float | Mapping[str, float]:
    from ..testing._scripted import _freeze_header_share

    return _freeze_header_share(value)


def _simulation_gauges(value: Any) -> Mapping[str, Any]:
    """`value` as a read-only mapping of gauge name to `ScriptedGauge` (a number: a level)."""
    from types import MappingProxyType

    from ..testing._scripted import ScriptedGauge, _freeze_rates

    gauges = {}
    for name, gauge in _freeze_rates(value).items():
        if not isinstance(gauge, ScriptedGauge):
            if callable(gauge):
                raise ConfigError(f"gauges[{name!r}]", gauge, "must be a number or a ScriptedGauge")
            gauge = ScriptedGauge(gauge)
        gauges[name] = gauge
    return MappingProxyType(gauges)


@attrs.frozen(kw_only=True)
class SimulationSettings:
    """How ``canarykit simulate`` and ``evaluate`` script a policy's traffic.

    - `requests_per_second`: total traffic over both arms; `seed`: the noise's seed.
    - `header_share`: the share of requests a header route matches (one number for every
      header, or header name to share; 0.5 for a header not listed), which sets the
      canary's traffic during header-route stages (`canarykit.testing.ScriptedMetrics`).
    - `gauges`: gauge name to a `canarykit.testing.ScriptedGauge` (a number is a level
      both arms report exactly): CPU and memory, with a change on the canary if asked.

    >>> SimulationSettings()
    SimulationSettings(requests_per_second=100.0, seed=0, header_share=0.5, gauges={})
    """

    requests_per_second: float = attrs.field(
        default=100.0, converter=_int_to_float, validator=_positive_rate
    )
    seed: int = attrs.field(default=0, validator=_integer_seed)
    header_share: float | Mapping[str, float] = attrs.field(
        default=0.5,
        converter=_header_share,
        hash=False,
        repr=lambda v: repr(v if isinstance(v, float) else dict(v)),
    )
    gauges: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_simulation_gauges, hash=False, repr=lambda g: repr(dict(g))
    )


@attrs.frozen(kw_only=True)
class Policy:
    """A deploy policy: a plan, its decider, simulation settings and a `Deployment` to run it.

    `deployment` holds the router, metrics, hooks and notifiers that ``canarykit run``
    builds (all absent in a policy for ``canarykit simulate`` only). Load one from TOML
    with `load_policy`; write one back with `to_toml`.
    """

    plan: Plan
    decider: Decider
    simulation: SimulationSettings = attrs.field(factory=SimulationSettings)
    deployment: Deployment = attrs.field(factory=Deployment)

    def to_toml(self) -> str:
        """Write the policy as TOML that `load_policy` reads back to an equal policy.

        The plan is written as ``shape = "steps"`` (a generator's shape is not kept);
        the decider through its kind's ``dump``; the deployment's tables as read, with
        ``[rollout]`` settings only where they differ from the defaults. A URL written
        in the file (``url = ...``) is written back: keep secrets in ``*_env`` keys.
        """
        lines = ["[plan]", 'shape = "steps"']
        plan = self.plan
        if plan.analysis_interval is not None:
            lines.append(f"analysis_interval = {_toml_duration(plan.analysis_interval)}")
        if plan.pause_limit is not None:
            lines.append(f"pause_limit = {_toml_duration(plan.pause_limit)}")
        lines.append(f"require_pass = {_toml_value(plan.require_pass)}")
        lines.append(f"consecutive_error_limit = {plan.consecutive_error_limit}")
        if plan.progress_deadline != DEFAULT_PROGRESS_DEADLINE:
            if plan.progress_deadline is None:
                raise ConfigError(
                    "plan.progress_deadline", None, "cannot be written to TOML (no null there)"
                )
            lines.append(f"progress_deadline = {_toml_duration(plan.progress_deadline)}")
        if plan.on_progress_deadline != "rollback":
            lines.append(f"on_progress_deadline = {_toml_value(plan.on_progress_deadline)}")
        for index, step in enumerate(plan.steps):
            lines += ["", "[[plan.steps]]", *_step_lines(index, step)]
        lines += ["", "[decider]", *_decider_lines(self.decider)]
        lines += [
            "",
            "[simulation]",
            f"requests_per_second = {_toml_value(self.simulation.requests_per_second)}",
            f"seed = {self.simulation.seed}",
            *_simulation_lines(self.simulation),
        ]
        lines += _deployment_lines(self.deployment)
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_duration(seconds: float) -> str:
    return _toml_value(duration_value(seconds))


def _step_lines(index: int, step: Step) -> list[str]:
    if isinstance(step, SetWeight):
        return [f"set_weight = {step.percent!r}"]
    if isinstance(step, Pause):
        return [f"pause = {_toml_duration(step.seconds)}"]
    if isinstance(step, WaitForPromotion):
        return ["wait_for_promotion = true"]
    if isinstance(step, Analyze):
        if step.decider is not None:
            raise ConfigError(
                f"plan.steps[{index}].decider", step.decider, "cannot be written to a policy file"
            )
        return [
            f"analyze = {_toml_duration(step.seconds)}",
            f"interval = {_toml_duration(step.interval)}",
        ]
    if isinstance(step, SetHeaderRoutes):
        if not step.routes:
            return ["clear_header_routes = true"]
        routes = [
            {"header": r.header, r.match.value: r.value}
            | ({} if r.percent == 100 else {"percent": r.percent})
            for r in step.routes
        ]
        return [f"header_route = {_toml_value(routes)}"]
    assert isinstance(step, SetMirror)
    return [f"mirror = {step.percent!r}"]


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string (same escapes), but for two things: JSON's
    # ASCII escapes write a character beyond the BMP as a surrogate pair, which TOML
    # refuses (so none are used), and JSON leaves DEL as it is, which TOML must escape.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _table_lines(path: str, data: Mapping[str, Any]) -> list[str]:
    """The keys of a table, then its arrays of tables as ``[[path.key]]``, recursively."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables += [(key, v) for v in value]
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        where = f"{path}.{_toml_key(key)}"
        lines += ["", f"[[{where}]]", *_table_lines(where, table)]
    return lines


def _deployment_lines(deployment: Deployment) -> list[str]:
    lines: list[str] = []
    for name, table in _deployment_tables(deployment).items():
        if name == "notify":
            for notifier in table:
                lines += ["", "[[notify]]", *_table_lines(name, notifier)]
        else:
            lines += ["", f"[{name}]", *_sectioned_lines(name, table)]
    return lines


def _sectioned_lines(path: str, data: Mapping[str, Any]) -> list[str]:
    """`_table_lines`, with sub-tables such as ``[router.kubernetes]`` written as tables."""
    sections = {
        key: value
        for key, value in data.items()
        if key in _SUB_TABLES and isinstance(value, Mapping)
    }
    lines = _table_lines(path, {k: v for k, v in data.items() if k not in sections})
    for key, section in sections.items():
        where = f"{path}.{_toml_key(key)}"
        lines += ["", f"[{where}]", *_table_lines(where, section)]
    return lines


def _decider_lines(decider: Decider) -> list[str]:
    return _table_lines("decider", _dump_decider(decider, "decider"))


def _simulation_lines(simulation: SimulationSettings) -> list[str]:
    """The ``header_share`` and ``[simulation.gauges]`` lines, when they are not the defaults."""
    lines: list[str] = []
    share = simulation.header_share
    if share != 0.5:
        written = share if isinstance(share, float) else dict(share)
        lines.append(f"header_share = {_toml_value(written)}")
    if simulation.gauges:
        lines += ["", "[simulation.gauges]"]
        for name, gauge in simulation.gauges.items():
            spec = {
                key: value
                for key, value in attrs.asdict(gauge).items()
                if value != attrs.fields_dict(type(gauge))[key].default
            }
            value = gauge.value if spec.keys() <= {"value"} else {"value": gauge.value} | spec
            lines.append(f"{_toml_key(name)} = {_toml_value(value)}")
    return lines


_GAUGE_KEYS = ("value", "canary_factor", "canary_per_hour", "at", "noise")


def _read_simulation_gauge(table: PolicyTable, name: str) -> Any:
    from .._observe import METRIC_NAMES
    from ..testing._scripted import ScriptedGauge

    value = table.raw(name)
    if name in METRIC_NAMES:
        raise ConfigError(
            table.field(name), value, "is a built-in metric name; give the gauge another"
        )
    if not isinstance(value, Mapping):
        with _prefixed(table.field(name), {"value": ""}):
            return ScriptedGauge(value)
    gauge = table.table(name)
    gauge.check_keys(_GAUGE_KEYS)
    options = {
        key: gauge.duration(key, allow_zero=True) if key == "at" else gauge.raw(key)
        for key in _GAUGE_KEYS
        if key in gauge
    }
    level = gauge.raw("value")  # required
    del options["value"]
    with _prefixed(gauge.path):
        return ScriptedGauge(level, **options)


def _read_header_share(table: PolicyTable) -> Any:
    # A share is a fraction: 0.6 and "60%" are the same (one rule for percents).
    value = table.raw("header_share")
    if not isinstance(value, Mapping):
        value = parse_fraction(table.field("header_share"), value)
        with _prefixed(table.path):
            return _header_share(value)
    # Name a bad share by its TOML key path: simulation.header_share.User-Agent.
    shares = table.table("header_share")
    rename = {
        f"header_share[{header!r}]": shares.field(header).removeprefix(table.path + ".")
        for header in shares.data
    }
    fractions = {
        header: parse_fraction(shares.field(header), share) for header, share in shares.data.items()
    }
    with _prefixed(table.path, rename):
        return _header_share(fractions)


def _read_simulation(table: PolicyTable) -> SimulationSettings:
    table.check_keys(("requests_per_second", "seed", "header_share", "gauges"))
    rate = table.number("requests_per_second", 100.0, above=0)
    seed = table.integer("seed", 0)
    share = _read_header_share(table) if "header_share" in table else 0.5
    gauges = {}
    rename = {}
    if "gauges" in table:
        gauge_table = table.table("gauges")
        for name in gauge_table.data:
            gauges[name] = _read_simulation_gauge(gauge_table, name)
            rename[f"gauges[{name!r}]"] = gauge_table.field(name).removeprefix(table.path + ".")
    with _prefixed(table.path, rename):
        return SimulationSettings(
            requests_per_second=rate, seed=seed, header_share=share, gauges=gauges
        )


def _read_policy(data: Mapping[str, Any], base: Path | None = None) -> Policy:
    top = PolicyTable(data, "")
    top.check_keys(("plan", "decider", "simulation", *_DEPLOYMENT_TABLES))
    plan = _read_plan(top.table("plan"))
    decider = _build_decider(top.table("decider"))
    if "simulation" in top:
        simulation = _read_simulation(top.table("simulation"))
    else:
        simulation = SimulationSettings()
    deployment = _read_deployment(top, base)
    # The decider against the rest of the policy: every metric it reads has a source,
    # and a watched stage at 100% is one it can judge (no pause that can only time out).
    gauges = getattr(simulation, "gauges", None) or {}
    check_metric_names(decider, declared_gauges(deployment.metrics_table, tuple(gauges)))
    check_full_canary_steps(plan, decider)
    return Policy(plan=plan, decider=decider, simulation=simulation, deployment=deployment)


MAX_POLICY_CHARS = 1_000_000
"""The longest policy `load_policy` reads: real ones are a few hundred characters."""

_LONG_NUMBER = re.compile(r"[0-9_]{1000,}")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except RecursionError:
        # tomllib descends recursively into nested arrays and inline tables.
        raise _error(source, "nests arrays or inline tables too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        if found is None:
            raise _error(source, f"is not valid TOML ({message})") from None
        line, column = int(found.group(1)), int(found.group(2))
        lines = text.splitlines()
        problem = f"invalid TOML at line {line}, column {column}: {message[: found.start()]}"
        if 0 < line <= len(lines):
            raise ConfigError(source, lines[line - 1].strip(), problem) from None
        raise _error(source, problem) from None
    except ValueError as exc:
        # Not a syntax error: tomllib lets int() refuse a literal of thousands of digits
        # (Python's int_max_str_digits); find it to say where.
        found = _LONG_NUMBER.search(text)
        if found is None:
            raise _error(source, f"is not valid TOML ({exc})") from None
        line = text.count("\n", 0, found.start()) + 1
        problem = f"invalid TOML at line {line}: a number with too many digits ({exc})"
        raise ConfigError(source, found.group()[:20] + "...", problem) from None
    return data


def _looks_like_path(text: str) -> bool:
    # A policy's TOML always holds "=" or a "[table]" header (or is a multi-line text);
    # a path holds none of these in practice.
    stripped = text.strip()
    return bool(stripped) and "\n" not in text and "=" not in text and not stripped.startswith("[")


def _read_policy_text(path: Path) -> str:
    """The text of the policy file at `path`: a regular file, UTF-8, of bounded size.

    The operator names the policy file, so a symbolic link there is followed (to the file
    it names); a FIFO, a device or a directory is refused at once instead of blocking the
    command (or, for /dev/zero, filling the memory).
    """
    real = str(path)
    try:
        real = os.path.realpath(path)
        # Up to 4 bytes a character: enough to tell, after decoding, a file too large.
        raw = read_regular(real, limit=4 * MAX_POLICY_CHARS + 4, what="policy file")
        return raw.decode("utf-8")
    except FileRefusedError as exc:
        reason = str(exc).removeprefix(f"policy file {real}: ")
        raise _error(str(path), f"cannot read the policy file ({reason})") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _error(str(path), f"cannot read the policy file ({reason})") from None


def load_policy(source: str | os.PathLike[str]) -> Policy:
    """Read a policy from a TOML file, or from TOML text.

    `source` is a path (a `pathlib.Path`, or a string such as ``"policy.toml"``) or the
    TOML itself (a string holding a newline, ``=`` or a ``[table]`` header). Anything
    wrong raises `ConfigError` naming the key path (``plan.hold``), or the file and line
    for a TOML syntax error.

    Relative paths in a policy file (``state_dir``, ``include_path``, ``approval_file``,
    ``bearer_token_file``, ...) are relative to the file's folder, not to the working
    directory, and are kept absolute; the state directory defaults to ``.canarykit``
    beside the file. In TOML text they are kept as written (relative to the working
    directory when used).
    """
    base: Path | None = None
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        text = _read_policy_text(path)
        name = str(path)
        # Relative paths in the policy mean the same files from any working directory.
        base = path.absolute().parent.resolve()
    elif isinstance(source, str):
        text, name = source, "policy"
    else:
        raise ConfigError("source", source, "must be a path or TOML text")
    if len(text) > MAX_POLICY_CHARS:
        raise _error(name, f"is too large for a policy (over {MAX_POLICY_CHARS} characters)")
    return _read_policy(_parse_toml(text, name), base)
