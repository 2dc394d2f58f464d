"""Dedupe keys: what makes a delivery, a status, a message or a call count once.

A key is a pair: the event time that places it (Unix seconds; 0 where there is none) and its
text. Pure functions only; `WebhookState` looks keys up and writes them. A group message's
status and message keys also name the participant (one wamid, one charge per participant).

Where a key is stored: keys that carry their event's time go in a table ordered by that time
(`webhook_seen_t`). Statuses arrive in about the order of their timestamps, so a commit's new
keys land on the last page or two of that B-tree instead of one random page each. A retry of
the same event carries the same time, so it finds its key by (time, hash). Keys without such a
time (a message counted once over its statuses, a call's end, a delivery with no events), or
whose time is outside the dedupe window (a sender's clock far off), go in the hash-ordered table
(`webhook_seen_h`) with the time they were seen. Look-ups ask both tables, so the choice only
matters for where a key is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from exporter.webhooks.parser import CallEvent, Event, StatusEvent

Key = tuple[int, str]

# How far ahead of now an event time may be and still place its key by time.
FUTURE_SECONDS = 86_400


def key_hash(key: str) -> int:
    """Keys are stored as 64-bit hashes, the table's own integer key: a fifth of the size of
    the text, and one B-tree instead of two, which is most of what a busy commit writes. Among
    a billion keys, the chance of any collision is about 3 in 100 million."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big",
                          signed=True)


def timed_range(now: float, window: float) -> tuple[float, float]:
    """Event times (exclusive, inclusive) whose keys are stored by time; others by hash."""
    return now - window, now + FUTURE_SECONDS


def delivery_key(sha: str, events: Sequence[Event]) -> Key:
    """A delivery's bytes, placed by its latest event."""
    return max((event.timestamp for event in events), default=0), "d:" + sha


def _participant(event: StatusEvent) -> str:
    """The suffix that tells a group message's deliveries apart: Meta charges each participant's
    delivery (Groups API pricing), and one group message has one wamid for all of them. Empty
    for a message to one person, so those keys stay what earlier versions stored."""
    if event.recipient_type == "group" and event.participant_id:
        return ":" + event.participant_id
    return ""


def status_key(event: StatusEvent) -> Key:
    return event.timestamp, f"s:{event.message_id}:{event.status}{_participant(event)}"


def message_key(event: StatusEvent) -> Key:
    # Its statuses carry different times, so the key carries none.
    return 0, f"m:{event.message_id}{_participant(event)}"


def call_key(event: CallEvent) -> Key:
    return 0, f"c:{event.call_id}:terminate"  # billed: once per call, whatever time it carries
