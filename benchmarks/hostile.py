"""Attacks on a shared host, as a local attacker or a careless operator would make them; the
last line printed is one JSON object.

Each case is one of the ways around "rollback is sacred" and "nothing lost" that a security
review found (issue 13), replayed against the library as it is now. Every case runs in a
fresh child process (``--case NAME``) under a hard time limit, so one that hangs is counted
as unsafe instead of hanging the benchmark, and the child's peak memory is its own.

- ``attacks_tried``, ``attacks_unsafe`` (target 0): the named cases, and those whose
  attack worked: traffic left live or moved, a file outside the rollout written, a
  runner killed, a hang, a forged line, an unbounded read, a traceback.
- ``max_wait_past_timeout_s`` (target < 1): the longest any bounded wait (a FIFO approval,
  a dripping or silent server) ran past the timeout it was given.
- ``peak_rss_mb_huge_responses`` (target < 100): the peak resident memory of the process
  that took 300 MB answers from a webhook, a notifier and the Prometheus source.
- ``secret_leaks`` (target 0): pieces of secrets (8 characters or more) found in any error,
  reason, repr or log line after servers echoed them back, whole or cut by a read limit.

Usage: python benchmarks/hostile.py [--case NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CASE_TIME_LIMIT = 120.0
SECRET = "tok3n-Sh0uld-N3ver-Be-Sh0wn-4242-abcdefgh"
PASSWORD = 'pa\\ss"w%rd-\\n-Sh0uld-N3ver-Leak'

CASES: dict[str, Callable[[Path], dict[str, Any]]] = {}


def case(function: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
    CASES[function.__name__] = function
    return function


def pieces(secret: str, size: int = 8) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaks_in(text: str, *secrets: str) -> int:
    return sum(piece in text for secret in secrets for piece in pieces(secret))


def canarykit_cli(*args: str, timeout: float = 30.0, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "canarykit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return done.returncode, done.stdout + done.stderr


def a_call(point: Any) -> Any:
    import canarykit as ck

    return ck.hooks.HookCall(
        hook=point,
        rollout="web",
        phase=ck.Phase.PROGRESSING,
        step=1,
        steps=2,
        weight=10.0,
        time=0.0,
    )


def a_window() -> Any:
    import canarykit as ck

    # A window that has ended: the source queries at once instead of waiting for its end.
    end = time.time() - 60
    return ck.Window(start=end - 30, end=end, split=ck.TrafficSplit(canary_percent=10))


def a_notice() -> Any:
    import canarykit as ck

    return ck.events.PhaseChanged(
        time=1.0, old=ck.Phase.PROGRESSING, new=ck.Phase.ROLLED_BACK, step=1, reason="why"
    )


def fake_rollout(state: Path, router: Any, plan: Any = None, **options: Any) -> Any:
    import canarykit as ck

    plan = plan or ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion(), ck.SetWeight(60)])
    return ck.Rollout(plan, router=router, store=ck.stores.FileStore(state), key="web", **options)


# ------------------------------------------------------------------------ 1. waits


@case
def fifo_approval(tmp: Path) -> dict[str, Any]:
    """An approval file that is a FIFO nobody writes to: the gate, abort and cancel all win."""
    import anyio

    import canarykit as ck
    from canarykit.testing import FakeRouter

    fifo = tmp / "web.approval"
    os.mkfifo(fifo)
    call = a_call(ck.machine.HookPoint.CONFIRM_PROMOTION)

    async def gate() -> float:
        started = time.monotonic()
        with anyio.move_on_after(1):
            await ck.hooks.FileApproval(fifo)(call)
        return max(0.0, time.monotonic() - started - 1)

    async def gated_rollout() -> tuple[bool, float]:
        router = FakeRouter()
        hooks = ck.hooks.Hooks(confirm_promotion=ck.hooks.FileApproval(fifo), interval=0.2)
        rollout = ck.Rollout(
            ck.Plan(steps=[ck.SetWeight(10)]), router=router, hooks=hooks, call_timeout=3
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(rollout.run)
            while rollout.state.gate is not ck.machine.HookPoint.CONFIRM_PROMOTION:
                await anyio.sleep(0.01)
            await anyio.sleep(0.5)
            asked = time.monotonic()
            rollout.abort("operator gave up")
        return router.current.is_stable_only, time.monotonic() - asked

    waited = anyio.run(gate)
    stable, took = anyio.run(gated_rollout)
    return {
        "unsafe": not stable or took > 3,
        "wait_past_timeout_s": waited,
        "detail": f"gate returned {waited:.3f}s past its 1s; abort rolled back in {took:.3f}s",
    }


@case
def slow_and_silent_servers(tmp: Path) -> dict[str, Any]:
    """A webhook, a notifier and Prometheus against servers that drip one byte at a time or
    never answer: each ends within its timeout."""
    import anyio

    import canarykit as ck
    from canarykit.metrics import PrometheusSource
    from canarykit.notify import WebhookNotifier
    from helpers import http_hostile as hh

    timeout = 2.0
    worst = 0.0
    details = []
    call = a_call(ck.machine.HookPoint.ROLLBACK)
    for name, respond in (("drip", hh.drip(0.5)), ("silent", hh.silent)):
        with hh.HostileServer(respond) as server:

            async def webhook(url: str = server.url) -> None:
                await ck.hooks.Webhook(url, timeout=timeout, attempts=1)(call)

            async def prometheus(url: str = server.url) -> None:
                source = PrometheusSource(
                    url=url.rstrip("/"), stable="v1", canary="v2", timeout=timeout, attempts=1
                )
                with contextlib.suppress(ck.MetricsError):
                    await source.collect(a_window())

            async def notifier(url: str = server.url) -> None:
                async with WebhookNotifier(url, timeout=timeout, attempts=1) as notify:
                    notify(a_notice())

            for what, job in (
                ("webhook", webhook),
                ("notifier", notifier),
                ("prometheus", prometheus),
            ):
                started = time.monotonic()
                anyio.run(job)
                past = max(0.0, time.monotonic() - started - timeout)
                worst = max(worst, past)
                details.append(f"{what}/{name} +{past:.3f}s")
    return {
        "unsafe": worst >= 1.0,
        "wait_past_timeout_s": worst,
        "detail": ", ".join(details),
    }


# ------------------------------------------------------------------ 2. state directory


@case
def lock_file_symlink(tmp: Path) -> dict[str, Any]:
    """``ln -s VICTIM STATE/web.lock``: the runner never writes VICTIM."""
    import anyio

    from canarykit.testing import FakeRouter

    state = tmp / "state"
    state.mkdir(mode=0o700)
    victim = tmp / "victim"
    victim.write_text("precious\n")
    (state / "web.lock").symlink_to(victim)
    router = FakeRouter()
    error = ""
    try:
        anyio.run(fake_rollout(state, router).run)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    unchanged = victim.read_text() == "precious\n"
    return {
        "unsafe": not unchanged or bool(router.applied),
        "detail": f"victim unchanged={unchanged}; {error[:160]}",
    }


@case
def planted_temporary_symlinks(tmp: Path) -> dict[str, Any]:
    """Links planted where a save might put its temporary file: never written through."""
    import anyio

    import canarykit as ck

    state = tmp / "state"
    state.mkdir(mode=0o700)
    victim = tmp / "victim2"
    victim.write_text("root-owned\n")
    for name in ("web.json.tmp", ".web.json.tmp", "web.tmp", "web.json.new", "web.done.tmp"):
        (state / name).symlink_to(victim)
    store = ck.stores.FileStore(state)

    async def saves() -> None:
        for step in range(20):
            await store.save("web", {"step": step})

    anyio.run(saves)
    return {
        "unsafe": victim.read_text() != "root-owned\n",
        "detail": f"victim unchanged: {victim.read_text() == 'root-owned' + chr(10)}",
    }


@case
def umask_000_and_open_state_dir(tmp: Path) -> dict[str, Any]:
    """Under umask 000 the state directory is still private; one others may write is refused."""
    import anyio

    import canarykit as ck

    old = os.umask(0)
    try:
        store = ck.stores.FileStore(tmp / "new-state")
        anyio.run(store.save, "web", {"step": 1})
        mode = (tmp / "new-state").stat().st_mode & 0o777
        file_mode = (tmp / "new-state" / "web.json").stat().st_mode & 0o777
    finally:
        os.umask(old)
    opened = tmp / "open-state"
    opened.mkdir()
    opened.chmod(0o777)
    refused = ""
    try:
        anyio.run(ck.stores.FileStore(opened).save, "web", {"step": 1})
    except Exception as exc:
        refused = str(exc)
    return {
        "unsafe": mode != 0o700 or file_mode & 0o077 != 0 or not refused,
        "detail": f"dir {mode:o}, file {file_mode:o}; open dir: {refused[:120]}",
    }


@case
def crafted_command_file(tmp: Path) -> dict[str, Any]:
    """``'[' * 100000`` (and bad bytes, a FIFO, a 400 MB sparse file) in the inbox: answered,
    moved aside; the runner lives on and the operator's promote still works."""
    from canarykit._cli._control import CommandInbox
    from canarykit._cli._run import execute
    from canarykit.testing import FakeRouter

    state = tmp / "state"
    inbox = CommandInbox(state, "web")
    inbox.prepare()
    stem = f"{time.time_ns():020d}-{os.getpid()}"
    (inbox.directory / f"{stem}0.json").write_text("[" * 100_000)
    (inbox.directory / f"{stem}1.json").write_bytes(b'{"command": "abort"}\xff')
    os.mkfifo(inbox.directory / f"{stem}2.json")
    with open(inbox.directory / f"{stem}3.json", "wb") as huge:
        huge.truncate(400 * 1024 * 1024)
    router = FakeRouter()
    answers: list[Any] = []

    def operator() -> None:
        deadline = time.monotonic() + 20
        while router.current.canary_percent != 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        answers.append(inbox.wait(inbox.send("promote"), 10))

    thread = threading.Thread(target=operator)
    thread.start()
    lines = io.StringIO()
    code = execute(fake_rollout(state, router), out=lines, lines=lines, inbox=inbox)
    thread.join()
    left = sorted(p.name for p in inbox.directory.iterdir() if p.suffix == ".json")
    promoted = code == 0 and router.current.canary_percent == 100
    return {
        "unsafe": not promoted or bool(left),
        "detail": f"exit {code}, promote answered {bool(answers and answers[0])}, "
        f"crafted files left unanswered: {left}",
    }


