"""A bounded HTTP load generator that records which version answered each request.

End-to-end tests send real traffic through a real proxy while a rollout runs, and then
ask what users saw: how many requests each version served, how many failed, and when the
last request reached the canary. Needs `httpx` (the `http` extra).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import anyio
import attrs

from .._errors import ConfigError
from .._validate import finite

__all__ = ["LoadGenerator", "Response"]


@attrs.frozen(kw_only=True)
class Response:
    """One request's result: when it was answered (epoch seconds), by which version, how.

    `status` is None when the request failed without an HTTP answer (refused, timed out);
    `version` is the value of the version header, or None when there was none;
    `instance` likewise of the instance header (`DemoApp`'s ``X-Instance``).
    """

    at: float
    version: str | None
    status: int | None
    latency: float
    instance: str | None = None

    @property
    def ok(self) -> bool:
        """True for an HTTP answer below 500."""
        return self.status is not None and self.status < 500


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, value, "must be an int >= 1")
    return value


class LoadGenerator:
    """Send GET requests to `url` at about `rate` per second, from `concurrency` workers.

    `run()` stops after `duration` seconds, after `max_requests` requests, or when
    `stop()` is called, whichever comes first, so a test can never send without bound.
    Every answer is kept in `responses`.

    - `version_header`: the response header naming the version that served the request.
    - `headers`: sent with every request (for example a User-Agent for header routes).
    """

    def __init__(
        self,
        url: str,
        *,
        rate: float = 100.0,
        concurrency: int = 8,
        max_requests: int = 100_000,
        timeout: float = 5.0,
        version_header: str = "X-Version",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("url", url, "must be an http:// or https:// URL")
        self.url = url
        self.rate = finite("rate", rate)
        if self.rate <= 0:
            raise ConfigError("rate", rate, "must be > 0")
        self.concurrency = _positive_int("concurrency", concurrency)
        self.max_requests = _positive_int("max_requests", max_requests)
        self.timeout = finite("timeout", timeout)
        if self.timeout <= 0:
            raise ConfigError("timeout", timeout, "must be > 0")
        self.version_header = version_header
        self.headers = dict(headers or {})
        self.responses: list[Response] = []
        self._stopped = anyio.Event()
        self._sent = 0

    def stop(self) -> None:
        """Ask `run()` to finish; requests in flight complete first."""
        self._stopped.set()

    async def run(self, duration: float = math.inf) -> list[Response]:
        """Send requests until `duration` seconds pass, `max_requests` are sent, or `stop()`."""
        import httpx

        if duration != math.inf and finite("duration", duration) <= 0:
            raise ConfigError("duration", duration, "must be > 0")
        deadline = time.monotonic() + duration
        interval = self.concurrency / self.rate
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            timeout=self.timeout, limits=limits, headers=self.headers
        ) as client:

            async def worker(offset: float) -> None:
                next_at = time.monotonic() + offset
                while not self._stopped.is_set() and self._sent < self.max_requests:
                    now = time.monotonic()
                    if now >= deadline:
                        return
                    if next_at > now:
                        with anyio.move_on_after(next_at - now):
                            await self._stopped.wait()
                        continue
                    next_at += interval
                    self._sent += 1
                    await self._send(client)

            async with anyio.create_task_group() as group:
                for index in range(self.concurrency):
                    group.start_soon(worker, index * interval / self.concurrency)
        return self.responses

    async def _send(self, client: object) -> None:
        import httpx

        assert isinstance(client, httpx.AsyncClient)
        started = time.perf_counter()
        try:
            answer = await client.get(self.url)
        except httpx.HTTPError:
            status, version, instance = None, None, None
        else:
            status, version = answer.status_code, answer.headers.get(self.version_header)
            instance = answer.headers.get("X-Instance")
        self.responses.append(
            Response(
                at=time.time(),
                version=version,
                status=status,
                latency=time.perf_counter() - started,
                instance=instance,
            )
        )

    def counts(self, *, since: float = -math.inf, until: float = math.inf) -> Counter[str | None]:
        """Requests answered in [since, until), by the version that served them."""
        return Counter(r.version for r in _between(self.responses, since, until))

    def failures(self, *, since: float = -math.inf, until: float = math.inf) -> int:
        """Requests answered in [since, until) with a 5xx or with no answer at all."""
        return sum(1 for r in _between(self.responses, since, until) if not r.ok)

    def last_served_by(self, version: str) -> float | None:
        """When `version` last answered a request (epoch seconds), or None if it never did."""
        times = [r.at for r in self.responses if r.version == version]
        return max(times) if times else None

    def __repr__(self) -> str:
        return f"<LoadGenerator {self.url} {self.rate:g}/s, {len(self.responses)} answered>"


def _between(responses: Iterable[Response], since: float, until: float) -> Iterable[Response]:
    return (r for r in responses if since <= r.at < until)
