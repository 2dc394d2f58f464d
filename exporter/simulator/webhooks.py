"""Meta Cloud API webhooks for the simulated traffic, and the sender that pushes them.

`webhook_bodies(fleet, a, b)` turns exactly the messages and calls that `traffic.py` counts in
[a, b) into webhook bodies: message `i` of (channel, UTC day, stream) is sent in the slice where
the day's cumulative count passes `i`, so adjacent ranges never repeat or skip one, and a
receiver's counts equal what the usage endpoint reports for the same range.

`WebhookEmitter` is the thin async shell: every `interval` it generates the bodies since its
last tick, queues them as bytes and POSTs them in order. A failed body stays at the head of the
queue and is retried next tick, like Meta's own retries, so nothing is lost or reordered.

Shapes follow the documented payloads in `tests/fixtures/webhooks/` (each names its page):
- every message has `sent` and `delivered` with `pricing` and, for half of them, `read` without
  it (v24: pricing comes with `sent` and one of delivered/read); for a few, `delivered` is
  skipped and `read` carries the pricing (Meta skips it when both happen together);
- statuses name the recipient's business-scoped user id (`recipient_user_id`) beside the phone;
- business-initiated calls have RINGING and ACCEPTED call statuses (`field: "calls"`,
  `statuses[]` of `type: "call"`) before their connect and terminate.
- from 2026-10-01, service messages and utility messages inside the customer service window
  are charged: their pricing says `billable: true, type: "regular"` (as the usage endpoint then
  reports them REGULAR, with a cost).
`Shapes` picks the mix; by default (`ALL_SHAPES`) it also holds group messages, whose every
participant's delivery is one message of the stream and one charge, and recipients known only
by BSUID (no `recipient_id`, no call `to`); `Shapes()` is the plain mix without them. Either way,
the usage endpoint's volumes equal the number of distinct (wamid, participant) pairs with
pricing on delivered or read.

Like the rest of the simulator this never imports `exporter.webhooks`, so the receiver and the
sender cannot share a misreading of the format.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
import structlog

from exporter.simulator.fleet import MARKETS, Fleet, SimChannel, unit
from exporter.simulator.traffic import (
    DAY,
    DIRECTIONS,
    STREAMS,
    _day_slices,
    call_duration,
    pricing_type_at,
)

log = structlog.get_logger("exporter.simulator")

# ISO country -> (calling code, digits after the code)
_MARKET_OF = {country: (code, digits) for code, country, digits in MARKETS}
# Distinct recipients per channel: people come back, so numbers repeat across messages.
_CONTACTS = 1_000
_READ_SHARE = 0.5
# Of the read messages, this share has no `delivered`: read carries the pricing.
_SKIPPED_DELIVERED_SHARE = 0.05
# Shapes options: the share of group messages (per group of indices) and of BSUID-only users.
_GROUP_SHARE = 0.1
_GROUP_SIZE = 4
_GROUPS_PER_CHANNEL = 50
_BSUID_ONLY_SHARE = 0.1
# The group categories of the streams that groups carry (Meta's Groups API pricing).
_GROUP_CATEGORIES = {("MARKETING", "REGULAR"): ("group_marketing", True),
                     ("UTILITY", "REGULAR"): ("group_utility", True),
                     ("SERVICE", "FREE_CUSTOMER_SERVICE"): ("group_service", False)}
# A stand-in SDP: receivers ignore it, but the `connect` shape carries a session (an offer from
# the user; Meta's answer to the business's offer for business-initiated calls).
_SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\n"


@dataclass(frozen=True, slots=True)
class Shapes:
    """Documented shapes beyond the plain mix (see the module docstring)."""

    groups: bool = False
    bsuid_only: bool = False


ALL_SHAPES = Shapes(groups=True, bsuid_only=True)
DEFAULT_SHAPES = ALL_SHAPES


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


@lru_cache(maxsize=200_000)
def user_id(seed: int, country: str, phone: str) -> str:
    """The business-scoped user id of a customer: their country, a dot, 19 digits."""
    return f"{country}.{10**18 + int(unit(seed, 'bsuid', phone) * 9e18)}"


def parent_user_id(seed: int, country: str, phone: str) -> str:
    """The parent BSUID (portfolio-wide) of a customer: `CC.ENT.` and 20 digits."""
    return f"{country}.ENT.{10**19 + int(unit(seed, 'parent_bsuid', phone) * 9e19)}"


def group_id(seed: int, ch: SimChannel, number: int) -> str:
    """A group id of the channel, in the 57-character shape of Meta's examples (base64 of
    `capi_group:...`)."""
    tail = hashlib.blake2b(f"{seed}|{ch.id}|{number}".encode(), digest_size=30).digest()
    return "Y2FwaV9ncm91cDo" + base64.b64encode(tail).decode()[:40] + "ZD"


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


def _message_statuses(wamid: str, ts: int, last: int, *, pricing: dict[str, Any], key: float,
                      party: dict[str, str]) -> list[dict[str, Any]]:
    """sent (priced), then delivered (priced) and maybe read (not), or read alone (priced)."""
    out = [{"id": wamid, "status": "sent", "timestamp": str(ts), **party, "pricing": pricing}]
    read = key < _READ_SHARE
    if read and key < _READ_SHARE * _SKIPPED_DELIVERED_SHARE:
        out.append({"id": wamid, "status": "read", "timestamp": str(min(ts + 2, last)),
                    **party, "pricing": pricing})
        return out
    out.append({"id": wamid, "status": "delivered", "timestamp": str(min(ts + 1, last)),
                **party, "pricing": pricing})
    if read:
        out.append({"id": wamid, "status": "read", "timestamp": str(min(ts + 2, last)), **party})
    return out


def _group_statuses(seed: int, ch: SimChannel, prefix: str, i: int, ts: int, *, last: int,
                    pricing: dict[str, Any]) -> list[dict[str, Any]]:
    """Message index `i` as participant `i % 4` of group message `i // 4`: the group's one
    `sent` (no participant, no pricing) comes with its first participant; each participant
    has its own priced delivered (or read)."""
    number, member = divmod(i, _GROUP_SIZE)
    wamid = f"{prefix}G{number}"
    group = group_id(seed, ch, int(unit(seed, wamid) * _GROUPS_PER_CHANNEL))
    out: list[dict[str, Any]] = []
    if member == 0:
        out.append({"id": wamid, "status": "sent", "timestamp": str(ts),
                    "recipient_id": group, "recipient_type": "group"})
    # Consecutive contacts, so a group's participants are distinct people.
    first = int(unit(seed, wamid) * 1_000_003)
    participant = _contact(seed, ch.id, ch.country, (first + member) % _CONTACTS)
    party = {"recipient_id": group, "recipient_type": "group",
             "recipient_participant_id": participant}
    # The group's sent is not repeated per participant.
    return out + _message_statuses(wamid, ts, last, pricing=pricing,
                                   key=unit(seed, wamid, member, "read"), party=party)[1:]


def _is_group(seed: int, prefix: str, i: int) -> bool:
    return unit(seed, prefix, "group", i // _GROUP_SIZE) < _GROUP_SHARE


def _party(seed: int, ch: SimChannel, to: str, bsuid_only: bool) -> dict[str, str]:
    """Who a status names as its recipient: the phone and the BSUID, or the BSUID alone."""
    uid = user_id(seed, ch.country, to)
    if bsuid_only:
        return {"recipient_user_id": uid,
                "recipient_parent_user_id": parent_user_id(seed, ch.country, to)}
    return {"recipient_id": to, "recipient_user_id": uid}


def _statuses(seed: int, ch: SimChannel, a: float, b: float,
              shapes: Shapes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for category, pricing_type, mean in STREAMS:
        stream = f"{category}/{pricing_type}"
        grouped = _GROUP_CATEGORIES.get((category, pricing_type)) if shapes.groups else None
        for day, first, upper in _day_slices(seed, ch, stream, mean, a, b):
            if upper <= first:
                continue
            # A day-slice lies in one pricing period: 2026-10-01 starts a day.
            reported = pricing_type_at(category, pricing_type, day)
            pricing = _pricing(category, reported)
            # Meta's group examples carry no pricing `type`.
            group_pricing = (None if grouped is None else
                             {"billable": grouped[1] or reported == "REGULAR",
                              "pricing_model": "PMP", "category": grouped[0]})
            start, end = max(a, day), min(b, day + DAY)
            last = _last_second(start, end)
            prefix = f"wamid.SIM.{ch.id}.{day}.{category}.{pricing_type}."
            for i, ts in zip(range(first, upper), _spread(start, end, upper - first),
                             strict=True):
                if group_pricing is not None and _is_group(seed, prefix, i):
                    out.extend(_group_statuses(seed, ch, prefix, i, ts, last=last,
                                               pricing=group_pricing))
                    continue
                wamid = prefix + str(i)
                key = unit(seed, wamid)
                to = recipient(seed, ch, key)
                bsuid_only = shapes.bsuid_only and unit(seed, wamid, "bsuid") < _BSUID_ONLY_SHARE
                out.extend(_message_statuses(wamid, ts, last, pricing=pricing, key=key,
                                             party=_party(seed, ch, to, bsuid_only)))
    return out


def _pricing(category: str, pricing_type: str) -> dict[str, Any]:
    """The `pricing` object of a stream's statuses in one day-slice, shared by them."""
    return {"billable": pricing_type == "REGULAR", "pricing_model": "PMP",
            "type": pricing_type.lower(), "category": category.lower()}


