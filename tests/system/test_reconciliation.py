"""Webhooks from the simulator beside polls of the simulator, on one FakeClock: the webhook
estimate reconciles with the polled truth, across a restart, before and after Meta began
charging service messages (2026-10-01), with the emitter's group and BSUID-only shapes on."""

from __future__ import annotations

import calendar

import httpx
import pytest
from pydantic import SecretStr

from exporter.clock import FakeClock
from exporter.demo import EXAMPLE_RATE_CARD
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet
from exporter.simulator.webhooks import WebhookEmitter
from exporter.testing import Rig

MAY = calendar.timegm((2026, 5, 12, 9, 0, 0))  # mid-month: the receiver's first month
NOVEMBER = calendar.timegm((2026, 11, 12, 9, 0, 0))  # service and in-window utility charged
HMAC = "reconcile-hmac"
STEP = 10.0
HOURS = 3


def emitter_for(rig: Rig, start: float) -> tuple[WebhookEmitter, httpx.AsyncClient]:
    app = rig.exporter.webhook_app
    assert app is not None
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return WebhookEmitter(rig.fleet, rig.clock.now, "http://wh/webhook", client,
                          hmac_secret=HMAC, interval=STEP, start=start), client


@pytest.mark.parametrize("start", [MAY, NOVEMBER], ids=["may-2026", "november-2026"])
async def test_webhook_estimate_matches_the_polled_truth(tmp_path, start):
    """After three hours, with a restart in between, each busy channel's webhook messages and
    cost since the baseline are within 2% of the polled growth, and the ratios survive a
    restart."""
    clock = FakeClock(start)
    fleet = build_fleet(7, waba_sizes=(3, 1), clients=1)
    rig = Rig(fleet, SimulatedApi(fleet, clock.now), clock, tmp_path / "s.db",
              webhook_hmac_secret=SecretStr(HMAC), webhook_rate_card=EXAMPLE_RATE_CARD)
    emitter, client = emitter_for(rig, start)
    t = float(start)
    while t < start + HOURS * 3600:
        t += STEP
        clock.set(t)
        await emitter.tick()
        assert emitter.failed == 0
        await rig.run_until(t)
        reconciler, webhooks = rig.exporter.reconciler, rig.exporter.webhooks
        assert reconciler is not None
        assert webhooks is not None
        reconciler.observe()
        if t == start + 3600:
            baselines = dict(webhooks.baselines)
            await client.aclose()
            await rig.restart()
            covered = emitter.covered_until
            emitter, client = emitter_for(rig, covered)
            assert rig.exporter.webhooks is not None
            assert rig.exporter.webhooks.baselines == baselines
    samples = await rig.samples()
    ratios = samples["whatsapp_webhook_reconciliation_ratio"]
    await client.aclose()
    await rig.exporter.aclose()

    # A quiet channel (activity 0.2) has not grown by MIN_MESSAGES in any category yet.
    busy = [ch for ch in fleet.channels() if ch.activity >= 1]
    assert {dict(k)["channel_id"] for k in ratios} == {ch.id for ch in busy}
    checked = 0
    for labels, value in ratios.items():
        d = dict(labels)
        channel = fleet.channel(d["channel_id"])
        assert channel is not None
        assert d["waba_id"] == channel.waba_external_id
        if d["category"] in {"marketing", "service", "utility"}:
            assert abs(value - 1) < 0.02, (d, value)
            checked += 1
    assert checked >= 4 * len(busy)
    assert any(dict(k)["measure"] == "cost" for k in ratios)
    if start == NOVEMBER:
        assert any(dict(k)["measure"] == "cost" and dict(k)["category"] == "service"
                   for k in ratios)
