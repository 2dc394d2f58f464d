"""Reading Partner API bodies tolerantly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exporter.api.models import (
    ShapeError,
    aggregate_by_month,
    parse_balance,
    parse_channels,
    parse_partner_balance,
    parse_usage,
)
from exporter.domain import Balance, CallTotal, MarketTotal, MessageTotal

USAGE = {
    "currency": "usd",
    "granularity": "daily",
    "pricing_analytics": {"data": [{"data_points": [
        {"start": 1764547200, "end": 1764633600, "pricing_category": "MARKETING",
         "pricing_type": "REGULAR", "volume": 120, "cost": Decimal("13.73")},
        {"start": 1764633600, "end": 1764720000, "pricing_category": "MARKETING",
         "pricing_type": "REGULAR", "volume": 5, "cost": Decimal("0.5")},
        {"start": 1764547200, "end": 1764633600, "pricing_category": "SERVICE",
         "pricing_type": "FREE_CUSTOMER_SERVICE", "volume": 800, "cost": 0},
    ]}]},
    "call_analytics": {"data_points": [
        {"start": 1764547200, "end": 1764633600, "direction": "BUSINESS_INITIATED",
         "count": 4, "duration": 610, "cost": Decimal("0.31")},
    ]},
}


def test_usage_points_sum_into_month_totals_exactly():
    """Daily points of one month add up, as Decimals, under lower-case labels."""
    months = aggregate_by_month(parse_usage(USAGE), "")
    assert list(months) == [1764547200]
    dec = months[1764547200]
    assert dec.currency == "USD"
    assert dec.messages[("marketing", "regular")].volume == 125
    assert dec.messages[("marketing", "regular")].cost == Decimal("14.23")
    assert dec.calls["business_initiated"].duration_seconds == 610


def test_usage_accepts_points_at_the_top_level_and_iso_times():
    """data_points may sit directly under the section, and times may be ISO strings."""
    body = {"pricing_analytics": {"data_points": [
        {"start": "2025-12-01T00:00:00Z", "pricing_category": "utility",
         "pricing_type": "regular", "volume": "3", "cost": "0.12"}]}}
    report = parse_usage(body)
    assert report.messages[0].start == 1764547200
    assert report.messages[0].volume == 3


@pytest.mark.parametrize("body", [
    [], {"pricing_analytics": []}, {"pricing_analytics": {"data": [{"data_points": [
        {"start": 1, "volume": "many", "cost": 1}]}]}},
    {"pricing_analytics": {"data_points": [{"start": 1, "volume": 1, "cost": "NaN"}]}},
    {"pricing_analytics": {"data_points": [{"start": 1, "volume": True, "cost": 1}]}},
    {"call_analytics": {"data_points": [{"start": 1, "count": 2, "average_duration": "long"}]}},
    {"pricing_analytics": {"data_points": [{"start": 1, "volume": 1, "tier": {"low": 0}}]}},
    {"currency": "", "pricing_analytics": {"data_points": [{"start": 1, "cost": 1,
                                                             "volume": "1.5"}]}},
])
def test_wrong_shapes_are_shape_errors(body):
    """A body of the wrong shape raises ShapeError, never a TypeError or a wrong number."""
    with pytest.raises(ShapeError):
        parse_usage(body)


def test_channels_carry_both_waba_ids():
    """A channel keeps 360dialog's WABA id (budget) and Meta's (label)."""
    page = parse_channels({"total": 1, "partner_channels": [
        {"id": "ch_1", "client_id": "cl_1", "status": "ready",
         "waba_account": {"id": "wa_1", "external_id": "1049", "name": "Acme"},
         "setup_info": {"phone_number": "+49151", "phone_name": "Acme Support"}}]})
    ch = page.items[0]
    assert (ch.waba_id, ch.waba_external_id, ch.waba_label) == ("wa_1", "1049", "1049")
    assert ch.name == "Acme Support"
    assert page.total == 1


def test_balances_normalise_currency_case():
    """'usd' and 'eur' from 360dialog become USD and EUR."""
    balance = parse_balance({"balance": 42.17, "currency": "usd"})
    assert balance is not None
    assert balance.currency == "USD"
    both, _ = parse_partner_balance([{"total": 1, "currency": "eur"},
                                     {"total": 2, "currency": "usd"}])
    assert [b.currency for b in both] == ["EUR", "USD"]


META = {
    "pricing_analytics": {"data": [{"data_points": [
        {"start": 1790812800, "end": 1790899200, "phone_number": "4915112345678",
         "country": "de", "pricing_category": "UTILITY", "pricing_type": "REGULAR",
         "tier": "0:100000", "volume": 300, "cost": Decimal("16.5")},
        {"start": 1790812800, "end": 1790899200, "phone_number": "4915112345678",
         "country": "AT", "pricing_category": "UTILITY", "pricing_type": "REGULAR",
         "tier": "0:100000", "volume": 20, "cost": Decimal("1.1")},
    ]}]},
    "call_analytics": {"data": [{"data_points": [
        {"start": 1790812800, "end": 1790899200, "count": 3, "cost": Decimal("0.3"),
         "average_duration": 100},
        {"start": 1790899200, "end": 1790985600, "count": 1, "cost": Decimal("0.1"),
         "average_duration": 40},
    ]}]},
    "id": "100200300400500",
}


def test_meta_shape_reads_without_a_currency_and_keeps_tier_and_country():
    """Meta's body has no currency (""), its enums become our lower-case labels, and each
    point keeps its country and tier; points of two countries add into one row."""
    report = parse_usage(META)
    assert report.currency == ""
    assert [(m.category, m.pricing_type, m.country, m.tier) for m in report.messages] == [
        ("utility", "regular", "DE", "0:100000"), ("utility", "regular", "AT", "0:100000")]
    month = aggregate_by_month(report, "EUR")[1790812800]
    assert month.currency == "EUR"
    assert month.messages == {("utility", "regular"): MessageTotal(320, Decimal("17.6"))}
    assert month.markets == {"DE": MarketTotal(300, Decimal("16.5")),
                             "AT": MarketTotal(20, Decimal("1.1"))}


def test_points_without_a_country_are_the_unknown_market_and_a_bad_one_is_other():
    """An answer without the COUNTRY dimension says nothing of markets: its messages are kept
    as `unknown` (never spread over guessed countries); a value that is no ISO code is
    `other`, so labels stay bounded."""
    body = {"pricing_analytics": {"data_points": [
        {"start": 1790812800, "pricing_category": "MARKETING", "pricing_type": "REGULAR",
         "volume": 5, "cost": Decimal("0.5")},
        {"start": 1790812800, "pricing_category": "MARKETING", "pricing_type": "REGULAR",
         "country": "Germany", "volume": 2},
        {"start": 1790812800, "pricing_category": "UTILITY", "pricing_type": "REGULAR",
         "country": "br", "volume": 1, "cost": Decimal("0.01")}]}}
    month = aggregate_by_month(parse_usage(body), "USD")[1790812800]
    assert month.markets == {"unknown": MarketTotal(5, Decimal("0.5")),
                             "other": MarketTotal(2, Decimal(0), 1),
                             "BR": MarketTotal(1, Decimal("0.01"))}


def test_call_seconds_are_count_times_the_average_per_point():
    """Meta's average_duration is per call: 3 x 100 s + 1 x 40 s is 340 s (not 140, the sum of
    the averages), and calls with no direction dimension share one row."""
    calls = aggregate_by_month(parse_usage(META), "")[1790812800].calls
    assert calls == {"unknown": CallTotal(4, 340, Decimal("0.4"))}


def test_a_fractional_average_is_rounded_to_whole_seconds_per_point():
    """count x average_duration is rounded once per point, so 121 s over 3 calls stays 121."""
    body = {"call_analytics": {"data_points": [
        {"start": 1, "count": 3, "average_duration": Decimal("40.333333333333336"), "cost": 0},
        {"start": 2, "count": 2, "average_duration": Decimal("0.25"), "cost": 0}]}}
    assert [c.duration_seconds for c in parse_usage(body).calls] == [121, 1]


def test_a_point_without_cost_is_unknown_not_zero():
    """A missing or null cost is None; its month row counts it, so the row's cost is unknown,
    while a row whose points all carry a cost (even 0) is known."""
    body = {"pricing_analytics": {"data_points": [
        {"start": 1790812800, "pricing_category": "MARKETING", "pricing_type": "REGULAR",
         "volume": 5},
        {"start": 1790899200, "pricing_category": "MARKETING", "pricing_type": "REGULAR",
         "volume": 2, "cost": Decimal("0.2")},
        {"start": 1790812800, "pricing_category": "SERVICE", "pricing_type": "FREE_ENTRY_POINT",
         "volume": 9, "cost": 0},
        {"start": 1790812800, "pricing_category": "UTILITY", "pricing_type": "REGULAR",
         "volume": 1, "cost": None}]},
        "call_analytics": {"data_points": [{"start": 1790812800, "count": 1,
                                            "average_duration": 30}]}}
    report = parse_usage(body)
    assert [m.cost for m in report.messages] == [None, Decimal("0.2"), 0, None]
    assert report.points_without_cost == 3
    month = aggregate_by_month(report, "")[1790812800]
    assert month.messages[("marketing", "regular")].points_without_cost == 1
    assert month.messages[("service", "free_entry_point")] == MessageTotal(9, Decimal(0), 0)
    assert month.messages[("utility", "regular")].points_without_cost == 1
    assert month.calls["unknown"].points_without_cost == 1
    assert month.points_without_cost == 3


def test_the_older_working_shape_still_reads():
    """The turn-1 shape's top-level currency and total call `duration` are still used."""
    month = aggregate_by_month(parse_usage(USAGE), "EUR")[1764547200]
    assert month.currency == "USD"
    assert month.calls["business_initiated"] == CallTotal(4, 610, Decimal("0.31"))


def test_balances_without_an_amount_are_left_out_not_errors():
    """A channel or client balance without `balance` is None; partner records without `total`
    are skipped and counted, the rest kept, one without a currency with currency ""."""
    assert parse_balance({"currency": "usd", "usage": []}) is None
    assert parse_balance({"balance": 3}) == Balance(Decimal(3), "")
    balances, skipped = parse_partner_balance([{"currency": "eur"}, {"total": 12.5}, {},
                                               {"total": 1, "currency": "usd"}])
    assert balances == [Balance(Decimal("12.5"), ""), Balance(Decimal(1), "USD")]
    assert skipped == 2


@pytest.mark.parametrize("body", [
    {"balance": "lots", "currency": "usd"}, {"balance": 1, "currency": "us dollars"}, [],
])
def test_a_balance_that_is_there_but_wrong_is_a_shape_error(body):
    """An amount or currency that is present but unreadable is still a ShapeError."""
    with pytest.raises(ShapeError):
        parse_balance(body)
