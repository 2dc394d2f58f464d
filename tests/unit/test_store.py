"""The SQLite state survives a restart and retires what disappears."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from exporter.db import StateError
from exporter.domain import (
    Balance,
    CallTotal,
    Channel,
    Client,
    MarketTotal,
    MessageTotal,
    MonthUsage,
)
from exporter.polling.store import Store

CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+49151", "Support", "ready")
DEC = 1_764_547_200


def usage(volume: int) -> MonthUsage:
    return MonthUsage(DEC, "USD", {("marketing", "regular"): MessageTotal(volume, Decimal("1.25"))},
                      {"business_initiated": CallTotal(2, 61, Decimal("0.0340"))})


def test_everything_is_served_again_after_a_restart(tmp_path):
    """Discovery, usage, balances and the ledger load back exactly as written."""
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    store.set_discovery([Client("cl_1", "Acme", "active")], [CH])
    store.put_usage("ch_1", {DEC: usage(7)}, 1000.5, keep_from=0)
    store.put_channel_balance("ch_1", Balance(Decimal("42.17"), "USD"), 1000.5)
    store.put_client_balance("cl_1", Balance(Decimal("310.5"), "USD"), 1000.5)
    store.put_partner_balances([Balance(Decimal("100.45"), "EUR")], 1000.5)
    store.record_call([("usage_channel", "ch_1"), ("usage_waba", "wa_1")], 999_000)
    store.close()

    again = Store(path)
    assert again.channels == {"ch_1": CH}
    assert again.usage["ch_1"].months[DEC] == usage(7)
    assert again.usage["ch_1"].fetched_at == 1000.5
    assert again.channel_balances["ch_1"] == Balance(Decimal("42.17"), "USD")
    assert again.client_balances["cl_1"] == [Balance(Decimal("310.5"), "USD")]
    assert again.partner_balances == [Balance(Decimal("100.45"), "EUR")]
    assert sorted(again.ledger_rows()) == [("usage_channel", "ch_1", 999_000),
                                           ("usage_waba", "wa_1", 999_000)]


def test_channels_that_disappear_take_their_numbers_with_them(tmp_path):
    """A channel missing from discovery loses its usage and balance, on disk too."""
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    store.set_discovery([], [CH])
    store.put_usage("ch_1", {DEC: usage(1)}, 1.0, keep_from=0)
    store.put_channel_balance("ch_1", Balance(Decimal(1), "USD"), 1.0)
    assert store.set_discovery([], []) == {"ch_1"}
    assert store.usage == {}
    store.close()
    assert Store(path).usage == {}


def test_old_months_are_dropped(tmp_path):
    """Months before keep_from leave memory and disk."""
    store = Store(tmp_path / "s.sqlite3")
    nov = 1_761_955_200
    store.put_usage("ch_1", {nov: MonthUsage(nov, "USD")}, 1.0, keep_from=0)
    store.put_usage("ch_1", {DEC: usage(1)}, 2.0, keep_from=DEC)
    assert list(store.usage["ch_1"].months) == [DEC]


def test_a_foreign_schema_is_refused_with_the_setting_named(tmp_path):
    """A state file from another schema version stops start-up, naming D360_STATE_PATH."""
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="D360_STATE_PATH"):
        Store(path)


def test_an_unusable_path_is_refused_with_the_setting_named(tmp_path):
    """A state path that is a directory stops start-up, naming D360_STATE_PATH."""
    with pytest.raises(StateError, match="D360_STATE_PATH"):
        Store(tmp_path)


def test_points_without_cost_survive_a_restart_and_old_rows_still_load(tmp_path):
    """A row's count of points without a cost loads back as written, and a row written before
    that count existed loads with none."""
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    unknown = MonthUsage(DEC, "USD", {("marketing", "regular"): MessageTotal(7, Decimal(0), 7),
                                      ("utility", "regular"): MessageTotal(2, Decimal("0.5"))},
                         {"business_initiated": CallTotal(2, 61, Decimal("0.01"), 1)})
    store.put_usage("ch_1", {DEC: unknown}, 1.0, keep_from=0)
    store.put_usage("ch_2", {DEC: usage(3)}, 1.0, keep_from=0)
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE usage SET body=? WHERE channel_id='ch_2'", (
        '{"currency":"USD","messages":[["marketing","regular",3,"1.25"]],'
        '"calls":[["business_initiated",2,61,"0.0340"]]}',))
    db.commit()
    db.close()
    again = Store(path)
    assert again.usage["ch_1"].months[DEC] == unknown
    assert again.usage["ch_1"].months[DEC].points_without_cost == 8
    assert again.usage["ch_2"].months[DEC] == usage(3)


def test_markets_survive_a_restart(tmp_path):
    """The month's totals by destination country load back as written."""
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    month = MonthUsage(DEC, "USD", {("marketing", "regular"): MessageTotal(7, Decimal("0.7"))},
                       {}, {"DE": MarketTotal(5, Decimal("0.5")),
                            "unknown": MarketTotal(2, Decimal(0), 2)})
    store.put_usage("ch_1", {DEC: month}, 1.0, keep_from=0)
    store.close()
    assert Store(path).usage["ch_1"].months[DEC] == month
