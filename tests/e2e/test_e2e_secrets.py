"""Known secrets through the whole process: none may appear in any log line, in /metrics, in
--check-config, in an error message or in an answer to a caller."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.conftest import ROOT, Proc, base_env, free_port, wait_http

pytestmark = pytest.mark.e2e

SECRETS = {
    "D360_API_KEY": "sk-api-7c1d9e",
    "D360_WEBHOOK_SECRET": "whsec-header-42af",
    "D360_WEBHOOK_HMAC_SECRET": "whsec-hmac-93be",
    "D360_METRICS_BEARER_TOKEN": "scrape-token-5d0c",
    "D360_METRICS_BASIC_AUTH_PASSWORD": "scrape-pass-e81f",
}
FORWARD_TOKEN = "fwd-token-0b6a"


def leaks(text: str) -> list[str]:
    found = [name for name, value in SECRETS.items() if value in text]
    return found + (["forward token"] if FORWARD_TOKEN in text else [])


def test_no_secret_leaks_from_the_running_process(tmp_path):
    """Every output of a real run with every secret set, debug logging, wrong credentials and a
    refusing forward target, is free of the secret values."""
    sim = Proc([sys.executable, "-m", "exporter.simulator", "--port", "0",
                "--api-key", SECRETS["D360_API_KEY"], "--partner-id", "sec_PA"],
               base_env(tmp_path), tmp_path / "sim.log")
    outputs: list[str] = []
    try:
        sim_url = sim.read_line_with("SIMULATOR_URL=")
        port, hook_port = free_port(), free_port()
        env = base_env(tmp_path) | SECRETS | {
            "D360_API_URL": sim_url + "/api/v2", "D360_PARTNER_ID": "sec_PA",
            "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{hook_port}",
            "D360_METRICS_BASIC_AUTH_USERNAME": "prom", "D360_LOG_LEVEL": "debug",
            # Nothing listens there: forwarding fails and logs its failure.
            "D360_WEBHOOK_FORWARD_URL": f"http://bot:{FORWARD_TOKEN}@127.0.0.1:{free_port()}"
                                        f"/hook?token={FORWARD_TOKEN}"}
        check = subprocess.run([sys.executable, "-m", "exporter", "--check-config"], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        outputs += [check.stdout, check.stderr]
        bad = subprocess.run([sys.executable, "-m", "exporter"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=False,
                             env=env | {"D360_LIMIT_USAGE_WABA": "lots", "D360_PASSWORD": "x"})
        assert bad.returncode == 2
        outputs += [bad.stdout, bad.stderr]

        proc = Proc([sys.executable, "-m", "exporter"], env, tmp_path / "exporter.log")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", timeout=30)
        body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
        signature = "sha256=" + hmac.new(SECRETS["D360_WEBHOOK_HMAC_SECRET"].encode(), body,
                                         hashlib.sha256).hexdigest()
        hook = f"http://127.0.0.1:{hook_port}/webhook"
        with httpx.Client(timeout=5) as client:
            for headers in ({"X-Webhook-Secret": "wrong"},
                            {"X-Webhook-Secret": SECRETS["D360_WEBHOOK_SECRET"]},
                            {"X-Webhook-Secret": SECRETS["D360_WEBHOOK_SECRET"],
                             "X-Hub-Signature-256": signature}):
                r = client.post(hook, content=body, headers=headers)
                outputs.append(r.text)
            assert r.status_code == 200
            refused = client.get(url + "/metrics", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401
            outputs.append(refused.text)
            basic = base64.b64encode(
                f"prom:{SECRETS['D360_METRICS_BASIC_AUTH_PASSWORD']}".encode()).decode()
            deadline = time.monotonic() + 30
            text = ""
            while time.monotonic() < deadline and "whatsapp_messages_total{" not in text:
                text = client.get(url + "/metrics",
                                  headers={"Authorization": f"Basic {basic}"}).text
                time.sleep(0.5)
            assert "whatsapp_messages_total{" in text
            outputs.append(text)
            forwards = 'whatsapp_exporter_webhook_forwards_total{result="failed"}'
            bearer = {"Authorization": "Bearer " + SECRETS["D360_METRICS_BEARER_TOKEN"]}
            while time.monotonic() < deadline and f"{forwards} 0.0" in text:
                text = client.get(url + "/metrics", headers=bearer).text
                time.sleep(0.5)
            assert f"{forwards} 0.0" not in text  # the failure was logged, too
            outputs.append(text)
            outputs.append(client.get(url + "/").text)
        assert proc.stop() == 0
        outputs.append(proc.log.read_text())
    finally:
        sim.stop()
    log = "\n".join(outputs)
    assert '"webhook_unauthorized"' in log
    assert '"webhook_forward_failed"' in log
    assert '"api_call"' in log
    assert leaks(log) == []
