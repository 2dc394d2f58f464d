"""Dedupe keys: what each event is known by, where its key is placed, and the stored hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.webhooks.dedupe import (
    FUTURE_SECONDS,
    call_key,
    delivery_key,
    key_hash,
    message_key,
    status_key,
    timed_range,
)
from exporter.webhooks.parser import CallEvent, StatusEvent, parse

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"


def body(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def status(name: str) -> StatusEvent:
    (event,) = parse(body(name))
    assert isinstance(event, StatusEvent)
    return event


def test_a_status_is_known_by_message_and_status_at_its_own_time():
    """Two statuses of one message have two status keys, each placed at its timestamp, and
    one message key without a time."""
    sent, delivered = status("status_v24_sent_marketing"), status("status_v24_delivered_marketing")
    assert status_key(sent) == (1_782_000_000, "s:wamid.TEST0001MKT:sent")
    assert status_key(delivered) == (1_782_000_004, "s:wamid.TEST0001MKT:delivered")
    assert message_key(sent) == message_key(delivered) == (0, "m:wamid.TEST0001MKT")


def test_a_call_is_known_by_its_end_whatever_time_it_carries():
    """A call's key names its id and its terminate, and carries no time."""
    (event,) = parse(body("call_terminate_business_completed"))
    assert isinstance(event, CallEvent)
    assert call_key(event) == (0, "c:wacid.TEST0051CALL:terminate")


def test_a_delivery_is_placed_by_its_latest_event_or_by_hash_without_events():
    """A delivery's key names its bytes' digest at its latest event's time; with no events it
    has no time."""
    events = parse(body("status_group_read_group_utility_aggregated"))
    assert delivery_key("abc", events) == (max(e.timestamp for e in events), "d:abc")
    assert delivery_key("abc", []) == (0, "d:abc")


def test_a_retry_in_other_bytes_has_the_same_event_keys():
    """The same status relayed with other envelope fields keeps its status and message keys."""
    raw = body("status_v24_sent_marketing")
    raw["entry"][0]["changes"][0]["value"]["statuses"][0]["conversation"] = {"id": "c"}
    (again,) = parse(raw)
    assert isinstance(again, StatusEvent)
    first = status("status_v24_sent_marketing")
    assert (status_key(again), message_key(again)) == (status_key(first), message_key(first))


def test_the_stored_hash_never_changes():
    """Hashes are what the state file holds: the same text must give the same signed 64-bit
    integer in every version, or stored keys would stop deduplicating."""
    assert key_hash("s:wamid.t3:delivered") == 9_098_573_787_728_192_487
    assert key_hash("m:wamid.1") == -8_865_278_091_960_623_100
    assert -(2**63) <= key_hash("d:" + "f" * 64) < 2**63


def test_times_inside_the_window_or_up_to_a_day_ahead_are_placed_by_time():
    """A key is stored by its time when that time is after now minus the window and at most a
    day ahead of now."""
    assert FUTURE_SECONDS == 86_400
    assert timed_range(1_000_000.0, 8 * 86_400) == (1_000_000.0 - 8 * 86_400, 1_086_400.0)


def test_a_group_message_is_known_per_participant():
    """Two participants' statuses of one group wamid have their own status and message keys;
    a group status without a participant keeps the wamid's."""
    first, second = parse(body("status_group_read_group_utility_aggregated"))
    assert isinstance(first, StatusEvent)
    assert isinstance(second, StatusEvent)
    assert message_key(first) == (0, "m:wamid.TEST0021GRPUTL:4917600000022")
    assert message_key(second) == (0, "m:wamid.TEST0021GRPUTL:4917600000023")
    assert status_key(first)[1] != status_key(second)[1]
    sent = status("status_group_sent_no_participant")
    assert message_key(sent) == (0, "m:wamid.TEST0023GRPSENT")
