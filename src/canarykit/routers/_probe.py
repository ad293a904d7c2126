"""Check a split by sending real requests through the proxy and counting who answered.

How this works: `SplitProbe.measure` sends `warmup` requests that are not counted, then
batches of `requests` sequential requests over one keep-alive connection, and tells the
arms apart by a response header (`X-Version: v2`) or a `classify` callable. Without
`converge`, one batch decides. With `converge=True`, batches continue until one batch is
within `tolerance` of the target or `max_requests` would be exceeded: HAProxy's split
converges over a few hundred requests after a weight change, nginx's does not need to.

What the tolerance assumes: the probe's requests are the only traffic the proxy balances
while it runs, and they are sequential. nginx's smooth weighted round-robin is then
deterministic (every prefix of the sequence is within one request of its share, so
1,000 requests at 10% give exactly 100 on the canary), and 1 point is a fair tolerance.
A random balancer (or one shared with live traffic) needs a tolerance wider than the
binomial noise: about 2 standard deviations is `200 * sqrt(p * (1 - p) / requests)`
points, 1.9 points at p = 10% and 1,000 requests.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ConfigError, RouterError
from .._http import DEFAULT_MAX_RESPONSE_BYTES, ResponseTooLarge, check_max_bytes, exchange
from .._split import TrafficSplit
from .._validate import finite

if TYPE_CHECKING:
    import httpx

__all__ = ["ProbeResult", "SplitProbe", "binomial_tolerance"]

# HTTP field names are tokens (RFC 9110).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_REQUESTS = 1_000_000


class _NoAnswer(Exception):
    """One request's deadline passed (not the whole measure's)."""


def _count(field: str, *, minimum: int) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, value, "must be an integer")
        if not minimum <= value <= _MAX_REQUESTS:
            raise ConfigError(field, value, f"must be in [{minimum}, {_MAX_REQUESTS:,}]")

    return validate


def _seconds(field: str) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if finite(field, value) <= 0:
            raise ConfigError(field, value, "must be a positive number of seconds")

    return validate


def _check_url(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError("url", value, "must be an http:// or https:// URL without spaces")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url", value, "must be an http:// or https:// URL with a host")


def _check_header(field: str) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise ConfigError(field, value, "must be an HTTP header name")

    return validate


def _check_value(field: str) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if not isinstance(value, str) or not value or not value.isprintable():
            raise ConfigError(field, value, "must be a non-empty printable string")

    return validate


def _to_headers(value: Any) -> Any:
    # A frozen value must stay hashable: a mapping becomes a tuple of pairs.
    if isinstance(value, Mapping):
        return tuple(value.items())
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return tuple(tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in value)
    return value


def _check_headers(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, tuple):
        raise ConfigError("headers", value, "must be a mapping of header names to values")
    for pair in value:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ConfigError("headers", value, "must be a mapping of header names to values")
        name, text = pair
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(f"headers[{name!r}]", name, "must be an HTTP header name")
        if not isinstance(text, str) or not text.isprintable():
            raise ConfigError(f"headers[{name!r}]", text, "must be a printable string")


def _check_classify(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError("classify", value, "must be None or a callable taking a response")


@attrs.frozen(kw_only=True)
class ProbeResult:
    """What a `SplitProbe` saw: the deciding batch's counts against the target.

    - `sent`: requests counted in the deciding batch (the last one);
    - `canary`, `stable`: how many of them each arm answered; `unclassified`: answers
      that carried no arm marker (no `header`, e.g. an error page of the proxy itself);
    - `observed_percent`: `100 * canary / sent`; `target_percent`: what the split asks
      for these requests; `error_points`: the absolute difference, in percentage points;
    - `within_tolerance`: `error_points <= tolerance` and nothing unclassified;
    - `total_requests`: everything sent, warmup and earlier batches included; `batches`.
    """

    target_percent: float
    sent: int
    canary: int
    stable: int
    unclassified: int
    tolerance: float
    total_requests: int
    batches: int

    @property
    def observed_percent(self) -> float:
        """The canary's share of the deciding batch, in percent."""
        return 100.0 * self.canary / self.sent if self.sent else 0.0

    @property
    def error_points(self) -> float:
        """How far the observed share is from the target, in percentage points."""
        return abs(self.observed_percent - self.target_percent)

    @property
    def within_tolerance(self) -> bool:
        """True when the observed share is close enough and every answer was classified."""
        # A hair of slack so that an exact 10.0 against a tolerance of 1.0 from 11.0 passes.
        return self.unclassified == 0 and self.error_points <= self.tolerance + 1e-9

    def describe(self) -> str:
        """One line with the numbers, for logs and error messages."""
        text = (
            f"canary answered {self.canary} of {self.sent} requests "
            f"({self.observed_percent:.3g}%), target {self.target_percent:g}%, "
            f"off by {self.error_points:.3g} points (tolerance {self.tolerance:g})"
        )
        if self.unclassified:
            text += f"; {self.unclassified} answers had no arm marker"
        if self.batches > 1:
            text += f"; {self.batches} batches, {self.total_requests} requests in all"
        return text


