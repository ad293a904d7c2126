"""httpx, imported lazily by the parts that speak HTTP, and what they share."""

from __future__ import annotations

import re
import ssl
from typing import Any

# Answers worth another try besides 5xx: the endpoint may answer the same request
# differently later.
RETRY_STATUS = frozenset({408, 425, 429})
# A header name: an RFC 9110 token.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def import_httpx(user: str, extra: str) -> Any:
    """The httpx module, or an error that says which part of canarykit needs it and how."""
    try:
        import httpx
    except ImportError:
        raise ModuleNotFoundError(f"{user} needs httpx, which is not installed: {extra}") from None
    return httpx


def worth_retrying(status: int) -> bool:
    """True for an HTTP status that another try of the same request may change."""
    return status >= 500 or status in RETRY_STATUS


_tls: list[ssl.SSLContext] = []


def default_tls(httpx: Any) -> Any:
    """The default TLS context of httpx, built once and shared by every client (``verify=``)."""
    # Building it loads the CA bundle (about 50 ms), which would otherwise happen for each
    # client: one per window's queries, one per webhook call. An SSLContext may be shared
    # between clients and threads.
    create = getattr(httpx, "create_ssl_context", None)
    if create is None:  # older httpx: let it build its own
        return True
    if not _tls:
        _tls.append(create())
    return _tls[0]
