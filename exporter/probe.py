"""`whatsapp-usage-exporter probe`: what a partner runs first against the real API.

For one channel it makes one call of each kind (a channel listing page, usage, channel balance,
client balance, partner balance), each charged to the budgets in the state file's ledger before
it is made, like any poll, and prints what the exporter understood of each answer: the shape,
the granularity spelling that worked, whether cost and currency are present, fields it does not
read, and the series it would expose. It exits 1 if a body does not parse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter import __version__
from exporter.api import models
from exporter.api.client import PartnerApi
from exporter.api.errors import ApiError, ResponseError
from exporter.calendar import month_start
from exporter.clock import Clock, SystemClock, to_ms
from exporter.config import Settings
from exporter.domain import Channel
from exporter.polling.charging import scopes_for
from exporter.polling.ledger import Ledger, Scope
from exporter.polling.sharding import ShardBudgets
from exporter.polling.store import Store
from exporter.polling.tasks import TaskKind

# The fields the usage parser reads; anything else in a data point is reported as unread.
_MESSAGE_FIELDS = frozenset({"start", "end", "volume", "cost", "pricing_category",
                             "pricing_type", "country", "phone_number", "phone", "tier"})
_CALL_FIELDS = frozenset({"start", "end", "count", "cost", "average_duration", "duration",
                          "direction", "country", "phone_number", "phone"})
_USAGE_TOP = frozenset({"pricing_analytics", "call_analytics", "currency", "granularity", "id"})


@dataclass
class Probe:
    """The findings, line by line, and whether any answer failed to parse."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def say(self, text: str) -> None:
        self.lines.append(text)


class _Bodies:
    """The last response body per endpoint path, captured as the client reads it."""

    def __init__(self) -> None:
        self.by_path: dict[str, Any] = {}

    async def hook(self, response: httpx.Response) -> None:
        await response.aread()
        try:
            self.by_path[response.request.url.path] = response.json()
        except ValueError:
            self.by_path[response.request.url.path] = None

    def last(self, suffix: str) -> Any:
        for path, body in reversed(self.by_path.items()):
            if path.endswith(suffix):
                return body
        return None


def usage_shape(body: Any) -> str:
    """Which documented shape a usage body has: Meta's analytics (no currency, upper-case
    enums) or the older working shape (a top-level currency, lower-case enums)."""
    if not isinstance(body, dict):
        return "not an object"
    if "currency" in body:
        return "older working shape (top-level currency)"
    if "pricing_analytics" in body or "call_analytics" in body:
        return "Meta analytics (pricing_analytics / call_analytics, no currency)"
    return "unknown (neither pricing_analytics nor call_analytics)"


def unread_fields(body: Any) -> list[str]:
    """Keys of a usage body and its data points that the parser does not read."""
    if not isinstance(body, dict):
        return []
    unread = {f"top-level {k}" for k in body if k not in _USAGE_TOP}
    for section, known in (("pricing_analytics", _MESSAGE_FIELDS),
                           ("call_analytics", _CALL_FIELDS)):
        for point in _points(body.get(section)):
            unread.update(f"{section} point {k}" for k in point if k not in known)
    return sorted(unread)


def _points(section: Any) -> list[dict[str, Any]]:
    if not isinstance(section, dict):
        return []
    points = [p for p in section.get("data_points", []) if isinstance(p, dict)]
    for item in section.get("data", []) if isinstance(section.get("data"), list) else []:
        if isinstance(item, dict) and isinstance(item.get("data_points"), list):
            points.extend(p for p in item["data_points"] if isinstance(p, dict))
    return points


class _Charger:
    """Charges each call to the ledger (in memory and on disk) before it is made."""

    def __init__(self, ledger: Ledger, store: Store, clock: Clock, probe: Probe) -> None:
        self._ledger, self._store, self._clock, self._probe = ledger, store, clock, probe

    def __call__(self, what: str, scopes: Sequence[Scope]) -> bool:
        now_ms = to_ms(self._clock.now())
        if not self._ledger.allows(scopes, now_ms):
            wait = (self._ledger.next_slot(scopes, now_ms) - now_ms) / 1000
            self._probe.say(f"{what}: skipped, its budget is full for {wait:.0f} s more")
            return False
        self._store.record_call(scopes, now_ms)
        self._ledger.record(scopes, now_ms)
        return True


