"""The fetched past in the state file: per channel and month, the daily points Get Channel Usage
gave, the backfill calls of the last window (so their share survives a restart), and the anchor.

Its own tables beside the store's, on a connection of its own: the store's schema and its
in-memory mirror stay as they are, and a `backfill --out` run reads the file while the exporter
writes it (WAL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from exporter.api.models import UsageReport
from exporter.calendar import day_start
from exporter.db import StateError, connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backfill_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backfill_months (
    channel_id TEXT NOT NULL, month_start INTEGER NOT NULL, range_end INTEGER NOT NULL,
    status TEXT NOT NULL, fetched_at REAL NOT NULL, currency TEXT NOT NULL,
    detail TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (channel_id, month_start));
CREATE TABLE IF NOT EXISTS backfill_calls (
    channel_id TEXT NOT NULL, waba TEXT NOT NULL, t_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS backfill_calls_t ON backfill_calls (t_ms);
"""

DONE = "done"
UNAVAILABLE = "unavailable"

# Cost None: the point came without one (unknown, not zero).
DayMessages = dict[tuple[str, str], tuple[int, Decimal | None]]  # (category, type) -> totals
DayCalls = dict[str, tuple[int, int, Decimal | None]]  # direction -> count, seconds, cost


@dataclass(slots=True)
class MonthHistory:
    """One channel's fetched month: daily totals keyed by the day's first second (UTC)."""

    channel_id: str
    month_start: int
    end: int
    currency: str
    messages: dict[int, DayMessages] = field(default_factory=dict)
    calls: dict[int, DayCalls] = field(default_factory=dict)


def _add_cost(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else a + b


def month_from_report(channel_id: str, month: int, end: int,
                      report: UsageReport) -> MonthHistory:
    """Daily totals of the report's points inside [month, end); a point's day is its start's."""
    out = MonthHistory(channel_id, month, end, report.currency)
    for m in report.messages:
        if not month <= m.start < end:
            continue
        day = out.messages.setdefault(day_start(m.start), {})
        volume, cost = day.get((m.category, m.pricing_type), (0, Decimal(0)))
        day[(m.category, m.pricing_type)] = (volume + m.volume, _add_cost(cost, m.cost))
    for c in report.calls:
        if not month <= c.start < end:
            continue
        calls = out.calls.setdefault(day_start(c.start), {})
        count, seconds, cost = calls.get(c.direction, (0, 0, Decimal(0)))
        calls[c.direction] = (count + c.count, seconds + c.duration_seconds,
                              _add_cost(cost, c.cost))
    return out


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _unmoney(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _encode(h: MonthHistory) -> str:
    return json.dumps({
        "m": [[d, c, p, v, _money(cost)] for d, day in sorted(h.messages.items())
              for (c, p), (v, cost) in sorted(day.items())],
        "c": [[d, k, n, s, _money(cost)] for d, day in sorted(h.calls.items())
              for k, (n, s, cost) in sorted(day.items())],
    }, separators=(",", ":"))


def _decode(channel_id: str, month: int, end: int, currency: str, body: str) -> MonthHistory:
    raw = json.loads(body)
    h = MonthHistory(channel_id, month, end, currency)
    for d, c, p, v, cost in raw["m"]:
        h.messages.setdefault(int(d), {})[(str(c), str(p))] = (int(v), _unmoney(cost))
    for d, k, n, s, cost in raw["c"]:
        h.calls.setdefault(int(d), {})[str(k)] = (int(n), int(s), _unmoney(cost))
    return h


class History:
    def __init__(self, path: Path) -> None:
        try:
            self._db = connect(str(path))
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"state file {path}: {exc}") from None
        self._path = path

    def close(self) -> None:
        self._db.close()

    # -- the anchor ------------------------------------------------------------------------------

    def anchor(self, now: float) -> float:
        """When history ends: the first call's `now`, kept for good."""
        row = self._db.execute("SELECT value FROM backfill_meta WHERE key = 'anchor'").fetchone()
        if row is not None:
            return float(row[0])
        self._db.execute("INSERT INTO backfill_meta VALUES ('anchor', ?)", (repr(float(now)),))
        return float(now)

    # -- calls -----------------------------------------------------------------------------------

    def record_call(self, channel_id: str, waba: str, t_ms: int) -> None:
        self._db.execute("INSERT INTO backfill_calls VALUES (?, ?, ?)", (channel_id, waba, t_ms))

    def calls_since(self, t_ms: int) -> list[tuple[str, str, int]]:
        return [(str(c), str(w), int(t)) for c, w, t in self._db.execute(
            "SELECT channel_id, waba, t_ms FROM backfill_calls WHERE t_ms > ? ORDER BY t_ms",
            (t_ms,))]

    def prune_calls(self, before_ms: int) -> None:
        self._db.execute("DELETE FROM backfill_calls WHERE t_ms <= ?", (before_ms,))

    # -- months ----------------------------------------------------------------------------------

    def states(self) -> dict[tuple[str, int], str]:
        """(channel, month start) -> DONE or UNAVAILABLE, for every month asked already."""
        return {(str(c), int(m)): str(s) for c, m, s in
                self._db.execute("SELECT channel_id, month_start, status FROM backfill_months")}

    def put(self, h: MonthHistory, fetched_at: float) -> None:
        with transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO backfill_months VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (h.channel_id, h.month_start, h.end, DONE, fetched_at, h.currency, "",
                 _encode(h)))

    def put_unavailable(self, channel_id: str, month: int, end: int, fetched_at: float,
                        detail: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO backfill_months VALUES (?, ?, ?, ?, ?, '', ?, ?)",
            (channel_id, month, end, UNAVAILABLE, fetched_at, detail[:300], '{"m":[],"c":[]}'))

    def done_per_channel(self) -> dict[str, int]:
        """Fetched months per channel, counted without reading their points."""
        return {str(c): int(n) for c, n in self._db.execute(
            "SELECT channel_id, COUNT(*) FROM backfill_months WHERE status = ? "
            "GROUP BY channel_id", (DONE,))}

    def months(self, channel_ids: Sequence[str] | None = None) -> Iterator[MonthHistory]:
        """Every fetched month, by channel then month; on a cursor of its own, so a large
        history streams."""
        for c, m, e, cur, body in self._db.execute(
                "SELECT channel_id, month_start, range_end, currency, body FROM backfill_months "
                "WHERE status = ? ORDER BY channel_id, month_start", (DONE,)):
            if channel_ids is None or c in channel_ids:
                yield _decode(str(c), int(m), int(e), str(cur), str(body))
