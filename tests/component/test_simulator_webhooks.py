"""The webhook emitter over HTTP: signed raw bodies, in-order retries, a bounded queue."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
from collections import Counter

import httpx
import pytest
import respx
import structlog.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter.clock import FakeClock
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import usage_points
from exporter.simulator.webhooks import (
    ALL_SHAPES,
    DIALOG_SIGNATURE,
    META_SIGNATURE,
    WebhookEmitter,
    webhook_bodies,
)
from exporter.webhooks.parser import CallEvent, CallStatusEvent, StatusEvent
from tests.component.webhooks_kit import Receiver as ExporterReceiver

FLEET = build_fleet(7, waba_sizes=(3, 5, 2))
START = calendar.timegm((2026, 3, 10, 13, 0, 0))
URL = "http://receiver.test/webhooks/whatsapp"
SECRET = "s3cret-for-tests"


def raw(body) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Receiver:
    """A respx side effect standing in for the webhook receiver; `fail` decides each answer."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []  # accepted ones only
        # One outcome per request, consumed in order: None accepts, a status or an exception
        # type fails; once empty, every request is accepted.
        self.fail: list[int | type[Exception] | None] = []

    @property
    def received(self) -> list[bytes]:
        return [r.content for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        outcome = self.fail.pop(0) if self.fail else None
        if isinstance(outcome, int):
            return httpx.Response(outcome)
        if outcome is not None:
            raise outcome("receiver unreachable")
        self.requests.append(request)
        return httpx.Response(200)


@pytest.fixture
def clock():
    return FakeClock(START)


@pytest.fixture
async def receiver():
    fake = Receiver()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=fake)
        yield fake


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


async def test_bodies_are_signed_over_the_exact_raw_bytes(clock, client, receiver):
    """By default x-360dialog-signature is the hex HMAC-SHA256 of the bytes on the wire, and no
    Meta signature is sent; the custom secret header and the JSON content type ride along."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client, hmac_secret=SECRET,
                             secret_header=("X-Webhook-Secret", "hdr-secret"))
    clock.set(START + 30)
    await emitter.tick()
    assert len(receiver.requests) == emitter.sent > 0
    for request in receiver.requests:
        expected = hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
        assert request.headers[DIALOG_SIGNATURE] == expected
        assert META_SIGNATURE not in request.headers
        assert request.headers["X-Webhook-Secret"] == "hdr-secret"
        assert request.headers["Content-Type"] == "application/json"
    assert receiver.received == [raw(b) for b in webhook_bodies(FLEET, START, START + 30)]


async def test_the_emitter_can_sign_as_meta_does(clock, client, receiver):
    """With signature_header=X-Hub-Signature-256 the value is `sha256=` and the hex HMAC, and
    no 360dialog signature is sent."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client, hmac_secret=SECRET,
                             signature_header=META_SIGNATURE)
    clock.set(START + 30)
    await emitter.tick()
    assert receiver.requests
    for request in receiver.requests:
        expected = hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
        assert request.headers[META_SIGNATURE] == f"sha256={expected}"
        assert DIALOG_SIGNATURE not in request.headers


async def test_unsigned_emitter_sends_no_signature(clock, client, receiver):
    """Without an HMAC secret or header, requests carry neither."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client)
    clock.set(START + 30)
    await emitter.tick()
    headers = receiver.requests[-1].headers
    assert META_SIGNATURE not in headers
    assert DIALOG_SIGNATURE not in headers
    assert "X-Webhook-Secret" not in headers
    assert emitter.pending == 0
    assert emitter.failed == 0


@pytest.mark.parametrize("outage", [500, 503, httpx.ConnectError, httpx.ReadTimeout])
async def test_failed_bodies_stay_queued_and_arrive_in_order_once(clock, client, receiver,
                                                                  outage):
    """A 5xx or a transport error keeps the body and those after it queued; the next tick sends
    them in order, then the new ones, none lost and none twice."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client, hmac_secret=SECRET)
    expected = [raw(b) for b in webhook_bodies(FLEET, START, START + 60)]
    expected += [raw(b) for b in webhook_bodies(FLEET, START + 60, START + 120)]
    assert len(expected) > 6

    receiver.fail = [outage]
    clock.set(START + 60)
    await emitter.tick()
    # The first body fails, and nothing after it is tried on this tick.
    assert (emitter.sent, emitter.failed, receiver.received) == (0, 1, [])
    first_batch = emitter.pending

    clock.set(START + 120)
    await emitter.tick()
    assert receiver.received == expected
    assert (emitter.sent, emitter.failed, emitter.pending) == (len(expected), 1, 0)
    assert first_batch == len(webhook_bodies(FLEET, START, START + 60))


