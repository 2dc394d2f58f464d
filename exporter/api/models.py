"""Response shapes of the Partner API, read tolerantly into domain types.

The usage body is not documented (see the reference's "Working shapes"); this module is the one
place that knows it, so a correction is one edit. Extra fields are ignored, `data_points` are
accepted at the top level or nested under `data[]`, categories and currencies in any case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from exporter.calendar import month_start
from exporter.domain import Balance, CallTotal, Channel, Client, MessageTotal, MonthUsage


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
    cost: Decimal


@dataclass(frozen=True, slots=True)
class CallPoint:
    start: int
    direction: str
    count: int
    duration_seconds: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class UsageReport:
    currency: str
    messages: list[MessagePoint]
    calls: list[CallPoint]


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


def parse_usage(body: Any) -> UsageReport:
    body = _obj(body, "usage")
    messages = [
        MessagePoint(
            start=_time(p.get("start"), "start"),
            category=label_value(p.get("pricing_category", "unknown"), "pricing_category"),
            pricing_type=label_value(p.get("pricing_type", "unknown"), "pricing_type"),
            volume=_int(p.get("volume", 0), "volume"),
            cost=_money(p.get("cost", 0), "cost"),
        )
        for p in _data_points(body.get("pricing_analytics"), "pricing_analytics")
    ]
    calls = [
        CallPoint(
            start=_time(p.get("start"), "start"),
            direction=label_value(p.get("direction", "unknown"), "direction"),
            count=_int(p.get("count", 0), "count"),
            duration_seconds=_int(p.get("duration", 0), "duration"),
            cost=_money(p.get("cost", 0), "cost"),
        )
        for p in _data_points(body.get("call_analytics"), "call_analytics")
    ]
    cur = body.get("currency")
    return UsageReport(currency(cur) if cur is not None else "", messages, calls)


def aggregate_by_month(report: UsageReport, default_currency: str) -> dict[int, MonthUsage]:
    """Sum the report's points into one `MonthUsage` per UTC month."""
    cur = report.currency or default_currency
    msgs: dict[int, dict[tuple[str, str], MessageTotal]] = {}
    calls: dict[int, dict[str, CallTotal]] = {}
    for m in report.messages:
        bucket = msgs.setdefault(month_start(m.start), {})
        key = (m.category, m.pricing_type)
        prev = bucket.get(key, MessageTotal(0, Decimal(0)))
        bucket[key] = MessageTotal(prev.volume + m.volume, prev.cost + m.cost)
    for c in report.calls:
        cbucket = calls.setdefault(month_start(c.start), {})
        cprev = cbucket.get(c.direction, CallTotal(0, 0, Decimal(0)))
        cbucket[c.direction] = CallTotal(
            cprev.count + c.count, cprev.duration_seconds + c.duration_seconds, cprev.cost + c.cost
        )
    return {
        month: MonthUsage(month, cur, msgs.get(month, {}), calls.get(month, {}))
        for month in set(msgs) | set(calls)
    }


def parse_balance(body: Any) -> Balance:
    body = _obj(body, "balance")
    return Balance(_money(body.get("balance"), "balance"), currency(body.get("currency")))


def parse_partner_balance(body: Any) -> list[Balance]:
    # One record per top-up currency; accept a bare object too.
    records = body if isinstance(body, list) else [body]
    return [
        Balance(_money(r.get("total", r.get("balance")), "total"), currency(r.get("currency")))
        for r in (_obj(x, "partner balance") for x in records)
    ]
