"""PostgresStore without a server: settings checked by name, the password never shown,
bounded failures against a closed port and a silent one, the client imported lazily."""

from __future__ import annotations

import socket
import sys
import time

import pytest

import canarykit as ck
from canarykit import FencedLease
from canarykit.testing.lab import free_port

psycopg = pytest.importorskip("psycopg")

from canarykit.stores import PostgresLease, PostgresStore  # noqa: E402

SECRET = "s3cr3t-Pa55word"


def test_a_store_is_a_state_store_and_its_lease_a_fenced_lease():
    store = PostgresStore("host=127.0.0.1 dbname=deploy user=canary")
    assert isinstance(store, ck.StateStore)
    lease = store.lease("web", holder="runner-1")
    assert isinstance(lease, PostgresLease)
    assert isinstance(lease, FencedLease)
    assert lease.token is None and not lease.held
    assert lease.ttl == 15.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": "http"}, "port"),
        ({"port": True}, "port"),
        ({"sslmode": "maybe"}, "sslmode"),
        ({"table": "Robert'); DROP TABLE x;--"}, "table"),
        ({"table": "1st"}, "table"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"host": "db\nevil"}, "host"),
        ({"user": ""}, "user"),
        ({"sslrootcert": 5}, "sslrootcert"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_field(options, field):
    with pytest.raises(ck.ConfigError) as caught:
        PostgresStore("host=127.0.0.1", **options)
    assert caught.value.field == field


def test_a_bad_connection_string_is_refused_without_showing_it():
    with pytest.raises(ck.ConfigError) as caught:
        PostgresStore(f"host=db password={SECRET} colour=blue")
    assert caught.value.field == "dsn"
    assert SECRET not in str(caught.value)
    assert "colour" in str(caught.value)  # libpq's own reason stays


@pytest.mark.parametrize(
    "make",
    [
        lambda: PostgresStore(f"host=db.internal user=canary password={SECRET} dbname=deploy"),
        lambda: PostgresStore(f"postgresql://canary:{SECRET}@db.internal:5433/deploy"),
        lambda: PostgresStore(host="db.internal", user="canary", password=SECRET),
    ],
)
def test_the_password_is_in_no_repr(make):
    store = make()
    assert "db.internal" in repr(store)  # where it connects is shown, the password not
    for text in (repr(store), store.where, repr(store.lease("web")), repr(store.commands("web"))):
        assert SECRET not in text


def test_a_keyword_overrides_the_same_setting_of_the_connection_string():
    store = PostgresStore("host=a port=5433 dbname=one", dbname="two")
    assert store.where == "postgresql://@a:5433/two"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": "15"}, "ttl"),
        ({"holder": "two\nlines"}, "holder"),
        ({"target": ""}, "target"),
    ],
)
def test_a_bad_lease_setting_is_refused_naming_its_field(options, field):
    store = PostgresStore("host=127.0.0.1")
    with pytest.raises(ck.ConfigError) as caught:
        store.lease("web", **options)
    assert caught.value.field == field


def test_a_key_that_is_not_a_plain_name_is_refused():
    store = PostgresStore("host=127.0.0.1")
    with pytest.raises(ck.ConfigError) as caught:
        store.lease("../web")
    assert caught.value.field == "key"
    with pytest.raises(ck.ConfigError):
        store.commands("web:target")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "options", "field"),
    [
        ("PROMOTE; drop", {}, "command"),
        ("", {}, "command"),
        ("pause", ["not", "a", "dict"], "options"),
        ("pause", {"at": float("inf")}, "options"),
        ("pause", {"blob": "x" * 70_000}, "options"),
    ],
)
async def test_a_bad_command_is_refused_before_anything_is_sent(command, options, field):
    store = PostgresStore(f"host=127.0.0.1 port={free_port()}")
    with pytest.raises(ck.ConfigError) as caught:
        await store.commands("web").send(command, options)
    assert caught.value.field == field


@pytest.mark.anyio
async def test_taking_commands_without_the_lease_is_refused_locally():
    store = PostgresStore(f"host=127.0.0.1 port={free_port()}")
    with pytest.raises(ck.LeaseLostError, match="holds no lease"):
        await store.commands("web").take()
    with pytest.raises(ck.LeaseLostError, match="holds no lease"):
        await store.commands("web").answer("abc", True, "ok")


@pytest.mark.anyio
async def test_an_unreachable_server_fails_each_call_by_its_kind_without_the_password():
    port = free_port()  # nothing listens there: refused at once
    async with PostgresStore(
        host="127.0.0.1", port=port, user="canary", password=SECRET, timeout=3
    ) as store:
        with pytest.raises(ck.StateSaveError) as saving:
            await store.save("web", {"n": 1})
        with pytest.raises(ck.StateError) as loading:
            await store.load("web")
        with pytest.raises(ck.LeaseError) as leasing:
            await store.lease("web").acquire()
    for caught in (saving, loading, leasing):
        text = str(caught.value)
        assert SECRET not in text
        assert f"127.0.0.1:{port}" in text
        assert "connects again" in text


@pytest.mark.anyio
async def test_a_silent_server_fails_the_call_within_the_timeout():
    # Listens (so the connect completes in the kernel) but never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with PostgresStore(f"host=127.0.0.1 port={port}", timeout=0.5) as store:
            started = time.monotonic()
            with pytest.raises(ck.StateError, match=r"no answer within 0\.5 s"):
                await store.load("web")
            assert time.monotonic() - started < 1.5


@pytest.mark.anyio
async def test_a_closed_store_refuses_calls():
    store = PostgresStore(f"host=127.0.0.1 port={free_port()}")
    await store.aclose()
    with pytest.raises(ck.StateError, match="closed"):
        await store.load("web")


def test_without_psycopg_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install canarykit\[postgres\]"):
        PostgresStore("host=127.0.0.1")
