"""The webhook receiver through its ASGI app: auth, bad input, exactly-once counting."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import sqlite3

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.config import Settings
from exporter.webhooks.dedupe import key_hash as _key_hash
from exporter.webhooks.receiver import WebhookAuth, webhook_app
from exporter.webhooks.state import MESSAGES, STATUSES_METRIC
from tests.component.webhooks_kit import (
    SECRET,
    Receiver,
    accept,
    call_body,
    fixture,
    fixture_names,
    record_as_earlier_version,
    status_body,
)


@pytest.fixture
def rx(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.state.close()


async def test_an_accepted_delivery_is_counted_once_before_its_answer(rx):
    """200 comes after the commit that counts the status and the billable message."""
    r = await rx.post(status_body())
    assert r.status_code == 200
    assert rx.state.pending == 0
    assert rx.count(STATUSES_METRIC, status="delivered") == 1
    key = ("104996122399160", "ch_A1", "marketing", "regular", "true")
    assert rx.state.counters[MESSAGES] == {key: 1}


async def test_retries_and_later_statuses_do_not_count_a_message_twice(rx):
    """A repeated delivery is a duplicate; 'read' after 'delivered' adds a status, not a message."""
    await rx.post(status_body())
    again = await rx.post(status_body())
    assert again.json()["result"] == "duplicate"
    await rx.post(status_body(status="read"))
    assert sum(rx.state.counters[MESSAGES].values()) == 1
    assert rx.count(STATUSES_METRIC) == 2
    assert rx.result("duplicate") == 1


async def test_a_restart_neither_loses_nor_double_counts(tmp_path):
    """Counters and dedupe keys persist; rows an earlier version recorded but had not counted
    are counted after the upgrade, once, even when Meta retried them meanwhile."""
    rx = Receiver(tmp_path)
    await rx.post(status_body("wamid.1"))
    record_as_earlier_version(rx.state, status_body("wamid.2"), 1.0)
    record_as_earlier_version(rx.state, status_body("wamid.3"), 1.0)
    rx.state.close()
    again = Receiver(tmp_path)
    assert again.state.pending == 2
    assert sum(again.state.counters[MESSAGES].values()) == 1
    retried = await again.post(status_body("wamid.3"))  # Meta's retry, before the inbox drains
    assert retried.json()["result"] == "ok"
    assert again.state.process_pending(now=2.0) == 2
    assert again.state.pending == 0
    assert sum(again.state.counters[MESSAGES].values()) == 3
    for wamid in ("wamid.1", "wamid.2", "wamid.3"):
        replay = await again.post(status_body(wamid))
        assert replay.json()["result"] == "duplicate"
    again.state.close()


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Webhook-Secret": "wrong"}, 401), ({"X-Webhook-Secret": ""}, 401)])
async def test_a_wrong_or_missing_secret_is_refused(rx, headers, expected):
    """Without the shared secret the body is not recorded."""
    assert (await rx.post(status_body(), headers)).status_code == expected
    assert rx.recorded() == 0
    assert rx.result("unauthorized") == 1


async def test_hmac_signatures_are_checked_on_the_raw_body(tmp_path):
    """X-Hub-Signature-256 must be the HMAC of the exact bytes received."""
    rx = Receiver(tmp_path, secret=None, hmac_secret="hmac-key")
    raw = json.dumps(status_body()).encode()
    good = "sha256=" + hmac.new(b"hmac-key", raw, hashlib.sha256).hexdigest()
    assert (await rx.post(None, {"X-Hub-Signature-256": good}, raw=raw)).status_code == 200
    assert (await rx.post(None, {"X-Hub-Signature-256": good}, raw=raw + b" ")).status_code == 401
    rx.state.close()


def _digest(raw: bytes, key: bytes = b"hmac-key") -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()


ENCODINGS = {
    "hex": lambda d: d.hex(),
    "HEX": lambda d: d.hex().upper(),
    "base64": lambda d: base64.b64encode(d).decode(),
    "base64, unpadded": lambda d: base64.b64encode(d).decode().rstrip("="),
    "urlsafe base64": lambda d: base64.urlsafe_b64encode(d).decode(),
    "urlsafe base64, unpadded": lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="),
}


@pytest.mark.parametrize("prefix", ["", "sha256="])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("header", ["x-360dialog-signature", "X-Hub-Signature-256"])
async def test_a_signature_is_read_in_any_encoding_from_either_header(tmp_path, header,
                                                                      encoding, prefix):
    """360dialog does not document its encoding: hex or base64 (standard or URL-safe, padded or
    not), with or without `sha256=`, in either header, verifies the exact body and no other."""
    rx = Receiver(tmp_path, secret=None, hmac_secret="hmac-key")
    raw = json.dumps(status_body()).encode()
    good = prefix + ENCODINGS[encoding](_digest(raw))
    assert (await rx.post(None, {header: good}, raw=raw)).status_code == 200
    other = json.dumps(status_body("wamid.2")).encode()
    assert (await rx.post(None, {header: good}, raw=other)).status_code == 401
    wrong_key = prefix + ENCODINGS[encoding](_digest(other, b"another-key"))
    assert (await rx.post(None, {header: wrong_key}, raw=other)).status_code == 401
    assert rx.result("unauthorized") == 2
    rx.state.close()


@pytest.mark.parametrize(("dialog", "meta", "expected"), [
    ("good", "good", 200), ("good", "bad", 200), ("bad", "good", 200), ("good", None, 200),
    (None, "good", 200), ("bad", "bad", 401), ("bad", None, 401), (None, None, 401),
    ("", None, 401), ("sha256=", None, 401), ("not a signature at all", "bad", 401),
    ("truncated", None, 401)])
async def test_a_delivery_passes_when_a_signature_it_carries_verifies(tmp_path, dialog, meta,
                                                                      expected):
    """With an HMAC secret, one verifying signature header of the two is enough; none, or only
    wrong or garbled ones, is 401 and records nothing."""
    rx = Receiver(tmp_path, secret=None, hmac_secret="hmac-key")
    raw = json.dumps(status_body()).encode()
    values = {"good": _digest(raw).hex(), "bad": _digest(raw + b" ").hex(),
              "truncated": _digest(raw).hex()[:40]}
    headers = {name: values.get(value, value) for name, value in (
        ("x-360dialog-signature", dialog), ("X-Hub-Signature-256", meta)) if value is not None}
    assert (await rx.post(None, headers, raw=raw)).status_code == expected
    if expected == 401:
        assert rx.recorded() == 0
    rx.state.close()


async def test_the_shared_secret_and_the_signature_are_both_required_when_both_are_set(
        tmp_path):
    """A configured header secret still has to match when the body's signature verifies."""
    rx = Receiver(tmp_path, hmac_secret="hmac-key")
    raw = json.dumps(status_body()).encode()
    signed = {"x-360dialog-signature": _digest(raw).hex()}
    assert (await rx.post(None, signed | {"X-Webhook-Secret": "wrong"}, raw=raw)
            ).status_code == 401
    assert (await rx.post(None, signed, raw=raw)).status_code == 200
    rx.state.close()


