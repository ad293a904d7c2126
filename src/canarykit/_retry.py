"""What every retry loop in canarykit shares: how long to wait, and how to say what failed.

The runner (apply, read, save), webhook hooks, notifiers and the Prometheus source all
retry with the same exponential backoff; each keeps its own loop (they differ in what
ends it), but the delay and the failure text come from here, so they cannot drift apart.
"""

from __future__ import annotations

import math

__all__ = ["backoff_delay", "describe_failure"]


def backoff_delay(first: float, retry: int) -> float:
    """Seconds to wait before retry number `retry` (1 is the first retry): doubling from `first`.

    >>> [backoff_delay(0.5, n) for n in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    """
    return math.ldexp(first, retry - 1)  # first * 2 ** (retry - 1), exactly


def describe_failure(exc: BaseException, timeout: float) -> str:
    """One line for a failed call bounded by `timeout` seconds: the timeout, or the exception.

    >>> describe_failure(TimeoutError(), 2.5)
    'timed out after 2.5 s'
    >>> describe_failure(OSError("refused"), 2.5)
    'OSError: refused'
    """
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