@case
def stale_answers(tmp: Path) -> dict[str, Any]:
    """10,000 answers left for senders that are gone: removed, not rescanned forever."""
    from canarykit._cli._control import CommandInbox

    inbox = CommandInbox(tmp / "state", "web")
    inbox.prepare()
    old = time.time() - 3600
    for index in range(10_000):
        path = inbox.directory / f"{index:020d}-999999.done"
        path.write_text('{"accepted": false, "reason": "x"}')
        os.utime(path, (old, old))
    started = time.monotonic()
    inbox.take()
    first = time.monotonic() - started
    left = sum(1 for _ in inbox.directory.iterdir())
    started = time.monotonic()
    inbox.take()
    second = time.monotonic() - started
    return {
        "unsafe": left > 0 or second > 0.05,
        "detail": f"{left} left; first look {first * 1000:.0f} ms, next {second * 1000:.2f} ms",
    }


@case
def damaged_state_files(tmp: Path) -> dict[str, Any]:
    """``canarykit status`` on bad bytes, deep nesting and a FIFO: a clear error, no hang."""
    outcomes = []
    unsafe = False
    for kind in ("bad bytes", "deep nesting", "fifo", "symlink"):
        folder = tmp / kind.replace(" ", "-")
        state = folder / "state"
        state.mkdir(parents=True, mode=0o700)
        (folder / "p.toml").write_text(
            '[plan]\nshape = "weights"\nweights = [10]\nhold = 60\nanalysis_interval = 30\n'
            '[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "error_rate"\n'
            'max = 0.02\n[rollout]\nname = "web"\nstate_dir = "state"\n'
        )
        path = state / "web.json"
        if kind == "bad bytes":
            path.write_bytes(b'{"version": 2}\xff')
        elif kind == "deep nesting":
            path.write_text("[" * 100_000)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            (folder / "secret").write_text('{"db_password": "hunter2"}')
            path.symlink_to(folder / "secret")
        try:
            code, text = canarykit_cli("status", str(folder / "p.toml"), timeout=15)
        except subprocess.TimeoutExpired:
            unsafe = True
            outcomes.append(f"{kind}: hung")
            continue
        clear = code in (1, 2) and "Traceback" not in text and "hunter2" not in text
        unsafe |= not clear
        outcomes.append(f"{kind}: exit {code}")
    return {"unsafe": unsafe, "detail": "; ".join(outcomes)}


