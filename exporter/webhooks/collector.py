"""Metric families from the webhook counters (memory only, like the usage collector)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.webhooks.state import CALL_SECONDS, CALLS, MESSAGES, STATUSES_METRIC, WebhookState

_FAMILIES = (
    (MESSAGES, "whatsapp_webhook_messages", "Messages seen in webhooks, each counted once on its "
     "first status that carries pricing (an estimate; the polled numbers are authoritative).",
     ["waba_id", "channel_id", "category", "pricing_type", "billable"]),
    (STATUSES_METRIC, "whatsapp_webhook_statuses", "Message status webhooks, each (message, "
     "status) counted once.", ["waba_id", "channel_id", "status"]),
    (CALLS, "whatsapp_webhook_calls", "Calls seen ending in webhooks.",
     ["waba_id", "channel_id", "direction", "status"]),
    (CALL_SECONDS, "whatsapp_webhook_call_duration_seconds",
     "Duration of calls seen ending in webhooks.", ["waba_id", "channel_id", "direction"]),
)


class WebhookCollector(Collector):
    def __init__(self, state: WebhookState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        for key, name, doc, labels in _FAMILIES:
            family = CounterMetricFamily(name, doc, labels=labels)
            for values, amount in sorted(self._state.counters.get(key, {}).items()):
                family.add_metric(list(values), amount)
            yield family
