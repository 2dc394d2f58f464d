"""The real exporter process against the simulator, scraped by a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests import tools
from tests.e2e.conftest import ROOT, Proc, assert_matches_truth, base_env, free_port, wait_http

pytestmark = pytest.mark.e2e

# Compressed windows, the same on both sides: a minute of e2e test covers many budget windows.
FAST = {"usage_channel": "10/6", "usage_waba": "200/6", "client_balance": "5/3",
        "channel_balance": "1/6", "partner_balance": "1/3", "discovery": "60/6"}
# The safety margin is the slack between when the exporter charges a call and when the
# simulator counts it. Windows 600 times shorter shrink it as much: the default 2% of an hour is
# 72 s, of 6 s only 120 ms, which one stall of a loaded CI machine exceeded (a 429, once in
# many runs). 5% of 6 s is 300 ms, still far less slack than production's 72 s.
FAST_MARGIN = "0.05"


def fast_env(sim_url: str) -> dict[str, str]:
    env = {f"D360_LIMIT_{k.upper()}": v for k, v in FAST.items()}
    env |= {"D360_API_URL": sim_url + "/api/v2", "D360_PARTNER_ID": "e2e_PA",
            "D360_API_KEY": "e2e-key", "D360_CLIENT_BALANCE_INTERVAL_SECONDS": "1",
            "D360_DISCOVERY_INTERVAL_SECONDS": "5", "D360_SAFETY_MARGIN": FAST_MARGIN}
    return env


@pytest.fixture
def fast_simulator(tmp_path):
    args = [sys.executable, "-m", "exporter.simulator", "--host", "127.0.0.1", "--port", "0",
            "--seed", "7", "--api-key", "e2e-key", "--partner-id", "e2e_PA"]
    for kind, limit in FAST.items():
        args += [f"--limit-{kind.replace('_', '-')}", limit]
    proc = Proc(args, base_env(tmp_path), tmp_path / "sim.log")
    try:
        yield proc.read_line_with("SIMULATOR_URL=")
    finally:
        proc.stop()


def test_prometheus_scrapes_the_simulated_truth(fast_simulator, start_exporter, prometheus):
    """Values Prometheus scraped from the real process equal what the simulator billed."""
    proc, url = start_exporter(fast_env(fast_simulator))
    wait_http(url + "/readyz", timeout=30)
    prom = prometheus(url.removeprefix("http://"))
    prom.wait_for("whatsapp_channel_info")
    n_channels = len(httpx.get(fast_simulator + "/_sim/stats").json().get("channels", [])) or None

    # Wait until every channel has usage in Prometheus.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        updated = prom.query("whatsapp_usage_updated_timestamp_seconds")
        info = prom.query("whatsapp_channel_info")
        if info and len(updated) == len(info):
            break
        time.sleep(1)
    assert info, "no channels discovered"
    assert len(updated) == len(info)
    if n_channels is not None:
        assert len(info) == n_channels

    # Freeze a consistent view: stop the exporter, let Prometheus scrape nothing new.
    proc.stop()
    time.sleep(1.5)
    checked = 0
    for series in prom.query("last_over_time(whatsapp_usage_updated_timestamp_seconds[1m])"):
        labels = series["metric"]
        fetched_at = float(series["value"][1])
        selector = f'channel_id="{labels["channel_id"]}"'
        got = {
            (s["metric"]["category"], s["metric"]["pricing_type"]): float(s["value"][1])
            for s in prom.query(f"last_over_time(whatsapp_messages_total{{{selector}}}[1m])")
        }
        assert_matches_truth(fast_simulator, labels["channel_id"], fetched_at, got)
        checked += 1
    assert checked == len(info)

    stats = httpx.get(fast_simulator + "/_sim/stats").json()
    assert stats["rate_limited"] == 0, stats


def test_exposition_passes_promtool(fast_simulator, start_exporter):
    """promtool check metrics finds nothing to complain about, in text and OpenMetrics."""
    promtool = tools.binary("promtool")
    _, url = start_exporter(fast_env(fast_simulator))
    wait_http(url + "/readyz", timeout=30)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics").text
        if "whatsapp_messages_total{" in text and "whatsapp_client_balance{" in text:
            break
        time.sleep(0.5)
    assert "whatsapp_messages_total{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""
    assert result.stderr.decode().strip() == ""
    om = httpx.get(url + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert om.text.count("# EOF") == 1


def test_demo_mode_starts_without_credentials(start_exporter):
    """The README's run command with no credentials serves simulated numbers, saying so, and
    the simulator's signed webhooks move the real-time counters."""
    proc, url = start_exporter({"D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
                                "D360_DEMO": "true"})
    wait_http(url + "/readyz", timeout=30)
    deadline = time.monotonic() + 60
    body = ""
    wanted = ("whatsapp_messages_total{", "whatsapp_webhook_messages_total{",
              "whatsapp_webhook_estimated_cost_total{")
    while time.monotonic() < deadline:
        body = httpx.get(url + "/metrics").text
        if all(name in body for name in wanted):
            break
        time.sleep(1)
    for name in (*wanted, "whatsapp_channel_info{"):
        assert name in body
    assert 'whatsapp_exporter_webhook_requests_total{result="unauthorized"} 0.0' in body
    proc.stop()
    assert '"demo_mode"' in proc.log.read_text()


def test_bad_config_fails_at_start_with_one_line(tmp_path):
    """A malformed limit stops the real process with exit 2 and one line naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "exporter"], cwd=ROOT, capture_output=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "D360_LIMIT_USAGE_WABA": "lots"},
        check=False)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == ["config error: D360_LIMIT_USAGE_WABA: must be count/seconds such as "
                     "10/3600, got 'lots'"]
