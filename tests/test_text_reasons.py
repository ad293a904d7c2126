"""Free text is data: reasons from operators and servers are length-limited and escaped.

A reason that holds line breaks and terminal escapes must show as one escaped line in
``canarykit run``'s output, its status line and notifications; one of 20 MB must not
bloat the saved state, the output or a notice (issue 13, item 6).
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it; the machine's wording and limits; the text limit.

from __future__ import annotations

import io

import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit._cli._run import RunDisplay, execute
from canarykit._machine import _kept
from canarykit._text import MAX_TEXT
from canarykit.deciders import bound, threshold
from canarykit.machine import RolloutState
from canarykit.notify import describe_event, slack_payload
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock

FORGED = "looking\n14:35:00 succeeded 100% phase: promoted\x1b[2J"
ESCAPED = "looking\\n14:35:00 succeeded 100% phase: promoted\\x1b[2J"
HUGE = "x" * 20_000_000

PLAN = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion()])


def rollout(**options):
    return ck.Rollout(
        PLAN,
        router=FakeRouter(),
        metrics=ScriptedMetrics(),
        decider=threshold(bound("error_rate", max=0.02)),
        clock=VirtualClock(start=1_800_000_000.0),
        key="web",
        **options,
    )


def pause_at_20_percent(run: ck.Rollout, reason: str) -> None:
    """Pause `run` with `reason` once the router confirms the canary's 20%."""

    def listener(event):
        if isinstance(event, ck.events.SplitConfirmed) and event.split.canary_percent == 20:
            run.pause(reason)

    run.add_listener(listener)


def test_a_forged_pause_reason_is_one_escaped_line_in_the_run_output():
    run = rollout()
    pause_at_20_percent(run, FORGED)
    lines = io.StringIO()
    execute(run, out=lines, lines=lines)
    text = lines.getvalue()
    assert "\x1b" not in text
    carrying = [line for line in text.splitlines() if "14:35:00" in line]
    # The command's event line and the outcome: each the reason whole, escaped, on one line.
    assert len(carrying) == 2, carrying
    assert carrying[0].endswith(f"paused          20%  command: pause {ESCAPED}")
    assert carrying[1] == f"outcome   stopped paused: {ESCAPED}"
    assert not any(line.startswith("14:35:00") for line in text.splitlines())


@pytest.mark.anyio
async def test_the_status_line_shows_a_forged_pause_reason_escaped():
    run = rollout()
    pause_at_20_percent(run, FORGED)
    await run.run()
    status = RunDisplay(run, io.StringIO(), None).status_text()
    assert f"paused: {ESCAPED}" in status
    assert "\n" not in status and "\x1b" not in status


