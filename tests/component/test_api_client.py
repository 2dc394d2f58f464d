"""The Partner API client against respx: auth, errors, shapes."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr
from structlog.testing import capture_logs

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
from exporter.logging import configure

BASE = "https://hub.example/api/v2"
USAGE_URL = f"{BASE}/partners/pa/clients/cl/channels/ch/info/usage"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "api"


def fixture(name: str) -> object:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def jwt(exp: float) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS256'})}.{enc({'exp': exp})}.sig"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def info_logs():
    """Log events down to info, captured (the suite otherwise keeps warnings and up)."""
    configure("console", "info")
    with capture_logs() as logs:
        yield logs
    configure("console", "warning")


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def api_with_key(http, clock, observed=None, **kwargs):
    return PartnerApi(http, base_url=BASE, partner_id="pa", clock=clock,
                      api_key=SecretStr("the-key"),
                      observer=(lambda *a: observed.append(a)) if observed is not None else None,
                      **kwargs)


def by_granularity(accepted: str, answer: object = None):
    """A usage endpoint that answers 200 to one spelling and the documented 400 to others."""
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.params["granularity"] == accepted:
            return httpx.Response(200, json=answer or fixture("usage-meta-daily"))
        return httpx.Response(400, json=fixture("error-400-wrong-granularity"))
    return respond


def sent_spellings(route) -> list[str]:
    return [call.request.url.params["granularity"] for call in route.calls]


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
        "100", "200", "DAILY")
    assert report.messages == []
    assert report.requests == 1


@respx.mock
async def test_secrets_never_reach_error_messages(http, clock):
    """Error text names the endpoint and the API's message, never the key."""
    respx.get(f"{BASE}/partners/pa/balance").respond(403, json={"message": "forbidden"})
    with pytest.raises(AuthError) as info:
        await api_with_key(http, clock).partner_balance()
    assert "the-key" not in str(info.value)
    assert "forbidden" in str(info.value)


@respx.mock
async def test_a_refused_spelling_is_tried_once_in_the_other_case_and_remembered(http, clock):
    """A 400 to 'daily' makes one more request with 'DAILY'; that spelling is kept for later
    fetches, the report says two requests were made, and the switch is logged with both."""
    route = respx.get(USAGE_URL).mock(side_effect=by_granularity("DAILY"))
    api = api_with_key(http, clock, granularity="daily")
    with capture_logs() as logs:
        first = await api.channel_usage("cl", "ch", 1, 2)
    assert sent_spellings(route) == ["daily", "DAILY"]
    assert first.requests == 2
    assert len(first.messages) == 10  # the fixture's points
    assert {"event": "usage_granularity_fallback", "configured": "daily", "using": "DAILY",
            "log_level": "warning"} in logs
    second = await api.channel_usage("cl", "ch", 1, 2)
    assert sent_spellings(route) == ["daily", "DAILY", "DAILY"]
    assert second.requests == 1
    assert api.granularity == "DAILY"


@respx.mock
async def test_meta_spelling_falls_back_to_lower_case(http, clock):
    """With the default DAILY, an API that takes only 'daily' is answered on the second try."""
    route = respx.get(USAGE_URL).mock(side_effect=by_granularity("daily"))
    report = await api_with_key(http, clock).channel_usage("cl", "ch", 1, 2)
    assert sent_spellings(route) == ["DAILY", "daily"]
    assert report.requests == 2


@respx.mock
async def test_the_second_request_waits_for_the_callers_charge(http, clock):
    """may_retry is asked once, before the second request leaves; when it refuses, no second
    request is made, the 400 is raised with requests=1, and the next fetch starts with the other
    spelling."""
    route = respx.get(USAGE_URL).mock(side_effect=by_granularity("daily"))
    asked: list[int] = []

    def refuse() -> bool:
        asked.append(route.call_count)
        return False

    api = api_with_key(http, clock)
    with pytest.raises(ClientError) as info:
        await api.channel_usage("cl", "ch", 1, 2, may_retry=refuse)
    assert (asked, info.value.requests, sent_spellings(route)) == ([1], 1, ["DAILY"])
    report = await api.channel_usage("cl", "ch", 1, 2, may_retry=refuse)
    assert (asked, report.requests, sent_spellings(route)) == ([1], 1, ["DAILY", "daily"])

    def allow() -> bool:
        asked.append(route.call_count)
        return True

    other = api_with_key(http, clock)
    assert (await other.channel_usage("cl", "ch", 1, 2, may_retry=allow)).requests == 2
    assert asked == [1, 3]  # asked after the third request's 400, before the fourth


@respx.mock
async def test_when_both_spellings_are_refused_the_fallback_stops(http, clock):
    """Two 400s: the error says two requests, a warning names both spellings, and later fetches
    send the configured spelling once each, with no more fallbacks."""
    route = respx.get(USAGE_URL).respond(400, json=fixture("error-400-wrong-granularity"))
    api = api_with_key(http, clock)
    with capture_logs() as logs, pytest.raises(ClientError) as info:
        await api.channel_usage("cl", "ch", 1, 2)
    assert info.value.requests == 2
    assert "Invalid value for granularity" in str(info.value)
    assert {"event": "usage_granularity_refused", "spellings": ["DAILY", "daily"],
            "using": "DAILY", "log_level": "warning"} in logs
    with pytest.raises(ClientError) as again:
        await api.channel_usage("cl", "ch", 1, 2)
    assert again.value.requests == 1
    assert sent_spellings(route) == ["DAILY", "daily", "DAILY"]


