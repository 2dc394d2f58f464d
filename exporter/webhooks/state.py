"""Webhook state in SQLite: dedupe keys and counters, exactly once.

A delivery is counted in the commit that records it, and acknowledged only after that commit:
its dedupe keys, counter increments, month tallies (and forwarding row) are written together,
so a crash either loses the unacknowledged delivery (Meta retries it) or has counted it once.
A batch's keys and increments go in as one row of a log (`webhook_log`), folded into the key,
counter and month tables every second or so (`fold`), and at start-up before anything is read:
upserting each series and inserting each key in every batch's commit wrote some 86 pages to
the WAL per batch at 10,000 channels, most of the request path's cost, where a fold writes each
touched page once for hundreds of batches. Keys in the log are looked up in memory until folded.
Dedupe keys live for a bounded window (Meta retries for up to 7 days; default 8). The inbox
table holds only rows that versions before counting-at-acceptance recorded and had not yet
counted; they are counted at start-up.

Besides the counters (totals since the state file was made), messages are tallied per UTC month
of their status timestamp, so they can be compared with the polled month-to-date numbers.

What an event counts is decided in `counting`, and its dedupe keys are made in `dedupe`; this
module holds the schema, the batch look-ups of those keys and the transactions around them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from exporter.calendar import month_start
from exporter.db import StateError, connect, transaction
from exporter.labels import OTHER
from exporter.metrics.journal import Journal
from exporter.webhooks.counting import (
    CALL_COST,
    CALL_SECONDS,
    CALL_STATUSES,
    CALLS,
    COST,
    MESSAGES,
    META_COST,
    STATUSES,
    STATUSES_METRIC,
    UNPRICED,
    ChannelLabel,
    Count,
    Increments,
    Labels,
    MonthKey,
    Seen,
    Tallies,
    count,
    count_delivery,
    keys_asked,
)
from exporter.webhooks.dedupe import Key, delivery_key, key_hash, timed_range
from exporter.webhooks.dedupe import key_hash as _key_hash  # noqa: F401 - tests use this name
from exporter.webhooks.outbox import Outbox
from exporter.webhooks.parser import Delivery, Event, parse
from exporter.webhooks.ratecard import RateCard

# The counting names are re-exported: callers and tests that know them from here keep working.
__all__ = [
    "CALLS", "CALL_COST", "CALL_SECONDS", "CALL_STATUSES", "COST", "MESSAGES", "META_COST",
    "STATUSES",
    "STATUSES_METRIC", "UNPRICED", "Baseline", "ChannelLabel", "Delivery", "WebhookState",
    "digits",
]

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
CREATE TABLE IF NOT EXISTS webhook_seen_t (
    t INTEGER NOT NULL, h INTEGER NOT NULL, PRIMARY KEY (t, h)) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS webhook_log (id INTEGER PRIMARY KEY, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_dead (
    id INTEGER PRIMARY KEY, received_at REAL NOT NULL, body BLOB NOT NULL, error TEXT NOT NULL,
    failed_at REAL NOT NULL);
"""

# (polled messages, polled cost, webhook messages, webhook cost) per category
Baseline = dict[str, tuple[float, float, float, float]]


