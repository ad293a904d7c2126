"""PromQL query templates, filled per arm and per window, and the ready-made HTTP queries.

How a template works: it is plain PromQL in which ``{arm}`` stands for the arm's label
value and ``{window}`` for the window's length as a PromQL duration (``30s``, ``1500ms``).
Only a ``{`` followed by a bare name and ``}`` is a placeholder; every other brace is
PromQL's own (``http_requests_total{version="{arm}"}`` needs no doubled braces), and
``#`` comments are left alone. A template is checked when it is given, not when it
runs: an unknown placeholder, an unterminated string, or an ``{arm}`` outside a quoted
string is refused with a `ConfigError` naming the field. ``{arm}`` must sit inside quotes
because label values are only checked for what could end a quoted string (quotes,
backslash, line breaks, braces); outside quotes, a value such as ``v1) or vector(1`` would
change the query.

>>> q = PrometheusQueries(
...     requests='sum(increase(hits_total{track="{arm}"}[{window}]))',
...     errors='sum(increase(hits_total{track="{arm}",code=~"5.."}[{window}]))',
... )
>>> fill("requests", q.requests, arm="canary", seconds=90.0)
'sum(increase(hits_total{track="canary"}[90s]))'
>>> PrometheusQueries(requests="up{job={arm}}", errors="0")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
canarykit.ConfigError: requests: {arm} must be inside a quoted string, as in version="{arm}", ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .._errors import ConfigError
from .._observe import METRIC_NAMES
from .._safe import check_label_value, check_pattern

__all__ = [
    "PLACEHOLDERS",
    "PrometheusQueries",
    "check_label_name",
    "check_metric_name",
    "check_template",
    "fill",
    "http_queries",
    "promql_duration",
    "vector_selectors",
]

PLACEHOLDERS: frozenset[str] = frozenset({"arm", "window"})
"""The names a query template may use: ``{arm}`` (label value) and ``{window}`` (duration)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METRIC_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]{0,199}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_MAX_TEMPLATE = 10_000


def check_metric_name(field: str, value: Any) -> str:
    """A Prometheus metric name: letters, digits, `_` and `:`, not starting with a digit."""
    if not isinstance(value, str) or not _METRIC_NAME.fullmatch(value):
        raise ConfigError(field, value, "must be a metric name ([A-Za-z_:][A-Za-z0-9_:]*)")
    return value