# ----------------------------------------------------------- 3. one runner per router


@case
def two_runners_one_router(tmp: Path) -> dict[str, Any]:
    """Two state directories and two names on one nginx include file: one runner only."""
    import anyio

    import canarykit as ck
    from canarykit.routers import NginxRouter
    from canarykit.testing import FakeRouter

    os.environ["CANARYKIT_LOCK_DIR"] = str(tmp / "locks")

    def nginx(folder: Path) -> Any:
        return NginxRouter(
            include_path=tmp / "nginx" / "canary.conf",
            main_config=tmp / "nginx" / "nginx.conf",
            pid_file=tmp / "nginx" / "nginx.pid",
            stable=["127.0.0.1:9001"],
            canary=["127.0.0.1:9002"],
        )

    first_router, second_router = nginx(tmp / "a"), nginx(tmp / "b")
    same = first_router.traffic_target == second_router.traffic_target

    class Sharing(FakeRouter):
        traffic_target = first_router.traffic_target

    shared = Sharing()
    second_applied: list[Any] = []

    class Second(Sharing):
        async def apply(self, split: Any) -> Any:
            second_applied.append(split)
            return await shared.apply(split)

    async def both() -> str:
        first = ck.Rollout(
            ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion()]),
            router=shared,
            store=ck.stores.FileStore(tmp / "a" / "state"),
            key="web",
        )
        second = ck.Rollout(
            ck.Plan(steps=[ck.SetWeight(50)]),
            router=Second(),
            store=ck.stores.FileStore(tmp / "b" / "state"),
            key="shop",
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            while shared.current.canary_percent != 10:
                await anyio.sleep(0.01)
            try:
                await second.run()
                answer = "the second runner ran"
            except ck.LeaseHeldError as exc:
                answer = str(exc)
            first.abort("done")
        return answer

    answer = anyio.run(both)
    return {
        "unsafe": not same or bool(second_applied),
        "detail": f"same target={same}; second: {answer[:140]}",
    }


@case
def one_policy_two_working_directories(tmp: Path) -> dict[str, Any]:
    """The same policy loaded from two working directories is one rollout, one state dir."""
    import canarykit as ck

    policy = tmp / "p.toml"
    policy.write_text(
        '[plan]\nshape = "weights"\nweights = [10]\nhold = 60\nanalysis_interval = 30\n'
        '[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "error_rate"\nmax = 0.02\n'
        '[rollout]\nname = "web"\n'
        '[router]\nkind = "nginx"\ninclude_path = "canary.conf"\nmain_config = "nginx.conf"\n'
        'pid_file = "nginx.pid"\nstable = ["127.0.0.1:9001"]\ncanary = ["127.0.0.1:9002"]\n'
    )
    seen = []
    for cwd in (tmp, Path("/")):
        previous = os.getcwd()
        os.chdir(cwd)
        try:
            deployment = ck.policy.load_policy(policy).deployment
            seen.append((str(deployment.state_dir), deployment.build_router().traffic_target))
        finally:
            os.chdir(previous)
    return {"unsafe": seen[0] != seen[1], "detail": f"{seen[0]} / {seen[1]}"}


# --------------------------------------------------------------------- 4. regexes


@case
def regex_denial_of_service(tmp: Path) -> dict[str, Any]:
    """``(a+)+$`` and other patterns outside RE2: refused by the API and by ``render``; the
    worst pattern still allowed costs milliseconds in the in-process router."""
    import canarykit as ck
    from canarykit.routers import WeightedRouter

    refused_api = 0
    for pattern in ("(a+)+$", "(a)\\1", "(?=a)a", "(a*)*b", "(?<!x)a"):
        try:
            ck.HeaderRoute(header="X-User", value=pattern, match="regex")
        except ck.ConfigError:
            refused_api += 1
    refused_cli = 0
    for pattern in ("(a+)+$", "(a)\\1", "(?=a)a"):
        code, text = canarykit_cli(
            "render", "istio", "--host", "web", "--stable", "web-v1", "--canary", "web-v2",
            "--weight", "10", "--header", f"X-User={pattern}",
        )  # fmt: skip
        refused_cli += code != 0 and "Traceback" not in text
    slowest = 0.0
    for pattern in ("a*a*", "(a|aa)*c", ".*Chrome.*", "x*y*z", "(ab|cd)+e"):
        try:
            route = ck.HeaderRoute(header="X-User", value=pattern, match="regex")
            router = WeightedRouter(initial=ck.TrafficSplit(header_routes=[route]))
        except ck.ConfigError:
            continue
        for length in (24, 30, 200):
            started = time.perf_counter()
            router.pick({"X-User": "a" * length + "!"})
            slowest = max(slowest, time.perf_counter() - started)
    return {
        "unsafe": refused_api < 5 or refused_cli < 3 or slowest > 0.05,
        "detail": f"API refused {refused_api}/5, render refused {refused_cli}/3, "
        f"slowest pick {slowest * 1000:.2f} ms",
    }


@case
def route_nginx_cannot_apply(tmp: Path) -> dict[str, Any]:
    """A TOML header route ``regex = 'a"b'`` with nginx: refused at load, no traffic moved;
    a router's ConfigError is never retried."""
    import anyio

    import canarykit as ck
    from canarykit.testing import FakeRouter

    (tmp / "p.toml").write_text(
        '[plan]\nshape = "steps"\nanalysis_interval = "30s"\n'
        "[[plan.steps]]\nset_weight = 10\n"
        '[[plan.steps]]\nheader_route = {header = "X-User", regex = \'a"b\'}\n'
        "[[plan.steps]]\nset_weight = 50\n"
        '[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "error_rate"\nmax = 0.02\n'
        '[rollout]\nname = "web"\n'
        '[router]\nkind = "nginx"\ninclude_path = "canary.conf"\nmain_config = "nginx.conf"\n'
        'pid_file = "nginx.pid"\nstable = ["127.0.0.1:9001"]\ncanary = ["127.0.0.1:9002"]\n'
        '[metrics]\nkind = "prometheus"\nurl = "http://127.0.0.1:9"\nstable = "v1"\n'
        'canary = "v2"\n'
    )
    code, _ = canarykit_cli("run", str(tmp / "p.toml"), "--no-status")
    moved = (tmp / "canary.conf").exists()

    class Refusing(FakeRouter):
        applies = 0

        async def apply(self, split: Any) -> Any:
            if split.canary_percent > 0:
                Refusing.applies += 1
                raise ck.ConfigError("split", split.canary_percent, "never possible here")
            return await super().apply(split)

    router = Refusing()
    rollout = ck.Rollout(ck.Plan(steps=[ck.SetWeight(10)]), router=router)
    with contextlib.suppress(ck.ConfigError):  # run() raises it, after rolling back
        anyio.run(rollout.run)
    stable = router.current.is_stable_only
    return {
        "unsafe": code != 2 or moved or Refusing.applies != 1 or not stable,
        "detail": f"run exit {code}, include written={moved}; "
        f"ConfigError applies {Refusing.applies}, {rollout.phase.value}, stable={stable}",
    }


# ---------------------------------------------------------------------- 5. secrets


@case
def secrets_echoed_back(tmp: Path) -> dict[str, Any]:
    """A token echoed by a webhook after a long prefix (cut by the excerpt), a basic-auth
    password with backslashes echoed in a Prometheus error: neither shown anywhere."""
    import anyio

    import canarykit as ck
    from canarykit.metrics import BasicAuth, PrometheusSource
    from helpers import http_hostile as hh

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.DEBUG)
    texts: list[str] = []

    def echo(status: int, prefix: int) -> Any:
        def respond(request: dict[str, Any], send: Callable[..., bool]) -> None:
            said = json.dumps({k: v for k, v in request["headers"].items()})
            body = ("x" * prefix + said + request["target"]).encode()
            send(hh.status_line(status, headers=[("Content-Length", str(len(body)).encode())]))
            send(body)

        return respond

    call = a_call(ck.machine.HookPoint.ROLLBACK)
    for prefix in (0, 150, 190, 4070):
        with hh.HostileServer(echo(500, prefix), path=f"/hook/{SECRET}?key={SECRET}") as server:
            hook = ck.hooks.Webhook(
                server.url, attempts=1, headers={"Authorization": f"Bearer {SECRET}"}
            )
            answer = anyio.run(hook, call)
            texts += [answer.reason, repr(hook)]
        with hh.HostileServer(echo(400, prefix)) as server:
            source = PrometheusSource(
                url=server.url.rstrip("/"),
                stable="v1",
                canary="v2",
                attempts=1,
                auth=BasicAuth(username="grafana", password=PASSWORD),
            )
            try:
                anyio.run(source.collect, a_window())
            except ck.MetricsError as exc:
                texts.append(f"{exc!r} {exc}")
            texts.append(repr(source))
    import base64

    basic = base64.b64encode(f"grafana:{PASSWORD}".encode()).decode()
    leaks = sum(leaks_in(text, SECRET, PASSWORD, basic) for text in texts + records)
    return {"unsafe": leaks > 0, "secret_leaks": leaks, "detail": f"{len(texts)} texts checked"}


