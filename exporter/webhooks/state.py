"""Webhook state in SQLite: a durable inbox, dedupe keys and counters, exactly once.

A delivery is acknowledged only after its body is committed to the inbox. Processing an inbox
row (dedupe, count, mark done) is one transaction, so a crash either leaves the row to be
processed again or has counted it and its dedupe keys together: nothing is lost or counted twice.
Dedupe keys live for a bounded window (Meta retries for up to 7 days; default 8).

Besides the counters (totals since the state file was made), messages are tallied per UTC month
of their status timestamp, so they can be compared with the polled month-to-date numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import structlog

from exporter.journal import Journal
from exporter.labels import CATEGORIES, DIRECTIONS, OTHER, PRICING_TYPES, bounded
from exporter.scheduler import month_start
from exporter.store import transaction
from exporter.webhooks.outbox import Outbox
from exporter.webhooks.parser import CallEvent, Event, StatusEvent, parse
from exporter.webhooks.ratecard import RateCard

log = structlog.get_logger("exporter.webhooks")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, body BLOB NOT NULL,
    sha TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_inbox_sha ON webhook_inbox (sha);
CREATE TABLE IF NOT EXISTS webhook_seen (key TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_seen_at ON webhook_seen (seen_at);
CREATE TABLE IF NOT EXISTS webhook_counters (
    metric TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (metric, labels));
CREATE TABLE IF NOT EXISTS webhook_months (
    month_start INTEGER NOT NULL, waba_id TEXT NOT NULL, channel_id TEXT NOT NULL,
    category TEXT NOT NULL, messages REAL NOT NULL, cost REAL NOT NULL,
    PRIMARY KEY (month_start, waba_id, channel_id, category));
CREATE TABLE IF NOT EXISTS webhook_baselines (
    month_start INTEGER NOT NULL, waba_id TEXT NOT NULL, channel_id TEXT NOT NULL,
    category TEXT NOT NULL, polled_messages REAL NOT NULL, polled_cost REAL NOT NULL,
    webhook_messages REAL NOT NULL, webhook_cost REAL NOT NULL,
    PRIMARY KEY (month_start, waba_id, channel_id, category));
CREATE TABLE IF NOT EXISTS webhook_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_dead (
    id INTEGER PRIMARY KEY, received_at REAL NOT NULL, body BLOB NOT NULL, error TEXT NOT NULL,
    failed_at REAL NOT NULL);
"""

STATUSES = frozenset({"sent", "delivered", "read", "failed", "played", "deleted", "warning"})
CALL_STATUSES = frozenset({"completed", "failed"})

MESSAGES = "messages"  # (waba_id, channel_id, category, pricing_type, billable)
STATUSES_METRIC = "statuses"  # (waba_id, channel_id, status)
CALLS = "calls"  # (waba_id, channel_id, direction, status)
CALL_SECONDS = "call_seconds"  # (waba_id, channel_id, direction)
COST = "cost"  # (waba_id, channel_id, category, currency)
CALL_COST = "call_cost"  # (waba_id, channel_id, direction, currency)
UNPRICED = "unpriced"  # (waba_id, channel_id, category): billable, but the card has no price

Labels = tuple[str, ...]
MonthKey = tuple[str, str, str]  # (waba_id, channel_id, category)
# (polled messages, polled cost, webhook messages, webhook cost) per category
Baseline = dict[str, tuple[float, float, float, float]]


@dataclass(frozen=True, slots=True)
class ChannelLabel:
    waba_id: str
    channel_id: str


def digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