@respx.mock
@pytest.mark.parametrize("first", [httpx.Response(500, text="boom"),
                                   httpx.Response(404, json={"meta": {}})])
async def test_only_a_400_tries_the_other_spelling(http, clock, first):
    """A 5xx or 404 is raised after one request, not retried with another spelling."""
    route = respx.get(USAGE_URL).mock(return_value=first)
    with pytest.raises((ServerError, ClientError)) as info:
        await api_with_key(http, clock).channel_usage("cl", "ch", 1, 2)
    assert (route.call_count, info.value.requests) == (1, 1)


@respx.mock
async def test_a_spelling_that_worked_is_not_given_up_on_a_later_400(http, clock):
    """Once a spelling has been answered, a later 400 is an error of that call, not a reason
    to spend a request on the other spelling."""
    route = respx.get(USAGE_URL).mock(side_effect=[
        httpx.Response(200, json=fixture("usage-meta-daily")),
        httpx.Response(400, json=fixture("error-400-wrong-granularity"))])
    api = api_with_key(http, clock)
    await api.channel_usage("cl", "ch", 1, 2)
    with pytest.raises(ClientError):
        await api.channel_usage("cl", "ch", 1, 2)
    assert sent_spellings(route) == ["DAILY", "DAILY"]


@respx.mock
async def test_usage_currency_comes_from_the_body_the_caller_a_balance_or_the_default(
        http, clock, info_logs):
    """Meta's body names no currency: the caller's, then the channel's last balance, then the
    client's, then the configured default is used, and each choice is logged once."""
    respx.get(USAGE_URL).respond(json=fixture("usage-meta-daily"))
    channel_balance = respx.get(f"{BASE}/partners/pa/clients/cl/channels/ch/info/balance")
    channel_balance.respond(json=fixture("balance-channel-missing-balance"))
    respx.get(f"{BASE}/partners/pa/clients/cl/info/balance").respond(
        json=fixture("balance-client"))
    api = api_with_key(http, clock, default_currency="gbp")
    logs = info_logs
    got = [(r.currency, r.currency_source)
           for r in [await api.channel_usage("cl", "ch", 1, 2),
                     await api.channel_usage("cl", "ch", 1, 2, currency="chf")]]
    await api.client_balance("cl")
    got.append(((r := await api.channel_usage("cl", "ch", 1, 2)).currency, r.currency_source))
    assert await api.channel_balance("cl", "ch") is None  # a currency, no amount
    got.append(((r := await api.channel_usage("cl", "ch", 1, 2)).currency, r.currency_source))
    await api.channel_usage("cl", "ch", 1, 2)
    assert got == [("GBP", "default"), ("CHF", "caller"), ("EUR", "client_balance"),
                   ("USD", "channel_balance")]
    chosen = [(e["currency"], e["source"]) for e in logs if e["event"] == "usage_currency_chosen"]
    assert chosen == got
    assert any(e["event"] == "balance_without_amount" for e in logs)
    respx.get(USAGE_URL).respond(json=fixture("usage-legacy-working-shape"))
    assert (await api.channel_usage("cl", "ch", 1, 2)).currency_source == "response"


@respx.mock
async def test_without_any_currency_the_report_says_unknown(http, clock):
    """No body currency, no balance read, no default: currency "" from source "unknown"."""
    respx.get(USAGE_URL).respond(json=fixture("usage-meta-daily"))
    report = await api_with_key(http, clock).channel_usage("cl", "ch", 1, 2)
    assert (report.currency, report.currency_source) == ("", "unknown")


@respx.mock
async def test_balances_without_amounts_do_not_fail_the_poll(http, clock, info_logs):
    """A channel or client balance without an amount is None; partner records without a total
    are left out and logged, the others returned."""
    respx.get(f"{BASE}/partners/pa/clients/cl/channels/ch/info/balance").respond(
        json=fixture("balance-channel-missing-balance"))
    respx.get(f"{BASE}/partners/pa/clients/cl/info/balance").respond(
        json=fixture("balance-client-missing-balance"))
    respx.get(f"{BASE}/partners/pa/balance").respond(json=fixture("balance-partner-missing-total"))
    api = api_with_key(http, clock)
    assert await api.channel_balance("cl", "ch") is None
    assert await api.client_balance("cl") is None
    partner = await api.partner_balance()
    logs = info_logs
    assert [(b.amount, b.currency) for b in partner] == [(Decimal("12.5"), "")]
    skipped = [e for e in logs if e["event"] == "balance_without_amount"]
    assert [e["endpoint"] for e in skipped] == ["channel_balance", "client_balance",
                                                "partner_balance"]
    assert skipped[-1]["records"] == 2


async def test_httpcore_finds_its_async_library_without_a_failed_import(monkeypatch):
    """httpcore asks which async library runs for every lock and event of a request; without
    sniffio installed each answer was a failed import, searched along sys.path every time."""
    import builtins  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from httpcore._synchronization import current_async_library  # noqa: PLC0415

    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules
    failed: list[str] = []
    real_import = builtins.__import__

    def watching(name, *args, **kwargs):
        try:
            return real_import(name, *args, **kwargs)
        except ImportError:
            failed.append(name)
            raise

    monkeypatch.setattr(builtins, "__import__", watching)
    for _ in range(3):
        current_async_library()
    assert failed == []
