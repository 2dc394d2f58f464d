"""Start-up from a persisted state: the fleet is rendered once before the poller starts, a
scrape meanwhile waits for that rendering and gets the whole body, and the state loads back
exactly what was stored (simulator over ASGI, FakeClock)."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import gzip
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from exporter.app import Exporter, _after_first_rendering, build
from exporter.clock import FakeClock
from exporter.config import Settings
from exporter.domain import (
    Balance,
    CallTotal,
    Channel,
    Client,
    MarketTotal,
    MessageTotal,
    MonthUsage,
)
from exporter.metrics.exposition import BLOCK_CHANNELS, Exposition
from exporter.polling.collector import UsageCollector
from exporter.polling.store import Store, _filled
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet

NOV = calendar.timegm((2026, 11, 1, 0, 0, 0))
DEC = calendar.timegm((2026, 12, 1, 0, 0, 0))
NOW = DEC + 5 * 86_400


class Recorder(httpx.AsyncBaseTransport):
    """The simulator over ASGI, remembering each request's path."""

    def __init__(self, sim: SimulatedApi) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.path)
        return await self._inner.handle_async_request(request)


def persisted(path: Path, n: int = 3 * BLOCK_CHANNELS + 5) -> list[Channel]:
    """A state file as a run before a restart left it: `n` channels, each with last month's
    and this month's usage (some points without a cost) and a balance."""
    store = Store(path)
    channels = [Channel(f"ch_{i:03d}", "cl_1", f"wa_{i % 4}", "", f"+49151{i}",
                        f'Line "{i}"', "ready") for i in range(n)]
    store.set_discovery([Client("cl_1", "Client", "active")], channels)
    for i, ch in enumerate(channels):
        months = {month: MonthUsage(month, "USD", {
            ("marketing", "regular"): MessageTotal(i + month % 7, Decimal(i) / 8, i % 3),
            ("utility", "free_customer_service"): MessageTotal(2 * i, Decimal("0.125"))},
            {"user_initiated": CallTotal(i, 60 * i, Decimal(i) / 100)},
            {"DE": MarketTotal(i, Decimal(i) / 3)}) for month in (NOV, DEC)}
        store.put_usage(ch.id, months, NOW - 600 + i, keep_from=NOV)
        store.put_channel_balance(ch.id, Balance(Decimal(i) / 4, "USD"), NOW - 60)
    store.close()
    return channels


@pytest.fixture
async def restarted(tmp_path: Path):
    """An exporter built on a persisted state, polling the simulator; closed after the test."""
    persisted(tmp_path / "s.sqlite3")
    fleet = build_fleet(3, waba_sizes=(1, 2), clients=1)
    sim = SimulatedApi(fleet, FakeClock(NOW).now)
    transport = Recorder(sim)
    settings = Settings(api_url="http://sim.test/api/v2", partner_id=fleet.partner_id,
                        api_key=SecretStr(sim.api_key), state_path=tmp_path / "s.sqlite3")
    exporter = build(settings, clock=FakeClock(NOW), transport=transport)
    yield exporter, transport
    await exporter.aclose()


def oracle(exporter: Exporter) -> bytes:
    """prometheus-client's rendering of the same usage series (the reference)."""
    usage = UsageCollector(exporter.store, exporter.clock, 1800, lambda ch: True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(usage)
    return generate_latest(registry)


def starts_with_the_usage_part(body: bytes, exporter: Exporter) -> bool:
    """The per-channel families and balances come first, as prometheus-client renders them;
    the small parts and the exporter's own metrics follow."""
    reference = oracle(exporter)
    return body.startswith(reference) and body[len(reference):].startswith(b"# HELP ")


async def test_the_fleet_is_rendered_before_the_poller_makes_a_call(restarted) -> None:
    exporter, transport = restarted
    tasks: list[asyncio.Task[None]] = []
    await _after_first_rendering(exporter, tasks)
    try:
        assert transport.sent == []  # the rendering came first
        assert [task.get_name() for task in tasks] == ["poller"]
        renderer = exporter.exposition._parts[0]
        joined = renderer.joined_blocks
        assert joined == 4  # every block, once
        body, _ = exporter.exposition.body(openmetrics=False, compress=True)
        assert renderer.joined_blocks == joined  # the scrape found them rendered
        assert starts_with_the_usage_part(gzip.decompress(body), exporter)
        for _ in range(1000):  # turns of the loop, until the poller's first request is sent
            if transport.sent:
                break
            await asyncio.sleep(0)
        assert transport.sent  # and then the poller went
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_scrape_during_the_first_rendering_waits_for_it_and_gets_everything(
        restarted) -> None:
    exporter, _ = restarted
    exposition: Exposition = exporter.exposition
    warming = asyncio.create_task(exposition.awarm())
    await asyncio.sleep(0)
    plain, _ = await exposition.achunks(openmetrics=False, compress=False)
    await warming
    assert exposition._parts[0].joined_blocks == 4  # rendered once, by the warm-up
    assert starts_with_the_usage_part(b"".join(plain), exporter)
    gz, _ = await exposition.achunks(openmetrics=False, compress=True)
    assert gzip.decompress(b"".join(gz)) == b"".join(plain)


def test_the_state_loads_back_exactly_what_was_stored(tmp_path: Path) -> None:
    channels = persisted(tmp_path / "s.sqlite3")
    first = Store(tmp_path / "s.sqlite3")
    second = Store(tmp_path / "s.sqlite3")
    try:
        assert second.usage == first.usage
        assert list(second.usage) == [ch.id for ch in channels]
        usage = second.usage["ch_007"]
        assert list(usage.months) == [NOV, DEC]
        assert usage.fetched_at == NOW - 600 + 7
        assert usage.months[DEC].messages[("marketing", "regular")] == MessageTotal(
            7 + DEC % 7, Decimal(7) / 8, 1)
        assert usage.months[DEC].calls["user_initiated"] == CallTotal(7, 420, Decimal("0.07"))
        assert usage.months[DEC].markets["DE"] == MarketTotal(7, Decimal(7) / 3)
        # The names repeated in every row are kept once.
        keys = [next(iter(u.months[DEC].messages)) for u in second.usage.values()]
        assert all(key is keys[0] for key in keys)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(("cls", "values"), [
    (MessageTotal, (3, Decimal("1.5"), 2)),
    (CallTotal, (1, 60, Decimal("0.25"), 0)),
    (MarketTotal, (9, Decimal(0), 1)),
])
def test_the_loaders_constructors_make_what_the_classes_make(
        cls: type, values: tuple[object, ...]) -> None:
    made: Any = _filled(cls)(*values)
    expected = cls(*values)
    assert made == expected
    assert hash(made) == hash(expected)
    assert dataclasses.astuple(made) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.cost = Decimal(1)
    assert type(made) is cls


def test_a_class_with_more_to_its_init_keeps_it() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    assert _filled(Checked) is Checked
