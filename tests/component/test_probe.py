"""The probe command: one call of each kind, charged to the ledger, and what it understood."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx
from pydantic import SecretStr

from exporter.clock import FakeClock
from exporter.config import Settings
from exporter.polling.store import Store
from exporter.probe import run_probe, unread_fields, usage_shape
from exporter.simulator.app import SimulatedApi, UsageShape
from exporter.simulator.fleet import build_fleet

FLEET = build_fleet(7)
START = 1_796_083_200.0 + 5 * 86_400  # 2026-12-06 00:00 UTC


def _settings(tmp_path: Path, sim: SimulatedApi) -> Settings:
    return Settings(api_url="http://sim.test/api/v2", partner_id=FLEET.partner_id,
                    api_key=SecretStr(sim.api_key), state_path=tmp_path / "state.sqlite3")


async def test_probe_reads_each_kind_once_and_charges_the_ledger(tmp_path: Path) -> None:
    """Each call the probe makes is in the ledger, and the simulator saw exactly those calls."""
    clock = FakeClock(START)
    sim = SimulatedApi(FLEET, clock.now)
    probe = await run_probe(_settings(tmp_path, sim), clock=clock,
                            transport=httpx.ASGITransport(app=sim.app))
    text = "\n".join(probe.lines)
    assert not probe.failed
    assert "shape: Meta analytics" in text
    assert "granularity spelling that worked: DAILY (1 request(s))" in text
    assert "currency USD (from channel_balance)" in text
    assert "exposes: month 2026-12" in text
    assert "points name their destination country (" in text
    ends = [r.path.split("/partners/", 1)[1].split("/", 1)[1] for r in sim.requests]
    ch = ends[1].split("/")[3]
    assert ends == ["channels", f"clients/{ends[1].split('/')[1]}/channels/{ch}/info/balance",
                    f"clients/{ends[1].split('/')[1]}/channels/{ch}/info/usage",
                    f"clients/{ends[1].split('/')[1]}/info/balance", "balance"]
    store = Store(tmp_path / "state.sqlite3")
    kinds = sorted({kind for kind, _, _ in store.ledger_rows()})
    store.close()
    assert kinds == ["channel_balance", "client_balance", "discovery", "partner_balance",
                     "usage_channel", "usage_waba"]


async def test_probe_finds_the_spelling_the_api_takes_and_charges_the_second_try(
        tmp_path: Path) -> None:
    """Against an API that refuses Meta's upper case, the lower case is tried once, charged."""
    clock = FakeClock(START)
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(legacy=True))
    probe = await run_probe(_settings(tmp_path, sim), clock=clock,
                            transport=httpx.ASGITransport(app=sim.app))
    text = "\n".join(probe.lines)
    assert "granularity spelling that worked: daily (2 request(s))" in text
    assert "older working shape" in text
    store = Store(tmp_path / "state.sqlite3")
    usage_calls = [r for r in store.ledger_rows() if r[0] == "usage_channel"]
    store.close()
    # Two usage requests, and the channel balance call, which shares the usage budget here.
    assert len(usage_calls) == 3
    assert sum(r.path.endswith("/info/usage") for r in sim.requests) == 2


async def test_probe_says_when_costs_are_missing(tmp_path: Path) -> None:
    """A business on a credit line gets no COST: the probe says the cost is unknown."""
    clock = FakeClock(START)
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(cost=False))
    probe = await run_probe(_settings(tmp_path, sim), clock=clock,
                            transport=httpx.ASGITransport(app=sim.app))
    text = "\n".join(probe.lines)
    assert "points have no cost" in text
    assert "cost unknown" in text


async def test_probe_skips_a_call_whose_budget_is_full(tmp_path: Path) -> None:
    """With the partner balance budget spent by an earlier run, the probe does not call it."""
    clock = FakeClock(START)
    sim = SimulatedApi(FLEET, clock.now)
    settings = _settings(tmp_path, sim)
    transport = httpx.ASGITransport(app=sim.app)
    await run_probe(settings, clock=clock, transport=transport)
    await clock.advance(1.0)
    before = len(sim.requests)
    probe = await run_probe(settings, clock=clock, transport=transport)
    assert any(line.startswith("partner balance: skipped") for line in probe.lines)
    assert not any(r.path.endswith("/balance") and "/clients/" not in r.path
                   for r in sim.requests[before:])


@respx.mock
async def test_a_body_that_does_not_parse_fails_the_probe(tmp_path: Path) -> None:
    """A usage body of the wrong type is reported and makes the probe fail."""
    base = "http://api.test/api/v2/partners/pa"
    respx.get(f"{base}/channels").respond(json={"partner_channels": [
        {"id": "ch1", "client_id": "cl1", "status": "ready",
         "waba_account": {"id": "wa1", "external_id": "123"},
         "setup_info": {"phone_number": "+4915112345678"}}], "total": 1})
    respx.get(f"{base}/clients/cl1/channels/ch1/info/balance").respond(
        json={"balance": 1.5, "currency": "eur"})
    respx.get(f"{base}/clients/cl1/channels/ch1/info/usage").respond(
        json={"pricing_analytics": "not an object"})
    respx.get(f"{base}/clients/cl1/info/balance").respond(json={"balance": 3, "currency": "eur"})
    respx.get(f"{base}/balance").respond(json=[{"total": 9, "currency": "eur"}])
    settings = Settings(api_url="http://api.test/api/v2", partner_id="pa",
                        api_key=SecretStr("k"), state_path=tmp_path / "s.sqlite3")
    probe = await run_probe(settings, clock=FakeClock(START))
    assert probe.failed
    assert any(line.startswith("usage: the answer did not parse") for line in probe.lines)


def test_unread_fields_names_what_the_parser_ignores() -> None:
    """Fields of a usage body the parser does not read are listed, known ones are not."""
    body = {"pricing_analytics": {"data": [{"data_points": [
        {"start": 1, "end": 2, "volume": 3, "cost": 0.1, "surprise": 1}]}]}, "extra": {}}
    assert unread_fields(body) == ["pricing_analytics point surprise", "top-level extra"]
    assert usage_shape({"currency": "USD"}).startswith("older working shape")
    assert usage_shape([]) == "not an object"


async def test_probe_says_when_the_answer_names_no_country(tmp_path: Path) -> None:
    """Whether 360dialog passes Meta's COUNTRY dimension on is not documented: the probe says
    which it is, and where such messages show."""
    clock = FakeClock(START)
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(country=False))
    probe = await run_probe(_settings(tmp_path, sim), clock=clock,
                            transport=httpx.ASGITransport(app=sim.app))
    assert 'no point names a country (no COUNTRY dimension)' in "\n".join(probe.lines)
