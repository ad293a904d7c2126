"""``canarykit run`` for real: a policy file drives nginx and reads Prometheus, with real load.

The command runs in its own process, as a deploy tool would start it, while the test sends
traffic through nginx: a healthy v2 is promoted (exit 0), a failing one rolled back (exit
3), Ctrl-C rolls back (exit 130), a killed run is continued by the next, and on a
terminal a status line is redrawn below the event lines.
"""

import fcntl
import functools
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading

import anyio
import pytest

import canarykit as ck
from canarykit.testing import CanaryLab

pytestmark = pytest.mark.anyio

POLICY = """
[rollout]
name = "web"
state_dir = "{state}"
call_timeout = "5s"
rollback_timeout = "20s"

{plan}

[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = "2%"
[[decider.metrics]]
metric = "p99"
max = "100ms"

[router]
kind = "nginx"
include_path = "{router.include_path}"
main_config = "{router.main_config}"
pid_file = "{router.pid_file}"
prefix = "{router.prefix}"
stable = {stable}
canary = {canary}

[metrics]
kind = "prometheus"
url = "{prometheus}"
stable = "v1"
canary = "v2"
settle = 1
"""
TIMEOUT = 120.0  # seconds a run of the command may take before the test kills it


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, nginx_binary, prometheus_binary):
    with CanaryLab(tmp_path_factory.mktemp("lab"), proxy="nginx") as lab:
        yield lab


@pytest.fixture
async def policy(lab, tmp_path):
    await lab.reset()
    return write_policy(lab, tmp_path)


PLAN = """
[plan]
shape = "weights"
weights = [10, 50]
hold = "{hold}"
final_bake = "6s"
analysis_interval = "3s"
"""
# Held at 10% until an operator promotes it.
PLAN_WAITING = """
[plan]
shape = "steps"
analysis_interval = "3s"
[[plan.steps]]
set_weight = 10
[[plan.steps]]
wait_for_promotion = true
[[plan.steps]]
set_weight = 50
[[plan.steps]]
pause = "3s"
"""


def write_policy(lab, directory, *, hold="6s", plan=None):
    router = lab.router
    text = POLICY.format(
        state=directory / "state",
        plan=PLAN.format(hold=hold) if plan is None else plan,
        router=router,
        stable=f'["{lab.stable.address}"]',
        canary=f'["{lab.canary.address}"]',
        prometheus=lab.prometheus.url,
    )
    path = directory / "web.toml"
    path.write_text(text)
    return path


