"""Sliding-window budgets, the hard stop on every rate limit: "may I call now, and if not, when?"

Each API call is charged to one or more *scopes* (a usage call to its channel and its WABA). A
scope is `(kind, key)`; its kind names the `Limit`. Arithmetic is in integer milliseconds: in float
seconds `(0.99999 + 3600.0) - 3600.0 < 0.99999`, enough to let an 11th call into a 10-call window.

A window counts every call later than `now - window - guard`, *including calls stamped in the
future*: if the wall clock steps back, calls made "later" still count, so a clock step never frees
budget. The guard (a few percent of the window, at most 2 s) absorbs the difference between when
we stamp a call and when the API's own window sees it arrive.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

from exporter.domain import Limit

Scope = tuple[str, str]  # (budget kind, key), e.g. ("usage_channel", "ch_1")

# Budget kinds, each naming a Limit; also the `scope` label of the deferral and use metrics.
# Not the poller's task kinds (polling.tasks.TaskKind): one task may charge several budgets.
USAGE_CHANNEL = "usage_channel"
USAGE_WABA = "usage_waba"
CHANNEL_BALANCE = "channel_balance"
CLIENT_BALANCE = "client_balance"
PARTNER_BALANCE = "partner_balance"
DISCOVERY = "discovery"


class Ledger:
    """Call times per scope, pruned to the longest window; the single authority on budgets."""

    def __init__(self, limits: Mapping[str, Limit]) -> None:
        self._limits = dict(limits)
        self._calls: dict[Scope, list[int]] = {}

    def _span(self, kind: str) -> int:
        window = self._limits[kind].window_ms
        return window + max(50, min(2000, window // 20))

    def limit(self, kind: str) -> Limit:
        return self._limits[kind]

    def load(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Restore persisted calls `(kind, key, t_ms)` (any order)."""
        for kind, key, t_ms in rows:
            if kind in self._limits:
                bisect.insort(self._calls.setdefault((kind, key), []), t_ms)

    def used(self, scope: Scope, now_ms: int) -> int:
        calls = self._calls.get(scope)
        if not calls:
            return 0
        horizon = now_ms - self._span(scope[0])
        return len(calls) - bisect.bisect_right(calls, horizon)

    def calls(self, scope: Scope, now_ms: int) -> list[int]:
        """The scope's calls its window still sees at `now_ms`, oldest first."""
        calls = self._calls.get(scope, [])
        return calls[bisect.bisect_right(calls, now_ms - self._span(scope[0])):]

    def next_slot(self, scopes: Sequence[Scope], now_ms: int) -> int:
        """The earliest time >= now_ms at which every scope has room for one more call."""
        when = now_ms
        for scope in scopes:
            calls = self._calls.get(scope)
            if not calls:
                continue
            span = self._span(scope[0])
            inside = calls[bisect.bisect_right(calls, now_ms - span) :]
            excess = len(inside) - self._limits[scope[0]].count
            if excess >= 0:
                # Room appears when the oldest `excess + 1` calls have left the window.
                when = max(when, inside[excess] + span)
        return when

    def allows(self, scopes: Sequence[Scope], now_ms: int) -> bool:
        return self.next_slot(scopes, now_ms) == now_ms

    def record(self, scopes: Sequence[Scope], now_ms: int) -> None:
        for scope in scopes:
            bisect.insort(self._calls.setdefault(scope, []), now_ms)

    def prune(self, now_ms: int) -> None:
        """Forget calls that no window can see any more."""
        for scope in list(self._calls):
            calls = self._calls[scope]
            horizon = now_ms - self._span(scope[0])
            cut = bisect.bisect_right(calls, horizon)
            if cut == len(calls):
                del self._calls[scope]
            elif cut:
                del calls[:cut]

    def max_span_ms(self) -> int:
        return max((self._span(kind) for kind in self._limits), default=0)

    def max_used_ratio(self, kind: str, keys: Iterable[str], now_ms: int) -> float:
        limit = self._limits[kind]
        return max((self.used((kind, key), now_ms) / limit.count for key in keys), default=0.0)

    def scopes(self) -> list[Scope]:
        return list(self._calls)