async def test_both_signatures_travel_to_the_application_by_default(tmp_path, monkeypatch):
    """With the default D360_WEBHOOK_FORWARD_HEADERS, 360dialog's and Meta's signature headers
    are forwarded with the body, so the application can verify what it receives."""
    monkeypatch.delenv("D360_WEBHOOK_FORWARD_HEADERS", raising=False)
    settings = Settings(webhook_secret=SecretStr(SECRET))
    rx = Receiver(tmp_path, forward_headers=settings.webhook_forward_headers)
    forwarded: list[dict[str, str] | None] = []
    real = rx.state.accept_many

    def accept_many(deliveries, now):
        forwarded.extend(d.forward_headers for d in deliveries)
        return real(deliveries, now)

    monkeypatch.setattr(rx.state, "accept_many", accept_many)
    raw = json.dumps(status_body()).encode()
    signed = {"x-360dialog-signature": _digest(raw).hex(),
              "X-Hub-Signature-256": "sha256=" + _digest(raw).hex()}
    assert (await rx.post(None, signed, raw=raw)).status_code == 200
    assert forwarded == [{"content-type": "application/json",
                          "x-360dialog-signature": _digest(raw).hex(),
                          "x-hub-signature-256": "sha256=" + _digest(raw).hex()}]
    rx.state.close()


