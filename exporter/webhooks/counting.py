"""What a webhook event counts: the rules, pure (no SQLite, no I/O).

For one parsed event, the channel label it maps to and the time of the batch, `count` names the
counter increments (metric, labels, amount). Each rule asks `seen` about the dedupe key that
makes it count once (`seen` also remembers the key):
- a message status counts once per (message, status, group participant) in `statuses`;
- a message counts once, in `messages` (category, pricing type, billable), on its first
  `delivered` or `read` status that carries pricing: Meta puts pricing on `sent` too but
  charges only delivered messages, so a message only sent, or failed, counts nothing. A group
  message counts once per participant, each delivery being its own charge;
- its cost: Meta's own `pricing.cost` when the status carries one (a max price), in `cost` and
  in `meta_cost`, with or without a rate card; else, when it is billable and there is a card,
  the card's price for the recipient's market at the status time in `cost`, or 1 in `unpriced`
  where the card has no price or the market is unknown (no phone and no BSUID country);
- a call counts once, on its `terminate` event, in `calls`, its duration in `call_seconds`, and,
  with a rate card, its price at its time in `call_cost` (Meta bills business-initiated calls
  only, by the user's market);
- other events count nothing: call statuses (RINGING, ACCEPTED, REJECTED carry no price; the
  terminate is what a call costs) and inbound messages.
`count_delivery` adds up one delivery's events, and tallies messages and their cost per UTC month
of the status time, per (waba_id, channel_id, category), to compare with the polled numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from exporter.calendar import month_start
from exporter.labels import CATEGORIES, DIRECTIONS, PRICING_TYPES, bounded
from exporter.webhooks.dedupe import Key, call_key, message_key, status_key
from exporter.webhooks.parser import CallEvent, Event, Pricing, StatusEvent
from exporter.webhooks.ratecard import charged_by_meta

# The counter families, by the name they are stored under, and their labels.
MESSAGES = "messages"  # (waba_id, channel_id, category, pricing_type, billable)
STATUSES_METRIC = "statuses"  # (waba_id, channel_id, status)
CALLS = "calls"  # (waba_id, channel_id, direction, status)
CALL_SECONDS = "call_seconds"  # (waba_id, channel_id, direction)
COST = "cost"  # (waba_id, channel_id, category, currency)
META_COST = "meta_cost"  # (waba_id, channel_id, category, currency): the part of COST Meta stated
CALL_COST = "call_cost"  # (waba_id, channel_id, direction, currency)
UNPRICED = "unpriced"  # (waba_id, channel_id, category): billable, but no price for it

# Label values kept as they are; anything else is counted as `other`.
STATUSES = frozenset({"sent", "delivered", "read", "failed", "played", "deleted", "warning"})
CALL_STATUSES = frozenset({"completed", "failed"})
MESSAGE_CATEGORIES = CATEGORIES
# Meta charges a delivered group message "at the going marketing message rate for each
# recipient's country calling code" (Groups API pricing): a card without a group price prices
# it as its base category. Reconciliation compares them under the base category too.
GROUP_BASE = {"group_marketing": "marketing", "group_utility": "utility",
              "group_service": "service"}
# The statuses on which Meta charges a message: it charges delivered messages only, and `read`
# carries the pricing when Meta skipped `delivered`.
CHARGED_STATUSES = frozenset({"delivered", "read"})

# The families that feed the month tallies, and their slot in a tally (messages, cost).
TALLIED = {MESSAGES: 0, COST: 1}

Labels = tuple[str, ...]
MonthKey = tuple[str, str, str]  # (waba_id, channel_id, category)
Count = tuple[str, Labels, float]  # (metric, labels, amount)
Seen = Callable[[Key], bool]  # True if the key was seen before; remembers it otherwise
Increments = dict[tuple[str, Labels], float]
Tallies = dict[tuple[int, MonthKey], list[float]]  # (month_start, key) -> [messages, cost]


@dataclass(frozen=True, slots=True)
class ChannelLabel:
    waba_id: str
    channel_id: str


class Prices(Protocol):
    """What counting asks of a rate card (`ratecard.RateCard`); None where it has no price."""

    @property
    def currency(self) -> str: ...

    def message_price(self, recipient: str, category: str, at: float | None = None, *,
                      country: str = "") -> Decimal | None: ...

    def call_price(self, callee: str, duration_seconds: int, at: float | None = None, *,
                   country: str = "") -> Decimal | None: ...


def charge(event: StatusEvent) -> Pricing | None:
    """The pricing a status charges its message with, or None: a delivered or read status
    carrying pricing."""
    return event.pricing if event.status in CHARGED_STATUSES else None


def billable(pricing: Pricing, at: float) -> bool:
    """Whether Meta charges the message: as the webhook says, or, without `billable`, by its
    type and category at time `at` (service is charged from 2026-10-01; the unknown is)."""
    if pricing.billable is not None:
        return pricing.billable
    return charged_by_meta(pricing.category, pricing.pricing_type, at)


def message_price(card: Prices, event: StatusEvent, category: str, at: float,
                  ) -> Decimal | None:
    """The card's price for a message of the bounded `category` at `at`, by the recipient's
    phone, else the BSUID's country; None when neither is known (never a default market's
    price for someone whose market nobody knows) or the card has no price."""
    phone, country = event.recipient_phone, event.bsuid_country
    if not phone and not country:
        return None
    price = card.message_price(phone, category, at, country=country)
    base = GROUP_BASE.get(category)
    if price is None and base is not None:
        price = card.message_price(phone, base, at, country=country)
    return price


def _message(event: StatusEvent, p: Pricing, where: ChannelLabel, card: Prices | None,
             at: float) -> list[Count]:
    charged = billable(p, at)
    category = bounded(p.category, MESSAGE_CATEGORIES)
    pricing_type = p.pricing_type or ("regular" if charged else "unknown")
    out: list[Count] = [(MESSAGES, (where.waba_id, where.channel_id, category,
                                    bounded(pricing_type, PRICING_TYPES),
                                    "true" if charged else "false"), 1)]
    if p.cost is not None:
        # Meta's own figure beats any card's.
        labels = (where.waba_id, where.channel_id, category, p.cost_currency)
        out += [(COST, labels, float(p.cost)), (META_COST, labels, float(p.cost))]
    elif charged and card is not None:
        price = message_price(card, event, category, at)
        if price is None:
            out.append((UNPRICED, (where.waba_id, where.channel_id, category), 1))
        else:
            out.append((COST, (where.waba_id, where.channel_id, category, card.currency),
                        float(price)))
    return out


def _call(event: CallEvent, where: ChannelLabel, card: Prices | None, at: float,
          ) -> list[Count]:
    direction = bounded(event.direction, DIRECTIONS)
    call_status = bounded(event.status, CALL_STATUSES)
    out: list[Count] = [
        (CALLS, (where.waba_id, where.channel_id, direction, call_status), 1),
        (CALL_SECONDS, (where.waba_id, where.channel_id, direction), event.duration_seconds)]
    if card is not None and event.duration_seconds > 0:
        price: Decimal | None = Decimal(0)
        if direction == "business_initiated":
            # Meta bills business-initiated calls only, by the user's market (never a
            # default one when neither phone nor BSUID country is known).
            phone, country = event.user_phone, event.bsuid_country
            price = (card.call_price(phone, event.duration_seconds, at, country=country)
                     if phone or country else None)
        if price is not None:
            out.append((CALL_COST, (where.waba_id, where.channel_id, direction,
                                    card.currency), float(price)))
    return out


def count(event: Event, where: ChannelLabel, card: Prices | None, seen: Seen, now: float,
          ) -> list[Count]:
    """The increments one event makes (see the module docstring). An event is priced at its
    own time, or at `now` when it carries none."""
    at = float(event.timestamp or now)
    out: list[Count] = []
    if isinstance(event, StatusEvent):
        status = bounded(event.status, STATUSES)
        if not seen(status_key(event)):
            out.append((STATUSES_METRIC, (where.waba_id, where.channel_id, status), 1))
        p = charge(event)
        if p is not None and not seen(message_key(event)):
            out += _message(event, p, where, card, at)
    elif (isinstance(event, CallEvent) and event.event == "terminate"
          and not seen(call_key(event))):
        out += _call(event, where, card, at)
    return out


def keys_asked(delivery: Key, events: Sequence[Event]) -> list[Key]:
    """Every key counting a delivery may ask `seen` about, so a batch can look them all up
    at once: the delivery's own, and those `count` asks for its events."""
    keys = [delivery]
    for event in events:
        if isinstance(event, StatusEvent):
            keys.append(status_key(event))
            if charge(event) is not None:
                keys.append(message_key(event))
        elif isinstance(event, CallEvent) and event.event == "terminate":
            keys.append(call_key(event))
    return keys


def count_delivery(events: Sequence[Event], now: float,
                   count_event: Callable[[Event, float, Seen], list[Count]], seen: Seen,
                   ) -> tuple[Increments, Tallies]:
    """One delivery's increments and month tallies, from `count_event` (`count` with the
    event's channel label and the rate card) for each of its events."""
    increments: Increments = {}
    tallies: Tallies = {}
    for event in events:
        for metric, labels, amount in count_event(event, now, seen):
            increments[(metric, labels)] = increments.get((metric, labels), 0) + amount
            slot = TALLIED.get(metric)
            if slot is not None:
                # A message's month is its status time's (UTC, like the usage buckets).
                month = month_start(event.timestamp or now)
                tally = tallies.setdefault((month, (labels[0], labels[1], labels[2])),
                                           [0.0, 0.0])
                tally[slot] += amount
    return increments, tallies
