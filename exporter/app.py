"""The one place that builds concrete objects: `build(settings, clock=, transport=)`.

Tests build the whole exporter on a FakeClock with an httpx transport that reaches the simulator
in process; `serve()` builds it on the system clock with real sockets.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from exporter import __version__
from exporter.api.client import PartnerApi
from exporter.clock import Clock, SystemClock
from exporter.config import Settings
from exporter.domain import Channel
from exporter.metrics.exposition import Exposition, Fragments, Versioned
from exporter.metrics.http import ScrapeAuth, metrics_app
from exporter.metrics.selfmetrics import PlanCollector, SelfMetrics
from exporter.polling.collector import UsageCollector
from exporter.polling.ledger import Ledger
from exporter.polling.markets import DestinationCollector
from exporter.polling.poller import Poller
from exporter.polling.sharding import ShardBudgets
from exporter.polling.store import Store
from exporter.preflight import bind_listener, prepare_state_path
from exporter.runtime import loopback_url, process_webhooks, refresh_exposition
from exporter.serving import cancel_and_wait, embedded_server, open_connections, url_of

# What only some modes use is imported where they build it: a start imports only what its
# mode runs (the webhook side alone is a tenth of the imports), and the first scrape after a
# restart waits for every import.
if TYPE_CHECKING:
    from exporter.backfill.runner import Backfill
    from exporter.demo import Demo
    from exporter.reconcile import Reconciler
    from exporter.webhooks.forwarder import Forwarder
    from exporter.webhooks.pool import WorkerPool
    from exporter.webhooks.receiver import WebhookReceiver
    from exporter.webhooks.state import ChannelLabel, WebhookState
    from exporter.webhooks.worker import WorkerConfig

log = structlog.get_logger("exporter")


@dataclass
class Exporter:
    settings: Settings
    clock: Clock
    store: Store
    metrics: SelfMetrics
    exposition: Exposition
    http_app: Starlette
    http_client: httpx.AsyncClient
    ledger: Ledger | None = None
    api: PartnerApi | None = None
    poller: Poller | None = None  # None in webhook-only mode
    webhooks: WebhookState | None = None
    webhook_app: WebhookReceiver | None = None
    forwarder: Forwarder | None = None
    forward_wake: asyncio.Event | None = None
    forward_client: httpx.AsyncClient | None = None
    reconciler: Reconciler | None = None
    backfill: Backfill | None = None

    def ready(self) -> bool:
        return self.poller is None or self.poller.discovered_once

    def not_ready_reason(self) -> str:
        return "" if self.poller is None else self.poller.not_ready_reason()

    async def aclose(self) -> None:
        await self.http_client.aclose()
        if self.forward_client is not None:
            await self.forward_client.aclose()
        if self.webhooks is not None:
            self.webhooks.close()
        if self.backfill is not None:
            self.backfill.history.close()
        self.store.close()


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    forward_transport: httpx.AsyncBaseTransport | None = None,
    mode: str = "polling the 360dialog Partner API",
) -> Exporter:
    clock = clock or SystemClock()
    store = Store(settings.state_path)
    metrics = SelfMetrics()
    data = CollectorRegistry(auto_describe=False)
    http_client = httpx.AsyncClient(
        transport=transport,
        timeout=settings.request_timeout_seconds,
        headers={"User-Agent": f"whatsapp-usage-exporter/{__version__}"},
        limits=httpx.Limits(max_connections=settings.max_concurrent_requests),
    )
    ledger = api = poller = backfill = None
    owns: Callable[[Channel], bool] = lambda _: True  # noqa: E731 - a default predicate
    if settings.polling_enabled:
        ledger, api, poller, backfill = _polling(settings, clock, http_client, store, metrics)
        owns = poller.selection.owns
        data.register(DestinationCollector(store, clock, settings.month_grace_seconds, owns))
        if backfill is not None:
            from exporter.backfill.collector import BackfillCollector  # noqa: PLC0415 - see top

            data.register(BackfillCollector(backfill))
    usage = UsageCollector(store, clock, settings.month_grace_seconds, owns)
    if settings.spend_budgets is not None:
        from exporter.spend.budgets import load_spend_budgets  # noqa: PLC0415 - see the top
        from exporter.spend.collector import SpendBudgetCollector  # noqa: PLC0415

        data.register(SpendBudgetCollector(load_spend_budgets(settings.spend_budgets),
                                           _polled_clients(store, owns)))
    parts: list[Fragments[Any]] = [usage]

    webhooks = webhook_app = forwarder = forward_wake = forward_client = reconciler = None
    if settings.webhooks_enabled:
        webhooks, webhook_app, forwarder, forward_wake, forward_client, reconciler = (
            _webhook_side(settings, clock, store, metrics, data=data, parts=parts,
                          polling=poller is not None, owns=owns,
                          forward_transport=forward_transport))

    sources: list[Versioned] = [s for s in (store, webhooks, reconciler) if s is not None]
    exposition = Exposition(data, metrics.registry, sources, parts=parts)
    exporter = Exporter(settings, clock, store, metrics, exposition,
                        metrics_app(exposition, lambda: False, mode), http_client, ledger, api,
                        poller, webhooks, webhook_app, forwarder, forward_wake,
                        forward_client, reconciler, backfill)
    history = None if backfill is None else _history(settings, store)
    exporter.http_app = metrics_app(exposition, exporter.ready, mode, _scrape_auth(settings),
                                    metrics.scrapes_unauthorized.inc, history=history,
                                    not_ready=exporter.not_ready_reason)
    return exporter


def _webhook_side(
    settings: Settings, clock: Clock, store: Store, metrics: SelfMetrics, *,
    data: CollectorRegistry, parts: list[Fragments[Any]], polling: bool,
    owns: Callable[[Channel], bool], forward_transport: httpx.AsyncBaseTransport | None,
) -> tuple[WebhookState, WebhookReceiver, Forwarder | None, asyncio.Event | None,
           httpx.AsyncClient | None, Reconciler | None]:
    """The webhook state and receiver, forwarding and reconciliation when set, their
    collectors registered (into `data` and `parts`). Imported here: see the top."""
    from exporter.reconcile import Reconciler, ReconciliationCollector  # noqa: PLC0415
    from exporter.webhooks.collector import WebhookCollector  # noqa: PLC0415
    from exporter.webhooks.forwarder import Forwarder  # noqa: PLC0415
    from exporter.webhooks.ratecard import load_rate_card  # noqa: PLC0415
    from exporter.webhooks.receiver import WebhookAuth  # noqa: PLC0415
    from exporter.webhooks.receiver import webhook_app as receiver_app  # noqa: PLC0415
    from exporter.webhooks.state import WebhookState  # noqa: PLC0415

    forwarder = forward_wake = forward_client = reconciler = None
    card = load_rate_card(settings.webhook_rate_card) if settings.webhook_rate_card else None
    forwarding = settings.webhook_forward_url is not None
    webhooks = WebhookState(
        settings.state_path,
        channel_of=_channel_lookup(store),
        max_unmapped_channels=settings.webhook_max_unmapped_channels,
        dedupe_window_seconds=settings.webhook_dedupe_window_seconds,
        rate_card=card,
        forwarding=forwarding,
    )
    parts.append(WebhookCollector(webhooks))
    if polling:
        reconciler = Reconciler(
            store, webhooks, clock, month_grace=settings.month_grace_seconds,
            card_currency=card.currency if card else None, owns=owns,
            min_messages=settings.webhook_reconcile_min_messages)
        data.register(ReconciliationCollector(reconciler))
    state = webhooks
    metrics.webhook_inbox.set_function(lambda: state.pending)
    metrics.webhook_dead_letters.set_function(lambda: state.dead)
    if webhooks.outbox is not None and settings.webhook_forward_url is not None:
        outbox = webhooks.outbox
        forward_wake = asyncio.Event()
        forward_client = httpx.AsyncClient(
            transport=forward_transport,
            headers={"User-Agent": f"whatsapp-usage-exporter/{__version__}"},
            limits=httpx.Limits(max_connections=settings.webhook_forward_concurrency))
        forwarder = Forwarder(
            outbox, forward_client, settings.webhook_forward_url, clock,
            forwards=metrics.webhook_forwards, lag=metrics.webhook_forward_lag,
            concurrency=settings.webhook_forward_concurrency,
            max_age_seconds=settings.webhook_forward_max_age_seconds,
            timeout_seconds=settings.webhook_forward_timeout_seconds)
        metrics.webhook_outbox.set_function(lambda: outbox.depth)
        metrics.webhook_outbox_age.set_function(
            lambda: 0.0 if outbox.oldest_received_at is None
            else max(0.0, clock.now() - outbox.oldest_received_at))
    receiving = _receiver_config(settings)
    auth = WebhookAuth(header=receiving.header, secret=receiving.secret,
                       hmac_secret=receiving.hmac_secret)
    webhook_app = receiver_app(
        webhooks, auth, metrics.webhook_requests, now=clock.now,
        max_body_bytes=receiving.max_body_bytes,
        read_timeout_seconds=receiving.read_timeout_seconds,
        forward_headers=receiving.forward_headers, on_accept=_waker(forward_wake))
    return webhooks, webhook_app, forwarder, forward_wake, forward_client, reconciler


def _history(settings: Settings, store: Store) -> Callable[[], Iterator[str]]:
    """`/backfill`'s body: the fetched past in the state file, as OpenMetrics."""
    from exporter.backfill.openmetrics import from_state  # noqa: PLC0415 - see the top

    return lambda: from_state(settings.state_path, store.channels, {})


