"""Where the spend goes: polled messages and cost per WABA and destination country, this month.

Meta prices a message by the recipient's market, and its analytics name a country per point
when the COUNTRY dimension is there. Per WABA, not per channel, so the series stay bounded: at
most one per country code (plus `unknown` and `other`) and currency for each WABA. Points that
name no country count as `unknown`, so a dashboard can say the API gave no markets rather than
show nothing. Month-to-date counters like the channel series: a country seen last month
restarts at 0, and a cost with points that came without one is not exposed (unknown, not 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.calendar import reporting_month
from exporter.clock import Clock
from exporter.domain import Channel
from exporter.polling.store import ChannelUsage, Store

# (waba label, country, currency) -> messages, cost (None: some points came without one)
Totals = dict[tuple[str, str, str], tuple[int, Decimal | None]]


def destination_totals(channels: Mapping[str, Channel], usage: Mapping[str, ChannelUsage],
                       month: int, owns: Callable[[Channel], bool]) -> Totals:
    out: Totals = {}
    for channel_id, u in usage.items():
        ch = channels.get(channel_id)
        if ch is None or not owns(ch):
            continue
        current = u.months.get(month)
        for m, before in u.months.items():
            if m < month:  # last month's countries restart at zero rather than vanish
                for country in before.markets:
                    out.setdefault((ch.waba_label, country, before.currency), (0, Decimal(0)))
        if current is None:
            continue
        for country, total in current.markets.items():
            key = (ch.waba_label, country, current.currency)
            volume, cost = out.get(key, (0, Decimal(0)))
            out[key] = (volume + total.volume, None if cost is None or total.points_without_cost
                        else cost + total.cost)
    return out


class DestinationCollector(Collector):
    def __init__(self, store: Store, clock: Clock, month_grace: float,
                 owns: Callable[[Channel], bool]) -> None:
        self._store = store
        self._clock = clock
        self._grace = month_grace
        self._owns = owns
        self._cached: tuple[tuple[int, int], Totals] | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def _totals(self) -> Totals:
        month = reporting_month(self._clock.now(), self._grace)
        key = (self._store.version, month)
        if self._cached is None or self._cached[0] != key:
            self._cached = key, destination_totals(self._store.channels, self._store.usage,
                                                   month, self._owns)
        return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "whatsapp_destination_messages",
            "Messages in the current billing month per WABA and destination country (Meta's "
            "COUNTRY dimension of Get Channel Usage; unknown when the answer named none).",
            labels=["waba_id", "country"])
        cost = CounterMetricFamily(
            "whatsapp_destination_cost",
            "Messaging cost in the current billing month per WABA and destination country, in "
            "currency units; absent while some of its points came without a cost.",
            labels=["waba_id", "country", "currency"])
        volumes: dict[tuple[str, str], int] = {}
        for (waba, country, currency), (volume, amount) in sorted(self._totals().items()):
            volumes[(waba, country)] = volumes.get((waba, country), 0) + volume
            if amount is not None and currency:
                cost.add_metric([waba, country, currency], float(amount))
        for (waba, country), volume in volumes.items():
            messages.add_metric([waba, country], float(volume))
        yield messages
        yield cost
