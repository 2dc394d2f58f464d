"""Response shapes of the Partner API, read tolerantly into domain types.

360dialog documents no 200 body for Get Channel Usage and points to Meta's analytics, so the
usage body is read as Meta's `pricing_analytics` and `call_analytics` fields (shared reference,
section 10; fixtures in tests/fixtures/api/): points under `data[].data_points[]` or directly under
`data_points`, upper-case enums, `tier` on billable points, no currency, and call points with
`count`, `cost` and `average_duration`. The older working shape (top-level `currency`, call
`duration` totals) is still read. This module is the one place that knows these shapes, so a
correction is one edit. Extra fields are ignored; categories and currencies come in any case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from exporter.calendar import month_start
from exporter.domain import (
    UNKNOWN_COUNTRY,
    Balance,
    CallTotal,
    Channel,
    Client,
    MarketTotal,
    MessageTotal,
    MonthUsage,
)
from exporter.labels import OTHER


class ShapeError(ValueError):
    """The body does not have the shape we need."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class MessagePoint:
    start: int
    category: str
    pricing_type: str
    volume: int
    cost: Decimal | None  # None: the point had no cost (COST is omitted on a partner's credit line)
    country: str = ""
    tier: str = ""


@dataclass(frozen=True, slots=True)
class CallPoint:
    start: int
    direction: str  # "unknown" when direction was not a requested dimension
    count: int
    duration_seconds: int
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class UsageReport:
    currency: str  # "" when the body does not say (Meta's shape never does)
    messages: list[MessagePoint]
    calls: list[CallPoint]
    requests: int = 1  # HTTP requests the fetch made (a rejected granularity spelling costs one)
    currency_source: str = "response"  # where `currency` came from; see PartnerApi.channel_usage

    @property
    def points_without_cost(self) -> int:
        return (sum(1 for m in self.messages if m.cost is None)
                + sum(1 for c in self.calls if c.cost is None))


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeError(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ShapeError(f"{what} is not a list")
    return value


def _str(value: Any, what: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ShapeError(f"{what} is not a string")
    return str(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ShapeError(f"{what} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ShapeError(f"{what} is not a whole number")


def _money(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ShapeError(f"{what} is not an amount")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ShapeError(f"{what} is not an amount") from None
    if not amount.is_finite():
        raise ShapeError(f"{what} is not a finite amount")
    return amount


def _optional_money(value: Any, what: str) -> Decimal | None:
    return None if value is None else _money(value, what)


def _time(value: Any, what: str) -> int:
    """Unix seconds, or an ISO 8601 string."""
    if isinstance(value, str) and not value.strip().isdigit():
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ShapeError(f"{what} is not a time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp())
    return _int(value, what)


def optional_currency(value: Any) -> str:
    """A currency code, or "" where the body has none."""
    return "" if value is None or value == "" else currency(value)


def currency(value: Any) -> str:
    # 360dialog answers "usd"/"eur"; Meta and the working shapes say "USD".
    text = _str(value, "currency").strip().upper()
    if not text.isalpha() or len(text) > 8:
        raise ShapeError("currency is not a currency code")
    return text


def label_value(value: Any, what: str) -> str:
    """Categories, pricing types and directions: lower snake case, bounded by the caller."""
    return _str(value, what).strip().lower().replace(" ", "_").replace("-", "_") or "unknown"


def _page_meta(body: Mapping[str, Any], n_items: int) -> int:
    total = body.get("total")
    return _int(total, "total") if total is not None else n_items


def parse_clients(body: Any) -> Page[Client]:
    body = _obj(body, "clients page")
    items = []
    for i, raw in enumerate(_list(body.get("clients"), "clients")):
        item = _obj(raw, f"clients[{i}]")
        items.append(
            Client(
                id=_str(item.get("id"), f"clients[{i}].id"),
                name=_str(item.get("name"), "name", ""),
                status=_str(item.get("status"), "status", ""),
            )
        )
    return Page(items, _page_meta(body, len(items)))


def parse_channels(body: Any) -> Page[Channel]:
    body = _obj(body, "channels page")
    raw_items = body.get("partner_channels", body.get("channels"))
    items = []
    for i, raw in enumerate(_list(raw_items, "partner_channels")):
        item = _obj(raw, f"partner_channels[{i}]")
        waba = _obj(item.get("waba_account") or {}, "waba_account")
        setup = _obj(item.get("setup_info") or {}, "setup_info")
        client_id = item.get("client_id")
        if client_id is None and isinstance(item.get("client"), Mapping):
            client_id = item["client"].get("id")
        items.append(
            Channel(
                id=_str(item.get("id"), f"partner_channels[{i}].id"),
                client_id=_str(client_id, f"partner_channels[{i}].client_id"),
                waba_id=_str(waba.get("id"), "waba_account.id", ""),
                waba_external_id=_str(waba.get("external_id"), "waba_account.external_id", ""),
                phone_number=_str(setup.get("phone_number"), "setup_info.phone_number", ""),
                name=_str(setup.get("phone_name") or waba.get("name"), "name", ""),
                status=_str(item.get("status"), "status", ""),
            )
        )
    return Page(items, _page_meta(body, len(items)))


def _data_points(section: Any, what: str) -> Iterable[Mapping[str, Any]]:
    if section is None:
        return []
    section = _obj(section, what)
    points: list[Mapping[str, Any]] = []
    if "data_points" in section:
        points.extend(_list(section["data_points"], f"{what}.data_points"))
    for j, group in enumerate(_list(section.get("data"), f"{what}.data")):
        points.extend(_list(_obj(group, f"{what}.data[{j}]").get("data_points"), "data_points"))
    return [_obj(p, f"{what} data point") for p in points]


def _call_seconds(p: Mapping[str, Any], count: int) -> int:
    """Total seconds of a call point. Meta gives `average_duration` (per completed call, assumed
    seconds), so the total is count x average: summing averages over points would be wrong. The
    older working shape gave the total as `duration`."""
    if p.get("duration") is not None:
        return _int(p["duration"], "duration")
    average = p.get("average_duration")
    if average is None:
        return 0
    seconds = _money(average, "average_duration") * count
    return int(seconds.to_integral_value(rounding=ROUND_HALF_UP))


def _message_point(p: Mapping[str, Any]) -> MessagePoint:
    tier = p.get("tier")
    return MessagePoint(
        start=_time(p.get("start"), "start"),
        category=label_value(p.get("pricing_category", "unknown"), "pricing_category"),
        pricing_type=label_value(p.get("pricing_type", "unknown"), "pricing_type"),
        volume=_int(p.get("volume", 0), "volume"),
        cost=_optional_money(p.get("cost"), "cost"),
        country=_str(p.get("country"), "country", "").upper(),
        tier="" if tier is None else _str(tier, "tier"),
    )


def _call_point(p: Mapping[str, Any]) -> CallPoint:
    count = _int(p.get("count", 0), "count")
    return CallPoint(
        start=_time(p.get("start"), "start"),
        direction=label_value(p.get("direction", "unknown"), "direction"),
        count=count,
        duration_seconds=_call_seconds(p, count),
        cost=_optional_money(p.get("cost"), "cost"),
    )


def parse_usage(body: Any) -> UsageReport:
    body = _obj(body, "usage")
    messages = [_message_point(p)
                for p in _data_points(body.get("pricing_analytics"), "pricing_analytics")]
    calls = [_call_point(p) for p in _data_points(body.get("call_analytics"), "call_analytics")]
    return UsageReport(optional_currency(body.get("currency")), messages, calls)


def market_of(country: str) -> str:
    """A point's country as a bounded label: its ISO code, `unknown` when the point named none,
    `other` for anything that is no two-letter code."""
    if not country:
        return UNKNOWN_COUNTRY
    return country if len(country) == 2 and country.isalpha() and country.isascii() else OTHER


def aggregate_by_month(report: UsageReport, default_currency: str) -> dict[int, MonthUsage]:
    """Sum the report's points into one `MonthUsage` per UTC month. A point without a cost adds
    nothing to the cost and counts in its row's `points_without_cost`: that row's cost is
    unknown, never a zero the API did not say."""
    cur = report.currency or default_currency
    msgs: dict[int, dict[tuple[str, str], MessageTotal]] = {}
    calls: dict[int, dict[str, CallTotal]] = {}
    markets: dict[int, dict[str, MarketTotal]] = {}
    for m in report.messages:
        month = month_start(m.start)
        bucket = msgs.setdefault(month, {})
        key = (m.category, m.pricing_type)
        prev = bucket.get(key, MessageTotal(0, Decimal(0)))
        bucket[key] = MessageTotal(
            prev.volume + m.volume, prev.cost + (m.cost or 0),
            prev.points_without_cost + (m.cost is None))
        by_market = markets.setdefault(month, {})
        country = market_of(m.country)
        was = by_market.get(country, MarketTotal(0, Decimal(0)))
        by_market[country] = MarketTotal(was.volume + m.volume, was.cost + (m.cost or 0),
                                         was.points_without_cost + (m.cost is None))
    for c in report.calls:
        cbucket = calls.setdefault(month_start(c.start), {})
        cprev = cbucket.get(c.direction, CallTotal(0, 0, Decimal(0)))
        cbucket[c.direction] = CallTotal(
            cprev.count + c.count, cprev.duration_seconds + c.duration_seconds,
            cprev.cost + (c.cost or 0), cprev.points_without_cost + (c.cost is None))
    return {
        month: MonthUsage(month, cur, msgs.get(month, {}), calls.get(month, {}),
                          markets.get(month, {}))
        for month in set(msgs) | set(calls)
    }


def parse_balance(body: Any) -> Balance | None:
    """A channel or client balance; None when the answer has no amount. No field is known to be
    required, and the channel endpoint's schema was never seen: an answer with a currency only
    is a balance we cannot show, not a broken poll."""
    body = _obj(body, "balance")
    amount = body.get("balance")
    if amount is None:
        return None
    return Balance(_money(amount, "balance"), optional_currency(body.get("currency")))


def parse_partner_balance(body: Any) -> tuple[list[Balance], int]:
    """The partner's balances, one record per top-up currency, and how many records had no
    amount and were left out. `PartnerBalanceOut` lists `total` and `currency` with no required
    fields, so either may be missing; a record without a currency keeps `currency` "".
    A bare object is accepted too."""
    records = body if isinstance(body, list) else [body]
    balances: list[Balance] = []
    skipped = 0
    for i, raw in enumerate(records):
        record = _obj(raw, f"partner balance[{i}]")
        amount = record.get("total", record.get("balance"))
        if amount is None:
            skipped += 1
            continue
        balances.append(Balance(_money(amount, f"partner balance[{i}].total"),
                                optional_currency(record.get("currency"))))
    return balances, skipped
