"""Release after release, for real: three releases in a row with each handover model.

Real nginx or HAProxy in front of two app slots (real processes), Prometheus scraping
them, real requests through the proxy. The second release is bad (it fails 30% of its
requests) and must be rolled back; the first and third are promoted and handed over, so
that the next release starts from stable. From outside, counting which slot answered each
request, the canary's share at every confirmed split must be the one canarykit claimed.
The releases share one state directory and key, as runs of one policy file do; running
the last release again afterwards moves nothing.
"""

import pytest

import canarykit as ck
from canarykit.deciders import bound, threshold
from canarykit.testing import ReleaseLab

pytestmark = pytest.mark.anyio

# Windows of three scrape intervals; the canary at 20% then 50%, 3 s each.
PLAN = ck.from_weights([20, 50], hold=3, analysis_interval=3)
DECIDER = threshold(bound("error_rate", max=0.02))
RELEASES = [("r2", "v2", False), ("r3", "v3", True), ("r4", "v4", False)]
# nginx's smooth weighted round-robin and HAProxy's weights split requests in exact
# proportion; 8 points leave room for requests in flight at a change, never for a
# split that is not the one claimed (the nearest other split is 30 points away).
TOLERANCE = 8.0


@pytest.fixture(
    params=[
        ("nginx", "upgrade-stable", "asyncio"),
        ("haproxy", "upgrade-stable", "trio"),
        ("nginx", "slots", "trio"),
        ("haproxy", "slots", "asyncio"),
    ],
    ids=lambda p: "-".join(p[:2]),
)
def setup(request, prometheus_binary):
    request.getfixturevalue(f"{request.param[0]}_binary")
    return request.param


@pytest.fixture
def anyio_backend(setup):
    return setup[2]


async def test_three_releases_in_a_row_with_a_bad_one_rolled_back(setup, tmp_path):
    proxy, model, _ = setup
    with ReleaseLab(tmp_path, proxy=proxy, model=model) as lab:
        async with lab.traffic():
            results = [
                await lab.release(release, version, PLAN, DECIDER, bad=bad)
                for release, version, bad in RELEASES
            ]
            # The last release again (one policy, the same release id): nothing moves.
            confirmed = len(lab.confirmations)
            with pytest.raises(ck.ReleaseFinishedError):
                await lab.release("r4", "v4", PLAN, DECIDER)
            assert len(lab.confirmations) == confirmed
            assert (await lab.router.read()) == ck.TrafficSplit(canary_percent=0)
    good, bad, last = results
    assert good.outcome.phase is ck.Phase.SUCCEEDED, good.outcome.reason
    assert bad.outcome.phase is ck.Phase.ROLLED_BACK, bad.outcome.reason
    assert last.outcome.phase is ck.Phase.SUCCEEDED, last.outcome.reason
    # Each release started from stable and ended with stable serving the newest good one.
    assert [r.stable_after for r in results] == ["v2", "v2", "v4"]
    for result in results:
        assert result.shares, f"{result.release}: no split lasted long enough to count"
        for share in result.shares:
            assert share.error <= TOLERANCE, (result.release, share)
    # The bad release is judged on its first window and rolled back right after it.
    assert bad.rollback_s is not None and bad.rollback_s < 5.0
    # After each promotion canarykit moved traffic back to stable (or swapped slots):
    # the last confirmed split of a good release is all on stable.
    assert good.shares[-1].claimed == 0.0 and good.shares[-1].counted == 0.0
    assert last.shares[-1].claimed == 0.0 and last.shares[-1].counted == 0.0
