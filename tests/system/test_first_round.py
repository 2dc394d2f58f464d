"""The first round: after a start without state, and when discovery finds a channel, every
channel's first usage poll goes as early as the budgets allow, and the cadence after it breaks
no window, as the API's sliding windows see the calls (FakeClock, simulator)."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import itertools
from collections import defaultdict

import httpx
import pytest

from exporter.clock import FakeClock
from exporter.polling.schedule import PlanParams, plan_waba
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import Fleet, build_fleet
from exporter.testing import Rig
from tests.system.test_schedule_day import usage_calls, window_violations

START = calendar.timegm((2026, 5, 12, 9, 0, 0))
HOUR = 3600.0
FIRST_ROUND_SECONDS = 60.0
# Restarts as after a kill -9 (the exporter stops after its last write): three inside the first
# round, one in the first hour's windows, one later.
RESTARTS_AT = (0.6, 1.7, 4.0, 1800.0, 5000.0)


class SlowApi(httpx.AsyncBaseTransport):
    """The simulator over ASGI, each request taking `latency` seconds of the fake clock, so the
    first round takes time and a restart can land in the middle of it."""

    def __init__(self, sim: SimulatedApi, clock: FakeClock, latency: float) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self._clock = clock
        self._latency = latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._clock.set(self._clock.now() + self._latency)
        return await self._inner.handle_async_request(request)


def demo_rig(path, latency: float = 0.0, **settings) -> Rig:
    """The demo's fleet shape (101 channels, one WABA of 50 and one of 20)."""
    clock = FakeClock(START)
    fleet = build_fleet(7)
    assert sorted(len(w.channels) for w in fleet.wabas())[-2:] == [20, 50]
    sim = SimulatedApi(fleet, clock.now)
    transport = SlowApi(sim, clock, latency) if latency else None
    return Rig(fleet, sim, clock, path / "state.sqlite3", transport=transport, **settings)


def balance_calls(sim: SimulatedApi) -> dict[str, list[float]]:
    calls: dict[str, list[float]] = defaultdict(list)
    for r in sim.requests:
        if "/channels/" in r.path and r.path.endswith("/info/balance") and r.status == 200:
            calls[r.path.split("/channels/")[1].split("/")[0]].append(r.time)
    return calls


def assert_no_window_over_its_limit(rig: Rig) -> None:
    """Every budget as the API counts it: 10 an hour per channel (usage and balance calls
    together, as they share it by default), 200 an hour per WABA, 5 client balances per 30 s;
    and no 429."""
    assert rig.sim.rate_limited == 0
    usage, balance = usage_calls(rig.sim), balance_calls(rig.sim)
    for ch in rig.fleet.channels():
        assert window_violations(usage[ch.id] + balance[ch.id], 10, HOUR) == 0, ch.id
    for waba in rig.fleet.wabas():
        times = [t for ch in waba.channels for t in usage[ch.id] + balance[ch.id]]
        assert window_violations(times, 200, HOUR) == 0, waba.id
    client_balance = [r.time for r in rig.sim.requests
                      if "/channels/" not in r.path and r.path.endswith("/info/balance")]
    assert window_violations(client_balance, 5, 30) == 0


def deferred_usage_polls(samples) -> float:
    deferred = samples.get("whatsapp_exporter_polls_deferred_total", {})
    return sum(float(v) for k, v in deferred.items()
               if dict(k)["scope"] in ("usage_channel", "usage_waba"))


def most_within(times: list[float], seconds: float) -> int:
    """The most calls inside any span of `seconds`."""
    times = sorted(times)
    start = 0
    most = 0
    for end, t in enumerate(times):
        while times[start] <= t - seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_first_start_polls_every_channel_within_a_minute(tmp_path):
    """A start without state: every channel has usage on /metrics a minute later (each
    request taking 0.3 s), and over the hours after it the ledger never had to hold back a
    usage poll: the plan itself kept every window."""
    rig = demo_rig(tmp_path, latency=0.3)
    await rig.run_until(START + FIRST_ROUND_SECONDS)
    updated = (await rig.samples())["whatsapp_usage_updated_timestamp_seconds"]
    assert {dict(k)["channel_id"] for k in updated} == {ch.id for ch in rig.fleet.channels()}
    await rig.run_until(START + 3 * HOUR)
    assert_no_window_over_its_limit(rig)
    assert deferred_usage_polls(await rig.samples()) == 0


