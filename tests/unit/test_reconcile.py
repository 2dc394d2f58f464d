"""Reconciliation: webhook estimate over polled numbers, per channel and category."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exporter.domain import Channel, MessageTotal, MonthUsage
from exporter.reconcile import channel_ratios

CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+4915100000000", "Support", "ready")
POLLED = MonthUsage(1_780_272_000, "usd", {
    ("marketing", "regular"): MessageTotal(100, Decimal("13.65")),
    ("utility", "regular"): MessageTotal(40, Decimal("2.20")),
    ("utility", "free_customer_service"): MessageTotal(10, Decimal(0)),
    ("service", "free_customer_service"): MessageTotal(0, Decimal(0)),
})


def ratios(tallies, currency="USD"):
    return {(r.category, r.measure): r.value
            for r in channel_ratios(CH, POLLED, tallies, currency)}


def test_ratios_compare_volume_across_pricing_types_and_cost_in_one_currency():
    """Utility volume adds its free and paid types; cost compares when currencies match."""
    got = ratios({("1049", "ch_1", "marketing"): [90.0, 12.285],
                  ("1049", "ch_1", "utility"): [50.0, 2.2]})
    assert got == {("marketing", "messages"): pytest.approx(0.9),
                   ("marketing", "cost"): pytest.approx(0.9),
                   ("utility", "messages"): pytest.approx(1.0),
                   ("utility", "cost"): pytest.approx(1.0)}


def test_a_category_the_webhooks_missed_shows_zero_and_zero_polls_show_nothing():
    """Missing webhook traffic is a 0 ratio; a category with no polled volume has no ratio."""
    got = ratios({("1049", "ch_1", "marketing"): [100.0, 13.65]})
    assert got[("utility", "messages")] == 0.0
    assert ("service", "messages") not in got


def test_cost_is_not_compared_across_currencies():
    """A EUR rate card says nothing about a USD bill."""
    got = ratios({("1049", "ch_1", "marketing"): [100.0, 12.0]}, currency="EUR")
    assert ("marketing", "cost") not in got
    assert got[("marketing", "messages")] == 1.0
    assert all(m == "messages" for _, m in ratios({("1049", "ch_1", "marketing"): [1, 0]},
                                                   currency=None))
