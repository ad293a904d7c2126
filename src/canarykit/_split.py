"""Traffic splits: what a router is asked to do, as immutable values."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import ConfigError
from ._safe import check_regex
from ._validate import bounded_items, finite, to_enum

__all__ = ["MAX_MATCHED_VALUE", "HeaderMatch", "HeaderRoute", "TrafficSplit"]

MAX_MATCHED_VALUE = 4096
"""The longest header value `HeaderRoute.matches` runs a regex on; a longer one never matches.

It bounds the time Python's backtracking engine may take (see `HeaderRoute`); HTTP
servers refuse longer header lines by default (nginx at 8 kB for name and value).
"""

# Header names are HTTP tokens (RFC 9110) less the quote characters it allows (' and `).
# Refusing anything else keeps a name from smuggling a newline, quote or brace into a
# load balancer's config. (fullmatch: "$" would also match before a final newline.)
_HEADER_NAME = re.compile(r"[!#$%&*+.^_|~0-9A-Za-z-]{1,256}")


def check_percent(field: str, value: Any, *, allow_zero: bool = True) -> float:
    """Return `value` as a float percent in [0, 100] (or (0, 100]), or raise ConfigError."""
    number = finite(field, value)
    low_ok = number >= 0 if allow_zero else number > 0
    if not low_ok or number > 100:
        bounds = "[0, 100]" if allow_zero else "(0, 100]"
        raise ConfigError(field, value, f"must be in {bounds}")
    return number


class HeaderMatch(enum.Enum):
    """How a header route compares a request header with its value."""

    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"

    def __repr__(self) -> str:
        return f"HeaderMatch.{self.name}"


def _to_match(value: Any) -> Any:
    return to_enum(HeaderMatch, value)


@attrs.frozen(kw_only=True)
class HeaderRoute:
    r"""Send `percent` of the requests whose header matches to the canary, whatever the weights say.

    Matching requests follow this route's own split (all of them to the canary by
    default); the others follow the split's `canary_percent`. Every Chrome user to the
    canary:

    >>> HeaderRoute(header="User-Agent", value=".*Chrome.*", match="regex")
    HeaderRoute(header='User-Agent', value='.*Chrome.*', match=HeaderMatch.REGEX, percent=100.0)

    The seed's Istio example sends 10% of Chrome users to the canary and nobody else:
    ``TrafficSplit(canary_percent=0, header_routes=[HeaderRoute(..., percent=10)])``.

    `match` is ``"exact"``, ``"prefix"`` or ``"regex"``; every match is case-sensitive
    and covers the whole value. A regex is written in RE2's syntax
    (https://github.com/google/re2/wiki/Syntax), the one Envoy (so Istio), the Gateway
    API implementations and nginx's PCRE all accept, less what a backtracking engine
    (Python's, PCRE) could take exponential time on. Refused when the route is built,
    with a `ConfigError` naming ``header_route.value`` and what is not allowed:

    - backreferences (``\1``, ``(?P=name)``), lookahead and lookbehind (``(?=``, ``(?!``,
      ``(?<=``, ``(?<!``), atomic groups (``(?>``), possessive repetitions (``a*+``) and
      conditionals (``(?(1)a|b)``): RE2 has none of them;
    - Python's own spellings: ``\Z``, ``\u``, ``\U``, ``\N{...}``, octal escapes,
      ``{,n}``, inline flags other than ``i``, ``m`` and ``s``, nested sets
      (``[[:alpha:]]``); write ``\xHH`` for a character;
    - a variable repetition inside another (``(a+)+``, ``(a*)*``, ``(\d+\.)+``) and,
      inside a repetition, an alternation whose branches may start with the same
      character (``(a|ab)+``; ``(Chrome|Firefox)+`` is fine);
    - counts above 1,000 in ``{n,m}`` (RE2's limit), more than 1,000 characters, or more
      than 1,000 once counted repetitions are spelled out.

    Envoy may have a lower limit of its own on a regex's size (its runtime key
    ``re2.max_program_size.error_level``). `WeightedRouter`, which matches in Python,
    also refuses a regex that could take it more than ``MAX_BACKTRACKING`` steps (more
    than two unbounded repetitions, ``*``, ``+``, ``{n,}``, say), and `matches` never
    runs one on a value longer than `MAX_MATCHED_VALUE`.
    """

    header: str
    value: str
    match: HeaderMatch = attrs.field(default=HeaderMatch.EXACT, converter=_to_match)
    percent: float = 100.0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.header, str) or not _HEADER_NAME.fullmatch(self.header):
            raise ConfigError("header_route.header", self.header, "must be an HTTP header name")
        if not isinstance(self.value, str) or not self.value:
            raise ConfigError("header_route.value", self.value, "must be a non-empty string")
        if not self.value.isprintable():
            raise ConfigError(
                "header_route.value",
                self.value,
                "must be printable (no line break, NUL or other control character)",
            )
        if not isinstance(self.match, HeaderMatch):
            raise ConfigError(
                "header_route.match", self.match, "must be one of 'exact', 'prefix', 'regex'"
            )
        percent = check_percent("header_route.percent", self.percent, allow_zero=False)
        object.__setattr__(self, "percent", percent)
        if self.match is HeaderMatch.REGEX:
            check_regex("header_route.value", self.value)

    def matches(self, header_value: str | None) -> bool:
        r"""Whether a request carrying `header_value` in this header follows this route.

        A regex is matched as RE2 does (``\d``, ``\w``, ``\s`` and ``\b`` are ASCII)
        against the whole value; a value longer than `MAX_MATCHED_VALUE` never matches one.
        """
        if header_value is None:
            return False
        if self.match is HeaderMatch.EXACT:
            return header_value == self.value
        if self.match is HeaderMatch.PREFIX:
            return header_value.startswith(self.value)
        if len(header_value) > MAX_MATCHED_VALUE:
            return False
        return re.fullmatch(self.value, header_value, re.ASCII) is not None

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data: dict[str, Any] = {"header": self.header, "value": self.value}
        data["match"] = self.match.value
        data["percent"] = self.percent
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeaderRoute:
        """Inverse of `to_json`; state saved before `percent` existed means 100."""
        header, value, match = _keys("header_route", data, "header", "value", "match")
        return cls(header=header, value=value, match=match, percent=data.get("percent", 100.0))


def _keys(field: str, data: Any, *names: str) -> list[Any]:
    """The values of `names` in saved `data`, or ConfigError naming what is missing."""
    if not isinstance(data, Mapping):
        raise ConfigError(field, data, "must be a mapping")
    for name in names:
        if name not in data:
            raise ConfigError(f"{field}.{name}", None, "is missing")
    return [data[name] for name in names]


MAX_ROUTES = 100
"""The most header routes a split may hold: a router writes one rule per route."""


def header_routes(field: str, value: Any) -> tuple[HeaderRoute, ...]:
    """`value` (one route, or an iterable of at most `MAX_ROUTES`) as a tuple, or ConfigError.

    The items themselves are checked by the caller, which knows their field names.
    """
    if isinstance(value, HeaderRoute):
        return (value,)
    return bounded_items(field, value, MAX_ROUTES, "routes")


def _routes(value: Iterable[HeaderRoute]) -> tuple[HeaderRoute, ...]:
    return header_routes("header_routes", value)


def _percent(field: str) -> Any:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        check_percent(field, value)

    return validate


@attrs.frozen(kw_only=True)
class TrafficSplit:
    """Where traffic goes: a canary percent, header routes to the canary, and a mirrored percent.

    >>> TrafficSplit(canary_percent=0.5).stable_percent
    99.5
    """

    canary_percent: float = attrs.field(default=0.0, validator=_percent("canary_percent"))
    header_routes: tuple[HeaderRoute, ...] = attrs.field(default=(), converter=_routes)
    mirror_percent: float = attrs.field(default=0.0, validator=_percent("mirror_percent"))

    def __attrs_post_init__(self) -> None:
        for index, route in enumerate(self.header_routes):
            if not isinstance(route, HeaderRoute):
                raise ConfigError(f"header_routes[{index}]", route, "must be a HeaderRoute")
        # Normalise ints to floats so that 10 and 10.0 compare and serialise alike.
        object.__setattr__(self, "canary_percent", float(self.canary_percent))
        object.__setattr__(self, "mirror_percent", float(self.mirror_percent))

    @property
    def stable_percent(self) -> float:
        """The share of weighted traffic left on the stable version."""
        return 100.0 - self.canary_percent

    @property
    def is_stable_only(self) -> bool:
        """True when no request reaches the canary in any way: the rolled-back split."""
        return self.canary_percent == 0 and not self.header_routes and self.mirror_percent == 0

    @property
    def is_full_canary(self) -> bool:
        """True when all traffic goes to the canary and nothing else is managed: promoted."""
        return self.canary_percent == 100 and not self.header_routes and self.mirror_percent == 0

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "canary_percent": self.canary_percent,
            "header_routes": [route.to_json() for route in self.header_routes],
            "mirror_percent": self.mirror_percent,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrafficSplit:
        """Inverse of `to_json`."""
        canary, routes, mirror = _keys(
            "split", data, "canary_percent", "header_routes", "mirror_percent"
        )
        if not isinstance(routes, list):
            raise ConfigError("split.header_routes", routes, "must be a list")
        return cls(
            canary_percent=canary,
            header_routes=tuple(HeaderRoute.from_json(r) for r in routes),
            mirror_percent=mirror,
        )


STABLE_ONLY = TrafficSplit()
FULL_CANARY = TrafficSplit(canary_percent=100.0)
