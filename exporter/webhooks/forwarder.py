"""Forwarding: every accepted webhook body, unchanged, to the user's own application.

A channel has one webhook URL; pointing it at the exporter must not cost the application its
events. Bodies come from the durable outbox, so an outage downstream or a crash here loses
nothing: a failed delivery waits with exponential backoff (and honours `Retry-After`) and is
retried until it succeeds or is older than the maximum age, when it is dropped and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Histogram

from exporter import retry
from exporter.clock import Clock
from exporter.serving import cancel_and_wait
from exporter.webhooks.outbox import Outbox, Parcel

log = structlog.get_logger("exporter.webhooks")

RESULTS = ("delivered", "failed", "expired")
DELIVERY_ID_HEADER = "X-Webhook-Delivery-Id"


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        client: httpx.AsyncClient,
        url: str,
        clock: Clock,
        *,
        forwards: Counter,
        lag: Histogram,
        concurrency: int = 4,
        max_age_seconds: float = 7 * 86_400,
        timeout_seconds: float = 10.0,
        backoff_seconds: tuple[float, float] = (1.0, 300.0),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._url = url
        self._clock = clock
        self._forwards = forwards
        self._lag = lag
        self._concurrency = concurrency
        self._max_age = max_age_seconds
        self._timeout = timeout_seconds
        self._backoff = backoff_seconds
        self._jitter = jitter
        for result in RESULTS:
            forwards.labels(result)

    async def run(self, wake: asyncio.Event) -> None:
        """Deliver what is due; sleep until the next row is due or a new one arrives."""
        while True:
            wake.clear()
            if await self.deliver_due():
                continue
            next_due = self._outbox.next_due()
            delay = 5.0 if next_due is None else min(5.0, next_due - self._clock.now())
            if delay > 0:
                await _first_of(wake.wait(), self._clock.sleep(delay))

    async def deliver_due(self) -> int:
        """One round: send up to a few batches' worth of due bodies at once; return how many."""
        parcels = self._outbox.due(self._clock.now(), self._concurrency * 4)
        if not parcels:
            return 0
        gate = asyncio.Semaphore(self._concurrency)

        async def send(parcel: Parcel) -> tuple[str, float]:
            async with gate:
                return await self._send(parcel)

        outcomes = await asyncio.gather(*(send(p) for p in parcels))
        now = self._clock.now()
        for parcel, (error, retry_after) in zip(parcels, outcomes, strict=True):
            if not error:
                self._outbox.remove(parcel.id)
                self._forwards.labels("delivered").inc()
                self._lag.observe(max(0.0, now - parcel.received_at))
            elif now - parcel.received_at >= self._max_age:
                self._outbox.remove(parcel.id)
                self._forwards.labels("expired").inc()
                log.error("webhook_forward_expired", delivery=parcel.id, attempts=parcel.attempts,
                          error=error)
            else:
                self._forwards.labels("failed").inc()
                self._outbox.retry_at(parcel.id, now + self._delay(parcel.attempts, retry_after),
                                      error)
                if parcel.attempts == 0:
                    log.warning("webhook_forward_failed", delivery=parcel.id, error=error)
        self._outbox.refresh()
        return len(parcels)

    def _delay(self, attempts: int, retry_after: float) -> float:
        low, high = self._backoff
        # `attempts` counts the failures before this one; the jitter spreads a recovering
        # application's load.
        backoff = retry.backoff(attempts + 1, low, high) * (0.5 + self._jitter() / 2)
        return min(high, max(backoff, retry_after))

    async def _send(self, parcel: Parcel) -> tuple[str, float]:
        """'' on success, else a short reason and the server's Retry-After (0 if none)."""
        headers = parcel.headers | {
            DELIVERY_ID_HEADER: hashlib.sha256(parcel.body).hexdigest()[:32]}
        try:
            response = await self._client.post(self._url, content=parcel.body, headers=headers,
                                               timeout=self._timeout)
        except httpx.HTTPError as exc:
            return type(exc).__name__, 0.0
        if 200 <= response.status_code < 300:
            return "", 0.0
        seconds = retry.retry_after_seconds(response.headers.get("retry-after")) or 0.0
        return f"HTTP {response.status_code}", min(seconds, self._backoff[1])


async def _first_of(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*tasks)
