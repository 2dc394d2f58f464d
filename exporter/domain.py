"""Plain domain types shared by the API client, the store, the scheduler and the collector.

Money is `Decimal` from the wire to the exposition, so month totals are exact sums of what the
API returned. Ids are 360dialog's unless the name says `meta`/`external`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import astuple, dataclass, field
from decimal import Decimal
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    client_id: str
    waba_id: str  # 360dialog's WABA account id: the unit of the 200/h budget
    waba_external_id: str  # Meta's WABA id: the label, so polled and webhook series join
    phone_number: str
    name: str
    status: str

    @property
    def waba_label(self) -> str:
        # Meta's id when discovery knows it, else 360dialog's so the series still groups by WABA.
        return self.waba_external_id or self.waba_id


@dataclass(frozen=True, slots=True)
class MessageTotal:
    volume: int
    cost: Decimal  # the sum of the costs the API gave
    # Points summed in without a cost (Meta omits COST on a solution partner's credit line):
    # while above zero the row's cost is unknown, and `cost` only what was given.
    points_without_cost: int = 0


@dataclass(frozen=True, slots=True)
class CallTotal:
    count: int
    duration_seconds: int
    cost: Decimal
    points_without_cost: int = 0  # as in MessageTotal


@dataclass(frozen=True, slots=True)
class MarketTotal:
    """Messages to one destination country (Meta's COUNTRY dimension), all categories."""

    volume: int
    cost: Decimal
    points_without_cost: int = 0  # as in MessageTotal


# The market of points that name no country (the answer did not carry the dimension).
UNKNOWN_COUNTRY = "unknown"


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """One channel's usage for one UTC month, as of `fetched_at`."""

    month_start: int  # unix seconds of the month's first instant, UTC
    currency: str
    # (category, pricing_type) -> total
    messages: dict[tuple[str, str], MessageTotal] = field(default_factory=dict)
    calls: dict[str, CallTotal] = field(default_factory=dict)  # direction
    # Country code (or UNKNOWN_COUNTRY) -> total; the same messages as `messages`, by market.
    markets: dict[str, MarketTotal] = field(default_factory=dict)

    @property
    def total_volume(self) -> int:
        return sum(m.volume for m in self.messages.values())

    @property
    def points_without_cost(self) -> int:
        return (sum(m.points_without_cost for m in self.messages.values())
                + sum(c.points_without_cost for c in self.calls.values()))


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal
    currency: str


_K = TypeVar("_K", bound=Hashable)
_Total = TypeVar("_Total", MessageTotal, CallTotal, MarketTotal)


def _held(before: dict[_K, _Total], after: dict[_K, _Total], zero: _Total,
          ) -> tuple[dict[_K, _Total], int]:
    """`after` with every total of `before` that it lost or lowered held at the old figure,
    field by field (the totals are frozen dataclasses of numbers), and how many were held."""
    out = dict(after)
    held = 0
    for key, old in before.items():
        new = out.get(key, zero)
        pairs = list(zip(astuple(new), astuple(old), strict=True))
        if any(n < o for n, o in pairs):
            held += 1
            out[key] = type(old)(*(max(n, o) for n, o in pairs))
    return out, held


def never_lower(before: MonthUsage, after: MonthUsage) -> tuple[MonthUsage, int]:
    """`after` with no total below `before`'s, and how many totals were raised back.

    The month totals are exposed as counters. When Meta revises a recent day downwards, a
    counter that went down would read as a reset, and rate() would show the whole month as a
    spike (a false spend alert). So within a month a total only grows; a lower figure is kept
    at the old one until the month's counters restart. The count of points without a cost is
    such a total too (it is exposed as a counter), so a row's cost once unknown stays unknown
    for the month."""
    messages, raised_messages = _held(before.messages, after.messages,
                                      MessageTotal(0, Decimal(0)))
    calls, raised_calls = _held(before.calls, after.calls, CallTotal(0, 0, Decimal(0)))
    markets, raised_markets = _held(before.markets, after.markets, MarketTotal(0, Decimal(0)))
    raised = raised_messages + raised_calls + raised_markets
    if not raised:
        return after, 0
    return MonthUsage(after.month_start, after.currency or before.currency, messages, calls,
                      markets), raised


_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` calls in any window of `window_seconds`."""

    count: int
    window_seconds: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        match = _LIMIT_RE.match(text)
        if not match:
            raise ValueError(f"must be count/seconds such as 10/3600, got {text!r}")
        count, window = int(match.group(1)), float(match.group(2))
        if count < 1 or window <= 0:
            raise ValueError(f"needs a count of at least 1 and a window above 0 s, got {text!r}")
        return cls(count, window)

    @property
    def window_ms(self) -> int:
        return round(self.window_seconds * 1000)

    def __str__(self) -> str:
        return f"{self.count}/{self.window_seconds:g}"