def _polling(settings: Settings, clock: Clock, http_client: httpx.AsyncClient, store: Store,
             metrics: SelfMetrics) -> tuple[Ledger, PartnerApi, Poller, Backfill | None]:
    """The ledger, the API client, the poller, and backfill when history is asked for."""
    if settings.partner_id is None:
        raise ValueError("polling needs D360_PARTNER_ID and credentials")
    budgets = ShardBudgets.from_settings(settings)
    ledger = Ledger(budgets.ledger_limits())
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
    metrics.add(PlanCollector(poller.budget_use, poller.waba_intervals))
    backfill = None
    if settings.backfill_months:
        from exporter.backfill.history import History  # noqa: PLC0415 - see the top
        from exporter.backfill.runner import Backfill  # noqa: PLC0415

        backfill = Backfill(
            api=api, store=store, ledger=ledger, history=History(settings.state_path),
            clock=clock, live=poller, months=settings.backfill_months,
            usage_channel=budgets.usage_channel, usage_waba=budgets.usage_waba,
            balance_shares_usage=settings.channel_balance_shares_usage_budget)
    return ledger, api, poller, backfill


def _scrape_auth(settings: Settings) -> ScrapeAuth:
    token = settings.metrics_bearer_token
    user, password = settings.metrics_basic_auth_username, settings.metrics_basic_auth_password
    return ScrapeAuth(
        bearer_token=token.get_secret_value() if token else None,
        basic=(user, password.get_secret_value()) if user is not None and password else None)


