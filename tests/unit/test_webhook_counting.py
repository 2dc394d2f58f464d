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


def body(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def events(name: str) -> list[Event]:
    return parse(body(name))


class Card:
    """A rate card with a price per category and one per call, whoever the recipient is."""

    currency = "USD"

    def __init__(self, messages: dict[str, Decimal], call: Decimal | None = None) -> None:
        self.messages = messages
        self.call = call
        self.calls_priced: list[tuple[str, int]] = []

    def message_price(self, recipient: str, category: str, at: float | None = None, *,
                      country: str = "") -> Decimal | None:
        return self.messages.get(category)

    def call_price(self, callee: str, duration_seconds: int, at: float | None = None, *,
                   country: str = "") -> Decimal | None:
        self.calls_priced.append((callee, duration_seconds))
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
    return {line for event in events(name) for line in count(event, WHERE, card, seen)}


def test_a_message_counts_once_on_its_first_priced_status_and_every_status_counts():
    """`sent` with pricing counts the status, the message and its price; the `delivered` that
    follows, also priced, counts only its status."""
    seen = Seen()
    assert counted("status_v24_sent_marketing", seen) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "sent"), 1),
        (MESSAGES, ("wa_1", "ch_1", "marketing", "regular", "true"), 1),
        (COST, ("wa_1", "ch_1", "marketing", "USD"), 0.1365)}
    assert counted("status_v24_delivered_marketing", seen) == {
        (STATUSES_METRIC, ("wa_1", "ch_1", "delivered"), 1)}
    assert counted("status_v24_delivered_marketing", seen) == set()  # a retry


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
    lines = counted("status_v24_sent_marketing", card=Card({}))
    assert (UNPRICED, ("wa_1", "ch_1", "marketing"), 1) in lines
    assert not any(metric == COST for metric, _, _ in lines)
    assert {metric for metric, _, _ in counted("status_v24_sent_marketing", card=None)} == {
        STATUSES_METRIC, MESSAGES}


def test_unknown_statuses_and_categories_are_counted_as_other():
    """Values outside the bounded label sets become `other`, so they cannot mint series."""
    raw = body("status_v24_sent_marketing")
    status = raw["entry"][0]["changes"][0]["value"]["statuses"][0]
    status["status"] = "exploded"
    status["pricing"]["category"] = "brand_new"
    lines = {line for event in parse(raw) for line in count(event, WHERE, None, Seen())}
    assert lines == {(STATUSES_METRIC, ("wa_1", "ch_1", "other"), 1),
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
    lines = {line for event in parse(raw) for line in count(event, WHERE, card, Seen())}
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
        count(event, WHERE, CARD, seen)
    assert set(seen.asked) <= set(keys_asked(delivery_key("sha", found), found))


def _delivery(seen: Seen) -> tuple[dict[Any, float], dict[Any, list[float]]]:
    raw = body("status_v24_sent_marketing")
    statuses = raw["entry"][0]["changes"][0]["value"]["statuses"]
    later = copy.deepcopy(statuses[0]) | {"id": "wamid.other", "timestamp": "", "status": "read"}
    statuses.append(later)
    return count_delivery(parse(raw), float(JUNE_2026 + 40 * 86_400),
                          lambda event, _now, s: count(event, WHERE, CARD, s), seen)


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
    assert set(increments) == {(STATUSES_METRIC, ("wa_1", "ch_1", "sent")),
                               (STATUSES_METRIC, ("wa_1", "ch_1", "read"))}
