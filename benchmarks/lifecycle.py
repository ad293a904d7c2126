"""Release after release on real servers; the last line printed is one JSON object.

Everything runs on loopback: real nginx or HAProxy, real app processes (`DemoApp`), a
real Prometheus, real requests through the proxy (`ReleaseLab`).

- releases_in_a_row: per model and proxy, three releases in a row (good, bad, good),
  counted while each ended as it should (promoted, rolled back, promoted) with the router
  back at stable (or the slots swapped) ready for the next one.
- max_share_error_points: per model and proxy, the largest |share counted from outside -
  share canarykit claimed|, in percentage points, over every confirmed split (requests in
  flight within 0.3 s of a change are left out).
- bad_release_rollback_s: per model and proxy, from the end of the bad release's first
  failed window to the router's confirmation of stable
  (`bad_release_rollback_from_traffic_s`: from its first canary traffic instead).
- unwatched_seconds_unjudged: nginx, one rollout (20% held 12 s, 3 s windows) whose
  runner gets kill -9 in the middle of the hold and is resumed 4 s later by a new
  runner: seconds of canary traffic, from the first canary split to the end of the last
  judged window, that no judged window covers (the time nobody watched, left unjudged).
  `seconds_after_last_window_to_promotion`: from the end of the last judged window to
  the decision to promote, which no window covers either: the source's `settle` wait for
  fresh scrapes before it judges that window; `..._not_killed`: the same rollout, not
  killed (the control), which shows the same tail.
- rerun_moved_traffic: that rollout run again with the same release after it finished:
  did the include file change or the canary's share of real requests move? (false is
  the target).

Usage: python benchmarks/lifecycle.py [--quick]   (--quick: nginx only)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import ReleaseLab

PLAN = ck.from_weights([20, 50], hold=3, analysis_interval=3)
DECIDER = threshold(bound("error_rate", max=0.02))
RELEASES = [("r2", "v2", False), ("r3", "v3", True), ("r4", "v4", False)]
KILL_PLAN_HOLD = 12.0
KILLED_FOR = 4.0


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# ---------------------------------------------------------------------------- releases


async def three_releases(directory: Path, proxy: str, model: str) -> dict[str, Any]:
    with ReleaseLab(directory, proxy=proxy, model=model) as lab:  # type: ignore[arg-type]
        async with lab.traffic():
            results = []
            for release, version, bad in RELEASES:
                result = await lab.release(release, version, PLAN, DECIDER, bad=bad)
                shares = ", ".join(
                    f"{s.claimed:g}%~{s.counted:.1f}% (n={s.requests})" for s in result.shares
                )
                log(
                    f"{proxy} {model} {release} {version}{' (bad)' if bad else ''}: "
                    f"{result.outcome.phase.value} in {result.seconds:.1f} s; "
                    f"claimed~counted: {shares}"
                )
                results.append(result)
    expected = ["succeeded", "rolled_back", "succeeded"]
    in_a_row = 0
    for result, want in zip(results, expected, strict=True):
        at_stable = bool(result.shares) and result.shares[-1].claimed == 0.0
        if result.outcome.phase.value != want or not at_stable:
            break
        in_a_row += 1
    bad = results[1]
    return {
        "releases_in_a_row": in_a_row,
        "max_share_error_points": round(max(r.max_share_error for r in results), 2),
        "bad_release_rollback_s": None if bad.rollback_s is None else round(bad.rollback_s, 2),
        "bad_release_rollback_from_traffic_s": None
        if bad.rollback_from_traffic_s is None
        else round(bad.rollback_from_traffic_s, 2),
        "seconds": round(sum(r.seconds for r in results), 1),
    }


# ---------------------------------------------------------------------------- kill -9


def child(config_path: str) -> int:
    """One runner: the rollout of release r1 on the lab's nginx, saved in a FileStore."""
    from canarykit.metrics import PrometheusSource
    from canarykit.routers import NginxRouter

    config = json.loads(Path(config_path).read_text())
    events = Path(config["events"])

    def listener(event: object) -> None:
        if isinstance(event, ck.events.SplitConfirmed):
            line = {"kind": "split", "time": time.time(), "percent": event.split.canary_percent}
        elif isinstance(event, ck.events.VerdictReached):
            line = {
                "kind": "window",
                "start": event.start,
                "end": event.end,
                "verdict": event.verdict.kind.value,
            }
        elif isinstance(event, ck.events.PhaseChanged) and event.new is ck.Phase.PROMOTING:
            line = {"kind": "promoting", "time": time.time()}
        else:
            return
        with events.open("a") as file:
            file.write(json.dumps(line) + "\n")

    rollout = ck.Rollout(
        ck.from_weights([20], hold=KILL_PLAN_HOLD, analysis_interval=3),
        router=NginxRouter(**config["router"]),
        metrics=PrometheusSource(url=config["prometheus"], stable="v1", canary="v2", settle=1.0),
        decider=DECIDER,
        store=ck.stores.FileStore(config["state"]),
        key="web",
        release=config["release"],
        listeners=[listener],
    )
    try:
        outcome = anyio.run(rollout.run)
    except ck.ReleaseFinishedError as exc:
        print(f"finished already: {exc}", flush=True)
        return 10
    print(f"outcome {outcome.phase.value}", flush=True)
    return 0


def _spawn(config: Path, output: Path) -> subprocess.Popen[bytes]:
    with output.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, __file__, "child", str(config)], stdout=sink, stderr=sink
        )


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _uncovered(start: float, end: float, windows: list[tuple[float, float]]) -> float:
    """Seconds of [start, end) that no window covers."""
    covered, cursor = 0.0, start
    for low, high in sorted(windows):
        low, high = max(low, cursor), min(high, end)
        if high > low:
            covered += high - low
            cursor = high
    return max(0.0, (end - start) - covered)


