"""Metric families built from the store's in-memory mirror. Never does I/O: budgets decide when
the API is called, not scrapes. Series of retired channels vanish because they are no longer in
the store, not because anything removes them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.clock import Clock
from exporter.domain import Channel, MonthUsage
from exporter.labels import CATEGORIES, DIRECTIONS, PRICING_TYPES, bounded
from exporter.scheduler import reporting_month
from exporter.store import Store

CHANNEL_LABELS = ["client_id", "waba_id", "channel_id"]


class UsageCollector(Collector):
    def __init__(self, store: Store, clock: Clock, month_grace: float,
                 owns: Callable[[Channel], bool]) -> None:
        self._store = store
        self._clock = clock
        self._grace = month_grace
        self._owns = owns

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        store = self._store
        month = reporting_month(self._clock.now(), self._grace)
        messages = CounterMetricFamily(
            "whatsapp_messages", "Messages in the current billing month (UTC) per Get Channel "
            "Usage; restarts from zero each month.",
            labels=[*CHANNEL_LABELS, "category", "pricing_type"])
        cost = CounterMetricFamily(
            "whatsapp_cost", "Messaging cost in the current billing month, in currency units.",
            labels=[*CHANNEL_LABELS, "category", "pricing_type", "currency"])
        calls = CounterMetricFamily(
            "whatsapp_calls", "Voice calls in the current billing month.",
            labels=[*CHANNEL_LABELS, "direction"])
        duration = CounterMetricFamily(
            "whatsapp_call_duration_seconds", "Voice call duration in the current billing month.",
            labels=[*CHANNEL_LABELS, "direction"])
        call_cost = CounterMetricFamily(
            "whatsapp_call_cost", "Voice call cost in the current billing month, in currency "
            "units.", labels=[*CHANNEL_LABELS, "direction", "currency"])
        updated = GaugeMetricFamily(
            "whatsapp_usage_updated_timestamp_seconds",
            "When the channel's usage was last fetched from the Partner API.",
            labels=CHANNEL_LABELS)
        info = InfoMetricFamily(
            "whatsapp_channel", "Discovered channels (phone numbers) and their metadata.",
            labels=CHANNEL_LABELS)
        channel_balance = GaugeMetricFamily(
            "whatsapp_channel_balance", "Channel balance, in currency units.",
            labels=[*CHANNEL_LABELS, "currency"])

        for ch in sorted(store.channels.values(), key=lambda c: c.id):
            if not self._owns(ch):
                continue
            base = [ch.client_id, ch.waba_label, ch.id]
            info.add_metric(base, {"phone_number": ch.phone_number, "name": ch.name,
                                   "status": ch.status})
            usage = store.usage.get(ch.id)
            if usage is not None:
                updated.add_metric(base, usage.fetched_at)
                current = usage.months.get(month)
                before = [u for m, u in usage.months.items() if m < month]
                _add_month(base, current, before, (messages, cost, calls, duration, call_cost))
            balance = store.channel_balances.get(ch.id)
            if balance is not None:
                channel_balance.add_metric([*base, balance.currency], float(balance.amount))

        client_balance = GaugeMetricFamily(
            "whatsapp_client_balance", "Client balance, in currency units.",
            labels=["client_id", "currency"])
        for client_id, balances in sorted(store.client_balances.items()):
            for b in balances:
                client_balance.add_metric([client_id, b.currency], float(b.amount))
        partner_balance = GaugeMetricFamily(
            "whatsapp_partner_balance", "Partner balance per top-up currency, in currency units.",
            labels=["currency"])
        for b in store.partner_balances:
            partner_balance.add_metric([b.currency], float(b.amount))
        yield from (messages, cost, calls, duration, call_cost, updated, info, channel_balance,
                    client_balance, partner_balance)


def _add_month(
    base: list[str],
    current: MonthUsage | None,
    before: list[MonthUsage],
    families: tuple[CounterMetricFamily, ...],
) -> None:
    messages, cost, calls, duration, call_cost = families
    currency = current.currency if current and current.currency else next(
        (u.currency for u in before if u.currency), "")
    msg: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    # Series seen last month restart at zero rather than vanish, so rate() sees a clean reset.
    for u in before:
        for c, p in u.messages:
            msg[(bounded(c, CATEGORIES), bounded(p, PRICING_TYPES))]
    if current is not None:
        for (c, p), total in current.messages.items():
            acc = msg[(bounded(c, CATEGORIES), bounded(p, PRICING_TYPES))]
            acc[0] += total.volume
            acc[1] += total.cost
    for (c, p), (volume, amount) in sorted(msg.items()):
        messages.add_metric([*base, c, p], float(volume))
        cost.add_metric([*base, c, p, currency], float(amount))
    call: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for u in before:
        for d in u.calls:
            call[bounded(d, DIRECTIONS)]
    if current is not None:
        for d, t in current.calls.items():
            acc = call[bounded(d, DIRECTIONS)]
            acc[0] += t.count
            acc[1] += t.duration_seconds
            acc[2] += t.cost
    for d, (count, seconds, amount) in sorted(call.items()):
        calls.add_metric([*base, d], float(count))
        duration.add_metric([*base, d], float(seconds))
        call_cost.add_metric([*base, d, currency], float(amount))