class Run:
    """What one run of the command printed, and how it exited."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_command(policy, *, signal_at=None, signal_number=signal.SIGINT, tty=False):
    """Run ``canarykit run POLICY``; send a signal once a stdout line contains `signal_at`."""
    master = slave = None
    if tty:
        master, slave = pty.openpty()
        # A terminal 200 columns wide (a bare pty says 0 x 0).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    with subprocess.Popen(
        [sys.executable, "-m", "canarykit", "run", str(policy)],
        stdout=subprocess.PIPE,
        stderr=slave if tty else subprocess.PIPE,
        text=True,
    ) as process:
        if slave is not None:
            os.close(slave)
        watchdog = threading.Timer(TIMEOUT, process.kill)
        watchdog.start()
        err: list[str] = []

        def read_err():
            if master is None:
                err.append(process.stderr.read())
                return
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the command closed the terminal
                    return
                if not chunk:
                    return
                err.append(chunk.decode(errors="replace"))

        reader = threading.Thread(target=read_err)
        reader.start()
        out = []
        for line in process.stdout:
            out.append(line)
            if signal_at is not None and signal_at in line:
                process.send_signal(signal_number)
                signal_at = None
        code = process.wait()
        watchdog.cancel()
        reader.join(10)
    if master is not None:
        os.close(master)
    return Run(code, "".join(out), "".join(err))


async def run_with_load(lab, policy, **options):
    """`run_command` in a thread while real traffic goes through nginx."""
    load = lab.load(rate=100)
    async with anyio.create_task_group() as group:
        group.start_soon(load.run)
        run = await anyio.to_thread.run_sync(functools.partial(run_command, policy, **options))
        load.stop()
    return run


async def test_a_healthy_canary_is_promoted_with_one_plain_line_per_event(lab, policy):
    run = await run_with_load(lab, policy)

    assert run.code == 0, run
    assert await lab.router.read() == ck.TrafficSplit(canary_percent=100)
    lines = run.out.splitlines()
    assert lines[0].startswith("rollout   web (policy ")
    assert any(" 10%  split" in line for line in lines), run
    assert any("verdict: pass" in line for line in lines), run
    assert lines[-2].startswith("outcome   promoted"), run
    # Not a terminal: plain lines, no status line and no terminal control characters.
    assert "\r" not in run.out + run.err and "\x1b" not in run.out + run.err


async def test_a_failing_canary_is_rolled_back_and_the_command_exits_3(lab, policy):
    await anyio.to_thread.run_sync(functools.partial(lab.canary.set_fault, error_rate=0.2))
    run = await run_with_load(lab, policy)

    assert run.code == 3, run
    assert (await lab.router.read()).is_stable_only
    assert "outcome   rolled back" in run.out, run


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_rolls_traffic_back_and_the_command_exits_130(lab, policy, signal_number):
    run = await run_with_load(lab, policy, signal_at=" 10%  split", signal_number=signal_number)

    assert run.code == 130, run
    assert (await lab.router.read()).is_stable_only
    name = signal.Signals(signal_number).name
    assert f"{name}: rolling traffic back to stable" in run.out, run
    assert f"outcome   aborted ({name})" in run.out, run


async def test_a_killed_run_is_continued_by_the_next_one(lab, tmp_path):
    await lab.reset()
    policy = write_policy(lab, tmp_path, hold="8s")
    killed = await run_with_load(lab, policy, signal_at=" 10%  split", signal_number=signal.SIGKILL)
    assert killed.code == -signal.SIGKILL, killed
    assert (await lab.router.read()).canary_percent == 10  # left as it was: nobody watches

    run = await run_with_load(lab, policy)
    assert run.code == 0, run
    # Killed just after the 10% was confirmed: whether the confirmation was saved (step 2,
    # saved 10%) or not yet (step 1, saved 0%), the router's 10% is taken as done.
    resumed = r"resume: resumed progressing at step (1; saved canary 0|2; saved canary 10)%"
    assert re.search(resumed + ", router reports 10%", run.out), run
    assert await lab.router.read() == ck.TrafficSplit(canary_percent=100)


async def test_on_a_terminal_a_status_line_is_redrawn_below_the_events(lab, policy):
    run = await run_with_load(lab, policy, tty=True)

    assert run.code == 0, run
    # Redrawn in place: carriage return, erase the line, the status text.
    assert "\r\x1b[Kweb | progressing | step 4/6 pause 6s | canary 50% | " in run.err, run
    assert "left in the step" in run.err and "running 0:" in run.err
    assert run.err.endswith("\r\x1b[K")  # erased at the end: only the event lines stay
    assert "\x1b" not in run.out  # stdout is not the terminal: plain lines


def command(*argv):
    """Run a ``canarykit`` command to completion: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "canarykit", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


async def test_an_operator_promotes_from_another_process_and_sees_the_status(lab, tmp_path):
    await lab.reset()
    policy = write_policy(lab, tmp_path, plan=PLAN_WAITING)
    seen = {}

    async def operator():
        # Once the rollout waits at 10%, look at it, then promote it, as a person would.
        while (await lab.router.read()).canary_percent != 10:
            await anyio.sleep(0.2)
        await anyio.sleep(4)  # a window or so at 10%
        seen["status"] = await anyio.to_thread.run_sync(command, "status", policy)
        seen["promote"] = await anyio.to_thread.run_sync(command, "promote", policy)

    async with anyio.create_task_group() as group:
        group.start_soon(operator)
        run = await run_with_load(lab, policy)

    assert run.code == 0, run
    assert await lab.router.read() == ck.TrafficSplit(canary_percent=100)
    code, out, _ = seen["status"]
    assert code == 0 and "phase     paused at step 2/4; canary 10%" in out, out
    assert "reason    waiting for promotion" in out
    assert "lease     held by " in out
    code, out, _ = seen["promote"]
    assert code == 0 and out == "promote: accepted: the rollout is progressing\n", out
    assert "command: promote" in run.out, run
    assert any(" 50%  split: canary 50%" in line for line in run.out.splitlines()), run
    code, out, _ = command("status", policy)
    assert code == 0 and "phase     succeeded" in out and "lease     released by " in out
