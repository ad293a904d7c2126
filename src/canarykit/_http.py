"""httpx, imported lazily by the parts that speak HTTP, and what they share.

How this works. Every exchange with a server goes through `exchange`: one deadline for
the whole of it, and a streamed body read up to a limit, so that neither a slow server
nor a huge answer can hold or fill the process. Text quoted from an answer goes through
`Answer.text`: secrets blanked on the raw text first (`Redactor`), then shown on one
line (`shown`). `RedactLogs` does the same for httpx's own log lines.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import logging
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import attrs

from ._errors import ConfigError
from ._text import MAX_TEXT, Redactor, shown

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


# ---------------------------------------------------------------------------- bounded reads

# The part of an error answer read to quote it: enough for any message a server writes,
# and the rest is never downloaded.
EXCERPT_BYTES = 4096
# The default limit for answers canarykit only checks the status of (webhooks,
# notifications): nothing legitimate comes near it.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


def check_max_bytes(field: str, value: Any) -> int:
    """A response size limit: an int of at least 1 KiB (an error excerpt must fit)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
        raise ConfigError(field, value, "must be an integer number of bytes >= 1024")
    return value


def size_text(size: int) -> str:
    """A byte count for people: ``1 MiB``, ``64 KiB``, ``1500 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


class ResponseTooLarge(Exception):
    """A successful answer longer than the limit; the caller names its own option."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"HTTP {status} answer larger than {size_text(limit)}")
        self.status = status
        self.limit = limit

    def advice(self, field: str) -> str:
        """The message for the user: the limit, and the option that raises it."""
        return (
            f"the HTTP {self.status} answer is larger than {field}={self.limit} "
            f"({size_text(self.limit)}); it was not read further (raise {field} if the "
            "answer is legitimately that large)"
        )


@attrs.frozen(kw_only=True)
class Answer:
    """A response read within bounds: its status, and its body or the start of it.

    `cut` is True when the body went on past what was read (always an error answer: an
    oversized successful answer raises `ResponseTooLarge`).
    """

    status: int
    body: bytes
    cut: bool
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def text(self, redact: Redactor, *, limit: int = MAX_TEXT) -> str:
        """The body as text: secrets blanked first, then shown on one line (`shown`)."""
        return shown(redact(decoded(self.body, cut=self.cut), cut=self.cut), limit=limit)


def decoded(body: bytes, *, cut: bool) -> str:
    """`body` as UTF-8 text (bad bytes replaced); a character cut in two at the end is dropped.

    Dropping it, rather than showing U+FFFD, keeps the text a prefix of what was sent, so
    that the redactor still recognises the start of a secret cut there.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(body, final=not cut)


async def exchange(
    client: Any,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    excerpt_bytes: int = EXCERPT_BYTES,
    **request: Any,
) -> Answer:
    """One HTTP request and its answer, bounded in time and in size.

    `deadline` bounds the whole exchange, connecting, sending, waiting for the headers and
    reading the body, so a server that drips a byte every second cannot stretch it (httpx's
    own timeouts are per operation, and each byte restarts them). Past it this raises
    `TimeoutError`, as does an httpx timeout. The body is streamed: a successful answer is
    read up to `max_bytes` and `ResponseTooLarge` raised beyond; an error answer is read
    only up to `excerpt_bytes`, enough to quote it, and the rest never downloaded. Other
    httpx errors (a refused connection, a broken answer) pass through.
    """
    httpx = import_httpx("canarykit", "pip install 'canarykit[http]'")
    try:
        with anyio.fail_after(deadline):
            async with client.stream(method, url, **request) as response:
                status = response.status_code
                ok = 200 <= status < 300
                if not ok:
                    body, cut = await _read(response, min(excerpt_bytes, max_bytes))
                    return Answer(status=status, body=body, cut=cut, headers=response.headers)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ResponseTooLarge(status, max_bytes)  # not worth downloading
                body, cut = await _read(response, max_bytes, keep_cut=False)
                if cut:
                    raise ResponseTooLarge(status, max_bytes)
                return Answer(status=status, body=body, cut=False, headers=response.headers)
    except httpx.TimeoutException:
        raise TimeoutError(f"no answer within {deadline:g} s") from None


async def _read(response: Any, limit: int, *, keep_cut: bool = True) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body, and whether there was more (then not all of it).

    A cut body is returned only with `keep_cut` (copying a large one costs memory).
    """
    body = bytearray()
    cut = False
    chunks = response.aiter_bytes()
    try:
        async for chunk in chunks:
            room = limit - len(body)
            if len(chunk) > room:
                cut = True
                if keep_cut:
                    body += chunk[:room]
                break
            body += chunk
    finally:
        if cut:
            await _abandon(response, chunks)
    return (bytes(body) if keep_cut or not cut else b""), cut