@pytest.fixture(scope="module")
def restarted_run(tmp_path_factory):
    """Three hours from a start without state, killed and restarted five times, three of
    them inside the first round."""
    return asyncio.run(_restarted(tmp_path_factory.mktemp("first")))


async def _restarted(path) -> Rig:
    rig = demo_rig(path, latency=0.25)
    for at in RESTARTS_AT:
        await rig.run_until(START + at)
        await rig.restart()
    await rig.run_until(START + 3 * HOUR)
    return rig


def test_kills_inside_the_first_round_break_no_window(restarted_run):
    """Restarts inside the first round still give every channel its first poll within a
    minute, and no window of any budget is ever over its limit."""
    rig = restarted_run
    assert rig.restarts == len(RESTARTS_AT)
    usage = usage_calls(rig.sim)
    unpolled_after_first_restart = [
        ch.id for ch in rig.fleet.channels() if min(usage[ch.id]) > START + RESTARTS_AT[0]]
    assert unpolled_after_first_restart  # the first kill did land inside the round
    for ch in rig.fleet.channels():
        assert min(usage[ch.id]) <= START + FIRST_ROUND_SECONDS, ch.id
    assert_no_window_over_its_limit(rig)


def test_after_the_first_round_the_cadence_is_the_steady_one(restarted_run):
    """From each channel's second poll on, no busy channel waits more than 10% longer than an
    equal split of its binding budget allows, and the channels of a WABA no longer poll
    together: the round ends spread out as the steady state is."""
    rig = restarted_run
    settings = rig.exporter.settings
    fair = PlanParams(settings.limit_usage_channel, settings.limit_usage_waba,
                      settings.limit_channel_balance, True, 0.0, 1.0)
    usage = usage_calls(rig.sim)
    for waba in rig.fleet.wabas():
        best = plan_waba([c.id for c in waba.channels], set(), fair)
        for ch in waba.channels:
            times = sorted(usage[ch.id])
            if ch.activity == 0:
                continue  # idle channels yield their share on purpose
            worst = max(b - a for a, b in itertools.pairwise(times[1:]))
            assert worst <= 1.10 * best[ch.id].best_usage_interval, (ch.id, worst)
        later = [t for ch in waba.channels for t in usage[ch.id] if t > START + 2 * HOUR]
        # Spread: in the last hour at most two of the WABA's polls fall within any 5 s.
        assert most_within(later, 5.0) <= 2, waba.id


def with_new_channels(fleet: Fleet, per_waba: dict[str, int]) -> tuple[Fleet, list[str]]:
    """The fleet with `per_waba[waba_id]` channels added to those WABAs."""
    added: list[str] = []

    def grow(waba):
        extra = []
        for i in range(per_waba.get(waba.id, 0)):
            ch = dataclasses.replace(waba.channels[0], id=f"{waba.channels[0].id}n{i}",
                                     name=f"new {i}")
            extra.append(ch)
            added.append(ch.id)
        return dataclasses.replace(waba, channels=waba.channels + tuple(extra))

    return dataclasses.replace(fleet, clients=tuple(
        dataclasses.replace(c, wabas=tuple(grow(w) for w in c.wabas))
        for c in fleet.clients)), added


async def test_channels_discovery_finds_are_polled_at_once(tmp_path):
    """Channels that a later discovery finds, in the crowded WABA (on its slot grid) and in a
    small one (on their own timers), are polled within a minute of that discovery, and no
    window goes over its limit before or after."""
    rig = demo_rig(tmp_path, discovery_interval_seconds=600)
    await rig.run_until(START + 2 * HOUR)
    wabas = sorted(rig.fleet.wabas(), key=lambda w: len(w.channels))
    crowded, small = wabas[-1], wabas[2]
    fleet, added = with_new_channels(rig.fleet, {crowded.id: 3, small.id: 2})
    rig.fleet = rig.sim.fleet = fleet
    changed_at = rig.clock.now()
    await rig.run_until(START + 5 * HOUR)
    found_at = min(r.time for r in rig.sim.requests
                   if r.path.endswith("/channels") and r.time > changed_at)
    usage = usage_calls(rig.sim)
    for ch_id in added:
        assert usage[ch_id], ch_id
        assert min(usage[ch_id]) - found_at <= FIRST_ROUND_SECONDS, ch_id
    assert_no_window_over_its_limit(rig)
