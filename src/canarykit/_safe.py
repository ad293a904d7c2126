"""Checks for text that reaches a load balancer's config file, a socket command or a query.

A name with a newline, `;`, `}` or a quote in it could end a directive early and start
another one, so every adapter passes user-given names, addresses, label values and
patterns through these checks before writing them anywhere. Each raises `ConfigError`
naming the field.

>>> check_name("upstream", "app_v2")
'app_v2'
>>> check_name("upstream", "app; include /etc/passwd")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
canarykit.ConfigError: upstream: must be 1-128 letters, ..., got 'app; include /etc/passwd'
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from typing import Any

from ._errors import ConfigError

__all__ = [
    "MAX_REGEX_LENGTH",
    "MAX_REGEX_REPEAT",
    "MAX_REGEX_SIZE",
    "check_address",
    "check_label_value",
    "check_name",
    "check_pattern",
    "check_regex",
    "backtracking_steps",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\]")
_UNIX_PATH = re.compile(r"unix:/[A-Za-z0-9_./@+-]{1,200}")
# Characters that would let a value escape its quotes or its line in a config or query.
_NEVER_IN_TEXT = frozenset("\n\r\x00\"'`\\")


def check_name(field: str, value: Any) -> str:
    """A server, upstream, backend, job or label name: letters, digits, `_`, `.` and `-`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            field,
            value,
            "must be 1-128 letters, digits, '_', '.' or '-' (starting with a letter, digit or '_')",
        )
    return value


def check_address(field: str, value: Any) -> str:
    """A server address: `host:port`, `[v6]:port`, or `unix:/path/to.sock`."""
    if isinstance(value, str):
        if _UNIX_PATH.fullmatch(value):
            return value
        host, sep, port = value.rpartition(":")
        port_ok = port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if sep and _HOST.fullmatch(host) and port_ok:
            return value
    raise ConfigError(field, value, "must be 'host:port', '[ipv6]:port' or 'unix:/path'")


def check_label_value(field: str, value: Any) -> str:
    """A value placed inside quotes in a query: printable, no quotes, backslash or newline."""
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ConfigError(field, value, "must be a non-empty printable string")
    if any(char in _NEVER_IN_TEXT for char in value) or "{" in value or "}" in value:
        raise ConfigError(field, value, "must not contain quotes, backslashes or braces")
    return value


def check_pattern(field: str, value: Any) -> str:
    """A regular expression or header value placed inside double quotes in a config file.

    Braces and `;` are allowed (they are regex syntax and harmless inside quotes); quotes,
    backslash-escapes of quotes, line breaks and NUL are not.
    """
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ConfigError(field, value, "must be a non-empty printable string")
    if any(char in "\"'`" for char in value) or value.endswith("\\"):
        raise ConfigError(field, value, "must not contain quotes or end with a backslash")
    return value


# -- header regexes: RE2's syntax, nothing exponential ----------------------------------

MAX_REGEX_LENGTH = 1000
"""The longest header regex, in characters."""

MAX_REGEX_REPEAT = 1000
"""The largest count in ``{n}``, ``{n,}`` or ``{n,m}``: RE2's own limit."""

MAX_REGEX_SIZE = 1000
"""The largest header regex after counted repetitions are spelled out (``a{50}`` is 50)."""

# Parsed by the standard library's own regex parser (`re._parser`, `sre_parse` before
# 3.11), which has no type stubs; its opcodes are compared by name.
_sre_parser: Any = importlib.import_module(
    "re._parser" if sys.version_info >= (3, 11) else "sre_parse"
)
_UNBOUNDED = int(_sre_parser.MAXREPEAT)
_COUNTED_END = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}$")
_MANY = 2**64  # more steps than any estimate needs to tell apart
# Inline flags RE2 shares with Python: (?i), (?m), (?s). The others (x, a, L, u) it lacks.
_ALLOWED_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE
_ANCHORS = frozenset(
    {"AT_BEGINNING", "AT_BEGINNING_STRING", "AT_END", "AT_BOUNDARY", "AT_NON_BOUNDARY"}
)
_REFUSED = {
    "GROUPREF": "backreferences such as \\1 or (?P=name)",
    "GROUPREF_EXISTS": "conditionals such as (?(1)a|b)",
    "ASSERT": "lookahead and lookbehind such as (?=...) or (?<=...)",
    "ASSERT_NOT": "negative lookahead and lookbehind such as (?!...) or (?<!...)",
    "ATOMIC_GROUP": "atomic groups such as (?>...)",
    "POSSESSIVE_REPEAT": "possessive repetitions such as a*+ or a++",
}
_RE2_SYNTAX = "in RE2's syntax (what Envoy, Istio, the Gateway API and nginx accept)"


