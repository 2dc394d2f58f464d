"""Backfill against the simulator on one FakeClock: the past arrives, equal to the simulator's
daily truth, without a 429 and without moving a single live poll; it is kept across a restart,
and a range the API will not give is said to be unavailable."""

from __future__ import annotations

import calendar
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from exporter.backfill.plan import wanted_ranges
from exporter.calendar import DAY
from exporter.clock import FakeClock
from exporter.simulator.app import SimRequest, SimulatedApi
from exporter.simulator.fleet import Fleet, build_fleet
from exporter.simulator.traffic import usage_points
from exporter.testing import Rig

NOVEMBER = calendar.timegm((2026, 11, 12, 9, 0, 0))
HOURS = 30


def usage_requests(sim: SimulatedApi) -> list[tuple[SimRequest, int, int]]:
    out = []
    for r in sim.requests:
        if r.path.endswith("/info/usage"):
            q = parse_qs(r.query)
            out.append((r, int(q["start_date"][0]), int(q["end_date"][0])))
    return out


def is_backfill(start: int, end: int, at: float) -> bool:
    """Live polls ask up to now; backfill ranges end on a day's last second, in the past."""
    return end % DAY == DAY - 1 and end < at - 1


async def run(tmp_path, months: int, history_from: float | None = None,
              reserve: tuple[int, int] | None = None) -> tuple[Rig, SimulatedApi, Fleet]:
    clock = FakeClock(NOVEMBER)
    fleet = build_fleet(7, waba_sizes=(3, 1), clients=1)
    sim = SimulatedApi(fleet, clock.now, history_from=history_from)
    rig = Rig(fleet, sim, clock, tmp_path / f"s{months}.db", backfill_months=months)
    if reserve is not None:
        assert rig.exporter.poller is not None
        rig.exporter.poller.reserve(*reserve)
    await rig.run_until(NOVEMBER + HOURS * 3600)
    return rig, sim, fleet


async def test_the_past_equals_the_simulators_truth_and_moves_no_live_poll(tmp_path):
    """While backfill works, the live plan leaves it one call per channel-hour and 10 of each
    WABA's 200: every live poll then goes at the very instant it goes in a run with that plan
    and no backfill at all, and no call earns a 429."""
    with_past, sim, fleet = await run(tmp_path, months=3)
    without, plain, _ = await run(tmp_path, months=0, reserve=(1, 10))
    backfill = with_past.exporter.backfill
    assert backfill is not None
    assert without.exporter.backfill is None
    past = [(r, a, b) for r, a, b in usage_requests(sim) if is_backfill(a, b, r.time)]
    last = max(r.time for r, _, _ in past)

    def live(s: SimulatedApi) -> list[tuple[float, str]]:
        return [(r.time, r.path) for r, a, b in usage_requests(s)
                if not is_backfill(a, b, r.time) and r.time <= last]
    assert len(live(sim)) > 100
    assert live(sim) == live(plain)
    assert sim.rate_limited == 0
    ranges = wanted_ranges(NOVEMBER, 3)
    assert len(ranges) == 4  # November's first days, then October, September, August
    assert len(past) == len(fleet.channels()) * len(ranges)
    # Not before one usage window after the start: the first round's calls have left it.
    assert min(r.time for r, _, _ in past) >= NOVEMBER + 3600
    assert backfill.complete

    # What is kept is the simulator's daily truth, day by day.
    kept = {(h.channel_id, h.month_start): h for h in backfill.history.months()}
    for ch in fleet.channels():
        for r in ranges:
            h = kept[(ch.id, r.month_start)]
            assert h.end == r.end
            for day in range(r.month_start, r.end, DAY):
                pricing, calls = usage_points(fleet.seed, ch, day, day + DAY - 1,
                                              NOVEMBER, "DAILY")
                want = {(p.category.lower(), p.pricing_type.lower()): (p.volume, p.cost)
                        for p in pricing}
                got = h.messages.get(day, {})
                assert {k: (v, c) for k, (v, c) in got.items()} == {
                    k: (v, Decimal(c)) for k, (v, c) in want.items()}, (ch.id, day)
                call_want = {c.direction.lower(): (c.count, c.duration) for c in calls}
                assert {d: (n, s) for d, (n, s, _) in h.calls.get(day, {}).items()} == (
                    call_want)

    # The progress metric says so, per WABA.
    samples = (await with_past.samples())["whatsapp_exporter_backfill_months"]
    by_state: dict[str, float] = {}
    for labels, value in samples.items():
        state = dict(labels)["state"]
        by_state[state] = by_state.get(state, 0) + value
    assert by_state == {"wanted": 16, "done": 16, "unavailable": 0}

    # A restart fetches nothing again.
    seen = len(sim.requests)
    await with_past.restart()
    await with_past.run_until(NOVEMBER + (HOURS + 3) * 3600)
    again = [x for x in usage_requests(sim)[seen:] if is_backfill(x[1], x[2], x[0].time)]
    assert again == []
    assert with_past.exporter.backfill is not None
    assert with_past.exporter.backfill.complete
    await with_past.exporter.aclose()
    await without.exporter.aclose()


@pytest.mark.parametrize("months", [2])
async def test_a_range_the_api_refuses_is_unavailable_and_not_asked_again(tmp_path, months):
    october = calendar.timegm((2026, 10, 1, 0, 0, 0))
    rig, sim, fleet = await run(tmp_path, months=months, history_from=october)
    backfill = rig.exporter.backfill
    assert backfill is not None
    assert backfill.complete
    progress = {waba: (wanted, done, unavailable)
                for waba, wanted, done, unavailable in backfill.progress()}
    n = {waba: len(ids) for waba, ids in backfill.live.wabas().items()}
    for waba, ids in backfill.live.wabas().items():
        label = backfill.live.waba_label(waba)
        # November's first days and October are there; September is refused.
        assert progress[label] == (3 * len(ids), 2 * len(ids), len(ids))
    assert sum(n.values()) == len(fleet.channels())
    refused = [r for r, a, _ in usage_requests(sim) if a < october]
    assert len(refused) == len(fleet.channels())  # one answer each, never asked again
    assert all(r.status == 400 for r in refused)
    await rig.exporter.aclose()
