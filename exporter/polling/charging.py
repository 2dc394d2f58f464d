"""What a call charges: the budget scopes each task is charged to, and whether a close-out
poll fits in its channel's window now.

Pure: the poller asks with plain values and the in-memory ledger, and does the I/O itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.polling import ledger as budget
from exporter.polling.ledger import Ledger, Scope
from exporter.polling.tasks import TaskKind

_PARTNER = "partner"  # the key of a budget the whole partner shares


def scopes_for(
    kind: TaskKind,
    id_: str,
    *,
    waba: str | None,
    balance_shares_usage: bool,
    client_balance_per_client: bool,
) -> tuple[Scope, ...] | None:
    """The scopes a task's call is charged to, the channel's own first; None when the task's
    channel is no longer planned (`waba` is its WABA key, None if it is not planned here).

    A usage call charges its channel and its WABA. A channel balance call charges its own
    budget, and the usage ones too when the API counts it there. A client balance call charges
    its client or the partner, by `client_balance_per_client`.
    """
    if kind in (TaskKind.USAGE, TaskKind.CHANNEL_BALANCE, TaskKind.CLOSE_OUT):
        if waba is None:
            return None
        usage: tuple[Scope, ...] = ((budget.USAGE_CHANNEL, id_), (budget.USAGE_WABA, waba))
        if kind != TaskKind.CHANNEL_BALANCE:
            return usage
        own: tuple[Scope, ...] = ((budget.CHANNEL_BALANCE, id_),)
        return own + usage if balance_shares_usage else own
    if kind == TaskKind.CLIENT_BALANCE:
        return ((budget.CLIENT_BALANCE, id_ if client_balance_per_client else _PARTNER),)
    if kind == TaskKind.PARTNER_BALANCE:
        return ((budget.PARTNER_BALANCE, _PARTNER),)
    if kind == TaskKind.DISCOVERY:
        return ((budget.DISCOVERY, _PARTNER),)
    raise ValueError(f"a {kind} task is charged as the usage call it becomes, not by itself")


def close_out_room(
    ledger: Ledger,
    scopes: Sequence[Scope],
    now_ms: int,
    *,
    balance_shares_usage: bool,
    polls_channel_balances: bool,
) -> bool:
    """Room to bring a channel's next usage poll forward to now (`scopes` as `scopes_for`
    gives them, the channel's first). Until that poll was due, every window ending in between
    holds one call more than planned, and a channel balance call sharing the budget may still
    enter it: so one call's room is kept for that."""
    channel = scopes[0]
    reserve = 1 if balance_shares_usage and polls_channel_balances else 0
    return (ledger.allows(scopes, now_ms)
            and ledger.used(channel, now_ms) + 1 + reserve <= ledger.limit(channel[0]).count)
