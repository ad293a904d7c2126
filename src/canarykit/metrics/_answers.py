"""Reading Prometheus' JSON answers: the envelope, vectors, scalars and matrices.

Anything that is not what the API documents raises `Malformed` with a short description
that quotes (truncated) what was wrong; the source turns it into a `MetricsError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "Malformed",
    "PrometheusSample",
    "PrometheusSeries",
    "bucket_counts",
    "count_value",
    "data_of",
    "error_of",
    "matrix",
    "quote",
    "single_value",
    "vector",
]

_QUOTE_LIMIT = 200


def quote(value: Any, limit: int = _QUOTE_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters with an ellipsis."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Malformed(Exception):
    """An answer that does not follow Prometheus' documented format."""


def _labels(value: Any) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class PrometheusSample:
    """One series' value at one time: an element of an instant query's vector."""

    labels: Mapping[str, str] = attrs.field(
        converter=_labels, hash=False, repr=lambda labels: repr(dict(labels))
    )
    time: float
    value: float


@attrs.frozen(kw_only=True)
class PrometheusSeries:
    """One series' values over time: an element of a range query's matrix.

    `points` holds (time, value) pairs, oldest first.
    """

    labels: Mapping[str, str] = attrs.field(
        converter=_labels, hash=False, repr=lambda labels: repr(dict(labels))
    )
    points: tuple[tuple[float, float], ...]


def data_of(body: bytes) -> tuple[Any, list[str]]:
    """The `data` of a successful answer, and its warnings; Malformed otherwise.

    An answer with ``"status": "error"`` is not handled here: see `error_of`.
    """
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Malformed(f"the answer is not JSON: {quote(body[:_QUOTE_LIMIT])}") from None
    if not isinstance(answer, dict):
        raise Malformed(f"the answer is not a JSON object: {quote(answer)}")
    status = answer.get("status")
    if status != "success":
        raise Malformed(f"the answer's status is {quote(status)}, not 'success'")
    warnings = answer.get("warnings") or []
    if not isinstance(warnings, list):
        warnings = [warnings]
    return answer.get("data"), [str(warning) for warning in warnings]


def error_of(body: bytes) -> str | None:
    """``errorType: error`` from an error answer's JSON, or None if it has none."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(answer, dict) or answer.get("status") != "error":
        return None
    error_type = answer.get("errorType")
    error = answer.get("error")
    return f"{error_type}: {error}" if error_type else str(error)


def _number(value: Any) -> float:
    # Prometheus sends sample values as strings ("1.5", "NaN", "+Inf"); accept plain
    # JSON numbers too, from proxies that re-encode answers.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise Malformed(f"a sample value is not a number: {quote(value)}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise Malformed(f"a sample value is not a number: {quote(value)}")


def _point(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise Malformed(f"a sample is not a [time, value] pair: {quote(value)}")
    return _number(value[0]), _number(value[1])


def _result(data: Any, expected: tuple[str, ...]) -> tuple[str, Any]:
    if not isinstance(data, dict):
        raise Malformed(f"the answer's data is not an object: {quote(data)}")
    result_type = data.get("resultType")
    if result_type not in expected:
        raise Malformed(
            f"resultType is {quote(result_type)}, expected {' or '.join(map(repr, expected))}"
        )
    return str(result_type), data.get("result")


def _metric(item: Any) -> Mapping[str, str]:
    metric = item.get("metric", {})
    if not isinstance(metric, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metric.items()
    ):
        raise Malformed(f"a series' labels are not an object of strings: {quote(metric)}")
    return metric


def vector(data: Any) -> list[PrometheusSample]:
    """The samples of an instant query's answer (a vector, or a scalar as one sample)."""
    result_type, result = _result(data, ("vector", "scalar"))
    if result_type == "scalar":
        at, value = _point(result)
        return [PrometheusSample(labels={}, time=at, value=value)]
    if not isinstance(result, list):
        raise Malformed(f"the vector is not a list: {quote(result)}")
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise Malformed(f"a vector element has no value: {quote(item)}")
        at, value = _point(item["value"])
        samples.append(PrometheusSample(labels=_metric(item), time=at, value=value))
    return samples


def matrix(data: Any) -> list[PrometheusSeries]:
    """The series of a range query's answer."""
    _, result = _result(data, ("matrix",))
    if not isinstance(result, list):
        raise Malformed(f"the matrix is not a list: {quote(result)}")
    series = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("values"), list):
            raise Malformed(f"a matrix element has no values: {quote(item)}")
        points = tuple(_point(point) for point in item["values"])
        series.append(PrometheusSeries(labels=_metric(item), points=points))
    return series


def single_value(samples: list[PrometheusSample]) -> float | None:
    """The one value of an answer, None when it is empty; Malformed for several series."""
    if not samples:
        return None
    if len(samples) > 1:
        shown = ", ".join(quote(dict(sample.labels), 80) for sample in samples[:3])
        raise Malformed(
            f"returned {len(samples)} series ({shown}...), expected one: aggregate them, "
            "for example with sum(...)"
        )
    return samples[0].value


def count_value(what: str, value: float) -> int:
    """A count from a query: finite, not negative, rounded to an int."""
    if not math.isfinite(value):
        raise Malformed(f"{what} is {value!r}, not a finite count")
    if value < 0:
        raise Malformed(f"{what} is negative ({value!r})")
    return round(value)


def bucket_counts(samples: list[PrometheusSample]) -> dict[float, float]:
    """Classic histogram buckets: upper bound (the `le` label) to cumulative count."""
    buckets: dict[float, float] = {}
    for sample in samples:
        raw = sample.labels.get("le")
        if raw is None:
            raise Malformed(f"a bucket series has no 'le' label: {quote(dict(sample.labels), 120)}")
        try:
            le = float(raw)
        except ValueError:
            raise Malformed(f"a bucket's le is not a number: {quote(raw)}") from None
        if math.isnan(le) or le < 0:
            raise Malformed(f"a bucket's le is {quote(raw)}, not a bound >= 0")
        if le in buckets:
            raise Malformed(
                f"two bucket series have le={quote(raw)}: aggregate them with sum by (le) (...)"
            )
        if not math.isfinite(sample.value) or sample.value < 0:
            raise Malformed(f"the bucket le={quote(raw)} counts {sample.value!r}")
        buckets[le] = sample.value
    return buckets
