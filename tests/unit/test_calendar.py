"""Calendar arithmetic: the month cache gives what the datetime arithmetic gives, in any order
of calls, at and around every boundary."""

from __future__ import annotations

import calendar
import datetime as dt
import random

from exporter.calendar import month_start


def _by_datetime(t: float) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def test_month_start_matches_the_datetime_arithmetic_in_any_order() -> None:
    rnd = random.Random(7)
    times = [rnd.uniform(0, 4_102_444_800) for _ in range(5_000)]
    # Each side of every month boundary of 2025 to 2027, December to January included.
    for year in (2025, 2026, 2027):
        for month in range(1, 13):
            edge = calendar.timegm((year, month, 1, 0, 0, 0))
            times += [edge - 1, edge - 0.001, edge, edge + 0.001]
    for t in times + sorted(times) + sorted(times, reverse=True):
        assert month_start(t) == _by_datetime(t), t
