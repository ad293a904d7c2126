"""Notifications to Slack and JSON webhooks, against a local HTTP server that records them."""

import logging
import sys
from pathlib import Path

import anyio
import pytest

import canarykit
from canarykit import ConfigError, Phase, Rollout, TrafficSplit, Verdict, VerdictKind
from canarykit.events import (
    AnalysisFailed,
    CommandReceived,
    LeaseRevoked,
    PhaseChanged,
    RouterCallFailed,
    SplitConfirmed,
    VerdictReached,
)
from canarykit.machine import AnalysisKind
from canarykit.notify import (
    Severity,
    SlackNotifier,
    WebhookNotifier,
    describe_event,
    event_severity,
)
from canarykit.testing import SCENARIOS, FakeRouter, VirtualClock, simulate_async
from helpers.http_endpoint import Endpoint

pytest.importorskip("httpx", reason="pip install 'canarykit[http]'")

pytestmark = pytest.mark.anyio

POLICY = canarykit.policy.load_policy(
    Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
)
SECRET = "T0001/B0002/XyZsecretToken42"


@pytest.fixture
def endpoint():
    server = Endpoint(f"/services/{SECRET}")
    try:
        yield server
    finally:
        server.close()


async def run_policy(scenario, **options):
    return await simulate_async(
        POLICY.plan,
        decider=POLICY.decider,
        metrics=SCENARIOS[scenario](seed=POLICY.simulation.seed),
        **options,
    )


def phase_event(old, new, step=1, reason="why"):
    return PhaseChanged(time=10.0, old=old, new=new, step=step, reason=reason)


def verdict_event(kind):
    from canarykit import ArmStats, Observation

    observation = Observation(
        start=0.0, end=30.0, stable=ArmStats(requests=100), canary=ArmStats(requests=10, errors=1)
    )
    return VerdictReached(
        time=30.0,
        kind=AnalysisKind.BACKGROUND,
        start=0.0,
        end=30.0,
        verdict=Verdict(kind=kind, reason="error_rate: canary 10% > max 2%"),
        observation=observation,
    )


SPLIT = TrafficSplit(canary_percent=30)

SEVERITIES = [
    (phase_event(Phase.PENDING, Phase.PROGRESSING), Severity.INFO),
    (phase_event(Phase.PAUSED, Phase.PROGRESSING), Severity.INFO),
    (phase_event(Phase.PROGRESSING, Phase.PROMOTING), Severity.INFO),
    (phase_event(Phase.PROMOTING, Phase.SUCCEEDED), Severity.INFO),
    (phase_event(Phase.PROGRESSING, Phase.PAUSED), Severity.WARN),
    (phase_event(Phase.PROGRESSING, Phase.ROLLING_BACK), Severity.WARN),
    (phase_event(Phase.PROGRESSING, Phase.ABORTED), Severity.WARN),
    (phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK), Severity.ERROR),
    (phase_event(Phase.ROLLING_BACK, Phase.PAUSED), Severity.ERROR),
    (SplitConfirmed(time=1.0, split=SPLIT), Severity.INFO),
    (verdict_event(VerdictKind.PASS), Severity.INFO),
    (verdict_event(VerdictKind.NOT_YET), Severity.INFO),
    (verdict_event(VerdictKind.INCONCLUSIVE), Severity.WARN),
    (verdict_event(VerdictKind.FAIL), Severity.WARN),
    (AnalysisFailed(time=1.0, kind=AnalysisKind.BACKGROUND, end=1.0, reason="x"), Severity.WARN),
    (RouterCallFailed(time=1.0, split=SPLIT, attempt=1, reason="refused"), Severity.WARN),
    (CommandReceived(time=1.0, command="promote"), Severity.INFO),
    (CommandReceived(time=1.0, command="resume", reason="no", accepted=False), Severity.WARN),
    (LeaseRevoked(time=1.0, holder="host-1", reason="expired"), Severity.ERROR),
]