def _channel_lookup(store: Store) -> Callable[[str], ChannelLabel | None]:
    """Phone digits -> the polled series' labels, rebuilt when discovery changes."""
    from exporter.webhooks.state import ChannelLabel, digits  # noqa: PLC0415 - see the top

    cache: dict[str, ChannelLabel] = {}
    seen = {"channels": -1}

    def lookup(phone_digits: str) -> ChannelLabel | None:
        if seen["channels"] != id(store.channels):
            cache.clear()
            cache.update({digits(ch.phone_number): ChannelLabel(ch.waba_label, ch.id)
                          for ch in store.channels.values() if ch.phone_number})
            seen["channels"] = id(store.channels)
        return cache.get(phone_digits) if phone_digits else None

    return lookup


def _polled_clients(store: Store, owns: Callable[[Channel], bool]) -> Callable[[], set[str]]:
    """The clients this replica polls (for the default spend budget), rebuilt when discovery
    changes."""
    cache: dict[str, set[str]] = {"clients": set()}
    seen = {"channels": -1}

    def clients() -> set[str]:
        if seen["channels"] != id(store.channels):
            cache["clients"] = {ch.client_id for ch in store.channels.values() if owns(ch)}
            seen["channels"] = id(store.channels)
        return cache["clients"]

    return clients


def _receiver_config(settings: Settings) -> WorkerConfig:
    """What the webhook receiver takes from the settings, in this process or in a worker."""
    from exporter.webhooks.worker import WorkerConfig  # noqa: PLC0415 - see the top

    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    hmac_secret = (settings.webhook_hmac_secret.get_secret_value()
                   if settings.webhook_hmac_secret else None)
    forwarding = settings.webhook_forward_url is not None
    return WorkerConfig(
        header=settings.webhook_secret_header, secret=secret, hmac_secret=hmac_secret,
        max_body_bytes=settings.webhook_max_body_bytes,
        read_timeout_seconds=settings.webhook_read_timeout_seconds,
        forward_headers=tuple(settings.webhook_forward_headers) if forwarding else None,
        log_format=settings.log_format, log_level=settings.log_level,
        secrets=tuple(s for s in (secret, hmac_secret) if s))


def _waker(wake: asyncio.Event | None) -> Callable[[], None]:
    """What an accepted delivery does: wake the forwarder, if there is one."""
    return wake.set if wake is not None else lambda: None


def _worker_pool(exporter: Exporter, listener: socket.socket) -> WorkerPool:
    """Webhook worker processes on the bound socket, counting into this process's state."""
    from exporter.webhooks.pool import WorkerPool  # noqa: PLC0415 - see the top

    assert exporter.webhooks is not None
    return WorkerPool(exporter.webhooks, _receiver_config(exporter.settings), listener,
                      exporter.metrics.webhook_requests, workers=exporter.settings.webhook_workers,
                      now=exporter.clock.now, on_accept=_waker(exporter.forward_wake),
                      restarts_total=exporter.metrics.webhook_worker_restarts)


def _build_for_life(settings: Settings, mode: str) -> Exporter:
    """`build`, for a process: everything it loads (at fleet scale, hundreds of thousands of
    objects from the state file) lives as long as the process. No collection while it loads
    (they found nothing and cost 4% of the start-up's instructions); afterwards it is kept out
    of the collector's full passes, which otherwise stalled the event loop for tens of
    milliseconds under a webhook stream."""
    gc.disable()
    try:
        return build(settings, mode=mode)
    finally:
        gc.freeze()
        gc.enable()


