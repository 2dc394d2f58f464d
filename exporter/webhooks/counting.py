"""What a webhook event counts: the rules, pure (no SQLite, no I/O).

For one parsed event and the channel label it maps to, `count` names the counter increments
(metric, labels, amount). Each rule asks `seen` about the dedupe key that makes it count once
(`seen` also remembers the key):
- a message status counts once per (message, status) in `statuses`;
- a message counts once, on the first status that `charge`s it, in `messages` (category, pricing
  type, billable); when it is billable and there is a rate card, its price goes to `cost`, or 1
  to `unpriced` where the card has no price for it;
- a call counts once, on its `terminate` event, in `calls`, its duration in `call_seconds`, and,
  with a rate card, its price in `call_cost` (Meta bills business-initiated calls only);
- other events (call statuses, inbound messages) count nothing.
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

# The counter families, by the name they are stored under, and their labels.
MESSAGES = "messages"  # (waba_id, channel_id, category, pricing_type, billable)
STATUSES_METRIC = "statuses"  # (waba_id, channel_id, status)
CALLS = "calls"  # (waba_id, channel_id, direction, status)
CALL_SECONDS = "call_seconds"  # (waba_id, channel_id, direction)
COST = "cost"  # (waba_id, channel_id, category, currency)
CALL_COST = "call_cost"  # (waba_id, channel_id, direction, currency)
UNPRICED = "unpriced"  # (waba_id, channel_id, category): billable, but the card has no price

# Label values kept as they are; anything else is counted as `other`.
STATUSES = frozenset({"sent", "delivered", "read", "failed", "played", "deleted", "warning"})
CALL_STATUSES = frozenset({"completed", "failed"})
MESSAGE_CATEGORIES = CATEGORIES

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
    """The pricing a status counts its message with, or None: every status carrying one."""
    return event.pricing


def count(event: Event, where: ChannelLabel, card: Prices | None, seen: Seen,
          ) -> list[Count]:
    """The increments one event makes (see the module docstring)."""
    out: list[Count] = []
    if isinstance(event, StatusEvent):
        status = bounded(event.status, STATUSES)
        if not seen(status_key(event)):
            out.append((STATUSES_METRIC, (where.waba_id, where.channel_id, status), 1))
        p = charge(event)
        if p is not None and not seen(message_key(event)):
            category = bounded(p.category, MESSAGE_CATEGORIES)
            out.append((MESSAGES, (where.waba_id, where.channel_id, category,
                                   bounded(p.pricing_type, PRICING_TYPES),
                                   "true" if p.billable else "false"), 1))
            if p.billable and card is not None:
                # By the card's period in force when the message was sent, not today's.
                price = card.message_price(event.recipient_phone or event.recipient_id,
                                           p.category, event.timestamp,
                                           country=event.bsuid_country)
                if price is None:
                    out.append((UNPRICED, (where.waba_id, where.channel_id, category), 1))
                else:
                    out.append((COST, (where.waba_id, where.channel_id, category,
                                       card.currency), float(price)))
    elif (isinstance(event, CallEvent) and event.event == "terminate"
          and not seen(call_key(event))):
        direction = bounded(event.direction, DIRECTIONS)
        call_status = bounded(event.status, CALL_STATUSES)
        out.append((CALLS, (where.waba_id, where.channel_id, direction, call_status), 1))
        out.append((CALL_SECONDS, (where.waba_id, where.channel_id, direction),
                    event.duration_seconds))
        if card is not None and event.duration_seconds > 0:
            # Meta bills business-initiated calls only, by the callee's market.
            price = (card.call_price(event.user_phone or event.callee, event.duration_seconds,
                                     event.timestamp, country=event.bsuid_country)
                     if direction == "business_initiated" else Decimal(0))
            if price is not None:
                out.append((CALL_COST, (where.waba_id, where.channel_id, direction,
                                        card.currency), float(price)))
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
