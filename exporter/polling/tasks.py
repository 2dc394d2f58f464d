"""The poller's tasks: what kinds of work it schedules, and how a task is named.

A task kind is not a budget kind: `TaskKind.CHANNEL_BALANCE` is a call the poller makes, while
`ledger.CHANNEL_BALANCE` is a budget that call is charged to (with others, when it shares the
usage budgets). `charging.scopes_for` is the one place that maps the first to the second.
"""

from __future__ import annotations

import enum


class TaskKind(enum.StrEnum):
    """What a scheduled task does. The values appear in logs (`task=`)."""

    USAGE = "usage"
    CHANNEL_BALANCE = "balance"
    CLIENT_BALANCE = "client_balance"
    PARTNER_BALANCE = "partner_balance"
    DISCOVERY = "discovery"
    CLOSE_OUT = "close_out"  # the next usage poll brought to just after a UTC day ends, if room
    SLOT = "slot"  # a usage call of a WABA whose own budget binds; which channel, WabaSlots decides


TaskKey = tuple[TaskKind, str]  # (kind, id): a channel, client or WABA id, or "" for one of a kind
