"""SQLite plumbing every part of the state uses: one way to connect, transactions on an
autocommit connection, and the checkpointing thread."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator


class StateError(Exception):
    """The state file cannot be used; the message says which file and why."""


# Pages the WAL may grow to before a committing connection copies it back itself: only a
# backstop, since a Checkpointer thread does that every second off the event loop.
BACKSTOP_CHECKPOINT_PAGES = 16_384


def connect(path: str) -> sqlite3.Connection:
    """A connection to the state file, set up as every part of the exporter uses it."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
    return db


class Checkpointer:
    """Copies the WAL back into the database every second, in a thread of its own.

    Left to SQLite, the connection whose commit crosses the threshold does it on the event
    loop, with an fsync: under a webhook stream that was a fifth of the exporter's time. A
    passive checkpoint never blocks the writers; SQLite releases the GIL while it works."""

    def __init__(self, path: str, every_seconds: float = 1.0) -> None:
        self._path = path
        self._every = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._every):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    continue  # busy or a full disk: the backstop and the next round remain
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """One transaction on an autocommit connection; `immediate` takes the write lock at once."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (busy, disk full): left open, the transaction would
        # make every later BEGIN on this connection fail. An I/O error may have rolled back.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
