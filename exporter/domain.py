"""Plain domain types shared by the API client, the store, the scheduler and the collector.

Money is `Decimal` from the wire to the exposition, so month totals are exact sums of what the
API returned. Ids are 360dialog's unless the name says `meta`/`external`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


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
    cost: Decimal


@dataclass(frozen=True, slots=True)
class CallTotal:
    count: int
    duration_seconds: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """One channel's usage for one UTC month, as of `fetched_at`."""

    month_start: int  # unix seconds of the month's first instant, UTC
    currency: str
    # (category, pricing_type) -> total
    messages: dict[tuple[str, str], MessageTotal] = field(default_factory=dict)
    calls: dict[str, CallTotal] = field(default_factory=dict)  # direction

    @property
    def total_volume(self) -> int:
        return sum(m.volume for m in self.messages.values())


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal
    currency: str
