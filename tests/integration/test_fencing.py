"""Fencing on a real three-member etcd: a runner frozen past its lease never applies again.

Each runner is a separate ``python`` process (tests/helpers/fencing_runner.py) with its
own holder id and its own `EtcdStore`; they share nothing but the cluster and an
append-only apply log their recording routers write (holder, token, weight per apply).
Runner A starts the rollout; once it has applied twice it is frozen with SIGSTOP while
B waits for the lease. A's etcd lease runs out (TTL 2 s), B takes over, resumes the
saved rollout and applies; then A is resumed with SIGCONT. Whatever A was doing, it must
never apply after B's first apply, and the rollout must end exactly once (by B).
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("httpx", reason="pip install 'canarykit[etcd]'")

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "fencing_runner.py"
TTL = 2.0
STEPS = "10,20,30,40,50"
HOLD = 0.5  # seconds of pause after each step


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_until(condition, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def start_runner(cluster, prefix, log, holder, *extra) -> subprocess.Popen:
    argv = [
        sys.executable,
        str(HELPER),
        "--endpoints",
        ",".join(cluster.endpoints),
        "--prefix",
        prefix,
        "--holder",
        holder,
        "--log",
        str(log),
        "--ttl",
        str(TTL),
        "--steps",
        STEPS,
        "--hold",
        str(HOLD),
        *extra,
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=60)
    lines = out.strip().splitlines()
    assert lines, f"runner printed nothing; stderr:\n{err[-3000:]}"
    return json.loads(lines[-1])


# What may stop runner A once it wakes, by the helper's flags (see fencing_runner.py):
# its own clock (the last renewal is older than the TTL), else the store's fenced save,
# else, with a store that does not fence its writes, the check before the apply.
MODES = {
    "clock": ([], ""),
    "fenced-save": (["--blind-renewals"], "the store refused the state write"),
    "check": (["--blind-renewals", "--unfenced-saves"], "checking it before an apply failed"),
}


def one_trial(cluster, tmp_path: Path, backend: str, flags: list[str]) -> dict:
    """A applies, is frozen past its lease, B takes over, A resumes; the log's verdict."""
    prefix = f"fence-{secrets.token_hex(4)}/"
    log = tmp_path / f"{prefix.rstrip('/')}.log"
    extra = ["--backend", backend, *flags]
    a = start_runner(cluster, prefix, log, "runner-a", *extra)
    b = None
    try:
        wait_until(
            lambda: (
                sum(e.get("holder") == "runner-a" and "weight" in e for e in read_log(log)) >= 2
            ),
            30,
            "runner A's first two applies",
        )
        b = start_runner(cluster, prefix, log, "runner-b", "--wait-for-lease", "30", *extra)
        a.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(
            lambda: any(e.get("holder") == "runner-b" for e in read_log(log)),
            30,
            "runner B to take over and apply",
        )
        takeover_s = time.monotonic() - stopped_at
        time.sleep(HOLD / 2)  # B is now between applies: A wakes up into a live successor
        a.send_signal(signal.SIGCONT)
        result_a, result_b = result_of(a), result_of(b)
    finally:
        for process in (a, b):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)
    entries = read_log(log)
    first_b = next(i for i, e in enumerate(entries) if e["holder"] == "runner-b")
    return {
        "entries": entries,
        "first_b": first_b,
        "a": result_a,
        "b": result_b,
        "takeover_s": takeover_s,
    }


@pytest.mark.parametrize("mode", list(MODES))
def test_a_runner_frozen_past_its_lease_never_applies_after_its_successor(
    etcd_cluster, tmp_path, mode
):
    flags, stopped_by = MODES[mode]
    for trial, backend in enumerate(["asyncio", "trio", "asyncio"]):
        seen = one_trial(etcd_cluster, tmp_path, backend, flags)
        entries, first_b = seen["entries"], seen["first_b"]
        context = f"trial {trial} ({backend}): {json.dumps(entries, indent=1)}\n{seen}"
        stale = [e for e in entries[first_b:] if e["holder"] == "runner-a"]
        assert stale == [], context
        # A stopped on its own, as a lost lease, without ending the rollout.
        assert seen["a"]["result"] == "lease_lost", context
        assert stopped_by in seen["a"]["reason"], context
        assert seen["b"]["result"] == "ended" and seen["b"]["phase"] == "succeeded", context
        ends = [e for e in entries if "end" in e]
        assert [(e["holder"], e["end"]) for e in ends] == [("runner-b", "succeeded")], context
        # Every apply carries its holding's token; B's holding is a later one than A's.
        tokens_a = {e["token"] for e in entries if e["holder"] == "runner-a"}
        tokens_b = {e["token"] for e in entries if e["holder"] == "runner-b" and "weight" in e}
        assert len(tokens_a) == 1 and len(tokens_b) == 1, context
        assert min(tokens_b) > max(tokens_a), context
        # B went on from where A's saved state stood, not from the start.
        weights_b = [e["weight"] for e in entries[first_b:] if "weight" in e]
        assert weights_b[0] >= 20 and weights_b[-1] == 100, context
        assert seen["takeover_s"] < 3 * TTL + 5, context
