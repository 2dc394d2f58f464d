"""The ledger is the hard stop on every rate limit."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.domain import Limit
from exporter.polling.ledger import Ledger


def max_in_window(times: list[int], window_ms: int) -> int:
    times = sorted(times)
    return max(
        (bisect.bisect_right(times, t + window_ms) - i for i, t in enumerate(times)), default=0
    )


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 12),
    window=st.integers(1, 4000),
    gaps=st.lists(st.integers(0, 5000), min_size=1, max_size=80),
    restart_at=st.sets(st.integers(0, 79)),
)
def test_no_window_ever_holds_more_than_the_limit(count, window, gaps, restart_at):
    """Whatever times calls are attempted at, and across reloads, any window holds <= count."""
    limit = Limit(count, window / 1000)
    ledger = Ledger({"k": limit})
    persisted: list[int] = []
    now = 1_000_000
    for i, gap in enumerate(gaps):
        now += gap
        if i in restart_at:  # a restart rebuilds the ledger from what was persisted
            ledger = Ledger({"k": limit})
            ledger.load(("k", "a", t) for t in persisted)
        if ledger.allows([("k", "a")], now):
            ledger.record([("k", "a")], now)
            persisted.append(now)
    assert max_in_window(persisted, limit.window_ms) <= count


def test_next_slot_is_when_the_oldest_call_leaves_the_window():
    """next_slot() names the first instant a full window has room again, and that instant works."""
    ledger = Ledger({"k": Limit(2, 10)})
    ledger.record([("k", "a")], 0)
    ledger.record([("k", "a")], 4000)
    slot = ledger.next_slot([("k", "a")], 5000)
    assert slot > 10_000
    assert not ledger.allows([("k", "a")], slot - 1)
    assert ledger.allows([("k", "a")], slot)


def test_a_call_is_charged_to_every_scope_and_the_fullest_one_binds():
    """A usage call charges its channel and its WABA; a full WABA blocks a channel with room."""
    ledger = Ledger({"ch": Limit(10, 3600), "waba": Limit(2, 3600)})
    ledger.record([("ch", "1"), ("waba", "w")], 0)
    ledger.record([("ch", "2"), ("waba", "w")], 1000)
    assert ledger.used(("ch", "3"), 2000) == 0
    assert not ledger.allows([("ch", "3"), ("waba", "w")], 2000)
    assert ledger.allows([("ch", "3"), ("waba", "other")], 2000)


def test_a_clock_step_backwards_frees_no_budget():
    """Calls stamped 'in the future' after the wall clock steps back still count."""
    ledger = Ledger({"k": Limit(1, 60)})
    ledger.record([("k", "a")], 100_000)
    assert not ledger.allows([("k", "a")], 50_000)


def test_prune_keeps_what_a_window_can_still_see():
    """Pruning forgets only calls older than every window."""
    ledger = Ledger({"k": Limit(1, 60)})
    ledger.record([("k", "a")], 0)
    ledger.prune(30_000)
    assert not ledger.allows([("k", "a")], 30_000)
    ledger.prune(200_000)
    assert ledger.scopes() == []