class _BatchSeen:
    """Dedupe decisions for one batch: the stored keys it needs, looked up in one query, plus
    the keys first seen in the batch so far (a failed row's keys are dropped with it)."""

    def __init__(self, state: WebhookState, keys: list[Key], now: float) -> None:
        self._state = state
        self._hashes = {text: key_hash(text) for _, text in keys}
        self._timed = timed_range(now, state._window)
        # Every key is asked of the hash-ordered table: those without a time are there, and so
        # is every key that versions before the time-ordered table wrote.
        self._stored: set[int] = set()
        chunk = sorted(set(self._hashes.values()))
        for i in range(0, len(chunk), 500):
            part = chunk[i:i + 500]
            self._stored.update(h for (h,) in state._db.execute(
                f"SELECT h FROM webhook_seen_h WHERE h IN ({','.join('?' * len(part))})",  # noqa: S608
                part))
        pairs = sorted({(t, self._hashes[text]) for t, text in keys if t})
        self._stored_timed: set[tuple[int, int]] = set()
        for i in range(0, len(pairs), 250):
            few = pairs[i:i + 250]
            self._stored_timed.update(state._db.execute(
                "WITH k(t, h) AS (VALUES " + ",".join(["(?,?)"] * len(few)) + ") "  # noqa: S608
                "SELECT s.t, s.h FROM k JOIN webhook_seen_t s ON s.t = k.t AND s.h = k.h",
                [v for pair in few for v in pair]))
        # Keys first seen in this batch, by hash: where each will be written (its time, or 0).
        self.new: dict[int, int] = {}
        self._row: dict[int, int] = {}

    def start_row(self) -> None:
        self._row = {}

    def check(self, key: Key) -> bool:
        """True if seen before; remembers it otherwise."""
        t, text = key
        h = self._hashes.get(text)
        if h is None:
            h = self._hashes[text] = key_hash(text)
        if h in self._stored or (t, h) in self._stored_timed or h in self.new or h in self._row:
            return True
        if self._state._unfolded.holds(t, h):
            return True
        if self._state._seen_before_hashing(text):
            return True
        early, late = self._timed
        self._row[h] = t if early < t <= late else 0
        return False

    def keep_row(self) -> None:
        self.new |= self._row

    def drop_row(self) -> None:
        self._row = {}