@pytest.mark.parametrize(("event", "severity"), SEVERITIES, ids=lambda v: repr(v)[:60])
def test_each_event_kind_has_its_documented_severity(event, severity):
    assert event_severity(event) is severity
    assert describe_event(event, "web").severity is severity


def test_severity_levels_parse_and_order():
    assert Severity.parse("info") < Severity.parse("warn") < Severity.parse("error")
    with pytest.raises(ConfigError) as info:
        Severity.parse("warning")
    assert info.value.field == "min_severity"


def test_an_unknown_event_kind_is_described_at_info():
    class CanaryScaled:
        time = 12.0
        reason = "3 replicas ready"

    notice = describe_event(CanaryScaled(), "web")
    assert notice.event == "canary_scaled"
    assert notice.severity is Severity.INFO
    assert notice.message == "canary scaled: 3 replicas ready"
    assert notice.to_json()["time"] == 12.0


async def test_slack_hears_a_rollback_at_warn_and_error(endpoint):
    async with SlackNotifier(endpoint.url, rollout="web", min_severity="warn") as slack:
        result = await run_policy("errors", listeners=[slack])
    assert result.outcome.phase is Phase.ROLLED_BACK
    assert slack.stats.sent == len(endpoint.requests) > 0
    assert slack.stats.dropped == 0
    colors = [b["attachments"][0]["color"] for b in endpoint.bodies]
    assert set(colors) <= {"#daa038", "#a30200"}  # warn and error only
    last = endpoint.bodies[-1]
    # Slack's shape: a plain summary and blocks; mrkdwn's control characters escaped.
    assert last["text"].startswith("web: rolled back: analysis failed: error_rate: canary")
    assert "&gt; max 2.00%" in last["text"] and ">" not in last["text"]
    assert last["attachments"][0]["color"] == "#a30200"
    blocks = last["attachments"][0]["blocks"]
    assert blocks[0]["type"] == "section" and blocks[0]["text"]["type"] == "mrkdwn"
    assert blocks[-1]["type"] == "context"
    assert "phase rolled_back" in blocks[-1]["elements"][0]["text"]
    # The failing verdict lists each metric's verdict.
    failing = [b for b in endpoint.bodies if "analysis: fail" in b["text"]]
    assert len(failing) == 1
    metric_lines = failing[0]["attachments"][0]["blocks"][1]["text"]["text"]
    assert "• error_rate: fail" in metric_lines and "• p99: pass" in metric_lines
    assert all(r["headers"]["Content-Type"] == "application/json" for r in endpoint.requests)


async def test_the_json_webhook_gets_every_event_with_its_fields(endpoint):
    options = {"rollout": "web", "every_verdict": True, "queue_size": 1000}
    async with WebhookNotifier(endpoint.url, **options) as hook:
        result = await run_policy("errors", listeners=[hook])
    bodies = endpoint.bodies
    assert hook.stats.sent == len(bodies)
    assert len(bodies) == len(result.outcome.timeline)  # one per event, all at info or above
    fields = {"rollout", "event", "severity", "time", "phase", "step", "weight", "reason"}
    assert all(fields | {"message", "details"} == set(b) for b in bodies)
    assert all(b["rollout"] == "web" for b in bodies)
    assert [b["time"] for b in bodies] == [e.time for e in result.outcome.timeline]
    final = bodies[-1]
    assert final["event"] == "phase_changed"
    assert final["severity"] == "error"
    assert final["phase"] == "rolled_back"
    assert final["weight"] == 0.0
    assert final["reason"] == result.outcome.reason
    assert final["details"] == {"previous_phase": "rolling_back"}
    verdicts = [b for b in bodies if b["event"] == "verdict"]
    assert len(verdicts) == len(result.outcome.verdicts)
    assert {b["severity"] for b in verdicts} == {"info", "warn"}
    assert verdicts[0]["details"]["metrics"][0]["metric"] == "error_rate"
    weights = [b["weight"] for b in bodies if b["event"] == "split_confirmed"]
    assert weights == [0.0, 10.0, 30.0, 50.0, 0.0]