async def run_probe(settings: Settings, *, channel_id: str | None = None,
                    clock: Clock | None = None,
                    transport: httpx.AsyncBaseTransport | None = None) -> Probe:
    """Probe the configured API; see the module docstring."""
    if settings.partner_id is None or not settings.has_credentials:
        raise ValueError("probe needs D360_PARTNER_ID and D360_API_KEY (or the username and "
                         "password pair)")
    clock = clock or SystemClock()
    probe = Probe()
    bodies = _Bodies()
    store = Store(settings.state_path)
    ledger = Ledger(ShardBudgets.from_settings(settings).ledger_limits())
    ledger.load(store.ledger_rows())
    charge = _Charger(ledger, store, clock, probe)
    async with httpx.AsyncClient(
        transport=transport, timeout=settings.request_timeout_seconds,
        headers={"User-Agent": f"whatsapp-usage-exporter/{__version__} probe"},
        event_hooks={"response": [bodies.hook]},
    ) as http:
        api = PartnerApi(http, base_url=settings.api_url, partner_id=settings.partner_id,
                         clock=clock, api_key=settings.api_key, username=settings.username,
                         password=settings.password, granularity=settings.usage_granularity)
        try:
            channel = await _pick_channel(api, charge, probe, channel_id)
            if channel is not None:
                await _probe_channel(_Session(api, charge, probe, bodies, settings, clock),
                                     channel)
            await _probe_partner(api, charge, probe)
        finally:
            store.close()
    return probe


async def _guarded(probe: Probe, what: str, call: Callable[[], Any]) -> Any:
    """Run one call; a body that does not parse fails the probe, other API errors are said."""
    try:
        return await call()
    except ResponseError as exc:
        probe.failed = True
        probe.say(f"{what}: the answer did not parse: {exc}")
    except ApiError as exc:
        probe.say(f"{what}: the API answered with an error: {exc}")
    return None


async def _pick_channel(api: PartnerApi, charge: _Charger, probe: Probe,
                        channel_id: str | None) -> Channel | None:
    scopes = scopes_for(TaskKind.DISCOVERY, "partner", waba=None, balance_shares_usage=False,
                        client_balance_per_client=False)
    if scopes is None or not charge("channels", scopes):
        return None
    page = await _guarded(probe, "channels", lambda: api.channels_page(0))
    if page is None:
        return None
    probe.say(f"channels: first page parsed, {len(page.items)} of {page.total} channels")
    chosen = [c for c in page.items if channel_id is None or c.id == channel_id]
    if not chosen:
        probe.say(f"channels: {channel_id} is not on the first page; name one that is")
        return None
    ch: Channel = chosen[0]
    probe.say(f"channel: {ch.id} (client {ch.client_id}, WABA {ch.waba_label}, "
              f"phone {ch.phone_number or 'not given'})")
    return ch


@dataclass(frozen=True)
class _Session:
    api: PartnerApi
    charge: _Charger
    probe: Probe
    bodies: _Bodies
    settings: Settings
    clock: Clock


