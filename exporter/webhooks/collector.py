"""Metric families from the webhook counters (memory only, like the usage collector)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics.text import Family, FixedLabels, Samples
from exporter.webhooks.counting import (
    CALL_COST,
    CALL_SECONDS,
    CALLS,
    COST,
    MESSAGES,
    META_COST,
    STATUSES_METRIC,
    UNPRICED,
)
from exporter.webhooks.state import WebhookState

_FAMILIES = (
    (MESSAGES, "whatsapp_webhook_messages", "Messages seen delivered in webhooks, each counted "
     "once (per group participant) on its first delivered or read status that carries pricing "
     "(an estimate; the polled numbers are authoritative).",
     ["waba_id", "channel_id", "category", "pricing_type", "billable"]),
    (STATUSES_METRIC, "whatsapp_webhook_statuses", "Message status webhooks, each (message, "
     "status, group participant) counted once; call statuses are not counted.",
     ["waba_id", "channel_id", "status"]),
    (CALLS, "whatsapp_webhook_calls", "Calls seen ending in webhooks.",
     ["waba_id", "channel_id", "direction", "status"]),
    (CALL_SECONDS, "whatsapp_webhook_call_duration_seconds",
     "Duration of calls seen ending in webhooks.", ["waba_id", "channel_id", "direction"]),
    (COST, "whatsapp_webhook_estimated_cost", "Estimated cost of the messages seen delivered "
     "in webhooks: Meta's own pricing.cost where the status carries one, else the rate card's "
     "price (recipient's market, category, period at the status time), in currency units.",
     ["waba_id", "channel_id", "category", "currency"]),
    (META_COST, "whatsapp_webhook_meta_cost", "The part of the estimated cost that Meta stated "
     "itself in the status (pricing.cost, sent with a max price), in currency units.",
     ["waba_id", "channel_id", "category", "currency"]),
    (CALL_COST, "whatsapp_webhook_call_estimated_cost", "Estimated cost of the calls seen "
     "ending in webhooks, priced by the rate card per 6-second pulse (business-initiated only).",
     ["waba_id", "channel_id", "direction", "currency"]),
    (UNPRICED, "whatsapp_webhook_unpriced_messages", "Billable messages without a price: the "
     "rate card lacks their market or category, or their market is unknown (no phone number "
     "and no country in the user id).",
     ["waba_id", "channel_id", "category"]),
)


class WebhookCollector(Collector):
    """The webhook counters per channel, for the exposition's per-channel renderer
    (`exposition.Fragments`), and whole, for prometheus-client (the tests' oracle)."""

    families = tuple(Family(name, "counter", doc) for _, name, doc, _ in _FAMILIES)
    _lines = tuple(FixedLabels(spec.sample_name, names)
                   for spec, (_, _, _, names) in zip(families, _FAMILIES, strict=True))

    def __init__(self, state: WebhookState) -> None:
        self._state = state
        self.journal = state.journal

    def view(self) -> object:
        return None

    def keys(self) -> list[tuple[str, str]]:
        return sorted(self._state.by_channel)

    def lines(self, key: tuple[str, str], view: object) -> list[str]:
        counters = self._state.by_channel[key]
        return [lines.lines(sorted(counters.get(metric, {}).items()))
                for lines, (metric, _, _, _) in zip(self._lines, _FAMILIES, strict=True)]

    def tail(self) -> list[tuple[Family, Samples]]:
        return []

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        counters = self._state.counters
        for key, name, doc, labels in _FAMILIES:
            family = CounterMetricFamily(name, doc, labels=labels)
            for values, amount in sorted(counters.get(key, {}).items()):
                family.add_metric(list(values), amount)
            yield family