async def test_min_severity_error_sends_only_errors(endpoint):
    async with WebhookNotifier(endpoint.url, rollout="web", min_severity="error") as hook:
        result = await run_policy("errors", listeners=[hook])
    assert [b["severity"] for b in endpoint.bodies] == ["error"]
    assert endpoint.bodies[0]["phase"] == "rolled_back"
    assert hook.stats.filtered == len(result.outcome.timeline) - 1


async def test_attached_notifier_reports_the_rollouts_key_and_exact_step(endpoint):
    rollout = Rollout(
        POLICY.plan,
        router=FakeRouter(),
        metrics=SCENARIOS["errors"](seed=POLICY.simulation.seed),
        decider=POLICY.decider,
        clock=VirtualClock(),
        key="checkout",
    )
    async with WebhookNotifier(endpoint.url, queue_size=1000) as hook:
        hook.attach(rollout)
        await rollout.run()
    bodies = endpoint.bodies
    assert {b["rollout"] for b in bodies} == {"checkout"}
    assert all(isinstance(b["step"], int) for b in bodies)
    splits = [(b["weight"], b["step"]) for b in bodies if b["event"] == "split_confirmed"]
    steps = [step for _, step in splits]
    assert steps[1:-1] == sorted(steps[1:-1]) and len(set(steps[1:-1])) == len(steps) - 2


async def test_a_500_then_200_is_retried_and_delivered_once(endpoint):
    endpoint.script = [500]
    hook = WebhookNotifier(endpoint.url, backoff=0.01)
    async with hook:
        hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert [r["answer"] for r in endpoint.requests] == [500, 200]
    assert endpoint.bodies[0] == endpoint.bodies[1]  # the same notice, sent again
    assert (hook.stats.sent, hook.stats.retried, hook.stats.dropped) == (1, 1, 0)


async def test_a_hanging_endpoint_times_out_and_the_notice_is_dropped_and_counted(endpoint, caplog):
    endpoint.script = ["hang", "hang"]
    # A long drain: only the per-attempt timeout is under test (a loaded machine may stall).
    hook = WebhookNotifier(endpoint.url, timeout=0.3, attempts=2, backoff=0.01, drain_timeout=120)
    with caplog.at_level(logging.WARNING, logger="canarykit.notify"):
        async with hook:
            hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
            hook(phase_event(Phase.PENDING, Phase.PROGRESSING))  # queued behind it
    assert [r["answer"] for r in endpoint.requests] == ["hang", "hang", 200]
    assert (hook.stats.sent, hook.stats.retried, hook.stats.dropped) == (1, 1, 1)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert "timed out after 0.3 s" in dropped[0]


async def test_a_hanging_endpoint_never_holds_up_the_rollout(endpoint):
    endpoint.default = "hang"
    hook = WebhookNotifier(endpoint.url, timeout=60, drain_timeout=0.5, queue_size=1000)
    async with hook:
        result = await run_policy("errors", listeners=[hook])
        # The rollout ended while the first delivery was still waiting for its answer.
        assert result.outcome.phase is Phase.ROLLED_BACK
        stats = hook.stats
        assert (stats.sent, stats.retried, stats.dropped) == (0, 0, 0)
        notices = len(result.outcome.timeline) - stats.filtered
        assert notices - 1 <= stats.queued <= notices  # one may be in the worker's hands
    assert hook.stats.dropped == notices
    assert len(endpoint.requests) <= 1  # the worker waited on its first post throughout


async def test_a_refusing_endpoint_is_not_retried(endpoint):
    endpoint.script = [404]
    hook = WebhookNotifier(endpoint.url, backoff=0.01)
    async with hook:
        hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert len(endpoint.requests) == 1
    assert (hook.stats.sent, hook.stats.retried, hook.stats.dropped) == (0, 0, 1)


async def test_an_endpoint_that_is_down_never_reaches_the_rollout(endpoint):
    url = endpoint.url
    endpoint.close()  # nothing listens there now
    hook = WebhookNotifier(url, attempts=2, backoff=0.01, timeout=1)
    async with hook:
        result = await run_policy("healthy", listeners=[hook])
    assert result.outcome.phase is Phase.SUCCEEDED
    assert hook.stats.sent == 0
    assert hook.stats.dropped == len(result.outcome.timeline) - len(result.outcome.verdicts)
    assert hook.stats.retried == hook.stats.dropped  # each tried twice