def check_label_name(field: str, value: Any) -> str:
    """A Prometheus label name: letters, digits and `_`, not starting with a digit."""
    if not isinstance(value, str) or not _LABEL_NAME.fullmatch(value):
        raise ConfigError(field, value, "must be a label name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _pieces(field: str, text: Any) -> list[str]:
    """Split a template into literal text and placeholder names (odd positions).

    The scanner tracks PromQL string literals ("...", '...' with backslash escapes, and
    raw `...`) and comments, so that it knows whether each placeholder is inside quotes.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(field, text, "must be a non-empty PromQL query")
    if len(text) > _MAX_TEMPLATE:
        raise ConfigError(field, text[:80] + "...", f"must be at most {_MAX_TEMPLATE} characters")
    if any(not (char.isprintable() or char in "\n\t") for char in text):
        raise ConfigError(field, text, "must not contain control characters other than newline")
    pieces: list[str] = []
    literal_start = 0
    quote: str | None = None
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if quote is not None:
            if char == "\\" and quote != "`":
                position += 2
                continue
            if char == quote:
                quote = None
            elif char == "\n" and quote != "`":
                raise ConfigError(field, text, "has a line break inside a quoted string")
        elif char in "\"'`":
            quote = char
        elif char == "#":
            end = text.find("\n", position)
            position = length if end < 0 else end
            continue
        if char == "{":
            match = _PLACEHOLDER.match(text, position)
            if match is not None:
                name = match.group(1)
                if name not in PLACEHOLDERS:
                    raise ConfigError(
                        field,
                        text,
                        f"unknown placeholder {{{name}}} (known: {{arm}}, {{window}})",
                    )
                if name == "arm" and quote is None:
                    raise ConfigError(
                        field,
                        text,
                        '{arm} must be inside a quoted string, as in version="{arm}"',
                    )
                pieces.append(text[literal_start:position])
                pieces.append(name)
                position = literal_start = match.end()
                continue
        position += 1
    if quote is not None:
        raise ConfigError(field, text, f"has an unterminated string (opened with {quote})")
    pieces.append(text[literal_start:])
    return pieces


def check_template(field: str, value: Any) -> str:
    """Return `value` if it is a valid query template, else raise ConfigError naming `field`."""
    _pieces(field, value)
    return str(value)


def promql_duration(seconds: float) -> str:
    """A PromQL duration for `seconds`: whole seconds as ``30s``, else milliseconds.

    >>> promql_duration(30.0), promql_duration(29.9996), promql_duration(1.5)
    ('30s', '30s', '1500ms')
    """
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def fill(field: str, template: str, *, arm: str, seconds: float) -> str:
    """The query `template` with ``{arm}`` and ``{window}`` filled in.

    `arm` is checked with `check_label_value` (again: callers normally checked it at
    construction), so nothing can leave its quoted string.
    """
    pieces = _pieces(field, template)
    values = {"arm": check_label_value("arm", arm), "window": promql_duration(seconds)}
    return "".join(
        values[piece] if position % 2 else piece for position, piece in enumerate(pieces)
    )


# Words that can stand right before a brace without naming a metric (`x and{...}`).
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "atan2"}
)  # fmt: skip
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:")


def _string_end(text: str, start: int) -> int:
    """The position just past the PromQL string literal opened at `start`."""
    quote = text[start]
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\" and quote != "`":
            position += 2
            continue
        if char == quote:
            return position + 1
        position += 1
    return len(text)


def vector_selectors(promql: str) -> list[str]:
    """The selectors with label matchers in `promql`, ``name{...}`` or ``{...}``, in order.

    Strings and ``#`` comments are skipped, so a brace inside them is not a selector.
    A selector without braces (``up``) is not found; every selector of a filled template
    that tells the arms apart has braces, since ``{arm}`` sits in a label matcher. Used to
    ask Prometheus which targets are behind a query's series.

    >>> vector_selectors('sum(rate(a_total{v="x}"}[5m])) / on() b{c="d"} # e{f="g"}')
    ['a_total{v="x}"}', 'b{c="d"}']
    """
    found: list[str] = []
    position, length = 0, len(promql)
    while position < length:
        char = promql[position]
        if char in "\"'`":
            position = _string_end(promql, position)
            continue
        if char == "#":
            end = promql.find("\n", position)
            position = length if end < 0 else end
            continue
        if char != "{":
            position += 1
            continue
        close = position + 1
        while close < length and promql[close] != "}":
            close = _string_end(promql, close) if promql[close] in "\"'`" else close + 1
        if close >= length:
            break  # unbalanced: Prometheus will say what is wrong with it
        start = position
        while start > 0 and promql[start - 1] in _NAME_CHARS:
            start -= 1
        name = promql[start:position]
        if name in _KEYWORDS or not _METRIC_NAME.fullmatch(name or "_"):
            start = position
        found.append(promql[start : close + 1])
        position = close + 1
    return found


_NO_GAUGES: Mapping[str, str] = MappingProxyType({})


def _freeze_gauges(value: Any) -> Mapping[str, str]:
    if value is None:
        return _NO_GAUGES
    if not isinstance(value, Mapping):
        raise ConfigError("gauges", value, "must be a mapping of gauge name to query template")
    frozen: dict[str, str] = {}
    for name, template in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("gauges", name, "gauge names must be non-empty strings")
        if name in METRIC_NAMES:
            raise ConfigError(
                f"gauges[{name!r}]", name, "is a built-in metric name; give the gauge another"
            )
        frozen[name] = check_template(f"gauges[{name!r}]", template)
    return MappingProxyType(frozen) if frozen else _NO_GAUGES


def _optional_template(field: str) -> Any:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None:
            check_template(field, value)

    return check


@attrs.frozen(kw_only=True)
class PrometheusQueries:
    """The PromQL templates a `PrometheusSource` runs for each arm and window.

    Each is evaluated as an instant query at the window's end; see the module docs for
    the ``{arm}`` and ``{window}`` placeholders. What each must return:

    - `requests`: one number, the requests served in the window. An empty answer means
      the arm has no data: `collect` raises `NoDataError`.
    - `errors`: one number, the failed requests in the window. An empty answer (no error
      series at all, which is how a healthy app without pre-created error series looks)
      counts as 0 errors.
    - `latency_buckets` (optional): classic histogram buckets, one series per `le` label,
      each the cumulative count in the window (``sum by (le) (increase(..._bucket...))``).
      Mapped into a `LatencyHistogram` by `histogram_from_classic`. Empty: no latency.
    - `latency_sum` (optional, with `latency_buckets`): one number, the total seconds.
    - `gauges`: name to template, one number each; an empty answer, NaN or an infinity
      is "no reading" (the gauge is NaN in the observation).

    `http_queries()` builds these for the usual ``http_requests_total`` and
    ``http_request_duration_seconds`` metrics.
    """

    requests: str = attrs.field(validator=lambda _i, _a, v: check_template("requests", v))
    errors: str = attrs.field(validator=lambda _i, _a, v: check_template("errors", v))
    latency_buckets: str | None = attrs.field(
        default=None, validator=_optional_template("latency_buckets")
    )
    latency_sum: str | None = attrs.field(default=None, validator=_optional_template("latency_sum"))
    gauges: Mapping[str, str] = attrs.field(
        default=_NO_GAUGES, converter=_freeze_gauges, hash=False, repr=lambda g: repr(dict(g))
    )

    def __attrs_post_init__(self) -> None:
        if self.latency_sum is not None and self.latency_buckets is None:
            raise ConfigError("latency_sum", self.latency_sum, "needs latency_buckets as well")


def _selector(metric: str, matchers: list[tuple[str, str, str]]) -> str:
    inside = ",".join(f'{name}{op}"{value}"' for name, op, value in matchers)
    return f"{metric}{{{inside}}}"


def http_queries(
    *,
    arm_label: str = "version",
    requests_metric: str = "http_requests_total",
    status_label: str = "code",
    error_status: str = "5..",
    latency_metric: str | None = "http_request_duration_seconds",
    matchers: Mapping[str, str] | None = None,
    gauges: Mapping[str, str] | None = None,
) -> PrometheusQueries:
    """Queries for the usual HTTP metrics: a request counter with a status label, and a
    classic latency histogram, each labelled with the arm.

    - `arm_label`: the label whose value tells the arms apart (``version="v1"``).
    - `requests_metric`: a counter of requests with a `status_label` (``code="500"``);
      errors are the requests whose status matches the regex `error_status` (5xx).
    - `latency_metric`: the classic histogram's base name (``_bucket`` and ``_sum`` are
      appended), or None for no latency.
    - `matchers`: more label equalities every selector must hold (``{"job": "shop"}``).
    - `gauges`: extra named query templates, one number per arm (see `PrometheusQueries`).

    >>> q = http_queries(matchers={"job": "shop"})
    >>> print(q.errors)
    sum(increase(http_requests_total{version="{arm}",job="shop",code=~"5.."}[{window}]))
    >>> print(q.latency_sum)
    sum(increase(http_request_duration_seconds_sum{version="{arm}",job="shop"}[{window}]))
    """  # noqa: D205 (the summary needs two lines)
    check_label_name("arm_label", arm_label)
    check_metric_name("requests_metric", requests_metric)
    check_label_name("status_label", status_label)
    check_pattern("error_status", error_status)
    if latency_metric is not None:
        check_metric_name("latency_metric", latency_metric)
    if status_label == arm_label:
        raise ConfigError("status_label", status_label, "must differ from arm_label")
    fixed: list[tuple[str, str, str]] = []
    if matchers is not None and not isinstance(matchers, Mapping):
        raise ConfigError("matchers", matchers, "must be a mapping of label name to value")
    for name, value in (matchers or {}).items():
        check_label_name("matchers", name)
        if name in (arm_label, status_label):
            raise ConfigError("matchers", name, "must not repeat arm_label or status_label")
        fixed.append((name, "=", check_label_value(f"matchers[{name!r}]", value)))
    arm = [(arm_label, "=", "{arm}"), *fixed]
    requests = _selector(requests_metric, arm)
    errors = _selector(requests_metric, [*arm, (status_label, "=~", error_status)])
    latency_buckets = latency_sum = None
    if latency_metric is not None:
        buckets = _selector(f"{latency_metric}_bucket", arm)
        total = _selector(f"{latency_metric}_sum", arm)
        latency_buckets = f"sum by (le) (increase({buckets}[{{window}}]))"
        latency_sum = f"sum(increase({total}[{{window}}]))"
    return PrometheusQueries(
        requests=f"sum(increase({requests}[{{window}}]))",
        errors=f"sum(increase({errors}[{{window}}]))",
        latency_buckets=latency_buckets,
        latency_sum=latency_sum,
        gauges=gauges,
    )