# --------------------------------------------------------------------- 6. free text


@case
def forged_and_huge_reasons(tmp: Path) -> dict[str, Any]:
    """A pause reason with a line break and ESC, and one of 20 MB: one escaped line in the
    run output and in status; a small state file."""
    from canarykit._cli._control import CommandInbox
    from canarykit._cli._run import execute
    from canarykit.testing import FakeRouter

    state = tmp / "state"
    inbox = CommandInbox(state, "web")
    inbox.prepare()
    router = FakeRouter()
    forged = "looking\n14:35:00  succeeded      100%  phase: promoted\x1b[2J"
    huge = "h" * (20 * 1024 * 1024)

    def operator() -> None:
        deadline = time.monotonic() + 20
        while router.current.canary_percent != 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        inbox.wait(inbox.send("pause", reason=forged), 10)
        inbox.wait(inbox.send("resume"), 10)
        inbox.wait(inbox.send("pause", reason=huge[: 60 * 1024]), 10)
        inbox.wait(inbox.send("abort", reason="done"), 10)

    thread = threading.Thread(target=operator)
    thread.start()
    lines = io.StringIO()
    rollout = fake_rollout(state, router)
    execute(rollout, out=lines, lines=lines, inbox=inbox)
    thread.join()
    output = lines.getvalue()
    forged_line = any(line.startswith("14:35:00  succeeded") for line in output.splitlines())
    raw_controls = "\x1b" in output
    # The Python API takes a 20 MB reason too: the machine keeps MAX_TEXT of it.
    import anyio

    state2 = tmp / "state2"
    api = fake_rollout(state2, FakeRouter())

    async def pause_huge() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(api.run)
            while api.router.current.canary_percent != 20:
                await anyio.sleep(0.01)
            api.pause(huge)
            await anyio.sleep(0.2)
            api.abort("done")

    anyio.run(pause_huge)
    size = (state2 / "web.json").stat().st_size
    status_code, status_text = canarykit_cli_status(state, forged)
    return {
        "unsafe": forged_line or raw_controls or size > 100_000 or "\x1b" in status_text,
        "detail": f"forged line={forged_line}, raw ESC={raw_controls}, state file {size} B, "
        f"status exit {status_code}",
        "state_bytes_after_20mb_reason": size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def canarykit_cli_status(state: Path, reason: str) -> tuple[int, str]:
    policy = state.parent / "p.toml"
    policy.write_text(
        '[plan]\nshape = "weights"\nweights = [10]\nhold = 60\nanalysis_interval = 30\n'
        '[decider]\nkind = "threshold"\n[[decider.metrics]]\nmetric = "error_rate"\nmax = 0.02\n'
        f'[rollout]\nname = "web"\nstate_dir = "{state.name}"\n'
    )
    return canarykit_cli("status", str(policy))


# ---------------------------------------------------------------- 7. huge answers


@case
def huge_responses(tmp: Path) -> dict[str, Any]:
    """300 MB answers (200 and 500) from a webhook hook, a notifier and Prometheus."""
    import anyio

    import canarykit as ck
    from canarykit.metrics import PrometheusSource
    from canarykit.notify import WebhookNotifier
    from helpers import http_hostile as hh

    def rss_mb() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    before = rss_mb()
    call = a_call(ck.machine.HookPoint.ROLLBACK)
    outcomes = []
    for status in (200, 500):
        with hh.HostileServer(hh.huge(status, 300 * 1024 * 1024)) as server:
            answer = anyio.run(ck.hooks.Webhook(server.url, attempts=1, timeout=20), call)
            outcomes.append(f"webhook {status}: {answer.yes}")

            async def notify(url: str = server.url) -> Any:
                async with WebhookNotifier(url, attempts=1, timeout=20) as notifier:
                    notifier(a_notice())
                return notifier.stats

            outcomes.append(f"notifier {status}: {anyio.run(notify)}")
            source = PrometheusSource(
                url=server.url.rstrip("/"), stable="v1", canary="v2", attempts=1, timeout=20
            )
            try:
                anyio.run(source.collect, a_window())
                outcomes.append(f"prometheus {status}: answered")
            except ck.MetricsError as exc:
                outcomes.append(f"prometheus {status}: {str(exc)[:60]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "unsafe": peak >= 100,
        "peak_rss_mb": peak,
        "detail": f"RSS {before:.0f} MB before, peak {peak:.0f} MB; " + "; ".join(outcomes),
    }


# ------------------------------------------------------------------ 8. router files


@case
def include_file_linked_to_secrets(tmp: Path) -> dict[str, Any]:
    """The nginx include path a symlink to a file of secrets: refused, never quoted."""
    import anyio

    from canarykit.routers import NginxRouter

    secrets = tmp / "secrets.env"
    secrets.write_text("db_password=hunter2-Do-Not-Show\n")
    (tmp / "canary.conf").symlink_to(secrets)
    router = NginxRouter(
        include_path=tmp / "canary.conf",
        main_config=tmp / "nginx.conf",
        pid_file=tmp / "nginx.pid",
        stable=["127.0.0.1:9001"],
        canary=["127.0.0.1:9002"],
    )
    try:
        anyio.run(router.read)
        text = "read succeeded"
    except Exception as exc:
        text = f"{exc!r} {exc}"
    return {
        "unsafe": "hunter2" in text or "db_password" in text,
        "detail": text[:160],
    }


# --------------------------------------------------------------------------- driver


def run_child(name: str) -> None:
    logging.disable(logging.NOTSET)
    with tempfile.TemporaryDirectory(prefix=f"ck-hostile-{name}-") as folder:
        result = CASES[name](Path(folder))
    result = {key: value for key, value in result.items() if not key.startswith("_")}
    print(json.dumps(result, default=str))


def run_case(name: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--case", name],
            capture_output=True,
            text=True,
            timeout=CASE_TIME_LIMIT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"unsafe": True, "detail": f"hung past {CASE_TIME_LIMIT:.0f}s"}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"unsafe": True, "detail": f"crashed (exit {done.returncode}): {tail}"}
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    args = parser.parse_args()
    if args.case:
        run_child(args.case)
        return
    started = time.monotonic()
    results = {}
    for name in CASES:
        results[name] = run_case(name)
        mark = "UNSAFE" if results[name]["unsafe"] else "safe  "
        print(f"{mark} {name}: {results[name].get('detail', '')}", flush=True)
    waits = [r.get("wait_past_timeout_s", 0.0) for r in results.values()]
    summary = {
        "attacks_tried": len(results),
        "attacks_unsafe": sum(bool(r["unsafe"]) for r in results.values()),
        "unsafe": sorted(name for name, r in results.items() if r["unsafe"]),
        "max_wait_past_timeout_s": round(max(waits), 3),
        "peak_rss_mb_huge_responses": round(results["huge_responses"].get("peak_rss_mb", 0), 1),
        "secret_leaks": results["secrets_echoed_back"].get("secret_leaks", -1),
        "state_bytes_after_20mb_reason": results["forged_and_huge_reasons"].get(
            "state_bytes_after_20mb_reason"
        ),
        "targets": {
            "attacks_tried": ">= 12",
            "attacks_unsafe": 0,
            "max_wait_past_timeout_s": "< 1",
            "peak_rss_mb_huge_responses": "< 100",
            "secret_leaks": 0,
        },
        "seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
