"""The simulated Partner API over HTTP: auth, paging, shapes, errors and real 429s."""

from __future__ import annotations

import calendar
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from exporter.api.client import PartnerApi
from exporter.api.models import aggregate_by_month, parse_usage
from exporter.clock import FakeClock
from exporter.simulator.app import SimulatedApi, UsageShape
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import TIERED_CATEGORIES, month_to_date_totals

START = calendar.timegm((2026, 3, 10, 12, 0, 0))
FLEET = build_fleet(7)
PA = FLEET.partner_id
FIXTURES = Path(__file__).parents[1] / "fixtures" / "api"


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


def fixture_point_keys(section: str) -> set[str]:
    """Every key a documented (Meta-shaped) fixture uses on a data point of `section`."""
    keys: set[str] = set()
    for path in FIXTURES.glob("*.json"):
        if "legacy" in path.name:
            continue
        body = json.loads(path.read_text())
        if not isinstance(body, dict) or not body.get(section):
            continue
        groups = [body[section], *body[section].get("data", [])]
        for group in groups:
            for point in group.get("data_points", []):
                keys |= set(point)
    return keys


async def get_usage(http, ch, **params):
    return await http.get(usage_path(ch), headers=KEY, params={
        "start_date": START - 86400 * 9, "end_date": START, **params})


async def test_usage_has_metas_documented_shape_by_default(http):
    """By default usage answers like Meta's analytics: no currency, upper-case enums, tier on
    billable tiered points only, calls under data[] with count, cost and average_duration, and
    no key on any point that the documented fixtures do not have."""
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    body = (await get_usage(http, ch, granularity="DAILY")).json()
    assert set(body) == {"pricing_analytics", "call_analytics", "id"}
    points = body["pricing_analytics"]["data"][0]["data_points"]
    calls = body["call_analytics"]["data"][0]["data_points"]
    assert points
    assert calls
    for p in points:
        assert p["pricing_category"].isupper()
        assert p["pricing_type"].isupper()
        assert not p["phone_number"].startswith("+")
        billable = p["cost"] > 0 and p["pricing_category"] in TIERED_CATEGORIES
        assert ("tier" in p) == billable, p
    assert any("tier" in p for p in points)
    assert {"MARKETING"} <= {p["pricing_category"] for p in points}
    for c in calls:
        assert set(c) == {"start", "end", "direction", "count", "cost", "average_duration"}
        assert c["direction"] in {"USER_INITIATED", "BUSINESS_INITIATED"}
    assert set().union(*map(set, points)) <= fixture_point_keys("pricing_analytics")
    assert set().union(*map(set, calls)) <= fixture_point_keys("call_analytics")


async def test_the_older_working_shape_is_an_option(clock):
    """UsageShape(legacy=True) answers the turn-1 working shape and takes lower-case spellings."""
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(legacy=True))
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="http://sim") as http:
        body = (await get_usage(http, ch, granularity="daily")).json()
        assert (await get_usage(http, ch, granularity="DAILY")).status_code == 400
    client = FLEET.client(ch.client_id)
    assert client is not None
    assert (body["currency"], body["granularity"]) == (client.currency, "daily")
    point = body["pricing_analytics"]["data"][0]["data_points"][0]
    assert set(point) == {"start", "end", "phone_number", "country", "pricing_category",
                          "pricing_type", "volume", "cost"}
    call = body["call_analytics"]["data"][0]["data_points"][0]
    assert set(call) == {"start", "end", "direction", "country", "count", "duration", "cost"}


@pytest.mark.parametrize("spelling", ["daily", "Daily", "DAY", "half_hour"])
async def test_a_spelling_outside_metas_enum_gets_the_documented_400(http, spelling):
    """Only HALF_HOUR, DAILY and MONTHLY are taken; others get 400 with the error body's shape."""
    r = await get_usage(http, FLEET.channels()[0], granularity=spelling)
    assert r.status_code == 400
    meta = r.json()["meta"]
    assert set(meta) == set(fixture_error()["meta"])
    assert meta["details"]["granularity"] == ["Must be one of: DAILY, HALF_HOUR, MONTHLY."]
    for accepted in ("HALF_HOUR", "DAILY", "MONTHLY"):
        ok = await get_usage(http, FLEET.channels()[0], granularity=accepted)
        assert ok.status_code == 200


