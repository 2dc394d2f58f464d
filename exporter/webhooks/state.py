"""Webhook state in SQLite: a durable inbox, dedupe keys and counters, exactly once.

A delivery is acknowledged only after its body is committed to the inbox. Processing a batch of
inbox rows (dedupe, count, mark done) is one transaction, so a crash either leaves the rows to be
processed again or has counted them and their dedupe keys together: nothing is lost or counted
twice. Dedupe keys live for a bounded window (Meta retries for up to 7 days; default 8).

Besides the counters (totals since the state file was made), messages are tallied per UTC month
of their status timestamp, so they can be compared with the polled month-to-date numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import structlog

from exporter.journal import Journal
from exporter.labels import CATEGORIES, DIRECTIONS, OTHER, PRICING_TYPES, bounded
from exporter.scheduler import month_start
from exporter.store import connect, transaction
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
CREATE TABLE IF NOT EXISTS webhook_seen_h (h INTEGER PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_seen_h_at ON webhook_seen_h (seen_at);
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


def _key_hash(key: str) -> int:
    """Dedupe keys are stored as 64-bit hashes, the table's own integer key: a fifth of the
    size of the text, and one B-tree instead of two, which at thousands of statuses a second
    is most of what a commit writes. Among a billion keys, the chance of any collision is
    about 3 in 100 million."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _delivery_key(sha: str) -> str:
    return "d:" + sha


def _status_key(event: StatusEvent) -> str:
    return f"s:{event.message_id}:{event.status}"


def _message_key(event: StatusEvent) -> str:
    return f"m:{event.message_id}"


def _call_key(event: CallEvent) -> str:
    return f"c:{event.call_id}:terminate"


def _dedupe_keys(delivery: str, events: list[Event]) -> list[str]:
    """Every key counting a delivery's events may ask about (see `WebhookState._count`)."""
    keys = [delivery]
    for event in events:
        if isinstance(event, StatusEvent):
            keys.append(_status_key(event))
            if event.pricing is not None:
                keys.append(_message_key(event))
        elif isinstance(event, CallEvent) and event.event == "terminate":
            keys.append(_call_key(event))
    return keys


