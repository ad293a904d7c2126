"""Words for people: status with its history, commands to a finished rollout, stamped and
summarised retry lines, and a step counter that never passes the step count.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it.

from __future__ import annotations

import io
import logging
import re
import time

import anyio
import pytest

import canarykit as ck
from canarykit._cli import main
from canarykit._cli._run import RunDisplay
from canarykit.testing import FakeRouter
from helpers.policies import ERROR_RATE, STEP_PLAN, WAIT_FOR_PROMOTION, policy, rollout_table

# Each test gets its own traffic-target locks (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("lock_dir")

POLICY = policy(STEP_PLAN, WAIT_FOR_PROMOTION, ERROR_RATE, rollout_table())
STAMP = r"\d\d:\d\d:\d\d"


def policy_file(tmp_path):
    path = tmp_path / "web.toml"
    path.write_text(POLICY.format(state=tmp_path / "state"))
    return str(path)


def record(phase, confirmed, release, finished_at, step=2):
    state = ck.machine.RolloutState(
        phase=phase,
        step=step,
        confirmed=None if confirmed is None else ck.TrafficSplit(canary_percent=confirmed),
        finished_at=finished_at,
    )
    return {"release": release, "plan": {"steps": [{}, {}]}, "state": state.to_json()}


def save(tmp_path, data, *archived):
    store = ck.stores.FileStore(tmp_path / "state", fsync=False)

    async def work():
        for old in archived:
            await store.archive("web", old)
        await store.save("web", data)

    anyio.run(work)


def test_status_says_stable_only_when_the_router_confirmed_it_and_lists_history(tmp_path, capsys):
    now = time.time()
    save(
        tmp_path,
        record(ck.Phase.ABORTED, None, "v3", now),
        record(ck.Phase.ROLLED_BACK, 0, "v1", now - 7200),
        record(ck.Phase.SUCCEEDED, 100, "v2", now - 3600),
    )
    assert main(["status", policy_file(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "release   v3" in out
    assert "phase     aborted at step 2/2 (all done); canary unknown" in out
    assert "traffic   NOT confirmed on stable: the router confirmed no split" in out
    assert "on stable, as the router confirmed" not in out.split("history")[0]
    history = [line for line in out.splitlines() if re.match(r"(history)?\s+v\d:", line)]
    assert len(history) == 2, out
    assert history[0].startswith("history   v2: promoted at "), history
    assert history[1].startswith("          v1: rolled back at "), history
    assert "traffic all on stable, as the router confirmed" in history[1]


def test_status_of_a_rollback_confirmed_at_stable_says_so(tmp_path, capsys):
    save(tmp_path, record(ck.Phase.ROLLED_BACK, 0, "v3", time.time()))
    assert main(["status", policy_file(tmp_path)]) == 0
    assert "traffic   all on stable, as the router confirmed" in capsys.readouterr().out


def test_the_step_counter_never_exceeds_the_step_count(tmp_path, capsys):
    save(tmp_path, record(ck.Phase.SUCCEEDED, 100, "v9", time.time(), step=2))
    assert main(["status", policy_file(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "step 3/2" not in out and "at step 2/2 (all done)" in out


@pytest.mark.parametrize(
    ("command", "phase", "verb"),
    [
        ("pause", ck.Phase.SUCCEEDED, "succeeded"),
        ("abort", ck.Phase.ROLLED_BACK, "was rolled back"),
        ("promote", ck.Phase.ABORTED, "was aborted"),
    ],
)
def test_a_command_to_a_finished_rollout_says_how_and_when_it_ended(
    tmp_path, capsys, command, phase, verb
):
    finished = time.time() - 60
    save(tmp_path, record(phase, 0, "v42", finished))
    started = time.monotonic()
    assert main([command, policy_file(tmp_path), "--wait", "5"]) == 5
    assert time.monotonic() - started < 2  # answered from the record, not after waiting
    out = capsys.readouterr().out
    when = time.strftime("%H:%M:%S UTC", time.gmtime(finished))
    assert out == (
        f"{command}: the rollout already {verb} at {when} (release v42); nothing to {command}\n"
    )
    assert not list((tmp_path / "state").glob("web.commands/*.json"))  # nothing sent


def display(window):
    rollout = ck.Rollout(ck.Plan(steps=[ck.SetWeight(20)]), router=FakeRouter(), key="web")
    lines = io.StringIO()
    return RunDisplay(rollout, lines, None, window=window), lines


def test_retries_are_stamped_and_summarised_once_per_window():
    shown, lines = display(window=60.0)
    prometheus = logging.getLogger("canarykit.metrics.prometheus")
    with shown.capture_logs():
        for attempt in range(16):
            prometheus.warning("Prometheus %s failed (%s); retrying in 0.5 s", "query", attempt)
        shown.line("event line")
    text = lines.getvalue().splitlines()
    assert len(text) == 3, text
    assert re.fullmatch(
        rf"{STAMP}  warning: Prometheus query failed \(0\); retrying in 0.5 s", text[0]
    )
    assert re.fullmatch(
        rf"{STAMP}  Prometheus: 16 tries from {STAMP} to {STAMP}; last: Prometheus query "
        r"failed \(15\); retrying in 0.5 s",
        text[1],
    ), text
    assert text[2] == "event line"


def test_a_retry_past_the_window_says_how_many_tries_so_far():
    shown, lines = display(window=0.0)
    prometheus = logging.getLogger("canarykit.metrics.prometheus")
    with shown.capture_logs():
        for attempt in range(3):
            prometheus.warning("Prometheus query failed (%s)", attempt)
    text = lines.getvalue().splitlines()
    assert re.fullmatch(
        rf"{STAMP}  retrying Prometheus \(3 tries so far, last: Prometheus query failed \(2\)\)",
        text[2],
    ), text
    assert len(text) == 3  # all shown already: no summary
