"""The whole exporter with a spend budgets file: the budget series on /metrics follow the file
and, for the default, the clients discovery found."""

from __future__ import annotations

import calendar

from exporter.clock import FakeClock
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet
from exporter.testing import Rig

START = calendar.timegm((2026, 11, 20, 9, 0, 0))


async def test_budgets_are_exposed_per_client_per_waba_and_by_default(tmp_path):
    """After discovery every simulated client has a budget (its own or the default) and the
    WABA entry has one, with the labels the cost series carry; the cost series' clients and
    WABA ids are the ones the budgets name."""
    fleet = build_fleet(5, waba_sizes=(2, 1), clients=3)
    first, *others = fleet.clients
    waba = first.wabas[0].external_id
    path = tmp_path / "budgets.toml"
    path.write_text(f'[default]\namount = 250\ncurrency = "USD"\n'
                    f'[clients.{first.id}]\namount = 1000.5\ncurrency = "EUR"\n'
                    f'[wabas."{waba}"]\namount = 75\ncurrency = "EUR"\n')
    clock = FakeClock(START)
    rig = Rig(fleet, SimulatedApi(fleet, clock.now), clock, tmp_path / "s.db",
              spend_budgets=path)
    await rig.run_until(START + 3600)
    samples = await rig.samples()

    budgets = {tuple(v for _, v in labels): value
               for labels, value in samples["whatsapp_spend_budget"].items()}
    # Labels sorted by name: client_id, currency, waba_id.
    assert budgets == {
        (first.id, "EUR", ""): 1000.5,
        ("", "EUR", waba): 75.0,
        **{(client.id, "USD", ""): 250.0 for client in others},
    }
    cost_labels = {dict(labels)["client_id"] for labels in samples["whatsapp_cost_total"]}
    assert cost_labels == {client.id for client in fleet.clients}
    assert waba in {dict(labels)["waba_id"] for labels in samples["whatsapp_cost_total"]}
    await rig.exporter.aclose()
