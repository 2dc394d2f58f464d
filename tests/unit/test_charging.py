"""What each task's call is charged to, and when a close-out poll fits."""

from __future__ import annotations

import pytest

from exporter.domain import Limit
from exporter.polling import ledger as budget
from exporter.polling.charging import close_out_room, scopes_for
from exporter.polling.ledger import Ledger
from exporter.polling.tasks import TaskKind


def charge(kind: TaskKind, id_: str = "ch", *, waba: str | None = "wa", shares: bool = True,
           per_client: bool = False):
    return scopes_for(kind, id_, waba=waba, balance_shares_usage=shares,
                      client_balance_per_client=per_client)


@pytest.mark.parametrize("kind", [TaskKind.USAGE, TaskKind.CLOSE_OUT])
def test_a_usage_call_charges_its_channel_then_its_waba(kind):
    """Usage and close-out polls charge the channel's budget first, then its WABA's."""
    assert charge(kind) == ((budget.USAGE_CHANNEL, "ch"), (budget.USAGE_WABA, "wa"))


def test_a_channel_balance_charges_the_usage_budgets_only_when_it_shares_them():
    """A channel balance call charges its own budget, and the usage ones when shared."""
    assert charge(TaskKind.CHANNEL_BALANCE, shares=False) == ((budget.CHANNEL_BALANCE, "ch"),)
    assert charge(TaskKind.CHANNEL_BALANCE) == (
        (budget.CHANNEL_BALANCE, "ch"), (budget.USAGE_CHANNEL, "ch"), (budget.USAGE_WABA, "wa"))


@pytest.mark.parametrize("kind", [TaskKind.USAGE, TaskKind.CLOSE_OUT, TaskKind.CHANNEL_BALANCE])
def test_a_channel_no_longer_planned_charges_nothing(kind):
    """A channel task whose channel left the plan has no scopes: it is dropped."""
    assert charge(kind, waba=None) is None


def test_client_balances_charge_the_client_or_the_partner():
    """The client balance budget is keyed by client when per client, else by the partner."""
    assert charge(TaskKind.CLIENT_BALANCE, "cl", per_client=True) == (
        (budget.CLIENT_BALANCE, "cl"),)
    assert charge(TaskKind.CLIENT_BALANCE, "cl") == ((budget.CLIENT_BALANCE, "partner"),)


def test_partner_wide_tasks_charge_the_partner():
    """Partner balance and discovery calls charge one partner-wide budget each."""
    assert charge(TaskKind.PARTNER_BALANCE, "") == ((budget.PARTNER_BALANCE, "partner"),)
    assert charge(TaskKind.DISCOVERY, "") == ((budget.DISCOVERY, "partner"),)


def test_a_slot_is_never_charged_by_itself():
    """A slot becomes a usage or balance call, which is what gets charged."""
    with pytest.raises(ValueError, match="slot"):
        charge(TaskKind.SLOT, "wa")


USAGE = ((budget.USAGE_CHANNEL, "ch"), (budget.USAGE_WABA, "wa"))


def ledger_with(calls_in_window: int) -> Ledger:
    ledger = Ledger({budget.USAGE_CHANNEL: Limit(10, 3600), budget.USAGE_WABA: Limit(200, 3600)})
    for i in range(calls_in_window):
        ledger.record(USAGE, i * 1000)
    return ledger


@pytest.mark.parametrize(("calls", "shares", "polls_balances", "room"), [
    (8, True, True, True),    # 8 + this one + the balance call's reserve = 10
    (9, True, True, False),   # the reserve would be gone
    (9, False, True, True),   # balances have their own budget: no reserve
    (9, True, False, True),   # no balance calls at all: no reserve
    (10, False, False, False),  # the window is full
])
def test_a_close_out_keeps_one_call_of_room_for_a_shared_balance_call(
        calls, shares, polls_balances, room):
    """A close-out goes only if the channel's window keeps room for a balance call sharing it."""
    assert close_out_room(ledger_with(calls), USAGE, 60_000, balance_shares_usage=shares,
                          polls_channel_balances=polls_balances) is room


def test_a_close_out_needs_room_in_the_waba_too():
    """A channel with room still waits when its WABA's window is full."""
    ledger = Ledger({budget.USAGE_CHANNEL: Limit(10, 3600), budget.USAGE_WABA: Limit(1, 3600)})
    ledger.record([(budget.USAGE_WABA, "wa")], 0)
    assert not close_out_room(ledger, USAGE, 1000, balance_shares_usage=False,
                              polls_channel_balances=False)
