"""Backfill progress on /metrics: months wanted, fetched and not available, per WABA."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.backfill.runner import Backfill


class BackfillCollector(Collector):
    def __init__(self, backfill: Backfill) -> None:
        self._backfill = backfill

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "whatsapp_exporter_backfill_months",
            "Channel-months of history per WABA, by state: wanted (all that D360_BACKFILL_MONTHS "
            "asks for), done (fetched and kept in the state file), unavailable (the API "
            "refused the range).", labels=["waba_id", "state"])
        for waba, wanted, done, unavailable in self._backfill.progress():
            family.add_metric([waba, "wanted"], wanted)
            family.add_metric([waba, "done"], done)
            family.add_metric([waba, "unavailable"], unavailable)
        yield family