def _refuse(field: str, value: str, what: str) -> ConfigError:
    return ConfigError(field, value, f"must be {_RE2_SYNTAX}: {what} are not allowed")


def _scan_source(field: str, value: str) -> None:
    """Refuse what Python's parser reads but RE2 spells otherwise or not at all."""
    in_class = False
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            escaped = value[index + 1]
            if escaped.isdigit():
                raise _refuse(
                    field, value, "backreferences and octal escapes (\\1, \\012; write \\xHH)"
                )
            if escaped in "ZuUN":
                raise _refuse(
                    field, value, f"Python's \\{escaped} escapes (RE2 has \\z and \\x{{HHHH}})"
                )
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A ']' first in a class (after an optional '^') is a literal.
            index += 2 if value[index + 1 : index + 2] == "^" else 1
            if value[index : index + 1] == "]":
                index += 1
            continue
        elif value.startswith("{,", index):
            raise _refuse(field, value, "repetitions written {,n} (write {0,n})")
        # Found here, not only in the parsed pattern: Python before 3.11 has neither and
        # would call them a syntax error rather than say what RE2 lacks.
        elif value.startswith("(?>", index):
            raise _refuse(field, value, _REFUSED["ATOMIC_GROUP"])
        elif char == "+" and _ends_in_repetition(value[:index]):
            raise _refuse(field, value, _REFUSED["POSSESSIVE_REPEAT"])
        index += 1


def _ends_in_repetition(text: str) -> bool:
    """Whether `text` (before a '+') ends in a repetition: *, +, ?, {n}, {n,} or {n,m}."""
    if text.endswith(("*", "+")):
        return not _escaped_at_end(text)
    if text.endswith("?"):
        # "(?" opens a group and "\?" is a literal; "a??" is a lazy repetition.
        return not text.endswith("(?") and not _escaped_at_end(text)
    return _COUNTED_END.search(text) is not None


def _escaped_at_end(text: str) -> bool:
    """Whether the last character of `text` is escaped by an odd run of backslashes."""
    run = len(text) - 1 - len(text[:-1].rstrip("\\"))
    return run % 2 == 1


def _literal_starts(items: Any) -> set[int] | None:
    """The characters a branch of an alternation starts with, if only literals; else None."""
    if not items.data:
        return None
    op, argument = items.data[0]
    name = str(op)
    if name == "LITERAL":
        return {argument}
    if name == "IN":
        starts: set[int] = set()
        for inner_op, inner in argument:
            inner_name = str(inner_op)
            if inner_name == "LITERAL":
                starts.add(inner)
            elif inner_name == "RANGE" and inner[1] - inner[0] < 256:
                starts.update(range(inner[0], inner[1] + 1))
            else:
                return None
        return starts
    if name == "SUBPATTERN":
        return _literal_starts(argument[3])
    return None


def _walk(field: str, value: str, items: Any, repeated: bool, flags: int) -> int:
    """The size of parsed `items` (counted repetitions spelled out), or ConfigError.

    `repeated`: inside a repetition that may match more than once, where another variable
    repetition, or an alternation whose branches may start alike, would make a
    backtracking engine's time exponential in the text's length.
    """
    size = 0
    for op, argument in items.data:
        name = str(op)
        if name in _REFUSED:
            raise _refuse(field, value, _REFUSED[name])
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, body = argument
            if low > MAX_REGEX_REPEAT or (high != _UNBOUNDED and high > MAX_REGEX_REPEAT):
                raise ConfigError(
                    field, value, f"must repeat at most {MAX_REGEX_REPEAT} times in {{n,m}}"
                )
            if repeated and low != high:
                raise ConfigError(
                    field,
                    value,
                    "must not nest a variable repetition inside another, as in (a+)+ or (a*)*: "
                    "a backtracking engine takes exponential time on it",
                )
            inner_size = _walk(field, value, body, repeated or high > 1, flags)
            size += inner_size * max(low, 1) + (1 if high != low else 0)
            continue
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, body = argument
            if (add_flags | del_flags) & ~_ALLOWED_FLAGS:
                raise _refuse(field, value, "inline flags other than i, m and s")
            inner_size = _walk(field, value, body, repeated, flags | add_flags)
        elif name == "BRANCH":
            branches = argument[1]
            if repeated:
                seen: set[int] = set()
                for branch in branches:
                    starts = _literal_starts(branch)
                    if starts is not None and flags & re.IGNORECASE:
                        starts = {ord(c) for s in starts for c in {chr(s).lower(), chr(s).upper()}}
                    if starts is None or starts & seen:
                        raise ConfigError(
                            field,
                            value,
                            "inside a repetition, the branches of an alternation must start "
                            "with different literal characters, as in (Chrome|Firefox)+: "
                            "overlapping ones take a backtracking engine exponential time",
                        )
                    seen |= starts
            inner_size = len(branches)
            for branch in branches:
                inner_size += _walk(field, value, branch, repeated, flags)
        elif name == "AT":
            if str(argument) not in _ANCHORS:
                raise _refuse(field, value, f"the anchor {argument}")
            inner_size = 1
        else:  # LITERAL, NOT_LITERAL, ANY, IN: one character
            inner_size = 1
        size += inner_size
    return size


