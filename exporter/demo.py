"""Demo mode: the simulated Partner API in this process, and its webhooks sent to our receiver.

Imported only in demo mode (`D360_DEMO=true`, or no credentials and no webhook auth: see
`config.decide_mode`), so a production start-up never loads the simulator. The demo's defaults
for the state path and the rate card are set by `Settings`, so `--check-config` shows them.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import httpx
import structlog
from pydantic import SecretStr

from exporter.clock import SystemClock
from exporter.config import DEMO_STATE_PATH, EXAMPLE_RATE_CARD, Settings
from exporter.serving import cancel_and_wait
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import Fleet, build_fleet
from exporter.simulator.server import RunningServer, start_server
from exporter.simulator.webhooks import WebhookEmitter

log = structlog.get_logger("exporter")

__all__ = ["DEMO_STATE_PATH", "EXAMPLE_RATE_CARD", "MODE", "Demo"]

MODE = "DEMO MODE: polling a built-in simulated 360dialog API with made-up data"


@dataclass
class Demo:
    fleet: Fleet
    simulator: RunningServer
    client: httpx.AsyncClient | None = None
    emitter: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings) -> tuple[Settings, Demo]:
        """Start the simulator; return the settings that point the exporter at it."""
        fleet = build_fleet(settings.demo_seed)
        sim = SimulatedApi(fleet, SystemClock().now)
        simulator = await start_server(sim)
        update: dict[str, object] = {
            "demo": True,  # the simulator's key below must not turn this into polling
            "api_url": simulator.url + "/api/v2",
            "partner_id": fleet.partner_id,
            "api_key": SecretStr(sim.api_key),
            "username": None,
            "password": None,
        }
        if not settings.webhook_auth_given:
            # The simulator signs its webhooks with a secret made for this run.
            update["webhook_hmac_secret"] = SecretStr(secrets.token_hex(16))
        why = ("D360_DEMO=true; any Partner API credentials given are not used" if settings.demo
               else "neither Partner API credentials nor webhook auth given")
        log.warning("demo_mode", simulator_url=simulator.url, channels=len(fleet.channels()),
                    note=f"{why}; the numbers are simulated")
        return settings.model_copy(update=update), cls(fleet, simulator)

    def send_webhooks(self, settings: Settings, receiver_url: str) -> None:
        """Push the simulated traffic, signed as configured, to our own webhook receiver."""
        self.client = httpx.AsyncClient(timeout=10.0)
        secret = settings.webhook_secret
        hmac_secret = settings.webhook_hmac_secret
        emitter = WebhookEmitter(
            self.fleet, SystemClock().now, receiver_url + "/webhook", self.client,
            hmac_secret=hmac_secret.get_secret_value() if hmac_secret else None,
            secret_header=((settings.webhook_secret_header, secret.get_secret_value())
                           if secret else None),
            sleep=SystemClock().sleep)
        self.emitter = asyncio.create_task(emitter.run(), name="demo-webhooks")

    async def stop(self) -> None:
        await cancel_and_wait(self.emitter)
        if self.client is not None:
            await self.client.aclose()
        await self.simulator.stop()
