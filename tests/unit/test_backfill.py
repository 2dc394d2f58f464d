"""Backfill's pure parts: the ranges history needs, the share left by the live plan, and the
OpenMetrics text (month-to-date counters at each day's end, as the live series)."""

from __future__ import annotations

import calendar
import io
from decimal import Decimal

import pytest

from exporter.backfill.history import MonthHistory
from exporter.backfill.openmetrics import by_channel, channel_series, parse_labels, write
from exporter.backfill.plan import Range, jobs, live_calls, next_room, room_at, wanted_ranges
from exporter.calendar import DAY
from exporter.domain import Channel, Limit


def utc(*args: int) -> int:
    return calendar.timegm((*args, 0, 0, 0)[:6])


CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+4915100000000", "Support", "ready")


def test_history_is_the_anchor_months_first_days_then_whole_months_newest_first():
    anchor = utc(2026, 3, 5, 14)
    assert wanted_ranges(anchor, 2) == [
        Range(utc(2026, 3, 1), utc(2026, 3, 5)),
        Range(utc(2026, 2, 1), utc(2026, 3, 1)),
        Range(utc(2026, 1, 1), utc(2026, 2, 1))]
    # Across a year, and on a month's first day (no partial range).
    assert wanted_ranges(utc(2026, 1, 1, 3), 1) == [Range(utc(2025, 12, 1), utc(2026, 1, 1))]
    assert wanted_ranges(anchor, 0) == []


def test_jobs_give_every_channel_its_newest_range_before_any_older_one():
    ranges = wanted_ranges(utc(2026, 3, 1), 2)
    feb, jan = ranges
    got = list(jobs(ranges, ["b", "a"], {("a", feb.month_start)}))
    assert got == [("b", feb), ("a", jan), ("b", jan)]


def test_the_share_is_what_the_live_plan_leaves_and_room_comes_when_a_call_leaves():
    limit = Limit(10, 3600)
    now = 10_000_000
    assert room_at(limit, 10, [], now) == -1  # the live plan takes everything
    assert room_at(limit, 8, [], now) == now
    calls = [now - 3_000_000, now - 1_000_000]
    assert room_at(limit, 8, calls, now) == calls[0] + 3_600_000 + 1
    assert room_at(limit, 7, calls, now) == now
    # Over two scopes the later one wins; a scope with no share at all means never.
    limits = {"usage_channel": limit, "usage_waba": Limit(200, 3600)}
    assert next_room(limits, {"usage_channel": 8, "usage_waba": 150},
                     {"usage_channel": calls}, now) == calls[0] + 3_600_001
    assert next_room(limits, {"usage_channel": 7, "usage_waba": 200}, {}, now) == -1


def test_live_calls_count_the_plans_calls_per_window():
    assert live_calls(3600, [400.0]) == 9
    assert live_calls(3600, [360.0]) == 10
    assert live_calls(3600, [400.0, 800.0]) == 14  # 9 + 4.5, rounded up
    assert live_calls(3600, []) == 0


def test_labels_for_every_sample_are_checked():
    assert parse_labels(["job=whatsapp", "instance=a:9"]) == {"job": "whatsapp",
                                                            "instance": "a:9"}
    for bad in ("job", "1x=y", "__name__=x", "channel_id=x"):
        with pytest.raises(ValueError, match="--label"):
            parse_labels([bad])


def month(start: int, end: int, messages=None, calls=None, currency="USD") -> MonthHistory:
    return MonthHistory("ch_1", start, end, currency, messages or {}, calls or {})


def points(series, **labels):
    key = tuple(sorted(({"client_id": "cl_1", "waba_id": "1049", "channel_id": "ch_1"}
                        | labels).items()))
    return series[key]


def test_each_day_ends_with_the_months_total_so_far_and_a_new_month_restarts_at_zero():
    feb, mar = utc(2026, 2, 1), utc(2026, 3, 1)
    d = Decimal
    h_feb = month(feb, mar, {feb: {("marketing", "regular"): (3, d("0.30"))},
                             feb + 2 * DAY: {("marketing", "regular"): (2, d("0.20"))}},
                  {feb + DAY: {"user_initiated": (1, 60, d("0.05"))}})
    h_mar = month(mar, mar + 2 * DAY, {mar + DAY: {("utility", "regular"): (4, d("0.08"))}})
    messages, cost, calls, duration, call_cost = channel_series(CH, [h_feb, h_mar], {})
    mk = points(messages, category="marketing", pricing_type="regular")
    assert len(mk) == 28 + 2  # every day of February, then March restarting at 0
    assert mk[:4] == [(feb + DAY - 1, 3.0), (feb + 2 * DAY - 1, 3.0),
                      (feb + 3 * DAY - 1, 5.0), (feb + 4 * DAY - 1, 5.0)]
    assert mk[27:] == [(mar - 1, 5.0), (mar + DAY - 1, 0.0), (mar + 2 * DAY - 1, 0.0)]
    assert points(messages, category="utility", pricing_type="regular") == [
        (mar + DAY - 1, 0.0), (mar + 2 * DAY - 1, 4.0)]
    assert points(cost, category="marketing", pricing_type="regular",
                  currency="USD")[2] == (feb + 3 * DAY - 1, 0.5)
    assert points(calls, direction="user_initiated")[:2] == [(feb + DAY - 1, 0.0),
                                                              (feb + 2 * DAY - 1, 1.0)]
    assert points(duration, direction="user_initiated")[27:] == [
        (mar - 1, 60.0), (mar + DAY - 1, 0.0), (mar + 2 * DAY - 1, 0.0)]
    assert points(call_cost, direction="user_initiated", currency="USD")[27] == (mar - 1, 0.05)


def test_a_cost_series_stops_on_the_day_a_point_came_without_a_cost():
    feb, mar = utc(2026, 2, 1), utc(2026, 3, 1)
    h = month(feb, mar, {feb: {("marketing", "regular"): (3, Decimal("0.30"))},
                         feb + DAY: {("marketing", "regular"): (1, None)}})
    messages, cost, *_ = channel_series(CH, [h], {})
    assert points(cost, category="marketing", pricing_type="regular",
                  currency="USD") == [(feb + DAY - 1, 0.3)]
    assert points(messages, category="marketing", pricing_type="regular")[-1] == (mar - 1, 4.0)


def test_the_text_is_openmetrics_a_family_at_a_time_with_extra_labels():
    feb, mar = utc(2026, 2, 1), utc(2026, 3, 1)
    h = month(feb, feb + DAY, {feb: {("nonsense", "regular"): (3, Decimal("0.30"))}})
    out = io.StringIO()
    write(out, lambda: by_channel(iter([h]), {"ch_1": CH}), {"job": "wa"})
    text = out.getvalue()
    assert text.endswith("# EOF\n")
    assert text.index("# TYPE whatsapp_messages counter") < text.index(
        "# TYPE whatsapp_cost counter")
    assert ('whatsapp_messages_total{category="other",channel_id="ch_1",client_id="cl_1",'
            f'job="wa",pricing_type="regular",waba_id="1049"}} 3.0 {feb + DAY - 1}\n') in text
    assert mar > feb
    # A channel no longer discovered is left out, as its live series are.
    out = io.StringIO()
    write(out, lambda: by_channel(iter([h]), {}), {})
    assert "whatsapp_messages_total{" not in out.getvalue()