def _measure(events: Path) -> tuple[float, float, str]:
    """(seconds unjudged up to the last judged window, up to promotion, a description)."""
    found = _events(events)
    splits = [e for e in found if e["kind"] == "split"]
    windows = [(e["start"], e["end"]) for e in found if e["kind"] == "window"]
    canary_from = min(e["time"] for e in splits if e["percent"] > 0)
    judged_to = max(end for _, end in windows)
    # Until promotion was decided: from then on the canary is meant to get all traffic.
    promoted = min((e["time"] for e in found if e["kind"] == "promoting"), default=judged_to)
    shown = ", ".join(f"[{a - canary_from:.1f}, {b - canary_from:.1f})" for a, b in windows)
    text = f"canary from 0 s, promoted at {promoted - canary_from:.1f} s; judged windows {shown}"
    return (
        _uncovered(canary_from, judged_to, windows),
        _uncovered(canary_from, max(promoted, judged_to), windows),
        text,
    )


def _config(directory: Path, lab: ReleaseLab, release: str) -> tuple[Path, Path]:
    router: Any = lab.server.router
    config = directory / f"child-{release}.json"
    events = directory / f"events-{release}.jsonl"
    config.write_text(
        json.dumps(
            {
                "events": str(events),
                "state": str(directory / "state"),
                "prometheus": lab.prometheus.url,
                "release": release,
                "router": {
                    "include_path": str(router.include_path),
                    "main_config": str(router.main_config),
                    "pid_file": str(router.pid_file),
                    "prefix": None if router.prefix is None else str(router.prefix),
                    "stable": list(router.stable),
                    "canary": list(router.canary),
                    "name": router.name,
                    "nginx": router.nginx,
                },
            }
        )
    )
    return config, events


async def kill9_and_rerun(directory: Path) -> dict[str, Any]:
    with ReleaseLab(directory, proxy="nginx", model="upgrade-stable") as lab:
        await anyio.to_thread.run_sync(lab.start_app, "b", "v2")
        router: Any = lab.server.router
        output = directory / "children.log"
        async with lab.traffic() as load:
            # Control: the same rollout, not killed.
            config, events = _config(directory, lab, "r0")
            code = await anyio.to_thread.run_sync(_spawn(config, output).wait)
            _, control, text = _measure(events)
            log(f"not killed (exit {code}): {text}; {control:.2f} s unjudged")
            await router.apply(ck.TrafficSplit(canary_percent=0))  # ready for release r1
            config, events = _config(directory, lab, "r1")
            first = _spawn(config, output)
            deadline = time.time() + 30
            while not any(e.get("percent", 0) > 0 for e in _events(events)):
                if time.time() > deadline or first.poll() is not None:
                    raise RuntimeError(f"the first runner never moved traffic: {output}")
                await anyio.sleep(0.1)
            await anyio.sleep(4.5)  # mid-hold, after one judged window, inside the second
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = time.time()
            log(
                "kill -9 the runner 4.5 s after the canary got traffic; "
                f"resume {KILLED_FOR:g} s later"
            )
            await anyio.sleep(KILLED_FOR)
            second = _spawn(config, output)
            code = await anyio.to_thread.run_sync(second.wait)
            log(f"resumed runner exited {code} after {time.time() - killed_at:.1f} s")
            gap, unjudged, text = _measure(events)
            log(
                f"killed: {text}; {gap:.2f} s unjudged up to the last window, "
                f"{unjudged:.2f} s to promotion"
            )
            # The same release again: nothing may move.
            before_text = Path(router.include_path).read_bytes()
            before_stat = os.stat(router.include_path)
            rerun_from = time.time()
            third = _spawn(config, output)
            rerun_code = await anyio.to_thread.run_sync(third.wait)
            await anyio.sleep(1.0)
            rerun_to = time.time()
            after_stat = os.stat(router.include_path)
            changed = (
                Path(router.include_path).read_bytes() != before_text
                or after_stat.st_mtime_ns != before_stat.st_mtime_ns
            )
            during = [r for r in load.responses if rerun_from <= r.at < rerun_to and r.instance]
            off_canary = sum(1 for r in during if r.instance != "b")
            log(
                f"same release again: exit {rerun_code}; include file changed: {changed}; "
                f"{len(during)} requests meanwhile, {off_canary} not on the canary"
            )
    return {
        "unwatched_seconds_unjudged": round(gap, 2),
        "seconds_after_last_window_to_promotion": round(unjudged - gap, 2),
        "seconds_after_last_window_to_promotion_not_killed": round(control, 2),
        "rerun_moved_traffic": bool(changed or off_canary),
        "rerun_exit": rerun_code,
    }


# ---------------------------------------------------------------------------- main


async def main(quick: bool) -> dict[str, Any]:
    combos = [("nginx", "upgrade-stable"), ("nginx", "slots")]
    if not quick:
        combos += [("haproxy", "upgrade-stable"), ("haproxy", "slots")]
    figures: dict[str, Any] = {
        key: {}
        for key in (
            "releases_in_a_row",
            "max_share_error_points",
            "bad_release_rollback_s",
            "bad_release_rollback_from_traffic_s",
        )
    }
    with tempfile.TemporaryDirectory(prefix="ck-lifecycle-") as temporary:
        root = Path(temporary)
        for proxy, model in combos:
            found = await three_releases(root / f"{proxy}-{model}", proxy, model)
            for key in figures:
                figures[key][f"{model}/{proxy}"] = found[key]
            log(f"{proxy} {model}: {found}")
        figures.update(await kill9_and_rerun(root / "kill9"))
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.exit(child(sys.argv[2]))
    result = anyio.run(main, "--quick" in sys.argv)
    print(json.dumps(result, sort_keys=True))