@pytest.mark.parametrize("name", fixture_names())
async def test_every_documented_body_is_accepted(tmp_path, name):
    """Each fixture built from Meta's or 360dialog's documented examples gets 200, signed as
    360dialog signs (hex HMAC-SHA256 of the raw body in x-360dialog-signature)."""
    rx = Receiver(tmp_path, secret=None, hmac_secret="hmac-key")
    raw = json.dumps(fixture(name)).encode()
    r = await rx.post(None, {"x-360dialog-signature": _digest(raw).hex()}, raw=raw)
    assert (r.status_code, r.json()) == (200, {"result": "ok"})
    rx.state.close()


@pytest.mark.parametrize("name", ["call_status_ringing", "call_status_accepted",
                                  "call_status_rejected"])
async def test_call_statuses_are_not_message_statuses(rx, name):
    """RINGING, ACCEPTED and REJECTED under `calls` count no message status and no call."""
    assert (await rx.post(fixture(name))).status_code == 200
    assert rx.count(STATUSES_METRIC) == 0
    assert not rx.state.counters.get("calls")


@pytest.mark.parametrize(("path", "value"), [
    ("recipient_id", "x" * 57), ("recipient_id", "Y2FwaV9ncm91cDo" + "A" * 200),
    ("recipient_user_id", "BR." + "a1" * 64), ("recipient_parent_user_id", "US.ENT." + "9" * 128),
    ("recipient_participant_id", "4917600000021"), ("recipient_type", "group")])
async def test_ids_of_documented_lengths_are_never_refused(rx, path, value):
    """Group ids longer than a phone, and BSUIDs of 128 characters after the country, get 200."""
    body = status_body()
    body["entry"][0]["changes"][0]["value"]["statuses"][0][path] = value
    assert (await rx.post(body)).status_code == 200


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"entry": 5}', b'"text"',
                                 json.dumps({"object": "page", "entry": []}).encode(),
                                 b"[" * 5000 + b"]" * 5000])
async def test_malformed_bodies_get_400(rx, raw):
    """Bodies that are not JSON, or not a WhatsApp webhook, are 400 and recorded nowhere."""
    r = await rx.post(None, raw=raw)
    assert r.status_code == 400
    assert rx.recorded() == 0


async def test_wrong_types_get_400_naming_the_field(rx):
    """A field of the wrong type is refused with its path in the detail."""
    body = status_body()
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = {"when": "now"}
    r = await rx.post(body)
    assert r.status_code == 400
    assert "timestamp" in r.json()["detail"]


async def test_huge_bodies_get_413(rx):
    """Bodies over the limit are cut off with 413, declared or not."""
    big = status_body()
    big["padding"] = "x" * 70_000
    assert (await rx.post(big)).status_code == 413
    assert rx.result("too_large") == 1


async def test_unknown_categories_and_numbers_are_bounded(tmp_path):
    """An unknown category is 'other'; unmapped numbers beyond the cap pool into 'other'."""
    rx = Receiver(tmp_path, max_unmapped=2)
    for i in range(5):
        await rx.post(status_body(f"wamid.{i}", category="brand_new_category",
                                  number=f"1555000000{i}", pn_id=f"pn{i}"))
    channels = {k[1] for k in rx.state.counters[MESSAGES]}
    categories = {k[2] for k in rx.state.counters[MESSAGES]}
    assert channels == {"pn_pn0", "pn_pn1", "other"}
    assert categories == {"other"}
    assert sum(rx.state.counters[MESSAGES].values()) == 5
    rx.state.close()


