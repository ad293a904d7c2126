"""Small checks shared by the value classes: each raises `ConfigError` naming the field."""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import ConfigError

__all__ = [
    "MAX_COUNT",
    "bounded_items",
    "count",
    "finite",
    "optional_finite",
    "printable_name",
    "to_enum",
]

MAX_COUNT = 2**53
"""The largest count (requests, errors, histogram bucket) accepted: exact as a float.

Larger integers would lose precision or overflow in the float arithmetic that every
rate, mean and test statistic does with them; no real window holds that many requests.
"""


def finite(field: str, value: Any) -> float:
    """`value` as a finite float; bools and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        raise ConfigError(field, value, "must be finite (it is too large)") from None
    if not math.isfinite(number):
        raise ConfigError(field, value, "must be finite")
    return number


def optional_finite(field: str, value: Any) -> float | None:
    """None, or `value` as a finite float."""
    return None if value is None else finite(field, value)


def count(field: str, value: Any) -> int:
    """`value` as an int in [0, `MAX_COUNT`]; bools, floats and int-likes are refused."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(field, value, "must be an int >= 0")
    if value < 0:
        raise ConfigError(field, value, "must be an int >= 0")
    if value > MAX_COUNT:
        raise ConfigError(field, value, "must be at most 2**53")
    return int(value)


def printable_name(field: str, value: Any, what: str = "name") -> str:
    """A non-empty name without line breaks or control characters.

    Metric, gauge and group names end up in verdict reasons, events and logs; a line
    break or an escape sequence in one could forge a log line or garble a terminal.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, value, f"must be a non-empty {what}")
    if not value.isprintable():
        raise ConfigError(
            field, value, f"must be a printable {what} (no line breaks or control characters)"
        )
    return value


def bounded_items(field: str, value: Any, limit: int, what: str) -> tuple[Any, ...]:
    """`value`'s items as a tuple, or ConfigError: not a sequence, unreadable, or too long.

    Reads at most `limit + 1` items, so an endless iterable is refused, not held in memory;
    an iterable that raises while being read is refused naming `field`.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(field, value, f"must be a sequence of {what}")
    try:
        items = tuple(itertools.islice(value, limit + 1))
    except Exception as exc:
        raise ConfigError(field, value, f"could not be read ({type(exc).__name__})") from None
    if len(items) > limit:
        raise ConfigError(field, value, f"must hold at most {limit} {what}")
    return items


def to_enum(kind: type[enum.Enum], value: Any) -> Any:
    """For attrs converters: a member's value (any case) becomes the member.

    Anything else passes through unchanged, so that the class's own validation can
    refuse it with a message that names the field. (Each class keeps a one-line named
    converter calling this: mypy's attrs plugin reads only named converters.)
    """
    if isinstance(value, str):
        try:
            return kind(value.lower())
        except ValueError:
            return value
    return value
