"""The simulator's fleet and traffic: deterministic, realistic, self-consistent."""

from __future__ import annotations

import calendar

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.demo import EXAMPLE_RATE_CARD
from exporter.simulator.fleet import MARKETS, build_fleet
from exporter.simulator.traffic import (
    DAY,
    PRICE_PERIODS,
    PULSE_PRICE,
    STREAMS,
    _count,
    cumulative,
    diurnal,
    month_to_date_totals,
    price,
    pricing_type_at,
    tier,
    usage_points,
)
from exporter.webhooks.ratecard import load_rate_card

FLEET = build_fleet(7)
BUSY = next(ch for ch in FLEET.channels() if ch.activity > 1)
MARCH = calendar.timegm((2026, 3, 1, 0, 0, 0))
OCTOBER_2026 = calendar.timegm((2026, 10, 1, 0, 0, 0))
NOVEMBER_2026 = calendar.timegm((2026, 11, 1, 0, 0, 0))


def test_fleet_is_deterministic_and_varied():
    """The same seed gives the same fleet: WABAs of 1 to 50 channels, idle ones, unique ids."""
    again = build_fleet(7)
    assert again.channels() == FLEET.channels()
    sizes = sorted(len(w.channels) for w in FLEET.wabas())
    assert (sizes[0], sizes[-1]) == (1, 50)
    assert any(ch.activity == 0 for ch in FLEET.channels())
    assert len({ch.id for ch in FLEET.channels()}) == len(FLEET.channels())
    assert len({ch.phone_number for ch in FLEET.channels()}) == len(FLEET.channels())
    assert build_fleet(8).channels() != FLEET.channels()


def test_diurnal_curve_rises_from_zero_to_one():
    """A day's share of traffic starts at 0, ends at 1 and is busier at 15:00 than at 03:00."""
    assert diurnal(0) == 0
    assert abs(diurnal(DAY) - 1) < 1e-12
    hour = 3600
    assert diurnal(16 * hour) - diurnal(15 * hour) > diurnal(4 * hour) - diurnal(3 * hour)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, DAY * 3), b=st.integers(0, DAY * 3))
def test_traffic_never_goes_backwards_within_a_day(a, b):
    """The cumulative count within one day never decreases with time."""
    a, b = sorted((a, b))
    if a // DAY != b // DAY:
        return
    assert cumulative(7, BUSY, "MARKETING/REGULAR", 420, MARCH + a) <= cumulative(
        7, BUSY, "MARKETING/REGULAR", 420, MARCH + b)


@settings(max_examples=25, deadline=None)
@given(now_offset=st.integers(1, 20 * DAY))
def test_granularities_add_up_to_the_same_totals(now_offset):
    """Half-hour points sum to daily points, which sum to the monthly point, for any cut."""
    now = MARCH + now_offset

    def totals(granularity):
        pricing, calls = usage_points(7, BUSY, MARCH, int(now), now, granularity)
        out: dict[object, float] = {}
        for p in pricing:
            out[(p.category, p.pricing_type)] = out.get((p.category, p.pricing_type), 0) + p.volume
        for c in calls:
            out[c.direction] = out.get(c.direction, 0) + c.count
        return out

    assert totals("half_hour") == totals("daily") == totals("monthly")


def test_no_data_from_the_future():
    """Points never start after `now`, even when end_date is later."""
    now = MARCH + 5 * DAY + 100
    pricing, calls = usage_points(7, BUSY, MARCH, MARCH + 30 * DAY, now, "daily")
    assert pricing
    assert max(p.start for p in pricing) <= now
    assert max(c.start for c in calls) <= now


def test_truth_is_the_sum_of_the_points():
    """month_to_date_totals equals summing what the endpoint returns for the month."""
    now = MARCH + 9 * DAY + 5000
    messages, calls = month_to_date_totals(7, BUSY, MARCH, now)
    pricing, call_points = usage_points(7, BUSY, MARCH, int(now), now, "daily")
    assert sum(v for v, _ in messages.values()) == sum(p.volume for p in pricing)
    assert sum(c for _, c in messages.values()) == sum(p.cost for p in pricing)
    assert sum(n for n, _, _ in calls.values()) == sum(c.count for c in call_points)


