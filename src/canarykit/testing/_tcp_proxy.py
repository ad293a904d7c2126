"""A TCP proxy on loopback that a test can cut: network partitions between a runner and a store.

`TcpProxy(host, port)` listens on a free 127.0.0.1 port and forwards every connection
to ``host:port``, both ways, in threads (so it serves clients on any event loop, and
processes as well as the test's own code). Point the client at `address` instead of
the server, then::

    proxy.partition()   # established connections are cut; new ones hang (blackhole)
    proxy.heal()        # new connections are forwarded again
    proxy.close()

`partition` takes two choices, so a test can pick the partition it means:

- ``drop=True`` (default) resets the established connections, as when a NAT or a
  firewall forgets them; ``drop=False`` freezes them instead: bytes stop flowing both
  ways, and the client waits as on a network that drops packets. `heal` lets a frozen
  connection flow again.
- ``new="blackhole"`` (default) accepts new connections and never answers on them (the
  client sees a hanging connect or login, until its own timeout); ``new="refuse"``
  stops listening, so they are refused at once. Connections accepted during a
  blackhole are closed by `heal`.

Everything runs on daemon threads and stops with `close()` (or the ``with`` block).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Literal

from typing_extensions import Self

from .._errors import ConfigError

__all__ = ["TcpProxy"]

_CHUNK = 65536
# How often the accept loop looks at the proxy's state while nothing connects.
_POLL = 0.05


def _reset(sock: socket.socket) -> None:
    """Close `sock` so the peer sees the connection end now, and wake threads blocked on it."""
    with contextlib.suppress(OSError):
        # Linger 0: the close sends a reset rather than a polite end of stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()


def _stop_listening(listener: socket.socket) -> None:
    """Stop listening now: a connect from here on is refused, even while a thread polls it."""
    # A close alone leaves the socket listening until the accept loop's poll returns.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        listener.close()


class _Pair:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def start(self) -> None:
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = src.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                # A frozen partition holds the bytes here until `heal` (or the end).
                while not self.proxy._flowing.wait(_POLL):
                    if self.closed.is_set():
                        return
                dst.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        _reset(self.client)
        _reset(self.upstream)
        self.proxy._forget(self)


class TcpProxy:
    """A cuttable TCP forwarder from ``127.0.0.1:<port>`` to ``target_host:target_port``.

    `port` and `address` (``"127.0.0.1:PORT"``) are where clients connect. `partition`
    and `heal` cut and restore the link; `connections` counts the forwarded connections
    open now. `connect_timeout` bounds the proxy's own connect to the target.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(target_host, str) or not target_host:
            raise ConfigError("target_host", target_host, "must be a host name or address")
        if isinstance(target_port, bool) or not isinstance(target_port, int):
            raise ConfigError("target_port", target_port, "must be a port number")
        if not 0 < target_port < 65536:
            raise ConfigError("target_port", target_port, "must be between 1 and 65535")
        self.target = (target_host, target_port)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._held: list[socket.socket] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._partitioned = False
        self._closed = False
        self._listener: socket.socket | None = self._listen(port)
        self.port: int = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(_POLL)
        return listener

    @property
    def partitioned(self) -> bool:
        """True between `partition` and `heal`."""
        return self._partitioned

    @property
    def connections(self) -> int:
        """Forwarded connections open now (held blackhole connections not counted)."""
        with self._lock:
            return len(self._pairs)

    def _accept_loop(self) -> None:
        while not self._closed:
            listener = self._listener
            if listener is None:  # refusing: nothing listens until `heal`
                threading.Event().wait(_POLL)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed under us (refuse, close)
                continue
            client.settimeout(None)
            with self._lock:
                if self._partitioned or self._closed:
                    self._held.append(client)  # blackhole: accepted, never answered
                    continue
            self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self._connect_timeout)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        pair = _Pair(self, client, upstream)
        with self._lock:
            if self._partitioned or self._closed:
                self._held.append(client)
                _reset(upstream)
                return
            self._pairs.add(pair)
        pair.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def partition(
        self, *, drop: bool = True, new: Literal["blackhole", "refuse"] = "blackhole"
    ) -> None:
        """Cut the link between clients and the target.

        Established connections are reset (``drop=True``) or frozen; new ones are held
        unanswered (``new="blackhole"``) or refused (``new="refuse"``).
        """
        if new not in ("blackhole", "refuse"):
            raise ConfigError("new", new, "must be 'blackhole' or 'refuse'")
        with self._lock:
            self._partitioned = True
            self._flowing.clear()
            pairs = list(self._pairs) if drop else []
            listener = self._listener if new == "refuse" else None
            if listener is not None:
                self._listener = None
        for pair in pairs:
            pair.close()
        if listener is not None:
            _stop_listening(listener)

    def heal(self) -> None:
        """Restore the link: listen and forward again, and let frozen connections flow."""
        with self._lock:
            held, self._held = self._held, []
            if self._listener is None and not self._closed:
                self._listener = self._listen(self.port)
            self._partitioned = False
            self._flowing.set()
        for client in held:
            _reset(client)

    def close(self) -> None:
        """Stop listening and end every connection (safe to call more than once)."""
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
            pairs = list(self._pairs)
            held, self._held = self._held, []
            self._flowing.set()
        if listener is not None:
            _stop_listening(listener)
        for pair in pairs:
            pair.close()
        for client in held:
            _reset(client)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "partitioned" if self._partitioned else "forwarding"
        if self._closed:
            state = "closed"
        host, port = self.target
        return f"<TcpProxy {self.address} -> {host}:{port} {state}>"