def _calls(seed: int, ch: SimChannel, a: float, b: float,
           shapes: Shapes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Connect and terminate events, and the call statuses of business-initiated calls."""
    out: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    business = digits_of(ch.phone_number)
    for direction, mean in DIRECTIONS:
        outgoing = direction == "BUSINESS_INITIATED"
        for day, first, upper in _day_slices(seed, ch, direction, mean, a, b):
            if upper <= first:
                continue
            start, end = max(a, day), min(b, day + DAY)
            for i, ts in zip(range(first, upper), _spread(start, end, upper - first),
                             strict=True):
                call_id = f"wacid.SIM.{ch.id}.{day}.{direction}.{i}"
                customer = recipient(seed, ch, unit(seed, call_id))
                uid = user_id(seed, ch.country, customer)
                duration = call_duration(seed, ch.id, day, direction, i)
                if outgoing:
                    parties: dict[str, str] = {"from": business, "to": customer,
                                               "to_user_id": uid}
                    if shapes.bsuid_only and unit(seed, call_id, "bsuid") < _BSUID_ONLY_SHARE:
                        del parties["to"]
                    recipient_of = {"recipient_user_id": uid}
                    if "to" in parties:
                        recipient_of["recipient_id"] = customer
                    # RINGING, then ACCEPTED once answered: both before the call's events.
                    statuses.extend({"id": call_id, "type": "call", "status": status,
                                     "timestamp": str(ts), **recipient_of}
                                    for status in ("RINGING", "ACCEPTED"))
                else:
                    parties = {"from": customer, "from_user_id": uid, "to": business}
                session = {"sdp_type": "answer" if outgoing else "offer", "sdp": _SDP}
                out.append({"id": call_id, **parties, "event": "connect",
                            "direction": direction, "timestamp": str(ts), "session": session})
                # The call counts on the day it started, as the usage endpoint counts it.
                out.append({"id": call_id, **parties, "event": "terminate",
                            "direction": direction, "status": "COMPLETED",
                            "duration": duration, "timestamp": str(ts),
                            "start_time": str(ts), "end_time": str(ts + duration)})
    return out, statuses


def _envelopes(seed: int, ch: SimChannel, field: str, key: str, items: list[dict[str, Any]], *,
               max_items: int) -> Iterator[dict[str, Any]]:
    metadata = {"display_phone_number": digits_of(ch.phone_number),
                "phone_number_id": phone_number_id(seed, ch.id)}
    for n in range(0, len(items), max_items):
        yield {"object": "whatsapp_business_account", "entry": [{
            "id": ch.waba_external_id,
            "changes": [{"field": field, "value": {
                "messaging_product": "whatsapp", "metadata": dict(metadata),
                key: items[n:n + max_items]}}]}]}


def webhook_bodies(fleet: Fleet, a: float, b: float, *, max_items: int = 100,
                   shapes: Shapes = DEFAULT_SHAPES) -> list[dict[str, Any]]:
    """Every message status and call event the traffic model puts in [a, b), as webhook bodies:
    one or more per channel and field, each with at most `max_items` statuses or calls (a
    channel's call statuses come before its calls, in bodies of their own).

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
        bodies.extend(_envelopes(fleet.seed, ch, "messages", "statuses",
                                 _statuses(fleet.seed, ch, a, b, shapes), max_items=max_items))
        calls, call_statuses = _calls(fleet.seed, ch, a, b, shapes)
        bodies.extend(_envelopes(fleet.seed, ch, "calls", "statuses", call_statuses,
                                 max_items=max_items))
        bodies.extend(_envelopes(fleet.seed, ch, "calls", "calls", calls, max_items=max_items))
    return bodies


DIALOG_SIGNATURE = "x-360dialog-signature"
META_SIGNATURE = "X-Hub-Signature-256"


def signature(secret: str, raw: bytes, header: str = META_SIGNATURE) -> str:
    """A signature header's value: HMAC-SHA256 of the exact raw body, in hex; Meta's
    `X-Hub-Signature-256` prefixes it with `sha256=`. (360dialog does not document its
    encoding; hex without a prefix is what third-party receivers of it check.)"""
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return "sha256=" + digest if header.lower() == META_SIGNATURE.lower() else digest


class WebhookEmitter:
    """Pushes the simulated traffic to a webhook URL, in order, retrying failures next tick.
    With `hmac_secret`, each body is signed in `signature_header`: 360dialog's by default."""

    def __init__(
        self,
        fleet: Fleet,
        clock: Callable[[], float],
        url: str,
        client: httpx.AsyncClient,
        *,
        hmac_secret: str | None = None,
        secret_header: tuple[str, str] | None = None,
        signature_header: str = DIALOG_SIGNATURE,
        shapes: Shapes = DEFAULT_SHAPES,
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
        self._signature_header = signature_header
        self._shapes = shapes
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
            for body in webhook_bodies(self._fleet, self._last, now, shapes=self._shapes):
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
            headers[self._signature_header] = signature(self._hmac_secret, raw,
                                                        self._signature_header)
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
