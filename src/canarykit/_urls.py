"""Webhook URLs, which are secrets: checked without quoting them, shown without their path.

Core, so that the hooks (`Webhook`) and the optional notifiers share one rule for hiding
them; neither imports the other.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ._errors import ConfigError

__all__ = ["check_url", "shown_url"]

_HIDDEN = "***"


def shown_url(url: str) -> str:
    """The part of `url` that may be shown: scheme and host, e.g. ``https://hooks.x.com/***``.

    >>> shown_url("https://user:pw@hooks.example.com:8443/T0/B1/secret?token=x")
    'https://hooks.example.com:8443/***'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return _HIDDEN
    if not parts.scheme or not host:
        return _HIDDEN
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}/{_HIDDEN}"


def check_url(url: Any) -> str:
    """`url` if it is an http(s) URL with a host; else `ConfigError` showing only `shown_url`."""
    # The value is never quoted back in full: it is a secret.
    if not isinstance(url, str):
        raise ConfigError("url", type(url).__name__, "must be an http:// or https:// URL")
    shown = shown_url(url)
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ConfigError("url", shown, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError("url", shown, "must be a valid URL (value hidden)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url", shown, "must be an http:// or https:// URL with a host")
    return url
