"""SQLite state: the call ledger, discovery results, and the latest usage and balances.

Every write goes to SQLite first and then to an in-memory mirror; the collector reads only the
mirror, so a scrape never touches the disk. WAL with `synchronous=NORMAL` survives a killed
process (the case we must survive: crash loops), and a restart loads the mirror at once so the
last known numbers are served before the first poll.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from exporter.db import Checkpointer, StateError, connect, transaction
from exporter.domain import (
    Balance,
    CallTotal,
    Channel,
    Client,
    MarketTotal,
    MessageTotal,
    MonthUsage,
)
from exporter.metrics.journal import Journal

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (kind TEXT NOT NULL, key TEXT NOT NULL, t_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_t ON ledger (t_ms);
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY, client_id TEXT NOT NULL, waba_id TEXT NOT NULL,
    waba_external_id TEXT NOT NULL, phone_number TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    channel_id TEXT NOT NULL, month_start INTEGER NOT NULL, fetched_at REAL NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (channel_id, month_start));
CREATE TABLE IF NOT EXISTS second_polls (channel_id TEXT PRIMARY KEY, due REAL NOT NULL);
CREATE TABLE IF NOT EXISTS balances (
    scope TEXT NOT NULL, id TEXT NOT NULL, currency TEXT NOT NULL, amount TEXT NOT NULL,
    fetched_at REAL NOT NULL, PRIMARY KEY (scope, id, currency));
"""


