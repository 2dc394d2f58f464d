"""Planning: binding budgets, idle channels yielding, calendar boundaries."""

from __future__ import annotations

import bisect
import calendar
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.calendar import reporting_month
from exporter.domain import Limit
from exporter.polling.schedule import (
    PlanParams,
    SlotParams,
    WabaSlots,
    balance_slot_gap,
    client_balance_interval,
    close_out_time,
    first_poll_times,
    grid_resumes,
    partner_balance_interval,
    plan_waba,
    slot_params,
    waba_bound,
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
    per_hour = 0.0
    for p in plan.values():
        assert p.balance_interval is not None  # every channel's balance is polled too
        per_hour += 3600 / p.usage_interval + 3600 / p.balance_interval
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


SLOTS = SlotParams(spacing=18.36, min_gap=367.2)


def run_slots(slots: WabaSlots, n_slots: int, start: float = 0.0,
              allowed=lambda _: True) -> dict[str, list[float]]:
    taken: dict[str, list[float]] = {ch: [] for ch in slots.channels()}
    for k in range(n_slots):
        now = start + k * slots.params.spacing
        ch = slots.take(now, allowed)
        if ch is not None:
            taken[ch].append(now)
    return taken


def test_the_slot_boundary_is_exact():
    """20 channels at 10/h fill 200/h exactly: still channel-bound; 21 are WABA-bound."""
    assert not waba_bound(20, PARAMS)
    assert waba_bound(21, PARAMS)


def test_slots_share_by_weight_and_never_crowd_a_channel():
    """Busy channels get four times an idle channel's slots; no channel is called twice within
    its minimum gap; every slot is used."""
    slots = WabaSlots(SLOTS, idle_weight=0.25)
    channels = ids(60)
    idle = set(channels[:30])
    slots.set_channels(channels, idle, {})
    taken = run_slots(slots, 20_000)
    assert sum(len(t) for t in taken.values()) == 20_000
    busy = [len(taken[c]) for c in channels[30:]]
    quiet = [len(taken[c]) for c in channels[:30]]
    assert max(busy) - min(busy) <= 1
    assert max(quiet) - min(quiet) <= 1
    assert min(busy) / max(quiet) == pytest.approx(4, rel=0.01)
    for times in taken.values():
        assert min(b - a for a, b in itertools.pairwise(times)) >= SLOTS.min_gap - 1e-6


def test_a_busy_channel_is_capped_by_its_own_budget_and_the_rest_share():
    """One busy channel among idle ones would get more than its own budget by weight: it is
    held to its minimum gap, and its surplus goes to the others."""
    slots = WabaSlots(SLOTS, idle_weight=0.25)
    channels = ids(25)
    slots.set_channels(channels, set(channels[1:]), {})
    taken = run_slots(slots, 10_000)
    hot = taken[channels[0]]
    gaps = [b - a for a, b in itertools.pairwise(hot)]
    assert min(gaps) >= SLOTS.min_gap - 1e-6
    # After the first round (newcomers all start level), it goes at the first slot it may.
    assert max(gaps[1:]) <= SLOTS.min_gap + SLOTS.spacing + 1e-6
    assert sum(len(t) for t in taken.values()) == 10_000


def test_newcomers_go_least_recently_polled_first_and_refusals_keep_their_turn():
    slots = WabaSlots(SLOTS, idle_weight=0.25)
    slots.set_channels(["a", "b", "c"], set(), {"a": -100.0, "b": -5000.0})
    first = [slots.take(k * 1000.0) for k in range(3)]
    assert first == ["c", "b", "a"]  # never polled, then the oldest
    refused = run_slots(slots, 3, start=10_000, allowed=lambda ch: ch != "c")
    assert refused["c"] == []
    assert slots.take(20_000) == "c"  # it kept the lowest pass


def test_slot_grid_spends_the_waba_budget_with_the_margin():
    """The slots spread the WABA's whole budget with the margin (balance calls sharing it take
    slots too); the minimum gap keeps a channel's own window clear for its balance call."""
    params = slot_params(PARAMS)
    assert 3600 / params.spacing == pytest.approx(200 / 1.02)
    assert params.min_gap == pytest.approx(408)  # 9 usage calls an hour and one balance call


def test_client_balances_slow_down_only_when_their_budget_needs_it():
    """Clients poll at the configured interval unless their budget cannot pay for it with the
    margin; a partner-wide budget is shared by all clients, a per-client one is not."""
    limit = Limit(5, 30)  # 6 s a call
    assert client_balance_interval(limit, 10, floor=300, shared=True, margin=0.02) == 300
    assert client_balance_interval(limit, 100, floor=300, shared=True,
                                   margin=0.02) == pytest.approx(612)
    assert client_balance_interval(limit, 100, floor=1, shared=False,
                                   margin=0.02) == pytest.approx(6.12)
    assert client_balance_interval(None, 100, floor=300, shared=True, margin=0.02) == 300
    assert client_balance_interval(limit, 0, floor=300, shared=True, margin=0.02) == 300


def test_the_partner_balance_spends_its_budget_with_the_margin():
    """One partner balance call per 300 s budget window, stretched by the margin."""
    assert partner_balance_interval(Limit(1, 300), 0.02) == pytest.approx(306)


def test_a_first_round_takes_every_channel_never_called_at_once():
    """The first round takes the never-called channels (in turn order) and no other; after
    it, each channel's next slot keeps its minimum gap, and the rest of the grid is as usual."""
    slots = WabaSlots(SLOTS, idle_weight=0.25)
    channels = ids(60)
    slots.set_channels(channels, set(), {"ch000": -5000.0, "ch001": -100.0})
    first = slots.take_first(0.0, room=200)
    assert sorted(first) == channels[2:]
    assert slots.never_called() == []
    assert slots.take_first(1.0, room=200) == []
    taken = run_slots(slots, 2_000, start=SLOTS.spacing)
    for ch in channels:
        times = ([0.0] if ch in first else []) + taken[ch]
        assert min(b - a for a, b in itertools.pairwise(times)) >= SLOTS.min_gap - 1e-6


def test_a_first_round_keeps_to_its_room_and_refusals_wait_for_the_next():
    """No more channels than `room`; one the caller refuses stays never-called."""
    slots = WabaSlots(SLOTS, idle_weight=1.0)
    slots.set_channels(ids(30), set(), {})
    assert len(slots.take_first(0.0, room=12)) == 12
    rest = slots.take_first(0.0, room=100, allowed=lambda ch: ch != "ch029")
    assert len(rest) == 17
    assert slots.never_called() == ["ch029"]


def test_the_grid_resumes_a_spacing_per_call_after_a_burst():
    """50 calls at once push the grid 50 spacings; a grid that went on regularly resumes a
    spacing after its last call; with no calls it resumes now."""
    assert grid_resumes([1000] * 50, 1000, 18_360) == 1000 + 50 * 18_360
    steady = [1000 + k * 18_360 for k in range(190)]
    assert grid_resumes(steady, steady[-1], 18_360) == steady[-1] + 18_360
    assert grid_resumes([], 5, 18_360) == 5


@given(st.lists(st.integers(0, 3_600_000), max_size=200), st.integers(10_000, 60_000))
def test_no_window_ending_at_a_resumed_slot_holds_more_than_the_plain_grid(past, spacing):
    """Whatever calls came before (a burst, a restart, a grid with another phase), every
    window ending at a slot of the resumed grid holds no more calls than a window of the plain
    grid can: the calls of a span shorter than the window, a spacing apart."""
    span = 3_602_000
    now = 3_600_000
    past = sorted(past)
    start = grid_resumes(past, now, spacing)
    assert start >= now
    grid = [start + i * spacing for i in range(span // spacing + 2)]
    calls = past + grid
    most = math.ceil(span / spacing)
    for t in grid:
        assert bisect.bisect_right(calls, t) - bisect.bisect_right(calls, t - span) <= most


def test_balance_calls_on_a_slot_grid_keep_to_their_planned_share():
    """Two balance slots of a WABA are at least its channels' balance interval over their
    number apart, less the margin the interval carries."""
    assert balance_slot_gap(9180.0, 50, 0.02) == pytest.approx(180.0)
    assert balance_slot_gap(3672.0, 0, 0.02) == pytest.approx(3600.0)


def test_a_channel_on_its_own_timer_polls_at_once_and_then_takes_its_phase():
    """First poll now; the second an evenly spread phase later than the interval."""
    assert first_poll_times(100.0, 0, 4, 400.0) == (100.0, 0.0)
    assert first_poll_times(100.0, 3, 4, 400.0) == (100.0, 300.0)
