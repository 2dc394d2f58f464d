"""The Partner API client against respx: auth, errors, shapes."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx
from pydantic import SecretStr

from exporter.api.client import PartnerApi
from exporter.api.errors import (
    AuthError,
    ClientError,
    RateLimitError,
    ResponseError,
    ServerError,
    TransportError,
)
from exporter.clock import FakeClock

BASE = "https://hub.example/api/v2"


def jwt(exp: float) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS256'})}.{enc({'exp': exp})}.sig"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def api_with_key(http, clock, observed=None):
    return PartnerApi(http, base_url=BASE, partner_id="pa", clock=clock,
                      api_key=SecretStr("the-key"),
                      observer=(lambda *a: observed.append(a)) if observed is not None else None)


@respx.mock
async def test_api_key_is_sent_as_x_api_key(http, clock):
    """Every request carries X-API-Key and the result is parsed into domain types."""
    route = respx.get(f"{BASE}/partners/pa/channels").respond(json={
        "total": 1, "partner_channels": [{"id": "ch", "client_id": "cl",
                                          "waba_account": {"id": "wa"}}]})
    page = await api_with_key(http, clock).channels_page(0)
    assert route.calls.last.request.headers["X-API-Key"] == "the-key"
    assert [c.id for c in page.items] == ["ch"]


@respx.mock
async def test_bearer_token_is_renewed_before_it_expires(http, clock):
    """A token is fetched once, reused, and renewed before its exp passes."""
    token_route = respx.post(f"{BASE}/token").mock(side_effect=lambda req: httpx.Response(
        200, json={"access_token": jwt(clock.now() + 3600)}))
    balance = respx.get(f"{BASE}/partners/pa/balance").respond(
        json=[{"total": 1, "currency": "eur"}])
    api = PartnerApi(http, base_url=BASE, partner_id="pa", clock=clock, username="u",
                     password=SecretStr("p"))
    await api.partner_balance()
    await api.partner_balance()
    assert token_route.call_count == 1
    assert balance.calls.last.request.headers["Authorization"].startswith("Bearer ")
    clock.set(clock.now() + 3400)  # inside the renewal margin
    await api.partner_balance()
    assert token_route.call_count == 2


@respx.mock
async def test_a_401_drops_the_token_so_the_next_call_renews(http, clock):
    """On 401 the client raises AuthError and renews the token on the next call, no retry."""
    token_route = respx.post(f"{BASE}/token").respond(json={"access_token": "opaque",
                                                             "expires_in": 86400})
    respx.get(f"{BASE}/partners/pa/balance").mock(side_effect=[
        httpx.Response(401, json={"meta": {"developer_message": "expired"}}),
        httpx.Response(200, json=[{"total": 1, "currency": "eur"}]),
    ])
    api = PartnerApi(http, base_url=BASE, partner_id="pa", clock=clock, username="u",
                     password=SecretStr("p"))
    with pytest.raises(AuthError):
        await api.partner_balance()
    await api.partner_balance()
    assert token_route.call_count == 2


@respx.mock
@pytest.mark.parametrize(("headers", "expected"), [({"Retry-After": "42"}, 42.0), ({}, None),
                                                  ({"Retry-After": "soon"}, None)])
async def test_429_carries_retry_after_when_given(http, clock, headers, expected):
    """A 429 becomes RateLimitError with the Retry-After seconds, or None."""
    respx.get(f"{BASE}/partners/pa/balance").respond(429, headers=headers, json={
        "meta": {"success": False, "http_code": 429, "developer_message": "slow down"}})
    with pytest.raises(RateLimitError) as info:
        await api_with_key(http, clock).partner_balance()
    assert info.value.retry_after == expected


@respx.mock
@pytest.mark.parametrize(("response", "error"), [
    (httpx.Response(500, text="boom"), ServerError),
    (httpx.Response(503, json={"meta": {}}), ServerError),
    (httpx.Response(404, json={"meta": {"developer_message": "Not found"}}), ClientError),
    (httpx.Response(200, text="{truncated"), ResponseError),
    (httpx.Response(200, json={"balance": "lots", "currency": "usd"}), ResponseError),
    (httpx.Response(200, json=["not", "an", "object"]), ResponseError),
])
async def test_faults_become_typed_errors(http, clock, response, error):
    """Each kind of fault raises its own ApiError subclass, never a raw exception."""
    respx.get(f"{BASE}/partners/pa/clients/cl/channels/ch/info/balance").mock(
        return_value=response)
    with pytest.raises(error):
        await api_with_key(http, clock).channel_balance("cl", "ch")


@respx.mock
async def test_transport_faults_are_counted_and_raised(http, clock):
    """A connection reset is a TransportError and is observed as such."""
    respx.get(f"{BASE}/partners/pa/balance").mock(side_effect=httpx.ConnectError("reset"))
    observed: list[tuple[str, str, float]] = []
    with pytest.raises(TransportError):
        await api_with_key(http, clock, observed).partner_balance()
    assert observed[0][:2] == ("partner_balance", "transport")


@respx.mock
async def test_usage_request_asks_for_the_range_and_granularity(http, clock):
    """Usage is requested with unix-second bounds and the configured granularity."""
    route = respx.get(f"{BASE}/partners/pa/clients/cl/channels/ch/info/usage").respond(
        json={"currency": "USD", "pricing_analytics": {"data": []}})
    report = await api_with_key(http, clock).channel_usage("cl", "ch", 100, 200)
    params = route.calls.last.request.url.params
    assert (params["start_date"], params["end_date"], params["granularity"]) == (
        "100", "200", "daily")
    assert report.messages == []


@respx.mock
async def test_secrets_never_reach_error_messages(http, clock):
    """Error text names the endpoint and the API's message, never the key."""
    respx.get(f"{BASE}/partners/pa/balance").respond(403, json={"message": "forbidden"})
    with pytest.raises(AuthError) as info:
        await api_with_key(http, clock).partner_balance()
    assert "the-key" not in str(info.value)
    assert "forbidden" in str(info.value)