async def test_a_failure_mid_queue_resumes_at_the_failed_body(clock, client, receiver):
    """When the k-th body fails, the ones before it are delivered once and the rest follow, in
    order, on the next tick."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client)
    clock.set(START + 60)
    await emitter.tick()  # all delivered
    receiver.requests.clear()
    sent_before = emitter.sent

    receiver.fail = [None, None, 502]
    clock.set(START + 120)
    await emitter.tick()
    assert len(receiver.received) == 2
    assert emitter.failed == 1
    clock.set(START + 180)
    await emitter.tick()
    # Bodies of the second tick arrive before the third tick's, each exactly once.
    second = [raw(b) for b in webhook_bodies(FLEET, START + 60, START + 120)]
    third = [raw(b) for b in webhook_bodies(FLEET, START + 120, START + 180)]
    assert receiver.received == second + third
    assert Counter(receiver.received).most_common(1)[0][1] == 1
    assert emitter.sent - sent_before == len(second) + len(third)
    assert len(second) > 3


async def test_full_queue_drops_the_oldest_and_counts_them(clock, client, receiver):
    """Beyond max_queue the oldest bodies are dropped and counted; the newest are kept and sent
    in order once the receiver is back."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client, max_queue=5)
    bodies = [raw(b) for b in webhook_bodies(FLEET, START, START + 120)]
    assert len(bodies) > 5
    receiver.fail = [500]
    clock.set(START + 120)
    await emitter.tick()
    assert (emitter.pending, emitter.dropped, emitter.failed) == (5, len(bodies) - 5, 1)

    clock.set(START + 120)  # no time passed: nothing new to generate
    await emitter.tick()
    assert receiver.received == bodies[-5:]
    assert (emitter.sent, emitter.pending) == (5, 0)


async def test_a_clock_stepping_back_generates_nothing_twice(clock, client, receiver):
    """After the clock steps back, ticks generate nothing until time passes the last tick."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client)
    clock.set(START + 60)
    await emitter.tick()
    sent = emitter.sent
    clock.step_back(30)
    await emitter.tick()
    assert emitter.sent == sent
    clock.set(START + 90)
    await emitter.tick()
    assert receiver.received[sent:] == [raw(b) for b in webhook_bodies(FLEET, START + 60,
                                                                       START + 90)]


async def test_run_ticks_every_interval_from_its_start(client, receiver):
    """run() generates from `start`, then once per interval, sleeping through the injected
    sleep."""
    clock = FakeClock(START)
    slept: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise Stop
        clock.set(clock.now() + seconds)

    emitter = WebhookEmitter(FLEET, clock.now, URL, client, interval=5.0, start=START - 10,
                             sleep=sleep)
    with pytest.raises(Stop):
        await emitter.run()
    assert slept == [5.0, 5.0, 5.0]
    ticks = [(START - 10, START), (START, START + 5), (START + 5, START + 10)]
    assert receiver.received == [raw(b) for a, b_ in ticks for b in webhook_bodies(FLEET, a, b_)]


# The usage endpoint's stream of a group category (before 2026-10-01, as the test runs).
GROUP_STREAMS = {"group_marketing": "marketing/regular", "group_utility": "utility/regular",
                 "group_service": "service/free_customer_service"}


def signed_receiver(secret: str, seen: dict[str, set[tuple[str, str]]]) -> Starlette:
    """A minimal receiver that rejects bad signatures and counts charged deliveries (each
    wamid and group participant whose delivered or read has pricing) and terminated calls."""

    async def handle(request: Request) -> Response:
        body = await request.body()
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get(DIALOG_SIGNATURE, ""), expected):
            return Response(status_code=401)
        for entry in json.loads(body)["entry"]:
            for change in entry["changes"]:
                for status in change["value"].get("statuses", []):
                    if "pricing" not in status or status["status"] not in {"delivered", "read"}:
                        continue  # sent (not charged), an unpriced read, or a call's status
                    p = status["pricing"]
                    stream = GROUP_STREAMS.get(p["category"]) or f"{p['category']}/{p['type']}"
                    seen.setdefault(stream, set()).add(
                        (status["id"], status.get("recipient_participant_id", "")))
                for call in change["value"].get("calls", []):
                    if call["event"] == "terminate":
                        seen.setdefault(call["direction"], set()).add((call["id"], ""))
        return Response(status_code=200)

    return Starlette(routes=[Route("/hook", handle, methods=["POST"])])


async def test_a_receiver_counts_exactly_the_polled_traffic_over_an_hour_of_ticks():
    """Driven tick by tick for an hour through an in-process receiver, the charged deliveries
    and calls it saw (groups and BSUID-only users included, as by default) equal the usage
    endpoint's totals; a wrong secret gets only 401s."""
    seen: dict[str, set[tuple[str, str]]] = {}
    app = signed_receiver(SECRET, seen)
    clock = FakeClock(START)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://receiver") as http:
        emitter = WebhookEmitter(FLEET, clock.now, "http://receiver/hook", http,
                                 hmac_secret=SECRET, interval=5.0)
        for _ in range(720):
            clock.set(clock.now() + 5.0)
            await emitter.tick()
        wrong = WebhookEmitter(FLEET, clock.now, "http://receiver/hook", http,
                               hmac_secret="not-the-secret", start=clock.now() - 10)
        await wrong.tick()
    assert wrong.sent == 0
    assert wrong.pending > 0
    assert wrong.failed == 1
    assert emitter.pending == 0
    assert emitter.failed == 0

    truth: Counter[str] = Counter()
    for ch in FLEET.channels():
        pricing, calls = usage_points(FLEET.seed, ch, START, START + 3599, START + 3600,
                                      "half_hour")
        for p in pricing:
            truth[f"{p.category.lower()}/{p.pricing_type.lower()}"] += p.volume
        for c in calls:
            truth[c.direction] += c.count
    assert Counter({k: len(v) for k, v in seen.items()}) == truth
    assert sum(truth.values()) > 1_000