class _BatchSeen:
    """Dedupe decisions for one batch: the stored keys it needs, looked up in one query, plus
    the keys first seen in the batch so far (a failed row's keys are dropped with it)."""

    def __init__(self, state: WebhookState, keys: list[str]) -> None:
        self._state = state
        hashes = {_key_hash(key) for key in keys}
        self._stored: set[int] = set()
        chunk = sorted(hashes)
        for i in range(0, len(chunk), 500):
            part = chunk[i:i + 500]
            self._stored.update(h for (h,) in state._db.execute(
                f"SELECT h FROM webhook_seen_h WHERE h IN ({','.join('?' * len(part))})",  # noqa: S608
                part))
        self.new: set[int] = set()
        self._row: set[int] = set()

    def start_row(self) -> None:
        self._row = set()

    def check(self, key: str) -> bool:
        """True if seen before; remembers it otherwise."""
        h = _key_hash(key)
        if h in self._stored or h in self.new or h in self._row:
            return True
        if self._state._seen_before_hashing(key):
            return True
        self._row.add(h)
        return False

    def keep_row(self) -> None:
        self.new |= self._row

    def drop_row(self) -> None:
        self._row = set()


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
        self._db = connect(str(path))
        # The dedupe index takes random keys: keep more of it in memory than the default 2 MB.
        self._db.execute("PRAGMA cache_size=-32768")
        self._db.executescript(_SCHEMA)
        self._legacy_seen = self._has_legacy_seen()
        self._channel_of = channel_of
        self._max_unmapped = max_unmapped_channels
        self._window = dedupe_window_seconds
        self._card = rate_card
        self.outbox = Outbox(self._db) if forwarding else None
        # The counters per (waba_id, channel_id) and family, as the per-channel renderer reads
        # them; the journal names the channels counted since it last looked.
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
            channel for (_, channel), families in self.by_channel.items()
            if channel.startswith("pn_") and (STATUSES_METRIC in families or CALLS in families)}

    def _has_legacy_seen(self) -> bool:
        return self._db.execute("SELECT 1 FROM webhook_seen LIMIT 1").fetchone() is not None

    def close(self) -> None:
        self._db.close()

    # -- request path ----------------------------------------------------------------------------

    def is_duplicate_delivery(self, body: bytes) -> bool:
        """The same bytes were accepted before, whether already counted or still waiting."""
        sha = hashlib.sha256(body).hexdigest()
        key = _delivery_key(sha)
        return self._db.execute(
            "SELECT 1 FROM webhook_seen_h WHERE h=? UNION ALL "
            "SELECT 1 FROM webhook_inbox WHERE sha=? LIMIT 1", (_key_hash(key), sha)
        ).fetchone() is not None or self._seen_before_hashing(key)

    def append(self, body: bytes, received_at: float,
               forward_headers: dict[str, str] | None = None) -> None:
        """Durably record an accepted delivery (see `append_many`)."""
        self.append_many([(body, received_at, forward_headers)])

    def append_many(
        self, deliveries: Sequence[tuple[bytes, float, dict[str, str] | None]]
    ) -> None:
        """Durably record accepted deliveries, and queue them for forwarding, in one commit:
        after this their 200s may go. The receiver gathers the requests that arrive together
        into one call, so a busy stream pays one commit per batch rather than per delivery."""
        if not deliveries:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO webhook_inbox (received_at, body, sha) VALUES (?, ?, ?)",
                [(received_at, body, hashlib.sha256(body).hexdigest())
                 for body, received_at, _ in deliveries])
            if self.outbox is not None:
                for body, received_at, headers in deliveries:
                    self.outbox.add(body, headers or {}, received_at)
            if self.first_received_at is None:
                self._db.execute("INSERT OR IGNORE INTO webhook_meta VALUES "
                                 "('first_received_at', ?)", (str(deliveries[0][1]),))
        self.pending += len(deliveries)
        if self.first_received_at is None:
            self.first_received_at = deliveries[0][1]
        if self.outbox is not None:
            for _, received_at, _ in deliveries:
                self.outbox.added(received_at)

    # -- processing ------------------------------------------------------------------------------

    def process_pending(self, now: float, limit: int = 500) -> int:
        """Count every recorded delivery not yet counted; return how many were processed.

        A batch of rows is counted in memory first: the dedupe keys it needs are looked up in
        one query, keys first seen in the batch are remembered as it goes, and a row that cannot
        be counted is set aside alone. Then one transaction writes the new keys, the counters
        (once per series) and the rows' removal from the inbox; the counters in memory change
        only after that commit. Only this method writes dedupe keys, so nothing can slip in
        between the look-up and the commit."""
        rows = self._db.execute(
            "SELECT id, body, sha FROM webhook_inbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        if not rows:
            return 0
        parsed: list[tuple[int, str, list[Event]]] = []  # (row id, delivery key, events)
        for row_id, raw, sha in rows:
            try:
                events = parse(json.loads(bytes(raw)))
            except ValueError:
                events = []  # validated before it was accepted: a schema change must not wedge
            parsed.append((int(row_id), _delivery_key(str(sha)), events))
        seen = _BatchSeen(self, [key for _, delivery, events in parsed
                                 for key in _dedupe_keys(delivery, events)])
        increments: dict[tuple[str, Labels], float] = {}
        tallies: dict[tuple[int, MonthKey], list[float]] = {}
        set_aside: list[tuple[str, float, int]] = []
        for row_id, delivery, events in parsed:
            seen.start_row()
            try:
                row_increments, row_tallies = self._process(delivery, events, now, seen.check)
            except Exception as exc:  # a row we cannot count must not wedge the others
                log.exception("webhook_processing_failed", delivery=row_id)
                seen.drop_row()
                set_aside.append((f"{type(exc).__name__}: {exc}"[:300], now, row_id))
                continue
            seen.keep_row()
            for series, amount in row_increments.items():
                increments[series] = increments.get(series, 0.0) + amount
            for where, (messages, cost) in row_tallies.items():
                tally = tallies.setdefault(where, [0.0, 0.0])
                tally[0] += messages
                tally[1] += cost
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO webhook_seen_h VALUES (?, ?)",
                                 [(h, now) for h in seen.new])
            # Kept in a dead-letter table: nothing acknowledged is thrown away.
            self._db.executemany("INSERT INTO webhook_dead SELECT id, received_at, body, ?, ? "
                                 "FROM webhook_inbox WHERE id=?", set_aside)
            self._db.executemany(
                "INSERT INTO webhook_counters VALUES (?, ?, ?) ON CONFLICT(metric, labels) "
                "DO UPDATE SET value = value + excluded.value",
                [(metric, json.dumps(labels), amount)
                 for (metric, labels), amount in increments.items()])
            self._db.executemany(
                "INSERT INTO webhook_months VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                "(month_start, waba_id, channel_id, category) DO UPDATE SET "
                "messages = messages + excluded.messages, cost = cost + excluded.cost",
                [(month, *key, messages, cost)
                 for (month, key), (messages, cost) in tallies.items()])
            self._db.executemany("DELETE FROM webhook_inbox WHERE id=?",
                                 [(row_id,) for row_id, _, _ in parsed])
        for (metric, labels), amount in increments.items():
            self.journal.written(self._add(metric, labels, amount))
        for (month, key), (messages, cost) in tallies.items():
            tally = self.months.setdefault(month, {}).setdefault(key, [0.0, 0.0])
            tally[0] += messages
            tally[1] += cost
        self.dead += len(set_aside)
        self.pending = max(0, self.pending - len(rows))
        self.version += 1
        return len(rows)

    def _process(self, delivery: str, events: list[Event], now: float,
                 seen: Callable[[str], bool]) -> tuple[
            dict[tuple[str, Labels], float], dict[tuple[int, MonthKey], list[float]]]:
        """One delivery's increments and month tallies; `seen` decides (and remembers) keys."""
        increments: dict[tuple[str, Labels], float] = {}
        tallies: dict[tuple[int, MonthKey], list[float]] = {}
        seen(delivery)
        for event in events:
            for metric, labels, amount in self._count(event, now, seen):
                increments[(metric, labels)] = increments.get((metric, labels), 0) + amount
                if metric in {MESSAGES, COST}:
                    # A message's month is its status time's (UTC, like the usage buckets).
                    month = month_start(event.timestamp or now)
                    tally = tallies.setdefault((month, (labels[0], labels[1], labels[2])),
                                               [0.0, 0.0])
                    tally[metric == COST] += amount
        return increments, tallies

    @property
    def counters(self) -> dict[str, dict[Labels, float]]:
        """Every counter by family, gathered from the per-channel ones (start-up and tests)."""
        out: dict[str, dict[Labels, float]] = {}
        for channel in self.by_channel.values():
            for metric, series in channel.items():
                out.setdefault(metric, {}).update(series)
        return out

    def _add(self, metric: str, labels: Labels, amount: float) -> tuple[str, str]:
        key = (labels[0], labels[1])  # every family starts with waba_id, channel_id
        channel = self.by_channel.get(key)
        if channel is None:
            channel = self.by_channel[key] = {}
            self.journal.relayout()
        family = channel.setdefault(metric, {})
        family[labels] = family.get(labels, 0.0) + amount
        return key

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self._db, immediate=True)

    def seen_before(self, key: str) -> bool:
        """Whether a dedupe key is stored (as its hash, or as text by an earlier version)."""
        return self._db.execute("SELECT 1 FROM webhook_seen_h WHERE h=?", (_key_hash(key),)
                                ).fetchone() is not None or self._seen_before_hashing(key)

    def _seen_before_hashing(self, key: str) -> bool:
        """Keys written as text by earlier versions, until they age out of the window."""
        if not self._legacy_seen:
            return False
        return self._db.execute("SELECT 1 FROM webhook_seen WHERE key=?", (key,)).fetchone() \
            is not None

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

    def _count(self, event: Event, now: float,
               seen: Callable[[str], bool]) -> list[tuple[str, Labels, float]]:
        where = self._label(event)
        out: list[tuple[str, Labels, float]] = []
        if isinstance(event, StatusEvent):
            status = bounded(event.status, STATUSES)
            if not seen(_status_key(event)):
                out.append((STATUSES_METRIC, (where.waba_id, where.channel_id, status), 1))
            if event.pricing is not None and not seen(_message_key(event)):
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
              and not seen(_call_key(event))):
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
        for table in ("webhook_seen", "webhook_seen_h"):
            self._db.execute(f"DELETE FROM {table} WHERE seen_at < ?",  # noqa: S608
                             (now - self._window,))
        self._legacy_seen = self._has_legacy_seen()
        # Reconciliation needs this month and the one before (during the month grace).
        keep = month_start(month_start(now) - 1)
        for table in ("webhook_months", "webhook_baselines"):
            self._db.execute(f"DELETE FROM {table} WHERE month_start < ?", (keep,))  # noqa: S608
        for month in [m for m in self.months if m < keep]:
            del self.months[month]
        for key in [k for k in self.baselines if k[0] < keep]:
            del self.baselines[key]