async def test_v23_conversation_shape_is_accepted(rx):
    """A status with `conversation` and no pricing category takes the origin type."""
    body = status_body(pricing=False)
    s = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    s["conversation"] = {"id": "c1", "origin": {"type": "utility"}}
    s["pricing"] = {"billable": True, "pricing_model": "CBP"}
    assert (await rx.post(body)).status_code == 200
    assert {k[2] for k in rx.state.counters[MESSAGES]} == {"utility"}


async def test_calls_are_counted_once_when_they_end(rx):
    """A terminate event counts the call and its duration once; connect counts nothing."""
    await rx.post(call_body("connect", caller="4917600000000", callee="4915100000000"))
    await rx.post(call_body(status="COMPLETED", duration=56))
    await rx.post(call_body(status="COMPLETED", duration=56, timestamp="1751371201"))
    assert rx.state.counters["calls"] == {
        ("104996122399160", "ch_A1", "business_initiated", "completed"): 1}
    assert rx.state.counters["call_seconds"] == {
        ("104996122399160", "ch_A1", "business_initiated"): 56}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["object", "entry", "id", "changes", "field", "value", "metadata",
                         "statuses", "calls", "pricing", "status", "timestamp", "category",
                         "type", "billable", "duration", "event", "direction", "x",
                         "recipient_id", "recipient_type", "recipient_participant_id",
                         "participant_recipient_id", "recipient_user_id",
                         "recipient_parent_user_id", "contacts", "user_id", "wa_id",
                         "messages", "from", "to", "from_user_id", "to_user_id",
                         "group_id"]),
        children, max_size=5),
    max_leaves=30)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, mutate=st.booleans())
async def test_any_json_gets_a_2xx_or_a_4xx_never_a_5xx(rx, body, mutate):
    """Whatever JSON arrives, the answer is 200 or 400, and processing never raises."""
    if mutate:
        real = copy.deepcopy(status_body())
        real["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"] = body
        body = real
    elif isinstance(body, dict) and body.get("x"):
        # A documented body with one of its values replaced: the shapes the parser reads.
        real = copy.deepcopy(fixture("mixed_batch_group_and_individual"))
        real["entry"][0]["changes"][0]["value"] |= body
        body = real
    r = await rx.post(body)
    assert r.status_code in (200, 400)


WAMIDS = [f"wamid.{i}" for i in range(6)]
pricings = st.none() | st.tuples(
    st.sampled_from(["marketing", "utility", "service", "brand_new"]),
    st.sampled_from(["regular", "free_customer_service"]), st.booleans())
status_events = st.tuples(st.sampled_from(WAMIDS),
                          st.sampled_from(["sent", "delivered", "read", "failed", "odd"]),
                          pricings)


def delivery(events):
    body = status_body()
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"] = []
    for wamid, status, pricing in events:
        s = {"id": wamid, "status": status, "timestamp": "1751371200", "recipient_id": "49176"}
        if pricing is not None:
            category, ptype, billable = pricing
            s["pricing"] = {"category": category, "type": ptype, "billable": billable,
                            "pricing_model": "PMP"}
        value["statuses"].append(s)
    return body


@settings(max_examples=60, deadline=None)
@given(deliveries=st.lists(st.lists(status_events, min_size=1, max_size=4), min_size=1,
                           max_size=8),
       repeats=st.lists(st.integers(0, 7), max_size=4))
