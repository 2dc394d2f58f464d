"""What a webhook event counts: statuses, messages once, prices, calls, and the month tallies.

The events are parsed from the documented bodies in tests/fixtures/webhooks/ (each has a .source
note naming its page); a rate card is faked, since its own tests cover the prices it holds.
"""

from __future__ import annotations

import calendar
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.webhooks.counting import (
    CALL_COST,
    CALL_SECONDS,
    CALLS,
    COST,
    MESSAGES,
    META_COST,
    STATUSES_METRIC,
    UNPRICED,
    ChannelLabel,
    count,
    count_delivery,
    keys_asked,
)
from exporter.webhooks.dedupe import Key, delivery_key
from exporter.webhooks.parser import Event, parse

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
WHERE = ChannelLabel("wa_1", "ch_1")
JUNE_2026 = calendar.timegm((2026, 6, 1, 0, 0, 0))  # the fixtures' statuses are from June 2026
OCTOBER_2026 = calendar.timegm((2026, 10, 1, 0, 0, 0))
NOW = float(JUNE_2026 + 86_400)  # the batch's time, for events without one


def body(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def events(name: str) -> list[Event]:
    return parse(body(name))


class Card:
    """A rate card with a price per category and one per call, whoever the recipient is; it
    records whom and when it was asked to price."""

    currency = "USD"

    def __init__(self, messages: dict[str, Decimal], call: Decimal | None = None) -> None:
        self.messages = messages
        self.call = call
        self.calls_priced: list[tuple[str, int]] = []
        self.asked: list[tuple[str, str, float | None, str]] = []  # (phone, category, at, country)
        self.call_times: list[float | None] = []

    def message_price(self, recipient: str, category: str, at: float | None = None, *,
                      country: str = "") -> Decimal | None:
        self.asked.append((recipient, category, at, country))
        return self.messages.get(category)

    def call_price(self, callee: str, duration_seconds: int, at: float | None = None, *,
                   country: str = "") -> Decimal | None:
        self.calls_priced.append((callee, duration_seconds))
        self.call_times.append(at)
        return self.call


CARD = Card({"marketing": Decimal("0.1365"), "utility": Decimal("0.0456")}, Decimal("0.60"))


class Seen:
    """`seen` as a batch gives it: True for a key asked before, remembering the others."""

    def __init__(self) -> None:
        self.keys: set[Key] = set()
        self.asked: list[Key] = []

    def __call__(self, key: Key) -> bool:
        self.asked.append(key)
        if key in self.keys:
            return True
        self.keys.add(key)
        return False


def counted(name: str, seen: Seen | None = None, card: Card | None = CARD,
            ) -> set[tuple[str, tuple[str, ...], float]]:
    seen = seen or Seen()
    return {line for event in events(name) for line in count(event, WHERE, card, seen, NOW)}


def counted_body(raw: Any, card: Card | None = CARD) -> set[tuple[str, tuple[str, ...], float]]:
    seen = Seen()
    return {line for event in parse(raw) for line in count(event, WHERE, card, seen, NOW)}


def status_of(raw: Any) -> dict[str, Any]:
    first: dict[str, Any] = raw["entry"][0]["changes"][0]["value"]["statuses"][0]
    return first


def test_a_message_counts_once_when_delivered_not_when_sent():
    """`sent` with pricing counts only its status (Meta charges delivered messages); the
    priced `delivered` that follows counts the message and its price; its retry nothing."""
    seen = Seen()
    assert counted("status_v24_sent_marketing", seen) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "sent"), 1)}
    assert counted("status_v24_delivered_marketing", seen) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
        (MESSAGES, ("wa_1", "ch_1", "marketing", "regular", "true"), 1),
        (COST, ("wa_1", "ch_1", "marketing", "USD"), 0.1365)}
    assert counted("status_v24_delivered_marketing", seen) == set()  # a retry


def test_a_failed_status_never_counts_its_message_even_with_pricing():
    """A failed message is not charged: a `failed` status carrying pricing counts only itself."""
    raw = body("status_failed_131049")
    status_of(raw)["pricing"] = {"billable": True, "pricing_model": "PMP", "type": "regular",
                                 "category": "marketing"}
    assert counted_body(raw) == {(STATUSES_METRIC, ("wa_1", "ch_1", "failed"), 1)}


