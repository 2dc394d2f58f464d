"""Calendar and clock edges on a FakeClock: a leap day, the month boundary after it, a wall
clock stepping back, and a restart, without a budget broken or a counter reset wrongly."""

from __future__ import annotations

import calendar

import pytest
from pydantic import SecretStr

from exporter.calendar import month_start, reporting_month
from exporter.clock import FakeClock
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import month_to_date_totals
from exporter.testing import Rig
from tests.component.webhooks_kit import Receiver, status_body
from tests.system.test_schedule_day import usage_calls, window_violations

START = calendar.timegm((2028, 2, 28, 20, 0, 0))
LEAP_DAY_NOON = calendar.timegm((2028, 2, 29, 12, 0, 0))
MARCH = calendar.timegm((2028, 3, 1, 0, 0, 0))
STEP_BACK = 600.0


class ServerClock:
    """The API's clock never steps back; ours does. Server time = our time + offset."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.offset = 0.0

    def now(self) -> float:
        return self.clock.now() + self.offset


async def test_a_leap_day_a_month_end_and_a_clock_step_back(tmp_path):
    """From Feb 28 to Mar 1 2028 with the wall clock stepping back 10 minutes on the leap day
    and a restart right after: no 429, no window over a limit on the server's clock, February's
    counters include Feb 29 and hold through the grace, then restart in March."""
    clock = FakeClock(START)
    server = ServerClock(clock)
    fleet = build_fleet(11, waba_sizes=(25, 3, 1), clients=1)
    rig = Rig(fleet, SimulatedApi(fleet, server.now), clock, tmp_path / "s.db",
              webhook_secret=SecretStr("s"))
    await rig.run_until(LEAP_DAY_NOON)
    clock.step_back(STEP_BACK)
    server.offset += STEP_BACK
    await rig.restart()
    await rig.run_until(MARCH + 20 * 60 - STEP_BACK)  # 00:20 on the server: inside the grace
    grace = await rig.samples()
    await rig.run_until(MARCH + 45 * 60 - STEP_BACK)  # 00:45: past the grace
    march = await rig.samples()

    assert rig.sim.rate_limited == 0
    calls = usage_calls(rig.sim)
    for waba in fleet.wabas():
        assert window_violations([t for ch in waba.channels for t in calls[ch.id]], 200,
                                 3600) == 0
        for ch in waba.channels:
            assert window_violations(calls[ch.id], 10, 3600) == 0, ch.id

    feb = calendar.timegm((2028, 2, 1, 0, 0, 0))
    assert reporting_month(MARCH + 20 * 60, 1800) == feb
    store = rig.exporter.store
    for ch in fleet.channels():
        fetched = store.usage[ch.id].fetched_at
        truth, _ = month_to_date_totals(11, ch, feb, min(fetched + server.offset, MARCH))
        got = {(dict(k)["category"], dict(k)["pricing_type"]): v
               for k, v in grace["whatsapp_messages_total"].items()
               if dict(k)["channel_id"] == ch.id}
        assert {k: v for k, v in got.items() if v} == {
            k: float(v[0]) for k, v in truth.items() if v[0]}, ch.id
    leap_day_volume = sum(v[0] for v in month_to_date_totals(
        11, fleet.channels()[0], feb, MARCH)[0].values()) - sum(v[0] for v in month_to_date_totals(
            11, fleet.channels()[0], feb, LEAP_DAY_NOON - 12 * 3600)[0].values())
    assert leap_day_volume > 0  # Feb 29 carries traffic, and it is in February's totals
    assert 0 < sum(march["whatsapp_messages_total"].values()) < sum(
        grace["whatsapp_messages_total"].values())
    await rig.exporter.aclose()


@pytest.mark.parametrize(("when", "month"), [
    ((2028, 2, 29, 23, 59, 59), (2028, 2)), ((2028, 3, 1, 0, 0, 0), (2028, 3)),
    ((2027, 12, 31, 23, 59, 59), (2027, 12)), ((2028, 1, 1, 0, 0, 0), (2028, 1)),
])
def test_month_start_across_leap_days_and_years(when, month):
    """A second before and at each boundary belongs to the right UTC month."""
    assert month_start(calendar.timegm(when)) == calendar.timegm((*month, 1, 0, 0, 0))


async def test_webhooks_on_the_leap_day_count_in_february(tmp_path):
    """A status stamped Feb 29 23:59:59 is tallied in February, one a second later in March."""
    rx = Receiver(tmp_path)
    for wamid, ts in (("a", MARCH - 1), ("b", MARCH)):
        body = status_body(wamid)
        body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = str(ts)
        assert (await rx.post(body)).status_code == 200
    feb = calendar.timegm((2028, 2, 1, 0, 0, 0))
    assert {m: sum(t[0] for t in tallies.values()) for m, tallies in rx.state.months.items()} == {
        feb: 1.0, MARCH: 1.0}
    rx.state.close()
