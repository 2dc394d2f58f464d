"""Pure backfill decisions: which past ranges each channel's history needs, in what order, and
whether a backfill call fits beside the live polls.

History is what came before the exporter first backfilled (the anchor, kept in the state file):
the days of the anchor's month before the anchor's day, then the `months` complete UTC months
before it, newest first, so last month is there for every channel before older ones start.

Live polls keep their planned share of every budget. Backfill calls are counted on their own
and one goes only if, in each scope it charges, the backfill calls in the window ending now plus
this one fit in what the live plan leaves (`limit - live`). Every window then holds at most the
live plan's calls plus that remainder, so no planned live poll ever finds its window full
because of the past. The ledger still has the last word on every call.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from exporter.calendar import day_start, month_start
from exporter.domain import Limit


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """[month_start, end) of one UTC month: the whole month, or the anchor month's first days."""

    month_start: int
    end: int


def wanted_ranges(anchor: float, months: int) -> list[Range]:
    """The history one channel needs, newest first; nothing when `months` is 0 (backfill off)."""
    if months <= 0:
        return []
    first_day, this_month = day_start(anchor), month_start(anchor)
    out = [Range(this_month, first_day)] if first_day > this_month else []
    end = this_month
    for _ in range(months):
        start = month_start(end - 1)
        out.append(Range(start, end))
        end = start
    return out


def jobs(ranges: Sequence[Range], channels: Iterable[str],
         finished: set[tuple[str, int]]) -> Iterator[tuple[str, Range]]:
    """(channel, range) still to fetch: the newest range for every channel, then the next."""
    ordered = sorted(channels)
    for r in ranges:
        for channel in ordered:
            if (channel, r.month_start) not in finished:
                yield channel, r


def share(limit: Limit, live: int) -> int:
    """Calls per window the live plan leaves to backfill in a scope."""
    return max(0, limit.count - live)


def room_at(limit: Limit, live: int, calls_ms: Sequence[int], now_ms: int) -> int:
    """The earliest time >= now_ms at which one more backfill call fits in a scope whose earlier
    backfill calls are `calls_ms` (sorted); -1 when the live plan leaves no share at all."""
    room = share(limit, live)
    if room == 0:
        return -1
    window = limit.window_ms
    inside = calls_ms[bisect.bisect_right(calls_ms, now_ms - window):]
    excess = len(inside) - room
    if excess < 0:
        return now_ms
    return inside[excess] + window + 1


def next_room(limits: Mapping[str, Limit], live: Mapping[str, int],
              calls: Mapping[str, Sequence[int]], now_ms: int) -> int:
    """`room_at` over every scope a call charges (budget kind -> its values); -1 if never."""
    when = now_ms
    for kind, limit in limits.items():
        at = room_at(limit, live[kind], calls.get(kind, ()), now_ms)
        if at < 0:
            return -1
        when = max(when, at)
    return when


def live_calls(window_seconds: float, intervals: Iterable[float]) -> int:
    """The live plan's calls in one window of a scope whose calls recur at `intervals`. A
    failed poll's retry is not planned: it waits for room like any other call."""
    rate = sum(1 / i for i in intervals if i > 0 and math.isfinite(i))
    return math.ceil(window_seconds * rate - 1e-9)