def test_a_status_without_pricing_counts_only_itself():
    """A `read` or a `failed` status without pricing is a status, not a message."""
    assert counted("status_v24_read_no_pricing") == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "read"), 1)}
    assert counted("status_failed_131049") == {(STATUSES_METRIC, ("wa_1", "ch_1", "failed"), 1)}


def test_a_read_that_skipped_delivered_counts_the_message():
    """When `delivered` was skipped, the priced `read` is the message's first priced status."""
    assert (MESSAGES, ("wa_1", "ch_1", "utility", "regular", "true"), 1) in counted(
        "status_v24_read_with_pricing_skipped_delivered")


def test_a_free_message_is_counted_but_never_priced():
    """A free customer-service message counts as not billable, with no cost and no unpriced."""
    assert counted("status_delivered_free_customer_service_service") == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
        (MESSAGES, ("wa_1", "ch_1", "service", "free_customer_service", "false"), 1)}


def test_a_billable_message_the_card_cannot_price_is_unpriced_and_no_card_prices_nothing():
    """A category missing from the card counts as unpriced, not as free; without a card there
    is neither cost nor unpriced."""
    lines = counted("status_v24_delivered_marketing", card=Card({}))
    assert (UNPRICED, ("wa_1", "ch_1", "marketing"), 1) in lines
    assert not any(metric == COST for metric, _, _ in lines)
    assert {metric for metric, _, _ in counted("status_v24_delivered_marketing", card=None)} == {
        STATUSES_METRIC, MESSAGES}


def test_unknown_statuses_and_categories_are_counted_as_other():
    """Values outside the bounded label sets become `other`, so they cannot mint series."""
    raw = body("status_v24_delivered_marketing")
    status = status_of(raw)
    status["status"] = "exploded"
    assert counted_body(raw, None) == {(STATUSES_METRIC, ("wa_1", "ch_1", "other"), 1)}
    status["status"] = "delivered"
    status["pricing"]["category"] = "brand_new"
    assert counted_body(raw, None) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
        (MESSAGES, ("wa_1", "ch_1", "other", "regular", "true"), 1)}


def test_a_business_initiated_call_counts_once_on_its_terminate_with_its_price():
    """The terminate of a completed business-initiated call counts the call, its seconds and
    the card's price for the callee; its retry counts nothing."""
    seen = Seen()
    card = Card({}, Decimal("0.60"))
    assert counted("call_terminate_business_completed", seen, card) == {
        (CALLS, ("wa_1", "ch_1", "business_initiated", "completed"), 1),
        (CALL_SECONDS, ("wa_1", "ch_1", "business_initiated"), 56),
        (CALL_COST, ("wa_1", "ch_1", "business_initiated", "USD"), 0.6)}
    assert card.calls_priced == [("4917600000051", 56)]
    assert counted("call_terminate_business_completed", seen, card) == set()


def test_user_initiated_calls_are_free_and_other_call_events_count_nothing():
    """Meta bills business-initiated calls only: a user's call costs 0 without asking the card;
    an unanswered call has no duration to price; a connect counts nothing."""
    raw = body("call_terminate_business_completed")
    raw["entry"][0]["changes"][0]["value"]["calls"][0]["direction"] = "USER_INITIATED"
    card = Card({}, Decimal("0.60"))
    lines = counted_body(raw, card)
    assert (CALL_COST, ("wa_1", "ch_1", "user_initiated", "USD"), 0.0) in lines
    assert card.calls_priced == []
    assert counted("call_terminate_user_failed_unanswered", card=card) == {
        (CALLS, ("wa_1", "ch_1", "user_initiated", "failed"), 1),
        (CALL_SECONDS, ("wa_1", "ch_1", "user_initiated"), 0)}
    assert counted("call_connect_user_initiated") == set()


def test_inbound_messages_count_nothing():
    """A message a user sent is free and carries no status: it adds no counter."""
    assert counted("inbound_text_message") == set()


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_a_batch_looks_up_every_key_that_counting_asks(name):
    """Every dedupe key `count` asks about is among `keys_asked`, so one look-up per batch
    finds every key stored before."""
    found = events(name)
    seen = Seen()
    for event in found:
        count(event, WHERE, CARD, seen, NOW)
    assert set(seen.asked) <= set(keys_asked(delivery_key("sha", found), found))