async def test_generated_streams_are_counted_like_the_model(tmp_path_factory, deliveries,
                                                            repeats):
    """Any stream of valid deliveries, with verbatim repeats, counts each (message, status)
    once and each message once, on its first delivered or read status with pricing, as a
    plain model does."""
    rx = Receiver(tmp_path_factory.mktemp("prop"))
    order = deliveries + [deliveries[i] for i in repeats if i < len(deliveries)]
    for events in order:
        assert (await rx.post(delivery(events))).status_code == 200
    statuses: dict[str, int] = {}
    messages: dict[tuple[str, str, str], int] = {}
    seen: set[object] = set()
    for events in deliveries:
        for wamid, status, pricing in events:
            bounded = status if status != "odd" else "other"
            if (wamid, status) not in seen:
                seen.add((wamid, status))
                statuses[bounded] = statuses.get(bounded, 0) + 1
            # Meta charges delivered messages: pricing on `sent` (or `failed`) counts none.
            if pricing is not None and status in {"delivered", "read"} and wamid not in seen:
                seen.add(wamid)
                category, ptype, billable = pricing
                key = (category if category != "brand_new" else "other", ptype,
                       "true" if billable else "false")
                messages[key] = messages.get(key, 0) + 1
    got_statuses = {k[2]: v for k, v in rx.state.counters.get(STATUSES_METRIC, {}).items()}
    got_messages = {k[2:]: v for k, v in rx.state.counters.get(MESSAGES, {}).items()}
    assert got_statuses == statuses
    assert got_messages == messages
    rx.state.close()


