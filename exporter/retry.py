"""When to try again: the one backoff formula and the one `Retry-After` reader.

The poller (API calls that failed) and the webhook forwarder (deliveries that failed) both wait
longer after each failure and honour a server's `Retry-After`; each keeps its own base and cap.
Pure: no clock, no I/O.
"""

from __future__ import annotations

# 2**30 times any base is years: past it the cap always wins, and a float power would overflow.
_MAX_DOUBLINGS = 30


def backoff(attempt: int, base: float, cap: float) -> float:
    """The wait before retry number `attempt` (1 after the first failure): `base`, doubled at
    each further failure, never more than `cap`."""
    return min(cap, base * 2.0 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS))


def retry_after_seconds(value: str | None) -> float | None:
    """The seconds a `Retry-After` header asks for (never negative), or None when it is absent
    or not a number (an HTTP date: rare enough that our own backoff is as good)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
