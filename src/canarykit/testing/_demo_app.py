"""A small HTTP application to canary in integration tests, with Prometheus metrics.

`DemoApp` starts it as a child process on a free loopback port. Every request other than
its own endpoints sleeps for the configured latency, fails with a 500 at the configured
error rate, and answers with its version in the body and in an `X-Version` header, so a
test can tell which version served it. It exports, labelled with its version:

- `http_requests_total{version, code}`: requests served, by status code;
- `http_request_duration_seconds{version}`: a histogram of the time taken.

A fault can be switched on while it runs (`set_fault`), to start a regression mid-rollout.
Running this module (`python -m canarykit.testing._demo_app --port P --version v2`) serves
the app in the foreground; it needs `prometheus_client` (in the `test` extra).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .._safe import check_name
from ._processes import ManagedProcess, StartStop, free_port, http_ok

__all__ = ["DemoApp"]


class DemoApp(StartStop):
    """One version of a demo application, served by a child process on 127.0.0.1.

    Use it as a context manager; `directory` holds its log.

    - `version`: the label it reports ("v1", "v2"); letters, digits, `_`, `.` and `-`.
    - `error_rate`: the share of requests answered with a 500.
    - `latency`: seconds each request takes before the answer.
    - `instance`: a name sent in an `X-Instance` header (not in the metrics), so that a
      test can tell two instances of one version apart (a canary and an upgraded stable).
    """

    def __init__(
        self,
        directory: Path,
        *,
        version: str,
        error_rate: float = 0.0,
        latency: float = 0.002,
        port: int | None = None,
        instance: str | None = None,
    ) -> None:
        self.version = check_name("version", version)
        self.instance = None if instance is None else check_name("instance", instance)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        argv = [
            sys.executable,
            "-m",
            "canarykit.testing._demo_app",
            "--port",
            str(self.port),
            "--version",
            version,
            "--error-rate",
            repr(float(error_rate)),
            "--latency",
            repr(float(latency)),
        ]
        if self.instance is not None:
            argv += ["--instance", self.instance]
        self._process = ManagedProcess(
            argv,
            name=f"demo app {version}",
            log_path=Path(directory) / f"demo-{version}-{self.port}.log",
            ready=lambda: http_ok(f"{self.url}/-/ready"),
        )

    def set_fault(self, *, error_rate: float = 0.0, extra_latency: float = 0.0) -> None:
        """From now on, fail `error_rate` of requests and add `extra_latency` seconds to each."""
        body = json.dumps({"error_rate": error_rate, "extra_latency": extra_latency}).encode()
        request = urllib.request.Request(f"{self.url}/-/fault", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def start(self) -> None:
        """Start the app and wait until it answers."""
        self._process.start()

    def stop(self) -> None:
        """Stop the app."""
        self._process.stop()

    def __repr__(self) -> str:
        return f"<DemoApp {self.version} at {self.url}>"


class _Behaviour:
    """The app's error rate and latency, changed at run time by POST /-/fault."""

    def __init__(self, error_rate: float, latency: float) -> None:
        self.error_rate = error_rate
        self.latency = latency
        self.extra_latency = 0.0
        self.lock = threading.Lock()


def _serve(port: int, version: str, behaviour: _Behaviour, instance: str | None = None) -> None:
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = prometheus_client.CollectorRegistry()
    requests = prometheus_client.Counter(
        "http_requests",
        "HTTP requests served, by status code.",
        ["version", "code"],
        registry=registry,
    )
    duration = prometheus_client.Histogram(
        "http_request_duration_seconds",
        "Time taken to answer an HTTP request.",
        ["version"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    )
    # Pre-create the series so that a version with no traffic yet exports zeros, not nothing.
    requests.labels(version, "200")
    requests.labels(version, "500")
    duration.labels(version)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without this a keep-alive client waits ~40 ms per answer (Nagle and delayed ACK).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, prometheus_client.generate_latest(registry))
            elif self.path == "/-/ready":
                self._answer(200, b"ready\n")
            else:
                self._serve_request()

        def do_POST(self) -> None:
            if self.path != "/-/fault":
                self._answer(404, b"not found\n")
                return
            length = int(self.headers.get("Content-Length", "0"))
            fault: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            with behaviour.lock:
                behaviour.error_rate = float(fault.get("error_rate", 0.0))
                behaviour.extra_latency = float(fault.get("extra_latency", 0.0))
            self._answer(200, b"ok\n")

        def _serve_request(self) -> None:
            started = time.perf_counter()
            with behaviour.lock:
                error_rate = behaviour.error_rate
                delay = behaviour.latency + behaviour.extra_latency
            time.sleep(delay)
            code = 500 if random.random() < error_rate else 200
            self._answer(code, f"{version}\n".encode())
            requests.labels(version, str(code)).inc()
            duration.labels(version).observe(time.perf_counter() - started)

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Version", version)
            if instance is not None:
                self.send_header("X-Instance", instance)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # One line per request would drown the log that a failed start quotes.

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Serve the demo app in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m canarykit.testing._demo_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.002)
    parser.add_argument("--instance", default=None)
    args = parser.parse_args(argv)
    behaviour = _Behaviour(args.error_rate, args.latency)
    instance = None if args.instance is None else check_name("instance", args.instance)
    _serve(args.port, check_name("version", args.version), behaviour, instance)


if __name__ == "__main__":
    main()
