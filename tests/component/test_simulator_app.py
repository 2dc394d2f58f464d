"""The simulated Partner API over HTTP: auth, paging, shapes, errors and real 429s."""

from __future__ import annotations

import calendar

import httpx
import pytest

from exporter.clock import FakeClock
from exporter.simulator.app import SimulatedApi
from exporter.simulator.fleet import build_fleet

START = calendar.timegm((2026, 3, 10, 12, 0, 0))
FLEET = build_fleet(7)
PA = FLEET.partner_id


@pytest.fixture
def clock():
    return FakeClock(START)


@pytest.fixture
def sim(clock):
    return SimulatedApi(FLEET, clock.now, token_ttl=600)


@pytest.fixture
async def http(sim):
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


KEY = {"X-API-Key": "sim-key"}


def usage_path(ch) -> str:
    return f"/api/v2/partners/{PA}/clients/{ch.client_id}/channels/{ch.id}/info/usage"


async def test_api_key_and_bearer_are_accepted_and_checked(http, clock):
    """A right key or an unexpired token gets in; a wrong key, no auth or an expired token: 401."""
    path = f"/api/v2/partners/{PA}/balance"
    assert (await http.get(path, headers=KEY)).status_code == 200
    assert (await http.get(path, headers={"X-API-Key": "nope"})).status_code == 401
    assert (await http.get(path)).status_code == 401
    bad = await http.post("/api/v2/token", json={"username": "demo@example.com", "password": "x"})
    assert bad.status_code == 401
    token = (await http.post("/api/v2/token", json={
        "username": "demo@example.com", "password": "demo-password"})).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await http.get(path, headers=bearer)).status_code == 200
    clock.set(START + 601)
    assert (await http.get(path, headers=bearer)).status_code == 401


async def test_channels_page_until_total(http):
    """Pages of at most 100 cover every channel exactly once."""
    seen = []
    offset = 0
    while True:
        body = (await http.get(f"/api/v2/partners/{PA}/channels",
                               params={"limit": 40, "offset": offset}, headers=KEY)).json()
        seen += [c["id"] for c in body["partner_channels"]]
        offset += body["count"]
        if offset >= body["total"]:
            break
    assert sorted(seen) == sorted(ch.id for ch in FLEET.channels())


async def test_usage_has_the_working_shape(http):
    """Usage answers pricing and call analytics in the reference's working shape."""
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    body = (await http.get(usage_path(ch), headers=KEY, params={
        "start_date": START - 86400 * 9, "end_date": START, "granularity": "daily"})).json()
    point = body["pricing_analytics"]["data"][0]["data_points"][0]
    assert set(point) == {"start", "end", "phone_number", "country", "pricing_category",
                          "pricing_type", "volume", "cost"}
    assert body["call_analytics"]["data"][0]["data_points"]


@pytest.mark.parametrize("params", [{}, {"start_date": "x", "end_date": 1},
                                    {"start_date": 10, "end_date": 5},
                                    {"start_date": 1, "end_date": 2, "granularity": "weekly"}])
async def test_bad_usage_requests_get_400(http, params):
    """Missing, non-numeric or reversed ranges and unknown granularities are 400 'Wrong payload'."""
    r = await http.get(usage_path(FLEET.channels()[0]), headers=KEY, params=params)
    assert r.status_code == 400
    assert r.json()["meta"]["developer_message"].startswith("Wrong payload")


async def test_unknown_or_mismatched_ids_get_404(http):
    """A channel under the wrong client is not found."""
    a, b = FLEET.clients[0], FLEET.clients[1]
    ch = a.wabas[0].channels[0]
    path = f"/api/v2/partners/{PA}/clients/{b.id}/channels/{ch.id}/info/usage"
    r = await http.get(path, headers=KEY, params={"start_date": 1, "end_date": 2})
    assert r.status_code == 404


async def test_the_eleventh_call_in_an_hour_is_refused(http, clock, sim):
    """Ten usage calls per channel per hour pass; the eleventh gets 429 with Retry-After."""
    ch = FLEET.channels()[0]
    params = {"start_date": START - 3600, "end_date": START}
    for i in range(10):
        clock.set(START + i)
        assert (await http.get(usage_path(ch), headers=KEY, params=params)).status_code == 200
    r = await http.get(usage_path(ch), headers=KEY, params=params)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) == 3600 - 9
    assert sim.rate_limited == 1
    clock.set(START + 3600)  # the first call has left the window
    assert (await http.get(usage_path(ch), headers=KEY, params=params)).status_code == 200


async def test_a_waba_of_50_channels_shares_200_calls_an_hour(http, clock):
    """Across a WABA's channels the 201st call in an hour is refused."""
    waba = next(w for w in FLEET.wabas() if len(w.channels) == 50)
    params = {"start_date": START - 3600, "end_date": START}
    statuses = []
    for i in range(201):
        clock.set(START + i)
        ch = waba.channels[i % 50]
        statuses.append((await http.get(usage_path(ch), headers=KEY, params=params)).status_code)
    assert statuses[:200] == [200] * 200
    assert statuses[200] == 429


async def test_client_balance_allows_five_per_thirty_seconds(http, clock):
    """Client balance: five calls in 30 s pass, the sixth is refused."""
    client = FLEET.clients[0]
    path = f"/api/v2/partners/{PA}/clients/{client.id}/info/balance"
    codes = [(await http.get(path, headers=KEY)).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    clock.set(START + 30)
    assert (await http.get(path, headers=KEY)).status_code == 200


async def test_truth_matches_the_usage_response(http):
    """/_sim/truth equals the sum of the usage points for the month to date."""
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    month = calendar.timegm((2026, 3, 1, 0, 0, 0))
    body = (await http.get(usage_path(ch), headers=KEY, params={
        "start_date": month, "end_date": START})).json()
    points = body["pricing_analytics"]["data"][0]["data_points"]
    truth = (await http.get("/_sim/truth", params={"channel_id": ch.id})).json()
    assert sum(m["volume"] for m in truth["messages"]) == sum(p["volume"] for p in points)
