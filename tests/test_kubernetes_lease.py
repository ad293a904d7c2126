"""KubernetesLease: a coordination.k8s.io/v1 Lease, held as client-go's leader election holds it.

No API server runs here: `k8s_fake_apiserver.FakeKubeAPI` serves the built-in Lease with
resourceVersions and 409 Conflict on a stale write, as the API server does, and the real
lightkube client talks to it. Every test runs on asyncio and trio.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import canarykit as ck
from canarykit.routers import KubernetesConnection
from canarykit.stores import KubernetesLease
from canarykit.testing import FakeRouter, VirtualClock
from helpers.k8s_fake_apiserver import FakeKubeAPI

pytestmark = pytest.mark.anyio

NAMESPACE = "deploy"
PROMOTED_BY_HAND = ck.Plan(
    steps=[ck.SetWeight(10), ck.WaitForPromotion(), ck.SetWeight(50), ck.WaitForPromotion()]
)


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(forbidden={"locked": {"update"}}) as server:
        yield server


@pytest.fixture
def connection(api: FakeKubeAPI, tmp_path: Path) -> KubernetesConnection:
    # trust_env=False: a developer's HTTP(S)_PROXY must not take 127.0.0.1 elsewhere.
    return KubernetesConnection(kubeconfig=api.kubeconfig(tmp_path / "config"), trust_env=False)


def lease(connection: KubernetesConnection, holder: str, **options: Any) -> KubernetesLease:
    return KubernetesLease(
        options.pop("namespace", NAMESPACE),
        "web",
        holder=holder,
        connection=connection,
        **options,
    )


def stored(api: FakeKubeAPI, namespace: str = NAMESPACE) -> dict[str, Any]:
    found = api.get("Lease", namespace, "web")
    assert found is not None
    return found


def age(api: FakeKubeAPI, seconds: float = 3600) -> None:
    """Someone's holding stopped being renewed `seconds` ago: its renewTime moves back."""

    def back(obj: dict[str, Any]) -> None:
        renewed = datetime.datetime.fromisoformat(obj["spec"]["renewTime"].replace("Z", "+00:00"))
        earlier = renewed - datetime.timedelta(seconds=seconds)
        obj["spec"]["renewTime"] = earlier.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    api.edit("Lease", NAMESPACE, "web", back)


def label(api: FakeKubeAPI) -> None:
    """Someone else writes the Lease without touching the holding (a label)."""

    def add(obj: dict[str, Any]) -> None:
        labels = obj["metadata"].setdefault("labels", {})
        labels["edits"] = str(int(labels.get("edits", "0")) + 1)

    api.edit("Lease", NAMESPACE, "web", add)


def conflicts(api: FakeKubeAPI) -> int:
    return sum(1 for request in api.requests if request.code == 409)


# ------------------------------------------------------------------------ the holding


