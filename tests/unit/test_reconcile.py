"""Reconciliation: webhook growth over polled growth, per channel and category."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exporter.domain import Channel, MessageTotal, MonthUsage
from exporter.reconcile import MIN_MESSAGES, Pair, charged_volumes, polled_totals, ratios

CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+4915100000000", "Support", "ready")
USAGE = MonthUsage(1_780_272_000, "usd", {
    ("marketing", "regular"): MessageTotal(1000, Decimal("136.50")),
    ("utility", "regular"): MessageTotal(400, Decimal("22.00")),
    ("utility", "free_customer_service"): MessageTotal(100, Decimal(0)),
    ("service", "free_customer_service"): MessageTotal(0, Decimal(0)),
})


def got(webhook, baseline=None, currency="USD"):
    pair = Pair(1.0, USAGE.month_start, USAGE.currency, polled_totals(USAGE), webhook,
                charged_volumes(USAGE))
    return {(r.category, r.measure): r.value
            for r in ratios(CH, pair, baseline or {}, currency)}


def test_volume_adds_free_and_paid_types_and_cost_compares_in_one_currency():
    """Utility volume is 400 paid + 100 free; cost compares when the card's currency matches."""
    assert got({"marketing": (900.0, 122.85), "utility": (500.0, 22.0)}) == {
        ("marketing", "messages"): pytest.approx(0.9), ("marketing", "cost"): pytest.approx(0.9),
        ("utility", "messages"): pytest.approx(1.0), ("utility", "cost"): pytest.approx(1.0)}


def test_a_category_the_webhooks_missed_is_zero_and_one_never_polled_is_absent():
    """Missing webhook traffic shows as 0; a category with no polled volume has no ratio."""
    ratio = got({"marketing": (1000.0, 136.5)})
    assert ratio[("utility", "messages")] == 0.0
    assert ("service", "messages") not in ratio


def test_cost_is_not_compared_across_currencies():
    """A EUR rate card says nothing about a USD bill, and no card means no cost ratio."""
    assert ("marketing", "cost") not in got({"marketing": (1000.0, 120.0)}, currency="EUR")
    assert all(m == "messages" for _, m in got({"marketing": (1.0, 0.0)}, currency=None))


def test_after_a_baseline_both_sides_count_from_it():
    """A receiver that started mid-month compares growth since its first paired poll."""
    baseline = {"marketing": (600.0, 81.9, 50.0, 6.825), "utility": (500.0, 22.0, 0.0, 0.0)}
    ratio = got({"marketing": (450.0, 61.425), "utility": (30.0, 0.0)}, baseline)
    assert ratio[("marketing", "messages")] == pytest.approx((450 - 50) / (1000 - 600))
    assert ratio[("marketing", "cost")] == pytest.approx((61.425 - 6.825) / (136.5 - 81.9))
    assert ("utility", "messages") not in ratio  # no polled growth since the baseline


def test_a_category_with_points_lacking_a_cost_compares_messages_only():
    """A polled row whose points partly lacked a cost leaves its category's cost unknown: the
    messages still compare, the cost does not, and other categories are unaffected."""
    usage = MonthUsage(USAGE.month_start, "USD", {
        ("marketing", "regular"): MessageTotal(1000, Decimal("100.0"), 20),
        ("marketing", "free_customer_service"): MessageTotal(50, Decimal(0)),
        ("utility", "regular"): MessageTotal(400, Decimal("22.00"))})
    polled = polled_totals(usage)
    assert polled == {"marketing": (1050.0, 0.0), "utility": (400.0, 22.0)}
    pair = Pair(1.0, usage.month_start, "USD", polled,
                {"marketing": (1050.0, 130.0), "utility": (400.0, 22.0)}, charged_volumes(usage))
    ratio = {(r.category, r.measure): r.value for r in ratios(CH, pair, {}, "USD")}
    assert ratio == {("marketing", "messages"): 1.0, ("utility", "messages"): 1.0,
                     ("utility", "cost"): pytest.approx(1.0)}


def test_no_ratio_until_the_poll_grew_by_the_minimum():
    """Over a few messages one in flight between the sources reads as far off: a category is
    compared once its polled growth since the baseline reaches MIN_MESSAGES, not before."""
    grown = MIN_MESSAGES - 1
    baseline = {"marketing": (1000.0 - grown, 0.0, 0.0, 0.0),
                "utility": (500.0 - MIN_MESSAGES, 0.0, 0.0, 0.0)}
    ratio = got({"marketing": (grown - 1.0, 0.0), "utility": (MIN_MESSAGES - 1.0, 0.0)},
                baseline, currency=None)
    assert ratio == {("utility", "messages"): pytest.approx(1 - 1 / MIN_MESSAGES)}


def test_a_cost_ratio_waits_for_as_many_charged_messages():
    """Utility grew by 150 messages, but only 15 of them cost something (the rest were free in
    the service window): its messages compare, its cost not yet, since one charged message in
    flight would move it by 7%."""
    usage = MonthUsage(USAGE.month_start, "USD", {
        ("utility", "regular"): MessageTotal(15, Decimal("0.30")),
        ("utility", "free_customer_service"): MessageTotal(135, Decimal(0))})
    pair = Pair(1.0, usage.month_start, "USD", polled_totals(usage),
                {"utility": (150.0, 0.30)}, charged_volumes(usage))
    assert {(r.category, r.measure) for r in ratios(CH, pair, {}, "USD")} == {
        ("utility", "messages")}
