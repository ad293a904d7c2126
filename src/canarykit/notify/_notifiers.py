"""The notifiers: a Slack-compatible incoming webhook, and a generic JSON webhook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import ConfigError
from .._http import DEFAULT_MAX_RESPONSE_BYTES
from ._deliver import Notifier, _headers_checked
from ._describe import Notice, Severity

__all__ = ["SlackNotifier", "WebhookNotifier"]

# Slack's attachment colours: green, amber, red.
_COLORS = {Severity.INFO: "#2eb886", Severity.WARN: "#daa038", Severity.ERROR: "#a30200"}
# Slack refuses a section text over 3,000 characters and a context element over 2,000 (or
# so); a reason quoted from a failing metrics query can be long.
_SECTION_LIMIT = 2900
_CONTEXT_LIMIT = 1900
_METRIC_LINES = 10


def _escape(text: str) -> str:
    """Text for Slack's mrkdwn: ``&``, ``<`` and ``>`` are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _context(notice: Notice) -> str:
    parts = [f"severity {notice.severity.label}"]
    if notice.phase is not None:
        parts.append(f"phase {notice.phase}")
    if notice.step is not None:
        parts.append(f"step {notice.step + 1}")
    if notice.weight is not None:
        parts.append(f"canary {notice.weight:g}%")
    parts.append(f"t={notice.time:.0f}")
    return " · ".join(parts)


def slack_payload(
    notice: Notice, *, channel: str | None = None, username: str | None = None
) -> dict[str, Any]:
    """The JSON body for a Slack incoming webhook: ``text`` and a coloured attachment.

    ``text`` is the plain summary that Slack shows in notifications; the attachment's
    blocks carry the message, each metric's verdict for a verdict notice, and the
    rollout's phase, step and weight.
    """
    headline = f"{notice.rollout}: {notice.message}"
    summary = f"*{_escape(notice.rollout)}* {_escape(notice.message)}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _clip(summary, _SECTION_LIMIT),
            },
        }
    ]
    metrics = notice.details.get("metrics")
    if isinstance(metrics, list) and metrics:
        lines = [
            f"• {m.get('metric')}: {m.get('kind')} ({m.get('reason')})"
            for m in metrics[:_METRIC_LINES]
            if isinstance(m, Mapping)
        ]
        if len(metrics) > _METRIC_LINES:
            lines.append(f"• … and {len(metrics) - _METRIC_LINES} more")
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(_escape("\n".join(lines)), _SECTION_LIMIT),
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _clip(_escape(_context(notice)), _CONTEXT_LIMIT)}
            ],
        }
    )
    payload: dict[str, Any] = {
        "text": _clip(_escape(headline), _SECTION_LIMIT),
        "attachments": [{"color": _COLORS[notice.severity], "blocks": blocks}],
    }
    # Legacy incoming webhooks honour these overrides; app webhooks ignore them.
    if channel is not None:
        payload["channel"] = channel
    if username is not None:
        payload["username"] = username
    return payload


def _optional_text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isprintable() or len(value) > 80:
        raise ConfigError(field, value, "must be a printable string of 1-80 characters")
    return value


class SlackNotifier(Notifier):
    """Post rollout events to a Slack (or Slack-compatible) incoming webhook.

    A listener that never blocks the rollout: it queues, and a background task posts. Use
    it inside ``async with`` in the same event loop as the rollout::

        async with SlackNotifier(os.environ["SLACK_WEBHOOK_URL"], rollout="web",
                                 min_severity="warn") as slack:
            outcome = await Rollout(plan, ..., key="web", listeners=[slack]).run()

    Options:

    - `rollout`: the name shown for events given to the notifier itself (``"rollout"``,
      `Rollout`'s default key). `attach(rollout)` listens under the rollout's own key.
    - `min_severity`: ``"info"`` (everything), ``"warn"`` or ``"error"``; see
      `canarykit.notify` for which event has which severity.
    - `every_verdict`: also send passing and not-yet verdicts (one every analysis window;
      off by default, as such a stream is not news).
    - `channel`, `username`: overrides that legacy incoming webhooks honour.
    - `timeout` (5 s per attempt, a deadline for the whole exchange, the answer
      included), `attempts` (3 in all), `backoff` (1 s, doubling), `queue_size` (100
      notices), `drain_timeout` (10 s to deliver what is queued when the block ends).
    - `max_response_bytes` (1 MiB): the most of a 2xx answer's body read; a longer one
      is refused (the notice dropped, saying so). Of an error answer only its start is
      read, to quote it in the log.

    The URL is a secret: it never appears in full in a repr, an error or a log.
    `stats` counts what was sent, dropped and retried.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str | None = None,
        username: str | None = None,
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
        self.channel = _optional_text("channel", channel)
        self.username = _optional_text("username", username)
        super().__init__(
            url,
            rollout=rollout,
            min_severity=min_severity,
            every_verdict=every_verdict,
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            max_response_bytes=max_response_bytes,
        )

    def _payload(self, notice: Notice) -> dict[str, Any]:
        return slack_payload(notice, channel=self.channel, username=self.username)


class WebhookNotifier(Notifier):
    """POST each rollout event as JSON to a URL: the generic webhook.

    The body is `Notice.to_json()`::

        {"rollout": "web", "event": "phase_changed", "severity": "error", "time": 361.0,
         "phase": "rolled_back", "step": 1, "weight": 0.0,
         "reason": "error_rate: fail (canary 5.1% > max 2%)",
         "message": "rolled back: error_rate: fail (canary 5.1% > max 2%)",
         "details": {"previous_phase": "rolling_back"}}

    `event` is phase_changed, split_confirmed, verdict, analysis_error, router_failure,
    command, rollout_resumed or lease_lost (or the snake_case name of an event kind added
    later); `time` is on the rollout's clock (seconds since the epoch with the default
    clock); `step` counts from 0; `weight` is the canary's confirmed percent. `headers`
    adds request headers (an ``Authorization``, say); their values are never shown. Any
    2xx answer is a delivery; 408, 425, 429, 5xx and network errors are retried; other
    answers are refused at once and counted as dropped.

    The other options are `SlackNotifier`'s.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
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
        self._extra_headers = _headers_checked(headers)
        super().__init__(
            url,
            rollout=rollout,
            min_severity=min_severity,
            every_verdict=every_verdict,
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            max_response_bytes=max_response_bytes,
        )

    def _payload(self, notice: Notice) -> dict[str, Any]:
        return notice.to_json()

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self._extra_headers}
