"""Reading a policy file's tables: typed getters that name the key path, and durations."""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from .._durations import format_duration as format_duration
from .._durations import parse_duration as parse_duration
from .._errors import ConfigError, field_error
from .._validate import finite

__all__ = ["PolicyTable", "format_duration", "parse_duration", "parse_fraction", "parse_percent"]

_MISSING: Any = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _error(field: str, problem: str, value: Any = _MISSING) -> ConfigError:
    """Build a ConfigError; without a value its message leaves out the ", got ..." tail."""
    if value is _MISSING:
        return field_error(field, problem)
    return ConfigError(field, value, problem)


# ---------------------------------------------------------------------------------------
# Percents and fractions: one rule for every key that takes either

_PERCENT_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*")


def _percent_number(field: str, value: Any, help_text: str) -> tuple[float, bool]:
    """(the number, whether it was written as a percent string), or ConfigError."""
    if isinstance(value, str):
        found = _PERCENT_TEXT.fullmatch(value)
        if found is None:
            raise ConfigError(field, value, help_text)
        return float(found.group(1)), True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, help_text)
    return finite(field, value), False


def parse_percent(field: str, value: Any) -> float:
    """A percent from a number or a string such as ``"20%"``: 20 and ``"20%"`` are the same.

    For keys in percent (a plan's weights, a header route's share); the range is the
    caller's to check. A number comes back as given (an int stays an int). Raises
    `ConfigError` naming `field` and both forms otherwise.

    >>> parse_percent("step", 20.0), parse_percent("step", "20%"), parse_percent("step", "0.5%")
    (20.0, 20.0, 0.5)
    """
    help_text = "must be a percent: a number such as 20, or a string like '20%'"
    number, percent = _percent_number(field, value, help_text)
    # A number comes back as written (an int stays one), so range errors show it so.
    return value if not percent and isinstance(value, int) else number


def parse_fraction(field: str, value: Any) -> float:
    """A fraction from a number or a percent string: 0.02 and ``"2%"`` are the same.

    For keys that are fractions (error rates, margins, probabilities); the range is the
    caller's to check. Raises `ConfigError` naming `field` and both forms otherwise.

    >>> parse_fraction("max", 0.02), parse_fraction("max", "2%"), parse_fraction("max", "0.5%")
    (0.02, 0.02, 0.005)
    """
    help_text = "must be a fraction such as 0.02, or a percent like '2%'"
    number, percent = _percent_number(field, value, help_text)
    return number / 100 if percent else number


# ---------------------------------------------------------------------------------------
# Reading tables


@contextlib.contextmanager
def _prefixed(prefix: str, rename: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise a constructor's ConfigError with the policy key path in front of its field."""
    try:
        yield
    except ConfigError as exc:
        field = exc.field
        for old, new in (rename or {}).items():
            if field == old or field.startswith((old + ".", old + "[")):
                field = new + field[len(old) :]
                break
        new_exc = ConfigError(f"{prefix}.{field}" if field else prefix, exc.value, exc.problem)
        raise new_exc from None


class PolicyTable:
    """One table of a policy file being read: typed getters that name the key path.

    Decider builders receive the ``[decider]`` table as a `PolicyTable`: they first call
    `check_keys` with the keys they accept, then read values with the getters, each of
    which raises `ConfigError` naming the dotted path of the key. A getter given a
    `default` returns it, unchecked, when the key is absent; without one, an absent key
    is an error ("is required").

    >>> table = PolicyTable({"hold": "2m"}, "plan")
    >>> table.duration("hold")
    120.0
    >>> table.duration("final_bake", default=0.0)
    0.0
    """

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def __repr__(self) -> str:
        return f"PolicyTable(path={self.path!r}, keys={sorted(self.data)!r})"

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def field(self, key: str) -> str:
        """Return the dotted path of `key` in this table, e.g. ``plan.hold``.

        A key that is not a bare TOML key (empty, or with spaces, dots, quotes or line
        breaks) is written quoted, as TOML would: ``plan."a.b"``.
        """
        if not _BARE_KEY.fullmatch(key):
            key = json.dumps(key)
        return f"{self.path}.{key}" if self.path else key

    def check_keys(
        self, allowed: Collection[str], *, elsewhere: Mapping[str, str] | None = None
    ) -> None:
        """Refuse any key not in `allowed`; `elsewhere` maps a known key to why it is not."""
        for key in self.data:
            if key in allowed:
                continue
            if elsewhere and key in elsewhere:
                raise _error(self.field(key), elsewhere[key])
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected {_one_of(allowed)}"
            raise _error(self.field(key), f"is not a known key ({hint})")

    def raw(self, key: str, default: Any = _MISSING, *, needed_for: str = "") -> Any:
        """Return the value of `key` as parsed; raise if it is missing and has no default."""
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise _error(self.field(key), f"is required{needed_for}")
        return default

    def number(self, key: str, default: Any = _MISSING, *, above: float | None = None) -> float:
        """Read a finite number (integer or float), greater than `above` when given."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        number = finite(self.field(key), value)
        if above is not None and not number > above:
            raise ConfigError(self.field(key), value, f"must be > {above:g}")
        return number

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
        """Read an integer, at least `minimum` when given."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.field(key), value, "must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(self.field(key), value, f"must be an integer >= {minimum}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        """Read ``true`` or ``false``."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if not isinstance(value, bool):
            raise ConfigError(self.field(key), value, "must be true or false")
        return value

    def string(self, key: str, default: Any = _MISSING) -> str:
        """Read a non-empty string."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.field(key), value, "must be a non-empty string")
        return value

    def choice(self, key: str, choices: Collection[str], default: Any = _MISSING) -> str:
        """Read one of `choices`."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key)
        if value not in choices:
            raise ConfigError(self.field(key), value, f"must be {_one_of(choices)}")
        return str(value)

    def duration(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        allow_zero: bool = False,
        needed_for: str = "",
    ) -> float:
        """Read a duration in seconds (see `parse_duration`)."""
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.raw(key, needed_for=needed_for)
        return parse_duration(self.field(key), value, allow_zero=allow_zero)

    def table(self, key: str) -> PolicyTable:
        """Read a sub-table, e.g. ``[plan]``."""
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise ConfigError(self.field(key), value, f"must be a table ([{self.field(key)}])")
        return PolicyTable(value, self.field(key))

    def tables(self, key: str, *, needed_for: str = "") -> list[PolicyTable]:
        """Read a non-empty array of tables, e.g. ``[[decider.metrics]]``."""
        value = self.raw(key, needed_for=needed_for)
        where = self.field(key)
        if not isinstance(value, list):
            raise ConfigError(where, value, f"must be an array of tables ([[{where}]])")
        if not value:
            raise ConfigError(where, value, f"must hold at least one table ([[{where}]])")
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}[{index}]", item, "must be a table")
            result.append(PolicyTable(item, f"{where}[{index}]"))
        return result


def _one_of(choices: Collection[str]) -> str:
    quoted = [repr(c) for c in choices]
    if len(quoted) == 1:
        return quoted[0]
    return "one of " + ", ".join(quoted)