async def test_failures_are_logged_without_the_secrets(clock, client, receiver):
    """A failed delivery logs a snake_case event with the status, never the HMAC or header
    secret."""
    emitter = WebhookEmitter(FLEET, clock.now, URL, client, hmac_secret=SECRET,
                             secret_header=("X-Webhook-Secret", "hdr-secret-value"))
    receiver.fail = [500, httpx.ConnectError]
    with structlog.testing.capture_logs() as logs:
        clock.set(START + 30)
        await emitter.tick()
        await emitter.tick()
    failures = [e for e in logs if e["event"] == "webhook_delivery_failed"]
    assert [e.get("status") or e.get("error") for e in failures] == [500, "ConnectError"]
    assert SECRET not in repr(logs)
    assert "hdr-secret-value" not in repr(logs)


async def test_the_exporters_receiver_accepts_every_shape_the_emitter_sends(tmp_path, clock):
    """With every shape on, the exporter's own receiver answers every body 200 and reads group
    statuses, BSUID-only recipients and call statuses as such (hex x-360dialog-signature)."""
    rx = ExporterReceiver(tmp_path, secret=None, hmac_secret=SECRET)
    parsed: list[object] = []
    real = rx.state.accept_many

    def accept_many(deliveries, now):
        parsed.extend(event for d in deliveries for event in d.events)
        return real(deliveries, now)

    rx.state.accept_many = accept_many
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rx.app),
                                 base_url="http://wh") as http:
        emitter = WebhookEmitter(FLEET, clock.now, "http://wh/webhook", http, hmac_secret=SECRET,
                                 shapes=ALL_SHAPES, start=START)
        clock.set(START + 12 * 3600)  # long enough for a business call to a BSUID alone
        await emitter.tick()
    rx.state.close()
    assert emitter.sent > 0
    assert (emitter.failed, emitter.pending, rx.result("ok")) == (0, 0, emitter.sent)
    statuses = [e for e in parsed if isinstance(e, StatusEvent)]
    assert any(e.recipient_type == "group" and e.recipient_phone for e in statuses)
    assert any(not e.recipient_id and e.bsuid_country for e in statuses)
    assert {e.status for e in parsed if isinstance(e, CallStatusEvent)} == {"ringing",
                                                                            "accepted"}
    assert any(isinstance(e, CallEvent) and not e.callee and e.bsuid_country for e in parsed)