def _parse_regex(field: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, value, "must be a non-empty string")
    if len(value) > MAX_REGEX_LENGTH:
        raise ConfigError(field, value, f"must be at most {MAX_REGEX_LENGTH} characters")
    _scan_source(field, value)
    try:
        with warnings.catch_warnings():
            # FutureWarning: a nested set or POSIX class ([[:alpha:]]), which Python and
            # RE2 read differently.
            warnings.simplefilter("error")
            parsed = _sre_parser.parse(value)
            re.compile(value)
    except Warning:
        raise _refuse(
            field, value, "nested sets and POSIX classes such as [[:alpha:]] (read otherwise)"
        ) from None
    except (re.error, OverflowError, RecursionError) as exc:
        # OverflowError: a repeat count such as {99999999999}; RecursionError: a pattern
        # nested thousands deep.
        raise ConfigError(field, value, f"is not a regular expression ({exc})") from None
    if parsed.state.flags & ~_ALLOWED_FLAGS:
        raise _refuse(field, value, "inline flags other than i, m and s")
    try:
        size = _walk(field, value, parsed, False, parsed.state.flags)
    except RecursionError:
        raise ConfigError(field, value, "is nested too deeply") from None
    if size > MAX_REGEX_SIZE:
        raise ConfigError(
            field,
            value,
            f"must be at most {MAX_REGEX_SIZE} characters long once its counted repetitions "
            f"are spelled out (this one is {size})",
        )
    return parsed


def check_regex(field: str, value: Any) -> str:
    r"""A header regex in RE2's syntax that no backtracking engine takes exponential time on.

    RE2 is the syntax Envoy (Istio), the Gateway API implementations and nginx's PCRE
    all accept. Refused: backreferences (``\1``, ``(?P=x)``), lookaround (``(?=``,
    ``(?!``, ``(?<=``, ``(?<!``), atomic groups and possessive repetitions, conditionals,
    inline flags other than ``i``, ``m`` and ``s``, Python's ``\Z``, ``\u``, ``\U`` and
    ``\N`` escapes, ``{,n}``, a variable repetition inside another (``(a+)+``,
    ``(a*)*``), an alternation inside a repetition whose branches may start with the
    same character (``(a|ab)+``), counts above `MAX_REGEX_REPEAT`, and patterns longer
    than `MAX_REGEX_LENGTH` or larger than `MAX_REGEX_SIZE` once counted repetitions
    are spelled out.

    >>> check_regex("value", ".*Chrome.*")
    '.*Chrome.*'
    >>> check_regex("value", "(a+)+$")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    canarykit.ConfigError: value: must not nest a variable repetition inside another, ...
    """
    _parse_regex(field, value)
    text: str = value
    return text


def _choices(items: Any, length: int, repeated: bool) -> int:
    """How many ways a backtracking engine may try to match `items` on `length` characters.

    A sequence multiplies its parts' choices, an alternation adds its branches' (inside a
    repetition `check_regex` made them start differently, so one is tried), and a
    repetition offers one choice per count it may take: ``length + 1`` when unbounded.
    """
    total = 1
    for op, argument in items.data:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, body = argument
            counts = length + 1 if high == _UNBOUNDED else high - low + 1
            each = _choices(body, length, repeated or high > 1)
            times = min(max(low, 1) if high == _UNBOUNDED else max(high, 1), length)
            choices = counts * each ** min(times, 64) if each > 1 else counts
        elif name == "SUBPATTERN":
            choices = _choices(argument[3], length, repeated)
        elif name == "BRANCH":
            branches = [_choices(branch, length, repeated) for branch in argument[1]]
            choices = max(branches) if repeated else sum(branches)
        else:
            choices = 1
        total = min(total * choices, _MANY)
    return total


def backtracking_steps(pattern: str, length: int) -> int:
    """An estimate of the most steps a backtracking engine takes on `length` characters.

    Of the order of ``length ** k`` for a regex with k unbounded repetitions (``*``,
    ``+``, ``{n,}``), times the counts each bounded one (``?``, ``{n,m}``) may take.
    `pattern` must be one `check_regex` accepts (ConfigError otherwise).

    >>> backtracking_steps(".*Chrome.*", 100), backtracking_steps("v2(-beta)?", 100)
    (10201, 2)
    """
    return _choices(_parse_regex("pattern", pattern), length, False)