class WebhookState:
    def __init__(
        self,
        path: Path | str,
        *,
        channel_of: Callable[[str], ChannelLabel | None],
        max_unmapped_channels: int = 100,
        dedupe_window_seconds: float = 8 * 86_400,
        rate_card: RateCard | None = None,
        forwarding: bool = False,
    ) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._channel_of = channel_of
        self._max_unmapped = max_unmapped_channels
        self._window = dedupe_window_seconds
        self._card = rate_card
        self.outbox = Outbox(self._db) if forwarding else None
        self.counters: dict[str, dict[Labels, float]] = {}
        # The same counters per (waba_id, channel_id), for the per-channel renderer; its journal
        # names the channels counted since the renderer last looked.
        self.by_channel: dict[tuple[str, str], dict[str, dict[Labels, float]]] = {}
        self.journal: Journal[tuple[str, str]] = Journal()
        # month_start -> (waba_id, channel_id, category) -> [messages, estimated cost]
        self.months: dict[int, dict[MonthKey, list[float]]] = {}
        for month, waba, channel, category, messages, cost in self._db.execute(
                "SELECT * FROM webhook_months"):
            self.months.setdefault(int(month), {})[(waba, channel, category)] = [
                float(messages), float(cost)]
        # (month_start, waba_id, channel_id) -> where both sources stood when the comparison began
        self.baselines: dict[tuple[int, str, str], Baseline] = {}
        for month, waba, channel, category, *values in self._db.execute(
                "SELECT * FROM webhook_baselines"):
            row = self.baselines.setdefault((int(month), waba, channel), {})
            if category:  # "" only marks a channel whose baseline has no categories
                row[category] = (float(values[0]), float(values[1]), float(values[2]),
                                 float(values[3]))
        first = self._db.execute(
            "SELECT value FROM webhook_meta WHERE key='first_received_at'").fetchone()
        self.first_received_at = None if first is None else float(first[0])
        self.version = 0
        self.pending = int(self._db.execute("SELECT COUNT(*) FROM webhook_inbox").fetchone()[0])
        self.dead = int(self._db.execute("SELECT COUNT(*) FROM webhook_dead").fetchone()[0])
        for metric, labels, value in self._db.execute("SELECT * FROM webhook_counters"):
            self._add(metric, tuple(json.loads(labels)), float(value))
        self._unmapped = {
            labels[1] for labels in self.counters.get(STATUSES_METRIC, {})
            if labels[1].startswith("pn_")
        } | {labels[1] for labels in self.counters.get(CALLS, {}) if labels[1].startswith("pn_")}

    def close(self) -> None:
        self._db.close()

    # -- request path ----------------------------------------------------------------------------

    def is_duplicate_delivery(self, body: bytes) -> bool:
        """The same bytes were accepted before, whether already counted or still waiting."""
        sha = hashlib.sha256(body).hexdigest()
        return self._db.execute(
            "SELECT 1 FROM webhook_seen WHERE key=? UNION ALL "
            "SELECT 1 FROM webhook_inbox WHERE sha=? LIMIT 1", ("d:" + sha, sha)).fetchone() \
            is not None

    def append(self, body: bytes, received_at: float,
               forward_headers: dict[str, str] | None = None) -> None:
        """Durably record an accepted delivery, and queue it for forwarding, in one commit:
        after this the 200 may go."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO webhook_inbox (received_at, body, sha) VALUES (?, ?, ?)",
                (received_at, body, hashlib.sha256(body).hexdigest()))
            if self.outbox is not None:
                self.outbox.add(body, forward_headers or {}, received_at)
            if self.first_received_at is None:
                self._db.execute("INSERT OR IGNORE INTO webhook_meta VALUES "
                                 "('first_received_at', ?)", (str(received_at),))
        self.pending += 1
        if self.first_received_at is None:
            self.first_received_at = received_at
        if self.outbox is not None:
            self.outbox.added(received_at)

    # -- processing ------------------------------------------------------------------------------

    def process_pending(self, now: float, limit: int = 500) -> int:
        """Count every recorded delivery not yet counted; return how many were processed."""
        rows = self._db.execute(
            "SELECT id, body FROM webhook_inbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        for row_id, body in rows:
            try:
                self._process(int(row_id), bytes(body), now)
            except sqlite3.Error:
                raise  # the store, not the row: leave it for the next round
            except Exception as exc:  # a row we cannot count must not wedge the ones after it
                log.exception("webhook_processing_failed", delivery=row_id)
                self._set_aside(int(row_id), f"{type(exc).__name__}: {exc}"[:300], now)
            self.pending = max(0, self.pending - 1)
        if rows:
            self.version += 1
        return len(rows)

    def _set_aside(self, row_id: int, error: str, now: float) -> None:
        """Keep the body in a dead-letter table (nothing acknowledged is thrown away)."""
        with self._transaction():
            self._db.execute("INSERT INTO webhook_dead SELECT id, received_at, body, ?, ? FROM "
                             "webhook_inbox WHERE id=?", (error, now, row_id))
            self._db.execute("DELETE FROM webhook_inbox WHERE id=?", (row_id,))
        self.dead += 1

    def _process(self, row_id: int, body: bytes, now: float) -> None:
        try:
            events = parse(json.loads(body))
        except ValueError:
            events = []  # validated before it was accepted; a schema change must not wedge us
        increments: dict[tuple[str, Labels], float] = {}
        tallies: dict[tuple[int, MonthKey], list[float]] = {}
        with self._transaction():
            self._seen("d:" + hashlib.sha256(body).hexdigest(), now)
            for event in events:
                for metric, labels, amount in self._count(event, now):
                    increments[(metric, labels)] = increments.get((metric, labels), 0) + amount
                    if metric in {MESSAGES, COST}:
                        # A message's month is its status time's (UTC, like the usage buckets).
                        month = month_start(event.timestamp or now)
                        tally = tallies.setdefault((month, (labels[0], labels[1], labels[2])),
                                                   [0.0, 0.0])
                        tally[metric == COST] += amount
            for (metric, labels), amount in increments.items():
                self._db.execute(
                    "INSERT INTO webhook_counters VALUES (?, ?, ?) ON CONFLICT(metric, labels) "
                    "DO UPDATE SET value = value + excluded.value",
                    (metric, json.dumps(labels), amount))
            for (month, key), (messages, cost) in tallies.items():
                self._db.execute(
                    "INSERT INTO webhook_months VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(month_start, waba_id, channel_id, category) DO UPDATE SET "
                    "messages = messages + excluded.messages, cost = cost + excluded.cost",
                    (month, *key, messages, cost))
            self._db.execute("DELETE FROM webhook_inbox WHERE id=?", (row_id,))
        for (metric, labels), amount in increments.items():
            self.journal.written(self._add(metric, labels, amount))
        for (month, key), (messages, cost) in tallies.items():
            tally = self.months.setdefault(month, {}).setdefault(key, [0.0, 0.0])
            tally[0] += messages
            tally[1] += cost

    def _add(self, metric: str, labels: Labels, amount: float) -> tuple[str, str]:
        family = self.counters.setdefault(metric, {})
        family[labels] = value = family.get(labels, 0.0) + amount
        key = (labels[0], labels[1])  # every family starts with waba_id, channel_id
        channel = self.by_channel.get(key)
        if channel is None:
            channel = self.by_channel[key] = {}
            self.journal.relayout()
        channel.setdefault(metric, {})[labels] = value
        return key

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self._db, immediate=True)

    def _seen(self, key: str, now: float) -> bool:
        """True if the key was seen before; records it otherwise (inside the transaction)."""
        cursor = self._db.execute("INSERT OR IGNORE INTO webhook_seen VALUES (?, ?)", (key, now))
        return cursor.rowcount == 0

    def _label(self, event: Event) -> ChannelLabel:
        mapped = self._channel_of(digits(event.display_phone_number))
        if mapped is not None:
            return mapped
        label = f"pn_{event.phone_number_id}" if event.phone_number_id else "pn_unknown"
        if label not in self._unmapped:
            if len(self._unmapped) >= self._max_unmapped:
                return ChannelLabel(OTHER, OTHER)  # pooled: no new series beyond the cap
            self._unmapped.add(label)
        return ChannelLabel(event.waba_id or "unknown", label)

    def _count(self, event: Event, now: float) -> list[tuple[str, Labels, float]]:
        where = self._label(event)
        out: list[tuple[str, Labels, float]] = []
        if isinstance(event, StatusEvent):
            status = bounded(event.status, STATUSES)
            if not self._seen(f"s:{event.message_id}:{event.status}", now):
                out.append((STATUSES_METRIC, (where.waba_id, where.channel_id, status), 1))
            if event.pricing is not None and not self._seen(f"m:{event.message_id}", now):
                p = event.pricing
                category = bounded(p.category, CATEGORIES)
                out.append((MESSAGES, (where.waba_id, where.channel_id, category,
                                       bounded(p.pricing_type, PRICING_TYPES),
                                       "true" if p.billable else "false"), 1))
                if p.billable and self._card is not None:
                    price = self._card.message_price(event.recipient_id, p.category)
                    if price is None:
                        out.append((UNPRICED, (where.waba_id, where.channel_id, category), 1))
                    else:
                        out.append((COST, (where.waba_id, where.channel_id, category,
                                           self._card.currency), float(price)))
        elif (isinstance(event, CallEvent) and event.event == "terminate"
              and not self._seen(f"c:{event.call_id}:terminate", now)):
            direction = bounded(event.direction, DIRECTIONS)
            status = bounded(event.status, CALL_STATUSES)
            out.append((CALLS, (where.waba_id, where.channel_id, direction, status), 1))
            out.append((CALL_SECONDS, (where.waba_id, where.channel_id, direction),
                        event.duration_seconds))
            if self._card is not None and event.duration_seconds > 0:
                # Meta bills business-initiated calls only, by the callee's market.
                price = (self._card.call_price(event.callee, event.duration_seconds)
                         if direction == "business_initiated" else Decimal(0))
                if price is not None:
                    out.append((CALL_COST, (where.waba_id, where.channel_id, direction,
                                            self._card.currency), float(price)))
        return out

    def set_baseline(self, month: int, waba_id: str, channel_id: str, rows: Baseline) -> None:
        """Record where polled and webhook numbers stood when comparing them began."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO webhook_baselines VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(month, waba_id, channel_id, category, *values)
                 for category, values in (rows or {"": (0.0, 0.0, 0.0, 0.0)}).items()])
        self.baselines[(month, waba_id, channel_id)] = dict(rows)

    def prune(self, now: float) -> None:
        self._db.execute("DELETE FROM webhook_seen WHERE seen_at < ?", (now - self._window,))
        # Reconciliation needs this month and the one before (during the month grace).
        keep = month_start(month_start(now) - 1)
        for table in ("webhook_months", "webhook_baselines"):
            self._db.execute(f"DELETE FROM {table} WHERE month_start < ?", (keep,))  # noqa: S608
        for month in [m for m in self.months if m < keep]:
            del self.months[month]
        for key in [k for k in self.baselines if k[0] < keep]:
            del self.baselines[key]
