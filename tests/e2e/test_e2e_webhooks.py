"""Webhooks through the real process: a known stream in, Prometheus's numbers out, the
application fed through the outbox, and kill -9 in the middle of it all."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import exporter.webhooks
from tests.e2e.conftest import free_port, wait_http
from tests.e2e.webhook_stream import (
    DIALOG_FORMS,
    HMAC_SECRET,
    WABA,
    Sink,
    Truth,
    sign,
    sign_360dialog,
    stream,
)

pytestmark = pytest.mark.e2e

CARD = Path(exporter.webhooks.__file__).parent / "ratecards" / "example-usd.toml"


def webhook_env(sink: Sink, port: int) -> dict[str, str]:
    return {"D360_WEBHOOK_HMAC_SECRET": HMAC_SECRET,
            "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "D360_WEBHOOK_RATE_CARD": str(CARD),
            "D360_WEBHOOK_FORWARD_URL": sink.url}


@pytest.fixture
def sink():
    s = Sink(fail_first=5)
    yield s
    s.stop()


def expected_series(truth: Truth) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The truth as (metric, sorted labels) -> value, in the exporter's label names."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def put(metric: str, value: float, **labels: str) -> None:
        out[(metric, tuple(sorted((labels | {"waba_id": WABA}).items())))] = value

    for (ch, category, ptype, billable), n in truth.messages.items():
        put("whatsapp_webhook_messages_total", n, channel_id=ch, category=category,
            pricing_type=ptype, billable=billable)
    for (ch, status), n in truth.statuses.items():
        put("whatsapp_webhook_statuses_total", n, channel_id=ch, status=status)
    for (ch, category), amount in truth.cost.items():
        put("whatsapp_webhook_estimated_cost_total", float(amount), channel_id=ch,
            category=category, currency="USD")
    for (ch, direction, status), n in truth.calls.items():
        put("whatsapp_webhook_calls_total", n, channel_id=ch, direction=direction, status=status)
    for (ch, direction), seconds in truth.call_seconds.items():
        put("whatsapp_webhook_call_duration_seconds_total", seconds, channel_id=ch,
            direction=direction)
    for (ch, direction), amount in truth.call_cost.items():
        put("whatsapp_webhook_call_estimated_cost_total", float(amount), channel_id=ch,
            direction=direction, currency="USD")
    return out


def scraped(prom, metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    at = time.time()
    for metric in metrics:
        for s in prom.query(metric, at):
            labels = {k: v for k, v in s["metric"].items()
                      if k not in {"__name__", "job", "instance"}}
            out[(metric, tuple(sorted(labels.items())))] = float(s["value"][1])
    return out


def assert_counters_equal(got, want) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_prometheus_scrapes_exactly_the_streams_truth(start_exporter, prometheus, sink):
    """A stream with replays, sent to the real process, reads back from Prometheus exactly; the
    application receives every body unchanged despite refusing the first few. Every other body
    comes signed as 360dialog relays it, in each digest form, and is forwarded with that
    header."""
    bodies, truth = stream(seed=11, deliveries=150)
    headers = {b: (sign(b) if i % 2 == 0 else
                   sign_360dialog(b, DIALOG_FORMS[(i // 2) % len(DIALOG_FORMS)]))
               for i, b in enumerate(bodies)}
    port = free_port()
    proc, url = start_exporter(webhook_env(sink, port))
    hook = f"http://127.0.0.1:{port}/webhook"
    wait_http(url + "/readyz")
    results = {"ok": 0, "duplicate": 0}
    with httpx.Client(timeout=10) as client:
        for i, body in enumerate(bodies):
            r = client.post(hook, content=body, headers=headers[body])
            assert r.status_code == 200, r.text
            results[r.json()["result"]] += 1
            if i % 7 == 0:  # Meta repeats deliveries
                again = client.post(hook, content=body, headers=headers[body])
                assert again.json()["result"] == "duplicate"
                results["duplicate"] += 1
        unsigned = client.post(hook, content=bodies[0],
                               headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401
        assert client.post(hook, content=b"{nope", headers=sign(b"{nope")).status_code == 400

    prom = prometheus(url.removeprefix("http://"))
    want = expected_series(truth)
    metrics = sorted({metric for metric, _ in want})
    total = sum(v for (m, _), v in want.items() if m == "whatsapp_webhook_messages_total")
    deadline = time.monotonic() + 40
    got = {}
    while time.monotonic() < deadline:
        got = scraped(prom, metrics)
        if sum(v for (m, _), v in got.items() if m == "whatsapp_webhook_messages_total") == total:
            break
        time.sleep(0.5)
    assert_counters_equal(got, want)
    requests = {s["metric"]["result"]: float(s["value"][1])
                for s in prom.query("whatsapp_exporter_webhook_requests_total")}
    assert requests["ok"] == results["ok"] == len(bodies)
    assert requests["duplicate"] == results["duplicate"]
    assert requests["unauthorized"] == 1
    assert requests["malformed"] == 1

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sink.bodies() != set(bodies):
        time.sleep(0.2)
    assert sink.bodies() == set(bodies)
    assert sink.refused == 5
    for body, forwarded in sink.received:
        name, value = next((k, v) for k, v in headers[body].items() if k != "Content-Type")
        assert forwarded[name.lower()] == value
    prom.wait_for("whatsapp_exporter_webhook_outbox_pending == 0")
    proc.stop()


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_mid_stream_neither_loses_nor_double_counts(start_exporter, sink, tmp_path,
                                                           workers):
    """Killed with SIGKILL four times while deliveries flow, the exporter ends with every
    counter equal to the truth, and the application has every body; also with webhook worker
    processes, which end with the main process and give the port back."""
    bodies, truth = stream(seed=23, deliveries=2000)
    port = free_port()
    env = webhook_env(sink, port) | {"D360_WEBHOOK_WORKERS": str(workers)}
    hook = f"http://127.0.0.1:{port}/webhook"
    acknowledged: set[int] = set()
    rnd = random.Random(5)
    kills = 0
    acknowledged_at_kill: list[int] = []

    def send_all(stop: threading.Event) -> None:
        """Like Meta: send in order; whatever was not acknowledged is sent again later."""
        with httpx.Client(timeout=5) as client:
            for i, body in enumerate(bodies):
                if stop.is_set():
                    return
                if i in acknowledged:
                    continue
                try:
                    r = client.post(hook, content=body, headers=sign(body))
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    acknowledged.add(i)

    while len(acknowledged) < len(bodies):
        proc, url = start_exporter(env)
        wait_http(url + "/readyz")
        wait_http(f"http://127.0.0.1:{port}/healthz", ok=404)  # the receiver listens
        stop = threading.Event()
        sender = threading.Thread(target=send_all, args=(stop,))
        sender.start()
        if kills < 4:
            time.sleep(rnd.uniform(0.1, 0.5))
            proc.stop(signal.SIGKILL)
            kills += 1
            stop.set()
            sender.join()
            acknowledged_at_kill.append(len(acknowledged))
        else:
            sender.join()
            # Replays of acknowledged deliveries after all the restarts are duplicates.
            with httpx.Client(timeout=5) as client:
                for body in bodies[:20]:
                    r = client.post(hook, content=body, headers=sign(body))
                    assert r.json()["result"] == "duplicate"
            deadline = time.monotonic() + 30
            text = ""
            want = expected_series(truth)
            total = sum(v for (m, _), v in want.items() if m == "whatsapp_webhook_messages_total")
            while time.monotonic() < deadline:
                text = httpx.get(url + "/metrics").text
                got = parse_exposition(text, {m for m, _ in want})
                if sum(v for (m, _), v in got.items()
                       if m == "whatsapp_webhook_messages_total") >= total:
                    break
                time.sleep(0.3)
            assert_counters_equal(got, want)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sink.bodies() != set(bodies):
                time.sleep(0.2)
            assert sink.bodies() == set(bodies)
            proc.stop()
    assert kills == 4
    # The kills landed mid-stream, not before the first or after the last delivery.
    assert any(0 < n < len(bodies) for n in acknowledged_at_kill), acknowledged_at_kill


def parse_exposition(text: str, metrics: set[str]):
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in metrics:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
