"""Samples built from the store's in-memory mirror. Never does I/O: budgets decide when the API
is called, not scrapes. Series of retired channels vanish because they are no longer in the
store, not because anything removes them.

`channel_samples()` is the one place that decides a channel's series; `UsageCollector` turns
them into prometheus-client families (the reference rendering, used by tests and for the small
parts), and `exposition.UsageRenderer` renders and caches them per channel at fleet scale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.clock import Clock
from exporter.domain import Balance, Channel, MonthUsage
from exporter.journal import Journal
from exporter.labels import CATEGORIES, DIRECTIONS, PRICING_TYPES, bounded
from exporter.scheduler import reporting_month
from exporter.store import ChannelUsage, Store

CHANNEL_LABELS = ["client_id", "waba_id", "channel_id"]

Labels = dict[str, str]
Samples = list[tuple[Labels, float]]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # counter, gauge, info
    doc: str

    @property
    def sample_name(self) -> str:
        return self.name + {"counter": "_total", "info": "_info"}.get(self.kind, "")


# The per-channel families, in exposition order.
CHANNEL_FAMILIES = (
    Family("whatsapp_messages", "counter", "Messages in the current billing month (UTC) per Get "
           "Channel Usage; restarts from zero each month."),
    Family("whatsapp_cost", "counter", "Messaging cost in the current billing month, in "
           "currency units."),
    Family("whatsapp_calls", "counter", "Voice calls in the current billing month."),
    Family("whatsapp_call_duration_seconds", "counter", "Voice call duration in the current "
           "billing month."),
    Family("whatsapp_call_cost", "counter", "Voice call cost in the current billing month, in "
           "currency units."),
    Family("whatsapp_usage_updated_timestamp_seconds", "gauge", "When the channel's usage was "
           "last fetched from the Partner API."),
    Family("whatsapp_channel", "info", "Discovered channels (phone numbers) and their "
           "metadata."),
    Family("whatsapp_channel_balance", "gauge", "Channel balance, in currency units."),
)
CLIENT_BALANCE = Family("whatsapp_client_balance", "gauge", "Client balance, in currency units.")
PARTNER_BALANCE = Family("whatsapp_partner_balance", "gauge", "Partner balance per top-up "
                         "currency, in currency units.")


def channel_samples(ch: Channel, usage: ChannelUsage | None, balance: Balance | None,
                    month: int) -> tuple[Samples, ...]:
    """One list of samples per entry of CHANNEL_FAMILIES, for one channel."""
    messages: Samples = []
    cost: Samples = []
    calls: Samples = []
    duration: Samples = []
    call_cost: Samples = []
    updated: Samples = []
    base = {"client_id": ch.client_id, "waba_id": ch.waba_label, "channel_id": ch.id}
    info = [(base | {"phone_number": ch.phone_number, "name": ch.name, "status": ch.status},
             1.0)]
    if usage is not None:
        updated.append((base, usage.fetched_at))
        current = usage.months.get(month)
        before = [u for m, u in usage.months.items() if m < month]
        _add_month(base, current, before, (messages, cost, calls, duration, call_cost))
    balances: Samples = []
    if balance is not None:
        balances.append((base | {"currency": balance.currency}, float(balance.amount)))
    return messages, cost, calls, duration, call_cost, updated, info, balances


def _add_month(
    base: Labels,
    current: MonthUsage | None,
    before: list[MonthUsage],
    out: tuple[Samples, ...],
) -> None:
    messages, cost, calls, duration, call_cost = out
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
        labels = base | {"category": c, "pricing_type": p}
        messages.append((labels, float(volume)))
        cost.append((labels | {"currency": currency}, float(amount)))
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
        labels = base | {"direction": d}
        calls.append((labels, float(count)))
        duration.append((labels, float(seconds)))
        call_cost.append((labels | {"currency": currency}, float(amount)))


def balance_samples(store: Store) -> tuple[Samples, Samples]:
    """Client and partner balances: small, not per channel."""
    clients = [({"client_id": client_id, "currency": b.currency}, float(b.amount))
               for client_id, balances in sorted(store.client_balances.items())
               for b in balances]
    partner = [({"currency": b.currency}, float(b.amount)) for b in store.partner_balances]
    return clients, partner


def family(spec: Family, samples: Samples) -> Metric:
    metric = Metric(spec.name, spec.doc, spec.kind)
    for labels, value in samples:
        metric.add_sample(spec.sample_name, labels, value)
    return metric


class UsageCollector(Collector):
    def __init__(self, store: Store, clock: Clock, month_grace: float,
                 owns: Callable[[Channel], bool]) -> None:
        self.store = store
        self.clock = clock
        self.grace = month_grace
        self.owns = owns

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def month(self) -> int:
        return reporting_month(self.clock.now(), self.grace)

    def channels(self) -> list[Channel]:
        """The channels this replica exposes, in exposition order."""
        return [ch for ch in sorted(self.store.channels.values(), key=lambda c: c.id)
                if self.owns(ch)]

    # As the exposition's per-channel renderer sees it (`exposition.Fragments`).

    families = CHANNEL_FAMILIES

    @property
    def journal(self) -> Journal[str]:
        return self.store.journal

    def view(self) -> object:
        return self.month()

    def keys(self) -> list[str]:
        return [ch.id for ch in self.channels()]

    def samples(self, key: str) -> tuple[Samples, ...]:
        store = self.store
        return channel_samples(store.channels[key], store.usage.get(key),
                               store.channel_balances.get(key), self.month())

    def tail(self) -> list[tuple[Family, Samples]]:
        clients, partner = balance_samples(self.store)
        return [(CLIENT_BALANCE, clients), (PARTNER_BALANCE, partner)]

    def collect(self) -> Iterator[Metric]:
        store, month = self.store, self.month()
        per_family: list[Samples] = [[] for _ in CHANNEL_FAMILIES]
        for ch in self.channels():
            for acc, samples in zip(per_family, channel_samples(
                    ch, store.usage.get(ch.id), store.channel_balances.get(ch.id), month),
                    strict=True):
                acc.extend(samples)
        for spec, samples in zip(CHANNEL_FAMILIES, per_family, strict=True):
            yield family(spec, samples)
        for spec, samples in self.tail():
            yield family(spec, samples)
