"""The exporter's own health: API calls, errors, budget use, plans, discovery.

These live in their own registry, rendered on every scrape (they are small and move with every
call), separately from the large usage exposition that is rendered only when data changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter import __version__

PREFIX = "whatsapp_exporter_"

# `_created` series double every counter for a feature few use; keep the exposition lean.
disable_created_metrics()  # type: ignore[no-untyped-call]


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.api_requests = Counter(
            PREFIX + "api_requests", "Partner API requests by endpoint and HTTP status code "
            "(code is 'transport' when no answer came).", ["endpoint", "code"], registry=r)
        self.api_duration = Histogram(
            PREFIX + "api_request_duration_seconds", "Partner API request duration.",
            ["endpoint"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        self.api_errors = Counter(
            PREFIX + "api_errors", "Failed Partner API calls by endpoint and kind "
            "(transport, rate_limited, server, auth, client, malformed).",
            ["endpoint", "kind"], registry=r)
        self.rate_limited = Counter(
            PREFIX + "rate_limited", "HTTP 429 answers received; each one is a planning bug.",
            ["endpoint"], registry=r)
        self.deferred = Counter(
            PREFIX + "polls_deferred", "Polls the ledger held back because a budget was full.",
            ["scope"], registry=r)
        self.usage_decreases = Counter(
            PREFIX + "usage_decreases", "Month totals the API reported lower than before; they "
            "are held at the old figure so the counters never go down within a month.",
            registry=r)
        self.discovered = Gauge(
            PREFIX + "discovered", "Entities found by the last discovery and selected for polling "
            "by this replica.", ["kind"], registry=r)
        self.last_discovery = Gauge(
            PREFIX + "last_discovery_success_timestamp_seconds",
            "When discovery last completed.", registry=r)
        self.webhook_requests = Counter(
            PREFIX + "webhook_requests", "Webhook deliveries by result (ok, duplicate, "
            "unauthorized, malformed, too_large, unsupported_media_type, timeout, error).",
            ["result"], registry=r)
        self.webhook_worker_restarts = Counter(
            PREFIX + "webhook_worker_restarts", "Attempts to start a webhook worker process "
            "again after one exited, failed ones included (D360_WEBHOOK_WORKERS).", registry=r)
        self.webhook_inbox = Gauge(
            PREFIX + "webhook_inbox_pending", "Webhook deliveries an earlier build recorded "
            "but did not count (counted at start-up).",
            registry=r)
        self.webhook_dead_letters = Gauge(
            PREFIX + "webhook_dead_letters", "Accepted webhook deliveries that could not be "
            "counted and were set aside in the state file for inspection.", registry=r)
        self.scrapes_unauthorized = Counter(
            PREFIX + "scrapes_unauthorized", "Requests for /metrics refused for missing or wrong "
            "credentials.", registry=r)
        self.webhook_forwards = Counter(
            PREFIX + "webhook_forwards", "Attempts to forward webhook bodies to the application "
            "by result (delivered; failed, to be retried; expired, dropped after the maximum "
            "age).", ["result"], registry=r)
        self.webhook_forward_lag = Histogram(
            PREFIX + "webhook_forward_lag_seconds", "From receipt to delivery at the application, "
            "for forwarded webhook bodies.", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0, 86400.0))
        self.webhook_outbox = Gauge(
            PREFIX + "webhook_outbox_pending", "Webhook bodies waiting to be forwarded.",
            registry=r)
        self.webhook_outbox_age = Gauge(
            PREFIX + "webhook_outbox_oldest_age_seconds", "Age of the oldest webhook body still "
            "waiting to be forwarded (0 when none waits).", registry=r)
        # Registered by the poller (`polling`): a process that does not poll shows no verdict.
        self.api_reachable = Gauge(
            PREFIX + "api_reachable", "1 while the Partner API answers; 0 once calls in a row "
            "got no HTTP answer, while one call at a time asks it again.", registry=None)
        self.api_reachable.set(1)
        self._polling = False
        Info(PREFIX + "build", "Exporter version.", registry=r).info({"version": __version__})
        for kind in ("clients", "wabas", "channels"):
            self.discovered.labels(kind)

    def polling(self) -> None:
        """The poller runs: its gauges join the exposition."""
        if not self._polling:
            self._polling = True
            self.registry.register(self.api_reachable)

    def observe_request(self, endpoint: str, code: str, seconds: float) -> None:
        self.api_requests.labels(endpoint, code).inc()
        self.api_duration.labels(endpoint).observe(seconds)

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)


class PlanCollector(Collector):
    """Budget use and planned intervals, read from the poller when scraped (memory only)."""

    def __init__(
        self,
        budget_use: Callable[[], Iterable[tuple[str, str, float]]],
        intervals: Callable[[], Iterable[tuple[str, float]]],
    ) -> None:
        self._budget_use = budget_use
        self._intervals = intervals

    def collect(self) -> Iterable[GaugeMetricFamily]:
        use = GaugeMetricFamily(
            PREFIX + "budget_used_ratio",
            "Share of each rate-limit budget used in its current window; for per-channel scopes "
            "the busiest channel of the WABA.", labels=["scope", "waba_id"])
        for scope, waba, ratio in self._budget_use():
            use.add_metric([scope, waba], ratio)
        yield use
        interval = GaugeMetricFamily(
            PREFIX + "poll_interval_seconds",
            "Planned seconds between usage polls of the busiest channel of each WABA.",
            labels=["waba_id"])
        for waba, seconds in self._intervals():
            interval.add_metric([waba], seconds)
        yield interval

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
