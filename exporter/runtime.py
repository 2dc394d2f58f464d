"""The exporter's long-running loops besides the poller, and the process's socket helpers.

`app.serve()` starts them; each takes what it works on as arguments, so tests drive them alone.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from typing import TYPE_CHECKING

import structlog

from exporter.clock import Clock
from exporter.metrics.exposition import Exposition
from exporter.serving import url_of

if TYPE_CHECKING:  # the webhook side: imported only where webhooks are counted (see app.py)
    from exporter.reconcile import Reconciler
    from exporter.webhooks.state import WebhookState

log = structlog.get_logger("exporter")


async def process_webhooks(state: WebhookState, reconciler: Reconciler | None,
                           clock: Clock) -> None:
    """Count the inbox rows an earlier build left uncounted, then pair new polls with the
    webhook counts for reconciliation about once a second, and prune dedupe keys hourly.
    Deliveries themselves are counted as they are accepted."""
    next_prune = 0.0
    while state.pending:
        # Batches of 100 (about 10 ms), then a chance for the request path to run: this is
        # synchronous I/O, and a longer batch is a longer wait for every request meanwhile.
        try:
            state.process_pending(clock.now(), limit=100)
        except sqlite3.Error:
            log.exception("webhook_store_failed")  # e.g. a full disk: rows wait, try again
            await asyncio.sleep(1.0)
        await asyncio.sleep(0)
    while True:
        if reconciler is not None:
            reconciler.observe()
        if clock.now() >= next_prune:
            state.prune(clock.now())
            next_prune = clock.now() + 3600
        await asyncio.sleep(1.0)


async def refresh_exposition(exposition: Exposition) -> None:
    """Render what changed between scrapes, off the scrape path (see Exposition.refresh)."""
    while True:
        await asyncio.sleep(exposition.refresh_interval())
        try:
            await exposition.arefresh()
        except Exception:
            log.exception("exposition_refresh_failed")  # the scrape renders it instead


def loopback_url(sock: socket.socket) -> str:
    """Where a process reaches its own listener (0.0.0.0 and :: are not addresses to call)."""
    url = url_of(sock)
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
