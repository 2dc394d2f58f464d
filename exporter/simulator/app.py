"""The simulated Partner API as a Starlette app, with real sliding-window limits and 429s.

Get Channel Usage answers in Meta's documented analytics shape (360dialog documents no body and
points to Meta; shared reference section 10, fixtures in tests/fixtures/api/): upper-case enums,
`tier` on billable points, no currency, calls with `count`, `cost` and `average_duration`, and a
400 for a granularity outside Meta's enum. `UsageShape` switches to the older working shape or to
variants a test needs. Other shapes follow the reference's "Working shapes". Time comes from an
injected callable so tests drive it with a FakeClock. `/_sim/*` routes expose the truth and the
request log for tests.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exporter.simulator.fleet import Fleet, SimChannel, SimClient
from exporter.simulator.traffic import (
    LEGACY_GRANULARITIES,
    META_GRANULARITIES,
    CallPoint,
    PricingPoint,
    month_to_date_totals,
    spent,
    tier,
    usage_points,
)

Window = tuple[int, float]  # (count, window seconds)

STARTING_CREDIT = Decimal("500.00")


@dataclass(frozen=True, slots=True)
class SimLimits:
    usage_channel: Window = (10, 3600)
    usage_waba: Window = (200, 3600)
    client_balance: Window = (5, 30)
    channel_balance_channel: Window = (10, 3600)
    channel_balance_waba: Window = (200, 3600)
    channel_balance_shares_usage: bool = True
    partner_balance: Window = (10, 60)
    discovery: Window = (60, 60)


@dataclass(frozen=True, slots=True)
class UsageShape:
    """How Get Channel Usage answers. The default is Meta's documented shape."""

    # The turn-1 working shape: top-level currency and granularity, "+" phone numbers, call
    # points with a total `duration`, lower-case granularity spellings only.
    legacy: bool = False
    # call_analytics.data_points directly (the reference's section 10) rather than under data[]
    # (Meta's calling-pricing sample).
    calls_flat: bool = False
    # Meta gives `direction` only when asked for that dimension; the default proxy asks.
    call_direction: bool = True
    # False: a business on a solution partner's credit line, for which Meta returns no COST.
    cost: bool = True
    # False: points without the COUNTRY dimension (whether 360dialog passes it is not known).
    country: bool = True

    @property
    def granularities(self) -> frozenset[str]:
        return LEGACY_GRANULARITIES if self.legacy else META_GRANULARITIES


@dataclass(frozen=True, slots=True)
class SimRequest:
    time: float
    method: str
    path: str
    status: int
    scopes: tuple[str, ...]
    query: str = ""


@dataclass
class _Windows:
    """Accepted call times per scope, in integer ms; a call is allowed iff fewer than `count`
    accepted calls lie in (t - window, t]."""

    calls: dict[str, list[int]] = field(default_factory=dict)

    def wait_ms(self, scope: str, limit: Window, t_ms: int) -> int:
        count, window = limit
        times = self.calls.get(scope, [])
        inside = len(times) - bisect.bisect_right(times, t_ms - round(window * 1000))
        if inside < count:
            return 0
        oldest_blocking = times[len(times) - count]
        return oldest_blocking + round(window * 1000) - t_ms

    def add(self, scope: str, t_ms: int) -> None:
        bisect.insort(self.calls.setdefault(scope, []), t_ms)


def _meta_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"meta": {"success": False, "http_code": status,
                                  "developer_message": message}}, status, headers=headers)


def _meta_usage(shape: UsageShape, ch: SimChannel, pricing: list[PricingPoint],
                calls: list[CallPoint]) -> dict[str, Any]:
    """Meta's fields on the WABA node: no currency (costs are in the WABA's), the PHONE and
    COUNTRY dimensions on each point, digits without "+" as Meta normalises numbers."""
    phone = ch.phone_number.lstrip("+")
    points: list[dict[str, Any]] = []
    for p in pricing:
        point: dict[str, Any] = {
            "start": p.start, "end": p.end, "phone_number": phone,
            "pricing_category": p.category, "pricing_type": p.pricing_type, "volume": p.volume}
        if shape.country:
            point["country"] = ch.country
        if tiered := tier(p.category, p.pricing_type, ch.country, p.start):
            point["tier"] = tiered
        if shape.cost:
            point["cost"] = float(p.cost)
        points.append(point)
    call_points = [_meta_call(shape, c.start, c.end, [c]) for c in calls] if (
        shape.call_direction) else [
        _meta_call(shape, start, end, [c for c in calls if (c.start, c.end) == (start, end)])
        for start, end in sorted({(c.start, c.end) for c in calls})]
    call_section: dict[str, Any] = (
        {"data_points": call_points} if shape.calls_flat
        else {"data": [{"data_points": call_points}]})
    return {"pricing_analytics": {"data": [{"data_points": points}]},
            "call_analytics": call_section, "id": ch.waba_external_id}


