"""The one backoff and failure text shared by every retry loop keep the delays they had.

Each caller used to write ``delay * 2 ** (n - 1)`` itself; the expected sequences below are
what those expressions gave, for each caller's default and for other parameters.
"""

# Imports internals on purpose: the one backoff.

from __future__ import annotations

import pytest

from canarykit._retry import backoff_delay, describe_failure


def _runner_delays(retry_delay: float, attempts: int) -> list[float]:
    # Runner apply/read/save: after failed attempt `a` (not the last), wait before the next.
    return [backoff_delay(retry_delay, a) for a in range(1, attempts)]


def _hook_delays(backoff: float, attempts: int) -> list[float]:
    # Webhook: before attempt `a` > 1.
    return [backoff_delay(backoff, a - 1) for a in range(2, attempts + 1)]


def _notifier_delays(backoff: float, attempts: int) -> list[float]:
    # Notifier and Prometheus source: after failed attempt `a` (not the last).
    return [backoff_delay(backoff, a) for a in range(1, attempts)]


@pytest.mark.parametrize(
    ("delays", "expected"),
    [
        (_runner_delays(1.0, 3), [1.0, 2.0]),  # Rollout's default apply_attempts, retry_delay
        (_runner_delays(0.1, 5), [0.1, 0.2, 0.4, 0.8]),
        (_runner_delays(0.0, 4), [0.0, 0.0, 0.0]),
        (_hook_delays(1.0, 3), [1.0, 2.0]),  # Webhook's defaults
        (_hook_delays(0.05, 4), [0.05, 0.1, 0.2]),
        (_notifier_delays(1.0, 3), [1.0, 2.0]),  # Notifier's defaults
        (_notifier_delays(0.25, 3), [0.25, 0.5]),  # PrometheusSource's defaults
        (_notifier_delays(0.25, 6), [0.25, 0.5, 1.0, 2.0, 4.0]),
    ],
)
def test_each_callers_delay_sequence_is_the_one_it_had(delays, expected):
    assert delays == expected


@pytest.mark.parametrize("first", [0.0, 0.1, 0.25, 1.0, 3.7, 1e-9])
def test_backoff_is_exactly_the_old_doubling_expression(first):
    for retry in range(1, 30):
        assert backoff_delay(first, retry) == first * 2 ** (retry - 1)


def test_a_timeout_is_described_by_the_time_it_had():
    assert describe_failure(TimeoutError("ignored"), 0.5) == "timed out after 0.5 s"


def test_other_failures_are_described_by_type_and_message():
    assert describe_failure(ConnectionRefusedError("port 80"), 1) == (
        "ConnectionRefusedError: port 80"
    )
    assert describe_failure(RuntimeError(), 1) == "RuntimeError"
