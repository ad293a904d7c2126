"""`PrometheusSource`: both arms' requests, errors, latency and gauges from Prometheus.

How a window is read: once the window [start, end) has ended (and `settle` seconds more
have passed), every query template is filled with the arm's label value and the window's
length and run as an instant query evaluated at ``time=end``, all concurrently over one
HTTP client. ``increase(x[{window}])`` evaluated at `end` covers exactly (start, end], so
consecutive windows neither overlap nor leave gaps, and traffic after the window (the
next step's split) never leaks in.

Prometheus' lag: a counter is only known at scrape times. At ``time=end`` the newest sample
in range may be up to one scrape interval old; ``increase()`` extrapolates the rate it saw
to the window's edges (when the edge is within 1.1 average scrape intervals), so a steady
rate is estimated without bias, but a count can be off by the traffic of about one scrape
interval at each edge. For a window of W seconds scraped every I seconds, traffic that
starts and stops inside the window is over-counted by at most a factor W / (W - 2I)
(we measured +1.5% to +7% for W = 15 s and I = 1 s, where the bound is +15%). Waiting
longer does not change that answer, because samples after `end` are outside the range
(measured: the same counts at end + 0 s and end + 2.5 s), so `settle` is 0 by default.
Set it to the scrape timeout if targets are slow to scrape, plus any clock skew between
this host and Prometheus (a scrape that began before `end` is stored only when it
completes). Keep windows at least four scrape intervals long: `preflight`, which the
runner calls before traffic moves, checks it against the scrape interval of the targets
behind the queries. Requests and errors of one target share scrape times, so the error
*rate* is hardly affected by the extrapolation.

Latency buckets: classic buckets much wider than a margin hide a regression inside
them (prometheus_client's defaults are 2x to 2.5x wide where most services answer). When
the bucket holding an arm's median or p90 is wider than 1.25x, `collect` logs one warning
per rollout and histogram, naming both; see `canarykit.metrics.resolution`.

Errors: an empty `requests` answer raises `NoDataError`; connection errors, timeouts, HTTP
429 and 5xx are retried with exponential backoff (`attempts`, `backoff`) within a total
`deadline` and then raise `MetricsError`; other HTTP errors (a bad query: 400 or 422)
raise `MetricsError` at once, quoting Prometheus' ``errorType`` and ``error``; an answer
that is not what the API documents raises `MetricsError` quoting what was wrong.

Bounds: `timeout` is a deadline for one request as a whole (connecting, sending, and
reading the answer), so a server that drips its answer a byte at a time cannot stretch it;
`deadline` bounds a whole `collect` or query. An answer's body is streamed and read up to
`max_response_bytes` (4 MiB: Prometheus' answers take about 24 bytes a point, so that is
15 series of the 11,000 points a range query may return; the instant queries a window
makes answer with a few hundred bytes to a few kilobytes; a window's queries run
concurrently, so this bounds their memory together at some tens of megabytes); a longer
one raises `MetricsError` naming the option. Of an error
answer only the start is read, to quote it.

Credentials (`BearerAuth`, `BasicAuth`, header values) never appear in a repr, an error
message or a log record: they are only placed in request headers, and any text quoted from
an answer has them blanked out, on the raw text before it is cut, decoded or quoted.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ConfigError, MetricsError, NoDataError
from .._http import (
    HEADER_NAME,
    Answer,
    ResponseTooLarge,
    check_max_bytes,
    default_tls,
    exchange,
    header_secrets,
    import_httpx,
    redacting_httpx_logs,
    secret_redactor,
)
from .._observe import Arm, ArmStats, Observation, Window
from .._retry import backoff_delay
from .._safe import check_label_value
from .._text import Redactor
from ._answers import (
    Malformed,
    PrometheusSample,
    PrometheusSeries,
    bucket_counts,
    count_value,
    data_of,
    error_of,
    matrix,
    quote,
    single_value,
    vector,
)
from ._classic import classic_interval, histogram_from_classic
from ._promql import PrometheusQueries, fill, http_queries, vector_selectors

if TYPE_CHECKING:
    import httpx

__all__ = ["BasicAuth", "BearerAuth", "PrometheusSource"]

logger = logging.getLogger("canarykit.metrics.prometheus")

_EXTRA = "pip install 'canarykit[prometheus]'"
_HIDDEN = "***"
# See the module docs: 60 series of a range query's maximum 11,000 points.
_MAX_RESPONSE_BYTES = 4 << 20
# Characters of an error answer quoted in a message.
_EXCERPT = 200


def _import_httpx() -> Any:
    return import_httpx("PrometheusSource", _EXTRA)


def _check_secret(field: str, value: Any) -> str:
    # The value is never quoted back: a token read from a file with a stray newline
    # must not end up in a traceback.
    if not isinstance(value, str) or not value:
        raise ConfigError(field, _HIDDEN, "must be a non-empty string (value hidden)")
    if not value.isprintable():
        raise ConfigError(
            field, _HIDDEN, "must be printable, without line breaks or tabs (value hidden)"
        )
    return value


@attrs.frozen(kw_only=True, repr=False)
class BearerAuth:
    """Send ``Authorization: Bearer <token>`` with every request; the token is never shown.

    >>> BearerAuth(token="s3cr3t")
    BearerAuth(token='***')
    """

    token: str = attrs.field(validator=lambda _i, _a, v: _check_secret("auth.token", v))

    def header(self) -> str:
        """The ``Authorization`` header's value."""
        return f"Bearer {self.token}"

    def secrets(self) -> tuple[str, ...]:
        """The strings to blank out of any text quoted in errors or logs."""
        return (self.token,)

    def __repr__(self) -> str:
        return f"BearerAuth(token={_HIDDEN!r})"


