"""Forwarding accepted bodies to the user's application from the durable outbox."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry, Counter, Histogram

from exporter.clock import FakeClock
from exporter.webhooks.forwarder import DELIVERY_ID_HEADER, Forwarder
from tests.component.webhooks_kit import SECRET, Receiver, status_body

APP = "https://app.example.test/hooks/whatsapp"
T0 = 1_751_371_300.0  # the kit receiver stamps deliveries with this time


class Rig:
    def __init__(self, tmp_path, clock=None):
        self.tmp_path = tmp_path
        self.clock = clock or FakeClock(T0)
        self.rx = Receiver(tmp_path, forward_headers=["X-Hub-Signature-256"])
        self.rx.app  # noqa: B018 - built with the receiver
        self.registry = CollectorRegistry()
        self.forwards = Counter("f", "f", ["result"], registry=self.registry)
        self.lag = Histogram("lag", "lag", registry=self.registry)
        self.client = httpx.AsyncClient()
        assert self.rx.state.outbox is not None
        self.forwarder = Forwarder(self.rx.state.outbox, self.client, APP, self.clock,
                                   forwards=self.forwards, lag=self.lag, max_age_seconds=3600,
                                   backoff_seconds=(1.0, 60.0), jitter=lambda: 1.0)

    def result(self, name):
        return self.registry.get_sample_value("f_total", {"result": name}) or 0

    async def close(self):
        await self.client.aclose()
        self.rx.state.close()


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    await r.close()


@respx.mock
async def test_bodies_reach_the_app_unchanged_with_the_headers_that_matter(rig):
    """The exact bytes, their Content-Type and signature go on; the exporter's secret does not."""
    route = respx.post(APP).mock(return_value=httpx.Response(200))
    raw = json.dumps(status_body(), separators=(",", ":")).encode()
    r = await rig.rx.post(None, {"X-Hub-Signature-256": "sha256=abc"}, raw=raw)
    assert r.status_code == 200
    assert rig.rx.state.outbox.depth == 1
    assert await rig.forwarder.deliver_due() == 1
    sent = route.calls.last.request
    assert sent.content == raw
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-hub-signature-256"] == "sha256=abc"
    assert sent.headers[DELIVERY_ID_HEADER] == hashlib.sha256(raw).hexdigest()[:32]
    assert "x-webhook-secret" not in sent.headers
    assert SECRET.encode() not in b"".join(f"{k}{v}".encode() for k, v in sent.headers.items())
    assert rig.rx.state.outbox.depth == 0
    assert rig.result("delivered") == 1


@respx.mock
async def test_an_outage_is_retried_with_backoff_and_loses_nothing(rig):
    """Failed deliveries wait 1 s, 2 s, 4 s... and all arrive once the app is back."""
    route = respx.post(APP).mock(side_effect=[httpx.Response(503), httpx.ConnectError("down"),
                                              httpx.Response(200), httpx.Response(200)])
    await rig.rx.post(status_body("wamid.1"))
    await rig.rx.post(status_body("wamid.2"))
    assert await rig.forwarder.deliver_due() == 2  # both fail
    assert rig.result("failed") == 2
    assert await rig.forwarder.deliver_due() == 0  # not due before the backoff
    rig.clock.set(T0 + 1.0)
    assert await rig.forwarder.deliver_due() == 2
    assert route.call_count == 4
    assert rig.rx.state.outbox.depth == 0
    assert rig.result("delivered") == 2


@respx.mock
async def test_retry_after_is_honoured_and_old_bodies_expire(rig):
    """A 429's Retry-After sets the next try; past the maximum age a body is dropped, counted."""
    respx.post(APP).mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
    await rig.rx.post(status_body())
    await rig.forwarder.deliver_due()
    rig.clock.set(T0 + 29)
    assert await rig.forwarder.deliver_due() == 0
    rig.clock.set(T0 + 30)
    assert await rig.forwarder.deliver_due() == 1
    rig.clock.set(T0 + 3600)
    await rig.forwarder.deliver_due()
    assert rig.result("expired") == 1
    assert rig.rx.state.outbox.depth == 0


@respx.mock
async def test_the_outbox_survives_a_restart(tmp_path):
    """Bodies accepted before a crash are delivered by the next process."""
    first = Rig(tmp_path)
    await first.rx.post(status_body("wamid.1"))
    await first.rx.post(status_body("wamid.2"))
    await first.close()  # the process dies before forwarding anything
    route = respx.post(APP).mock(return_value=httpx.Response(204))
    second = Rig(tmp_path)
    assert second.rx.state.outbox.depth == 2
    assert second.rx.state.outbox.oldest_received_at is not None
    assert await second.forwarder.deliver_due() == 2
    assert sorted(json.loads(c.request.content)["entry"][0]["changes"][0]["value"]["statuses"][0]
                  ["id"] for c in route.calls) == ["wamid.1", "wamid.2"]
    await second.close()


async def test_nothing_is_queued_when_forwarding_is_off(tmp_path):
    """Without a forward URL the receiver keeps no outbox."""
    rx = Receiver(tmp_path)
    await rx.post(status_body())
    assert rx.state.outbox is None
    rx.state.close()
