"""TcpProxy, the cuttable link tests put between a runner and its store, against an echo server."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import canarykit as ck
from canarykit.testing.lab import TcpProxy


@pytest.fixture
def echo() -> Iterator[int]:
    """A threaded echo server on loopback; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def ended(conn: socket.socket) -> bool:
    """True when the connection ends (reset or end of stream) within its timeout."""
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_bytes_go_both_ways_through_the_proxy(echo):
    with TcpProxy("127.0.0.1", echo) as proxy:
        payload = bytes(range(256)) * 1000  # larger than one chunk
        assert roundtrip(proxy.port, payload) == payload
        assert proxy.address == f"127.0.0.1:{proxy.port}"


def test_a_partition_resets_established_connections_and_blackholes_new_ones(echo):
    with TcpProxy("127.0.0.1", echo) as proxy:
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        proxy.partition()
        # The established connection ends at once (reset or end of stream).
        assert ended(conn)
        conn.close()
        # A new one connects (the kernel accepts it) but nothing ever answers.
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            roundtrip(proxy.port, b"hello", timeout=0.3)
        assert time.monotonic() - started < 2
        proxy.heal()
        assert roundtrip(proxy.port, b"again") == b"again"


def test_a_refusing_partition_refuses_new_connections_until_healed(echo):
    with TcpProxy("127.0.0.1", echo) as proxy:
        proxy.partition(new="refuse")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        proxy.heal()
        assert roundtrip(proxy.port, b"back") == b"back"


def test_a_frozen_connection_holds_its_bytes_until_healed(echo):
    with TcpProxy("127.0.0.1", echo) as proxy:
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.3)
        # Forwarded first: one accepted after the partition would be held, not frozen.
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        proxy.partition(drop=False)
        conn.sendall(b"held")
        with pytest.raises(socket.timeout):
            conn.recv(4)
        proxy.heal()
        conn.settimeout(2)
        got = b""
        while len(got) < 4 and (chunk := conn.recv(4)):
            got += chunk
        assert got == b"held"
        conn.close()


def test_close_ends_every_connection(echo):
    proxy = TcpProxy("127.0.0.1", echo)
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    conn.sendall(b"x")
    assert conn.recv(1) == b"x"
    assert proxy.connections == 1
    proxy.close()
    assert ended(conn)
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
    assert "closed" in repr(proxy)


def test_bad_settings_are_refused_naming_the_field(echo):
    with pytest.raises(ck.ConfigError) as caught:
        TcpProxy("127.0.0.1", 70000)
    assert caught.value.field == "target_port"
    with pytest.raises(ck.ConfigError) as caught:
        TcpProxy("", echo)
    assert caught.value.field == "target_host"
    with TcpProxy("127.0.0.1", echo) as proxy:
        with pytest.raises(ck.ConfigError) as caught:
            proxy.partition(new="drop")
        assert caught.value.field == "new"
        assert not proxy.partitioned
