"""Every documented payload in tests/fixtures/api/ read by the parsers, with the totals a person
worked out from the fixture by hand."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.api.models import (
    aggregate_by_month,
    parse_balance,
    parse_partner_balance,
    parse_usage,
)
from exporter.labels import CATEGORIES, DIRECTIONS, PRICING_TYPES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "api"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
SEP = 1788220800  # 2026-09-01 UTC
OCT = 1790812800  # 2026-10-01 UTC

# (category, pricing_type) -> (volume, cost; None where the cost is unknown)
Messages = dict[tuple[str, str], tuple[int, str | None]]
# direction -> (count, seconds, cost)
Calls = dict[str, tuple[int, int, str]]

USAGE: dict[str, tuple[str, dict[int, tuple[Messages, Calls]]]] = {
    "usage-meta-daily": ("", {OCT: ({
        ("marketing", "regular"): (195, "21.07"),
        ("marketing", "free_entry_point"): (3, "0"),
        ("utility", "regular"): (710, "17.89"),
        ("authentication", "regular"): (900, "1.26"),
        ("authentication_international", "regular"): (40, "1.12"),
        ("service", "regular"): (950, "44.51"),
        ("service", "free_entry_point"): (55, "0"),
    }, {})}),
    "usage-meta-half-hour": ("", {OCT: ({
        ("marketing", "regular"): (17, "2.3205"),
        ("utility", "regular"): (25, "1.375"),
        ("service", "regular"): (40, "2.2"),
    }, {})}),
    "usage-meta-monthly": ("", {OCT: ({
        ("marketing", "regular"): (5200, "364.0"),
        ("utility", "regular"): (18000, "396.0"),
        ("authentication", "regular"): (2400, "86.4"),
        ("service", "regular"): (31000, "682.0"),
        ("service", "free_entry_point"): (900, "0"),
    }, {})}),
    "usage-meta-credit-line-no-cost": ("", {OCT: ({
        ("marketing", "regular"): (120, None),
        ("utility", "regular"): (300, None),
        ("authentication", "regular"): (900, None),
        ("authentication_international", "regular"): (40, None),
        ("service", "regular"): (800, None),
        ("service", "free_entry_point"): (55, None),
    }, {})}),
    "usage-meta-daily-month-boundary": ("", {
        SEP: ({("marketing", "regular"): (60, "8.03")},
              {"business_initiated": (3, 121, "0.12")}),
        OCT: ({("marketing", "regular"): (20, "2.73"), ("utility", "regular"): (5, "0.275")},
              {"business_initiated": (2, 190, "0.18")}),
    }),
    "usage-combined-pricing-and-calls": ("", {OCT: ({
        ("marketing", "regular"): (120, "16.38"),
        ("utility", "regular"): (300, "16.5"),
        ("authentication", "regular"): (900, "1.26"),
    }, {"business_initiated": (4, 4 * 153, "0.31")})}),
    "call-analytics-direction-flat": ("", {OCT: ({}, {
        "business_initiated": (6, 6 * 121, "0.94"),
        "user_initiated": (9, 9 * 64, "0"),
    })}),
    # No direction asked for: one row for all calls.
    "call-analytics-nested": ("", {OCT: ({}, {"unknown": (14, 14 * 97, "1.82")})}),
    "usage-legacy-working-shape": ("USD", {OCT: ({
        ("marketing", "regular"): (120, "13.73"),
        ("service", "free_customer_service"): (800, "0"),
    }, {"business_initiated": (4, 610, "0.31")})}),
}

BALANCES: dict[str, tuple[str, str] | None] = {
    "balance-channel": ("48.15", "USD"),
    "balance-channel-missing-balance": None,
    "balance-client": ("310.5", "EUR"),
    "balance-client-missing-balance": None,
}
PARTNER: dict[str, tuple[list[tuple[str, str]], int]] = {
    "balance-partner": ([("100.45", "EUR"), ("250.0", "USD")], 0),
    "balance-partner-missing-total": ([("12.5", "")], 2),
}
ERRORS = {"error-400-wrong-granularity"}  # read by the client: tests/component/test_api_client.py


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(), parse_float=Decimal)


def raw_points(section: Any) -> list[dict[str, Any]]:
    if not section:
        return []
    points = list(section.get("data_points", []))
    for group in section.get("data", []):
        points += group["data_points"]
    return points


def test_every_fixture_has_a_source_and_an_expectation():
    """Each fixture names its page in a .source note and has hand-made expectations here."""
    assert ALL
    for name in ALL:
        source = (FIXTURES / f"{name}.source").read_text()
        assert "http" in source or "reference" in source, name
    assert set(ALL) == set(USAGE) | set(BALANCES) | set(PARTNER) | ERRORS


@pytest.mark.parametrize("name", sorted(USAGE))
def test_usage_fixtures_give_the_hand_made_month_totals(name):
    """Each usage fixture sums to the expected rows per UTC month: lower-case labels, exact money,
    call seconds as count x average, and no cost where the fixture gives none."""
    want_currency, want = USAGE[name]
    months = aggregate_by_month(parse_usage(load(name)), "")
    assert set(months) == set(want)
    for month, (messages, calls) in want.items():
        got = months[month]
        assert got.currency == want_currency
        assert {k: (t.volume, None if t.points_without_cost else t.cost)
                for k, t in got.messages.items()} == {
            k: (v, None if c is None else Decimal(c)) for k, (v, c) in messages.items()}
        assert {d: (t.count, t.duration_seconds, t.cost) for d, t in got.calls.items()} == {
            d: (n, s, Decimal(c)) for d, (n, s, c) in calls.items()}


@pytest.mark.parametrize("name", sorted(USAGE))
def test_usage_fixtures_keep_every_point_and_mark_each_missing_cost(name):
    """The parser keeps every data point, whatever the nesting, and counts exactly the points
    that carry no cost; the labels it makes are all in the bounded sets."""
    body = load(name)
    pricing = raw_points(body.get("pricing_analytics"))
    calls = raw_points(body.get("call_analytics"))
    report = parse_usage(body)
    assert (len(report.messages), len(report.calls)) == (len(pricing), len(calls))
    assert report.points_without_cost == sum("cost" not in p for p in pricing + calls)
    assert [m.tier for m in report.messages] == [p.get("tier", "") for p in pricing]
    assert {m.category for m in report.messages} <= CATEGORIES
    assert {m.pricing_type for m in report.messages} <= PRICING_TYPES
    assert {c.direction for c in report.calls} <= DIRECTIONS | {"unknown"}


@pytest.mark.parametrize("name", sorted(BALANCES))
def test_balance_fixtures(name):
    """A channel or client balance reads its amount and currency; one without an amount is None."""
    got = parse_balance(load(name))
    want = BALANCES[name]
    assert (None if got is None else (got.amount, got.currency)) == (
        None if want is None else (Decimal(want[0]), want[1]))


@pytest.mark.parametrize("name", sorted(PARTNER))
def test_partner_balance_fixtures(name):
    """Partner records with a total are kept (a missing currency as ""), the others counted."""
    balances, skipped = parse_partner_balance(load(name))
    want, want_skipped = PARTNER[name]
    assert [(b.amount, b.currency) for b in balances] == [(Decimal(a), c) for a, c in want]
    assert skipped == want_skipped
