"""Durations as people write them in policies and read them in messages: ``"1h30m"``.

`parse_duration` reads a number of seconds or a string with units; `format_duration`
writes the shortest string it reads back. The policy layer reads every duration key
through them, and the deciders use `format_duration` in their verdicts.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ._errors import ConfigError
from ._validate import finite

__all__ = ["format_duration", "parse_duration"]

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = "must be a duration such as 90, '90s', '5m' or '1h30m'"


def parse_duration(field: str, value: Any, *, allow_zero: bool = False) -> float:
    """Seconds from a number of seconds or a string like ``"90s"``, ``"1h30m"``, ``"250ms"``.

    Raises `ConfigError` naming `field` for anything else, and for negative durations
    (or zero, unless `allow_zero`).

    >>> parse_duration("hold", "1h30m"), parse_duration("hold", "250ms"), parse_duration("hold", 90)
    (5400.0, 0.25, 90.0)
    """
    seconds: float
    if isinstance(value, bool):
        raise ConfigError(field, value, _DURATION_HELP)
    if isinstance(value, (int, float)):
        seconds = finite(field, value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            # A bare number in a string is seconds, like a bare number outside one.
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(field, value, text)
        if text.lower() in {"nan", "inf", "+inf", "-inf", "infinity"}:
            raise ConfigError(field, value, _DURATION_HELP)
    else:
        raise ConfigError(field, value, _DURATION_HELP)
    if not math.isfinite(seconds):
        raise ConfigError(field, value, "must be finite")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(field, value, "must be >= 0" if allow_zero else "must be > 0")
    return seconds


def _parse_units(field: str, value: str, text: str) -> float:
    seconds = 0.0
    position = 0
    while position < len(text):
        found = _DURATION_PART.match(text, position)
        if found is None:
            raise ConfigError(field, value, _DURATION_HELP)
        number, unit = found.groups()
        # Divide for milliseconds so that "100ms" is exactly 0.1, as a person wrote it.
        seconds += float(number) / 1000 if unit == "ms" else float(number) * _UNIT_SECONDS[unit]
        position = found.end()
    if position == 0:
        raise ConfigError(field, value, _DURATION_HELP)
    return seconds


def format_duration(seconds: float) -> str:
    """Write `seconds` as the shortest string `parse_duration` reads back, e.g. ``"1h30m"``.

    >>> format_duration(5400), format_duration(0.25), format_duration(90), format_duration(0)
    ('1h30m', '250ms', '1m30s', '0s')
    """
    if not math.isfinite(seconds) or not 0 <= seconds < 1e15:
        return f"{seconds!r}s"  # no whole number of milliseconds to write
    millis = round(seconds * 1000)
    if abs(millis / 1000 - seconds) > 1e-9:
        return f"{seconds!r}s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    parts = [
        f"{amount}{unit}"
        for amount, unit in ((hours, "h"), (minutes, "m"), (whole, "s"), (millis, "ms"))
        if amount
    ]
    return "".join(parts) or "0s"
