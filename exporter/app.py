"""The one place that builds concrete objects: `build(settings, clock=, transport=)`.

Tests build the whole exporter on a FakeClock with an httpx transport that reaches the simulator
in process; `serve()` builds it on the system clock with real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.applications import Starlette

from exporter import __version__
from exporter.api.client import PartnerApi
from exporter.budget import Ledger
from exporter.clock import Clock, SystemClock, to_ms
from exporter.collector import UsageCollector
from exporter.config import Settings
from exporter.exposition import Exposition
from exporter.http import metrics_app
from exporter.poller import Poller, ShardBudgets
from exporter.selfmetrics import PlanCollector, SelfMetrics
from exporter.serving import bind_socket, embedded_server, url_of
from exporter.store import Store

log = structlog.get_logger("exporter")

DEMO_STATE_PATH = Path("whatsapp-usage-exporter-demo.sqlite3")


@dataclass
class Exporter:
    settings: Settings
    clock: Clock
    store: Store
    ledger: Ledger
    http_client: httpx.AsyncClient
    api: PartnerApi
    poller: Poller
    metrics: SelfMetrics
    exposition: Exposition
    http_app: Starlette

    def ready(self) -> bool:
        return self.poller.discovered_once

    async def aclose(self) -> None:
        await self.http_client.aclose()
        self.store.close()


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    mode: str = "polling the 360dialog Partner API",
) -> Exporter:
    clock = clock or SystemClock()
    if settings.partner_id is None:
        raise ValueError("build() needs D360_PARTNER_ID and credentials; demo mode sets them")
    budgets = ShardBudgets.from_settings(settings)
    store = Store(settings.state_path)
    ledger = Ledger(budgets.ledger_limits())
    metrics = SelfMetrics()
    http_client = httpx.AsyncClient(
        transport=transport,
        timeout=settings.request_timeout_seconds,
        headers={"User-Agent": f"whatsapp-usage-exporter/{__version__}"},
        limits=httpx.Limits(max_connections=settings.max_concurrent_requests),
    )
    api = PartnerApi(
        http_client,
        base_url=settings.api_url,
        partner_id=settings.partner_id,
        clock=clock,
        api_key=settings.api_key,
        username=settings.username,
        password=settings.password,
        granularity=settings.usage_granularity,
        observer=metrics.observe_request,
    )
    poller = Poller(api=api, store=store, ledger=ledger, clock=clock, settings=settings,
                    budgets=budgets, metrics=metrics)
    data = CollectorRegistry(auto_describe=False)
    data.register(UsageCollector(store, clock, settings.month_grace_seconds, poller.selection.owns))
    metrics.add(PlanCollector(lambda: _budget_use(poller, ledger, clock), poller.waba_intervals))
    exposition = Exposition(data, metrics.registry, lambda: store.version)
    exporter = Exporter(settings, clock, store, ledger, http_client, api, poller, metrics,
                        exposition, metrics_app(exposition, lambda: False, mode))
    exporter.http_app = metrics_app(exposition, exporter.ready, mode)
    return exporter


def _budget_use(poller: Poller, ledger: Ledger, clock: Clock) -> list[tuple[str, str, float]]:
    from exporter import budget  # noqa: PLC0415 - kept local: only the scrape path needs it

    now_ms = to_ms(clock.now())
    rows: list[tuple[str, str, float]] = []
    for waba, channel_ids in poller.wabas().items():
        label = poller.waba_label(waba)
        rows.append((budget.USAGE_WABA, label,
                     ledger.max_used_ratio(budget.USAGE_WABA, [waba], now_ms)))
        rows.append((budget.USAGE_CHANNEL, label,
                     ledger.max_used_ratio(budget.USAGE_CHANNEL, channel_ids, now_ms)))
    for kind, key in ((budget.CLIENT_BALANCE, "partner"), (budget.PARTNER_BALANCE, "partner"),
                      (budget.DISCOVERY, "partner")):
        with contextlib.suppress(KeyError):
            rows.append((kind, "", ledger.max_used_ratio(kind, [key], now_ms)))
    return rows


async def serve(settings: Settings) -> None:
    """Run the exporter until SIGINT/SIGTERM: demo simulator if asked, HTTP server, poller."""
    simulator = None
    mode = "polling the 360dialog Partner API"
    if settings.demo:
        from exporter.simulator.app import SimulatedApi  # noqa: PLC0415 - demo only
        from exporter.simulator.fleet import build_fleet  # noqa: PLC0415
        from exporter.simulator.server import start_server  # noqa: PLC0415

        fleet = build_fleet(settings.demo_seed)
        sim = SimulatedApi(fleet, SystemClock().now)
        simulator = await start_server(sim)
        update: dict[str, object] = {
            "api_url": simulator.url + "/api/v2",
            "partner_id": fleet.partner_id,
            "api_key": SecretStr(sim.api_key),
            "username": None,
            "password": None,
        }
        if "state_path" not in settings.model_fields_set:
            update["state_path"] = DEMO_STATE_PATH
        settings = settings.model_copy(update=update)
        mode = "DEMO MODE: polling a built-in simulated 360dialog API with made-up data"
        log.warning("demo_mode", simulator_url=simulator.url, channels=len(fleet.channels()),
                    note="no Partner API credentials given; the numbers are simulated")

    exporter = build(settings, mode=mode)
    host, port = settings.listen
    sock = bind_socket(host, port)
    server = embedded_server(exporter.http_app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    log.info("exporter_started", version=__version__, listen=url_of(sock),
             state_path=str(settings.state_path), channels_known=len(exporter.store.channels),
             shard=f"{settings.shard_index}/{settings.shard_count}")
    poller_task = asyncio.create_task(exporter.poller.run(), name="poller")
    try:
        await server.serve(sockets=[sock])
    finally:
        poller_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller_task
        await exporter.aclose()
        if simulator is not None:
            await simulator.stop()
        log.info("exporter_stopped")