async def serve(settings: Settings) -> None:
    """Run the exporter until SIGINT/SIGTERM: demo simulator if asked, HTTP server, poller.

    The listeners are bound and the state path prepared before anything else runs, so a port
    in use, a host that does not resolve or an unusable state path ends the start with one
    `ConfigError` line naming the setting, before the demo or the state are loaded."""
    listener = bind_listener("D360_LISTEN_ADDRESS", settings.listen_address, settings.listen)
    webhook_socket: socket.socket | None = None
    try:
        if settings.webhooks_enabled:
            webhook_socket = bind_listener("D360_WEBHOOK_LISTEN_ADDRESS",
                                           settings.webhook_listen_address,
                                           settings.webhook_listen)
        prepare_state_path(settings.state_path)
        await _serve_on(settings, listener, webhook_socket)
    finally:
        for sock in (listener, webhook_socket):
            if sock is not None:
                sock.close()  # a no-op for a socket its server has closed


async def _start(settings: Settings) -> tuple[Settings, Exporter, Demo | None, str]:
    """The demo's simulator if this is the demo, then the exporter built on it."""
    if settings.mode != "demo":
        mode = ("webhook-only: counting webhooks, no Partner API polling"
                if settings.mode == "webhook-only" else "polling the 360dialog Partner API")
        return settings, _build_for_life(settings, mode), None, mode
    from exporter.demo import MODE, Demo  # noqa: PLC0415 - loads the simulator: demo only

    settings, demo = await Demo.start(settings)
    try:
        return settings, _build_for_life(settings, MODE), demo, MODE
    except BaseException:
        await demo.stop()
        raise


async def _after_first_rendering(exporter: Exporter, tasks: list[asyncio.Task[None]]) -> None:
    """Render the state file's series once, then start the poller and backfill (into `tasks`,
    which the server's shutdown cancels). Their first calls need not precede the first
    scrape, which after a restart would otherwise share the process with them while the
    fleet renders; a scrape meanwhile waits for this rendering and serves it."""
    try:
        await exporter.exposition.awarm()
    except Exception:
        log.exception("exposition_refresh_failed")  # the scrape renders it instead
    if exporter.poller is not None:
        tasks.append(asyncio.create_task(exporter.poller.run(), name="poller"))
    if exporter.backfill is not None:
        tasks.append(asyncio.create_task(exporter.backfill.run(), name="backfill"))


async def _serve_on(settings: Settings, listener: socket.socket,
                    webhook_socket: socket.socket | None) -> None:
    settings, exporter, demo, mode = await _start(settings)
    servers = [(embedded_server(exporter.http_app), listener)]
    tasks = [asyncio.create_task(refresh_exposition(exporter.exposition), name="exposition")]
    tasks.append(asyncio.create_task(_after_first_rendering(exporter, tasks), name="start"))
    pool = None
    if exporter.webhook_app is not None and exporter.webhooks is not None:
        assert webhook_socket is not None, "bound whenever the settings enable webhooks"
        if settings.webhook_workers:
            pool = _worker_pool(exporter, webhook_socket)
            await pool.start()
        else:
            webhook_server = embedded_server(exporter.webhook_app)
            exporter.webhook_app.watch(open_connections(webhook_server))
            servers.append((webhook_server, webhook_socket))
        tasks.append(asyncio.create_task(
            process_webhooks(exporter.webhooks, exporter.reconciler, exporter.clock),
            name="webhooks"))
        if settings.webhook_open and not (settings.webhook_secret or settings.webhook_hmac_secret):
            log.warning("webhooks_open", note="D360_WEBHOOK_OPEN=true: anyone who can reach "
                        "the webhook port can move the counters")
    if exporter.forwarder is not None and exporter.forward_wake is not None:
        tasks.append(asyncio.create_task(exporter.forwarder.run(exporter.forward_wake),
                                         name="forwarder"))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    log.info("exporter_started", version=__version__, mode=mode,
             listen=url_of(servers[0][1]),
             webhook_listen=url_of(webhook_socket) if webhook_socket is not None else "",
             webhook_workers=settings.webhook_workers if pool is not None else 0,
             state_path=str(settings.state_path), channels_known=len(exporter.store.channels),
             shard=f"{settings.shard_index}/{settings.shard_count}")
    if demo is not None and webhook_socket is not None:
        demo.send_webhooks(settings, loopback_url(webhook_socket))
    try:
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
    finally:
        if pool is not None:
            await pool.stop()
        await cancel_and_wait(*tasks)
        await exporter.aclose()
        if demo is not None:
            await demo.stop()
        log.info("exporter_stopped")