def fixture_error() -> dict[str, dict[str, object]]:
    body: dict[str, dict[str, object]] = json.loads(
        (FIXTURES / "error-400-wrong-granularity.json").read_text())
    return body


@pytest.mark.parametrize("shape", [UsageShape(), UsageShape(calls_flat=True),
                                   UsageShape(legacy=True)])
async def test_the_exporters_parser_reads_the_simulators_truth(clock, shape):
    """Whatever the shape option, the exporter's parser sums a month-to-date answer to the
    simulator's truth: volumes, exact costs, call counts and call seconds (count x average)."""
    sim = SimulatedApi(FLEET, clock.now, usage_shape=shape)
    spelling = "daily" if shape.legacy else "DAILY"
    month = calendar.timegm((2026, 3, 1, 0, 0, 0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="http://sim") as http:
        for ch in [c for c in FLEET.channels() if c.activity > 0][:8]:
            body = (await http.get(usage_path(ch), headers=KEY, params={
                "start_date": month, "end_date": START, "granularity": spelling})).json()
            got = aggregate_by_month(parse_usage(json.loads(json.dumps(body),
                                                            parse_float=Decimal)), "")[month]
            messages, calls = month_to_date_totals(FLEET.seed, ch, month, START)
            assert {k: (t.volume, t.cost) for k, t in got.messages.items()} == messages
            assert {d: (t.count, t.duration_seconds, t.cost) for d, t in got.calls.items()} == (
                calls)
            assert got.points_without_cost == 0


async def test_a_credit_line_business_gets_no_cost(clock):
    """UsageShape(cost=False) drops every cost key, which the parser reads as unknown costs."""
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(cost=False))
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="http://sim") as http:
        body = (await get_usage(http, ch, granularity="DAILY")).json()
    report = parse_usage(body)
    assert report.messages
    assert report.calls
    assert report.points_without_cost == len(report.messages) + len(report.calls)


async def test_without_the_direction_dimension_calls_have_one_point_per_bucket(clock):
    """UsageShape(call_direction=False) gives one call point per day, without direction, whose
    count and seconds are those of both directions together."""
    ch = next(c for c in FLEET.channels() if c.activity > 1)
    answers = []
    for shape in (UsageShape(), UsageShape(call_direction=False)):
        sim = SimulatedApi(FLEET, clock.now, usage_shape=shape)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                     base_url="http://sim") as http:
            answers.append(parse_usage((await get_usage(http, ch, granularity="DAILY")).json()))
    both, merged = answers
    assert {c.direction for c in merged.calls} == {"unknown"}
    assert len({c.start for c in merged.calls}) == len(merged.calls)
    assert sum(c.count for c in merged.calls) == sum(c.count for c in both.calls)
    assert sum(c.duration_seconds for c in merged.calls) == sum(
        c.duration_seconds for c in both.calls)


async def test_the_client_falls_back_to_the_spelling_the_simulator_takes(clock):
    """Against the older shape, the client's DAILY is refused once and 'daily' kept: two
    requests on the simulator's log, then one per fetch."""
    sim = SimulatedApi(FLEET, clock.now, usage_shape=UsageShape(legacy=True))
    ch = FLEET.channels()[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        api = PartnerApi(http, base_url="http://sim/api/v2", partner_id=PA, clock=clock,
                         api_key=SecretStr("sim-key"))
        first = await api.channel_usage(ch.client_id, ch.id, START - 3600, START)
        second = await api.channel_usage(ch.client_id, ch.id, START - 3600, START)
    assert (first.requests, second.requests) == (2, 1)
    assert [r.status for r in sim.requests] == [400, 200, 200]


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
