"""Samples built from the store's in-memory mirror. Never does I/O: budgets decide when the API
is called, not scrapes. Series of retired channels vanish because they are no longer in the
store, not because anything removes them.

`channel_series()` is the one place that decides a channel's series; `UsageCollector` turns
them into prometheus-client families (the reference rendering, used by tests and for the small
parts), and `ChannelSeries.lines()` writes the same series as text for the exposition's
per-channel renderer at fleet scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.calendar import reporting_month
from exporter.clock import Clock
from exporter.domain import Balance, Channel, MonthUsage
from exporter.labels import CATEGORIES, DIRECTIONS, OTHER, PRICING_TYPES
from exporter.metrics.journal import Journal
from exporter.metrics.text import Family, Samples, escape, go_float
from exporter.polling.store import ChannelUsage, Store

CHANNEL_LABELS = ["client_id", "waba_id", "channel_id"]


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
    Family("whatsapp_usage_points_without_cost", "counter", "Usage data points in the current "
           "billing month that came without a cost; while above zero, the cost series of their "
           "rows are not exposed."),
    Family("whatsapp_usage_updated_timestamp_seconds", "gauge", "When the channel's usage was "
           "last fetched from the Partner API."),
    Family("whatsapp_channel", "info", "Discovered channels (phone numbers) and their "
           "metadata."),
    Family("whatsapp_channel_balance", "gauge", "Channel balance, in currency units."),
)
CLIENT_BALANCE = Family("whatsapp_client_balance", "gauge", "Client balance, in currency units.")
PARTNER_BALANCE = Family("whatsapp_partner_balance", "gauge", "Partner balance per top-up "
                         "currency, in currency units.")


# The cost is None where some of the row's points came without one: unknown, not zero.
MessageRow = tuple[str, str, float, float | None]  # category, pricing_type, volume, cost
CallRow = tuple[str, float, float, float | None]  # direction, count, seconds, cost


@dataclass(frozen=True, slots=True)
class ChannelSeries:
    """What one channel exposes, decided once; `samples()` and `lines()` only present it."""

    channel: Channel
    fetched_at: float | None  # None: never polled, no usage series
    currency: str
    messages: list[MessageRow]
    calls: list[CallRow]
    balance: Balance | None
    # Month-to-date points without a cost; None: no such series (no month had any).
    points_without_cost: float | None = None

    def samples(self) -> tuple[Samples, ...]:
        """One list of samples per entry of CHANNEL_FAMILIES (the reference presentation)."""
        ch = self.channel
        base = {"client_id": ch.client_id, "waba_id": ch.waba_label, "channel_id": ch.id}
        info = [(base | {"phone_number": ch.phone_number, "name": ch.name,
                         "status": ch.status}, 1.0)]
        messages: Samples = []
        cost: Samples = []
        for c, p, volume, amount in self.messages:
            labels = base | {"category": c, "pricing_type": p}
            messages.append((labels, volume))
            if amount is not None:
                cost.append((labels | {"currency": self.currency}, amount))
        calls: Samples = []
        duration: Samples = []
        call_cost: Samples = []
        for d, count, seconds, amount in self.calls:
            labels = base | {"direction": d}
            calls.append((labels, count))
            duration.append((labels, seconds))
            if amount is not None:
                call_cost.append((labels | {"currency": self.currency}, amount))
        unknown: Samples = ([] if self.points_without_cost is None
                            else [(base, self.points_without_cost)])
        updated: Samples = [] if self.fetched_at is None else [(base, self.fetched_at)]
        balances: Samples = [] if self.balance is None else [
            (base | {"currency": self.balance.currency}, float(self.balance.amount))]
        return messages, cost, calls, duration, call_cost, unknown, updated, info, balances

    def lines(self) -> tuple[str, ...]:
        """The same samples as text, one string per family, byte for byte what `samples()`
        renders to: the label names are fixed, so each line is the channel's escaped values
        put once into prefixes in sorted label order (the tests hold this to prometheus-client's
        rendering). The bounded labels (category, pricing_type, direction) need no escaping."""
        ch = self.channel
        ids = f'channel_id="{escape(ch.id)}",client_id="{escape(ch.client_id)}"'
        waba = f'waba_id="{escape(ch.waba_label)}"'
        currency = f'currency="{escape(self.currency)}"'
        messages = "".join([
            f'whatsapp_messages_total{{category="{c}",{ids},pricing_type="{p}",{waba}}} '
            f"{go_float(volume)}\n" for c, p, volume, _ in self.messages])
        cost = "".join([
            f'whatsapp_cost_total{{category="{c}",{ids},{currency},pricing_type="{p}",{waba}}} '
            f"{go_float(amount)}\n" for c, p, _, amount in self.messages if amount is not None])
        calls = "".join([
            f'whatsapp_calls_total{{{ids},direction="{d}",{waba}}} {go_float(count)}\n'
            for d, count, _, _ in self.calls])
        duration = "".join([
            f'whatsapp_call_duration_seconds_total{{{ids},direction="{d}",{waba}}} '
            f"{go_float(seconds)}\n" for d, _, seconds, _ in self.calls])
        call_cost = "".join([
            f'whatsapp_call_cost_total{{{ids},{currency},direction="{d}",{waba}}} '
            f"{go_float(amount)}\n" for d, _, _, amount in self.calls if amount is not None])
        unknown = "" if self.points_without_cost is None else (
            f"whatsapp_usage_points_without_cost_total{{{ids},{waba}}} "
            f"{go_float(self.points_without_cost)}\n")
        updated = "" if self.fetched_at is None else (
            f"whatsapp_usage_updated_timestamp_seconds{{{ids},{waba}}} "
            f"{go_float(self.fetched_at)}\n")
        info = (f'whatsapp_channel_info{{{ids},name="{escape(ch.name)}",'
                f'phone_number="{escape(ch.phone_number)}",status="{escape(ch.status)}",'
                f"{waba}}} 1.0\n")
        balance = "" if self.balance is None else (
            f'whatsapp_channel_balance{{{ids},currency="{escape(self.balance.currency)}",'
            f"{waba}}} {go_float(float(self.balance.amount))}\n")
        return messages, cost, calls, duration, call_cost, unknown, updated, info, balance


def channel_series(ch: Channel, usage: ChannelUsage | None, balance: Balance | None,
                   month: int) -> ChannelSeries:
    if usage is None:
        return ChannelSeries(ch, None, "", [], [], balance)
    current = None
    before: list[MonthUsage] = []
    for m, u in usage.months.items():
        if m < month:
            before.append(u)
        elif m == month:
            current = u
    currency, messages, calls, unknown_now, unknown_before = _month_rows(current, before)
    # Like the other month counters: once a month had points without a cost, the series is
    # there, and restarts at zero the month after rather than vanishing.
    unknown = None
    if unknown_now:
        unknown = float(unknown_now)
    elif unknown_before:
        unknown = 0.0
    return ChannelSeries(ch, usage.fetched_at, currency, messages, calls, balance, unknown)


def channel_samples(ch: Channel, usage: ChannelUsage | None, balance: Balance | None,
                    month: int) -> tuple[Samples, ...]:
    """One list of samples per entry of CHANNEL_FAMILIES, for one channel."""
    return channel_series(ch, usage, balance, month).samples()


_ZERO = Decimal(0)
_MESSAGE_ZERO = (0, _ZERO, 0)  # volume, cost, points without a cost
_CALL_ZERO = (0, 0, _ZERO, 0)  # count, seconds, cost, points without a cost


def _month_rows(current: MonthUsage | None, before: list[MonthUsage],
                ) -> tuple[str, list[MessageRow], list[CallRow], int, bool]:
    """The month's rows, then its points without a cost (`MonthUsage.points_without_cost`)
    and whether an earlier month had any, worked out in the same passes."""
    # Counts are summed as ints and money as Decimal, each converted to float once at the end.
    # (`bounded` is written out inline: this runs for every channel at start-up.)
    currency = current.currency if current and current.currency else next(
        (u.currency for u in before if u.currency), "")
    msg: dict[tuple[str, str], tuple[int, Decimal, int]] = {}
    call: dict[str, tuple[int, int, Decimal, int]] = {}
    unknown_before = False
    # Series seen last month restart at zero rather than vanish, so rate() sees a clean reset.
    for u in before:
        points = 0
        for (c, p), m in u.messages.items():
            msg.setdefault((c if c in CATEGORIES else OTHER, p if p in PRICING_TYPES else OTHER),
                           _MESSAGE_ZERO)
            points += m.points_without_cost
        for d, t in u.calls.items():
            call.setdefault(d if d in DIRECTIONS else OTHER, _CALL_ZERO)
            points += t.points_without_cost
        unknown_before = unknown_before or points != 0
    unknown_now = 0
    if current is not None:
        for (c, p), total in current.messages.items():
            key = (c if c in CATEGORIES else OTHER, p if p in PRICING_TYPES else OTHER)
            volume, amount, unknown = msg.get(key, _MESSAGE_ZERO)
            msg[key] = (volume + total.volume, amount + total.cost,
                        unknown + total.points_without_cost)
            unknown_now += total.points_without_cost
        for d, t in current.calls.items():
            direction = d if d in DIRECTIONS else OTHER
            count, seconds, amount, unknown = call.get(direction, _CALL_ZERO)
            call[direction] = (count + t.count, seconds + t.duration_seconds, amount + t.cost,
                               unknown + t.points_without_cost)
            unknown_now += t.points_without_cost
    # A row summed from points of which some lacked a cost has no known cost.
    messages = [(c, p, float(volume), None if unknown else float(amount))
                for (c, p), (volume, amount, unknown) in sorted(msg.items())]
    calls = [(d, float(count), float(seconds), None if unknown else float(amount))
             for d, (count, seconds, amount, unknown) in sorted(call.items())]
    return currency, messages, calls, unknown_now, unknown_before


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

    def lines(self, key: str, view: object) -> tuple[str, ...]:
        store = self.store
        return channel_series(store.channels[key], store.usage.get(key),
                              store.channel_balances.get(key), cast("int", view)).lines()

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
