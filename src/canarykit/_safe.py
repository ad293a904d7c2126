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

import re
from typing import Any

from ._errors import ConfigError

__all__ = ["check_address", "check_label_value", "check_name", "check_pattern"]

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
