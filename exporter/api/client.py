"""The 360dialog Partner API client: one method per endpoint, one HTTP request per call.

It never retries on its own: every request costs budget, so retrying is the poller's decision,
made through the ledger. The one exception is the usage granularity's spelling, which 360dialog
does not document: a 400 to one spelling is tried once with the other, and only after the
caller's `may_retry` has charged that request (`channel_usage`). It renews a bearer token before
it expires and drops it on a 401.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import SecretStr

from exporter.api import models
from exporter.api.errors import (
    ApiError,
    AuthError,
    ClientError,
    RateLimitError,
    ResponseError,
    ServerError,
    TransportError,
)
from exporter.clock import Clock
from exporter.domain import Balance, Channel, Client
from exporter.retry import retry_after_seconds

log = structlog.get_logger("exporter.api")
_R = TypeVar("_R")

# endpoint, status ("200", "429", or an error kind when there was no answer), seconds
RequestObserver = Callable[[str, str, float], None]
# Asked before a further request of the same fetch; True once that request is charged to the
# budgets, False when there is no room for it (the fetch then makes no further request).
MayRetry = Callable[[], bool]

PAGE_SIZE = 100
TOKEN_RENEW_BEFORE_SECONDS = 300.0
DEFAULT_TOKEN_TTL_SECONDS = 3600.0


class PartnerApi:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        partner_id: str,
        clock: Clock,
        api_key: SecretStr | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        granularity: str = "DAILY",
        default_currency: str = "",
        observer: RequestObserver | None = None,
    ) -> None:
        if api_key is None and (username is None or password is None):
            raise ValueError("PartnerApi needs an API key or a username and password")
        self._http = http
        self._base = base_url.rstrip("/")
        self._partner = partner_id
        self._clock = clock
        self._api_key = api_key
        self._username = username
        self._password = password
        self._granularity = granularity  # the spelling the next usage request sends
        self._configured_granularity = granularity
        self._granularity_settled = False  # a spelling was answered (or both were refused)
        self._refused_granularities: set[str] = set()
        self._default_currency = models.optional_currency(default_currency or None)
        # Currencies of the balances this client has read: Meta's usage carries none.
        self._channel_currency: dict[str, str] = {}
        self._client_currency: dict[str, str] = {}
        self._currency_choices: set[tuple[str, str]] = set()  # (currency, source) logged
        self._observer = observer
        self._token: str | None = None
        self._token_expires = 0.0

    # -- endpoints -------------------------------------------------------------------------------

    async def clients_page(self, offset: int, limit: int = PAGE_SIZE) -> models.Page[Client]:
        body = await self._get(
            "clients", f"/partners/{self._partner}/clients", {"limit": limit, "offset": offset}
        )
        return self._parse("clients", models.parse_clients, body)

    async def channels_page(self, offset: int, limit: int = PAGE_SIZE) -> models.Page[Channel]:
        body = await self._get(
            "channels",
            f"/partners/{self._partner}/channels",
            {"limit": limit, "offset": offset, "sort": "created_at"},
        )
        return self._parse("channels", models.parse_channels, body)

    @property
    def granularity(self) -> str:
        """The granularity spelling usage requests send now."""
        return self._granularity

    async def channel_usage(
        self, client_id: str, channel_id: str, start: int, end: int, *,
        may_retry: MayRetry | None = None, currency: str = "",
    ) -> models.UsageReport:
        """Month-to-date points of one channel. `report.requests` (or, on failure, the error's
        `requests`) says how many HTTP requests the fetch made: two when the API refused the
        granularity spelling and the other one was tried. Before that second request
        `may_retry()` is asked, so the caller charges it to its budgets first; without a
        `may_retry` the second request is made uncharged. `currency` is the channel's billing
        currency as the caller knows it (a stored balance), used when the body names none."""
        path = f"/partners/{self._partner}/clients/{client_id}/channels/{channel_id}/info/usage"
        spelling = self._granularity
        requests = 0
        while True:
            requests += 1
            try:
                body = await self._get("channel_usage", path, {
                    "start_date": start, "end_date": end, "granularity": spelling})
            except ApiError as exc:
                exc.requests = requests
                other = self._granularity_fallback(spelling, exc)
                if other is None:
                    raise
                if may_retry is not None and not may_retry():
                    raise  # no room now: the next fetch starts with the other spelling
                spelling = other
                continue
            break
        self._granularity_works(spelling)
        try:
            report = self._parse("channel_usage", models.parse_usage, body)
        except ApiError as exc:
            exc.requests = requests
            raise
        chosen, source = self._choose_currency(report.currency, client_id, channel_id, currency)
        if (chosen, source) not in self._currency_choices:
            # Once per choice, not per channel: a fleet would log thousands of lines at start.
            self._currency_choices.add((chosen, source))
            log.info("usage_currency_chosen", currency=chosen, source=source,
                     first_channel_id=channel_id)
        return dataclasses.replace(report, currency=chosen, currency_source=source,
                                   requests=requests)

    def _granularity_fallback(self, spelling: str, exc: ApiError) -> str | None:
        """The spelling to try after `exc`, if it is a 400 while no spelling has worked yet.
        360dialog lists no granularity values for usage; Meta's are HALF_HOUR, DAILY, MONTHLY,
        the older working shape wrote them in lower case."""
        if exc.status != 400 or self._granularity_settled:
            return None
        self._refused_granularities.add(spelling)
        other = spelling.lower() if spelling != spelling.lower() else spelling.upper()
        if other in self._refused_granularities:
            self._granularity_settled = True
            self._granularity = self._configured_granularity
            log.warning("usage_granularity_refused", spellings=sorted(
                self._refused_granularities), using=self._granularity)
            return None
        self._granularity = other
        return other

    def _granularity_works(self, spelling: str) -> None:
        if self._granularity_settled and spelling == self._granularity:
            return
        if spelling != self._configured_granularity:
            log.warning("usage_granularity_fallback", configured=self._configured_granularity,
                        using=spelling)
        self._granularity = spelling
        self._granularity_settled = True

    def _choose_currency(self, given: str, client_id: str, channel_id: str,
                         caller: str) -> tuple[str, str]:
        """Meta's usage has no currency field: costs are in the WABA's billing currency. Take the
        body's if it has one, else the caller's, else that of the channel's or client's balance
        as last read here, else the configured default; "" when none is known."""
        for value, source in ((given, "response"), (caller.upper(), "caller"),
                              (self._channel_currency.get(channel_id, ""), "channel_balance"),
                              (self._client_currency.get(client_id, ""), "client_balance"),
                              (self._default_currency, "default")):
            if value:
                return value, source
        return "", "unknown"

    async def channel_balance(self, client_id: str, channel_id: str) -> Balance | None:
        """The channel's balance, or None when the answer has no amount (logged)."""
        body = await self._get(
            "channel_balance",
            f"/partners/{self._partner}/clients/{client_id}/channels/{channel_id}/info/balance",
        )
        balance = self._parse("channel_balance", models.parse_balance, body)
        self._remember_currency(self._channel_currency, channel_id, body)
        if balance is None:
            log.info("balance_without_amount", endpoint="channel_balance", channel_id=channel_id)
        return balance

    async def client_balance(self, client_id: str) -> Balance | None:
        """The client's balance, or None when the answer has no amount (logged)."""
        body = await self._get(
            "client_balance",
            f"/partners/{self._partner}/clients/{client_id}/info/balance",
            # Usage here is deprecated; ask for the shortest range so the answer stays small.
            {"granularity": "month", "start_date": int(self._clock.now()) - 86400},
        )
        balance = self._parse("client_balance", models.parse_balance, body)
        self._remember_currency(self._client_currency, client_id, body)
        if balance is None:
            log.info("balance_without_amount", endpoint="client_balance", client_id=client_id)
        return balance

    @staticmethod
    def _remember_currency(known: dict[str, str], key: str, body: Any) -> None:
        # After a successful parse; a currency alone (no amount) still names the currency.
        if isinstance(body, Mapping):
            try:
                cur = models.optional_currency(body.get("currency"))
            except models.ShapeError:
                return
            if cur:
                known[key] = cur

    async def partner_balance(self) -> list[Balance]:
        """The partner's balances with an amount; records without one are left out (logged)."""
        body = await self._get("partner_balance", f"/partners/{self._partner}/balance")
        balances, skipped = self._parse("partner_balance", models.parse_partner_balance, body)
        if skipped:
            log.info("balance_without_amount", endpoint="partner_balance", records=skipped,
                     kept=len(balances))
        return balances

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _parse(endpoint: str, parser: Callable[[Any], _R], body: Any) -> _R:
        try:
            return parser(body)
        except (models.ShapeError, AttributeError, TypeError) as exc:
            raise ResponseError(endpoint, f"unexpected response shape: {exc}") from None

    async def _auth_headers(self) -> dict[str, str]:
        if self._api_key is not None:
            return {"X-API-Key": self._api_key.get_secret_value()}
        if self._token is None or self._clock.now() >= self._token_expires:
            await self._renew_token()
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token}"}

    async def _renew_token(self) -> None:
        if self._username is None or self._password is None:
            raise AuthError("token", "no username and password to request a token with")
        payload = {"username": self._username, "password": self._password.get_secret_value()}
        response = await self._send("token", "POST", "/token", json_body=payload, auth=False)
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ResponseError("token", "no access_token in the token response") from None
        ttl = _jwt_ttl(token, self._clock.now()) or float(
            body.get("expires_in") or DEFAULT_TOKEN_TTL_SECONDS
        )
        self._token = token
        # Renew early: a request must never leave with a token that expires on the way.
        self._token_expires = self._clock.now() + max(ttl - TOKEN_RENEW_BEFORE_SECONDS, ttl / 2)
        log.info("api_token_renewed", expires_in_seconds=round(ttl))

    async def _get(
        self, endpoint: str, path: str, params: Mapping[str, Any] | None = None
    ) -> Any:
        response = await self._send(endpoint, "GET", path, params=params)
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise ResponseError(endpoint, "response is not JSON") from None

    async def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        auth: bool = True,
    ) -> httpx.Response:
        headers = await self._auth_headers() if auth else {}
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, self._base + path, params=params, json=json_body, headers=headers
            )
        except httpx.HTTPError as exc:
            elapsed = time.perf_counter() - started
            self._observe(endpoint, "transport", elapsed)
            raise TransportError(endpoint, type(exc).__name__) from None
        elapsed = time.perf_counter() - started
        self._observe(endpoint, str(response.status_code), elapsed)
        status = response.status_code
        if status < 300:
            return response
        detail = _error_detail(response)
        if status == 429:
            raise RateLimitError(endpoint, f"rate limited: {detail}", _retry_after(response))
        if status in (401, 403):
            self._token = None
            raise AuthError(endpoint, f"HTTP {status}: {detail}", status)
        if status >= 500:
            raise ServerError(endpoint, f"HTTP {status}: {detail}", status)
        raise ClientError(endpoint, f"HTTP {status}: {detail}", status)

    def _observe(self, endpoint: str, status: str, seconds: float) -> None:
        log.debug("api_call", endpoint=endpoint, status=status, duration_seconds=round(seconds, 4))
        if self._observer is not None:
            self._observer(endpoint, status, seconds)


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


def _error_detail(response: httpx.Response) -> str:
    """A short, secret-free description of an error body."""
    try:
        body = response.json()
    except ValueError:
        return "non-JSON body"
    if isinstance(body, dict):
        meta = body.get("meta")
        for source in (meta if isinstance(meta, dict) else {}, body):
            for key in ("developer_message", "message", "detail"):
                if isinstance(source.get(key), str):
                    return str(source[key])[:200]
    return "no message"


def _jwt_ttl(token: str, now: float) -> float | None:
    """Seconds until the JWT's `exp`, if the token is a JWT that says."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - now
    except (IndexError, ValueError, KeyError, TypeError):
        return None


__all__ = ["ApiError", "MayRetry", "PartnerApi", "RequestObserver"]
