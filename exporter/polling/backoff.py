"""After a failed poll: whether the task retries on its own, and how long it waits.

The wait doubles from `MIN_BACKOFF_SECONDS` with each failure in a row (exporter.retry), never
longer than the task's regular interval, at least what a 429's `Retry-After` asks; an error that
will not go away by retrying waits the full interval, except discovery until it first succeeds.
The ledger still has the last word.
"""

from __future__ import annotations

from exporter import retry
from exporter.polling.schedule import ChannelPlan
from exporter.polling.tasks import TaskKind

MIN_BACKOFF_SECONDS = 15.0


def retries_on_its_own(kind: TaskKind, *, slotted: bool) -> bool:
    """A failed close-out leaves the regular poll, still scheduled, to close the day; a usage
    poll of a slotted WABA comes round again with its WABA's slots."""
    if kind == TaskKind.CLOSE_OUT:
        return False
    return not (kind == TaskKind.USAGE and slotted)


def retries_soon(kind: TaskKind, *, retryable: bool, discovered_once: bool) -> bool:
    """Whether a failure is retried on the backoff rather than after the full interval. Until
    the first discovery succeeds every failure of it is: nothing is polled before it, and a
    setting fixed on the API's side (a key activated, a proxy route added) shows at once."""
    return retryable or (kind == TaskKind.DISCOVERY and not discovered_once)


def retry_delay(
    attempt: int, interval: float, *, retry_after: float | None, retryable: bool
) -> float:
    """Seconds until failure number `attempt` (1, 2, ... in a row) of a task is retried."""
    if not retryable:
        return interval
    return max(retry.backoff(attempt, MIN_BACKOFF_SECONDS, interval), retry_after or 0.0)


def task_interval(
    kind: TaskKind, plan: ChannelPlan | None, *, discovery: float, otherwise: float
) -> float:
    """A task's regular interval, which caps its backoff: a planned channel's usage or balance
    interval, the discovery interval, or `otherwise` (the client balance interval) for the
    rest."""
    if kind == TaskKind.USAGE and plan is not None:
        return plan.usage_interval
    if (kind == TaskKind.CHANNEL_BALANCE and plan is not None
            and plan.balance_interval is not None):
        return plan.balance_interval
    if kind == TaskKind.DISCOVERY:
        return discovery
    return otherwise
