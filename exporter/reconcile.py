"""How far the webhook estimate is from the polled numbers, per channel and category, this month.

Polled numbers (Get Channel Usage) are authoritative; webhook numbers arrive in real time and may
miss deliveries or price with a card that lags Meta's. The ratio tells which: messages near 1 and
cost far from 1 means the rate card is off; both low means deliveries are missing.

Two things make a naive month-to-date ratio lie, and both are handled here:
- Polls are minutes apart while webhooks move every second. Each poll is paired with the webhook
  tallies at the moment it landed, so both sides of a ratio describe the same instant.
- A receiver that starts mid-month has not seen the month's first days. In the month of its
  first delivery, each channel is compared from its first poll after webhooks for it arrived:
  that pair is stored as a baseline and both sides count from there.

A ratio appears only once the poll has grown by `MIN_MESSAGES` (by default; the setting
D360_WEBHOOK_RECONCILE_MIN_MESSAGES) in its category: the two sources are read at one instant
but not in one step, so a message or two is always in flight between them, and over a handful
of messages that alone reads as a rate card or a receiver far off.

Group messages are compared under their base category (`group_marketing` with `marketing`) on
both sides: Meta prices them at the base category's rate, and how its analytics name them was
not found, so folding both sides holds whichever way they are reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.calendar import reporting_month
from exporter.clock import Clock
from exporter.domain import Channel, MonthUsage
from exporter.labels import CATEGORIES, bounded
from exporter.polling.store import Store
from exporter.webhooks.counting import GROUP_BASE, MonthKey
from exporter.webhooks.state import Baseline, WebhookState

Totals = dict[str, tuple[float, float]]  # category -> (messages, cost)

# With this many messages of growth, each message in flight moves a ratio by at most 1%.
MIN_MESSAGES = 100


@dataclass(frozen=True, slots=True)
class Ratio:
    waba_id: str
    channel_id: str
    category: str
    measure: str  # messages | cost
    value: float


@dataclass(frozen=True, slots=True)
class Pair:
    """One poll and the webhook tallies when it landed."""

    fetched_at: float
    month: int
    currency: str
    polled: Totals
    webhook: Totals
    # Polled messages per category in rows that cost something: what a cost ratio is made of.
    charged: dict[str, float] = field(default_factory=dict)


def compared_category(category: str) -> str:
    """The category a message is compared under: bounded, a group one folded into its base."""
    c = bounded(category, CATEGORIES)
    return GROUP_BASE.get(c, c)


def _add(out: Totals, category: str, messages: float, cost: float) -> None:
    was_messages, was_cost = out.get(category, (0.0, 0.0))
    out[category] = (was_messages + messages, was_cost + cost)


def polled_totals(usage: MonthUsage) -> Totals:
    """Month totals per compared category, free and paid pricing types together.

    A category with a row whose points lacked a cost gets no cost (0, which `ratios` does not
    compare): what cost it has is part of the truth, and against the webhooks' full estimate
    it would read as a rate card far off."""
    out: Totals = {}
    unknown: set[str] = set()
    for (category, _), total in usage.messages.items():
        compared = compared_category(category)
        _add(out, compared, total.volume, float(total.cost))
        if total.points_without_cost:
            unknown.add(compared)
    for compared in unknown:
        out[compared] = (out[compared][0], 0.0)
    return out


def charged_volumes(usage: MonthUsage) -> dict[str, float]:
    """Messages per compared category in rows with a cost above zero (the free pricing types
    cost nothing, so they move no cost ratio however many there are)."""
    out: dict[str, float] = {}
    for (category, _), total in usage.messages.items():
        if total.cost > 0:
            compared = compared_category(category)
            out[compared] = out.get(compared, 0.0) + total.volume
    return out


def webhook_totals(tallies: dict[MonthKey, tuple[float, float]], channel: Channel) -> Totals:
    out: Totals = {}
    for category in CATEGORIES | {"other"}:
        tally = tallies.get((channel.waba_label, channel.id, category))
        if tally is not None:
            _add(out, compared_category(category), tally[0], tally[1])
    return out


def ratios(channel: Channel, pair: Pair, baseline: Baseline, card_currency: str | None,
           min_messages: int = MIN_MESSAGES) -> list[Ratio]:
    """Webhook growth over polled growth since the baseline (all of the month without one),
    where the poll grew by at least `min_messages` (a category the webhooks miss shows as 0)."""
    # Cost compares only in one currency: the card's must be the WABA's billing currency.
    same_currency = card_currency is not None and pair.currency.upper() == card_currency
    out = []
    for category in sorted(pair.polled):
        polled_messages, polled_cost = pair.polled[category]
        seen_messages, seen_cost = pair.webhook.get(category, (0.0, 0.0))
        base = baseline.get(category, (0.0, 0.0, 0.0, 0.0))
        if polled_messages - base[0] < min_messages:
            continue
        out.append(Ratio(channel.waba_label, channel.id, category, "messages",
                         (seen_messages - base[2]) / (polled_messages - base[0])))
        # The cost ratio needs as many charged messages: estimated from the cost's growth at
        # the category's average price now, as the baseline kept no charged count.
        charged = pair.charged.get(category, 0.0)
        grown = polled_cost - base[1]
        if same_currency and grown > 1e-9 and charged and (
                grown / (polled_cost / charged) >= min_messages):
            out.append(Ratio(channel.waba_label, channel.id, category, "cost",
                             (seen_cost - base[3]) / grown))
    return out


class Reconciler:
    def __init__(self, store: Store, webhooks: WebhookState, clock: Clock, *,
                 month_grace: float, card_currency: str | None,
                 owns: Callable[[Channel], bool], min_messages: int = MIN_MESSAGES) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clock = clock
        self._grace = month_grace
        self._currency = card_currency
        self._owns = owns
        self.min_messages = min_messages
        self._pairs: dict[str, Pair] = {}
        self._seen_store = (-1, -1)  # (store version, month) at the last observe
        self.version = 0

    def observe(self) -> None:
        """Pair every poll that landed since the last call with the webhook tallies now.
        Cheap when nothing was polled: called about once a second."""
        month = reporting_month(self._clock.now(), self._grace)
        if self._seen_store == (self._store.version, month):
            return
        self._seen_store = (self._store.version, month)
        tallies = self._webhooks.months.get(month, {})
        first = self._webhooks.first_received_at
        from_baseline = first is not None and first >= month
        for channel in self._store.channels.values():
            usage = self._store.usage.get(channel.id)
            polled = usage.months.get(month) if usage is not None else None
            old = self._pairs.get(channel.id)
            if usage is None or polled is None or (
                    old is not None and (old.fetched_at, old.month) == (usage.fetched_at, month)):
                continue
            pair = Pair(usage.fetched_at, month, polled.currency, polled_totals(polled),
                        webhook_totals(tallies, channel), charged_volumes(polled))
            key = (month, channel.waba_label, channel.id)
            if from_baseline and key not in self._webhooks.baselines:
                if not pair.webhook:
                    # The webhooks have not seen this channel yet: nothing to compare. The poll
                    # is kept as paired, so that it is not paired again later with tallies
                    # grown since it landed (a baseline off by what came in between).
                    self._pairs[channel.id] = pair
                    continue
                self._webhooks.set_baseline(*key, {
                    c: (*pair.polled.get(c, (0.0, 0.0)), *pair.webhook.get(c, (0.0, 0.0)))
                    for c in pair.polled.keys() | pair.webhook.keys()})
            self._pairs[channel.id] = pair
            self.version += 1

    def ratios(self) -> Iterator[Ratio]:
        month = reporting_month(self._clock.now(), self._grace)
        for channel in sorted(self._store.channels.values(), key=lambda c: c.id):
            pair = self._pairs.get(channel.id)
            if pair is None or pair.month != month or not pair.webhook or not self._owns(channel):
                continue
            baseline = self._webhooks.baselines.get((month, channel.waba_label, channel.id), {})
            yield from ratios(channel, pair, baseline, self._currency, self.min_messages)


class ReconciliationCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler
        self._help = (
            "Webhook estimate divided by the polled number for the current billing month, as of "
            "the channel's last poll, per category (measure: messages or cost); 1 means they "
            "agree. In the receiver's first month both count from the first poll after webhooks "
            f"for the channel arrived. Shown once the poll grew by {reconciler.min_messages} "
            "messages in the category.")

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("whatsapp_webhook_reconciliation_ratio", self._help,
                                   labels=["waba_id", "channel_id", "category", "measure"])
        for r in self._reconciler.ratios():
            family.add_metric([r.waba_id, r.channel_id, r.category, r.measure], r.value)
        yield family
