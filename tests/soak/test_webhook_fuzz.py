"""Soak: 100,000 hostile webhook deliveries against the real process, over HTTP. Run with
`./tests/run.sh -m soak` (SOAK_WEBHOOK_CASES changes the count).

Every answer is a 2xx or a 4xx, nothing is set aside as uncountable, the label values stay
inside their bounds (so the series count is bounded), and resident memory stays flat.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporter.labels import CATEGORIES, DIRECTIONS, OTHER, PRICING_TYPES
from exporter.webhooks.state import CALL_STATUSES, STATUSES
from tests.e2e.conftest import Proc, base_env, free_port, wait_http
from tests.e2e.webhook_stream import Sink

pytestmark = pytest.mark.soak

CASES = int(os.environ.get("SOAK_WEBHOOK_CASES", "100000"))
SECRET = "soak-secret"
MAX_UNMAPPED = 50
MAX_BODY = 16 * 1024

texts = st.text(max_size=40) | st.sampled_from(
    ["marketing", "utility", "service", "MARKETING", "sent", "read", "terminate",
     "BUSINESS_INITIATED", "regular", "", "4915100000000", "x" * 300])
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | texts
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    texts, c, max_size=4), max_leaves=20)


def field(good):
    """A plausible value about 97 times in 100, anything otherwise, so whole bodies often pass.
    (one_of would pick the junk branch far more often: hypothesis dedupes equal branches.)"""
    return st.tuples(st.integers(0, 99), good, json_values).map(
        lambda t: t[2] if t[0] in {13, 37, 71} else t[1])


statuses = st.fixed_dictionaries({
    "id": field(st.text(min_size=1, max_size=20)),
    "status": field(st.sampled_from([*STATUSES, "exploded"])),
    "timestamp": field(st.integers(0, 2**33).map(str)),
    "recipient_id": field(st.from_regex(r"[0-9]{6,15}", fullmatch=True)),
    "pricing": field(st.fixed_dictionaries({
        "billable": field(st.booleans()),
        "category": field(st.sampled_from([*CATEGORIES, "brand_new"]) | st.text(max_size=12)),
        "type": field(st.sampled_from([*PRICING_TYPES, "odd"])),
        "pricing_model": field(st.just("PMP"))})),
})
calls = st.fixed_dictionaries({
    "id": field(st.text(min_size=1, max_size=20)),
    "event": field(st.sampled_from(["connect", "terminate", "ring"])),
    "direction": field(st.sampled_from([*DIRECTIONS, "sideways"]).map(str.upper)),
    "status": field(st.sampled_from([*CALL_STATUSES, "lost"]).map(str.upper)),
    "duration": field(st.integers(0, 10**6)),
    "to": field(st.from_regex(r"[0-9]{6,15}", fullmatch=True)),
})
bodies = st.fixed_dictionaries({
    "object": field(st.just("whatsapp_business_account")),
    "entry": field(st.lists(st.fixed_dictionaries({
        "id": field(st.from_regex(r"[0-9]{1,16}", fullmatch=True)),
        "changes": field(st.lists(st.fixed_dictionaries({
            "field": field(st.sampled_from(["messages", "calls", "account_update"])),
            "value": field(st.fixed_dictionaries({
                "metadata": field(st.fixed_dictionaries({
                    "display_phone_number": field(st.from_regex(r"[0-9]{8,13}", fullmatch=True)
                                                  | st.just("4915100000000")),
                    "phone_number_id": field(st.from_regex(r"[0-9]{1,15}", fullmatch=True))})),
                "statuses": field(st.lists(statuses, max_size=4)),
                "calls": field(st.lists(calls, max_size=2))}))}), max_size=3))}), max_size=2)),
})
raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    bodies.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.just(b"[" * 20_000),  # deeper than the JSON parser may recurse
    st.just(b'{"object": "whatsapp_business_account", "pad": "' + b"x" * 20_000 + b'"}'),
)
header_sets = st.fixed_dictionaries({
    "X-Webhook-Secret": st.sampled_from([SECRET] * 17 + ["", "wrong", SECRET.upper()]),
    "Content-Type": st.sampled_from(["application/json"] * 7 + [
        "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded"]),
})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    """The real exporter, webhook-only, with a rate card and forwarding to a sink."""
    tmp = tmp_path_factory.mktemp("soak")
    card = tmp / "card.toml"
    card.write_text('currency = "USD"\n[markets.DE]\ncalling_codes = ["49"]\n'
                    'marketing = 0.1\ncall_per_minute = 0.06\n')
    sink = Sink()
    port, hook_port = free_port(), free_port()
    env = base_env(tmp) | {
        "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{hook_port}",
        "D360_WEBHOOK_SECRET": SECRET, "D360_WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
        "D360_WEBHOOK_MAX_UNMAPPED_CHANNELS": str(MAX_UNMAPPED),
        "D360_WEBHOOK_RATE_CARD": str(card), "D360_WEBHOOK_FORWARD_URL": sink.url,
        "D360_LOG_LEVEL": "error"}
    proc = Proc([sys.executable, "-m", "exporter"], env, tmp / "exporter.log")
    wait_http(f"http://127.0.0.1:{port}/healthz")
    stats = {"cases": 0, "codes": {}, "rss_warm": 0.0, "pid": proc.popen.pid,
             "metrics": f"http://127.0.0.1:{port}/metrics"}
    client = httpx.Client(base_url=f"http://127.0.0.1:{hook_port}", timeout=10)
    yield client, stats, sink
    client.close()
    assert proc.stop() == 0
    sink.stop()


@settings(max_examples=CASES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(raw=raw_bodies, headers=header_sets)
def test_hostile_deliveries(receiver, raw, headers):
    """Any bytes with any of these headers get a 2xx or a 4xx from the real receiver."""
    client, stats, _ = receiver
    if stats["cases"] == CASES // 10:
        stats["rss_warm"] = rss_mb(stats["pid"])
    r = client.post("/webhook", content=raw, headers={k: v for k, v in headers.items() if v})
    assert r.status_code < 500, r.text
    stats["codes"][r.status_code] = stats["codes"].get(r.status_code, 0) + 1
    stats["cases"] += 1


def test_bounds_after_the_soak(receiver):
    """After the run the process is alive, has counted everything, keeps every label value
    inside its bounds, and its memory stayed flat after the first tenth of the cases."""
    _, stats, sink = receiver
    deadline = time.monotonic() + 60
    families: dict[str, list[Sample]] = {}
    while time.monotonic() < deadline:
        text = httpx.get(stats["metrics"]).text
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        if families["whatsapp_exporter_webhook_inbox_pending"][0].value == 0:
            break
        time.sleep(0.5)
    assert families["whatsapp_exporter_webhook_inbox_pending"][0].value == 0
    assert families["whatsapp_exporter_webhook_dead_letters"][0].value == 0
    assert stats["cases"] >= CASES * 0.99
    webhook = [s for name, samples in families.items() if name.startswith("whatsapp_webhook_")
               for s in samples]
    channels = {s.labels["channel_id"] for s in webhook}
    assert len(channels - {"ch_A1", OTHER}) <= MAX_UNMAPPED
    assert {s.labels["category"] for s in webhook if "category" in s.labels} <= CATEGORIES | {
        OTHER}
    assert {s.labels["status"] for s in webhook if "status" in s.labels} <= (
        STATUSES | CALL_STATUSES | {OTHER})
    rss = rss_mb(stats["pid"])
    results = {s.labels["result"]: int(s.value)
               for s in families["whatsapp_exporter_webhook_requests"]}
    print(f"\nsoak: cases={stats['cases']} codes={stats['codes']} results={results} "
          f"webhook_series={len(webhook)} channels={len(channels)} "
          f"forwarded={len(sink.received)} rss_mb={stats['rss_warm']:.1f}->{rss:.1f}")
    assert rss - stats["rss_warm"] < 50
