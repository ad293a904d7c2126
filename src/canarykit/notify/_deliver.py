"""Delivering notices: a bounded queue in memory and one background task that posts them.

How this works. A notifier is entered with ``async with``, which starts one task (in the
notifier's own task group) and one httpx client. Its listener runs inside the rollout's task:
it describes the event, filters it by severity and puts the JSON body on a bounded queue
without waiting (``send_nowait``), so a slow or dead endpoint can never slow the rollout
or make it fail. The task posts the notices in order, each attempt bounded by `timeout`;
a timeout, a connection error, HTTP 408, 425, 429 or 5xx is retried, `attempts` tries in
all, after a backoff that doubles from `backoff` seconds (real time: notifications are
about the real world even when the rollout runs on a virtual clock). `timeout` is a
deadline for the attempt as a whole, the answer included; the answer's body is read up to
`max_response_bytes` (1 MiB) for a 2xx and only far enough to quote its start otherwise.

A notice that cannot be delivered is dropped, counted in `stats` and logged, never raised:
the queue was full, the endpoint kept failing, it answered with a 4xx that a retry would
not change, the notifier was not running, or it closed with notices still queued and its
`drain_timeout` ran out. Closing drains the queue first, even when the block around it is
cancelled (a rollback's notice matters most then), for at most `drain_timeout` seconds.

Secrets. Webhook URLs carry secrets (a Slack incoming webhook's URL *is* one). A notifier
shows only the scheme and host (``https://hooks.slack.com/***``) in its repr and its logs,
blanks the URL and header values out of any error text it logs (on the raw text, before
it is cut or escaped), and, while it runs, out of httpx's own request log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import ConfigError
from .._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RedactLogs,
    ResponseTooLarge,
    check_max_bytes,
    default_tls,
    exchange,
    header_secrets,
    import_httpx,
    secret_redactor,
    url_secrets,
    worth_retrying,
)
from .._retry import backoff_delay
from .._safe import check_name
from .._text import shown
from .._urls import check_url, shown_url
from .._validate import finite
from ._describe import Notice, Severity, Tracker, describe_event, event_severity, is_routine

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._runner import Rollout

__all__ = ["DeliveryStats", "Notifier"]

logger = logging.getLogger("canarykit.notify")

_EXTRA = "pip install 'canarykit[http]'"
_HIDDEN = "***"
# Characters of an error answer (or error message) quoted in a log line.
_EXCERPT = 200


def _positive(field: str, value: Any) -> float:
    number = finite(field, value)
    if not number > 0:
        raise ConfigError(field, value, "must be > 0")
    return number


def _count(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, value, f"must be an integer >= {minimum}")
    return value


@attrs.frozen(kw_only=True)
class DeliveryStats:
    """What a notifier has done so far.

    `sent`: notices the endpoint accepted (2xx). `dropped`: notices given up (queue full,
    endpoint failing, refused, not running, or still queued at close). `retried`: failed
    attempts that were tried again. `queued`: notices waiting now. `filtered`: events
    below `min_severity` (or routine verdicts), not sent by choice.
    """

    sent: int
    dropped: int
    retried: int
    queued: int
    filtered: int


class Notifier:
    """What `SlackNotifier` and `WebhookNotifier` share: filtering, queueing, delivery."""

    def __init__(
        self,
        url: str,
        *,
        rollout: str = "rollout",
        min_severity: Severity | str = Severity.INFO,
        every_verdict: bool = False,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 1.0,
        queue_size: int = 100,
        drain_timeout: float = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._url = check_url(url)
        self._shown = shown_url(url)
        self.rollout = check_name("rollout", rollout)
        self.min_severity = Severity.parse(min_severity)
        if not isinstance(every_verdict, bool):
            raise ConfigError("every_verdict", every_verdict, "must be True or False")
        self.every_verdict = every_verdict
        self.timeout = _positive("timeout", timeout)
        self.attempts = _count("attempts", attempts, 1)
        self.backoff = finite("backoff", backoff)
        if self.backoff < 0:
            raise ConfigError("backoff", backoff, "must be >= 0")
        self.queue_size = _count("queue_size", queue_size, 1)
        self.drain_timeout = _positive("drain_timeout", drain_timeout)
        self.max_response_bytes = check_max_bytes("max_response_bytes", max_response_bytes)
        self._httpx = import_httpx("canarykit.notify", _EXTRA)
        # A subclass sets its extra headers before calling this: their values are
        # secrets too (tokens).
        self._redact = secret_redactor([*url_secrets(url), *header_secrets(self._headers())])
        self._filter = RedactLogs(self._redact)
        self._trackers: dict[str, Tracker] = {}
        self._send: MemoryObjectSendStream[tuple[Notice, bytes]] | None = None
        self._group: TaskGroup | None = None
        self._worker_scope: anyio.CancelScope | None = None
        self._entered = False
        self._sent = 0
        self._dropped = 0
        self._retried = 0
        self._filtered = 0

    # ------------------------------------------------------------------ subclasses

    def _payload(self, notice: Notice) -> dict[str, Any]:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    # ------------------------------------------------------------------ reading

    @property
    def stats(self) -> DeliveryStats:
        """Counts of notices sent, dropped, retried, queued and filtered out."""
        send = self._send
        queued = 0 if send is None else send.statistics().current_buffer_used
        return DeliveryStats(
            sent=self._sent,
            dropped=self._dropped,
            retried=self._retried,
            queued=queued,
            filtered=self._filtered,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self._shown!r}, rollout={self.rollout!r}, "
            f"min_severity={self.min_severity.label!r})"
        )

    # ------------------------------------------------------------------ listening

    def __call__(self, event: object) -> None:
        """The listener: notify about `event` of the rollout named `rollout`; never blocks.

        Pass the notifier itself in ``Rollout(..., listeners=[notifier])``. It never raises.
        """
        self._notify(event, self.rollout, None)

    def attach(self, rollout: Rollout) -> None:
        """Listen to `rollout` under its own key, reading its exact step and weight.

        For several rollouts through one notifier, or when the step matters: a plain
        listener learns the step only from the events that carry it.
        """
        key = rollout.key

        def listener(event: object) -> None:
            self._notify(event, key, rollout)

        rollout.add_listener(listener)

    def _notify(self, event: object, name: str, rollout: Rollout | None) -> None:
        try:
            tracker = self._trackers.get(name)
            if tracker is None:
                tracker = self._trackers[name] = Tracker(name)
            tracker.observe(event)
            if rollout is not None:
                tracker.observe_state(rollout.state)
            if event_severity(event) < self.min_severity or (
                not self.every_verdict and is_routine(event)
            ):
                self._filtered += 1
                return
            notice = describe_event(event, name, tracker=tracker)
            body = json.dumps(self._payload(notice), allow_nan=False).encode()
        except Exception:
            # A listener must never fail the rollout; this is a bug to report, not to raise.
            logger.exception("%s: could not describe %s", self, type(event).__name__)
            self._drop(1, f"could not describe {type(event).__name__}")
            return
        self._enqueue(notice, body)

    def _enqueue(self, notice: Notice, body: bytes) -> None:
        send = self._send
        if send is None:
            why = "the notifier is not running (use it inside 'async with')"
            if self._entered:
                why = "the notifier has closed"
            self._drop(1, f"{notice.event} for {notice.rollout}: {why}")
            return
        try:
            send.send_nowait((notice, body))
        except anyio.WouldBlock:
            self._drop(1, f"{notice.event} for {notice.rollout}: queue full ({self.queue_size})")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._drop(1, f"{notice.event} for {notice.rollout}: the notifier has closed")

    def _drop(self, count: int, why: str) -> None:
        self._dropped += count
        logger.warning(
            "%s: dropped %d notice%s: %s (%d dropped in all)",
            self,
            count,
            "" if count == 1 else "s",
            why,
            self._dropped,
        )

    # ------------------------------------------------------------------ running

    async def __aenter__(self) -> Notifier:
        if self._entered:
            raise RuntimeError(f"{self!r} can be entered only once")
        self._entered = True
        send, receive = anyio.create_memory_object_stream[tuple[Notice, bytes]](self.queue_size)
        client: httpx.AsyncClient = self._httpx.AsyncClient(
            timeout=self._httpx.Timeout(self.timeout),
            verify=default_tls(self._httpx),
            follow_redirects=False,
        )
        self._filter.attach()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        self._send = send
        await group.start(self._work, receive, client)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        send, group = self._send, self._group
        assert send is not None and group is not None
        self._send = None
        send.close()  # the worker finishes once the queue is empty...
        if self._worker_scope is not None:  # ...or when the drain time runs out
            self._worker_scope.deadline = anyio.current_time() + self.drain_timeout
        try:
            return await group.__aexit__(exc_type, exc, tb)
        finally:
            self._filter.detach()

    async def _work(
        self,
        receive: MemoryObjectReceiveStream[tuple[Notice, bytes]],
        client: httpx.AsyncClient,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        # Shielded: the queue is drained even when the block around the notifier is
        # cancelled; `__aexit__` bounds it with a deadline.
        with anyio.CancelScope(shield=True) as scope:
            self._worker_scope = scope
            task_status.started()
            try:
                async for notice, body in receive:
                    await self._deliver(client, notice, body)
            finally:
                left = 0
                while True:
                    try:
                        receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                    left += 1
                receive.close()
                if left:
                    self._drop(left, f"still queued after the {self.drain_timeout:g} s drain")
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
                    await client.aclose()

    async def _deliver(self, client: httpx.AsyncClient, notice: Notice, body: bytes) -> None:
        what = f"{notice.event} for {notice.rollout}"
        reason = "not attempted"
        attempt = 0
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    answer = await exchange(
                        client,
                        "POST",
                        self._url,
                        deadline=self.timeout,
                        max_bytes=self.max_response_bytes,
                        content=body,
                        headers=self._headers(),
                    )
                except ResponseTooLarge as exc:
                    reason = exc.advice("max_response_bytes")
                    break  # the endpoint will send it again
                except Exception as exc:
                    reason = self._describe(exc)
                else:
                    if answer.ok:
                        self._sent += 1
                        return
                    excerpt = answer.text(self._redact, limit=_EXCERPT).strip()
                    reason = f"HTTP {answer.status}" + (f": {excerpt}" if excerpt else "")
                    if not worth_retrying(answer.status):
                        break  # the same request will be refused again
                if attempt < self.attempts:
                    self._retried += 1
                    logger.info("%s: %s: attempt %d failed (%s)", self, what, attempt, reason)
                    await anyio.sleep(backoff_delay(self.backoff, attempt))
        except anyio.get_cancelled_exc_class():
            self._drop(1, f"{what}: the drain time ran out during delivery")
            raise
        self._drop(1, f"{what} not delivered after {attempt} attempt(s), the last: {reason}")

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.timeout:g} s"
        text = self._redact(str(exc))
        return shown(
            f"{type(exc).__name__}: {text}" if text else type(exc).__name__, limit=_EXCERPT
        )


def _headers_checked(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Extra request headers (e.g. an Authorization), checked; values are never shown."""
    checked: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not name.isascii() or not name.replace("-", "").isalnum():
            raise ConfigError("headers", name, "header names must be letters, digits and '-'")
        if not isinstance(value, str) or not value.isprintable():
            raise ConfigError(f"headers[{name!r}]", _HIDDEN, "must be printable (value hidden)")
        checked[name] = value
    return checked
