"""The exporter against a simulator that spoils 20% of its answers, on a FakeClock: no crash, no
budget broken, the last good numbers served with their age, errors counted by kind, and the
numbers back to the truth once the faults stop."""

from __future__ import annotations

import calendar

import httpx
import pytest

from exporter.calendar import month_start
from exporter.clock import FakeClock
from exporter.logging import configure
from exporter.simulator.app import SimulatedApi
from exporter.simulator.faults import KINDS, FaultInjector, Hang
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import month_to_date_totals
from exporter.testing import NetworkFaults, Rig
from tests.system.test_schedule_day import usage_calls, window_violations

START = calendar.timegm((2026, 6, 10, 8, 0, 0))
SEED = 5


async def hang() -> None:
    raise Hang


async def test_twenty_percent_faults_then_convergence(tmp_path, capsys):
    """Six hours at a 20% fault rate of every kind, then two clean hours."""
    clock = FakeClock(START)
    fleet = build_fleet(SEED, waba_sizes=(30, 4, 1), clients=2)
    sim = SimulatedApi(fleet, clock.now, page_size_max=10)  # several pages per listing
    faults = FaultInjector(sim.app, rate=0.2, seed=3, hang=hang)
    transport = NetworkFaults(httpx.ASGITransport(app=faults))
    rig = Rig(fleet, sim, clock, tmp_path / "s.db", transport=transport,
              discovery_interval_seconds=600)
    configure("json", "info", secrets=[])
    await rig.run_until(START + 1800)
    served = await rig.samples()
    for hour in range(1, 7):
        await rig.run_until(START + hour * 3600)
        samples = await rig.samples()
        # Every channel keeps its series and its age while a share of the answers fail.
        updated = samples["whatsapp_usage_updated_timestamp_seconds"]
        assert len(updated) == len(fleet.channels())
        assert set(samples["whatsapp_messages_total"]) >= set(served["whatsapp_messages_total"])
        served = samples
    faults.enabled = False
    faulty_until = clock.now()
    await rig.run_until(START + 8 * 3600)
    samples = await rig.samples()

    assert set(faults.injected) == set(KINDS)
    assert sum(faults.injected.values()) > 200
    errors = {dict(k)["kind"] for k, v in samples["whatsapp_exporter_api_errors_total"].items()
              if v > 0}
    assert errors >= {"transport", "rate_limited", "server", "auth", "malformed"}
    configure("console", "warning")
    log = capsys.readouterr().err
    by_kind: dict[str, int] = {}
    for k, v in samples["whatsapp_exporter_api_errors_total"].items():
        by_kind[dict(k)["kind"]] = by_kind.get(dict(k)["kind"], 0) + int(v)
    with capsys.disabled():  # the figures the README records
        print(f"\nfaults: injected={dict(sorted(faults.injected.items()))} "
              f"total={sum(faults.injected.values())} requests={len(sim.requests)} "
              f"errors={by_kind}")
    assert "poll_task_crashed" not in log, log[log.find("poll_task_crashed"):][:6000]
    assert "Traceback" not in log
    assert "listing changed while paging" in log  # a moved page was read again, not taken

    calls = usage_calls(sim)
    for waba in fleet.wabas():
        assert window_violations([t for ch in waba.channels for t in calls[ch.id]], 200,
                                 3600) == 0
        for ch in waba.channels:
            assert window_violations(calls[ch.id], 10, 3600) == 0, ch.id

    store = rig.exporter.store
    for ch in fleet.channels():
        usage = store.usage[ch.id]
        assert usage.fetched_at > faulty_until, ch.id  # polled again after the faults
        messages, _ = month_to_date_totals(SEED, ch, month_start(usage.fetched_at),
                                           usage.fetched_at)
        got = {(dict(k)["category"], dict(k)["pricing_type"]): v
               for k, v in samples["whatsapp_messages_total"].items()
               if dict(k)["channel_id"] == ch.id}
        assert {k: v for k, v in got.items() if v} == {
            k: float(v[0]) for k, v in messages.items() if v[0]}, ch.id
    assert len(store.channels) == len(fleet.channels())  # no channel retired by a moved page
    await rig.exporter.aclose()


def test_fault_kinds_are_checked():
    """An unknown fault kind or a rate outside [0, 1] is refused."""
    with pytest.raises(ValueError, match="fault rate"):
        FaultInjector(lambda *_: None, rate=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fault rate"):
        FaultInjector(lambda *_: None, rate=0.1, kinds=("meteor",))  # type: ignore[arg-type]