async def _abandon(response: Any, chunks: Any) -> None:
    """Stop reading `response` before its end, closing its connection.

    httpx reads a body through a chain of async generators, and leaving the outer one
    early leaves the inner ones to the garbage collector, which trio warns about. Closing
    the response closes the connection under them; the next read then fails inside the
    innermost one, and the error ends each generator of the chain in turn.
    """
    await response.aclose()
    with contextlib.suppress(Exception):
        async for _ in chunks:
            pass


# ---------------------------------------------------------------------------- secrets


def url_secrets(url: str) -> list[str]:
    """The parts of `url` to blank out of any text: the URL as given and as httpx writes it,
    its path, query, password (as written and decoded, and the basic credentials httpx
    sends for it), each query value and each long path segment (a token in a path, echoed
    back by the endpoint, is still a token).
    """  # noqa: D205 (the summary needs two lines)
    found = [url]
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return found
    if len(parts.path) > 1:
        found.append(parts.path)
    if parts.query:
        found.append(parts.query)
        found.extend(value for _, value in parse_qsl(parts.query))
    if password:
        found += [password, unquote(password)]
        pair = f"{unquote(username or '')}:{unquote(password)}".encode()
        found.append(base64.b64encode(pair).decode("ascii"))
    for segment in parts.path.split("/"):
        if len(segment) >= 8:
            found += [segment, unquote(segment)]
    # As httpx writes it in its log line; without httpx or for an odd URL the raw forms do.
    with contextlib.suppress(Exception):
        import httpx

        found.append(str(httpx.URL(url)))
    return found


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Header (or metadata) values to blank out of any text, and their long words (the
    token of ``Bearer <token>``, the credentials of ``Basic <base64>``).
    """  # noqa: D205 (the summary needs two lines)
    found: list[str] = []
    for value in headers.values():
        if value in _NOT_SECRET:
            continue
        found.append(value)
        found.extend(word for word in value.split() if len(word) >= 8)
    return found


_NOT_SECRET = frozenset({"application/json", "canarykit"})


def secret_redactor(secrets: Iterable[str]) -> Redactor:
    """A `Redactor` for `secrets`, also in the form httpx shows a status line in: without
    its non-ASCII characters (``Response.reason_phrase`` drops them).
    """  # noqa: D205 (the summary needs two lines)
    given = [secret for secret in secrets if isinstance(secret, str)]
    ascii_only = [secret.encode("ascii", "ignore").decode() for secret in given]
    return Redactor([*given, *(form for form in ascii_only if form not in given)])


# httpx logs each request's URL and its answer's status line at INFO; httpcore logs each
# step with its return value (the answer's headers, as bytes) at DEBUG. A filter applies
# only to the records of the logger it is attached to, not to its children's.
_HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class RedactLogs(logging.Filter):
    """Blanks secrets out of the log records of httpx and httpcore while attached."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def attach(self) -> None:
        """Start filtering httpx's and httpcore's records."""
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def detach(self) -> None:
        """Stop filtering them."""
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = self.redact(message)
        if hidden != message:
            record.msg = hidden
            record.args = None
        return True


@contextlib.contextmanager
def redacting_httpx_logs(redact: Redactor) -> Iterator[None]:
    """While inside, httpx's and httpcore's log records have `redact`'s secrets blanked."""
    log_filter = RedactLogs(redact)
    log_filter.attach()
    try:
        yield
    finally:
        log_filter.detach()