@dataclass(frozen=True, slots=True)
class ChannelUsage:
    months: dict[int, MonthUsage]  # month_start -> usage; the reporting month and the one before
    fetched_at: float


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(str(path))
            self._db.executescript(_SCHEMA)
            self._check_version()
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"D360_STATE_PATH: cannot use {path}: {exc}") from None
        self._checkpointer = Checkpointer(str(path)) if str(path) != ":memory:" else None
        self.version = 0  # bumped on every change the collector can see (`Versioned`)
        # Names each channel whose data was written, so a renderer redoes only those; its
        # layout moves when the set of channels changes.
        self.journal: Journal[str] = Journal()
        self.clients: dict[str, Client] = {}
        self.channels: dict[str, Channel] = {}
        self.usage: dict[str, ChannelUsage] = {}
        self.channel_balances: dict[str, Balance] = {}
        self.client_balances: dict[str, list[Balance]] = {}
        self.partner_balances: list[Balance] = []
        self.balance_fetched_at: dict[tuple[str, str], float] = {}  # (scope, id) -> when
        self._load()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StateError(
                f"D360_STATE_PATH: {self.path} has schema {row[0]}, this version needs "
                f"{SCHEMA_VERSION}; move the file away to start afresh"
            )

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()

    def _channel_written(self, channel_id: str) -> None:
        self.version += 1
        self.journal.written(channel_id)

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- the first round's second polls ------------------------------------------------------

    def second_polls(self) -> dict[str, float]:
        """When each channel polled in a first round on its own timer polls again."""
        return {str(c): float(t) for c, t in self._db.execute(
            "SELECT channel_id, due FROM second_polls")}

    def put_second_poll(self, channel_id: str, due: float) -> None:
        # A row per channel: a first round of thousands writes one small row per poll.
        self._db.execute("INSERT OR REPLACE INTO second_polls VALUES (?, ?)", (channel_id, due))

    def drop_second_poll(self, channel_id: str) -> None:
        self._db.execute("DELETE FROM second_polls WHERE channel_id=?", (channel_id,))

    # -- ledger ----------------------------------------------------------------------------------

    def record_call(self, scopes: Sequence[tuple[str, str]], t_ms: int) -> None:
        """Persist one call before it is made, so a crash never under-counts."""
        with self._tx():
            self._db.executemany(
                "INSERT INTO ledger VALUES (?, ?, ?)", [(kind, key, t_ms) for kind, key in scopes]
            )

    def ledger_rows(self) -> list[tuple[str, str, int]]:
        return [(str(k), str(key), int(t)) for k, key, t in self._db.execute(
            "SELECT kind, key, t_ms FROM ledger")]

    def prune_ledger(self, before_ms: int) -> None:
        self._db.execute("DELETE FROM ledger WHERE t_ms < ?", (before_ms,))

    # -- discovery -------------------------------------------------------------------------------

    def set_discovery(self, clients: Iterable[Client], channels: Iterable[Channel]) -> set[str]:
        """Replace the discovered fleet; return the ids of channels that disappeared."""
        new_clients = {c.id: c for c in clients}
        new_channels = {c.id: c for c in channels}
        gone = set(self.channels) - set(new_channels)
        with self._tx():
            self._db.execute("DELETE FROM clients")
            self._db.executemany(
                "INSERT INTO clients VALUES (?, ?, ?)",
                [(c.id, c.name, c.status) for c in new_clients.values()],
            )
            self._db.execute("DELETE FROM channels")
            self._db.executemany(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.id, c.client_id, c.waba_id, c.waba_external_id, c.phone_number, c.name,
                     c.status)
                    for c in new_channels.values()
                ],
            )
            for channel_id in gone:
                self._db.execute("DELETE FROM usage WHERE channel_id=?", (channel_id,))
                self._db.execute(
                    "DELETE FROM balances WHERE scope='channel' AND id=?", (channel_id,)
                )
            gone_clients = set(self.client_balances) - set(new_clients)
            for client_id in gone_clients:
                self._db.execute("DELETE FROM balances WHERE scope='client' AND id=?", (client_id,))
        for channel_id, ch in new_channels.items():
            if self.channels.get(channel_id) != ch:
                self.journal.written(channel_id)  # new, or its name or status changed
        self.clients, self.channels = new_clients, new_channels
        for channel_id in gone:
            self.usage.pop(channel_id, None)
            self.channel_balances.pop(channel_id, None)
            self.balance_fetched_at.pop(("channel", channel_id), None)
        for client_id in set(self.client_balances) - set(new_clients):
            del self.client_balances[client_id]
        self.version += 1
        self.journal.relayout()
        return gone

    # -- usage and balances ----------------------------------------------------------------------

    def put_usage(self, channel_id: str, months: dict[int, MonthUsage], fetched_at: float,
                  keep_from: int) -> None:
        """Store a channel's usage per month, dropping months before `keep_from`."""
        prev = self.usage.get(channel_id)
        merged = {m: u for m, u in (prev.months if prev else {}).items() if m >= keep_from}
        merged.update({m: u for m, u in months.items() if m >= keep_from})
        with self._tx():
            self._db.execute(
                "DELETE FROM usage WHERE channel_id=? AND month_start<?", (channel_id, keep_from)
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO usage VALUES (?, ?, ?, ?)",
                [(channel_id, m, fetched_at, _dump_usage(u)) for m, u in merged.items()],
            )
            self._db.execute(
                "UPDATE usage SET fetched_at=? WHERE channel_id=?", (fetched_at, channel_id)
            )
        self.usage[channel_id] = ChannelUsage(merged, fetched_at)
        self._channel_written(channel_id)

    def billing_currency(self, ch: Channel) -> str:
        """The channel's billing currency as the balances tell it, for a usage answer that
        names none: the channel's own balance, else its client's; "" when neither is known."""
        if (balance := self.channel_balances.get(ch.id)) is not None:
            return balance.currency
        return next((b.currency for b in self.client_balances.get(ch.client_id, [])), "")

    def put_channel_balance(self, channel_id: str, balance: Balance, fetched_at: float) -> None:
        self._put_balances("channel", channel_id, [balance], fetched_at)
        self.channel_balances[channel_id] = balance
        self._channel_written(channel_id)

    def put_client_balance(self, client_id: str, balance: Balance, fetched_at: float) -> None:
        self._put_balances("client", client_id, [balance], fetched_at)
        self.client_balances[client_id] = [balance]
        self.version += 1

    def put_partner_balances(self, balances: list[Balance], fetched_at: float) -> None:
        self._put_balances("partner", "", balances, fetched_at)
        self.partner_balances = list(balances)
        self.version += 1

    def _put_balances(self, scope: str, id_: str, balances: list[Balance], at: float) -> None:
        self.balance_fetched_at[(scope, id_)] = at
        with self._tx():
            self._db.execute("DELETE FROM balances WHERE scope=? AND id=?", (scope, id_))
            self._db.executemany(
                "INSERT INTO balances VALUES (?, ?, ?, ?, ?)",
                [(scope, id_, b.currency, str(b.amount), at) for b in balances],
            )

    # -- loading ---------------------------------------------------------------------------------

    def _load(self) -> None:
        for id_, name, status in self._db.execute("SELECT id, name, status FROM clients"):
            self.clients[id_] = Client(id_, name, status)
        for row in self._db.execute("SELECT * FROM channels"):
            self.channels[row[0]] = Channel(*row)
        # Each channel's months are gathered first and its ChannelUsage made once: the same
        # months, in the same order, and the fetched_at of its last row, as one per row made.
        shared: dict[Any, Any] = {}
        months_of: dict[str, dict[int, MonthUsage]] = {}
        fetched: dict[str, float] = {}
        for channel_id, month, fetched_at, body in self._db.execute(
            "SELECT channel_id, month_start, fetched_at, body FROM usage"
        ):
            months_of.setdefault(channel_id, {})[int(month)] = _load_usage(int(month), body,
                                                                          shared)
            fetched[channel_id] = float(fetched_at)
        self.usage = {channel_id: ChannelUsage(months, fetched[channel_id])
                      for channel_id, months in months_of.items()}
        for scope, id_, cur, amount, at in self._db.execute("SELECT * FROM balances"):
            balance = Balance(Decimal(amount), cur)
            self.balance_fetched_at[(scope, id_)] = float(at)
            if scope == "channel":
                self.channel_balances[id_] = balance
            elif scope == "client":
                self.client_balances.setdefault(id_, []).append(balance)
            else:
                self.partner_balances.append(balance)

    def _tx(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self._db)


