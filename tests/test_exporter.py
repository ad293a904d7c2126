"""Exported rollout metrics, scraped over HTTP from prometheus_client's own server."""

import math
import sys
from pathlib import Path

import anyio
import httpx
import pytest

import canarykit
from canarykit import ConfigError, Phase, Rollout, VerdictKind
from canarykit.events import PhaseChanged
from canarykit.testing import SCENARIOS, FakeRouter, VirtualClock, simulate

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="pip install 'canarykit[exporter]'"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from canarykit.exporter import PrometheusExporter  # noqa: E402

# A real HTTP server per test, scraped and shut down (half a second each): the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]

POLICY = canarykit.policy.load_policy(
    Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
)

EXPECTED_NAMES = {
    "canarykit_canary_weight",
    "canarykit_canary_status",
    "canarykit_canary_phase",
    "canarykit_canary_step",
    "canarykit_canary_checks_total",
    "canarykit_canary_metric_verdicts_total",
    "canarykit_canary_metric_analysis",
    "canarykit_canary_errors_total",
    "canarykit_canary_duration_seconds_bucket",
    "canarykit_canary_duration_seconds_count",
    "canarykit_canary_duration_seconds_sum",
    "canarykit_rollouts_total",
}


@pytest.fixture
def registry():
    return prometheus_client.CollectorRegistry()


