"""How far the webhook estimate is from the polled numbers, per channel and category, this month.

Polled numbers (Get Channel Usage) are authoritative; webhook numbers arrive in real time and may
miss deliveries, price with a card that lags Meta's, or start mid-month. The ratio shows which:
messages near 1 and cost far from 1 means the rate card is off; both low means deliveries are
missing (or the receiver started during the month). Memory only, like the other collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.clock import Clock
from exporter.domain import Channel, MonthUsage
from exporter.labels import CATEGORIES, bounded
from exporter.scheduler import reporting_month
from exporter.store import Store
from exporter.webhooks.state import MonthKey, WebhookState


@dataclass(frozen=True, slots=True)
class Ratio:
    waba_id: str
    channel_id: str
    category: str
    measure: str  # messages | cost
    value: float


def channel_ratios(
    channel: Channel,
    polled: MonthUsage,
    tallies: dict[MonthKey, list[float]],
    card_currency: str | None,
) -> list[Ratio]:
    """Webhook over polled for the month of a channel the webhooks have seen, where the poll
    has a non-zero figure (a category the webhooks miss shows as 0)."""
    waba, ch = channel.waba_label, channel.id
    volume: dict[str, int] = {}
    cost: dict[str, Decimal] = {}
    for (category, _), total in polled.messages.items():
        c = bounded(category, CATEGORIES)
        volume[c] = volume.get(c, 0) + total.volume
        cost[c] = cost.get(c, Decimal(0)) + total.cost
    # Cost compares only in one currency: the card's must be the WABA's billing currency.
    same_currency = card_currency is not None and polled.currency.upper() == card_currency
    out = []
    for category in sorted(volume):
        seen_messages, seen_cost = tallies.get((waba, ch, category), (0.0, 0.0))
        if volume[category] > 0:
            out.append(Ratio(waba, ch, category, "messages", seen_messages / volume[category]))
        if same_currency and cost[category] > 0:
            out.append(Ratio(waba, ch, category, "cost", seen_cost / float(cost[category])))
    return out


class ReconciliationCollector(Collector):
    def __init__(self, store: Store, webhooks: WebhookState, clock: Clock, *,
                 month_grace: float, card_currency: str | None,
                 owns: Callable[[Channel], bool]) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clock = clock
        self._grace = month_grace
        self._currency = card_currency
        self._owns = owns

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        month = reporting_month(self._clock.now(), self._grace)
        tallies = self._webhooks.months.get(month, {})
        family = GaugeMetricFamily(
            "whatsapp_webhook_reconciliation_ratio",
            "Webhook estimate divided by the polled number for the current billing month, per "
            "channel and category (measure: messages or cost); 1 means they agree.",
            labels=["waba_id", "channel_id", "category", "measure"])
        seen = {(waba, channel_id) for waba, channel_id, _ in tallies}
        for channel in sorted(self._store.channels.values(), key=lambda c: c.id):
            if (channel.waba_label, channel.id) not in seen:
                continue
            usage = self._store.usage.get(channel.id)
            polled = usage.months.get(month) if usage is not None else None
            if polled is not None and self._owns(channel):
                for r in channel_ratios(channel, polled, tallies, self._currency):
                    family.add_metric([r.waba_id, r.channel_id, r.category, r.measure], r.value)
        yield family
