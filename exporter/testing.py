"""Test and benchmark support shipped with the package: drive the whole exporter on a FakeClock
against the simulator in process, so hours of schedule run in milliseconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.app import Exporter, build
from exporter.clock import FakeClock
from exporter.config import Settings
from exporter.simulator.app import SimulatedApi
from exporter.simulator.faults import ConnectionReset, Hang
from exporter.simulator.fleet import Fleet


class NetworkFaults(httpx.AsyncBaseTransport):
    """What a network stack makes of the simulator's connection faults, in process: a reset
    mid-answer is a protocol error, a hang is a read timeout."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionReset as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        except Hang:
            raise httpx.ReadTimeout("simulated hang", request=request) from None


class Rig:
    """An exporter and a simulated 360dialog API sharing one FakeClock."""

    def __init__(self, fleet: Fleet, sim: SimulatedApi, clock: FakeClock, state_path: Path,
                 transport: httpx.AsyncBaseTransport | None = None, **settings: Any) -> None:
        self.fleet = fleet
        self.sim = sim
        self.clock = clock
        self.state_path = state_path
        self.transport = transport or httpx.ASGITransport(app=sim.app)
        self._settings = {"api_key": SecretStr(sim.api_key)} | settings
        self.exporter = self._build()
        self.restarts = 0

    def _build(self) -> Exporter:
        settings = Settings(
            api_url="http://sim.test/api/v2",
            partner_id=self.fleet.partner_id,
            state_path=self.state_path,
            **self._settings,
        )
        return build(settings, clock=self.clock, transport=self.transport)

    async def restart(self) -> None:
        """Stop the exporter (as if killed after its last write) and build a new one."""
        await self.exporter.aclose()
        self.exporter = self._build()
        self.restarts += 1

    async def run_until(self, until: float) -> None:
        """Run the poll loop, and backfill if it is on, jumping the clock from one due task to
        the next, up to `until`."""
        poller = self.exporter.poller
        assert poller is not None, "the rig always polls"
        backfill = self.exporter.backfill
        while True:
            await poller.tick()
            await poller.drain()
            backfill_due = None
            if backfill is not None:
                backfill_due = await backfill.step()
                if backfill_due <= self.clock.now():
                    continue  # it made a call: there may be room for another now
            nxt = min((t for t in (poller.next_due(), backfill_due) if t is not None),
                      default=None)
            if nxt is None or nxt > until:
                self.clock.set(max(self.clock.now(), until))
                await poller.tick()
                await poller.drain()
                return
            if nxt > self.clock.now():
                self.clock.set(nxt)

    async def scrape(self, *, openmetrics: bool = False, gzip: bool = False) -> httpx.Response:
        headers = {}
        if openmetrics:
            headers["Accept"] = "application/openmetrics-text; version=1.0.0"
        if not gzip:
            headers["Accept-Encoding"] = "identity"
        transport = httpx.ASGITransport(app=self.exporter.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
            return await client.get("/metrics", headers=headers)

    async def samples(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Scraped samples: name -> {sorted label pairs -> value}."""
        text = (await self.scrape()).text
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out