async def test_a_full_queue_drops_and_counts_without_blocking(endpoint):
    hook = WebhookNotifier(endpoint.url, queue_size=2)
    async with hook:
        for _ in range(6):  # no checkpoint between calls: the worker cannot drain
            hook(phase_event(Phase.PROGRESSING, Phase.PAUSED))
    stats = hook.stats
    assert stats.sent + stats.dropped == 6
    assert stats.dropped >= 3  # at most one in the worker's hands and two queued
    assert len(endpoint.requests) == stats.sent


async def test_closing_gives_up_after_the_drain_timeout(endpoint):
    endpoint.default = "hang"
    hook = WebhookNotifier(endpoint.url, timeout=30, attempts=1, drain_timeout=0.3)
    with anyio.fail_after(25):  # bounded by drain_timeout, well before the 30 s timeout
        async with hook:
            hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
            hook(phase_event(Phase.PENDING, Phase.PROGRESSING))
    assert (hook.stats.sent, hook.stats.dropped, hook.stats.queued) == (0, 2, 0)


async def test_notices_queued_when_the_block_is_cancelled_are_still_delivered(endpoint):
    hook = WebhookNotifier(endpoint.url)
    with anyio.CancelScope() as scope:
        async with hook:
            hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
            scope.cancel()
            await anyio.sleep_forever()
    assert hook.stats.sent == 1
    assert endpoint.bodies[0]["phase"] == "rolled_back"


def test_a_notifier_that_is_not_running_drops_and_never_raises(endpoint):
    hook = WebhookNotifier(endpoint.url)
    hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert hook.stats.dropped == 1
    assert endpoint.requests == []


async def test_the_url_never_appears_in_a_repr_or_a_log(endpoint, caplog):
    endpoint.script = [500, 500]
    hook = SlackNotifier(endpoint.url, attempts=2, backoff=0.01)
    assert SECRET not in repr(hook)
    assert repr(hook).startswith("SlackNotifier(url='http://127.0.0.1:")
    with caplog.at_level(logging.DEBUG):
        async with hook:
            hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert hook.stats.dropped == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in m for m in messages)  # httpx logged its requests...
    assert any("HTTP 500" in m for m in messages)  # ...and the notifier its failure
    assert not [m for m in messages if "XyZsecretToken42" in m or "/services/T0001" in m]


def test_bad_settings_are_refused_by_name_without_showing_the_url():
    with pytest.raises(ConfigError) as info:
        SlackNotifier(f"ftp://hooks.example.com/services/{SECRET}")
    assert info.value.field == "url"
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        WebhookNotifier("https://hooks.example.com/a b")
    assert info.value.field == "url"
    cases = {
        "min_severity": {"min_severity": "debug"},
        "attempts": {"attempts": 0},
        "timeout": {"timeout": -1},
        "queue_size": {"queue_size": 0},
        "rollout": {"rollout": "web app"},
        "every_verdict": {"every_verdict": "yes"},
    }
    for field, options in cases.items():
        with pytest.raises(ConfigError) as info:
            WebhookNotifier("https://hooks.example.com/x", **options)
        assert info.value.field == field


async def test_webhook_headers_are_sent_and_their_values_hidden(endpoint, caplog):
    endpoint.script = [503, 503]
    hook = WebhookNotifier(
        endpoint.url, headers={"Authorization": "Bearer hunter2-token"}, attempts=2, backoff=0
    )
    with caplog.at_level(logging.DEBUG):
        async with hook:
            hook(phase_event(Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert endpoint.requests[0]["headers"]["Authorization"] == "Bearer hunter2-token"
    assert not [r for r in caplog.records if "hunter2" in r.getMessage()]


def test_without_httpx_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[http\]'"):
        SlackNotifier("https://hooks.slack.com/services/x")
