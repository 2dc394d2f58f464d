"""Month totals only grow within a month: a lower figure from the API is held."""

from __future__ import annotations

from decimal import Decimal

from exporter.domain import CallTotal, MarketTotal, MessageTotal, MonthUsage, never_lower

M = 1_780_272_000


def usage(volume, cost, calls=0, seconds=0):
    return MonthUsage(M, "USD", {("marketing", "regular"): MessageTotal(volume, Decimal(cost))},
                      {"business_initiated": CallTotal(calls, seconds, Decimal(0))})


def test_higher_totals_pass_unchanged():
    """Growth is taken as it is, and nothing is counted as held."""
    after = usage(12, "1.2", 3, 60)
    assert never_lower(usage(10, "1.0", 2, 50), after) == (after, 0)


def test_lower_or_missing_totals_are_held_at_the_old_figure():
    """A lower volume, cost or call figure, or a series that vanished, keeps the old value."""
    before = MonthUsage(M, "USD", {("marketing", "regular"): MessageTotal(10, Decimal("1.0")),
                                   ("utility", "regular"): MessageTotal(5, Decimal("0.2"))},
                        {"business_initiated": CallTotal(2, 50, Decimal("0.1"))})
    after = MonthUsage(M, "", {("marketing", "regular"): MessageTotal(11, Decimal("0.9"))},
                       {"business_initiated": CallTotal(2, 40, Decimal("0.1"))})
    held, raised = never_lower(before, after)
    assert raised == 3
    assert held.currency == "USD"
    assert held.messages == {("marketing", "regular"): MessageTotal(11, Decimal("1.0")),
                             ("utility", "regular"): MessageTotal(5, Decimal("0.2"))}
    assert held.calls == {"business_initiated": CallTotal(2, 50, Decimal("0.1"))}


def test_points_without_cost_are_kept_and_held_like_the_other_totals():
    """A held row keeps its count of points without a cost, and that count never falls within
    the month either: the row's cost stays unknown rather than reading as complete."""
    before = MonthUsage(M, "USD", {("marketing", "regular"): MessageTotal(10, Decimal("1.0"), 2)},
                        {"business_initiated": CallTotal(2, 50, Decimal("0.1"), 1)})
    lower = MonthUsage(M, "USD", {("marketing", "regular"): MessageTotal(9, Decimal("1.0"), 3)},
                       {"business_initiated": CallTotal(2, 50, Decimal("0.1"), 0)})
    held, raised = never_lower(before, lower)
    assert raised == 2
    assert held.messages == {("marketing", "regular"): MessageTotal(10, Decimal("1.0"), 3)}
    assert held.calls == {"business_initiated": CallTotal(2, 50, Decimal("0.1"), 1)}


def test_a_markets_total_never_goes_down_within_the_month():
    """A destination's month total is a counter too: a lower figure is held."""
    before = MonthUsage(1, "USD", markets={"DE": MarketTotal(10, Decimal("1.0"))})
    after = MonthUsage(1, "USD", markets={"DE": MarketTotal(8, Decimal("0.8")),
                                          "AT": MarketTotal(1, Decimal("0.1"))})
    held, raised = never_lower(before, after)
    assert raised == 1
    assert held.markets == {"DE": MarketTotal(10, Decimal("1.0")),
                            "AT": MarketTotal(1, Decimal("0.1"))}