@pytest.fixture
def metrics_url(registry):
    """prometheus_client's HTTP server for `registry`, on a free loopback port."""
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def scrape(url):
    """{(name, frozenset(labels)): value} of every sample served at `url`."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, timeout=5)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def names(samples):
    return {name for name, _ in samples if not name.endswith("_created")}


def rollout(scenario, key, router=None, **options):
    return Rollout(
        POLICY.plan,
        router=router or FakeRouter(),
        metrics=SCENARIOS[scenario](seed=POLICY.simulation.seed),
        decider=POLICY.decider,
        clock=VirtualClock(),
        key=key,
        **options,
    )


def count_verdicts(outcome, kind):
    return sum(1 for e in outcome.verdicts if e.verdict is kind)


async def test_a_rolled_back_rollout_is_scraped_with_flagger_like_metrics(registry, metrics_url):
    exporter = PrometheusExporter(registry)
    # The router fails its third call once (retried): an error to count.
    bad = rollout("errors", "web", router=FakeRouter(fail_on={3}), retry_delay=0.5)
    exporter.attach(bad)
    outcome = await bad.run()
    assert outcome.phase is Phase.ROLLED_BACK

    samples = await scrape(metrics_url)
    assert names(samples) == EXPECTED_NAMES
    assert value(samples, "canarykit_canary_errors_total", rollout="web", kind="router") == 1
    assert value(samples, "canarykit_canary_weight", rollout="web") == 0.0
    assert value(samples, "canarykit_canary_status", rollout="web") == 2.0  # failed
    for phase in Phase:
        expected = 1.0 if phase is Phase.ROLLED_BACK else 0.0
        assert value(samples, "canarykit_canary_phase", rollout="web", phase=phase.value) == (
            expected
        )
    assert value(samples, "canarykit_canary_step", rollout="web") == outcome.state.step
    for kind in VerdictKind:
        seen = count_verdicts(outcome, kind)
        if seen:
            assert value(
                samples, "canarykit_canary_checks_total", rollout="web", kind=kind.value
            ) == (seen)
    assert value(samples, "canarykit_canary_checks_total", rollout="web", kind="fail") == 1
    # Every window judged error_rate and p99; the last error rate is the failing one.
    windows = len(outcome.verdicts)
    error_rate = {
        kind: samples.get(
            (
                "canarykit_canary_metric_verdicts_total",
                frozenset({"rollout": "web", "metric": "error_rate", "kind": kind}.items()),
            ),
            0,
        )
        for kind in ("pass", "not_yet", "fail")
    }
    assert sum(error_rate.values()) == windows
    assert error_rate["fail"] >= 1
    last = outcome.verdicts[-1]
    assert value(
        samples, "canarykit_canary_metric_analysis", rollout="web", metric="error_rate"
    ) == (pytest.approx(last.canary_error_rate))
    assert value(samples, "canarykit_canary_duration_seconds_count", rollout="web") == 1
    assert value(samples, "canarykit_canary_duration_seconds_sum", rollout="web") == pytest.approx(
        outcome.finished_at - outcome.started_at
    )
    assert (
        value(samples, "canarykit_canary_duration_seconds_bucket", rollout="web", le="600.0") == 1
    )  # 6 minutes
    assert (
        value(samples, "canarykit_canary_duration_seconds_bucket", rollout="web", le="300.0") == 0
    )
    assert value(samples, "canarykit_rollouts_total", rollout="web", outcome="rolled_back") == 1


async def test_rollouts_are_labelled_apart_and_a_promotion_counts_as_success(registry, metrics_url):
    exporter = PrometheusExporter(registry)
    good, bad = rollout("healthy", "web"), rollout("errors", "api")
    exporter.attach(good)
    exporter.attach(bad)
    good_outcome = await good.run()
    await bad.run()
    assert good_outcome.phase is Phase.SUCCEEDED

    samples = await scrape(metrics_url)
    assert value(samples, "canarykit_canary_weight", rollout="web") == 100.0
    assert value(samples, "canarykit_canary_status", rollout="web") == 1.0
    assert value(samples, "canarykit_canary_status", rollout="api") == 2.0
    assert value(samples, "canarykit_rollouts_total", rollout="web", outcome="succeeded") == 1
    assert (
        "canarykit_rollouts_total",
        frozenset({"rollout": "web", "outcome": "rolled_back"}.items()),
    ) not in samples
    assert value(samples, "canarykit_canary_duration_seconds_sum", rollout="web") == 900.0
    assert value(samples, "canarykit_canary_checks_total", rollout="web", kind="pass") == len(
        good_outcome.verdicts
    )


async def test_a_running_rollout_shows_its_current_weight_step_and_phase(registry, metrics_url):
    exporter = PrometheusExporter(registry)
    live = rollout("healthy", "web")
    exporter.attach(live)
    outcome = await live.run(stop_at=250)  # at 50% since 4:00, still going
    assert outcome.phase is Phase.PROGRESSING

    samples = await scrape(metrics_url)
    assert value(samples, "canarykit_canary_weight", rollout="web") == 50.0
    assert value(samples, "canarykit_canary_status", rollout="web") == 0.0  # running
    assert value(samples, "canarykit_canary_phase", rollout="web", phase="progressing") == 1.0
    # The step is the rollout's own, read from its state when attached.
    assert value(samples, "canarykit_canary_step", rollout="web") == live.state.step
    assert live.state.step > 0
    # No duration until the rollout ends.
    assert not any(name.startswith("canarykit_canary_duration") for name in names(samples))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_exporter_is_itself_a_listener_for_simulate(registry, metrics_url):
    exporter = PrometheusExporter(registry, rollout="checkout")
    result = await anyio.to_thread.run_sync(
        lambda: simulate(
            POLICY.plan,
            decider=POLICY.decider,
            metrics=SCENARIOS["errors"](seed=POLICY.simulation.seed),
            listeners=[exporter],
        )
    )
    samples = await scrape(metrics_url)
    assert value(samples, "canarykit_canary_status", rollout="checkout") == 2.0
    assert value(samples, "canarykit_canary_checks_total", rollout="checkout", kind="fail") == 1
    assert (
        value(samples, "canarykit_rollouts_total", rollout="checkout", outcome="rolled_back") == 1
    )
    assert value(samples, "canarykit_canary_duration_seconds_sum", rollout="checkout") == (
        result.outcome.finished_at - result.outcome.started_at
    )


async def test_forget_removes_a_rollouts_series(registry, metrics_url):
    exporter = PrometheusExporter(registry)
    for scenario, key in (("errors", "old"), ("errors", "new")):
        r = rollout(scenario, key)
        exporter.attach(r)
        await r.run()
    exporter.forget("old")
    samples = await scrape(metrics_url)
    labelled = {dict(labels).get("rollout") for _, labels in samples}
    assert "old" not in labelled
    assert "new" in labelled


def test_events_of_unknown_kinds_never_raise_and_their_step_counts(registry):
    exporter = PrometheusExporter(registry)

    class CanaryScaled:  # an event kind canarykit may add later
        time = 5.0
        step = 3
        reason = "3 replicas"

    exporter(CanaryScaled())
    exporter(object())
    assert registry.get_sample_value("canarykit_canary_step", {"rollout": "rollout"}) == 3


def test_a_phase_change_updates_phase_status_and_step(registry):
    exporter = PrometheusExporter(registry, rollout="web")
    exporter(PhaseChanged(time=0.0, old=Phase.PENDING, new=Phase.PROGRESSING, step=0, reason=""))
    exporter(PhaseChanged(time=90.0, old=Phase.PROGRESSING, new=Phase.ABORTED, step=2, reason="no"))
    get = registry.get_sample_value
    assert get("canarykit_canary_status", {"rollout": "web"}) == 2.0
    assert get("canarykit_canary_phase", {"rollout": "web", "phase": "aborted"}) == 1.0
    assert get("canarykit_canary_phase", {"rollout": "web", "phase": "progressing"}) == 0.0
    assert get("canarykit_canary_step", {"rollout": "web"}) == 2
    assert get("canarykit_rollouts_total", {"rollout": "web", "outcome": "aborted"}) == 1
    assert get("canarykit_canary_duration_seconds_sum", {"rollout": "web"}) == 90.0


def test_one_exporter_per_registry(registry):
    PrometheusExporter(registry)
    with pytest.raises(ConfigError) as info:
        PrometheusExporter(registry)
    assert info.value.field == "registry"


def test_bad_arguments_are_refused_by_name(registry):
    with pytest.raises(ConfigError) as info:
        PrometheusExporter({"not": "a registry"})
    assert info.value.field == "registry"
    with pytest.raises(ConfigError) as info:
        PrometheusExporter(registry, rollout="web v2")
    assert info.value.field == "rollout"
    with pytest.raises(ConfigError) as info:
        PrometheusExporter(registry, duration_buckets=[60, 30])
    assert info.value.field == "duration_buckets"
    with pytest.raises(ConfigError):
        PrometheusExporter(registry, duration_buckets=[math.nan])


def test_metrics_go_to_the_given_registry_only(registry):
    exporter = PrometheusExporter(registry, rollout="isolated")
    exporter(PhaseChanged(time=0.0, old=Phase.PENDING, new=Phase.PROGRESSING, step=0, reason=""))
    assert registry.get_sample_value("canarykit_canary_status", {"rollout": "isolated"}) == 0.0
    default = prometheus_client.REGISTRY
    assert default.get_sample_value("canarykit_canary_status", {"rollout": "isolated"}) is None


def test_without_prometheus_client_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ModuleNotFoundError, match=r"canarykit\[exporter\]"):
        PrometheusExporter()