def _delivery(seen: Seen) -> tuple[dict[Any, float], dict[Any, list[float]]]:
    raw = body("status_v24_delivered_marketing")
    statuses = raw["entry"][0]["changes"][0]["value"]["statuses"]
    later = copy.deepcopy(statuses[0]) | {"id": "wamid.other", "timestamp": "", "status": "read"}
    statuses.append(later)
    return count_delivery(parse(raw), float(JUNE_2026 + 40 * 86_400),
                          lambda event, now, s: count(event, WHERE, CARD, s, now), seen)


def test_a_delivery_adds_up_its_events_and_tallies_messages_and_cost_by_status_month():
    """Messages and their cost are tallied per (waba, channel, category) and the UTC month of
    the status time, or of now for a status without one; statuses are not tallied."""
    increments, tallies = _delivery(Seen())
    assert increments[(MESSAGES, ("wa_1", "ch_1", "marketing", "regular", "true"))] == 2
    assert increments[(COST, ("wa_1", "ch_1", "marketing", "USD"))] == pytest.approx(0.273)
    july = calendar.timegm((2026, 7, 1, 0, 0, 0))
    assert tallies == {(JUNE_2026, ("wa_1", "ch_1", "marketing")): [1.0, 0.1365],
                       (july, ("wa_1", "ch_1", "marketing")): [1.0, 0.1365]}


def test_a_delivery_whose_messages_were_counted_tallies_nothing():
    """Once its messages were counted, a delivery's statuses add no month tally."""
    seen = Seen()
    _delivery(seen)
    seen.keys = {key for key in seen.keys if not key[1].startswith("s:")}
    increments, tallies = _delivery(seen)
    assert tallies == {}
    assert set(increments) == {(STATUSES_METRIC, ("wa_1", "ch_1", "delivered")),
                               (STATUSES_METRIC, ("wa_1", "ch_1", "read"))}


def test_a_group_message_counts_once_per_participant_at_its_base_rate():
    """Two participants' priced reads of one group wamid are two messages, each priced as the
    base category (utility) by its own participant's phone; a retry counts nothing."""
    seen = Seen()
    card = Card({"utility": Decimal("0.0456")})
    lines = [line for event in events("status_group_read_group_utility_aggregated")
             for line in count(event, WHERE, card, seen, NOW)]
    assert sorted(lines) == sorted([
        (STATUSES_METRIC, ("wa_1", "ch_1", "read"), 1),
        (STATUSES_METRIC, ("wa_1", "ch_1", "read"), 1),
        (MESSAGES, ("wa_1", "ch_1", "group_utility", "regular", "true"), 1),
        (MESSAGES, ("wa_1", "ch_1", "group_utility", "regular", "true"), 1),
        (COST, ("wa_1", "ch_1", "group_utility", "USD"), 0.0456),
        (COST, ("wa_1", "ch_1", "group_utility", "USD"), 0.0456)])
    assert {phone for phone, *_ in card.asked} == {"4917600000022", "4917600000023"}
    assert counted("status_group_read_group_utility_aggregated", seen) == set()


def test_a_group_sent_without_participant_charges_nothing():
    """The group's one `sent` (no participant, no pricing) counts only its status."""
    assert counted("status_group_sent_no_participant") == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "sent"), 1)}


