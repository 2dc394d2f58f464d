"""The forwarding outbox: accepted bodies waiting to reach the user's own application.

Rows are written in the commit that counts the delivery (see `WebhookState.accept_many`), so a
delivery acknowledged to 360dialog is always on its way downstream too. A row leaves the table
only when the application answered 2xx or when it has waited longer than the maximum age (the
same 7 days Meta keeps retrying). Delivery is at least once: a crash between the downstream 2xx
and the delete sends that body again, with the same `X-Webhook-Delivery-Id`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, body BLOB NOT NULL,
    headers TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS webhook_outbox_next ON webhook_outbox (next_at);
"""


@dataclass(frozen=True, slots=True)
class Parcel:
    id: int
    received_at: float
    body: bytes
    headers: dict[str, str]
    attempts: int


class Outbox:
    """Table operations only; `Forwarder` decides when to send and what a failure means."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(_SCHEMA)
        self.depth = 0
        self.oldest_received_at: float | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read depth and the oldest row (after a round, and at start)."""
        count, oldest = self._db.execute(
            "SELECT COUNT(*), MIN(received_at) FROM webhook_outbox").fetchone()
        self.depth = int(count)
        self.oldest_received_at = None if oldest is None else float(oldest)

    def add(self, body: bytes, headers: dict[str, str], received_at: float) -> None:
        """Called inside the caller's transaction; counted in memory once it commits."""
        self._db.execute(
            "INSERT INTO webhook_outbox (received_at, body, headers, next_at) VALUES (?, ?, ?, ?)",
            (received_at, body, json.dumps(headers), received_at))

    def added(self, received_at: float) -> None:
        self.depth += 1
        if self.oldest_received_at is None:
            self.oldest_received_at = received_at

    def due(self, now: float, limit: int) -> list[Parcel]:
        rows = self._db.execute(
            "SELECT id, received_at, body, headers, attempts FROM webhook_outbox "
            "WHERE next_at <= ? ORDER BY next_at, id LIMIT ?", (now, limit)).fetchall()
        return [Parcel(int(i), float(r), bytes(b), dict(json.loads(h)), int(a))
                for i, r, b, h, a in rows]

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM webhook_outbox").fetchone()
        return None if row[0] is None else float(row[0])

    def remove(self, parcel_id: int) -> None:
        self._db.execute("DELETE FROM webhook_outbox WHERE id=?", (parcel_id,))

    def retry_at(self, parcel_id: int, when: float, error: str) -> None:
        self._db.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
            "WHERE id = ?", (when, error[:200], parcel_id))
