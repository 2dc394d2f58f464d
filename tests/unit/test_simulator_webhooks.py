"""The simulator's webhooks describe exactly the traffic its usage endpoint reports."""

from __future__ import annotations

import calendar
import itertools
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.simulator.fleet import MARKETS, build_fleet
from exporter.simulator.traffic import DAY, DIRECTIONS, STREAMS, price, usage_points
from exporter.simulator.webhooks import phone_number_id, webhook_bodies

FLEET = build_fleet(7)
SMALL = build_fleet(7, waba_sizes=(3, 5, 2))
START = calendar.timegm((2026, 3, 10, 13, 0, 0))
HOUR = 3600
COUNTRY_OF_CODE = {code: country for code, country, _ in MARKETS}
DIGITS_OF_CODE = {code: digits for code, _, digits in MARKETS}


def items(bodies: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    key = "statuses" if field == "messages" else "calls"
    return [item for body in bodies for change in body["entry"][0]["changes"]
            if change["field"] == field for item in change["value"][key]]


def channel_of_number(fleet):
    return {ch.phone_number.lstrip("+"): ch for ch in fleet.channels()}


def messages_by_stream(bodies, fleet) -> Counter[tuple[str, str, str]]:
    """Unique wamids per (channel, category, pricing type), read from the statuses themselves."""
    by_number = channel_of_number(fleet)
    seen: dict[str, tuple[str, str, str]] = {}
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "messages":
            continue
        ch = by_number[change["value"]["metadata"]["display_phone_number"]]
        for status in change["value"]["statuses"]:
            p = status["pricing"]
            seen[status["id"]] = (ch.id, p["category"].upper(), p["type"].upper())
    return Counter(seen.values())


def polled_messages(fleet, a: int, b: int, granularity: str = "half_hour"):
    truth: Counter[tuple[str, str, str]] = Counter()
    for ch in fleet.channels():
        pricing, _ = usage_points(fleet.seed, ch, a, b - 1, b, granularity)
        for p in pricing:
            truth[ch.id, p.category, p.pricing_type] += p.volume
    return +truth


def polled_calls(fleet, a: int, b: int):
    truth: dict[tuple[str, str], list[int]] = {}
    for ch in fleet.channels():
        _, calls = usage_points(fleet.seed, ch, a, b - 1, b, "half_hour")
        for c in calls:
            count_seconds = truth.setdefault((ch.id, c.direction), [0, 0])
            count_seconds[0] += c.count
            count_seconds[1] += c.duration
    return {k: tuple(v) for k, v in truth.items()}


def pushed_calls(bodies, fleet):
    by_number = channel_of_number(fleet)
    pushed: dict[tuple[str, str], list[int]] = {}
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "calls":
            continue
        ch = by_number[change["value"]["metadata"]["display_phone_number"]]
        for call in change["value"]["calls"]:
            if call["event"] == "terminate":
                count_seconds = pushed.setdefault((ch.id, call["direction"]), [0, 0])
                count_seconds[0] += 1
                count_seconds[1] += call["duration"]
    return {k: tuple(v) for k, v in pushed.items()}


def ids(bodies, field: str) -> list[str]:
    return [item["id"] for item in items(bodies, field)
            if field == "messages" or item["event"] == "terminate"]


def test_three_hours_of_messages_match_the_polled_volumes():
    """Over 3 h of the default fleet, unique wamids per channel and stream equal the usage
    endpoint's volumes for the same range."""
    bodies = webhook_bodies(FLEET, START, START + 3 * HOUR)
    pushed = messages_by_stream(bodies, FLEET)
    assert pushed == polled_messages(FLEET, START, START + 3 * HOUR)
    assert sum(pushed.values()) > 50_000  # a busy fleet, not a trivially empty one


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.floats(0, 3 * HOUR, allow_nan=False), max_size=40))
def test_any_split_into_ticks_sends_each_message_and_call_exactly_once(cuts):
    """Adjacent ticks (float bounds included) produce exactly one call's wamids and call ids:
    no gaps, no repeats."""
    bounds = [START, *sorted(START + c for c in cuts), START + 3 * HOUR]
    ticked = [b for lo, hi in itertools.pairwise(bounds)
              for b in webhook_bodies(SMALL, lo, hi)]
    whole = webhook_bodies(SMALL, START, START + 3 * HOUR)
    for field in ("messages", "calls"):
        ticked_ids = ids(ticked, field)
        assert sorted(set(ticked_ids)) == sorted(set(ids(whole, field)))
    # Each message once: one `sent` per wamid, one `terminate` per call id, across all ticks.
    sent = [s["id"] for s in items(ticked, "messages") if s["status"] == "sent"]
    assert len(sent) == len(set(sent))
    terminated = ids(ticked, "calls")
    assert len(terminated) == len(set(terminated))
    assert messages_by_stream(ticked, SMALL) == polled_messages(SMALL, START, START + 3 * HOUR)


