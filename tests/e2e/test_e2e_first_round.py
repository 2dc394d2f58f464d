"""A start without state against the simulator process with the API's real limits (10 usage
calls an hour per channel, 200 per WABA): killed with SIGKILL three times inside its first
round, the exporter still shows every channel's usage within a minute of the first start, and
the simulator's own sliding windows never refuse a call."""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from tests.e2e.conftest import wait_http

pytestmark = pytest.mark.e2e

FIRST_ROUND_SECONDS = 60.0
KILLS_AFTER = (0.3, 0.8, 1.5)  # seconds after each start: the first round is under way
USAGE_SERIES = re.compile(r'^whatsapp_usage_updated_timestamp_seconds\{[^}]*channel_id="([^"]+)"',
                          re.MULTILINE)


def test_every_channel_has_usage_within_a_minute_despite_kills(simulator, start_exporter):
    """Three kill -9s inside the first round, then a run: all channels have usage on /metrics
    within 60 s of the first start (against minutes to a quarter of an hour when the first
    round was spread like the steady state), and no call was answered 429."""
    env = {"D360_API_URL": simulator + "/api/v2", "D360_PARTNER_ID": "sim_PA",
           "D360_API_KEY": "e2e-key"}
    first_start = time.monotonic()
    for after in KILLS_AFTER:
        proc, _ = start_exporter(env)
        time.sleep(after)
        proc.stop(signal.SIGKILL)
    proc, url = start_exporter(env)
    wait_http(url + "/readyz", timeout=30)
    channels = set(httpx.get(simulator + "/_sim/stats").json()["channels"])
    assert len(channels) > 100
    with_usage: set[str] = set()
    while time.monotonic() - first_start < FIRST_ROUND_SECONDS and with_usage != channels:
        with_usage = set(USAGE_SERIES.findall(httpx.get(url + "/metrics").text))
        time.sleep(0.5)
    assert with_usage == channels, f"{len(channels - with_usage)} channels without usage"
    proc.stop()
    stats = httpx.get(simulator + "/_sim/stats").json()
    assert stats["rate_limited"] == 0, stats["refused"]
