"""Webhooks through the whole exporter: webhook-only mode, and labels shared with polling."""

from __future__ import annotations

import calendar
import json

import httpx
import pytest
from pydantic import SecretStr

from exporter.__main__ import main
from exporter.app import build
from exporter.clock import FakeClock
from exporter.config import ConfigError, Settings, load_settings
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet
from exporter.testing import Rig

START = calendar.timegm((2026, 5, 12, 9, 0, 0))
SECRET = "wh-secret-value"


def status(number: str, waba: str, wamid: str = "wamid.1") -> dict[str, object]:
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [{
        "field": "messages", "value": {"metadata": {"display_phone_number": number,
                                                    "phone_number_id": "777"},
                                       "statuses": [{"id": wamid, "status": "delivered",
                                                     "timestamp": str(START),
                                                     "pricing": {"billable": True,
                                                                 "type": "regular",
                                                                 "category": "utility"}}]}}]}]}


async def post(app, body) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
        return await client.post("/webhook", content=json.dumps(body),
                                 headers={"X-Webhook-Secret": SECRET})


async def test_webhook_only_mode_needs_no_partner_api(tmp_path):
    """With only a webhook secret, the exporter counts webhooks, polls nothing and is ready."""
    exporter = build(Settings(webhook_secret=SecretStr(SECRET), state_path=tmp_path / "s.db"),
                     clock=FakeClock(START))
    assert exporter.poller is None
    assert exporter.ready()
    assert exporter.webhook_app is not None
    assert (await post(exporter.webhook_app, status("4915100000000", "1049"))).status_code == 200
    assert exporter.webhooks is not None
    transport = httpx.ASGITransport(app=exporter.http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        text = (await client.get("/metrics")).text
    assert ('whatsapp_webhook_messages_total{billable="true",category="utility",'
            'channel_id="pn_777",pricing_type="regular",waba_id="1049"} 1.0') in text
    assert 'whatsapp_exporter_webhook_requests_total{result="ok"} 1.0' in text
    await exporter.aclose()


async def test_webhooks_join_the_polled_series_on_channel_and_waba(tmp_path):
    """A webhook from a discovered number carries the channel's id and Meta WABA id."""
    clock = FakeClock(START)
    fleet = build_fleet(7, waba_sizes=(2,), clients=1)
    rig = Rig(fleet, SimulatedApi(fleet, clock.now), clock, tmp_path / "s.db",
              webhook_secret=SecretStr(SECRET))
    await rig.run_until(START + 60)
    ch = fleet.channels()[0]
    await post(rig.exporter.webhook_app, status(ch.phone_number.lstrip("+"), ch.waba_external_id))
    samples = await rig.samples()
    webhook = {dict(k)["channel_id"]: dict(k)["waba_id"]
               for k in samples["whatsapp_webhook_messages_total"]}
    polled = {dict(k)["channel_id"]: dict(k)["waba_id"]
              for k in samples["whatsapp_channel_info"]}
    assert webhook == {ch.id: ch.waba_external_id}
    assert polled[ch.id] == ch.waba_external_id


def test_a_webhook_port_without_auth_refuses_to_start(monkeypatch):
    """Polling with a webhook address but no secret and no explicit open mode is a config
    error (without credentials the address would move the demo's receiver instead)."""
    monkeypatch.setenv("D360_PARTNER_ID", "pa")
    monkeypatch.setenv("D360_API_KEY", "k")
    monkeypatch.setenv("D360_WEBHOOK_LISTEN_ADDRESS", "127.0.0.1:10361")
    with pytest.raises(ConfigError, match="D360_WEBHOOK_SECRET"):
        load_settings()
    monkeypatch.setenv("D360_WEBHOOK_OPEN", "true")
    assert load_settings().webhooks_enabled


def test_webhook_settings_alone_do_not_start_the_demo(monkeypatch, capsys):
    """Webhook settings without Partner API credentials mean webhook-only, not demo."""
    monkeypatch.setenv("D360_WEBHOOK_SECRET", SECRET)
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert "D360_DEMO=False" in out
    assert SECRET not in out
