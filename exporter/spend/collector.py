"""`whatsapp_spend_budget`, read from the loaded budgets file and the store's discovered
channels when /metrics is rendered (memory only)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.spend.budgets import SpendBudgets, budget_series

SPEND_BUDGET = "whatsapp_spend_budget"
LABELS = ["client_id", "waba_id", "currency"]


class SpendBudgetCollector(Collector):
    def __init__(self, budgets: SpendBudgets, polled_clients: Callable[[], Iterable[str]]) -> None:
        self._budgets = budgets
        self._polled_clients = polled_clients

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            SPEND_BUDGET, "Monthly spend budget from D360_SPEND_BUDGETS, in currency units: per "
            "client (waba_id=\"\"), the default for each polled client without one, or per WABA "
            "(client_id=\"\").", labels=LABELS)
        clients = self._polled_clients() if self._budgets.default is not None else ()
        for s in budget_series(self._budgets, clients):
            family.add_metric([s.client_id, s.waba_id, s.currency], float(s.amount))
        yield family
