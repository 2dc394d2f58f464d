"""Reconciliation: webhook growth over polled growth, per channel and category."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exporter.domain import Channel, MessageTotal, MonthUsage
from exporter.reconcile import Pair, polled_totals, ratios

CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+4915100000000", "Support", "ready")
USAGE = MonthUsage(1_780_272_000, "usd", {
    ("marketing", "regular"): MessageTotal(100, Decimal("13.65")),
    ("utility", "regular"): MessageTotal(40, Decimal("2.20")),
    ("utility", "free_customer_service"): MessageTotal(10, Decimal(0)),
    ("service", "free_customer_service"): MessageTotal(0, Decimal(0)),
})


def got(webhook, baseline=None, currency="USD"):
    pair = Pair(1.0, USAGE.month_start, USAGE.currency, polled_totals(USAGE), webhook)
    return {(r.category, r.measure): r.value
            for r in ratios(CH, pair, baseline or {}, currency)}


def test_volume_adds_free_and_paid_types_and_cost_compares_in_one_currency():
    """Utility volume is 40 paid + 10 free; cost compares when the card's currency matches."""
    assert got({"marketing": (90.0, 12.285), "utility": (50.0, 2.2)}) == {
        ("marketing", "messages"): pytest.approx(0.9), ("marketing", "cost"): pytest.approx(0.9),
        ("utility", "messages"): pytest.approx(1.0), ("utility", "cost"): pytest.approx(1.0)}


def test_a_category_the_webhooks_missed_is_zero_and_one_never_polled_is_absent():
    """Missing webhook traffic shows as 0; a category with no polled volume has no ratio."""
    ratio = got({"marketing": (100.0, 13.65)})
    assert ratio[("utility", "messages")] == 0.0
    assert ("service", "messages") not in ratio


def test_cost_is_not_compared_across_currencies():
    """A EUR rate card says nothing about a USD bill, and no card means no cost ratio."""
    assert ("marketing", "cost") not in got({"marketing": (100.0, 12.0)}, currency="EUR")
    assert all(m == "messages" for _, m in got({"marketing": (1.0, 0.0)}, currency=None))


def test_after_a_baseline_both_sides_count_from_it():
    """A receiver that started mid-month compares growth since its first paired poll."""
    baseline = {"marketing": (60.0, 8.19, 5.0, 0.6825), "utility": (50.0, 2.2, 0.0, 0.0)}
    ratio = got({"marketing": (45.0, 6.1425), "utility": (3.0, 0.0)}, baseline)
    assert ratio[("marketing", "messages")] == pytest.approx((45 - 5) / (100 - 60))
    assert ratio[("marketing", "cost")] == pytest.approx((6.1425 - 0.6825) / (13.65 - 8.19))
    assert ("utility", "messages") not in ratio  # no polled growth since the baseline


def test_a_category_with_points_lacking_a_cost_compares_messages_only():
    """A polled row whose points partly lacked a cost leaves its category's cost unknown: the
    messages still compare, the cost does not, and other categories are unaffected."""
    usage = MonthUsage(USAGE.month_start, "USD", {
        ("marketing", "regular"): MessageTotal(100, Decimal("10.0"), 20),
        ("marketing", "free_customer_service"): MessageTotal(5, Decimal(0)),
        ("utility", "regular"): MessageTotal(40, Decimal("2.20"))})
    polled = polled_totals(usage)
    assert polled == {"marketing": (105.0, 0.0), "utility": (40.0, 2.2)}
    pair = Pair(1.0, usage.month_start, "USD", polled,
                {"marketing": (105.0, 13.0), "utility": (40.0, 2.2)})
    ratio = {(r.category, r.measure): r.value for r in ratios(CH, pair, {}, "USD")}
    assert ratio == {("marketing", "messages"): 1.0, ("utility", "messages"): 1.0,
                     ("utility", "cost"): pytest.approx(1.0)}
