"""FanOutRouter over three real nginx and two real HAProxy instances, one failing mid-apply.

The lab, the flaky members and the trial are benchmarks/fanout.py's, so that what the
benchmark counts is what these tests pin. After every apply each server is read by its
own fresh router, and all five must report the fan-out's `confirmed` split.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from canarykit import RouterError, TrafficSplit
from canarykit.routers import FanOutRouter

pytestmark = pytest.mark.anyio

_path = Path(__file__).parents[2] / "benchmarks" / "fanout.py"
_spec = importlib.util.spec_from_file_location("fanout_benchmark", _path)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["fanout_benchmark"] = bench
_spec.loader.exec_module(bench)

TEN = TrafficSplit(canary_percent=10)
FIFTY = TrafficSplit(canary_percent=50)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, nginx_binary, haproxy_binary):
    with ExitStack() as stack:
        yield bench.Lab(tmp_path_factory.mktemp("fanout"), stack)


@pytest.fixture
async def fan(lab):
    """A fresh fan-out over the lab's members, every member at 10% to start."""
    lab.disarm()
    lab.fan = FanOutRouter(lab.members)
    for member in lab.members:
        await member.apply(TEN)
    await lab.fan.apply(TEN)
    return lab.fan


FAULTS = [("nginx", fault) for fault in bench.NGINX_FAULTS] + [
    ("haproxy", (line, after)) for line in (1, 2, 3) for after in (False, True)
]


@pytest.mark.parametrize(("kind", "fault"), FAULTS, ids=str)
async def test_a_member_failing_at_any_point_leaves_all_five_on_the_last_common_split(
    lab, fan, kind, fault
):
    if kind == "nginx":
        lab.flaky_nginx[1].fault = fault
    else:
        line, after = fault
        lab.flaky_haproxy[1].arm(line, after=after)
    with pytest.raises(RouterError, match=r"1 of 5 routers failed .*injected fault"):
        await fan.apply(FIFTY)
    assert await lab.end_state() == [TEN] * 5
    assert fan.confirmed == TEN
    assert await fan.read() == TEN
    # The runner's retry then moves all five.
    await fan.apply(FIFTY)
    assert await lab.end_state() == [FIFTY] * 5


async def test_random_faults_never_leave_the_members_apart(lab, fan):
    rng = random.Random(7)
    outcomes = [await bench.trial(lab, rng) for _ in range(12)]
    assert all(outcome["failed"] for outcome in outcomes)  # every armed fault fires
    assert [outcome for outcome in outcomes if not outcome["consistent"]] == []


async def test_the_consistency_check_catches_a_fan_out_that_does_not_put_back(lab, fan):
    class NoPutBack(FanOutRouter):
        async def _put_back(self):
            return {}

    lab.fan = NoPutBack(lab.members)

    class Pick:
        """A trial's rng picking 50%, the first nginx, and a fault in its validate."""

        def choice(self, options):
            for wanted in (50.0, "validate"):
                if wanted in options:
                    return wanted
            return options[0]

    outcome = await bench.trial(lab, Pick())
    assert outcome["failed"] and not outcome["consistent"]
    assert outcome["seen"] == [TEN, FIFTY, FIFTY, FIFTY, FIFTY]
