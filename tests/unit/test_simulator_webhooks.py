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
from exporter.simulator.traffic import (
    DAY,
    DIRECTIONS,
    STREAMS,
    price,
    pricing_type_at,
    usage_points,
)
from exporter.simulator.webhooks import (
    ALL_SHAPES,
    Shapes,
    parent_user_id,
    phone_number_id,
    user_id,
    webhook_bodies,
)

FLEET = build_fleet(7)
SMALL = build_fleet(7, waba_sizes=(3, 5, 2))
START = calendar.timegm((2026, 3, 10, 13, 0, 0))
HOUR = 3600
COUNTRY_OF_CODE = {code: country for code, country, _ in MARKETS}
DIGITS_OF_CODE = {code: digits for code, _, digits in MARKETS}


# How a group category is counted against the usage endpoint's streams (an assumption: Meta's
# analytics for group messages were not found).
GROUP_STREAMS = {"group_marketing": ("MARKETING", "REGULAR"),
                 "group_utility": ("UTILITY", "REGULAR"),
                 "group_service": ("SERVICE", "FREE_CUSTOMER_SERVICE")}


def items(bodies: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """Message statuses (`messages`) or call events (`calls`), in order."""
    key = "statuses" if field == "messages" else "calls"
    return [item for body in bodies for change in body["entry"][0]["changes"]
            if change["field"] == field for item in change["value"].get(key, [])]


def call_statuses(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for body in bodies for change in body["entry"][0]["changes"]
            if change["field"] == "calls" for item in change["value"].get("statuses", [])]


def stream_of(pricing: dict[str, Any], at: float) -> tuple[str, str]:
    """The usage endpoint's (category, pricing type) for a status priced at `at`."""
    if pricing["category"] in GROUP_STREAMS:
        return GROUP_STREAMS[pricing["category"]][0], pricing_type_at(
            *GROUP_STREAMS[pricing["category"]], at)
    return pricing["category"].upper(), pricing["type"].upper()


def channel_of_number(fleet):
    return {ch.phone_number.lstrip("+"): ch for ch in fleet.channels()}


def messages_by_stream(bodies, fleet) -> Counter[tuple[str, str, str]]:
    """Charged deliveries per (channel, category, pricing type), read from the statuses
    themselves: each (wamid, group participant) whose delivered or read status has pricing."""
    by_number = channel_of_number(fleet)
    seen: dict[tuple[str, str], tuple[str, str, str]] = {}
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "messages":
            continue
        ch = by_number[change["value"]["metadata"]["display_phone_number"]]
        for status in change["value"]["statuses"]:
            if "pricing" in status and status["status"] in {"delivered", "read"}:
                seen[status["id"], status.get("recipient_participant_id", "")] = (
                    ch.id, *stream_of(status["pricing"], int(status["timestamp"])))
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
        for call in change["value"].get("calls", []):
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
    by_number = channel_of_number(SMALL)
    assert len(items(bodies, "calls")) > 10
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "calls":
            continue
        own = change["value"]["metadata"]["display_phone_number"]
        if "calls" not in change["value"]:
            continue  # call statuses, checked below
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
            user_key = "to_user_id" if call["direction"] == "BUSINESS_INITIATED" \
                else "from_user_id"
            assert call[user_key] == user_id(SMALL.seed, by_number[own].country, customer)
            if call["event"] == "connect":
                # Meta answers the business's offer; a user's call arrives as an offer.
                assert call["session"]["sdp_type"] == (
                    "answer" if call["direction"] == "BUSINESS_INITIATED" else "offer")
            if call["event"] == "terminate":
                assert call["status"] == "COMPLETED"
                assert int(call["end_time"]) - int(call["start_time"]) == call["duration"]
                assert call["timestamp"] == call["start_time"]
        # Two events per call and an even max_items: a call's events share a body.
        assert all(e == ["connect", "terminate"] for e in events.values())


def test_calls_of_the_business_ring_then_are_accepted_before_they_connect():
    """Each business-initiated call has one RINGING and one ACCEPTED call status (`type: "call"`,
    under `calls`, no pricing) naming its callee, in bodies before the channel's call events;
    user-initiated calls have none."""
    bodies = webhook_bodies(SMALL, START, START + HOUR)
    outgoing = {c["id"]: c for c in items(bodies, "calls")
                if c["direction"] == "BUSINESS_INITIATED" and c["event"] == "connect"}
    statuses = call_statuses(bodies)
    assert outgoing
    assert Counter(s["id"] for s in statuses) == dict.fromkeys(outgoing, 2)
    for status in statuses:
        call = outgoing[status["id"]]
        assert status["type"] == "call"
        assert "pricing" not in status
        assert (status["recipient_id"], status["recipient_user_id"]) == (call["to"],
                                                                         call["to_user_id"])
    assert [s["status"] for s in statuses if s["id"] == next(iter(outgoing))] == [
        "RINGING", "ACCEPTED"]
    position = {id(item): n for n, body in enumerate(bodies)
                for change in body["entry"][0]["changes"]
                for item in change["value"].get("statuses", []) + change["value"].get("calls", [])}
    first: dict[str, int] = {}
    for body_n, body in enumerate(bodies):
        value = body["entry"][0]["changes"][0]["value"]
        for item in value.get("calls", []):
            first.setdefault(item["id"], body_n)
    assert all(position[id(s)] < first[s["id"]] for s in statuses)


def test_statuses_carry_pricing_and_a_recipient_in_the_channels_market():
    """In the plain mix, every message has a priced `sent` and exactly one priced delivered or
    read (v24): half are read, a few of those with `delivered` skipped; each names a recipient
    with the channel's calling code and length and that recipient's BSUID in the channel's
    country, so a rate card by recipient code gives the polled cost."""
    a, b = START, START + HOUR
    bodies = webhook_bodies(FLEET, a, b, shapes=Shapes())
    by_number = channel_of_number(FLEET)
    code_of = {country: code for code, country, _ in MARKETS}
    streams = {(c.lower(), t.lower()) for c, t, _ in STREAMS}
    cost_by_recipient = Decimal(0)
    statuses: Counter[str] = Counter()
    priced: Counter[tuple[str, str]] = Counter()
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
            assert "recipient_type" not in status  # no groups in the plain mix
            to = status["recipient_id"]
            code = code_of[ch.country]
            assert to.isdigit()
            assert to.startswith(code)
            assert len(to) == len(code) + DIGITS_OF_CODE[code]
            assert status["recipient_user_id"] == user_id(FLEET.seed, ch.country, to)
            assert status["recipient_user_id"].startswith(ch.country + ".")
            statuses[status["status"]] += 1
            if "pricing" not in status:
                assert status["status"] == "read"
                continue
            p = status["pricing"]
            priced[status["id"], status["status"]] += 1
            assert (p["category"], p["type"]) in streams
            assert p["pricing_model"] == "PMP"
            assert p["billable"] is (p["type"] == "regular")
            assert status["id"].split(".")[4:6] == [p["category"].upper(), p["type"].upper()]
            if status["id"] not in counted:
                counted.add(status["id"])
                cost_by_recipient += price(p["category"].upper(), p["type"].upper(),
                                           COUNTRY_OF_CODE[code], int(status["timestamp"]))
    polled_cost = sum((p.cost for ch in FLEET.channels()
                       for p in usage_points(FLEET.seed, ch, a, b - 1, b, "half_hour")[0]),
                      Decimal(0))
    assert cost_by_recipient == polled_cost > 0
    assert statuses["sent"] == len(counted)
    for wamid in counted:
        assert priced[wamid, "sent"] == 1
        assert priced[wamid, "delivered"] + priced[wamid, "read"] == 1
    skipped = statuses["sent"] - statuses["delivered"]
    assert skipped == sum(1 for (_, status) in priced if status == "read")
    assert 0.01 < skipped / statuses["sent"] < 0.05
    assert 0.45 < statuses["read"] / statuses["sent"] < 0.55


def test_with_every_shape_the_charged_deliveries_still_match_the_polled_traffic():
    """With groups and BSUID-only recipients on, charged deliveries per channel and stream (each
    group participant one) and their cost, priced by the recipient's phone or else the BSUID's
    country, equal the usage endpoint's; calls too."""
    a, b = START, START + 3 * HOUR
    bodies = webhook_bodies(FLEET, a, b, shapes=ALL_SHAPES)
    assert messages_by_stream(bodies, FLEET) == polled_messages(FLEET, a, b)
    assert pushed_calls(bodies, FLEET) == polled_calls(FLEET, a, b)
    assert charged_cost(bodies, FLEET) == polled_cost(FLEET, a, b) > 0


def charged_cost(bodies, fleet) -> Decimal:
    """What the charged deliveries cost, each priced at its status time by the recipient's
    phone, or else the BSUID's country (which must be the channel's)."""
    by_number = channel_of_number(fleet)
    cost = Decimal(0)
    charged: set[tuple[str, str]] = set()
    for body in bodies:
        change = body["entry"][0]["changes"][0]
        if change["field"] != "messages":
            continue
        ch = by_number[change["value"]["metadata"]["display_phone_number"]]
        for status in change["value"]["statuses"]:
            key = (status["id"], status.get("recipient_participant_id", ""))
            if "pricing" not in status or status["status"] == "sent" or key in charged:
                continue
            charged.add(key)
            phone = status.get("recipient_participant_id") or status.get("recipient_id")
            country = (COUNTRY_OF_CODE[next(c for c in COUNTRY_OF_CODE if phone.startswith(c))]
                       if phone else status["recipient_user_id"].split(".")[0])
            assert country == ch.country
            at = int(status["timestamp"])
            cost += price(*stream_of(status["pricing"], at), country, at)
    return cost


def polled_cost(fleet, a: int, b: int) -> Decimal:
    return sum((p.cost for ch in fleet.channels()
                for p in usage_points(fleet.seed, ch, a, b - 1, b, "half_hour")[0]),
               Decimal(0))


def test_from_october_2026_service_and_in_window_utility_statuses_are_charged():
    """Across 2026-10-01 00:00 UTC, service and in-window utility statuses (group service
    too) turn from free to `billable: true` (individual ones `type: regular`), and the charged
    deliveries and their cost at each status time still equal the usage endpoint's."""
    october = calendar.timegm((2026, 10, 1, 0, 0, 0))
    a, b = october - HOUR, october + HOUR
    bodies = webhook_bodies(FLEET, a, b)
    kinds: dict[bool, set[tuple[str, str, bool]]] = {False: set(), True: set()}
    for status in items(bodies, "messages"):
        p = status.get("pricing")
        if p is not None and p["category"] in {"service", "utility", "group_service"}:
            kinds[int(status["timestamp"]) >= october].add(
                (p["category"], p.get("type", ""), p["billable"]))
    assert kinds[False] == {("service", "free_customer_service", False),
                            ("utility", "free_customer_service", False),
                            ("utility", "regular", True), ("group_service", "", False)}
    assert kinds[True] == {("service", "regular", True), ("utility", "regular", True),
                           ("group_service", "", True)}
    assert messages_by_stream(bodies, FLEET) == polled_messages(FLEET, a, b)
    assert charged_cost(bodies, FLEET) == polled_cost(FLEET, a, b) > 0


def test_group_messages_have_one_sent_and_a_priced_delivery_per_participant():
    """A group message names the group (57 characters, `recipient_type: "group"`): one `sent`
    without participant or pricing, then per participant a delivered or read with the group
    category and no pricing type; only marketing, utility and service messages go to groups."""
    bodies = webhook_bodies(FLEET, START, START + HOUR, shapes=Shapes(groups=True))
    by_number = channel_of_number(FLEET)
    group_statuses = [(body, s) for body in bodies
                      for s in body["entry"][0]["changes"][0]["value"].get("statuses", [])
                      if s.get("recipient_type") == "group"]
    assert len(group_statuses) > 100
    sent: Counter[str] = Counter()
    participants: dict[str, set[str]] = {}
    for body, status in group_statuses:
        ch = by_number[body["entry"][0]["changes"][0]["value"]["metadata"][
            "display_phone_number"]]
        assert len(status["recipient_id"]) == 57
        assert status["recipient_id"].startswith("Y2FwaV9ncm91cDo")
        if status["status"] == "sent":
            sent[status["id"]] += 1
            assert "pricing" not in status
            assert "recipient_participant_id" not in status
            continue
        participant = status["recipient_participant_id"]
        assert participant.startswith({c: k for k, c, _ in MARKETS}[ch.country])
        participants.setdefault(status["id"], set()).add(participant)
        if "pricing" in status:
            p = status["pricing"]
            assert set(p) == {"billable", "pricing_model", "category"}
            assert p["category"] in GROUP_STREAMS
            assert p["billable"] is (p["category"] != "group_service")
    assert set(sent.values()) == {1}
    assert max(len(v) for v in participants.values()) == 4
    # A participant's delivery is charged once: delivered, or read when delivered was skipped.
    priced = Counter((s["id"], s["recipient_participant_id"]) for _, s in group_statuses
                     if "pricing" in s)
    assert set(priced.values()) == {1}
    assert len(priced) == sum(len(v) for v in participants.values())
    plain = webhook_bodies(FLEET, START, START + HOUR, shapes=Shapes())
    assert not any(s.get("recipient_type") for s in items(plain, "messages"))
    assert any(s.get("recipient_type") for s in items(webhook_bodies(FLEET, START, START + HOUR),
                                                      "messages"))  # on by default


def test_bsuid_only_recipients_have_no_phone_in_statuses_or_calls():
    """With BSUID-only recipients on, about a tenth of individual statuses lack `recipient_id`
    and name the user and parent BSUIDs in the channel's country, and some business-initiated
    calls lack `to` and name `to_user_id`."""
    bodies = webhook_bodies(FLEET, START, START + HOUR, shapes=Shapes(bsuid_only=True))
    by_number = channel_of_number(FLEET)
    statuses = 0
    hidden = 0
    for body in bodies:
        value = body["entry"][0]["changes"][0]["value"]
        ch = by_number[value["metadata"]["display_phone_number"]]
        for status in value.get("statuses", []):
            if status.get("type") == "call":
                continue
            statuses += 1
            if "recipient_id" not in status:
                hidden += 1
                uid, parent = status["recipient_user_id"], status["recipient_parent_user_id"]
                assert uid.startswith(ch.country + ".")
                assert parent.startswith(ch.country + ".ENT.")
                assert uid.split(".")[1].isalnum()
        for call in value.get("calls", []):
            assert ("to" in call) or call["to_user_id"].startswith(ch.country + ".")
    assert 0.07 < hidden / statuses < 0.13
    assert any("to" not in c for c in items(bodies, "calls"))
    assert parent_user_id(FLEET.seed, "DE", "49151") != parent_user_id(FLEET.seed, "DE", "49152")


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
                        for s in items(bodies, "messages")
                        if "pricing" in s and s["status"] in {"delivered", "read"})
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
    assert call_statuses(bodies) == call_statuses(unsplit)
    for body in bodies:
        assert body["object"] == "whatsapp_business_account"
        assert len(body["entry"]) == 1
        assert len(body["entry"][0]["changes"]) == 1
        change = body["entry"][0]["changes"][0]
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        batch = value.get("statuses") or value["calls"]
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
