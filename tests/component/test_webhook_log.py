"""The webhook log: each batch is one row, folded into the key, counter and month tables later.

What a restart reads must always equal what memory counted, whether the rows were folded or a
kill left them in the log, and a key waiting in the log must deduplicate like a folded one.
"""

from __future__ import annotations

import asyncio
import pickle
import sqlite3

import pytest

from exporter.db import StateError
from exporter.webhooks.state import MESSAGES, STATUSES_METRIC, WebhookState
from tests.component.webhooks_kit import KNOWN, Receiver, accept, status_body

AT = 1_751_371_300.0


def _state(path) -> WebhookState:
    return WebhookState(path, channel_of=KNOWN.get)


def _log_rows(state: WebhookState) -> int:
    return int(state._db.execute("SELECT COUNT(*) FROM webhook_log").fetchone()[0])


def _stream(state: WebhookState, start: int, n: int) -> None:
    for i in range(start, start + n):
        for status in ("sent", "delivered", "read"):
            accept(state, status_body(f"wamid.{i}", status), AT)


def test_a_kill_before_the_fold_loses_nothing_and_counts_nothing_twice(tmp_path):
    state = _state(tmp_path / "s.db")
    _stream(state, 0, 20)
    state.fold()
    _stream(state, 20, 15)  # these stay in the log: the process "dies" here, no close()
    assert _log_rows(state) == 45
    counted, months = state.counters, state.months
    again = _state(tmp_path / "s.db")
    assert (again.counters, again.months) == (counted, months)
    assert sum(again.counters[MESSAGES].values()) == 35
    assert _log_rows(again) == 0  # folded at start
    # Every delivery, whether its keys were folded before or at the restart, is a duplicate.
    for i in (3, 27):
        assert not accept(again, status_body(f"wamid.{i}", "read"), AT)
    assert sum(again.counters[MESSAGES].values()) == 35


def test_keys_still_in_the_log_deduplicate(tmp_path):
    state = _state(tmp_path / "s.db")
    assert accept(state, status_body("wamid.1", "delivered"), AT)
    assert state.unfolded_rows == 1
    assert not accept(state, status_body("wamid.1", "delivered"), AT)  # the same bytes
    # Another status of the same message: its status counts, the message not again.
    assert accept(state, status_body("wamid.1", "read"), AT)
    assert sum(state.counters[MESSAGES].values()) == 1
    assert sum(state.counters[STATUSES_METRIC].values()) == 2


def test_a_failed_fold_keeps_the_log_and_the_next_one_writes_it_once(tmp_path, monkeypatch):
    state = _state(tmp_path / "s.db")
    _stream(state, 0, 10)
    counted = state.counters

    real = state._db

    class Full:
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, sql, rows):
            if "webhook_counters" in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return real.executemany(sql, rows)

    monkeypatch.setattr(state, "_db", Full())
    with pytest.raises(sqlite3.OperationalError):
        state.fold()
    monkeypatch.setattr(state, "_db", real)
    assert state.unfolded_rows == 30
    assert _log_rows(state) == 30
    assert not state._db.execute("SELECT 1 FROM webhook_seen_t").fetchone()  # rolled back
    assert state.fold() == 30
    again = _state(tmp_path / "s.db")
    assert again.counters == counted


def test_a_log_row_that_names_a_class_is_refused(tmp_path):
    state = _state(tmp_path / "s.db")
    state._db.execute("INSERT INTO webhook_log (entry) VALUES (?)",
                      (pickle.dumps(([], [], 0.0, [], [StateError("x")])),))
    state.close()
    with pytest.raises(StateError, match="not written by this exporter"):
        _state(tmp_path / "s.db")


def test_a_fold_is_due_by_size_or_by_age(tmp_path):
    state = _state(tmp_path / "s.db")
    assert not state.fold_due(AT)
    accept(state, status_body("wamid.1"), AT)
    assert not state.fold_due(AT + 0.5)
    assert state.fold_due(AT + state.FOLD_SECONDS)
    state.FOLD_TABLE_ROWS = 4  # the delivery, status and message keys, and three series
    assert state.fold_due(AT)


async def test_the_receiver_folds_after_a_stream_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(WebhookState, "FOLD_SECONDS", 0.05)
    rx = Receiver(tmp_path)
    for i in range(3):
        assert (await rx.post(status_body(f"wamid.{i}"))).json()["result"] == "ok"
    assert rx.state.unfolded_rows > 0
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not rx.state.unfolded_rows:
            break
    assert rx.state.unfolded_rows == 0
    assert _log_rows(rx.state) == 0
    assert sum(rx.state.counters[MESSAGES].values()) == 3