async def _probe_channel(s: _Session, ch: Channel) -> None:
    """Channel balance first: its currency is the one Meta's usage answer leaves out."""
    api, charge, probe, bodies, settings, clock = (s.api, s.charge, s.probe, s.bodies,
                                                   s.settings, s.clock)
    usage_scopes = scopes_for(TaskKind.USAGE, ch.id, waba=ch.waba_id or ch.id,
                              balance_shares_usage=settings.channel_balance_shares_usage_budget,
                              client_balance_per_client=settings.client_balance_scope == "client")
    assert usage_scopes is not None
    balance_scopes = scopes_for(
        TaskKind.CHANNEL_BALANCE, ch.id, waba=ch.waba_id or ch.id,
        balance_shares_usage=settings.channel_balance_shares_usage_budget,
        client_balance_per_client=settings.client_balance_scope == "client")
    assert balance_scopes is not None
    if charge("channel balance", balance_scopes):
        balance = await _guarded(probe, "channel balance",
                                 lambda: api.channel_balance(ch.client_id, ch.id))
        probe.say("channel balance: " + _balance_text(balance))
    if charge("usage", usage_scopes):
        now = clock.now()
        report = await _guarded(probe, "usage", lambda: api.channel_usage(
            ch.client_id, ch.id, month_start(now), int(now),
            may_retry=lambda: charge("usage (second granularity spelling)", usage_scopes)))
        body = bodies.last("/info/usage")
        probe.say(f"usage: shape: {usage_shape(body)}")
        probe.say(f"usage: granularity spelling that worked: {api.granularity} "
                  f"({report.requests if report else '?'} request(s))")
        if report is not None:
            _describe_usage(probe, report, body)
    client_scopes = scopes_for(
        TaskKind.CLIENT_BALANCE, ch.client_id, waba=None,
        balance_shares_usage=settings.channel_balance_shares_usage_budget,
        client_balance_per_client=settings.client_balance_scope == "client")
    assert client_scopes is not None
    if charge("client balance", client_scopes):
        balance = await _guarded(probe, "client balance", lambda: api.client_balance(ch.client_id))
        probe.say("client balance: " + _balance_text(balance))


def _describe_usage(probe: Probe, report: models.UsageReport, body: Any) -> None:
    probe.say(f"usage: {len(report.messages)} message points, {len(report.calls)} call points")
    probe.say(f"usage: currency {report.currency or 'unknown'} (from {report.currency_source})")
    missing = report.points_without_cost
    probe.say("usage: every point has a cost" if not missing else
              f"usage: {missing} points have no cost: their cost is exposed as unknown "
              "(no sample), not as zero")
    countries = sorted({m.country for m in report.messages if m.country})
    if countries:
        probe.say("usage: points name their destination country (" + ", ".join(countries)
                  + "): whatsapp_destination_* show spend by market")
    elif report.messages:
        probe.say("usage: no point names a country (no COUNTRY dimension): "
                  "whatsapp_destination_* show these messages under country=\"unknown\"")
    unread = unread_fields(body)
    probe.say("usage: unread fields: " + (", ".join(unread) if unread else "none"))
    months = models.aggregate_by_month(report, report.currency)
    for start, usage in sorted(months.items()):
        month = time.strftime("%Y-%m", time.gmtime(start))
        for (category, pricing_type), total in sorted(usage.messages.items()):
            cost = "unknown" if total.points_without_cost else f"{total.cost} {usage.currency}"
            probe.say(f"exposes: month {month}: {category}/{pricing_type}: "
                      f"{total.volume} messages, cost {cost}")
        for direction, call in sorted(usage.calls.items()):
            probe.say(f"exposes: month {month}: calls {direction}: {call.count} calls, "
                      f"{call.duration_seconds} s, cost {call.cost} {usage.currency}")


async def _probe_partner(api: PartnerApi, charge: _Charger, probe: Probe) -> None:
    scopes = scopes_for(TaskKind.PARTNER_BALANCE, "partner", waba=None,
                        balance_shares_usage=False, client_balance_per_client=False)
    assert scopes is not None
    if charge("partner balance", scopes):
        balances = await _guarded(probe, "partner balance", api.partner_balance)
        if balances is not None:
            probe.say("partner balance: " + ("; ".join(_balance_text(b) for b in balances)
                                             or "no record with an amount"))


def _balance_text(balance: Any) -> str:
    if balance is None:
        return "no amount in the answer (nothing exposed)"
    return f"{balance.amount} {balance.currency or '(currency not given)'}"


def as_text(probe: Probe) -> str:
    return "\n".join(probe.lines) + "\n"