async def test_acquire_creates_a_client_go_lease_a_second_holder_is_refused_and_release_frees_it(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    first = lease(connection, "deploy-1", ttl=2.5)
    second = lease(connection, "deploy-2")
    assert first.token is None and not first.held
    await first.acquire()
    spec = stored(api)["spec"]
    assert spec["holderIdentity"] == "deploy-1"
    assert spec["leaseDurationSeconds"] == 3  # the TTL rounded up to whole seconds
    assert spec["leaseTransitions"] == 0 == first.token
    assert spec["acquireTime"] == spec["renewTime"]
    assert await first.check() == 0

    with pytest.raises(ck.LeaseHeldError, match=r"held by deploy-1 \(it expires in 3 s"):
        await second.acquire()

    version = stored(api)["metadata"]["resourceVersion"]
    await first.renew()
    renewed = stored(api)
    assert renewed["metadata"]["resourceVersion"] != version
    assert renewed["spec"]["renewTime"] > spec["renewTime"]
    assert renewed["spec"]["acquireTime"] == spec["acquireTime"]
    assert renewed["spec"]["leaseTransitions"] == 0  # a renewal is the same holding

    await first.release()
    released = stored(api)["spec"]
    assert "holderIdentity" not in released and released["leaseTransitions"] == 0
    assert first.token is None
    await second.acquire()  # free now, without waiting out the TTL
    assert second.token == 1 and stored(api)["spec"]["holderIdentity"] == "deploy-2"
    await second.release()


async def test_an_expired_lease_is_taken_over_with_a_larger_token_and_the_stale_holders_lose_it(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    a, b, c, d = (lease(connection, f"runner-{name}") for name in "abcd")
    await a.acquire()
    age(api)  # runner-a stopped renewing (frozen, partitioned) an hour ago
    await b.acquire()
    assert b.token == 1 and stored(api)["spec"]["holderIdentity"] == "runner-b"
    with pytest.raises(ck.LeaseLostError, match=r"taken over by runner-b \(leaseTransitions 1"):
        await a.check()
    assert not a.held

    age(api)
    await c.acquire()
    assert c.token == 2
    with pytest.raises(ck.LeaseLostError, match="taken over by runner-c"):
        await b.renew()

    age(api)
    await d.acquire()
    assert d.token == 3
    await c.release()  # c has not noticed: its release must not free d's holding
    assert stored(api)["spec"]["holderIdentity"] == "runner-d"
    assert await d.check() == 3
    await d.release()


async def test_a_holding_that_ran_out_fails_its_check_even_before_anyone_takes_it(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    holder = lease(connection, "runner-a")
    await holder.acquire()
    age(api)
    with pytest.raises(ck.LeaseLostError, match="ran out"):
        await holder.check()


async def test_a_lease_deleted_and_created_again_is_not_taken_for_ours(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    holder = lease(connection, "runner-a")
    await holder.acquire()
    found = stored(api)
    api.delete("Lease", NAMESPACE, "web")  # kubectl delete lease; the same holder creates it anew
    again = lease(connection, "runner-a")
    await again.acquire()
    assert again.token == holder.token == 0  # the counter started over ...
    assert stored(api)["metadata"]["uid"] != found["metadata"]["uid"]
    with pytest.raises(ck.LeaseLostError, match="deleted and created again"):
        await holder.check()  # ... but the object is another one


async def test_a_runner_restarted_with_the_same_holder_id_takes_a_new_holding(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    before = lease(connection, "deploy-7")
    await before.acquire()
    after = lease(connection, "deploy-7")  # the process restarted: same id, holding unexpired
    await after.acquire()
    assert after.token == 1  # a new token, so the old process (if alive) is fenced off
    with pytest.raises(ck.LeaseLostError, match=r"taken over by deploy-7 \(leaseTransitions 1"):
        await before.check()
    await after.release()


async def test_a_lease_that_names_a_holder_but_no_times_is_free_to_take(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    api.put(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"holderIdentity": "hand-written", "leaseTransitions": 4},
        }
    )
    taker = lease(connection, "runner-a")
    await taker.acquire()
    assert taker.token == 5
    spec = stored(api)["spec"]
    assert spec["holderIdentity"] == "runner-a" and spec["leaseDurationSeconds"] == 15
    await taker.release()


# ------------------------------------------------------------------------ conflicts


async def test_a_takeover_race_lost_on_a_409_names_the_winner(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    await lease(connection, "old").acquire()
    age(api)

    def winner_takes_it(server: FakeKubeAPI) -> None:
        def take(obj: dict[str, Any]) -> None:
            obj["spec"]["holderIdentity"] = "winner"
            obj["spec"]["renewTime"] = datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            obj["spec"]["leaseTransitions"] += 1

        server.edit("Lease", NAMESPACE, "web", take)

    api.before_writes(winner_takes_it)  # between our read and our write
    loser = lease(connection, "loser")
    with pytest.raises(ck.LeaseHeldError, match="held by winner"):
        await loser.acquire()
    assert conflicts(api) == 1
    assert not loser.held and stored(api)["spec"]["holderIdentity"] == "winner"


async def test_a_write_of_someone_else_between_read_and_write_is_read_again_and_tried_once_more(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    await lease(connection, "old").acquire()
    age(api)
    api.before_writes(label)
    taker = lease(connection, "taker")
    await taker.acquire()
    assert conflicts(api) == 1 and taker.token == 1

    api.before_writes(label)
    await taker.renew()  # the label changed the resourceVersion, not the holding
    assert conflicts(api) == 2
    assert stored(api)["metadata"]["labels"] == {"edits": "2"}  # kept, not overwritten

    api.before_writes(label, times=2)  # twice in a row: a plain error, the runner retries
    with pytest.raises(ck.LeaseError, match="changed twice") as caught:
        await taker.renew()
    assert not isinstance(caught.value, ck.LeaseLostError)
    assert taker.held and await taker.check() == 1
    await taker.release()
    assert "holderIdentity" not in stored(api)["spec"]


async def test_an_api_error_on_renewal_is_a_plain_lease_error_not_a_lost_lease(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    holder = lease(connection, "runner-a", namespace="locked")  # update is forbidden there
    await holder.acquire()  # a create
    with pytest.raises(ck.LeaseError, match="403 Forbidden") as caught:
        await holder.renew()
    assert not isinstance(caught.value, ck.LeaseLostError)
    assert holder.held


# ------------------------------------------------------------------------ the runner


class FrozenRenewals(KubernetesLease):
    """Renewals that stop reaching the API server once `frozen` is set (a stopped process).

    The runner still sees each renewal succeed, so its own clock check passes: only the
    `check()` before an apply can tell it another runner holds the Lease now.
    """

    frozen = False

    async def renew(self) -> None:
        if not self.frozen:
            await super().renew()


async def test_a_rollout_holding_a_kubernetes_lease_runs_to_success_and_records_its_token(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    store = ck.stores.MemoryStore()
    holder = lease(connection, "runner-a", ttl=30)
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetWeight(50), ck.Pause(60)])
    rollout = ck.Rollout(
        plan, router=FakeRouter(), clock=VirtualClock(), store=store, key="web", lease=holder
    )
    with anyio.fail_after(20):
        outcome = await rollout.run()
    assert outcome.phase is ck.Phase.SUCCEEDED
    fencing = store.saved["web"]["fencing"]
    assert fencing["holder"] == fencing["apply_holder"] == "runner-a"
    assert fencing["apply_token"] == 0
    assert "holderIdentity" not in stored(api)["spec"]  # released at the end


async def test_a_frozen_runner_whose_lease_was_taken_over_never_applies_again(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = FakeRouter()
    stale = FrozenRenewals(NAMESPACE, "web", holder="runner-a", ttl=30, connection=connection)
    successor = lease(connection, "runner-b", ttl=30)
    events: list[Any] = []
    rollout = ck.Rollout(
        PROMOTED_BY_HAND,
        router=router,
        store=ck.stores.MemoryStore(),  # its own: only the check can stop it
        key="web",
        lease=stale,
        listeners=[events.append],
    )

    async def freeze_then_take_over() -> None:
        while router.current.canary_percent != 10:
            await anyio.sleep(0.01)
        stale.frozen = True
        age(api)  # its holding ran out while it was frozen
        await successor.acquire()
        rollout.promote()  # the stale runner now wants 50%

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(freeze_then_take_over)
            with pytest.raises(ck.LeaseLostError, match="checking it before an apply failed"):
                await rollout.run()
    assert [s.canary_percent for s in router.applied] == [10]  # never 50
    [lost] = [e for e in events if isinstance(e, ck.events.LeaseRevoked)]
    assert "taken over by runner-b" in lost.reason and lost.holder == "runner-a"
    assert stored(api)["spec"]["holderIdentity"] == "runner-b"  # its release freed nothing
    await successor.release()


async def test_a_runner_whose_renewal_finds_another_holder_stops_without_applying_again(
    api: FakeKubeAPI, connection: KubernetesConnection
) -> None:
    router = FakeRouter()
    holder = lease(connection, "runner-a", ttl=1.5)  # renewed every 0.5 s
    rollout = ck.Rollout(
        PROMOTED_BY_HAND, router=router, store=ck.stores.MemoryStore(), key="web", lease=holder
    )

    async def take_it() -> None:
        while router.current.canary_percent != 10:
            await anyio.sleep(0.01)

        def take(obj: dict[str, Any]) -> None:  # another runner, as kubectl would write it
            obj["spec"]["holderIdentity"] = "runner-b"
            obj["spec"]["leaseTransitions"] += 1

        api.edit("Lease", NAMESPACE, "web", take)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_it)
            with pytest.raises(ck.LeaseLostError, match="taken over by runner-b"):
                await rollout.run()
    assert [s.canary_percent for s in router.applied] == [10]
    assert stored(api)["spec"]["holderIdentity"] == "runner-b"


# ------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"namespace": "Deploy"}, "namespace"),
        ({"name": "web/1"}, "name"),
        ({"ttl": 0}, "ttl"),
        ({"holder": ""}, "holder"),
        ({"connection": "http://127.0.0.1:6443"}, "connection"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_field(arguments: dict[str, Any], field: str) -> None:
    settings: dict[str, Any] = {"namespace": NAMESPACE, "name": "web", **arguments}
    with pytest.raises(ck.ConfigError) as caught:
        KubernetesLease(settings.pop("namespace"), settings.pop("name"), **settings)
    assert caught.value.field == field


async def test_an_answer_over_max_response_bytes_is_a_lease_error_naming_the_option(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    # A Lease someone else wrote with an 8 KiB annotation: its GET answer passes 4 KiB.
    api.put(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "web", "namespace": NAMESPACE, "annotations": {"x": "y" * 8192}},
            "spec": {},
        }
    )
    bounded = KubernetesConnection(
        kubeconfig=api.kubeconfig(tmp_path / "config"), trust_env=False, max_response_bytes=4096
    )
    taker = lease(bounded, "runner-a")
    with pytest.raises(ck.LeaseError, match=r"larger than max_response_bytes=4096") as caught:
        await taker.acquire()
    assert not isinstance(caught.value, ck.LeaseHeldError)
    assert not taker.held and "holderIdentity" not in stored(api)["spec"]
    roomy = KubernetesConnection(kubeconfig=bounded.kubeconfig, trust_env=False)
    await lease(roomy, "runner-a").acquire()  # the same Lease, read within the default 3 MiB


async def test_without_lightkube_the_error_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, connection: KubernetesConnection
) -> None:
    monkeypatch.setitem(sys.modules, "lightkube", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[kubernetes\]'"):
        await lease(connection, "runner-a").acquire()