def strings(value):
    """Every string in a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


@pytest.mark.parametrize(
    "event",
    [
        ck.events.CommandReceived(time=0.0, command="pause", reason=FORGED),
        ck.events.PhaseChanged(
            time=0.0, old=ck.Phase.PROGRESSING, new=ck.Phase.PAUSED, step=1, reason=FORGED
        ),
        ck.events.RouterCallFailed(
            time=0.0, split=ck.TrafficSplit(canary_percent=10), attempt=1, reason=FORGED
        ),
        ck.events.AnalysisFailed(
            time=0.0, kind=ck.machine.AnalysisKind.BACKGROUND, end=0.0, reason=FORGED
        ),
        ck.events.LeaseRevoked(time=0.0, holder="h", reason=FORGED),
    ],
    ids=lambda event: type(event).__name__,
)
def test_a_notice_carries_a_forged_reason_escaped_on_one_line(event):
    notice = describe_event(event, "web")
    for text in (notice.message, notice.reason):
        assert "\n" not in text and "\x1b" not in text
        assert ESCAPED in text
    assert not any(
        "\n14:35:00" in text or "\x1b" in text for text in strings(slack_payload(notice))
    )


def test_a_verdict_notice_escapes_the_metric_reasons():
    verdict = ck.Verdict(
        kind=ck.VerdictKind.FAIL,
        reason=FORGED,
        metrics=(ck.MetricVerdict(metric="error_rate", kind=ck.VerdictKind.FAIL, reason=FORGED),),
    )
    stats = ck.ArmStats(requests=10, errors=1)
    event = ck.events.VerdictReached(
        time=0.0,
        kind=ck.machine.AnalysisKind.BACKGROUND,
        start=0.0,
        end=30.0,
        verdict=verdict,
        observation=ck.Observation(start=0.0, end=30.0, stable=stats, canary=stats),
    )
    notice = describe_event(event, "web")
    assert "\n" not in notice.message
    assert [m["reason"] for m in notice.details["metrics"]] == [ESCAPED]


def test_a_20_mb_pause_reason_leaves_a_small_state_file(tmp_path):
    events = []
    run = rollout(store=ck.stores.FileStore(tmp_path))
    run.add_listener(events.append)
    pause_at_20_percent(run, HUGE)
    lines = io.StringIO()
    execute(run, out=lines, lines=lines)
    (state_file,) = tmp_path.glob("web*.json")
    assert state_file.stat().st_size < 100_000
    assert run.state.pause_reason is not None
    assert len(run.state.pause_reason) <= MAX_TEXT
    assert max(len(getattr(e, "reason", "")) for e in events) <= MAX_TEXT
    assert max(map(len, lines.getvalue().splitlines())) < 2 * MAX_TEXT


@pytest.mark.anyio
async def test_a_20_mb_abort_reason_is_kept_to_the_limit_with_a_note():
    run = rollout()
    reasons = []
    run.add_listener(lambda event: reasons.append(getattr(event, "reason", "")))

    def abort_at_20(event):
        if isinstance(event, ck.events.SplitConfirmed) and event.split.canary_percent == 20:
            run.abort(HUGE)

    run.add_listener(abort_at_20)
    outcome = await run.run()
    assert outcome.phase is ck.Phase.ABORTED
    assert len(outcome.reason) <= MAX_TEXT
    assert outcome.reason.endswith(" more characters)")
    assert all(len(reason) <= MAX_TEXT for reason in reasons)
    assert len(
        describe_event(ck.events.CommandReceived(time=0, command="abort", reason=HUGE)).message
    ) < (2 * MAX_TEXT)


def test_the_machine_keeps_short_reasons_as_they_are_and_cuts_long_ones_within_the_limit():
    assert _kept("x" * MAX_TEXT) == "x" * MAX_TEXT
    cut = _kept("y" * (MAX_TEXT + 1))
    assert len(cut) <= MAX_TEXT
    kept = cut.partition("...")[0]
    assert cut == f"{kept}... ({MAX_TEXT + 1 - len(kept)} more characters)"
    assert _kept(FORGED) == FORGED  # data: escaped where shown, not where kept


def test_a_saved_state_with_a_huge_reason_is_read_back_cut():
    data = RolloutState(phase=ck.Phase.PAUSED).to_json()
    data["reason"] = data["pause_reason"] = HUGE
    state = RolloutState.from_json(data)
    assert len(state.reason) <= MAX_TEXT and len(state.pause_reason or "") <= MAX_TEXT


def test_the_command_line_refuses_an_oversize_reason(tmp_path, capsys):
    code = main(["pause", str(tmp_path / "p.toml"), "--reason", "z" * (MAX_TEXT + 1)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--reason: is {MAX_TEXT + 1} characters long; a reason is at most {MAX_TEXT}" in err
    assert len(err) < 300


def test_an_error_message_with_control_characters_is_printed_on_one_line(tmp_path, capsys):
    policy = tmp_path / "p.toml"
    policy.write_text('[plan]\nshape = "nope\\n14:35:00 forged\\u001b[2J"\n')
    assert main(["simulate", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err, err


def test_a_forged_reason_is_one_escaped_line_in_the_runners_log(caplog):
    run = rollout()
    pause_at_20_percent(run, FORGED)
    with caplog.at_level("INFO", logger="canarykit"):
        execute(run, out=io.StringIO(), lines=io.StringIO())
    carrying = [
        record.getMessage() for record in caplog.records if "14:35:00" in record.getMessage()
    ]
    assert carrying and all(ESCAPED in message for message in carrying), carrying
    assert not any("\n" in message or "\x1b" in message for message in carrying)
