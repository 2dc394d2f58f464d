"""Builders shared by the webhook component tests: bodies in Meta's shape and a receiver."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from exporter.webhooks.parser import Delivery, parse
from exporter.webhooks.ratecard import RateCard
from exporter.webhooks.receiver import WebhookAuth, webhook_app
from exporter.webhooks.state import ChannelLabel, WebhookState

SECRET = "s3cret-header-value"
KNOWN = {"4915100000000": ChannelLabel("104996122399160", "ch_A1")}
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"


def fixture_names() -> list[str]:
    """The documented webhook bodies of tests/fixtures/webhooks/."""
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def status_body(wamid="wamid.1", status="delivered", category="marketing", pricing=True,
                number="4915100000000", pn_id="1098765432"):
    s = {"id": wamid, "status": status, "timestamp": "1751371200", "recipient_id": "4917600000000"}
    if pricing:
        s["pricing"] = {"billable": True, "pricing_model": "PMP", "type": "regular",
                        "category": category}
    return {"object": "whatsapp_business_account", "entry": [{"id": "104996122399160", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {
            "display_phone_number": number, "phone_number_id": pn_id}, "statuses": [s]}}]}]}


def accept(state: WebhookState, body: dict[str, Any], at: float) -> bool:
    """Count one delivery as the receiver would after validating it (no HTTP)."""
    raw = json.dumps(body).encode()
    return state.accept_many([Delivery(raw, at, parse(body))], at)[0]


def record_as_earlier_version(state: WebhookState, body: dict[str, Any], at: float) -> None:
    """An inbox row as versions before counting-at-acceptance left it: recorded, not counted."""
    raw = json.dumps(body).encode()
    state._db.execute("INSERT INTO webhook_inbox (received_at, body, sha) VALUES (?, ?, ?)",
                      (at, raw, hashlib.sha256(raw).hexdigest()))
    state.pending += 1


class Receiver:
    def __init__(self, tmp_path, *, secret=SECRET, hmac_secret=None, max_unmapped=100,
                 rate_card: RateCard | None = None, forward_headers=None):
        self.path = tmp_path / "state.sqlite3"
        self.max_unmapped = max_unmapped
        self.rate_card = rate_card
        self.forwarding = forward_headers is not None
        self.state = self._state()
        self.registry = CollectorRegistry()
        self.requests = Counter("r", "r", ["result"], registry=self.registry)
        auth = WebhookAuth(header="X-Webhook-Secret", secret=secret, hmac_secret=hmac_secret)
        self.app = webhook_app(self.state, auth, self.requests, now=lambda: 1_751_371_300.0,
                               max_body_bytes=64 * 1024, forward_headers=forward_headers)

    def _state(self):
        return WebhookState(self.path, channel_of=KNOWN.get,
                            max_unmapped_channels=self.max_unmapped, rate_card=self.rate_card,
                            forwarding=self.forwarding)

    async def post(self, body, headers=None, raw: bytes | None = None):
        content = raw if raw is not None else json.dumps(body).encode()
        h = {"Content-Type": "application/json", "X-Webhook-Secret": SECRET} | (headers or {})
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
            return await client.post("/webhook", content=content, headers=h)

    def recorded(self) -> int:
        """Rows any delivery left: dedupe keys, dead letters, inbox rows."""
        self.state.fold()  # keys wait in the log until folded
        return sum(self.state._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                   for table in ("webhook_seen_h", "webhook_seen_t", "webhook_dead",
                                 "webhook_inbox"))

    def result(self, name):
        return self.registry.get_sample_value("r_total", {"result": name}) or 0

    def count(self, metric, **labels):
        return sum(v for k, v in self.state.counters.get(metric, {}).items()
                   if all(x in k for x in labels.values()))


def call_body(event="terminate", *, call_id="wacid.1", direction="BUSINESS_INITIATED",
              caller="4915100000000", callee="4917600000000", number="4915100000000", **extra):
    c = {"id": call_id, "from": caller, "to": callee, "event": event,
         "timestamp": "1751371200", "direction": direction} | extra
    return {"object": "whatsapp_business_account", "entry": [{"id": "104996122399160",
            "changes": [{"field": "calls", "value": {"metadata": {
                "display_phone_number": number, "phone_number_id": "1"}, "calls": [c]}}]}]}
