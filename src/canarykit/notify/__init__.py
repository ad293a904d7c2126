"""Notifications: rollout events to Slack or to any JSON webhook, filtered by severity.

A notifier is a rollout listener that never blocks: it queues each notice in memory and a
background task posts it, with a timeout, bounded retries and backoff. Each attempt is
bounded as a whole by `timeout`, its answer included, and an answer's body by
`max_response_bytes` (1 MiB). Notices that cannot be delivered are counted and logged,
never raised into the rollout. Needs httpx (``pip install 'canarykit[http]'``)::

    from canarykit.notify import SlackNotifier, WebhookNotifier

    async with (
        SlackNotifier(slack_url, rollout="web", min_severity="warn") as slack,
        WebhookNotifier(events_url, rollout="web") as events,
    ):
        outcome = await Rollout(plan, ..., key="web", listeners=[slack, events]).run()

Severities are Flagger's info, warn and error; `min_severity` sends that level and worse.

- error: rolled back; a rollback that could not be confirmed; the lease lost.
- warn: rolling back or aborted; paused; a failing or inconclusive verdict; an analysis
  or router error; a refused operator command.
- info: started, resumed, promoting, promoted; the canary's weight changed; a passing or
  not-yet verdict (sent only with ``every_verdict=True``); an accepted command; a
  rollout resumed by a new runner; any event kind added later.

`event_severity` gives an event's severity and `describe_event` the `Notice` sent for it.
"""

from ._deliver import DeliveryStats as DeliveryStats
from ._deliver import Notifier as Notifier
from ._describe import Notice as Notice
from ._describe import Severity as Severity
from ._describe import describe_event as describe_event
from ._describe import event_severity as event_severity
from ._notifiers import SlackNotifier as SlackNotifier
from ._notifiers import WebhookNotifier as WebhookNotifier
from ._notifiers import slack_payload as slack_payload

__all__ = [
    "DeliveryStats",
    "Notice",
    "Notifier",
    "Severity",
    "SlackNotifier",
    "WebhookNotifier",
    "describe_event",
    "event_severity",
    "slack_payload",
]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
