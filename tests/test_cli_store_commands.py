"""Operator commands and ``canarykit status`` through a store several hosts share.

A policy naming ``[state] backend = "etcd"`` (or ``"postgres"``) makes ``canarykit
promote|pause|resume|abort|status`` talk to the store instead of a state directory: the
command goes through ``store.commands(key)``, only the runner holding the lease takes and
answers it, and the tool says at once when nobody holds the lease. Here the store is
`SharedStore`, a `MemoryStore` with the `commands()` and `holder_of()` of the real
engines' stores; a rollout runs in this process with ``canarykit run``'s own driver
while the command tool runs in a thread, as it would on another host. The same against
a real etcd cluster and a real ``canarykit run``: tests/integration/test_commands_store.py.
The ``[state]`` table itself (checked at load, built when run) is tested at the end.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
from typing import Any

import anyio
import pytest

import canarykit as ck

# Imports internals on purpose: the command line (canarykit._cli is private).
from canarykit._cli._control import StoreCommands
from canarykit._cli._main import main
from canarykit._cli._run import EXIT_NOTHING_TO_DO, execute
from canarykit.policy import Deployment, load_policy
from canarykit.stores import MemoryStore
from canarykit.testing import FakeRouter

WAITING = ck.Plan(steps=[ck.SetWeight(20), ck.WaitForPromotion(), ck.SetWeight(60)])
BASE = """
[plan]
shape = "steps"
analysis_interval = "30s"
[[plan.steps]]
set_weight = 20
[[plan.steps]]
wait_for_promotion = true
[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = "2%"
[rollout]
name = "web"
"""
ETCD = (
    BASE
    + """
[state]
backend = "etcd"
endpoints = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
prefix = "deploys/"
ttl = "5s"
"""
)
_ids = itertools.count(1)


class SharedCommands:
    """`EtcdCommands`' interface in memory: only while the key's lease is held can one
    take commands and answer them, and answers carry the holder's name."""

    def __init__(self, store: SharedStore, key: str) -> None:
        self.store, self.key = store, key

    def _holder(self, what: str) -> str:
        holder = self.store.live_holder(self.key)
        if holder is None:
            raise ck.LeaseError(f"{what} of {self.key!r}: the lease is not held")
        return holder

    async def send(self, command: str, options: dict[str, Any] | None = None) -> str:
        ident = f"{time.time_ns():020d}-{next(_ids):08x}"
        self.store.sent.append((ident, command, dict(options or {})))
        return ident

    async def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        self._holder("taking commands")
        taken = [item for item in self.store.sent if item[0] not in self.store.taken]
        self.store.taken.update(item[0] for item in taken)
        return taken

    async def answer(self, ident: str, accepted: bool, reason: str) -> None:
        holder = self._holder("answering")
        self.store.answers[ident] = {"accepted": accepted, "reason": reason, "holder": holder}

    async def wait(self, ident: str, timeout: float) -> dict[str, Any] | None:
        until = time.monotonic() + timeout
        while ident not in self.store.answers and time.monotonic() < until:
            await anyio.sleep(0.02)
        return self.store.answers.get(ident)


class SharedStore(MemoryStore):
    """A `MemoryStore` with the `holder_of` and `commands` of `EtcdStore`/`PostgresStore`."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.taken: set[str] = set()
        self.answers: dict[str, dict[str, Any]] = {}
        self.closed = 0

    def live_holder(self, key: str) -> str | None:
        current = self._holders.get(key)
        if current is None or current[1] <= time.monotonic():
            return None
        return str(current[0])

    async def holder_of(self, key: str) -> dict[str, Any] | None:
        current = self._holders.get(key)
        if current is None:
            return None
        left = current[1] - time.monotonic()
        return {"holder": current[0], "token": current[2], "expires_in": left, "overdue": left <= 0}

    def commands(self, key: str) -> SharedCommands:
        return SharedCommands(self, key)

    async def aclose(self) -> None:
        self.closed += 1

    async def __aenter__(self) -> SharedStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> SharedStore:
    """The store every `Deployment.build_store` of this test returns (one "cluster")."""
    shared = SharedStore()
    monkeypatch.setattr(Deployment, "build_store", lambda self: shared)
    return shared


@pytest.fixture
def policy(tmp_path: Any) -> Any:
    path = tmp_path / "web.toml"
    path.write_text(ETCD)
    return path


def command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def operator_when(router: FakeRouter, percent: float, work: Any) -> tuple[threading.Thread, list]:
    """In a thread: once `router` serves `percent`, run `work()`; its result in the list."""
    results: list[Any] = []

    def run() -> None:
        deadline = time.monotonic() + 10
        while router.current.canary_percent != percent and time.monotonic() < deadline:
            time.sleep(0.01)
        results.append(work())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def run_rollout(store: SharedStore, router: FakeRouter, *, holder: str = "runner-b") -> int:
    lease = store.lease("web", holder=holder, ttl=5)
    rollout = ck.Rollout(WAITING, router=router, store=store, key="web", lease=lease)
    lines = io.StringIO()
    return execute(
        rollout, out=lines, lines=lines, inbox=StoreCommands(store, "web"), close_store=True
    )


def test_a_command_goes_through_the_store_and_the_lease_holder_answers_it(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    router = FakeRouter()
    thread, results = operator_when(
        router, 20, lambda: main(["promote", str(policy), "--wait", "5"])
    )
    code = run_rollout(store, router)
    thread.join()
    out = capsys.readouterr().out

    assert code == 0 and results == [0]
    assert [s.canary_percent for s in router.applied] == [20, 60, 100]
    # Acknowledged by the runner that holds the lease, by name.
    assert out == "promote: accepted by runner-b: the rollout is progressing\n"
    ((ident, name, options),) = store.sent
    assert name == "promote" and store.answers[ident]["holder"] == "runner-b"
    assert options["expires_at"] > time.time()  # the time the tool stops waiting
    assert store.closed == 2  # by the run, in its event loop, and by the command tool


def test_pause_and_abort_carry_their_reason_through_the_store(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    router = FakeRouter()

    def operate() -> list[int]:
        return [
            main(["pause", str(policy), "--reason", "look at the p99"]),
            main(["abort", str(policy), "--reason", "bad build"]),
        ]

    thread, results = operator_when(router, 20, operate)
    run_rollout(store, router)
    thread.join()

    assert results == [[0, 0]]
    assert [options.get("reason") for _, _, options in store.sent] == [
        "look at the p99",
        "bad build",
    ]
    assert router.current.is_stable_only
    code, out, _ = command(capsys, "status", str(policy))
    assert code == 0 and "phase     aborted" in out and "reason    bad build" in out


def test_with_nobody_holding_the_lease_the_tool_says_so_at_once_and_sends_nothing(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, err = command(capsys, "promote", str(policy), "--wait", "30")

    assert code == 1 and out == ""
    assert err.startswith(
        "canarykit: no runner holds the lease of web: nothing will act on this command"
    )
    assert time.monotonic() - started < 5  # not the 30 s --wait
    assert store.sent == []  # a runner starting later finds nothing to act on


def test_an_overdue_holder_counts_as_nobody(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lease = store.lease("web", holder="gone-runner", ttl=0.05)
    anyio.run(lease.acquire)
    time.sleep(0.1)
    code, _, err = command(capsys, "resume", str(policy))
    assert code == 1 and "no runner holds the lease of web" in err and store.sent == []
    code, out, _ = command(capsys, "status", str(policy))
    assert "lease     overdue: gone-runner; token " in out
    assert "stopped renewing it; another runner may take it" in out


def test_a_holder_that_does_not_answer_leaves_a_command_that_expires(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lease = store.lease("web", holder="stuck-runner", ttl=60)
    anyio.run(lease.acquire)
    code, out, err = command(capsys, "pause", str(policy), "--wait", "0.2")

    assert code == 1 and out == ""
    assert "no answer from the runner of 'web' within 0.2 s (stuck-runner; token " in err
    assert "a runner that takes it later refuses it" in err
    # The runner, taking it late, refuses it rather than acting on it.
    taken = anyio.run(StoreCommands(store, "web").take)
    assert len(taken) == 1 and isinstance(taken[0][1], str)
    assert "came after its sender stopped waiting" in taken[0][1]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_late_command_is_answered_as_refused_and_never_acted_on(
    store: SharedStore, backend: str
) -> None:
    router = FakeRouter()

    def send_expired() -> None:
        options = {"expires_at": time.time() - 1}
        anyio.run(store.commands("web").send, "promote", options)

    thread, _ = operator_when(router, 20, send_expired)
    lease = store.lease("web", holder="runner-b", ttl=5)
    rollout = ck.Rollout(WAITING, router=router, store=store, key="web", lease=lease)

    async def drive() -> None:
        from canarykit._cli._control import serve_inbox

        started = anyio.Event()
        rollout.add_listener(lambda event: started.set())
        async with anyio.create_task_group() as group:
            group.start_soon(serve_inbox, rollout, StoreCommands(store, "web"), started)
            group.start_soon(rollout.run)
            while not store.answers:
                await anyio.sleep(0.02)
            await anyio.sleep(0.1)
            phases.append(rollout.phase)
            group.cancel_scope.cancel()

    phases: list[ck.Phase] = []
    anyio.run(drive, backend=backend)
    thread.join()
    (answer,) = store.answers.values()
    assert answer["accepted"] is False and "stopped waiting" in answer["reason"]
    assert phases == [ck.Phase.PAUSED]  # still waiting for a promotion
    assert [s.canary_percent for s in router.applied][:1] == [20]
    assert 60 not in [s.canary_percent for s in router.applied]


def test_status_reads_the_state_and_the_holder_from_the_store(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = command(capsys, "status", str(policy))
    assert code == 1 and out.startswith("web: nothing saved in <MemoryStore")
    assert "lease     not held: no runner drives it now" in out

    router = FakeRouter()
    thread, results = operator_when(
        router, 20, lambda: (command(capsys, "status", str(policy)), main(["promote", str(policy)]))
    )
    run_rollout(store, router)
    thread.join()
    (code, out, _), promoted = results[0]
    assert code == 0 and promoted == 0
    assert "phase     paused at step 2/3; canary 20%" in out, out
    assert "lease     held by runner-b; token " in out and "unless renewed" in out

    code, out, _ = command(capsys, "status", str(policy))
    assert code == 0 and "phase     succeeded" in out
    assert "lease     not held: no runner drives it now" in out


def test_a_command_for_a_finished_rollout_is_nothing_to_do(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    router = FakeRouter()
    thread, _ = operator_when(router, 20, lambda: main(["promote", str(policy)]))
    run_rollout(store, router)
    thread.join()
    capsys.readouterr()

    code, out, _ = command(capsys, "pause", str(policy))
    assert code == EXIT_NOTHING_TO_DO
    assert out.startswith("pause: the rollout already succeeded at ")
    assert len(store.sent) == 1  # only the promote


def test_state_dir_is_refused_when_the_state_lives_in_a_store(
    store: SharedStore, policy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = command(capsys, "status", str(policy), "--state-dir", "/tmp/x")
    assert code == 2
    assert "--state-dir: is for the file backend: this policy keeps its state in etcd" in err


# ---------------------------------------------------------------------------------------
# The [state] table


def state_error(state: str) -> str:
    with pytest.raises(ck.ConfigError) as caught:
        load_policy(BASE + state)
    return str(caught.value)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ('backend = "zookeeper"', "state.backend: must be one of 'file', 'etcd', 'postgres'"),
        ('backend = "etcd"', "state.endpoints: is required for backend 'etcd'"),
        (
            'backend = "etcd"\nendpoints = ["http://a:2379"]\ndsn = "host=db"',
            "state.dsn: is not used by backend 'etcd' (it takes backend, endpoints",
        ),
        ('backend = "etcd"\nendpoints = ["ftp://a:2379"]', "state.endpoints[0]: must be an http"),
        ('backend = "etcd"\nendpoints = ["http://a:2379"]\nprefix = "x"', "state.prefix: must end"),
        (
            'backend = "etcd"\nendpoints = ["http://a:2379"]\nca_file = "ca.pem"',
            "state.endpoints: must be https:// URLs with ca_file",
        ),
        (
            'backend = "etcd"\nendpoints = ["http://a:2379"]\nusername = "deploy"',
            "state.password_env: is required with username",
        ),
        (
            'backend = "etcd"\nendpoints = ["http://a:2379"]\npassword_env = "PW"',
            "state.username: is required with a password",
        ),
        ('backend = "etcd"\npassword = "hunter2"', "state.password: would put a secret in"),
        ('backend = "postgres"', "state.dsn: is required (or dsn_env or dsn_file)"),
        (
            'backend = "postgres"\ndsn = "a"\ndsn_env = "B"',
            "state.dsn_env: cannot be given with dsn",
        ),
        ('backend = "file"\nendpoints = ["http://a:2379"]', "state.endpoints: is not used by"),
        ('ttl = "0s"', "state.ttl: "),
    ],
)
def test_the_state_table_is_checked_when_the_policy_loads(state: str, message: str) -> None:
    assert state_error(f"[state]\n{state}\n").startswith(message)


@pytest.mark.parametrize(
    "dsn", ["host=db user=deploy password=hunter2", "postgresql://deploy:hunter2@db/deploys"]
)
def test_a_password_in_the_dsn_is_refused_without_being_shown(dsn: str) -> None:
    message = state_error(f'[state]\nbackend = "postgres"\ndsn = "{dsn}"\n')
    assert message.startswith("state.dsn: must not hold a password: give it with password_env")
    assert "hunter2" not in message


def test_a_state_dir_beside_a_store_backend_is_refused() -> None:
    text = BASE.replace('[rollout]\nname = "web"', '[rollout]\nname = "web"\nstate_dir = "s"')
    message = state_error(
        text[len(BASE) :] + '[state]\nbackend = "etcd"\nendpoints = ["http://a:1"]\n'
    )
    assert message.startswith('rollout.state_dir: is for backend "file"')


def test_the_state_table_round_trips_and_is_built_only_when_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    path = tmp_path / "web.toml"
    path.write_text(ETCD + 'username = "deploy"\npassword_file = "secrets/etcd"\n')
    policy = load_policy(path)
    deployment = policy.deployment
    assert deployment.state_backend == "etcd" and deployment.lease_ttl == 5.0
    # Relative to the policy's folder, like every path in it.
    assert deployment.state_table["password_file"] == str(tmp_path / "secrets/etcd")
    assert load_policy(policy.to_toml()).deployment.state_table == deployment.state_table
    # Nothing is read until it is built: then the missing file is named by its key.
    with pytest.raises(ck.ConfigError, match=r"^state\.password_file: cannot be read"):
        deployment.build_store()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/etcd").write_text("hunter2\n")
    store = deployment.build_store()
    assert type(store).__name__ == "EtcdStore" and store.prefix == "deploys/"
    assert store.endpoints == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert "hunter2" not in repr(store)


def test_a_postgres_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    state = '[state]\nbackend = "postgres"\ndsn = "host=db.internal dbname=deploys user=canary"\n'
    deployment = load_policy(BASE + state + 'password_env = "PG_SECRET"\ntable = "rollouts"\n')
    with pytest.raises(ck.ConfigError, match=r"^state\.password_env: names an environment"):
        deployment.deployment.build_store()
    monkeypatch.setenv("PG_SECRET", "hunter2")
    store = deployment.deployment.build_store()
    assert repr(store) == (
        "PostgresStore('postgresql://canary@db.internal:5432/deploys', table='rollouts')"
    )


def test_without_the_extra_building_the_store_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx now fails
    deployment = load_policy(ETCD).deployment  # loading needs no client
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[etcd\]'"):
        deployment.build_store()
    monkeypatch.setitem(sys.modules, "psycopg", None)
    postgres = load_policy(BASE + '[state]\nbackend = "postgres"\ndsn = "host=db"\n')
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[postgres\]'"):
        postgres.deployment.build_store()


def test_the_default_backend_is_the_state_directory(tmp_path: Any) -> None:
    path = tmp_path / "web.toml"
    path.write_text(BASE + '[state]\nttl = "20s"\n')
    deployment = load_policy(path).deployment
    assert deployment.state_backend == "file" and deployment.lease_ttl == 20.0
    store = deployment.build_store()
    assert isinstance(store, ck.stores.FileStore)
    assert store.directory == tmp_path / ".canarykit"