class _Batch:
    """Deliveries counted together, in memory, before the one transaction that writes them.

    The dedupe keys the batch needs are looked up in one query; keys first seen in the batch are
    remembered as it goes; a delivery already seen as a whole is a duplicate and adds nothing;
    a delivery whose counting raises is set aside alone, its keys dropped with it."""

    def __init__(self, state: WebhookState, deliveries: list[tuple[Key, list[Event]]],
                 now: float) -> None:
        self.now = now
        self.seen = _BatchSeen(state, [key for delivery, events in deliveries
                                       for key in keys_asked(delivery, events)], now)
        self.increments: Increments = {}
        self.tallies: Tallies = {}
        self.duplicates: list[bool] = []
        self.set_aside: list[tuple[int, str]] = []  # (index, error)
        for index, (delivery, events) in enumerate(deliveries):
            self.seen.start_row()
            if self.seen.check(delivery):
                self.duplicates.append(True)
                continue
            self.duplicates.append(False)
            try:
                row_increments, row_tallies = count_delivery(events, now, state._count,
                                                             self.seen.check)
            except Exception as exc:  # a delivery we cannot count must not wedge the others
                log.exception("webhook_processing_failed", delivery=delivery)
                self.seen.drop_row()
                self.set_aside.append((index, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            self.seen.keep_row()
            _sum_into(self.increments, self.tallies, row_increments, row_tallies)

    @property
    def records(self) -> bool:
        """Whether the batch has anything to record: new keys, increments or tallies."""
        return bool(self.seen.new or self.increments or self.tallies)


def _sum_into(increments: Increments, tallies: Tallies, more: Increments,
              more_tallies: Tallies) -> None:
    """Add `more` increments and `more_tallies` to `increments` and `tallies`, per series."""
    for series, amount in more.items():
        increments[series] = increments.get(series, 0.0) + amount
    for where, (messages, cost) in more_tallies.items():
        tally = tallies.setdefault(where, [0.0, 0.0])
        tally[0] += messages
        tally[1] += cost


class _Unfolded:
    """What the log's rows hold, in memory until folded into the tables: the new keys by
    hash (with when they were seen) or by (time, hash), as `_BatchSeen` looks them up, and the
    counter and month increments summed per series."""

    def __init__(self) -> None:
        self.rows = 0
        self.since = 0.0
        self.hashed: dict[int, float] = {}
        self.timed: set[tuple[int, int]] = set()
        self.increments: Increments = {}
        self.tallies: Tallies = {}

    def table_rows(self) -> int:
        """How many table rows a fold of this would write."""
        return (len(self.hashed) + len(self.timed) + len(self.increments)
                + len(self.tallies))

    def holds(self, t: int, h: int) -> bool:
        """Whether a key, by its time and hash, waits here (where `_BatchSeen` would find it
        once folded)."""
        return h in self.hashed or (t, h) in self.timed

    def add(self, new: dict[int, int], now: float, increments: Increments,
            tallies: Tallies) -> None:
        if not self.rows:
            self.since = now
        self.rows += 1
        for h, t in new.items():
            if t:
                self.timed.add((t, h))
            else:
                self.hashed.setdefault(h, now)
        _sum_into(self.increments, self.tallies, increments, tallies)


class _PlainUnpickler(pickle.Unpickler):
    """Reads only what `_encode` writes (lists, tuples, strings, numbers): a log row that
    names any class or function is refused, so the state file can never run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise StateError(f"webhook_log row names {module}.{name}: not written by this exporter")


def _encode(batch: _Batch) -> bytes:
    """A batch as its log row: its new keys by time (time, hash pairs) and by hash, when it
    was counted, its increments and its month tallies. Pickled (protocol 5: every later Python
    reads it), six times faster to write than the same as JSON."""
    new = batch.seen.new
    return pickle.dumps((
        [(t, h) for h, t in new.items() if t], [h for h, t in new.items() if not t], batch.now,
        list(batch.increments.items()),
        [(where, tuple(tally)) for where, tally in batch.tallies.items()]), protocol=5)


def _decode(entry: bytes) -> tuple[dict[int, int], float, Increments, Tallies]:
    timed, hashed, now, counted, months = _PlainUnpickler(io.BytesIO(entry)).load()
    new = {h: t for t, h in timed} | dict.fromkeys(hashed, 0)
    # Each series once, as `_encode` wrote it from the batch's dictionaries.
    return new, float(now), dict(counted), {where: list(tally) for where, tally in months}


def labels_json(labels: Labels) -> str:
    """`json.dumps(labels)`, the counters table's key, written directly when no label needs
    escaping (printable ASCII without quote or backslash): the same text at less than half the
    cost, for every series of every commit."""
    for value in labels:
        if not (value.isascii() and value.isprintable()) or '"' in value or "\\" in value:
            return json.dumps(labels)
    return '["' + '", "'.join(labels) + '"]'


def digits(phone: str) -> str:
    if phone.isdigit():  # as webhooks write it: nothing to take out
        return phone
    return "".join(ch for ch in phone if ch.isdigit())


class WebhookState:
    # A fold is due once what the log holds comes to this many table rows to write (keys,
    # counter series, month tallies), or its first row is this old. A fold holds the event
    # loop for a few microseconds a table row: the bound keeps that pause near 20 ms, and
    # folding more at once saved little (bench/README.md).
    FOLD_TABLE_ROWS = 3_000
    FOLD_SECONDS = 1.0

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
        # More than the default 2 MB for the dedupe tables' hot pages; since status keys are
        # stored in time order, a larger cache buys no measurable CPU, only memory.
        self._db.execute("PRAGMA cache_size=-8192")
        self._db.executescript(_SCHEMA)
        self._legacy_seen = self._has_legacy_seen()
        # What the log holds (a stop may have left rows), folded before anything is read.
        self._unfolded = _Unfolded()
        for (entry,) in self._db.execute("SELECT entry FROM webhook_log ORDER BY id"):
            self._unfolded.add(*_decode(entry))
        self.fold()
        self._channel_of = channel_of
        self._max_unmapped = max_unmapped_channels
        self._window = dedupe_window_seconds
        self._card = rate_card
        self.outbox = Outbox(self._db) if forwarding else None
        # The counters per (waba_id, channel_id) and family, as the per-channel renderer reads
        # them; the journal names the channels counted since it last looked.
        self.by_channel: dict[tuple[str, str], dict[str, dict[Labels, float]]] = {}
        self.journal: Journal[tuple[str, str]] = Journal()
        # month_start -> (waba_id, channel_id, category) -> (messages, estimated cost); tuples
        # of floats, which the garbage collector stops tracking (lists it walked in every full
        # collection, one per channel and category)
        self.months: dict[int, dict[MonthKey, tuple[float, float]]] = {}
        for month, waba, channel, category, messages, cost in self._db.execute(
                "SELECT * FROM webhook_months"):
            self.months.setdefault(int(month), {})[(waba, channel, category)] = (
                float(messages), float(cost))
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
        with contextlib.suppress(sqlite3.Error):  # rows left in the log are folded next start
            self.fold()
        self._db.close()

    # -- request path ----------------------------------------------------------------------------

    def accept_many(self, deliveries: Sequence[Delivery], now: float) -> list[bool]:
        """Count accepted deliveries and record them in one commit; after it their answers may
        go. Returns, per delivery, False where the same bytes were accepted before (a retry:
        nothing is counted or forwarded again), True otherwise.

        The receiver gathers the requests that arrive together into one call, so a busy stream
        pays one commit, and one dedupe look-up, per batch rather than per delivery. A delivery
        whose counting raises is kept in the dead-letter table (and still forwarded): it was
        valid when accepted, so it is answered 200 and never thrown away."""
        if not deliveries:
            return []
        shas = [hashlib.sha256(d.body).hexdigest() for d in deliveries]
        batch = _Batch(self, [(delivery_key(sha, d.events), d.events) for sha, d in zip(
            shas, deliveries, strict=True)], now)
        fresh = [not duplicate for duplicate in batch.duplicates]
        dead = [(deliveries[i].received_at, deliveries[i].body, error, now)
                for i, error in batch.set_aside]
        kept = [d for d, new in zip(deliveries, fresh, strict=True) if new]
        with self._transaction():
            self._write(batch)
            self._db.executemany("INSERT INTO webhook_dead (received_at, body, error, failed_at)"
                                 " VALUES (?, ?, ?, ?)", dead)
            if self.outbox is not None:
                for d in kept:
                    self.outbox.add(d.body, d.forward_headers or {}, d.received_at)
            if self.first_received_at is None and kept:
                self._db.execute("INSERT OR IGNORE INTO webhook_meta VALUES "
                                 "('first_received_at', ?)", (str(kept[0].received_at),))
        self._apply(batch)
        self.dead += len(dead)
        if self.first_received_at is None and kept:
            self.first_received_at = kept[0].received_at
        if self.outbox is not None:
            for d in kept:
                self.outbox.added(d.received_at)
        return fresh

    # -- rows recorded by earlier versions -------------------------------------------------------

    def process_pending(self, now: float, limit: int = 500) -> int:
        """Count inbox rows that an earlier version recorded but had not counted (it counted
        after acknowledging); return how many were processed. Dedupe keys make a row whose
        delivery was meanwhile counted again add nothing. A row that cannot be counted is
        moved to the dead-letter table."""
        rows = self._db.execute(
            "SELECT id, body, sha FROM webhook_inbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        if not rows:
            return 0
        parsed: list[tuple[Key, list[Event]]] = []  # (delivery key, events)
        for _, raw, sha in rows:
            try:
                events = parse(json.loads(bytes(raw)))
            except ValueError:
                events = []  # validated before it was accepted: a schema change must not wedge
            parsed.append((delivery_key(str(sha), events), events))
        batch = _Batch(self, parsed, now)
        with self._transaction():
            self._write(batch)
            # Kept in a dead-letter table: nothing acknowledged is thrown away.
            self._db.executemany("INSERT INTO webhook_dead (received_at, body, error, failed_at)"
                                 " SELECT received_at, body, ?, ? FROM webhook_inbox WHERE id=?",
                                 [(error, now, rows[i][0]) for i, error in batch.set_aside])
            self._db.executemany("DELETE FROM webhook_inbox WHERE id=?",
                                 [(row_id,) for row_id, _, _ in rows])
        self._apply(batch)
        self.dead += len(batch.set_aside)
        self.pending = max(0, self.pending - len(rows))
        return len(rows)

    # -- counting --------------------------------------------------------------------------------

    def _write(self, batch: _Batch) -> None:
        """A counted batch's keys, counters and month tallies as one log row, inside the
        caller's transaction."""
        if batch.records:
            self._db.execute("INSERT INTO webhook_log (entry) VALUES (?)", (_encode(batch),))

    def fold_due(self, now: float) -> bool:
        """Whether the log holds enough, or old enough rows, to fold now."""
        staged = self._unfolded
        return staged.rows > 0 and (
            staged.table_rows() >= self.FOLD_TABLE_ROWS
            or now - staged.since >= self.FOLD_SECONDS)

    @property
    def unfolded_rows(self) -> int:
        return self._unfolded.rows

    def fold(self) -> int:
        """Add what the log holds to the key, counter and month tables, in one commit that
        also empties the log; returns how many log rows that was. Memory already counts them:
        only where their keys are looked up, and what a restart reads first, changes."""
        staged = self._unfolded
        if not staged.rows:
            return 0
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO webhook_seen_t VALUES (?, ?)",
                                 sorted(staged.timed))
            self._db.executemany("INSERT OR IGNORE INTO webhook_seen_h VALUES (?, ?)",
                                 sorted(staged.hashed.items()))
            self._db.executemany(
                "INSERT INTO webhook_counters VALUES (?, ?, ?) ON CONFLICT(metric, labels) "
                "DO UPDATE SET value = value + excluded.value",
                [(metric, labels_json(labels), amount)
                 for (metric, labels), amount in staged.increments.items()])
            self._db.executemany(
                "INSERT INTO webhook_months VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                "(month_start, waba_id, channel_id, category) DO UPDATE SET "
                "messages = messages + excluded.messages, cost = cost + excluded.cost",
                [(month, *key, messages, cost)
                 for (month, key), (messages, cost) in staged.tallies.items()])
            self._db.execute("DELETE FROM webhook_log")
        rows = staged.rows
        self._unfolded = _Unfolded()
        return rows

    def _apply(self, batch: _Batch) -> None:
        """The memory side of a committed batch: only after the commit, so what is exposed
        never runs ahead of what a restart would load."""
        if batch.records:
            self._unfolded.add(batch.seen.new, batch.now, batch.increments, batch.tallies)
        for (metric, labels), amount in batch.increments.items():
            self.journal.written(self._add(metric, labels, amount))
        for (month, key), (messages, cost) in batch.tallies.items():
            tallies = self.months.setdefault(month, {})
            was_messages, was_cost = tallies.get(key, (0.0, 0.0))
            tallies[key] = (was_messages + messages, was_cost + cost)
        if batch.increments:
            self.version += 1

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

    def seen_before(self, key: str, at: int = 0) -> bool:
        """Whether a dedupe key is stored: by its event time `at` and hash, by its hash alone,
        or as text by an earlier version."""
        h = key_hash(key)
        return (self._unfolded.holds(at, h)
                or self._db.execute("SELECT 1 FROM webhook_seen_t WHERE t=? AND h=?", (at, h)
                                 ).fetchone() is not None
                or self._db.execute("SELECT 1 FROM webhook_seen_h WHERE h=?", (h,)
                                    ).fetchone() is not None
                or self._seen_before_hashing(key))

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

    def _count(self, event: Event, now: float, seen: Seen) -> list[Count]:
        """One event's increments, labelled with its channel (`count_delivery` calls this)."""
        return count(event, self._label(event), self._card, seen, now)

    def set_baseline(self, month: int, waba_id: str, channel_id: str, rows: Baseline) -> None:
        """Record where polled and webhook numbers stood when comparing them began."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO webhook_baselines VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(month, waba_id, channel_id, category, *values)
                 for category, values in (rows or {"": (0.0, 0.0, 0.0, 0.0)}).items()])
        self.baselines[(month, waba_id, channel_id)] = dict(rows)

    def prune(self, now: float) -> None:
        self.fold()  # month rows still in the log would come back after the prune
        for table in ("webhook_seen", "webhook_seen_h"):
            self._db.execute(f"DELETE FROM {table} WHERE seen_at < ?",  # noqa: S608
                             (now - self._window,))
        self._db.execute("DELETE FROM webhook_seen_t WHERE t < ?", (now - self._window,))
        self._legacy_seen = self._has_legacy_seen()
        # Reconciliation needs this month and the one before (during the month grace).
        keep = month_start(month_start(now) - 1)
        for table in ("webhook_months", "webhook_baselines"):
            self._db.execute(f"DELETE FROM {table} WHERE month_start < ?", (keep,))  # noqa: S608
        for month in [m for m in self.months if m < keep]:
            del self.months[month]
        for key in [k for k in self.baselines if k[0] < keep]:
            del self.baselines[key]
