"""Spend by destination market, polled from the simulator: per WABA and country, the same
messages and cost as the channel series; `unknown` when the answers carry no country."""

from __future__ import annotations

import calendar

import pytest

from exporter.clock import FakeClock
from exporter.simulator.app import SimulatedApi, UsageShape
from exporter.simulator.fleet import build_fleet
from exporter.testing import Rig

START = calendar.timegm((2026, 11, 12, 9, 0, 0))


def summed(samples: dict[tuple[tuple[str, str], ...], float], *by: str) -> dict[tuple[str, ...],
                                                                                float]:
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples.items():
        d = dict(labels)
        key = tuple(d[k] for k in by)
        out[key] = out.get(key, 0.0) + value
    return out


@pytest.mark.parametrize("country", [True, False], ids=["with-country", "without-country"])
async def test_destinations_add_up_to_the_channel_series_per_waba(tmp_path, country):
    clock = FakeClock(START)
    fleet = build_fleet(7, waba_sizes=(3, 2), clients=2)
    sim = SimulatedApi(fleet, clock.now, usage_shape=UsageShape(country=country))
    rig = Rig(fleet, sim, clock, tmp_path / "s.db")
    await rig.run_until(START + 2 * 3600)
    samples = await rig.samples()
    await rig.exporter.aclose()

    messages = samples["whatsapp_destination_messages_total"]
    countries: dict[str, set[str]] = {}
    for ch in fleet.channels():
        countries.setdefault(ch.waba_external_id, set()).add(ch.country if country else "unknown")
    assert {(w, c) for w, cs in countries.items() for c in cs} == set(
        summed(messages, "waba_id", "country"))
    assert summed(messages, "waba_id") == pytest.approx(
        summed(samples["whatsapp_messages_total"], "waba_id"))
    assert summed(samples["whatsapp_destination_cost_total"], "waba_id", "currency") == (
        pytest.approx(summed(samples["whatsapp_cost_total"], "waba_id", "currency")))
