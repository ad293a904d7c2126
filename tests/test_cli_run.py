"""``canarykit run``'s driver and display, in-process on a fake router and virtual time.

The command itself, on real nginx and Prometheus, is tests/integration/test_run_command.py.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import io
import json
import signal

import pytest

import canarykit as ck
from canarykit._cli._run import EXIT_INTERRUPTED, EXIT_PAUSED, EXIT_ROLLED_BACK, RunDisplay, execute
from canarykit.deciders import bound, threshold
from canarykit.testing import FakeRouter, ScriptedMetrics, VirtualClock, regression

PLAN = ck.from_weights([10, 50], hold=60, final_bake=60, analysis_interval=30)
DECIDER = threshold(bound("error_rate", max=0.02))


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def rollout(router=None, metrics=None, plan=PLAN, **options):
    return ck.Rollout(
        plan,
        router=router or FakeRouter(),
        metrics=metrics or ScriptedMetrics(),
        decider=DECIDER,
        clock=VirtualClock(start=1_800_000_000.0),
        key="web",
        **options,
    )


def test_a_promoted_rollout_exits_0_with_one_line_per_event():
    lines = io.StringIO()
    code = execute(rollout(), out=lines, lines=lines)
    assert code == 0
    text = lines.getvalue().splitlines()
    assert any(line.endswith("progressing     10%  split: canary 10%") for line in text), text
    assert any("verdict: pass:" in line for line in text)
    assert text[-2] == "outcome   promoted"
    assert text[-1].startswith("          canary traffic at 100%; took ")
    assert "\r" not in lines.getvalue() and "\x1b" not in lines.getvalue()


def test_a_rolled_back_rollout_exits_3():
    metrics = ScriptedMetrics(error_rate=regression(at=0, base=0.01, factor=10))
    lines = io.StringIO()
    router = FakeRouter()
    assert execute(rollout(router, metrics), out=lines, lines=lines) == EXIT_ROLLED_BACK
    assert router.current.is_stable_only
    assert "outcome   rolled back: " in lines.getvalue()


def test_a_rollout_left_paused_exits_4_and_says_where_traffic_is():
    plan = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion()])
    lines = io.StringIO()
    # In virtual time, with no analysis, nothing can ever wake it: run() returns it paused.
    assert execute(rollout(plan=plan), out=lines, lines=lines) == EXIT_PAUSED
    assert "canary traffic at 20%" in lines.getvalue()


def test_json_prints_only_the_outcome_on_stdout():
    out, lines = io.StringIO(), io.StringIO()
    assert execute(rollout(), out=out, lines=lines, json_outcome=True) == 0
    data = json.loads(out.getvalue())
    assert (data["name"], data["phase"], data["interrupted"]) == ("web", "succeeded", None)
    assert "split: canary 10%" in lines.getvalue()


class SignalAt(FakeRouter):
    """A router that sends this process `signum` once it has applied `percent`."""

    def __init__(self, percent, signum):
        super().__init__()
        self.percent, self.signum = percent, signum

    async def apply(self, split):
        await super().apply(split)
        if split.canary_percent == self.percent:
            signal.raise_signal(self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_rolls_back_and_exits_130(signum):
    router = SignalAt(50, signum)
    lines = io.StringIO()
    assert execute(rollout(router), out=lines, lines=lines) == EXIT_INTERRUPTED
    assert [s.canary_percent for s in router.applied] == [10, 50, 0]
    name = signal.Signals(signum).name
    assert f"{name}: rolling traffic back to stable" in lines.getvalue()
    assert f"outcome   aborted ({name}): " in lines.getvalue()


def test_leave_traffic_stops_without_a_rollback():
    router = SignalAt(10, signal.SIGINT)
    lines = io.StringIO()
    code = execute(rollout(router, on_cancel="leave"), out=lines, lines=lines, leaves_traffic=True)
    assert code == EXIT_INTERRUPTED
    assert [s.canary_percent for s in router.applied] == [10]
    assert "SIGINT: stopping, leaving traffic where it is (state saved)" in lines.getvalue()
    assert "canary traffic at 10%" in lines.getvalue()


def test_the_status_line_is_erased_before_each_event_line_and_drawn_again(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the width of a stream that is no real terminal
    screen = Terminal()  # the event lines and the status line on one terminal
    execute(rollout(), out=screen, lines=screen, status=screen)
    drawn = screen.getvalue()
    assert "\r\x1b[Kweb | progressing | step 1/6 set weight 10% | canary 0% | " in drawn
    pause = "\r\x1b[Kweb | progressing | step 2/6 pause 1m | canary 10% | 1:00 left in the step"
    assert f"{pause} | running 0:" in drawn
    # What each finished row shows is what follows its last erase: always an event line,
    # never a status line left behind or mixed in.
    rows = [row.rsplit("\r\x1b[K", 1)[-1] for row in drawn.split("\n")[:-1]]
    assert len(rows) > 10 and not any(row.startswith("web |") for row in rows), rows
    assert "split: canary 10%" in rows[2] and rows[-2] == "outcome   promoted"
    assert drawn.split("\n")[-1] == ""  # the status line was erased at the end


def test_a_status_line_longer_than_the_terminal_is_cut_to_one_row(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    status = Terminal()
    execute(rollout(), out=io.StringIO(), lines=io.StringIO(), status=status)
    drawn = [text for text in status.getvalue().split("\r\x1b[K") if text]
    assert drawn and all(len(text) == 39 for text in drawn)


def test_the_status_line_names_a_gate_that_waits_and_for_how_long():
    hooks = ck.hooks.Hooks(confirm_promotion=lambda call: False, interval=30, gate_timeout=3600)
    run = rollout(hooks=hooks)
    display = RunDisplay(run, io.StringIO(), Terminal())
    seen = []
    run.add_listener(lambda event: seen.append(display.status_text()))
    execute(run, out=io.StringIO(), lines=io.StringIO())
    assert any("waiting for confirm-promotion for 0:30" in text for text in seen), seen