@attrs.frozen(kw_only=True)
class SplitProbe:
    """Send a bounded number of requests through a proxy and compare the split with a target.

    >>> from canarykit.routers import SplitProbe
    >>> probe = SplitProbe(url="http://127.0.0.1:8080/", requests=1000, tolerance=1.0)
    >>> probe.header, probe.canary_value
    ('X-Version', 'v2')

    - `url`: where to send GET requests (the proxy, not an app).
    - `requests`: requests per batch (counted); `warmup`: sent first and not counted.
    - `tolerance`: allowed distance from the target, in percentage points (see the
      module's notes for what it assumes).
    - `header`, `canary_value`: a response is the canary's when this header has this
      value; any other value is the stable arm; a missing header is unclassified.
    - `classify`: instead, a callable taking the `httpx.Response` and returning True for
      the canary, False for stable, or None for unclassified.
    - `headers`: request headers to send (e.g. a User-Agent that a header route
      matches: the target then becomes 100% for the split's matching routes).
    - `timeout`: seconds per request, its answer included (a deadline for the whole
      exchange); `deadline`: seconds for a whole `measure`.
    - `max_response_bytes`: the most of an answer read (1 MiB); a longer 2xx answer is a
      `RouterError` that names the option. Of an error answer only the start is read
      (a `classify` callable sees that start as the response's body).
    - `converge`, `max_requests`: keep sampling batches until one is within tolerance,
      using at most `max_requests` (default 10 batches) in all.

    Requests are sequential on one keep-alive connection: a proxy with several worker
    processes then balances them in one worker, whose sequence is the deterministic one.
    """

    url: str = attrs.field(validator=_check_url)
    requests: int = attrs.field(default=1000, validator=_count("requests", minimum=1))
    tolerance: float = attrs.field(default=1.0)
    header: str = attrs.field(default="X-Version", validator=_check_header("header"))
    canary_value: str = attrs.field(default="v2", validator=_check_value("canary_value"))
    classify: Callable[[httpx.Response], bool | None] | None = attrs.field(
        default=None, validator=_check_classify, eq=False
    )
    headers: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_headers, validator=_check_headers
    )
    warmup: int = attrs.field(default=0, validator=_count("warmup", minimum=0))
    timeout: float = attrs.field(default=5.0, validator=_seconds("timeout"))
    deadline: float = attrs.field(default=60.0, validator=_seconds("deadline"))
    converge: bool = False
    max_requests: int | None = None
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES,
        validator=lambda _i, _a, v: check_max_bytes("max_response_bytes", v),
    )

    @tolerance.validator
    def _check_tolerance(self, _attr: Any, value: Any) -> None:
        if not 0 <= finite("tolerance", value) <= 100:
            raise ConfigError("tolerance", value, "must be in [0, 100] percentage points")

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.converge, bool):
            raise ConfigError("converge", self.converge, "must be True or False")
        if self.max_requests is not None:
            _count("max_requests", minimum=1)(self, None, self.max_requests)
            if self.max_requests < self.requests:
                raise ConfigError(
                    "max_requests", self.max_requests, f"must be at least requests={self.requests}"
                )
            if not self.converge:
                raise ConfigError("max_requests", self.max_requests, "needs converge=True")

    @property
    def request_budget(self) -> int:
        """The most counted requests one `measure` may send (warmup not included)."""
        if not self.converge:
            return self.requests
        return self.max_requests if self.max_requests is not None else 10 * self.requests

    def target_for(self, split: TrafficSplit) -> float:
        """The canary share `split` gives this probe's requests, in percent.

        A header route that matches the probe's own request headers sends all of them to
        the canary, whatever the weights say.
        """
        sent = {name.lower(): value for name, value in self.headers}
        for route in split.header_routes:
            if route.matches(sent.get(route.header.lower())):
                return 100.0
        return split.canary_percent

    async def measure(self, expected: TrafficSplit) -> ProbeResult:
        """Send the requests and count the arms; raises `RouterError` if requests fail."""
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the environment
            raise RouterError(
                "SplitProbe needs httpx: install it with pip install 'canarykit[http]'"
            ) from None
        target = self.target_for(expected)
        total = 0
        try:
            with anyio.fail_after(self.deadline):
                # trust_env=False: a proxy from HTTP_PROXY would measure the wrong thing.
                async with httpx.AsyncClient(
                    timeout=self.timeout,
                    trust_env=False,
                    follow_redirects=False,
                    headers=dict(self.headers),
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                ) as client:
                    for _ in range(self.warmup):
                        await self._one(client)
                        total += 1
                    batches = 0
                    while True:
                        counts = [0, 0, 0]  # canary, stable, unclassified
                        for _ in range(self.requests):
                            counts[self._arm(await self._one(client))] += 1
                        total += self.requests
                        batches += 1
                        result = ProbeResult(
                            target_percent=target,
                            sent=self.requests,
                            canary=counts[0],
                            stable=counts[1],
                            unclassified=counts[2],
                            tolerance=self.tolerance,
                            total_requests=total,
                            batches=batches,
                        )
                        used = batches * self.requests
                        if result.within_tolerance or used + self.requests > self.request_budget:
                            return result
        except _NoAnswer:
            raise RouterError(
                f"split probe request to {self.url} failed after {total} requests: "
                f"no answer within timeout={self.timeout:g} s"
            ) from None
        except TimeoutError:
            raise RouterError(
                f"split probe of {self.url} did not finish within {self.deadline:g} s "
                f"({total} requests sent)"
            ) from None
        except ResponseTooLarge as exc:
            raise RouterError(
                f"split probe request to {self.url} failed after {total} requests: "
                f"{exc.advice('max_response_bytes')}"
            ) from None
        except httpx.HTTPError as exc:
            raise RouterError(
                f"split probe request to {self.url} failed after {total} requests: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def check(self, expected: TrafficSplit) -> ProbeResult:
        """`measure`, then raise `RouterError` with the numbers unless within tolerance."""
        result = await self.measure(expected)
        if not result.within_tolerance:
            raise RouterError(f"split probe of {self.url}: {result.describe()}")
        return result

    async def _one(self, client: httpx.AsyncClient) -> httpx.Response:
        import httpx

        try:
            answer = await exchange(
                client, "GET", self.url, deadline=self.timeout, max_bytes=self.max_response_bytes
            )
        except TimeoutError:  # this request's deadline; the whole measure's is raised above
            raise _NoAnswer from None
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            content=answer.body,
            request=httpx.Request("GET", self.url),
        )

    def _arm(self, response: httpx.Response) -> int:
        if self.classify is not None:
            verdict = self.classify(response)
            return 2 if verdict is None else (0 if verdict else 1)
        value = response.headers.get(self.header)
        if value is None:
            return 2
        return 0 if value.strip() == self.canary_value else 1


def binomial_tolerance(percent: float, requests: int, *, sigmas: float = 2.0) -> float:
    """Points of noise a random balancer shows at `percent` over `requests` requests.

    >>> from canarykit.routers import binomial_tolerance
    >>> round(binomial_tolerance(10, 1000), 2)
    1.9
    """
    share = percent / 100.0
    return 100.0 * sigmas * math.sqrt(share * (1.0 - share) / requests)
