"""Meta Cloud API webhooks for the simulated traffic, and the sender that pushes them.

`webhook_bodies(fleet, a, b)` turns exactly the messages and calls that `traffic.py` counts in
[a, b) into webhook bodies: message `i` of (channel, UTC day, stream) is sent in the slice where
the day's cumulative count passes `i`, so adjacent ranges never repeat or skip one, and a
receiver's counts equal what the usage endpoint reports for the same range.

`WebhookEmitter` is the thin async shell: every `interval` it generates the bodies since its
last tick, queues them as bytes and POSTs them in order. A failed body stays at the head of the
queue and is retried next tick, like Meta's own retries, so nothing is lost or reordered.

Shapes follow sections 5-6 of the reference (envelope, `statuses[].pricing`, `calls[]` with
`connect`/`terminate`). Like the rest of the simulator this never imports `exporter.webhooks`,
so the receiver and the sender cannot share a misreading of the format.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from functools import lru_cache
from typing import Any

import httpx
import structlog

from exporter.simulator.fleet import MARKETS, Fleet, SimChannel, unit
from exporter.simulator.traffic import DAY, DIRECTIONS, STREAMS, _day_slices, call_duration

log = structlog.get_logger("exporter.simulator")

# ISO country -> (calling code, digits after the code)
_MARKET_OF = {country: (code, digits) for code, country, digits in MARKETS}
# Distinct recipients per channel: people come back, so numbers repeat across messages.
_CONTACTS = 1_000
_READ_SHARE = 0.5
# A stand-in SDP offer: receivers ignore it, but the `connect` shape carries a session.
_SDP_OFFER = {"sdp_type": "offer", "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\n"}


def digits_of(phone_number: str) -> str:
    """A phone number as webhooks write it: digits only, no plus."""
    return "".join(c for c in phone_number if c.isdigit())


@lru_cache(maxsize=4_096)
def phone_number_id(seed: int, channel_id: str) -> str:
    """The Meta phone-number id of a channel: 15 digits, stable per (seed, channel)."""
    return str(100_000_000_000_000 + int(unit(seed, "phone_number_id", channel_id) * 9e14))


@lru_cache(maxsize=200_000)
def _contact(seed: int, channel_id: str, country: str, index: int) -> str:
    code, digits = _MARKET_OF[country]
    low = 10 ** (digits - 1)
    return code + str(low + int(unit(seed, "contact", channel_id, index) * 9 * low))


def recipient(seed: int, ch: SimChannel, key: float) -> str:
    """A customer number in the channel's own market, picked by `key` in [0, 1): the rate card
    prices by the recipient's calling code, and the usage endpoint prices by the channel's."""
    return _contact(seed, ch.id, ch.country, int(key * 1_000_003) % _CONTACTS)


def _last_second(start: float, end: float) -> int:
    """The last whole second of the slice [start, end)."""
    return max(int(start), math.ceil(end) - 1)


def _spread(start: float, end: float, count: int) -> Iterator[int]:
    """`count` whole-second timestamps evenly inside [start, end); with integer day bounds each
    stays inside the day that holds `start`."""
    step = (end - start) / count
    last = _last_second(start, end)
    for k in range(count):
        yield min(int(start + (k + 0.5) * step), last)


def _statuses(seed: int, ch: SimChannel, a: float, b: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for category, pricing_type, mean in STREAMS:
        stream = f"{category}/{pricing_type}"
        pricing = {"billable": pricing_type == "REGULAR", "pricing_model": "PMP",
                   "type": pricing_type.lower(), "category": category.lower()}
        for day, first, upper in _day_slices(seed, ch, stream, mean, a, b):
            if upper <= first:
                continue
            start, end = max(a, day), min(b, day + DAY)
            last = _last_second(start, end)
            prefix = f"wamid.SIM.{ch.id}.{day}.{category}.{pricing_type}."
            for i, ts in zip(range(first, upper), _spread(start, end, upper - first),
                             strict=True):
                wamid = prefix + str(i)
                key = unit(seed, wamid)
                to = recipient(seed, ch, key)
                out.append({"id": wamid, "status": "sent", "timestamp": str(ts),
                            "recipient_id": to, "pricing": pricing})
                out.append({"id": wamid, "status": "delivered",
                            "timestamp": str(min(ts + 1, last)), "recipient_id": to,
                            "pricing": pricing})
                if key < _READ_SHARE:
                    out.append({"id": wamid, "status": "read",
                                "timestamp": str(min(ts + 2, last)), "recipient_id": to,
                                "pricing": pricing})
    return out


def _calls(seed: int, ch: SimChannel, a: float, b: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    business = digits_of(ch.phone_number)
    for direction, mean in DIRECTIONS:
        for day, first, upper in _day_slices(seed, ch, direction, mean, a, b):
            if upper <= first:
                continue
            start, end = max(a, day), min(b, day + DAY)
            for i, ts in zip(range(first, upper), _spread(start, end, upper - first),
                             strict=True):
                call_id = f"wacid.SIM.{ch.id}.{day}.{direction}.{i}"
                customer = recipient(seed, ch, unit(seed, call_id))
                caller, callee = ((business, customer) if direction == "BUSINESS_INITIATED"
                                  else (customer, business))
                duration = call_duration(seed, ch.id, day, direction, i)
                out.append({"id": call_id, "from": caller, "to": callee, "event": "connect",
                            "direction": direction, "timestamp": str(ts),
                            "session": dict(_SDP_OFFER)})
                # The call counts on the day it started, as the usage endpoint counts it.
                out.append({"id": call_id, "from": caller, "to": callee, "event": "terminate",
                            "direction": direction, "status": "COMPLETED",
                            "duration": duration, "timestamp": str(ts),
                            "start_time": str(ts), "end_time": str(ts + duration)})
    return out


def _envelopes(seed: int, ch: SimChannel, field: str, items: list[dict[str, Any]], *,
               max_items: int) -> Iterator[dict[str, Any]]:
    key = "statuses" if field == "messages" else "calls"
    metadata = {"display_phone_number": digits_of(ch.phone_number),
                "phone_number_id": phone_number_id(seed, ch.id)}
    for n in range(0, len(items), max_items):
        yield {"object": "whatsapp_business_account", "entry": [{
            "id": ch.waba_external_id,
            "changes": [{"field": field, "value": {
                "messaging_product": "whatsapp", "metadata": dict(metadata),
                key: items[n:n + max_items]}}]}]}


def webhook_bodies(fleet: Fleet, a: float, b: float, *,
                   max_items: int = 100) -> list[dict[str, Any]]:
    """Every message status and call event the traffic model puts in [a, b), as webhook bodies:
    one or more per channel and field, each with at most `max_items` statuses or calls.

    The statuses of one stream share their `pricing` object (a day of the fleet is close to a
    million statuses): treat the bodies as read-only, they are meant to be serialised."""
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}")
    bodies: list[dict[str, Any]] = []
    if b <= a:
        return bodies
    for ch in fleet.channels():
        if ch.activity == 0:
            continue
        bodies.extend(_envelopes(fleet.seed, ch, "messages", _statuses(fleet.seed, ch, a, b),
                                 max_items=max_items))
        bodies.extend(_envelopes(fleet.seed, ch, "calls", _calls(fleet.seed, ch, a, b),
                                 max_items=max_items))
    return bodies


def signature(secret: str, raw: bytes) -> str:
    """Meta's `X-Hub-Signature-256` value: HMAC-SHA256 of the exact raw body."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


