"""A day of polling on a FakeClock against the simulator: budgets, freshness, truth."""

from __future__ import annotations

import asyncio
import bisect
import calendar
import itertools
from collections import defaultdict

import pytest

from exporter.calendar import DAY, month_start
from exporter.clock import FakeClock
from exporter.polling.schedule import PlanParams, plan_waba
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import month_to_date_totals
from exporter.testing import Rig

START = calendar.timegm((2026, 3, 31, 6, 0, 0))  # 26 h: crosses a day and a month boundary
HOURS = 26
RESTARTS_AT = (3, 7, 11, 19)
SEED = 7
LIMITS = {"usage_channel": (10, 3600), "usage_waba": (200, 3600)}


def window_violations(times: list[float], count: int, window: float) -> int:
    """How many calls found `count` others already in the window before them (server's view)."""
    times = sorted(times)
    bad = 0
    for i, t in enumerate(times):
        first = bisect.bisect_right(times, t - window)
        if i - first >= count:
            bad += 1
    return bad


def new_rig(path) -> Rig:
    clock = FakeClock(START)
    fleet = build_fleet(SEED)
    assert max(len(w.channels) for w in fleet.wabas()) >= 50
    assert min(len(w.channels) for w in fleet.wabas()) == 1
    return Rig(fleet, SimulatedApi(fleet, clock.now), clock, path / "state.sqlite3")


@pytest.fixture(scope="module")
def day_run(tmp_path_factory):
    """One 26-hour run with four restarts, shared by the assertions below (it is the slow part).
    Samples of /metrics are taken right before each restart and at the end."""
    return asyncio.run(_day(tmp_path_factory.mktemp("day")))


async def _day(path):
    rig = new_rig(path)
    snapshots = []
    for hours in (*RESTARTS_AT, HOURS):
        await rig.run_until(START + hours * 3600)
        snapshots.append(await rig.samples())
        if hours != HOURS:
            await rig.restart()
            assert rig.exporter.ready()
            assert (await rig.samples())["whatsapp_messages_total"] == \
                snapshots[-1]["whatsapp_messages_total"], "restart must serve the last numbers"
    return rig, snapshots


@pytest.fixture
def rig(tmp_path):
    return new_rig(tmp_path)


def usage_calls(sim: SimulatedApi) -> dict[str, list[float]]:
    calls: dict[str, list[float]] = defaultdict(list)
    for r in sim.requests:
        if r.path.endswith("/info/usage") and r.status == 200:
            calls[r.path.split("/channels/")[1].split("/")[0]].append(r.time)
    return calls


def test_a_day_with_restarts_stays_inside_every_budget(day_run):
    """26 simulated hours with four restarts: no 429, no window over any limit, server-side."""
    rig, _ = day_run
    assert rig.restarts == len(RESTARTS_AT)
    assert rig.sim.rate_limited == 0
    per_channel = usage_calls(rig.sim)
    balance_calls: dict[str, list[float]] = defaultdict(list)
    for r in rig.sim.requests:
        if "/channels/" in r.path and r.path.endswith("/info/balance") and r.status == 200:
            balance_calls[r.path.split("/channels/")[1].split("/")[0]].append(r.time)
    for ch in rig.fleet.channels():
        both = per_channel[ch.id] + balance_calls[ch.id]
        assert window_violations(both, 10, 3600) == 0, ch.id
    for waba in rig.fleet.wabas():
        times = [t for ch in waba.channels for t in per_channel[ch.id] + balance_calls[ch.id]]
        assert window_violations(times, 200, 3600) == 0, waba.id
    client_balance = [r.time for r in rig.sim.requests
                      if "/channels/" not in r.path and r.path.endswith("/info/balance")]
    assert window_violations(client_balance, 5, 30) == 0


def test_every_channel_is_as_fresh_as_its_budget_allows(day_run):
    """After warm-up, no busy channel's gap between usage fetches exceeds by 10% the interval an
    equal split of its binding budget allows; idle channels stay within their yielded share."""
    rig, _ = day_run
    settings = rig.exporter.settings
    fair = PlanParams(settings.limit_usage_channel, settings.limit_usage_waba,
                      settings.limit_channel_balance, True, 0.0, 1.0)
    calls = usage_calls(rig.sim)
    ratios = []
    for waba in rig.fleet.wabas():
        best = plan_waba([c.id for c in waba.channels], set(), fair)
        for ch in waba.channels:
            times = sorted(calls[ch.id])
            assert len(times) > 2, ch.id
            worst_gap = max(b - a for a, b in itertools.pairwise(times[1:]))
            allowed = best[ch.id].best_usage_interval
            if ch.activity == 0:
                allowed /= settings.idle_weight  # yielded on purpose: nothing new to fetch
            else:
                ratios.append(worst_gap / allowed)
            assert worst_gap <= 1.10 * allowed, (ch.id, worst_gap, allowed)
    assert max(ratios) > 0.9  # and the budgets are used, not wasted


async def test_metrics_equal_what_the_api_returned(rig):
    """Every counter on /metrics equals the simulator's truth at the moment of the last fetch."""
    await rig.run_until(START + 5 * 3600)
    samples = await rig.samples()
    store = rig.exporter.store
    checked = 0
    for ch in rig.fleet.channels():
        usage = store.usage.get(ch.id)
        assert usage is not None, ch.id
        month = month_start(usage.fetched_at - rig.exporter.settings.month_grace_seconds)
        messages, calls = month_to_date_totals(SEED, ch, month, usage.fetched_at)
        got = {
            (dict(k)["category"], dict(k)["pricing_type"]): v
            for k, v in samples["whatsapp_messages_total"].items() if dict(k)["channel_id"] == ch.id
        }
        want = {k: float(v[0]) for k, v in messages.items()}
        assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
        got_cost = {
            (dict(k)["category"], dict(k)["pricing_type"]): v
            for k, v in samples["whatsapp_cost_total"].items() if dict(k)["channel_id"] == ch.id
        }
        for key, (_, cost) in messages.items():
            assert got_cost[key] == pytest.approx(float(cost), rel=1e-12, abs=1e-9)
        got_calls = {
            dict(k)["direction"]: v
            for k, v in samples["whatsapp_calls_total"].items() if dict(k)["channel_id"] == ch.id
        }
        assert {d: v for d, v in got_calls.items() if v} == {
            d: float(v[0]) for d, v in calls.items() if v[0]}
        checked += 1
    assert checked == len(rig.fleet.channels())


def test_month_boundary_restarts_counters_after_the_grace(day_run):
    """The last March snapshot is March's month to date; the counters then restart in April."""
    _, snapshots = day_run
    assert START + RESTARTS_AT[-1] * 3600 >= calendar.timegm((2026, 4, 1, 1, 0, 0))
    march = sum(snapshots[RESTARTS_AT.index(11)]["whatsapp_messages_total"].values())
    april = sum(snapshots[-1]["whatsapp_messages_total"].values())
    assert march > 0
    assert 0 < april < march


def test_day_constant():
    """The scheduler's day is 86,400 s (UTC days have no leap seconds in unix time)."""
    assert DAY == 86_400
