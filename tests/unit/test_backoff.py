"""After a failed poll: who retries, how long a task waits, and what caps the wait."""

from __future__ import annotations

import pytest

from exporter.polling.backoff import (
    MIN_BACKOFF_SECONDS,
    retries_on_its_own,
    retry_delay,
    task_interval,
)
from exporter.polling.schedule import ChannelPlan
from exporter.polling.tasks import TaskKind

PLAN = ChannelPlan(usage_interval=400.0, best_usage_interval=392.0, balance_interval=3700.0)


def test_failures_in_a_row_wait_longer_up_to_the_interval():
    """The wait starts at the minimum backoff, doubles, and stops at the task's interval."""
    waits = [retry_delay(n, 100.0, retry_after=None, retryable=True) for n in (1, 2, 3, 4)]
    assert waits == [MIN_BACKOFF_SECONDS, 30.0, 60.0, 100.0]


def test_a_retry_after_longer_than_the_backoff_is_honoured():
    """A 429's Retry-After wins over a shorter backoff, even past the interval."""
    assert retry_delay(1, 100.0, retry_after=250.0, retryable=True) == 250.0
    assert retry_delay(3, 100.0, retry_after=5.0, retryable=True) == 60.0


def test_an_error_retrying_cannot_fix_waits_the_whole_interval():
    """A non-retryable error is tried again only at the task's regular interval."""
    assert retry_delay(1, 900.0, retry_after=None, retryable=False) == 900.0


@pytest.mark.parametrize(("kind", "slotted", "retries"), [
    (TaskKind.CLOSE_OUT, False, False),  # the regular poll closes the day
    (TaskKind.USAGE, True, False),  # the WABA's slots bring it round
    (TaskKind.USAGE, False, True),
    (TaskKind.CHANNEL_BALANCE, True, True),
    (TaskKind.DISCOVERY, False, True),
])
def test_who_reschedules_a_failed_task(kind, slotted, retries):
    """Only tasks nothing else brings round again are rescheduled with a backoff."""
    assert retries_on_its_own(kind, slotted=slotted) is retries


@pytest.mark.parametrize(("kind", "plan", "interval"), [
    (TaskKind.USAGE, PLAN, 400.0),
    (TaskKind.CHANNEL_BALANCE, PLAN, 3700.0),
    (TaskKind.DISCOVERY, None, 900.0),
    (TaskKind.CLIENT_BALANCE, None, 60.0),
    (TaskKind.USAGE, None, 60.0),  # the channel left the plan
    (TaskKind.CHANNEL_BALANCE, ChannelPlan(400.0, 392.0, None), 60.0),
])
def test_a_tasks_backoff_is_capped_by_its_own_cadence(kind, plan, interval):
    """Usage and balance calls cap at their planned interval, discovery at its own, the rest at
    the client balance interval."""
    assert task_interval(kind, plan, discovery=900.0, otherwise=60.0) == interval
