"""A first discovery that fails names the setting to check, in the log (once per change) and
in /readyz's answer, and is retried on the short backoff until it succeeds (simulator over
ASGI, FakeClock)."""

from __future__ import annotations

import calendar
import itertools
import json

import httpx
import pytest
from pydantic import SecretStr

from exporter.app import Exporter, build
from exporter.clock import FakeClock
from exporter.config import Settings
from exporter.logging import configure
from exporter.polling.backoff import MIN_BACKOFF_SECONDS
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet

START = calendar.timegm((2026, 5, 12, 9, 0, 0))
WRONG_KEY = "wrong-key-0123456789"


class Recorder(httpx.AsyncBaseTransport):
    """The simulator over ASGI, remembering when each request was sent (on the fake clock)."""

    def __init__(self, sim: SimulatedApi, clock: FakeClock) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self._clock = clock
        self.sent: list[tuple[float, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((self._clock.now(), request.url.path))
        return await self._inner.handle_async_request(request)


class Setup:
    def __init__(self, path, **settings) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.clock = FakeClock(START)
        self.fleet = build_fleet(7, waba_sizes=(1, 3), clients=1)
        self.sim = SimulatedApi(self.fleet, self.clock.now)
        self.transport = Recorder(self.sim, self.clock)
        values = {"api_url": "http://sim.test/api/v2", "partner_id": self.fleet.partner_id,
                  "api_key": SecretStr(self.sim.api_key), "state_path": path / "s.sqlite3"}
        self.exporter: Exporter = build(Settings(**(values | settings)), clock=self.clock,
                                        transport=self.transport)

    async def run_until(self, until: float) -> None:
        poller = self.exporter.poller
        assert poller is not None
        while True:
            await poller.tick()
            await poller.drain()
            nxt = poller.next_due()
            if nxt is None or nxt > until:
                self.clock.set(until)
                return
            self.clock.set(max(nxt, self.clock.now()))

    async def readyz(self) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.exporter.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
            return await client.get("/readyz")

    def discovery_tries(self) -> list[float]:
        return [t for t, path in self.transport.sent if path.endswith("/clients")]


@pytest.fixture
async def make(tmp_path):
    """Setup(**settings), each closed after the test."""
    made: list[Setup] = []

    def setup(**settings) -> Setup:
        made.append(Setup(tmp_path / str(len(made)), **settings))
        return made[-1]
    yield setup
    for one in made:
        await one.exporter.aclose()


@pytest.fixture
def logs(capsys):
    """Structured (JSON) log events the test's code wrote."""
    configure("json", "info", secrets=[WRONG_KEY])

    def read() -> list[dict[str, object]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    yield read
    configure("console", "warning")


def events(lines, name):
    return [e for e in lines if e.get("event") == name]


async def test_a_wrong_api_key_is_named_in_the_log_and_in_readyz(make, logs):
    """401 on discovery: one `discovery_failed` event naming D360_API_KEY and the partner,
    however often it is retried; /readyz's 503 says the same; the key is printed nowhere.
    Once the key works, discovery succeeds on the next retry and /readyz is ready."""
    setup = make(api_key=SecretStr(WRONG_KEY))
    await setup.run_until(START + 600)
    lines = logs()
    failed = events(lines, "discovery_failed")
    assert len(failed) == 1, failed
    assert failed[0]["setting"] == "D360_API_KEY"
    assert failed[0]["partner_id"] == "sim_PA"
    assert failed[0]["status"] == 401
    assert len(setup.discovery_tries()) >= 5  # retried, still one event
    answer = await setup.readyz()
    assert answer.status_code == 503
    assert answer.text == ("not ready: discovery failed: the API answered 401 for partner "
                           "sim_PA; check D360_API_KEY\n")
    assert WRONG_KEY not in json.dumps(lines) + answer.text

    setup.sim.api_key = WRONG_KEY  # the key is activated on the API's side
    await setup.run_until(START + 1800)
    assert (await setup.readyz()).text == "ready\n"
    assert events(logs(), "discovery_recovered")


async def test_a_wrong_username_or_password_names_the_pair(make, logs):
    """With a username and password the token request is refused: both settings are named."""
    setup = make(api_key=None, username="demo@example.com",
                  password=SecretStr("not-the-password"))
    await setup.run_until(START + 60)
    failed = events(logs(), "discovery_failed")
    assert [e["setting"] for e in failed] == ["D360_USERNAME and D360_PASSWORD"]
    assert "check D360_USERNAME and D360_PASSWORD" in (await setup.readyz()).text


async def test_a_base_url_without_the_api_path_is_named_and_retried_soon(make, logs):
    """404 on discovery with a base URL lacking /api/v2: the log and /readyz say so, and the
    first discovery is retried on the backoff (15 s, then doubling), not after the 15-minute
    discovery interval."""
    setup = make(api_url="http://sim.test")
    await setup.run_until(START + 500)
    failed = events(logs(), "discovery_failed")
    assert len(failed) == 1, failed
    assert failed[0]["setting"] == "D360_API_URL"
    assert failed[0]["status"] == 404
    assert "D360_API_URL (http://sim.test) has no /api/v2 path" in str(failed[0]["hint"])
    assert "has no /api/v2 path" in (await setup.readyz()).text
    tries = setup.discovery_tries()
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[:4] == pytest.approx([MIN_BACKOFF_SECONDS * 2**k for k in range(4)], abs=0.01)


async def test_a_404_with_the_api_path_points_at_the_partner_id(make, logs):
    """404 although the URL has /api/v2: the partner id is the likely culprit."""
    setup = make(partner_id="no_such_partner")
    await setup.run_until(START + 60)
    failed = events(logs(), "discovery_failed")
    assert [e["setting"] for e in failed] == ["D360_PARTNER_ID"]
    assert "check D360_PARTNER_ID" in (await setup.readyz()).text


async def test_after_the_first_discovery_a_failure_waits_its_interval(make, logs):
    """Once discovered, a 404 is no longer retried soon: the next try is an interval later,
    and /readyz stays ready (the last good fleet keeps being polled)."""
    setup = make(discovery_interval_seconds=900)
    await setup.run_until(START + 60)
    assert (await setup.readyz()).text == "ready\n"
    setup.sim.fleet = build_fleet(7, waba_sizes=(1, 3), clients=1, partner_id="other")
    await setup.run_until(START + 3 * 900 + 60)
    tries = setup.discovery_tries()
    assert [round(b - a) for a, b in itertools.pairwise(tries)] == [900, 900, 900]
    assert (await setup.readyz()).text == "ready\n"
    assert len(events(logs(), "discovery_failed")) == 1