def _meta_call(shape: UsageShape, start: int, end: int, calls: list[CallPoint]) -> dict[str, Any]:
    """One call point over `calls` (one direction, or all when direction was not asked for).
    The average is the exact quotient, so count x average_duration gives back the total."""
    count = sum(c.count for c in calls)
    seconds = sum(c.duration for c in calls)
    point: dict[str, Any] = {"start": start, "end": end, "count": count,
                             "average_duration": seconds / count if count else 0}
    if shape.call_direction:
        point["direction"] = calls[0].direction
    if shape.cost:
        point["cost"] = float(sum((c.cost for c in calls), Decimal(0)))
    return point


def _legacy_usage(client: SimClient, ch: SimChannel, granularity: str,
                  pricing: list[PricingPoint], calls: list[CallPoint]) -> dict[str, Any]:
    """The turn-1 working shape, kept for tests that need it."""
    return {
        "currency": client.currency, "granularity": granularity,
        "pricing_analytics": {"data": [{"data_points": [
            {"start": p.start, "end": p.end, "phone_number": ch.phone_number,
             "country": ch.country, "pricing_category": p.category,
             "pricing_type": p.pricing_type, "volume": p.volume, "cost": float(p.cost)}
            for p in pricing]}]},
        "call_analytics": {"data": [{"data_points": [
            {"start": c.start, "end": c.end, "direction": c.direction,
             "country": ch.country, "count": c.count, "duration": c.duration,
             "cost": float(c.cost)}
            for c in calls]}]},
    }


def month_start(t: float) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