def test_idle_channels_send_nothing():
    """A channel with activity 0 has no traffic at all."""
    idle = next(ch for ch in FLEET.channels() if ch.activity == 0)
    assert usage_points(7, idle, MARCH, MARCH + 3 * DAY, MARCH + 3 * DAY, "daily") == ([], [])


def test_only_billable_points_of_tiered_categories_carry_a_tier():
    """Paid utility and authentication points have a tier; marketing, free types and markets
    without a price have none."""
    assert tier("UTILITY", "REGULAR", "DE") == "0:100000"
    assert tier("AUTHENTICATION", "REGULAR", "IN") == "0:100000"
    assert tier("MARKETING", "REGULAR", "DE") == ""
    assert tier("UTILITY", "FREE_CUSTOMER_SERVICE", "DE", MARCH) == ""
    assert tier("SERVICE", "REGULAR", "DE", OCTOBER_2026) == "0:100000"
    assert tier("UTILITY", "REGULAR", "ZZ") == ""


def test_the_simulators_prices_are_the_demo_cards_in_every_period():
    """For each period of the example card, market and stream, a message the simulator charges
    costs what the card says, a stream it does not charge is free by Meta's rules then, and a
    business-initiated call costs the card's per-pulse rate."""
    card = load_rate_card(EXAMPLE_RATE_CARD)
    assert [valid_from for valid_from, _ in PRICE_PERIODS] == [p.valid_from for p in card.periods]
    checked = 0
    for period in card.periods:
        for times in (period.valid_from, period.valid_from + 40 * DAY):
            for code, country, digits in MARKETS:
                phone = code + "5" * digits
                for category, pricing_type, _ in STREAMS:
                    charged = price(category, pricing_type, country, times)
                    if pricing_type_at(category, pricing_type, times) != "REGULAR":
                        assert charged == 0
                        continue
                    assert card.message_price(phone, category.lower(), times) == charged > 0
                    checked += 1
                assert card.call_price(phone, 60, times) == PULSE_PRICE[country] * 10
    assert checked > 60


def test_from_october_2026_service_and_in_window_utility_are_regular_and_cost():
    """A November 2026 day has no free customer-service points: in-window utility joins the
    REGULAR utility point and service is REGULAR, each costing its volume at the period's
    price; a September day still has them free."""
    ch = BUSY
    sep_points, _ = usage_points(7, ch, OCTOBER_2026 - DAY, OCTOBER_2026 - 1, OCTOBER_2026,
                                 "daily")
    nov_points, _ = usage_points(7, ch, NOVEMBER_2026, NOVEMBER_2026 + DAY - 1,
                                 NOVEMBER_2026 + DAY, "daily")
    assert {(p.category, p.pricing_type) for p in sep_points} >= {
        ("UTILITY", "FREE_CUSTOMER_SERVICE"), ("SERVICE", "FREE_CUSTOMER_SERVICE")}
    assert all(p.cost == 0 for p in sep_points if p.pricing_type == "FREE_CUSTOMER_SERVICE")
    kinds = [(p.category, p.pricing_type) for p in nov_points]
    assert "FREE_CUSTOMER_SERVICE" not in {t for _, t in kinds}
    assert len(kinds) == len(set(kinds))  # one point per category and pricing type
    by_kind = {(p.category, p.pricing_type): p for p in nov_points}
    service = by_kind["SERVICE", "REGULAR"]
    assert service.cost == service.volume * price("UTILITY", "REGULAR", ch.country,
                                                  NOVEMBER_2026) > 0
    utility = [f"{c}/{t}" for c, t, _ in STREAMS if c == "UTILITY"]
    assert len(utility) == 2
    assert by_kind["UTILITY", "REGULAR"].volume == sum(
        _count(7, ch, stream, mean, NOVEMBER_2026, NOVEMBER_2026 + DAY)
        for c, t, mean in STREAMS for stream in [f"{c}/{t}"] if stream in utility)
    messages, _ = month_to_date_totals(7, ch, NOVEMBER_2026, NOVEMBER_2026 + DAY)
    assert ("utility", "free_customer_service") not in messages
    assert messages["utility", "regular"][0] == by_kind["UTILITY", "REGULAR"].volume
