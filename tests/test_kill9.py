"""kill -9: a rollout whose runner is killed at random moments, resumed each time, ends right.

Each trial runs a rollout (5 -> 10 -> 25 -> 50 -> 75 %, pauses of 0.1-0.3 s, background
analysis every 0.1 s) in a forked runner on the real clock, with a `FileStore` and a
router whose split and log of applies are files; kills the runner with SIGKILL at a
random moment (fixed seed) after its first action, a quarter of the time 0-40 ms after a
Ctrl-C (SIGINT, on which the runner rolls back); starts a new runner on the same files;
and so on until a runner finishes. Then: the rollout succeeded (or, after a Ctrl-C, was
aborted or rolled back), the router's split, the outcome and the saved state agree, the
distinct splits users were sent to are the plan's in order (no step repeated, none
skipped; a split applied again right after itself is allowed), traffic never went back
up after a rollback to stable, and no pause was cut short. See tests/helpers/fault_harness.py.
"""

import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import canarykit as ck
from helpers import fault_harness as fh

# Runner processes killed with SIGKILL for seconds on end: the slow tier.
pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL"),
    pytest.mark.integration,
]

TRIALS = 30
LANES = 3  # trials run three at a time: each mostly sleeps
SEED = 20240605


def run_lane(lane_number, trials, tmp_path):
    rng = random.Random(SEED + lane_number)
    results = []
    with fh.Kill9Lane() as lane:
        for trial in range(trials):
            directory = tmp_path / f"lane{lane_number}-trial{trial}"
            directory.mkdir()
            backend = "trio" if trial % 3 == 2 else "asyncio"
            results.append(fh.run_kill9_trial(lane, directory, rng, backend))
    return results


def test_rollouts_killed_at_random_moments_resume_without_repeating_or_skipping(tmp_path):
    with ThreadPoolExecutor(LANES) as pool:
        lanes = pool.map(run_lane, range(LANES), [TRIALS // LANES] * LANES, [tmp_path] * LANES)
        trials = [trial for lane in lanes for trial in lane]
    assert len(trials) == TRIALS
    violations = [f"trial {i}: {v}" for i, trial in enumerate(trials) for v in trial.violations]
    assert violations == []
    # The kills must have landed all over the rollout, or this proves little.
    kills = sum(trial.kills for trial in trials)
    assert kills >= TRIALS
    assert sum(trial.interrupts for trial in trials) >= 5
    landed = {applies for trial in trials for applies in trial.killed_at_applies}
    assert len(landed) >= 4, landed


# ---------------------------------------------------------------------------- the checks bite


def split(percent):
    return ck.TrafficSplit(canary_percent=percent).to_json()


def write_trial(directory, splits, *, phase="succeeded", held=0.3, lost=()):
    """The files a finished trial leaves, with `splits` applied `held` seconds apart.

    The applies numbered in `lost` are logged but never took effect (a kill came first).
    """
    directory.mkdir(exist_ok=True)
    lines, version = [], 0
    for i, percent in enumerate(splits):
        version += 1
        entry = {"pid": 1, "at": 1000 + i * held, "version": version, "split": split(percent)}
        lines.append(json.dumps(entry))
        if i in lost:
            version -= 1  # the next apply finds the file as it was
    (directory / "router.log").write_text("\n".join(lines) + "\n")
    final = [p for i, p in enumerate(splits) if i not in lost][-1]
    (directory / "router.json").write_text(json.dumps({"version": version, "split": split(final)}))
    outcome = {"pid": 1, "phase": phase, "split": split(final), "resumed": True}
    (directory / "outcome.json").write_text(json.dumps(outcome))


PAUSES = [0.2] * 5


def problems(tmp_path, splits, **options):
    write_trial(tmp_path, splits, **options)
    return [p for p in fh.check_kill9_trial(tmp_path, PAUSES) if "saved state" not in p]


def test_the_trial_check_accepts_a_repeated_apply_of_the_same_split(tmp_path):
    assert problems(tmp_path, [5, 10, 10, 25, 50, 75, 75, 100]) == []


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ([5, 10, 5, 10, 25, 50, 75, 100], "applied"),  # a step repeated after a restart
        ([5, 10, 50, 75, 100], "applied"),  # a step skipped
        ([5, 10, 25, 50, 75], "applied"),  # never promoted
    ],
)
def test_the_trial_check_catches_repeated_and_skipped_steps(tmp_path, splits, message):
    assert any(message in p for p in problems(tmp_path, splits))


def test_the_trial_check_catches_a_pause_cut_short(tmp_path):
    found = problems(tmp_path, [5, 10, 25, 50, 75, 100], held=0.1)
    assert any("was held 0.100 s, its pause is 0.2 s" in p for p in found)


def test_the_trial_check_catches_a_wrong_ending(tmp_path):
    found = problems(tmp_path, [5, 10, 25, 50, 75], phase="rolled_back")
    assert any("ended rolled_back (without a Ctrl-C)" in p for p in found)
    assert any("in force" in p for p in found)


def test_the_trial_check_allows_an_abort_after_a_ctrl_c_only(tmp_path):
    write_trial(tmp_path, [5, 10, 0], phase="aborted")
    found = fh.check_kill9_trial(tmp_path, PAUSES, interrupted=True)
    assert [p for p in found if "saved state" not in p] == []
    assert any("ended aborted (without" in p for p in fh.check_kill9_trial(tmp_path, PAUSES))


def test_the_trial_check_catches_traffic_going_up_after_a_rollback(tmp_path):
    found = problems(tmp_path, [5, 10, 0, 25, 50, 75, 100])
    assert any("traffic went up to 25% after a rollback to 0%" in p for p in found)


def test_an_apply_that_never_took_effect_does_not_count(tmp_path):
    # The rollback to 0% was logged, then the runner was killed before the router's file
    # changed: users never left 10%, and the next runner went on from there.
    assert problems(tmp_path, [5, 10, 0, 25, 50, 75, 100], lost={2}) == []