def test_meta_s_own_cost_is_the_estimate_with_or_without_a_card():
    """A delivered status with pricing.cost is priced at that amount, in its currency, counted
    in `cost` and `meta_cost`, without asking any rate card, and also with none."""
    card = Card({"marketing_lite": Decimal("0.5")})
    expected = {(STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
                (MESSAGES, ("wa_1", "ch_1", "marketing_lite", "regular", "true"), 1),
                (COST, ("wa_1", "ch_1", "marketing_lite", "USD"), 0.0712),
                (META_COST, ("wa_1", "ch_1", "marketing_lite", "USD"), 0.0712)}
    assert counted("status_delivered_marketing_lite_cost", card=card) == expected
    assert card.asked == []
    assert counted("status_delivered_marketing_lite_cost", card=None) == expected


def test_an_unreadable_meta_cost_leaves_the_message_to_the_card():
    """A cost without a 3-letter currency or with a non-numeric amount is ignored: the card
    prices the message and nothing is Meta's."""
    for cost in ({"amount": "n/a", "currency": "USD"}, {"amount": 0.07, "currency": "dollars"},
                 {"amount": True, "currency": "USD"}, "0.07"):
        raw = body("status_delivered_marketing_lite_cost")
        status_of(raw)["pricing"]["cost"] = cost
        lines = counted_body(raw, Card({"marketing_lite": Decimal("0.0563")}))
        assert (COST, ("wa_1", "ch_1", "marketing_lite", "USD"), 0.0563) in lines
        assert not any(metric == META_COST for metric, _, _ in lines)


def test_a_message_is_priced_by_phone_else_bsuid_country_else_not_at_all():
    """The card is asked with the recipient's phone, or with no phone and the BSUID's country;
    with neither, the message is unpriced and the card never asked (no default market)."""
    card = Card({"marketing": Decimal("0.1365")})
    counted("status_v24_delivered_marketing", card=card)
    counted("status_bsuid_delivered_no_recipient_id", card=card)
    assert [(phone, country) for phone, _, _, country in card.asked] == [
        (status_of(body("status_v24_delivered_marketing"))["recipient_id"], ""), ("", "DE")]
    raw = body("status_bsuid_delivered_no_recipient_id")
    del status_of(raw)["recipient_user_id"], status_of(raw)["recipient_parent_user_id"]
    raw["entry"][0]["changes"][0]["value"]["contacts"] = []
    card.asked.clear()
    assert (UNPRICED, ("wa_1", "ch_1", "marketing"), 1) in counted_body(raw, card)
    assert card.asked == []


def test_events_are_priced_at_their_own_time():
    """A message is priced by the card at its status time, a call at its terminate time, and
    an event without a time at the batch's."""
    card = Card({"marketing": Decimal("0.1365")}, Decimal("0.60"))
    counted("status_v24_delivered_marketing", card=card)
    counted("call_terminate_business_completed", card=card)
    assert [at for _, _, at, _ in card.asked] == [
        events("status_v24_delivered_marketing")[0].timestamp]
    assert card.call_times == [events("call_terminate_business_completed")[0].timestamp]
    raw = body("status_v24_delivered_marketing")
    status_of(raw)["timestamp"] = ""
    counted_body(raw, card)
    assert card.asked[-1][2] == NOW


def test_a_call_to_a_bsuid_alone_is_priced_by_its_country():
    """A business-initiated call without `to` is priced by the BSUID's country, no phone."""
    card = Card({}, Decimal("0.30"))
    assert (CALL_COST, ("wa_1", "ch_1", "business_initiated", "USD"), 0.3) in counted(
        "call_terminate_business_bsuid_only", card=card)
    assert card.calls_priced == [("", 30)]


@pytest.mark.parametrize("name", ["call_status_ringing", "call_status_accepted",
                                  "call_status_rejected"])
def test_call_statuses_are_not_message_statuses_and_count_nothing(name):
    """RINGING, ACCEPTED and REJECTED carry no price and are no message status: nothing counts."""
    assert counted(name) == set()


def _without_billable(name: str, timestamp: int, **pricing: str) -> Any:
    raw = body(name)
    status = status_of(raw)
    status["timestamp"] = str(timestamp)
    del status["pricing"]["billable"]
    for key, value in pricing.items():
        if value:
            status["pricing"][key] = value
        else:
            del status["pricing"][key]
    return raw


def test_without_billable_service_is_free_only_before_october_2026():
    """With neither `billable` nor `type`, a service message is free before 2026-10-01 and
    charged (here unpriced: the card has no service price) from then on."""
    before = _without_billable("status_service_after_oct2026", OCTOBER_2026 - 1, type="")
    assert (MESSAGES, ("wa_1", "ch_1", "service", "other", "false"), 1) in counted_body(before)
    after = _without_billable("status_service_after_oct2026", OCTOBER_2026, type="")
    assert counted_body(after) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
        (MESSAGES, ("wa_1", "ch_1", "service", "regular", "true"), 1),
        (UNPRICED, ("wa_1", "ch_1", "service"), 1)}


def test_without_billable_an_unknown_category_is_charged_and_unpriced_never_free():
    """A category nobody knows, without `billable`, is `other`, billable and unpriced."""
    raw = _without_billable("status_v24_delivered_marketing", JUNE_2026, category="agent_x",
                            type="")
    assert counted_body(raw) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1),
        (MESSAGES, ("wa_1", "ch_1", "other", "regular", "true"), 1),
        (UNPRICED, ("wa_1", "ch_1", "other"), 1)}


def test_a_service_message_charged_after_october_2026_is_priced():
    """The documented-shape service status of October 2026 (billable, regular) is priced."""
    assert (COST, ("wa_1", "ch_1", "service", "USD"), 0.02) in counted(
        "status_service_after_oct2026", card=Card({"service": Decimal("0.02")}))