async def test_a_status_or_call_without_its_id_is_400(rx):
    """An event without the id that deduplication needs cannot be counted once: 400."""
    body = status_body()
    del body["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    r = await rx.post(body)
    assert r.status_code == 400
    assert "statuses[0].id is required" in r.json()["detail"]
    call = call_body(status="COMPLETED", duration=5)
    del call["entry"][0]["changes"][0]["value"]["calls"][0]["id"]
    assert (await rx.post(call)).status_code == 400
    assert rx.recorded() == 0


async def test_a_trickling_body_is_cut_off_with_408(tmp_path):
    """A sender that never finishes its body (slow loris) gets 408 after the read timeout."""
    rx = Receiver(tmp_path)
    app = webhook_app(rx.state, WebhookAuth(header="X-Webhook-Secret", secret=SECRET,
                                            hmac_secret=None),
                      rx.requests, now=lambda: 1.0, max_body_bytes=64 * 1024,
                      read_timeout_seconds=0.2)

    async def trickle():
        yield b'{"object": "whatsapp_business_account", '
        await asyncio.sleep(5)
        yield b'"entry": []}'

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
        r = await client.post("/webhook", content=trickle(),
                              headers={"X-Webhook-Secret": SECRET})
    assert r.status_code == 408
    assert rx.result("timeout") == 1
    assert rx.recorded() == 0
    rx.state.close()


async def test_other_paths_methods_and_a_vanished_client_get_4xx(rx):
    """The receiver is a bare ASGI app: it answers what a framework's router would, and a
    client that leaves mid-body is counted as malformed, with nothing recorded."""
    transport = httpx.ASGITransport(app=rx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
        r = await client.get("/webhook")
        assert (r.status_code, r.headers["allow"]) == (405, "POST")
        assert (await client.post("/elsewhere", content=b"{}")).status_code == 404

    async def gone() -> dict[str, object]:
        return {"type": "http.disconnect"}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await rx.app({"type": "http", "path": "/webhook", "method": "POST", "headers": [
        (b"x-webhook-secret", SECRET.encode())]}, gone, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"result": "malformed",  # type: ignore[arg-type]
                                           "detail": "the client went away mid-body"}
    assert rx.result("malformed") == 1
    assert rx.recorded() == 0


async def test_a_timestamp_that_cannot_be_a_date_is_400(rx):
    """Seconds past the year 9999 would break calendar math later: refused up front."""
    body = status_body()
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = "4977423000000"
    r = await rx.post(body)
    assert r.status_code == 400
    assert "not a unix time" in r.json()["detail"]


async def test_a_delivery_that_cannot_be_counted_is_set_aside_not_lost(rx, monkeypatch):
    """A delivery whose counting raises is answered 200 and kept in the dead-letter table; the
    deliveries committed with it count, and a legacy inbox row does the same."""
    real = rx.state._count

    def count(event, now, seen):
        if event.message_id.startswith("wamid.poison"):
            raise RuntimeError("a bug we have not met yet")
        return real(event, now, seen)

    monkeypatch.setattr(rx.state, "_count", count)
    transport = httpx.ASGITransport(app=rx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
        answers = await asyncio.gather(*(client.post("/webhook", content=json.dumps(
            status_body(wamid)).encode(), headers={"Content-Type": "application/json",
                                                   "X-Webhook-Secret": SECRET})
            for wamid in ("wamid.before", "wamid.poison", "wamid.after")))
    assert [a.json()["result"] for a in answers] == ["ok"] * 3
    record_as_earlier_version(rx.state, status_body("wamid.poison.2"), 1.0)
    record_as_earlier_version(rx.state, status_body("wamid.fine"), 1.0)
    assert rx.state.process_pending(now=1.0) == 2
    assert rx.state.dead == 2
    assert rx.state.pending == 0
    assert sum(rx.state.counters[MESSAGES].values()) == 3
    kept = rx.state._db.execute("SELECT error, body FROM webhook_dead ORDER BY id").fetchall()
    assert [error for error, _ in kept] == ["RuntimeError: a bug we have not met yet"] * 2
    assert b"wamid.poison" in kept[0][1]
    # The poison deliveries' dedupe keys went with them; those either side were counted.
    assert not rx.state.seen_before("m:wamid.poison")
    assert rx.state.seen_before("m:wamid.before")
    assert rx.state.seen_before("m:wamid.after")
    assert rx.state.seen_before("m:wamid.fine")


class _FailingCommits:
    """The state's connection, except that COMMIT fails (a full disk, say)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


async def test_requests_arriving_together_share_one_commit(rx, monkeypatch):
    """Concurrent deliveries are counted and recorded in a few commits, each answered only
    after its own commit; a duplicate inside one batch is answered as one; a failing commit
    answers all of its requests 503, counts none of them and leaves nothing half written."""
    commits = []
    real = rx.state.accept_many

    def accept_many(deliveries, now):
        commits.append(len(deliveries))
        return real(deliveries, now)

    monkeypatch.setattr(rx.state, "accept_many", accept_many)
    transport = httpx.ASGITransport(app=rx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wh") as client:
        async def post(i):
            return await client.post("/webhook", content=json.dumps(
                status_body(f"wamid.g{i}")).encode(), headers={
                "Content-Type": "application/json", "X-Webhook-Secret": SECRET})

        answers = await asyncio.gather(*(post(i) for i in [*range(40), 7]))
        assert [a.status_code for a in answers] == [200] * 41
        assert sorted(a.json()["result"] for a in answers).count("duplicate") == 1
        assert sum(commits) == 41
        assert len(commits) < 41
        assert sum(rx.state.counters[MESSAGES].values()) == 40
        keys = rx.recorded()

        db = rx.state._db
        rx.state._db = _FailingCommits(db)
        answers = await asyncio.gather(*(post(i) for i in range(40, 45)))
        assert [a.status_code for a in answers] == [503] * 5
        rx.state._db = db
        assert rx.recorded() == keys
        assert sum(rx.state.counters[MESSAGES].values()) == 40
        answers = await asyncio.gather(*(post(i) for i in range(40, 45)))  # Meta's retries
        assert [a.json()["result"] for a in answers] == ["ok"] * 5
    assert sum(rx.state.counters[MESSAGES].values()) == 45


def test_a_failed_commit_changes_nothing_in_memory(rx, monkeypatch):
    """Counters in memory change only after the commit: what /metrics shows never runs ahead
    of what a restart would load."""
    accept(rx.state, status_body("wamid.1"), 1.0)
    before = rx.state.counters, rx.state.version
    monkeypatch.setattr(rx.state, "_write", lambda batch: (_ for _ in ()).throw(
        sqlite3.OperationalError("database or disk is full")))
    with pytest.raises(sqlite3.OperationalError):
        accept(rx.state, status_body("wamid.2"), 1.0)
    assert (rx.state.counters, rx.state.version) == before
    monkeypatch.undo()
    assert accept(rx.state, status_body("wamid.2"), 1.0)
    assert sum(rx.state.counters[MESSAGES].values()) == 2


async def test_text_dedupe_keys_of_earlier_versions_still_count(rx):
    """Keys written as text before they were hashed keep deduplicating until they age out."""
    rx.state._db.execute("INSERT INTO webhook_seen VALUES ('m:wamid.old', 1751371200)")
    rx.state._db.execute("INSERT INTO webhook_seen VALUES ('s:wamid.old:sent', 1751371200)")
    rx.state._legacy_seen = rx.state._has_legacy_seen()
    await rx.post(status_body("wamid.old", "sent"))
    await rx.post(status_body("wamid.old", "delivered"))
    assert sum(rx.state.counters.get(MESSAGES, {}).values()) == 0  # counted before
    assert rx.count(STATUSES_METRIC, status="delivered") == 1
    assert rx.count(STATUSES_METRIC, status="sent") == 0
    rx.state.prune(1_751_371_200 + 9 * 86_400)
    assert not rx.state._legacy_seen


def _tables(state):
    state.fold()  # keys wait in the log until folded
    return {table: state._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("webhook_seen_t", "webhook_seen_h")}


def test_status_keys_are_placed_by_their_time_and_found_wherever_they_are(rx):
    """A status (and its delivery) is keyed by its own timestamp in the time-ordered table; a
    message, and a status whose time is outside the window, by hash alone. A retry in another
    envelope finds each, and so do keys that earlier builds wrote by hash; pruning ages both."""
    now = 1_751_371_300.0
    body = status_body("wamid.t1", "read")  # read with pricing: a message key too
    assert accept(rx.state, body, now)
    assert _tables(rx.state) == {"webhook_seen_t": 2, "webhook_seen_h": 1}  # d: and s:; m:
    assert rx.state.seen_before("s:wamid.t1:read", at=1_751_371_200)
    again = copy.deepcopy(body)
    again["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "1098765432"
    again["entry"][0]["id"] = "104996122399160"
    again["entry"][0]["changes"][0]["value"]["statuses"][0]["conversation"] = {"id": "c"}
    assert accept(rx.state, again, now)  # other bytes, so another delivery; nothing counts
    assert rx.count(STATUSES_METRIC) == 1
    assert sum(rx.state.counters[MESSAGES].values()) == 1

    far = status_body("wamid.t2", "read")
    far["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = "1000"
    assert accept(rx.state, far, now)
    assert accept(rx.state, far | {"x": 1}, now)
    assert rx.count(STATUSES_METRIC) == 2
    assert _tables(rx.state)["webhook_seen_h"] == 5  # and wamid.t2's s:, m: and two d: keys

    # Written by hash alone, as builds before the time-ordered table did.
    rx.state._db.execute("INSERT INTO webhook_seen_h VALUES (?, ?)",
                         (_key_hash("s:wamid.t3:delivered"), now))
    assert accept(rx.state, status_body("wamid.t3", "delivered"), now)
    assert rx.count(STATUSES_METRIC, status="delivered") == 0
    assert sum(rx.state.counters[MESSAGES].values()) == 3  # its message had not been seen

    rx.state.prune(1_751_371_200 + 9 * 86_400)
    assert _tables(rx.state) == {"webhook_seen_t": 0, "webhook_seen_h": 0}