def _dump_usage(u: MonthUsage) -> str:
    # A row's count of points without a cost is written only when above zero, so rows written
    # before it existed (four or five fields) read back the same as rows that had every cost.
    body: dict[str, Any] = {
        "currency": u.currency,
        "messages": [[c, p, m.volume, str(m.cost), *_unknown(m.points_without_cost)]
                     for (c, p), m in sorted(u.messages.items())],
        "calls": [
            [d, c.count, c.duration_seconds, str(c.cost), *_unknown(c.points_without_cost)]
            for d, c in sorted(u.calls.items())
        ],
    }
    if u.markets:  # rows written before markets were kept have none, and read back as such
        body["markets"] = [[k, m.volume, str(m.cost), *_unknown(m.points_without_cost)]
                           for k, m in sorted(u.markets.items())]
    return json.dumps(body, separators=(",", ":"))


def _unknown(points_without_cost: int) -> list[int]:
    return [points_without_cost] if points_without_cost else []


def _load_usage(month: int, text: str, shared: dict[Any, Any] | None = None) -> MonthUsage:
    """`shared` keeps one copy of the names and keys that repeat in every channel's row
    (categories, pricing types, directions, currencies): at fleet scale, parsed afresh per
    row, they were a tenth of the loaded state. Written out for speed (a restart reads every
    channel's rows before the first scrape): a row's optional last field is its count of
    points without a cost (`_dump_usage`)."""
    one = {} if shared is None else shared
    body = json.loads(text)
    message, call, market = _MESSAGE_TOTAL, _CALL_TOTAL, _MARKET_TOTAL
    messages: dict[tuple[str, str], MessageTotal] = {}
    for row in body["messages"]:
        key = (row[0], row[1])
        messages[one.get(key) or one.setdefault(key, key)] = message(
            int(row[2]), Decimal(row[3]), int(row[4]) if len(row) > 4 else 0)
    calls: dict[str, CallTotal] = {}
    for row in body["calls"]:
        d = row[0]
        calls[one.get(d) or one.setdefault(d, d)] = call(
            int(row[1]), int(row[2]), Decimal(row[3]), int(row[4]) if len(row) > 4 else 0)
    markets: dict[str, MarketTotal] = {}
    for row in body.get("markets", ()):
        k = row[0]
        markets[one.get(k) or one.setdefault(k, k)] = market(
            int(row[1]), Decimal(row[2]), int(row[3]) if len(row) > 3 else 0)
    currency = body["currency"]
    return MonthUsage(month, one.get(currency) or one.setdefault(currency, currency),
                      messages, calls, markets)


_T = TypeVar("_T")


def _filled(cls: type[_T]) -> Callable[..., _T]:
    """A constructor for a frozen, slotted dataclass that sets its fields through their slots,
    as its `__init__` would, without the frozen `__setattr__` call per field: a third of the
    cost, for the hundred thousand totals a fleet's state holds. Every field is given, in
    order; a class with more to its `__init__` (a `__post_init__`, no slots) keeps it. The
    tests hold what it makes equal to what the class makes."""
    if not hasattr(cls, "__slots__") or hasattr(cls, "__post_init__"):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    setters = [getattr(cls, name).__set__ for name in names]
    new = object.__new__

    if len(setters) == 3:  # MessageTotal, MarketTotal
        first, second, third = setters

        def make3(a: object, b: object, c: object) -> _T:
            obj = new(cls)
            first(obj, a)
            second(obj, b)
            third(obj, c)
            return obj

        return make3
    if len(setters) == 4:  # CallTotal
        first, second, third, fourth = setters

        def make4(a: object, b: object, c: object, d: object) -> _T:
            obj = new(cls)
            first(obj, a)
            second(obj, b)
            third(obj, c)
            fourth(obj, d)
            return obj

        return make4
    return cls  # a loop over the fields would cost what it saves


_MESSAGE_TOTAL = _filled(MessageTotal)
_CALL_TOTAL = _filled(CallTotal)
_MARKET_TOTAL = _filled(MarketTotal)
