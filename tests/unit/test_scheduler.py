"""Planning: binding budgets, idle channels yielding, calendar boundaries."""

from __future__ import annotations

import calendar
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import Limit
from exporter.scheduler import (
    PlanParams,
    close_out_time,
    plan_waba,
    reporting_month,
    water_fill,
)

PARAMS = PlanParams(Limit(10, 3600), Limit(200, 3600), Limit(1, 3600), True, 0.02, 0.25)


def ids(n: int) -> list[str]:
    return [f"ch{i:03d}" for i in range(n)]


def test_small_waba_is_bound_by_the_channel_budget():
    """Up to 20 channels each get the per-channel budget, less the balance call it shares."""
    plan = plan_waba(ids(5), set(), PARAMS)
    assert plan["ch000"].best_usage_interval == pytest.approx(400)  # 9 usage + 1 balance per hour
    assert plan["ch000"].usage_interval == pytest.approx(408)


def test_large_waba_is_bound_by_the_waba_budget():
    """50 channels share 200/h: the calls planned per hour never exceed the WABA's budget."""
    plan = plan_waba(ids(50), set(), PARAMS)
    per_hour = sum(3600 / p.usage_interval + 3600 / p.balance_interval for p in plan.values())
    assert per_hour <= 200
    assert per_hour > 190  # and the budget is nearly all used


def test_idle_channels_yield_to_busy_ones():
    """In a WABA-bound plan, busy channels poll more often than idle ones, within their cap."""
    idle = set(ids(50)[:25])
    plan = plan_waba(ids(50), idle, PARAMS)
    busy_iv = plan["ch049"].usage_interval
    idle_iv = plan["ch000"].usage_interval
    assert busy_iv < plan_waba(ids(50), set(), PARAMS)["ch049"].usage_interval
    assert idle_iv == pytest.approx(busy_iv * 4)


@given(
    weights=st.lists(st.sampled_from([0.25, 1.0]), min_size=1, max_size=120),
    cap=st.floats(0.01, 10), total=st.floats(0.01, 500),
)
def test_water_fill_respects_cap_and_total(weights, cap, total):
    """No rate exceeds the cap, the sum never exceeds the total, and no budget is left unused."""
    rates = water_fill(weights, cap, total)
    assert all(r <= cap * (1 + 1e-9) for r in rates)
    assert sum(rates) <= total * (1 + 1e-9)
    assert math.isclose(sum(rates), min(total, cap * len(weights)), rel_tol=1e-6)


def test_reporting_month_lags_the_boundary_by_the_grace():
    """For `grace` seconds after a month ends, the counters still show that month."""
    dec_1 = 1_764_547_200  # 2025-12-01T00:00Z
    nov_1 = 1_761_955_200
    assert reporting_month(dec_1 + 100, 1800) == nov_1
    assert reporting_month(dec_1 + 1800, 1800) == dec_1


def test_leap_day_is_an_ordinary_day():
    """2028-02-29 belongs to February and March starts after it."""
    feb_29 = calendar.timegm((2028, 2, 29, 0, 0, 0))
    assert reporting_month(feb_29 + 3600, 0) == calendar.timegm((2028, 2, 1, 0, 0, 0))
    assert reporting_month(feb_29 + 86_400, 0) == calendar.timegm((2028, 3, 1, 0, 0, 0))


def test_close_out_polls_are_spread_after_the_delay():
    """Close-out polls start after the delay and spread over at most ten minutes."""
    times = [close_out_time(86_400, 900, i, 50) for i in range(50)]
    assert times[0] == 86_400 + 900
    assert max(times) - min(times) <= 600
