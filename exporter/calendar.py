"""Calendar arithmetic in UTC: months, days, and the month the counters show."""

from __future__ import annotations

import calendar
import datetime as dt

DAY = 86_400


# The month `month_start` last worked out, as [start, next start): nearly every call of a
# webhook stream falls in it, and the datetime arithmetic cost more than the rest of counting
# a status's month.
_last_month = (0, 0)


def month_start(t: float) -> int:
    global _last_month  # noqa: PLW0603 - a one-entry cache of a pure function
    start, end = _last_month
    if start <= t < end:
        return start
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    start = calendar.timegm((d.year, d.month, 1, 0, 0, 0))
    end = calendar.timegm((d.year + d.month // 12, d.month % 12 + 1, 1, 0, 0, 0))
    _last_month = (start, end)
    return start


def reporting_month(now: float, grace: float) -> int:
    """The month the counters show: the previous one for `grace` seconds after a boundary, so
    late corrections to it are still polled and scraped before the counters restart."""
    return month_start(now - grace)


def day_start(t: float) -> int:
    return int(t // DAY) * DAY
