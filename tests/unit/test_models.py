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
    assert parse_balance({"balance": 42.17, "currency": "usd"}).currency == "USD"
    both = parse_partner_balance([{"total": 1, "currency": "eur"}, {"total": 2, "currency": "usd"}])
    assert [b.currency for b in both] == ["EUR", "USD"]