class SimulatedApi:
    def __init__(
        self,
        fleet: Fleet,
        clock: Callable[[], float],
        *,
        api_key: str = "sim-key",
        username: str = "demo@example.com",
        password: str = "demo-password",  # noqa: S107 - the simulator's own demo login
        limits: SimLimits | None = None,
        token_ttl: float = 3600.0,
        send_retry_after: bool = True,
        page_size_max: int = 100,
        usage_shape: UsageShape | None = None,
        history_from: float | None = None,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.api_key = api_key
        self.username = username
        self.password = password
        self.limits = limits or SimLimits()
        self.token_ttl = token_ttl
        self.send_retry_after = send_retry_after
        self.page_size_max = page_size_max
        self.usage_shape = usage_shape or UsageShape()
        # Usage before this instant is refused with a 400, as an API that keeps limited history.
        self.history_from = history_from
        self.requests: list[SimRequest] = []
        self.rate_limited = 0
        self.refusals: list[tuple[int, list[str]]] = []  # (t_ms, the full scopes) per 429
        self._windows = _Windows()
        self._signing_key = secrets.token_bytes(32)
        self.app = Starlette(routes=[
            Route("/api/v2/token", self._token, methods=["POST"]),
            Route("/api/v2/partners/{pid}/clients", self._clients),
            Route("/api/v2/partners/{pid}/channels", self._channels),
            Route("/api/v2/partners/{pid}/balance", self._partner_balance),
            Route("/api/v2/partners/{pid}/clients/{cid}/info/balance", self._client_balance),
            Route("/api/v2/partners/{pid}/clients/{cid}/channels/{chid}/info/usage", self._usage),
            Route("/api/v2/partners/{pid}/clients/{cid}/channels/{chid}/info/balance",
                  self._channel_balance),
            Route("/_sim/stats", self._stats),
            Route("/_sim/truth", self._truth),
        ])

    # -- auth ------------------------------------------------------------------------------------

    def _make_token(self) -> str:
        def enc(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        header = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = enc(json.dumps({"sub": self.username,
                                  "exp": int(self.clock() + self.token_ttl)}).encode())
        sig = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{enc(sig)}"

    def _token_valid(self, token: str) -> bool:
        try:
            header, payload, sig = token.split(".")
            expected = hmac.new(self._signing_key, f"{header}.{payload}".encode(),
                                hashlib.sha256).digest()
            given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return hmac.compare_digest(expected, given) and float(claims["exp"]) > self.clock()
        except (ValueError, KeyError, TypeError):
            return False

    def _authorised(self, request: Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is not None:
            return hmac.compare_digest(key.encode(), self.api_key.encode())
        auth = request.headers.get("authorization", "")
        return auth.lower().startswith("bearer ") and self._token_valid(auth[7:].strip())

    async def _token(self, request: Request) -> Response:
        try:
            body = await request.json()
            ok = (isinstance(body, dict)
                  and hmac.compare_digest(str(body.get("username", "")).encode(),
                                          self.username.encode())
                  and hmac.compare_digest(str(body.get("password", "")).encode(),
                                          self.password.encode()))
        except ValueError:
            ok = False
        if not ok:
            return self._log(request, _meta_error(401, "Invalid credentials"), ())
        return self._log(request, JSONResponse({"access_token": self._make_token(),
                                                "token_type": "bearer",
                                                "expires_in": self.token_ttl}), ())

    # -- plumbing --------------------------------------------------------------------------------

    def _log(self, request: Request, response: Response, scopes: tuple[str, ...]) -> Response:
        self.requests.append(SimRequest(self.clock(), request.method, request.url.path,
                                        response.status_code, scopes, request.url.query))
        return response

    def _guard(self, request: Request, charges: list[tuple[str, Window]]) -> Response | None:
        """Authenticate, then admit the call against every window it is charged to."""
        if request.path_params.get("pid", self.fleet.partner_id) != self.fleet.partner_id:
            return _meta_error(404, "Not found: partner")
        if not self._authorised(request):
            return _meta_error(401, "Unauthorized")
        t_ms = round(self.clock() * 1000)
        waits = {scope: self._windows.wait_ms(scope, limit, t_ms) for scope, limit in charges}
        wait = max(waits.values(), default=0)
        if wait > 0:
            self.rate_limited += 1
            self.refusals.append((t_ms, sorted(scope for scope, w in waits.items() if w > 0)))
            headers = {"Retry-After": str(-(-wait // 1000))} if self.send_retry_after else None
            return _meta_error(429, "Rate limit exceeded", headers)
        for scope, _ in charges:
            self._windows.add(scope, t_ms)
        return None

    def _respond(self, request: Request, charges: list[tuple[str, Window]],
                 build: Callable[[], Response]) -> Response:
        scopes = tuple(scope for scope, _ in charges)
        refused = self._guard(request, charges)
        return self._log(request, refused if refused is not None else build(), scopes)

    def _page(self, request: Request) -> tuple[int, int] | None:
        try:
            limit = int(request.query_params.get("limit", "100"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return None
        if limit < 1 or offset < 0:
            return None
        return min(limit, self.page_size_max), offset

    def _channel_of(self, request: Request) -> tuple[SimClient, SimChannel] | None:
        client = self.fleet.client(request.path_params["cid"])
        ch = self.fleet.channel(request.path_params["chid"])
        if client is None or ch is None or ch.client_id != client.id:
            return None
        return client, ch

    # -- discovery -------------------------------------------------------------------------------

    async def _clients(self, request: Request) -> Response:
        def build() -> Response:
            page = self._page(request)
            if page is None:
                return _meta_error(400, "Wrong payload: limit and offset must be integers")
            limit, offset = page
            items = [{"id": c.id, "name": c.name, "status": c.status,
                      "created_at": "2025-01-01T00:00:00Z", "max_channels": 100}
                     for c in self.fleet.clients]
            return JSONResponse({"count": len(items[offset:offset + limit]), "total": len(items),
                                 "limit": limit, "offset": offset, "filters": {}, "sort": ["id"],
                                 "clients": items[offset:offset + limit]})
        return self._respond(request, [("discovery", self.limits.discovery)], build)

    async def _channels(self, request: Request) -> Response:
        def build() -> Response:
            page = self._page(request)
            if page is None:
                return _meta_error(400, "Wrong payload: limit and offset must be integers")
            limit, offset = page
            chosen = self.fleet.channels()[offset:offset + limit]
            items = [{
                "id": ch.id, "client_id": ch.client_id, "status": ch.status,
                "waba_account": {"id": ch.waba_id, "external_id": ch.waba_external_id,
                                 "name": self.fleet.waba_of(ch.id).name},
                "setup_info": {"phone_number": ch.phone_number, "phone_name": ch.name},
            } for ch in chosen]
            return JSONResponse({"count": len(items), "total": len(self.fleet.channels()),
                                 "limit": limit, "offset": offset, "filters": {},
                                 "sort": ["created_at"], "partner_channels": items})
        return self._respond(request, [("discovery", self.limits.discovery)], build)

    # -- usage and balances ----------------------------------------------------------------------

    def _usage_charges(self, ch: SimChannel | None) -> list[tuple[str, Window]]:
        if ch is None:
            return []
        return [(f"usage_channel:{ch.id}", self.limits.usage_channel),
                (f"usage_waba:{ch.waba_id}", self.limits.usage_waba)]

    async def _usage(self, request: Request) -> Response:
        found = self._channel_of(request)
        shape = self.usage_shape

        def build() -> Response:
            if found is None:
                return _meta_error(404, "Not found")
            client, ch = found
            q = request.query_params
            try:
                start, end = int(q["start_date"]), int(q["end_date"])
            except (KeyError, ValueError):
                return _meta_error(400, "Wrong payload: start_date and end_date are unix seconds")
            granularity = q.get("granularity", "daily" if shape.legacy else "DAILY")
            if granularity not in shape.granularities:
                allowed = ", ".join(sorted(shape.granularities))
                return JSONResponse({"meta": {
                    "success": False, "http_code": 400,
                    "developer_message": f"Wrong payload: invalid value for granularity: "
                                         f"{granularity!r}",
                    "details": {"granularity": [f"Must be one of: {allowed}."]}}}, 400)
            if start > end or start < 0:
                return _meta_error(400, "Wrong payload: bad range")
            if self.history_from is not None and start < self.history_from:
                return _meta_error(400, "Wrong payload: start_date is before the oldest data "
                                        "kept")
            pricing, calls = usage_points(self.fleet.seed, ch, start, end, self.clock(),
                                          granularity)
            if shape.legacy:
                return JSONResponse(_legacy_usage(client, ch, granularity, pricing, calls))
            return JSONResponse(_meta_usage(shape, ch, pricing, calls))
        return self._respond(request, self._usage_charges(found[1] if found else None), build)

    async def _channel_balance(self, request: Request) -> Response:
        found = self._channel_of(request)
        ch = found[1] if found else None
        if self.limits.channel_balance_shares_usage:
            charges = self._usage_charges(ch)
        else:
            charges = [] if ch is None else [
                (f"channel_balance_channel:{ch.id}", self.limits.channel_balance_channel),
                (f"channel_balance_waba:{ch.waba_id}", self.limits.channel_balance_waba)]

        def build() -> Response:
            if found is None:
                return _meta_error(404, "Not found")
            client, ch = found
            now = self.clock()
            left = STARTING_CREDIT - spent(self.fleet.seed, ch, month_start(now), now)
            return JSONResponse({"balance": float(left), "currency": client.currency.lower()})
        return self._respond(request, charges, build)

    async def _client_balance(self, request: Request) -> Response:
        client = self.fleet.client(request.path_params["cid"])

        def build() -> Response:
            if client is None:
                return _meta_error(404, "Not found")
            now = self.clock()
            channels = [ch for w in client.wabas for ch in w.channels]
            used = sum((spent(self.fleet.seed, ch, month_start(now), now) for ch in channels),
                       Decimal(0))
            credit = STARTING_CREDIT * max(1, len(channels))
            return JSONResponse({"balance": float(credit - used), "currency": client.currency,
                                 "threshold": 50})
        return self._respond(request, [("client_balance", self.limits.client_balance)], build)

    async def _partner_balance(self, request: Request) -> Response:
        def build() -> Response:
            return JSONResponse([{"total": 1000.45, "currency": "eur"},
                                 {"total": 250.0, "currency": "usd"}])
        return self._respond(request, [("partner_balance", self.limits.partner_balance)], build)

    # -- introspection for tests -----------------------------------------------------------------

    async def _stats(self, request: Request) -> Response:
        del request
        by_scope: dict[str, int] = {}
        for r in self.requests:
            for scope in r.scopes:
                kind = scope.split(":")[0]
                by_scope[kind] = by_scope.get(kind, 0) + 1
        refused = [{"at_ms": t_ms, "full": full} for t_ms, full in self.refusals[:20]]
        return JSONResponse({"requests": len(self.requests), "rate_limited": self.rate_limited,
                             "by_scope": by_scope, "refused": refused,
                             "channels": [ch.id for ch in self.fleet.channels()]})

    async def _truth(self, request: Request) -> Response:
        ch = self.fleet.channel(request.query_params.get("channel_id", ""))
        if ch is None:
            return JSONResponse({"error": "unknown channel_id"}, 404)
        try:
            at = float(request.query_params.get("at", self.clock()))
            month = int(request.query_params.get("month_start", month_start(at)))
        except ValueError:
            return JSONResponse({"error": "at and month_start are unix seconds"}, 400)
        messages, calls = month_to_date_totals(self.fleet.seed, ch, month, at)
        client = self.fleet.client(ch.client_id)
        body: dict[str, Any] = {
            "channel_id": ch.id, "at": at, "month_start": month,
            "currency": client.currency if client else "",
            "messages": [{"category": c, "pricing_type": p, "volume": v, "cost": float(cost)}
                         for (c, p), (v, cost) in sorted(messages.items())],
            "calls": [{"direction": d, "count": n, "duration": s, "cost": float(cost)}
                      for d, (n, s, cost) in sorted(calls.items())],
        }
        return JSONResponse(body)
