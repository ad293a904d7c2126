"""Routers and the runner: plans checked against their router before traffic moves, a
`ConfigError` never retried, include files never followed through links or quoted, and
one runner per traffic target."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

import canarykit as ck
from canarykit import ConfigError, HeaderRoute, RouterError, SetHeaderRoutes, TrafficSplit
from canarykit.routers import (
    GatewayAPIRouter,
    HAProxyRouter,
    IstioRouter,
    NginxRouter,
    WeightedRouter,
)
from canarykit.testing import FakeRouter, VirtualClock

SECRET = "db_password=hunter2-s3cr3t"


def nginx_router(folder: Path | str, include: str = "canary.conf") -> NginxRouter:
    folder = Path(folder)
    return NginxRouter(
        include_path=folder / include,
        main_config=folder / "nginx.conf",
        pid_file=folder / "nginx.pid",
        stable=["127.0.0.1:9001"],
        canary=["127.0.0.1:9002"],
    )


def header_plan(value: str) -> ck.Plan:
    route = HeaderRoute(header="X-User", value=value, match="regex")
    return ck.Plan(steps=[ck.SetWeight(10), SetHeaderRoutes([route]), ck.Pause(60)])


# --- plans checked against their router -------------------------------------------------


def test_a_header_regex_nginx_could_never_write_is_refused_when_the_rollout_is_built(
    tmp_path: Path,
) -> None:
    router = nginx_router(tmp_path)
    with pytest.raises(ck.UnsupportedPlanError) as raised:
        ck.Rollout(header_plan('a"b'), router=router)
    assert raised.value.field == "steps[1].routes[0].value"
    assert "NginxRouter would refuse it" in str(raised.value)
    assert not router.include_path.exists()  # nothing was written


def test_nginx_check_split_refuses_what_render_refuses(tmp_path: Path) -> None:
    router = nginx_router(tmp_path)
    router.check_split(TrafficSplit(canary_percent=10, mirror_percent=5))
    with pytest.raises(ConfigError, match="split_clients keeps 2 decimals"):
        router.check_split(TrafficSplit(mirror_percent=0.125))
    with pytest.raises(ConfigError, match="letters, digits and '-'"):
        router.check_split(TrafficSplit(header_routes=[HeaderRoute(header="X_User", value="a")]))


def test_a_weight_haproxy_cannot_give_is_refused_when_the_rollout_is_built() -> None:
    router = HAProxyRouter(
        runtime_api="/run/haproxy.sock", backend="app", stable=["a"], canary=["b"]
    )
    router.check_split(TrafficSplit(canary_percent=10))
    with pytest.raises(ck.UnsupportedPlanError) as raised:
        ck.Rollout(ck.from_weights([0.1, 50], hold=60), router=router)
    assert raised.value.field == "steps[0].percent"
    assert "nearest is 0.3891%" in str(raised.value)


def test_an_httproute_with_more_rules_than_the_gateway_api_allows_is_refused() -> None:
    router = GatewayAPIRouter(
        route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2"
    )
    routes = [HeaderRoute(header=f"X-Team-{i}", value="a") for i in range(15)]
    router.check_split(TrafficSplit(header_routes=routes[:14], canary_percent=10))
    with pytest.raises(ConfigError, match="at most 16 rules"):
        router.check_split(TrafficSplit(header_routes=routes, canary_percent=10))
    with pytest.raises(ConfigError, match="at most 4096 characters"):
        long_value = HeaderRoute(header="X-Team", value="a" * 4097)
        router.check_split(TrafficSplit(header_routes=[long_value]))


def test_a_router_without_check_split_is_not_asked() -> None:
    class Plain:
        capabilities = ck.RouterCapabilities(header_routes=True, read_back=True)

        async def apply(self, split: TrafficSplit) -> None:
            pass

        async def read(self) -> TrafficSplit | None:
            return None

    ck.Rollout(header_plan("a.*"), router=Plain())


# --- a ConfigError is never retried -----------------------------------------------------


class RefusingRouter(FakeRouter):
    """Applies the stable-only split; refuses every other with ConfigError, as a router
    without `check_split` would only at apply time."""

    async def apply(self, split: TrafficSplit) -> None:
        if not split.is_stable_only:
            self.calls.append("apply")
            raise ConfigError("split", split.canary_percent, "this router can never apply it")
        await super().apply(split)


async def test_a_config_error_from_apply_is_not_retried_and_rolls_back(anyio_backend) -> None:
    router = RefusingRouter()
    failures: list[ck.events.RouterCallFailed] = []
    rollout = ck.Rollout(
        ck.from_weights([10, 50], hold=60),
        router=router,
        clock=VirtualClock(),
        listeners=[
            lambda e: failures.append(e) if isinstance(e, ck.events.RouterCallFailed) else None
        ],
    )
    with pytest.raises(ConfigError, match="can never apply it"):
        await rollout.run()
    assert router.calls.count("apply") == 2  # one refused canary apply, then the rollback
    assert [f.attempt for f in failures] == [1]
    assert router.current.is_stable_only
    assert rollout.phase.is_terminal


class AlwaysPass:
    def initial_state(self) -> None:
        return None

    def judge(self, state: None, observation: ck.Observation) -> ck.Judgement:
        return ck.Judgement(ck.Verdict(kind=ck.VerdictKind.PASS, reason="fine"))


async def test_a_config_error_from_collect_is_not_retried_and_rolls_back(anyio_backend) -> None:
    class BadSource:
        calls = 0

        async def collect(self, window: ck.Window) -> ck.Observation:
            BadSource.calls += 1
            raise ConfigError("query", "up{", "is not valid PromQL")

    router = FakeRouter()
    rollout = ck.Rollout(
        ck.linear(10, 30, hold=120, analysis_interval=30),
        router=router,
        metrics=BadSource(),
        decider=AlwaysPass(),
        clock=VirtualClock(),
    )
    with pytest.raises(ConfigError, match="PromQL"):
        await rollout.run()
    assert BadSource.calls == 1
    assert router.current.is_stable_only


async def test_a_config_error_from_the_first_read_is_not_retried(anyio_backend) -> None:
    class UnreadableRouter(FakeRouter):
        reads = 0

        async def read(self) -> TrafficSplit | None:
            UnreadableRouter.reads += 1
            raise ConfigError("include_path", "/x", "is not a file this router can read")

    router = UnreadableRouter()
    with pytest.raises(ConfigError):
        await ck.Rollout(ck.from_weights([10], hold=60), router=router, clock=VirtualClock()).run()
    assert UnreadableRouter.reads == 1
    assert router.applied == []


async def test_other_router_errors_are_still_retried(anyio_backend) -> None:
    router = FakeRouter(fail_on={2})  # the first apply
    outcome = await ck.Rollout(
        ck.from_weights([10], hold=60), router=router, clock=VirtualClock(), retry_delay=1
    ).run()
    assert outcome.phase is ck.Phase.SUCCEEDED


# --- include files: never followed, never quoted ----------------------------------------


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.env"
    path.write_text(f"{SECRET}\napi_key=abc\n")
    return path


async def test_a_symlinked_include_file_is_refused_without_quoting_it(
    tmp_path: Path, secrets_file: Path, anyio_backend
) -> None:
    router = nginx_router(tmp_path)
    router.include_path.symlink_to(secrets_file)
    with pytest.raises(RouterError) as raised:
        await router.read()
    assert "symbolic link" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "db_password" not in str(raised.value)
    with pytest.raises(RouterError, match="symbolic link"):
        router.write(TrafficSplit())
    assert router.include_path.is_symlink()
    assert secrets_file.read_text().startswith(SECRET)


async def test_a_foreign_include_file_is_refused_without_quoting_it(
    tmp_path: Path, secrets_file: Path, anyio_backend
) -> None:
    router = nginx_router(tmp_path, include="secrets.env")
    with pytest.raises(RouterError) as raised:
        await router.read()
    assert "not canarykit's" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "db_password" not in str(raised.value)


async def test_an_include_file_that_is_a_fifo_is_refused_at_once(
    tmp_path: Path, anyio_backend
) -> None:
    router = nginx_router(tmp_path)
    os.mkfifo(router.include_path)
    with anyio.fail_after(5):
        with pytest.raises(RouterError, match="not a regular file"):
            await router.read()


async def test_an_include_file_of_bad_bytes_is_refused_without_quoting_it(
    tmp_path: Path, anyio_backend
) -> None:
    router = nginx_router(tmp_path)
    router.include_path.write_bytes(b"\xff" + SECRET.encode())
    with pytest.raises(RouterError) as raised:
        await router.read()
    assert "hunter2" not in str(raised.value)


async def test_a_pid_file_of_secrets_is_never_quoted(
    tmp_path: Path, secrets_file: Path, anyio_backend
) -> None:
    router = NginxRouter(
        include_path=tmp_path / "canary.conf",
        main_config=tmp_path / "nginx.conf",
        pid_file=secrets_file,
        stable=["127.0.0.1:9001"],
        canary=["127.0.0.1:9002"],
    )
    (tmp_path / "nginx.conf").write_text(router.render_main_config(listen="127.0.0.1:9003"))
    router.write(TrafficSplit())
    with pytest.raises(RouterError) as raised:
        await router.apply(TrafficSplit(canary_percent=10))
    assert "does not hold a process id" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert (await router.read()) == TrafficSplit()  # the previous file was put back


# --- one runner per traffic target ------------------------------------------------------


def test_every_built_in_router_names_its_traffic_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert nginx_router(tmp_path / "alias").traffic_target == f"nginx:{real / 'canary.conf'}"
    assert nginx_router(real).traffic_target == nginx_router(tmp_path / "alias").traffic_target
    hap = HAProxyRouter(runtime_api="127.0.0.1:9999", backend="app", stable=["a"], canary=["b"])
    assert hap.traffic_target == "haproxy:127.0.0.1:9999 backend app"
    gateway = GatewayAPIRouter(
        route="shop", namespace="prod", stable_service="shop-v1", canary_service="shop-v2"
    )
    assert gateway.traffic_target == "HTTPRoute prod/shop"
    istio = IstioRouter(
        virtual_service="app", namespace="default", host="app", stable_subset="v1",
        canary_subset="v2",
    )  # fmt: skip
    assert istio.traffic_target == "VirtualService default/app"
    # In-process routers: nothing another process could drive, so no host-wide lock.
    assert WeightedRouter().traffic_target is None
    assert FakeRouter().traffic_target is None
    assert FakeRouter(traffic_target="fake:one").traffic_target == "fake:one"


async def test_two_state_directories_cannot_drive_one_nginx_include_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend
) -> None:
    monkeypatch.setenv("CANARYKIT_LOCK_DIR", str(tmp_path / "locks"))
    (tmp_path / "alias").symlink_to(tmp_path)
    plan = ck.from_weights([10], hold=60)
    first = ck.Rollout(plan, router=nginx_router(tmp_path), store=tmp_path / "one", key="web")
    second = ck.Rollout(
        plan, router=nginx_router(tmp_path / "alias"), store=tmp_path / "two", key="web-2"
    )
    assert first.lease is not None
    await first.lease.acquire()
    try:
        with pytest.raises(ck.LeaseHeldError) as raised:
            await second.run()
        assert f"nginx:{os.path.realpath(tmp_path / 'canary.conf')}" in str(raised.value)
        assert not (tmp_path / "canary.conf").exists()  # the second one moved nothing
    finally:
        await first.lease.release()


async def test_in_memory_stores_keep_two_keys_off_one_router(anyio_backend) -> None:
    store = ck.stores.MemoryStore()
    router = FakeRouter(traffic_target="fake:the-one-router")
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.WaitForPromotion()])
    # On the system clock: a virtual one would see the wait for promotion as stalled.
    first = ck.Rollout(plan, router=router, store=store, key="a")
    second = ck.Rollout(plan, router=router, store=store, key="b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await anyio.sleep(0.05)
        with pytest.raises(ck.LeaseHeldError):
            await second.run()
        first.abort()
    assert router.current.is_stable_only


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
async def test_haproxy_persist_config_is_neither_followed_nor_read_from_a_fifo(
    tmp_path: Path, secrets_file: Path, kind: str, anyio_backend
) -> None:
    from test_haproxy_unit import FakeHAProxy, runtime_api

    config = tmp_path / "haproxy.cfg"
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to(secrets_file)
    fake = FakeHAProxy({"v1": 256, "v2": 0})
    async with runtime_api(tmp_path, fake) as address:
        hap = HAProxyRouter(
            runtime_api=address, backend="app", stable=["v1"], canary=["v2"], persist_config=config
        )
        with anyio.fail_after(5):
            with pytest.raises(RouterError) as raised:
                await hap.apply(TrafficSplit(canary_percent=10))
    assert ("not a regular file" if kind == "fifo" else "symbolic link") in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert fake.weights == {"v1": 256, "v2": 0}
    assert secrets_file.read_text().startswith(SECRET)


def test_nginx_refuses_a_named_group_which_it_would_make_a_variable_of(tmp_path: Path) -> None:
    router = nginx_router(tmp_path)
    route = HeaderRoute(header="X-User", value="(?P<canarykit_upstream>.*)", match="regex")
    with pytest.raises(ConfigError, match="must not name a group"):
        router.check_split(TrafficSplit(header_routes=[route]))
    IstioRouter(
        virtual_service="app", namespace="default", host="app", stable_subset="v1",
        canary_subset="v2",
    ).check_split(TrafficSplit(header_routes=[route]))  # fmt: skip
