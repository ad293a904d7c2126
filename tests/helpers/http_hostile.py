"""A loopback HTTP server that answers as badly as a test asks: huge, dripping, silent, echoing.

`HostileServer(respond)` calls ``respond(request, send)`` for every request, in its own
thread: `request` has ``method``, ``target`` (path and query, raw), ``headers`` (a dict
of lower-case names to values) and ``body`` (bytes); ``send(data, delay=0)`` writes raw
bytes after sleeping `delay` seconds, and returns False once the client has gone (or
the server is closing), so a responder stops. The behaviours below build responders.
"""

import contextlib
import socket
import threading
import time

CHUNK = b"x" * 65536


def status_line(status, reason=b"Error", headers=()):
    lines = [b"HTTP/1.1 %d " % status + reason]
    lines += [name.encode() + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def huge(status, size):
    """Answer `status` with a `size`-byte body, generated as it is sent (never allocated)."""

    def respond(_request, send):
        if not send(status_line(status, headers=[("Connection", b"close")])):
            return
        left = size
        while left > 0:
            piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
            if not send(piece):
                return
            left -= len(piece)

    return respond


def drip(interval, *, status=200, headers_too=False, length=100_000):
    """Answer one byte every `interval` seconds: the body only, or the status line too."""

    def respond(_request, send):
        head = status_line(status, headers=[("Content-Length", str(length).encode())])
        if not headers_too and not send(head):
            return
        data = (head if headers_too else b"") + b"x" * length
        for index in range(len(data)):
            if not send(data[index : index + 1], delay=interval):
                return

    return respond


def silent(_request, send):
    """Read the request, then answer nothing until the server closes."""
    send(b"", delay=3600)


class HostileServer:
    """See the module docs. `url` is its address; `close()` ends every answer at once."""

    def __init__(self, respond, path="/"):
        self.respond = respond
        self.requests = []
        self.closing = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.threads = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                request = self._read_request(conn)
            except OSError:
                return
            if request is None:
                return
            self.requests.append(request)

            def send(data, delay=0.0):
                if delay and self.closing.wait(delay):
                    return False
                if self.closing.is_set():
                    return False
                try:
                    conn.sendall(data)
                except OSError:
                    return False
                return True

            with contextlib.suppress(OSError):
                self.respond(request, send)

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return None
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                break
            body += piece
        return {"method": method, "target": target, "headers": headers, "body": body}

    def close(self):
        self.closing.set()
        self.sock.close()
        self.thread.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()


def timed(started):
    return time.monotonic() - started
