"""Small checks shared by the value classes: each raises `ConfigError` naming the field."""

from __future__ import annotations

import enum
import math
from typing import Any

from ._errors import ConfigError

__all__ = ["finite", "optional_finite", "to_enum"]


def finite(field: str, value: Any) -> float:
    """`value` as a finite float; bools and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(field, value, "must be finite")
    return number


def optional_finite(field: str, value: Any) -> float | None:
    """None, or `value` as a finite float."""
    return None if value is None else finite(field, value)


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
