"""Calendar arithmetic in UTC: months, days, and the month the counters show."""

from __future__ import annotations

import calendar
import datetime as dt

DAY = 86_400


def month_start(t: float) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def reporting_month(now: float, grace: float) -> int:
    """The month the counters show: the previous one for `grace` seconds after a boundary, so
    late corrections to it are still polled and scraped before the counters restart."""
    return month_start(now - grace)


def day_start(t: float) -> int:
    return int(t // DAY) * DAY