def test_calls_match_the_polled_counts_and_durations():
    """Per channel and direction, terminated calls and their seconds equal the usage
    endpoint's call points for the same range."""
    a, b = START, START + 3 * HOUR
    bodies = webhook_bodies(FLEET, a, b)
    pushed = pushed_calls(bodies, FLEET)
    assert pushed == polled_calls(FLEET, a, b)
    assert {direction for _, direction in pushed} == {d for d, _ in DIRECTIONS}


def test_calls_are_connected_then_terminated_between_the_right_parties():
    """Each call has a connect then a terminate with end - start = duration; business-initiated
    calls go from the channel's number, user-initiated ones to it."""
    bodies = webhook_bodies(SMALL, START, START + HOUR)
    assert len(items(bodies, "calls")) > 10
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "calls":
            continue
        own = change["value"]["metadata"]["display_phone_number"]
        calls = change["value"]["calls"]
        events: dict[str, list[str]] = {}
        for call in calls:
            events.setdefault(call["id"], []).append(call["event"])
            business_side = call["from"] if call["direction"] == "BUSINESS_INITIATED" \
                else call["to"]
            customer = call["to"] if call["direction"] == "BUSINESS_INITIATED" else call["from"]
            assert business_side == own
            assert customer != own
            assert customer.isdigit()
            if call["event"] == "terminate":
                assert call["status"] == "COMPLETED"
                assert int(call["end_time"]) - int(call["start_time"]) == call["duration"]
                assert call["timestamp"] == call["start_time"]
        # Two events per call and an even max_items: a call's events share a body.
        assert all(e == ["connect", "terminate"] for e in events.values())


def test_statuses_carry_pricing_and_a_recipient_in_the_channels_market():
    """Every status has the PMP pricing object of its stream and a recipient with the channel's
    calling code and length, so a rate card by recipient code gives the polled cost."""
    a, b = START, START + HOUR
    bodies = webhook_bodies(FLEET, a, b)
    by_number = channel_of_number(FLEET)
    code_of = {country: code for code, country, _ in MARKETS}
    streams = {(c.lower(), t.lower()) for c, t, _ in STREAMS}
    cost_by_recipient = Decimal(0)
    statuses = Counter()
    counted: set[str] = set()
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "messages":
            continue
        value = change["value"]
        ch = by_number[value["metadata"]["display_phone_number"]]
        assert body["entry"][0]["id"] == ch.waba_external_id
        assert value["metadata"]["phone_number_id"] == phone_number_id(FLEET.seed, ch.id)
        for status in value["statuses"]:
            p = status["pricing"]
            assert (p["category"], p["type"]) in streams
            assert p["pricing_model"] == "PMP"
            assert p["billable"] is (p["type"] == "regular")
            assert status["id"].split(".")[4:6] == [p["category"].upper(), p["type"].upper()]
            to = status["recipient_id"]
            code = code_of[ch.country]
            assert to.isdigit()
            assert to.startswith(code)
            assert len(to) == len(code) + DIGITS_OF_CODE[code]
            statuses[status["status"]] += 1
            if status["id"] not in counted:
                counted.add(status["id"])
                cost_by_recipient += price(p["category"].upper(), p["type"].upper(),
                                           COUNTRY_OF_CODE[code])
    polled_cost = sum((p.cost for ch in FLEET.channels()
                       for p in usage_points(FLEET.seed, ch, a, b - 1, b, "half_hour")[0]),
                      Decimal(0))
    assert cost_by_recipient == polled_cost > 0
    assert statuses["sent"] == statuses["delivered"] == len(counted)
    assert 0.45 < statuses["read"] / statuses["sent"] < 0.55