class WebhookEmitter:
    """Pushes the simulated traffic to a webhook URL, in order, retrying failures next tick."""

    def __init__(
        self,
        fleet: Fleet,
        clock: Callable[[], float],
        url: str,
        client: httpx.AsyncClient,
        *,
        hmac_secret: str | None = None,
        secret_header: tuple[str, str] | None = None,
        interval: float = 5.0,
        start: float | None = None,
        max_queue: int = 10_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self._fleet = fleet
        self._clock = clock
        self._url = url
        self._client = client
        self._hmac_secret = hmac_secret
        self._secret_header = secret_header
        self._interval = interval
        self._sleep = sleep
        self._max_queue = max_queue
        self._last = clock() if start is None else start
        self._queue: deque[bytes] = deque()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def covered_until(self) -> float:
        """The end of the range already turned into bodies (queued or sent)."""
        return self._last

    async def run(self) -> None:
        # The host only: a query string could carry a token.
        log.info("webhook_emitter_started", host=httpx.URL(self._url).host,
                 interval=self._interval,
                 signed=self._hmac_secret is not None)
        while True:
            await self.tick()
            await self._sleep(self._interval)

    async def tick(self) -> None:
        """Queue the bodies for [last tick, now), then deliver the queue in order."""
        now = self._clock()
        # A clock that steps back generates nothing until it passes the last tick again, so no
        # message is ever generated twice.
        if now > self._last:
            for body in webhook_bodies(self._fleet, self._last, now):
                self._enqueue(json.dumps(body, separators=(",", ":")).encode())
            self._last = now
        await self._deliver()

    def _enqueue(self, raw: bytes) -> None:
        self._queue.append(raw)
        if len(self._queue) > self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1_000 == 0:
                log.warning("webhook_queue_full", dropped=self.dropped, max_queue=self._max_queue)

    def _headers(self, raw: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._hmac_secret is not None:
            headers["X-Hub-Signature-256"] = signature(self._hmac_secret, raw)
        if self._secret_header is not None:
            name, value = self._secret_header
            headers[name] = value
        return headers

    async def _deliver(self) -> None:
        sent_before = self.sent
        while self._queue:
            raw = self._queue[0]
            try:
                response = await self._client.post(self._url, content=raw,
                                                   headers=self._headers(raw))
            except httpx.HTTPError as exc:
                # The exception text can carry the URL; the type is enough to act on.
                self.failed += 1
                log.warning("webhook_delivery_failed", error=type(exc).__name__,
                            pending=self.pending)
                return
            if not response.is_success:
                self.failed += 1
                log.warning("webhook_delivery_failed", status=response.status_code,
                            pending=self.pending)
                return
            self._queue.popleft()
            self.sent += 1
        if self.sent > sent_before:
            log.debug("webhooks_delivered", count=self.sent - sent_before, total=self.sent)