@attrs.frozen(kw_only=True, repr=False)
class BasicAuth:
    """HTTP basic authentication; the password is never shown.

    >>> BasicAuth(username="grafana", password="s3cr3t")
    BasicAuth(username='grafana', password='***')
    """

    username: str = attrs.field()
    password: str = attrs.field(validator=lambda _i, _a, v: _check_secret("auth.password", v))

    @username.validator
    def _check_username(self, _attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not value or not value.isprintable() or ":" in value:
            raise ConfigError(
                "auth.username", value, "must be a non-empty printable string without ':'"
            )

    def header(self) -> str:
        """The ``Authorization`` header's value."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def secrets(self) -> tuple[str, ...]:
        """The strings to blank out of any text quoted in errors or logs."""
        return (self.password, self.header().split(" ", 1)[1])

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={_HIDDEN!r})"


def _check_url(value: Any) -> str:
    if not isinstance(value, str) or not value.isprintable() or " " in value:
        raise ConfigError("url", value, "must be an http:// or https:// URL")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url", value, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # Refused rather than used: httpx logs request URLs.
        raise ConfigError(
            "url",
            _HIDDEN,
            "must not hold credentials; pass auth=BasicAuth(...) instead (value hidden)",
        )
    if parts.query or parts.fragment:
        # A query string can hold a token: do not quote it back.
        raise ConfigError("url", _HIDDEN, "must not have a query or fragment (value hidden)")
    try:
        parts.port  # noqa: B018 (parses the port, raising ValueError when it is invalid)
    except ValueError:
        raise ConfigError("url", value, "has an invalid port") from None
    return value.rstrip("/")


def _freeze_headers(value: Any) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigError("headers", value, "must be a mapping of header name to value")
    frozen: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise ConfigError("headers", name, "header names must be HTTP tokens")
        frozen[name] = _check_secret(f"headers[{name!r}]", header_value)
    return MappingProxyType(frozen)


def _positive(field: str) -> Any:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, value, "must be a number of seconds")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(field, value, "must be finite and > 0")

    return check


def _not_negative(field: str) -> Any:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, value, "must be a number of seconds")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field, value, "must be finite and >= 0")

    return check


def _check_attempts(_instance: Any, _attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ConfigError("attempts", value, "must be an int in [1, 100]")


def _check_verify(_instance: Any, _attribute: Any, value: Any) -> None:
    if not isinstance(value, (bool, ssl.SSLContext)):
        raise ConfigError("verify", value, "must be True, False or an ssl.SSLContext")


def _check_auth(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, (BearerAuth, BasicAuth)):
        raise ConfigError("auth", type(value).__name__, "must be BearerAuth, BasicAuth or None")


def _check_queries(_instance: Any, _attribute: Any, value: Any) -> None:
    if not isinstance(value, PrometheusQueries):
        raise ConfigError("queries", value, "must be PrometheusQueries (see http_queries())")


def _check_promql(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("promql", value, "must be a non-empty PromQL query")
    if any(not (char.isprintable() or char in "\n\t") for char in value):
        raise ConfigError("promql", value, "must not contain control characters")
    return value


def _finite(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field, value, "must be a finite number of seconds")
    return float(value)


@attrs.frozen(kw_only=True)
class PrometheusSource:
    """A `MetricsSource` reading both arms from Prometheus' HTTP API (needs httpx).

    - `url`: Prometheus' base URL (``http://prometheus:9090``, or with a path prefix).
    - `stable`, `canary`: each arm's label value (``"v1"``, ``"v2"``), filled into the
      queries' ``{arm}``; checked so that they cannot leave their quoted string.
    - `queries`: the query templates (`PrometheusQueries`); `http_queries()` by default,
      which reads ``http_requests_total{version, code}`` and the classic histogram
      ``http_request_duration_seconds{version}``.
    - `auth`: `BearerAuth`, `BasicAuth` or None; `headers`: more request headers (for
      example a tenant id). Neither is ever shown in a repr, an error or a log.
    - `timeout`: seconds for one HTTP request, its answer included (5); `attempts`:
      tries per query (3);
      `backoff`: seconds before the first retry, doubling after each (0.25);
      `deadline`: seconds for a whole `collect` or query, retries included (20, less
      than the runner's default 30 s call timeout).
    - `settle`: seconds to wait after the window's end before querying (0); see the
      module docs on Prometheus' lag. `settle + deadline` should stay below the runner's
      `call_timeout`.
    - `verify`: TLS certificate verification (True, False or an `ssl.SSLContext`).
    - `max_response_bytes`: the most of an answer read (4 MiB, see the module docs); a
      longer answer raises `MetricsError`.

    >>> source = PrometheusSource(
    ...     url="http://127.0.0.1:9090", stable="v1", canary="v2", auth=BearerAuth(token="s3")
    ... )
    >>> source  # doctest: +ELLIPSIS
    PrometheusSource(url='http://127.0.0.1:9090', stable='v1', canary='v2', auth=BearerAuth(...
    """

    url: str = attrs.field(converter=_check_url)
    stable: str = attrs.field(validator=lambda _i, _a, v: check_label_value("stable", v))
    canary: str = attrs.field(validator=lambda _i, _a, v: check_label_value("canary", v))
    queries: PrometheusQueries = attrs.field(
        factory=http_queries, validator=_check_queries, repr=False
    )
    auth: BearerAuth | BasicAuth | None = attrs.field(default=None, validator=_check_auth)
    headers: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_freeze_headers,
        hash=False,
        repr=lambda headers: repr(dict.fromkeys(headers, _HIDDEN)),
    )
    timeout: float = attrs.field(default=5.0, validator=_positive("timeout"))
    attempts: int = attrs.field(default=3, validator=_check_attempts)
    backoff: float = attrs.field(default=0.25, validator=_not_negative("backoff"))
    deadline: float = attrs.field(default=20.0, validator=_positive("deadline"))
    settle: float = attrs.field(default=0.0, validator=_not_negative("settle"))
    verify: bool | ssl.SSLContext = attrs.field(default=True, validator=_check_verify, repr=False)
    max_response_bytes: int = attrs.field(
        default=_MAX_RESPONSE_BYTES,
        validator=lambda _i, _a, v: check_max_bytes("max_response_bytes", v),
        repr=False,
    )
    # Histogram names already warned about in this rollout (see `preflight`).
    _warned: set[str] = attrs.field(factory=set, init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.canary == self.stable:
            raise ConfigError("canary", self.canary, "must differ from stable")
        _import_httpx()  # fail at construction, before a rollout starts

    # -- MetricsSource --------------------------------------------------------------------

    async def collect(self, window: Window) -> Observation:
        """Both arms' stats for `window`, queried at its end; see the class and module docs.

        Raises `NoDataError` when an arm's `requests` query answers with no series, and
        `MetricsError` for everything else that goes wrong.
        """
        if not isinstance(window, Window):
            raise ConfigError("window", window, "must be a Window")
        wait = window.end + self.settle - time.time()
        if wait > 0:
            await anyio.sleep(wait)
        give_up_at = anyio.current_time() + self.deadline
        jobs = self._filled(window.duration)
        started = time.perf_counter()
        async with self._connected() as client:
            answers = await self._gather(client, jobs, window.end, give_up_at)
        logger.debug(
            "collected %d queries for [%s, %s) in %.1f ms",
            len(jobs),
            window.start,
            window.end,
            (time.perf_counter() - started) * 1000,
        )
        empty = [arm for arm in (Arm.STABLE, Arm.CANARY) if not answers[(arm, "requests")]]
        if empty:
            which = " and ".join(f"{arm.value} ({self._label(arm)!r})" for arm in empty)
            raise NoDataError(
                self._redact(
                    f"Prometheus has no requests for the {which} in "
                    f"[{window.start}, {window.end}): the query "
                    f"{quote(dict(jobs)[(empty[0], 'requests')])} returned no series"
                )
            )
        observation = Observation(
            start=window.start,
            end=window.end,
            stable=self._arm_stats(Arm.STABLE, answers),
            canary=self._arm_stats(Arm.CANARY, answers),
        )
        self._warn_coarse_buckets(answers)
        return observation

    def _filled(self, seconds: float) -> list[tuple[tuple[Arm, str], str]]:
        """Every query of both arms for a window of `seconds`, keyed by (arm, query name)."""
        queries = self.queries
        named: list[tuple[str, str]] = [("requests", queries.requests), ("errors", queries.errors)]
        if queries.latency_buckets is not None:
            named.append(("latency_buckets", queries.latency_buckets))
        if queries.latency_sum is not None:
            named.append(("latency_sum", queries.latency_sum))
        named.extend((f"gauges[{name!r}]", template) for name, template in queries.gauges.items())
        jobs = []
        for arm, label_value in ((Arm.STABLE, self.stable), (Arm.CANARY, self.canary)):
            for name, template in named:
                promql = fill(name, template, arm=label_value, seconds=seconds)
                jobs.append(((arm, name), promql))
        return jobs

    # -- before a rollout -----------------------------------------------------------------

    async def preflight(self, *, analysis_interval: float) -> None:
        """Check, before traffic moves, that windows of `analysis_interval` seconds (the
        plan's shortest) are at least four scrape intervals long; start a rollout's
        once-only warnings afresh.

        The scrape interval is that of the targets behind the queries' series: the
        selectors of every query, filled for both arms, are asked for their ``job`` and
        ``instance`` labels (``group by (job, instance) (...)``), and Prometheus' targets
        API (``GET /api/v1/targets?state=active``) gives each target's
        ``scrapeInterval``. A target matches a series with its ``job`` and ``instance``
        (any instance of the job when the series has no ``instance``, as from a recording
        rule). Raises `ConfigError` naming the analysis interval, the longest scrape
        interval and its target when the windows are shorter than four of them.

        Never blocks a rollout for want of an answer: when Prometheus cannot answer (no
        targets API behind a proxy or a hosted service, an error, a timeout) or the
        series cannot be tied to targets (no series yet; labels rewritten by federation,
        remote write or ``honor_labels``), it logs a warning saying the check was not
        made, and returns. Bounded like every call: `timeout`, `attempts`, one
        `deadline` for the whole check, `max_response_bytes`.
        """  # noqa: D205 (the summary needs two lines)
        seconds = _finite("analysis_interval", analysis_interval)
        if seconds <= 0:
            raise ConfigError("analysis_interval", analysis_interval, "must be > 0 seconds")
        self._warned.clear()
        try:
            longest = await self._longest_scrape_interval(seconds)
        except (MetricsError, _Unchecked) as exc:
            logger.warning(
                "the scrape interval was not checked against the analysis interval "
                "(%g s): %s; windows should be at least four scrape intervals long",
                seconds,
                exc,
            )
            return
        interval, labels, matched = longest
        target = _target_text(labels)
        if seconds < _SCRAPES_PER_WINDOW * interval:
            raise ConfigError(
                "analysis_interval",
                seconds,
                f"must be at least {_SCRAPES_PER_WINDOW} scrape intervals "
                f"({_SCRAPES_PER_WINDOW * interval:g} s): Prometheus scrapes the target "
                f"{target} behind the queries every {interval:g} s",
            )
        logger.info(
            "analysis interval %g s covers at least %d scrapes of the %d target%s behind "
            "the queries (longest scrape interval %g s, %s)",
            seconds,
            _SCRAPES_PER_WINDOW,
            matched,
            "s" * (matched != 1),
            interval,
            target,
        )

    async def _longest_scrape_interval(
        self, seconds: float
    ) -> tuple[float, Mapping[str, str], int]:
        """The longest scrape interval of the targets behind the queries, that target's
        labels, and how many targets matched; `_Unchecked` when it cannot be told.
        """  # noqa: D205 (the summary needs two lines)
        selectors: list[str] = []
        for _, promql in self._filled(seconds):
            for selector in vector_selectors(promql):
                if selector not in selectors:
                    selectors.append(selector)
        if not selectors:
            raise _Unchecked("the queries have no label selectors to look up")
        grouped = " or ".join(f"group by (job, instance) ({selector})" for selector in selectors)
        give_up_at = anyio.current_time() + self.deadline
        async with self._connected() as client:
            series = await self._instant(
                client, grouped, time.time(), give_up_at, "query for the series' targets"
            )
            behind = {
                (sample.labels["job"], sample.labels.get("instance"))
                for sample in series
                if "job" in sample.labels
            }
            if not behind:
                raise _Unchecked(
                    self._redact(
                        "Prometheus has no series with a job label for the queries' selectors "
                        f"({quote(', '.join(selectors), 120)}) yet"
                    )
                )
            data = await self._request(
                client,
                "GET",
                "/api/v1/targets",
                give_up_at,
                "targets API",
                shown="state=active",
                params={"state": "active"},
            )
        try:
            targets = _active_targets(data)
        except Malformed as exc:
            raise MetricsError(self._redact(f"Prometheus targets API: {exc}")) from None
        longest: tuple[float, Mapping[str, str]] | None = None
        matched = 0
        unknown: list[str] = []
        for labels, interval_text in targets:
            job, instance = labels.get("job"), labels.get("instance")
            if (job, instance) not in behind and (job, None) not in behind:
                continue
            matched += 1
            interval = _prometheus_seconds(interval_text)
            if interval is None:
                unknown.append(_target_text(labels))
                continue
            if longest is None or interval > longest[0]:
                longest = (interval, labels)
        if longest is None:
            shown = ", ".join(
                f"job={job!r}" + ("" if instance is None else f" instance={instance!r}")
                for job, instance in sorted(behind, key=str)[:5]
            )
            if matched:
                why = f"no scrapeInterval for {', '.join(unknown[:3])} in the targets API"
            else:
                why = f"no active target has the labels of the queries' series ({shown})"
            raise _Unchecked(self._redact(why))
        return longest[0], longest[1], matched

    # -- coarse buckets -------------------------------------------------------------------

    def _warn_coarse_buckets(self, answers: dict[tuple[Arm, str], list[PrometheusSample]]) -> None:
        """Warn, once per rollout and metric, when the classic buckets are wider than
        `_COARSE` where an arm's requests fall (its median or p90): quantiles read from
        such buckets cannot show a change of a few percent.
        """  # noqa: D205 (the summary needs two lines)
        template = self.queries.latency_buckets
        if template is None:
            return
        metric = _histogram_name(template)
        if metric in self._warned:
            return
        widest: tuple[float, Arm, float, float, float] | None = None
        for arm in (Arm.STABLE, Arm.CANARY):
            samples = answers.get((arm, "latency_buckets"))
            if not samples:
                continue
            try:
                counts = bucket_counts(samples)
                intervals = [(q, classic_interval(counts, q)) for q in _BULK]
            except (Malformed, ConfigError):  # pragma: no cover (refused by _arm_stats)
                continue
            for q, interval in intervals:
                if interval is None:
                    continue
                lower, upper = interval
                ratio = upper / lower if lower > 0 else math.inf
                if widest is None or ratio > widest[0]:
                    widest = (ratio, arm, q, lower, upper)
        if widest is None or widest[0] <= _COARSE:
            return
        self._warned.add(metric)
        ratio, arm, q, lower, upper = widest
        if lower == 0:
            where = f"below its lowest bound, {upper:g} s"
        elif upper == math.inf:
            where = f"above its highest bound, {lower:g} s"
        else:
            where = f"in the bucket ({lower:g}, {upper:g}] s, {ratio:.2g}x wide"
        logger.warning(
            "latency buckets of %s are too coarse to see a change of a few percent: the "
            "%s's (%r) %s lies %s. Give the histogram buckets about 1.1x to 1.2x apart "
            "around the usual latency, or a native histogram (see 'Latency buckets' in "
            "the deciders' docs); warned once per rollout",
            metric,
            arm.value,
            self._label(arm),
            "median" if q == 0.5 else f"p{q * 100:g}",
            where,
        )

    # -- plain queries --------------------------------------------------------------------

    async def query(self, promql: str, *, at: float | None = None) -> list[PrometheusSample]:
        """Run an instant query (PromQL as given, no placeholders) at `at` (epoch seconds,
        default now); the same retries and error classes as `collect`.

        Raises `NoDataError` when the answer has no series.
        """  # noqa: D205 (the summary needs two lines)
        promql = _check_promql(promql)
        when = time.time() if at is None else _finite("at", at)
        give_up_at = anyio.current_time() + self.deadline
        async with self._connected() as client:
            samples = await self._instant(client, promql, when, give_up_at, "query")
        if not samples:
            raise NoDataError(self._redact(f"Prometheus query {quote(promql)} returned no series"))
        return samples

    async def query_range(
        self, promql: str, *, start: float, end: float, step: float
    ) -> list[PrometheusSeries]:
        """Run a range query from `start` to `end` (epoch seconds) every `step` seconds.

        The same retries and error classes as `collect`; `NoDataError` when the answer
        has no series.
        """
        promql = _check_promql(promql)
        start = _finite("start", start)
        end = _finite("end", end)
        step = _finite("step", step)
        if end < start:
            raise ConfigError("end", end, f"must not be before start ({start!r})")
        if step <= 0:
            raise ConfigError("step", step, "must be > 0")
        form = {
            "query": promql,
            "start": _time_text(start),
            "end": _time_text(end),
            "step": repr(step),
            "timeout": f"{self.timeout:g}",
        }
        give_up_at = anyio.current_time() + self.deadline
        async with self._connected() as client:
            data = await self._post(client, "/api/v1/query_range", form, give_up_at, "query_range")
        try:
            series = matrix(data)
        except Malformed as exc:
            raise MetricsError(self._redact(f"Prometheus query_range: {exc}")) from None
        if not series:
            raise NoDataError(
                self._redact(f"Prometheus range query {quote(promql)} returned no series")
            )
        return series

    # -- HTTP -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client, with httpx's and httpcore's log records redacted while it is in use."""
        with redacting_httpx_logs(self._redactor()):
            async with self._client() as client:
                yield client

    def _client(self) -> httpx.AsyncClient:
        module = _import_httpx()
        headers = {"Accept": "application/json", "User-Agent": "canarykit"}
        if self.auth is not None:
            headers["Authorization"] = self.auth.header()
        headers.update(self.headers)
        client: httpx.AsyncClient = module.AsyncClient(
            headers=headers,
            timeout=module.Timeout(self.timeout),
            verify=default_tls(module) if self.verify is True else self.verify,
            follow_redirects=False,
        )
        return client

    async def _gather(
        self,
        client: httpx.AsyncClient,
        jobs: list[tuple[tuple[Arm, str], str]],
        at: float,
        give_up_at: float,
    ) -> dict[tuple[Arm, str], list[PrometheusSample]]:
        """Run the queries concurrently; the first failure cancels the others."""
        answers: dict[tuple[Arm, str], list[PrometheusSample]] = {}
        failures: list[MetricsError] = []
        async with anyio.create_task_group() as group:

            async def run(key: tuple[Arm, str], promql: str) -> None:
                what = f"query {key[1]} for the {key[0].value} ({self._label(key[0])!r})"
                try:
                    answers[key] = await self._instant(client, promql, at, give_up_at, what)
                except MetricsError as exc:
                    failures.append(exc)
                    group.cancel_scope.cancel()

            for key, promql in jobs:
                group.start_soon(run, key, promql)
        if failures:
            raise failures[0]
        return answers

    async def _instant(
        self, client: httpx.AsyncClient, promql: str, at: float, give_up_at: float, what: str
    ) -> list[PrometheusSample]:
        form = {"query": promql, "time": _time_text(at), "timeout": f"{self.timeout:g}"}
        data = await self._post(client, "/api/v1/query", form, give_up_at, what)
        try:
            return vector(data)
        except Malformed as exc:
            raise MetricsError(self._redact(f"Prometheus {what}: {exc}")) from None

    async def _post(
        self,
        client: httpx.AsyncClient,
        path: str,
        form: dict[str, str],
        give_up_at: float,
        what: str,
    ) -> Any:
        """POST a query (form-encoded: no URL length limit, not in access logs) and return
        the answer's `data`, retrying what can succeed on a second try.
        """  # noqa: D205 (the summary needs two lines)
        return await self._request(
            client, "POST", path, give_up_at, what, shown=quote(form["query"]), data=form
        )

    async def _request(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        give_up_at: float,
        what: str,
        *,
        shown: str,
        **request: Any,
    ) -> Any:
        """One API call (`request` is httpx's `data` or `params`), the answer's `data`
        returned; retried as the module docs say. `shown` names it in debug logs.
        """  # noqa: D205 (the summary needs two lines)
        httpx = _import_httpx()
        url = self.url + path
        last = "no attempt was made before the deadline"
        tried = 0
        for attempt in range(1, self.attempts + 1):
            remaining = give_up_at - anyio.current_time()
            if remaining <= 0:
                break
            tried = attempt
            per_call = min(self.timeout, remaining)
            answer: Answer | None = None
            started = time.perf_counter()
            try:
                answer = await exchange(
                    client,
                    method,
                    url,
                    deadline=per_call,
                    max_bytes=self.max_response_bytes,
                    **request,
                )
            except TimeoutError:
                last = f"no answer within {per_call:g} s"
            except ResponseTooLarge as exc:  # the same query gets the same answer
                raise MetricsError(
                    f"Prometheus {what}: {exc.advice('max_response_bytes')}"
                ) from None
            except httpx.TransportError as exc:
                last = self._redact(f"{type(exc).__name__}: {exc}")
            except httpx.HTTPError as exc:  # an invalid request: retrying cannot help
                raise MetricsError(
                    self._redact(f"Prometheus {what}: {type(exc).__name__}: {exc}")
                ) from None
            elapsed_ms = (time.perf_counter() - started) * 1000
            if answer is not None:
                status = answer.status
                logger.debug("%s %s: HTTP %d in %.1f ms", what, shown, status, elapsed_ms)
                if answer.ok:
                    return self._data(answer, what)
                detail = self._detail(answer)
                if status != 429 and status < 500:
                    hint = " (check the credentials)" if status in (401, 403) else ""
                    raise MetricsError(
                        self._redact(f"Prometheus {what}: HTTP {status}{hint}: {detail}")
                    )
                last = f"HTTP {status}: {detail}"
            else:
                logger.debug("%s %s: %s", what, shown, last)
            if attempt < self.attempts:
                pause = min(backoff_delay(self.backoff, attempt), give_up_at - anyio.current_time())
                logger.warning(
                    "Prometheus %s failed (%s); retrying in %.2f s",
                    what,
                    self._redact(last),
                    max(pause, 0.0),
                )
                if pause > 0:
                    await anyio.sleep(pause)
        raise MetricsError(
            self._redact(
                f"Prometheus {what}: gave up after {tried} attempt{'s' * (tried != 1)} "
                f"within {self.deadline:g} s: {last}"
            )
        )

    def _data(self, answer: Answer, what: str) -> Any:
        body = self._blanked(answer)
        refused = error_of(body)
        if refused is not None:
            raise MetricsError(f"Prometheus {what}: {quote(self._redact(refused))}")
        try:
            data, warnings = data_of(body)
        except Malformed as exc:
            raise MetricsError(self._redact(f"Prometheus {what}: {exc}")) from None
        for warning in warnings:
            logger.warning("Prometheus %s warns: %s", what, quote(self._redact(warning)))
        return data

    def _blanked(self, answer: Answer) -> bytes:
        """The body with every secret blanked on its raw text, before anything parses,
        cuts or quotes it (a JSON field, a repr, an excerpt would each change its form).
        """  # noqa: D205 (the summary needs two lines)
        redact = self._redactor()
        if not redact:
            return answer.body
        text = answer.body.decode("utf-8", "surrogateescape")
        hidden = redact(text, cut=answer.cut)
        return answer.body if hidden == text else hidden.encode("utf-8", "surrogateescape")

    def _detail(self, answer: Answer) -> str:
        refused = None if answer.cut else error_of(self._blanked(answer))
        if refused is not None:
            return quote(self._redact(refused))
        text = answer.text(self._redactor(), limit=_EXCERPT).strip()
        return text if text else "(empty body)"

    # -- results --------------------------------------------------------------------------

    def _arm_stats(
        self, arm: Arm, answers: dict[tuple[Arm, str], list[PrometheusSample]]
    ) -> ArmStats:
        whose = f"for the {arm.value} ({self._label(arm)!r})"

        def value(name: str) -> float | None:
            try:
                return single_value(answers[(arm, name)])
            except Malformed as exc:
                raise MetricsError(
                    self._redact(f"Prometheus query {name} {whose}: {exc}")
                ) from None

        def count(name: str, number: float) -> int:
            try:
                return count_value(name, number)
            except Malformed as exc:
                raise MetricsError(
                    self._redact(f"Prometheus query {name} {whose}: {exc}")
                ) from None

        requests_value = value("requests")
        assert requests_value is not None  # empty answers were refused by the caller
        requests = count("requests", requests_value)
        errors_value = value("errors")
        errors = 0 if errors_value is None else count("errors", errors_value)
        # Requests and errors are separate series, each extrapolated by increase(); their
        # rounded estimates can cross when nearly every request failed.
        if errors > requests:
            logger.debug("errors (%d) exceed requests (%d) %s; capped", errors, requests, whose)
            errors = requests
        latency = None
        buckets = answers.get((arm, "latency_buckets"))
        if buckets:
            total = value("latency_sum") if (arm, "latency_sum") in answers else None
            if total is not None and (not math.isfinite(total) or total < 0):
                raise MetricsError(f"Prometheus query latency_sum {whose}: it is {total!r}")
            try:
                latency = histogram_from_classic(bucket_counts(buckets), sum=total)
            except (Malformed, ConfigError) as exc:
                raise MetricsError(
                    self._redact(f"Prometheus query latency_buckets {whose}: {exc}")
                ) from None
        gauges: dict[str, float] = {}
        for name in self.queries.gauges:
            reading = value(f"gauges[{name!r}]")
            gauges[name] = math.nan if reading is None else reading
        return ArmStats(requests=requests, errors=errors, latency=latency, gauges=gauges)

    def _label(self, arm: Arm) -> str:
        return self.canary if arm is Arm.CANARY else self.stable

    def _redactor(self) -> Redactor:
        secrets = header_secrets(self.headers)
        if self.auth is not None:
            secrets.extend(self.auth.secrets())
        return secret_redactor(secrets)

    def _redact(self, text: str) -> str:
        return self._redactor()(text)


def _time_text(at: float) -> str:
    return f"{at:.3f}"


class _Unchecked(Exception):
    """The scrape interval could not be told; the message says why."""


# A window must span this many scrape intervals (see the module docs).
_SCRAPES_PER_WINDOW = 4
# Classic buckets wider than this ratio where the mass is get a warning: about two
# native buckets; a 3% margin needs buckets 1.1x to 1.2x wide.
_COARSE = 1.25
# Where "the mass" is: the quantiles whose classic bucket is checked.
_BULK = (0.5, 0.9)
# Prometheus' own duration syntax (model.ParseDuration), as the targets API writes it.
_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def _prometheus_seconds(text: Any) -> float | None:
    """Seconds of a Prometheus duration (``15s``, ``1m30s``, ``500ms``); None if not one."""
    if not isinstance(text, str) or not text or len(text) > 64:
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    parts = zip(match.groups(), _UNITS, strict=True)
    seconds = sum(int(part) * unit for part, unit in parts if part)
    return seconds if seconds > 0 else None


def _active_targets(data: Any) -> list[tuple[Mapping[str, str], Any]]:
    """(labels, scrapeInterval as given) of each active target in a targets API answer."""
    if not isinstance(data, dict) or not isinstance(data.get("activeTargets"), list):
        raise Malformed(f"the answer's data has no activeTargets list: {quote(data)}")
    targets: list[tuple[Mapping[str, str], Any]] = []
    for item in data["activeTargets"]:
        labels = item.get("labels") if isinstance(item, dict) else None
        if not isinstance(labels, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
        ):
            raise Malformed(f"a target's labels are not an object of strings: {quote(item)}")
        targets.append((MappingProxyType(labels), item.get("scrapeInterval")))
    return targets


def _target_text(labels: Mapping[str, str]) -> str:
    return (
        "{"
        + ", ".join(f"{name}={labels[name]!r}" for name in ("job", "instance") if name in labels)
        + "}"
    )


def _histogram_name(template: str) -> str:
    """The histogram a latency_buckets template reads (``..._bucket`` dropped), for logs."""
    for selector in vector_selectors(template):
        name = selector.split("{", 1)[0]
        if name:
            return name.removesuffix("_bucket")
    return "the latency_buckets query"