def test_midnight_and_month_end_keep_each_message_in_its_day():
    """Across 31 March 23:00 to 1 April 01:00 UTC, every status and call is timestamped in the
    day its id names, and per-day counts equal the daily and monthly usage points."""
    a = calendar.timegm((2026, 3, 31, 23, 0, 0))
    april = calendar.timegm((2026, 4, 1, 0, 0, 0))
    b = a + 2 * HOUR
    bodies = [body for lo, hi in ((a, a + 1234.5), (a + 1234.5, b))
              for body in webhook_bodies(FLEET, lo, hi)]
    for status in items(bodies, "messages"):
        day = int(status["id"].split(".")[3])
        assert day in (april - DAY, april)
        assert day <= int(status["timestamp"]) < day + DAY
    for call in items(bodies, "calls"):
        day = int(call["id"].split(".")[3])
        assert day <= int(call["timestamp"]) < day + DAY
    per_month = Counter("march" if int(s["timestamp"]) < april else "april"
                        for s in items(bodies, "messages") if s["status"] == "sent")
    assert per_month == {
        "march": sum(polled_messages(FLEET, a, april, "monthly").values()),
        "april": sum(polled_messages(FLEET, april, b, "monthly").values())}
    assert messages_by_stream(bodies, FLEET) == polled_messages(FLEET, a, b, "daily")
    assert pushed_calls(bodies, FLEET) == polled_calls(FLEET, a, b)


@pytest.mark.parametrize("max_items", [1, 7, 100])
def test_bodies_hold_at_most_max_items_and_lose_nothing(max_items):
    """Splitting into bodies of at most max_items statuses or calls keeps every item, in order,
    one channel and one field per body."""
    a, b = START, START + 600
    bodies = webhook_bodies(SMALL, a, b, max_items=max_items)
    unsplit = webhook_bodies(SMALL, a, b, max_items=10**9)
    for field in ("messages", "calls"):
        assert items(bodies, field) == items(unsplit, field)
    for body in bodies:
        assert body["object"] == "whatsapp_business_account"
        assert len(body["entry"]) == 1
        assert len(body["entry"][0]["changes"]) == 1
        change = body["entry"][0]["changes"][0]
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        batch = value["statuses"] if change["field"] == "messages" else value["calls"]
        assert 1 <= len(batch) <= max_items
    assert len(bodies) > len(unsplit)


def test_bodies_are_deterministic_and_empty_ranges_send_nothing():
    """The same range gives the same bodies; an empty or reversed range gives none; idle
    channels send nothing."""
    assert webhook_bodies(SMALL, START, START + 60) == webhook_bodies(SMALL, START, START + 60)
    assert webhook_bodies(SMALL, START, START) == []
    assert webhook_bodies(SMALL, START + 10, START) == []
    idle = {ch.phone_number.lstrip("+") for ch in FLEET.channels() if ch.activity == 0}
    numbers = {body["entry"][0]["changes"][0]["value"]["metadata"]["display_phone_number"]
               for body in webhook_bodies(FLEET, START, START + HOUR)}
    assert idle
    assert not idle & numbers
    with pytest.raises(ValueError, match="max_items"):
        webhook_bodies(SMALL, START, START + 60, max_items=0)
