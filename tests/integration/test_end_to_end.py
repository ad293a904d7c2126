"""A canary end to end, for real: nginx or HAProxy in front of two app versions, Prometheus
scraping them, real traffic through the proxy, and canarykit driving the rollout.

A healthy v2 must end promoted with the proxy sending everything to v2; a v2 that fails 5%
of its requests, or answers 200 ms slower, must end rolled back with traffic really back
on v1 (the requests sent after the rollout ended all reached v1).
"""

import pytest

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import CanaryLab, Fault

pytestmark = pytest.mark.anyio

# Windows of three scrape intervals; two windows per step; a final bake at 100%.
PLAN = ck.from_weights([10, 50], hold=6, final_bake=6, analysis_interval=3)
# The demo app never fails and answers in a few ms when healthy.
DECIDER = threshold(bound("error_rate", max=0.02), bound("p99", max=0.1))
RATE = 120.0


# One lab per proxy, shared by its scenarios; each proxy's runs use one event loop backend
# (a router is used from one loop), nginx's asyncio and HAProxy's trio, so both are covered.
@pytest.fixture(
    scope="module", params=[("nginx", "asyncio"), ("haproxy", "trio")], ids=lambda p: "-".join(p)
)
def setup(request):
    return request.param


@pytest.fixture(scope="module")
def anyio_backend(setup):
    return setup[1]


@pytest.fixture(scope="module")
def lab(setup, tmp_path_factory, prometheus_binary, request):
    proxy = setup[0]
    request.getfixturevalue(f"{proxy}_binary")
    with CanaryLab(tmp_path_factory.mktemp(proxy), proxy=proxy) as lab:
        yield lab


async def test_healthy_canary_is_promoted_and_serves_everything(lab):
    report = await lab.rehearse(PLAN, DECIDER, rate=RATE)

    assert report.outcome.phase is ck.Phase.SUCCEEDED, report.outcome.reason
    assert report.read_back == ck.TrafficSplit(canary_percent=100)
    assert report.served_after_end.get("v2", 0) > 0
    assert set(report.served_after_end) == {"v2"}, report.served_after_end
    assert report.bad_requests == 0


@pytest.mark.parametrize(
    "fault",
    [Fault(error_rate=0.05), Fault(extra_latency=0.2)],
    ids=["5%-errors", "200ms-slower"],
)
async def test_faulty_canary_is_rolled_back_and_traffic_returns_to_v1(lab, fault):
    report = await lab.rehearse(PLAN, DECIDER, fault, rate=RATE)

    assert report.outcome.phase is ck.Phase.ROLLED_BACK, report.outcome.reason
    assert report.fault_at is not None
    assert report.read_back is not None and report.read_back.is_stable_only
    assert report.served_after_end.get("v1", 0) > 0
    assert set(report.served_after_end) == {"v1"}, report.served_after_end
    # The rollout reacted within a few windows of the fault, not at the end of the plan.
    assert report.seconds_to_rollback is not None and report.seconds_to_rollback < 12
