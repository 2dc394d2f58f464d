"""Rate cards: what a webhook-counted message or call probably cost.

Meta prices a template message by its category and the recipient's market, and a
business-initiated call per 6-second pulse (a partial pulse counts whole) by the callee's market;
user-initiated calls are free. A market is a country or a region of several calling codes, so a
card maps calling codes to markets and markets to prices. The card holds one price per market and
category, so volume tiers (utility and authentication get cheaper past a monthly volume) are not
modelled: high-volume senders will see the estimate run above the polled cost, which is final.

Meta changes its prices every quarter and its rules now and then (service messages and utility
messages inside the customer service window are charged from 2026-10-01), so a card is a list of
price periods: each event is priced by the period in force at the event's time. A card without
periods is one period valid forever.

File format (TOML), see `ratecards/example-usd.toml`:

    currency = "USD"
    [[period]]
    valid_from = 2026-10-01            # 00:00 UTC; or 2026-10-01T00:00:00+02:00
    source = "where these prices come from"
    default_market = "Other"           # optional: used when no calling code matches
    [period.markets.Germany]
    calling_codes = ["49"]
    countries = ["DE"]                 # optional: ISO codes, for users known only by BSUID
    marketing = 0.1365                 # per message; any category in labels.CATEGORIES
    call_per_minute = 0.06             # optional: business-initiated calls

Without `[[period]]`, `default_market` and `[markets.NAME]` sit at the top level. Errors:

    ValueError
     └── RateCardError   names the file, the period and the key, in one line
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from exporter import tomlfile
from exporter.labels import CATEGORIES

PULSE_SECONDS = 6
# E.164 numbers have at most 15 digits; a group id or a business-scoped user id is no number.
_MAX_NUMBER_DIGITS = 15
_SEPARATORS = str.maketrans("", "", " +-().")
_MARKET_KEYS = frozenset({"calling_codes", "countries", "call_per_minute"}) | CATEGORIES
_PERIOD_KEYS = frozenset({"valid_from", "source", "default_market", "markets"})
_CARD_KEYS = frozenset({"currency", "effective", "source", "period", "default_market", "markets"})
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# From this instant Meta charges service messages and utility messages sent inside an open
# customer service window, per message (Meta, "Upcoming pricing updates", updated 2026-07-01).
SERVICE_CHARGED_FROM = calendar.timegm((2026, 10, 1, 0, 0, 0))


class RateCardError(ValueError):
    """The rate card file cannot be used; the message names the file, period and entry."""


def charged_by_meta(category: str, pricing_type: str, at: float) -> bool:
    """Whether Meta charges a message, judged from its pricing type and category alone (for
    webhooks without `billable`, which Meta is deprecating). A `free_*` type is free; a service
    message is free only before SERVICE_CHARGED_FROM; anything else, including a category nobody
    knows yet, is charged, so it is priced or counted as unpriced, never taken as free."""
    if pricing_type.startswith("free_"):
        return False
    return not (category == "service" and at < SERVICE_CHARGED_FROM)


@dataclass(frozen=True, slots=True)
class Market:
    name: str
    messages: dict[str, Decimal]  # category -> price per message
    call_per_minute: Decimal | None


@dataclass(frozen=True, slots=True)
class Period:
    valid_from: float  # Unix seconds; -inf for a card without periods
    markets: dict[str, Market]
    by_code: dict[str, str]  # calling code -> market name
    default_market: str | None
    by_country: dict[str, str] = field(default_factory=dict)  # ISO country -> market name

    def market_of(self, phone: str, country: str = "") -> Market | None:
        """The market of an E.164 number: its longest matching calling code (NANP area codes
        such as 1876 may be their own market); else the market listing `country` (the ISO
        country a business-scoped user id starts with); else the default market. A recipient
        that is no phone number (a group id, a user id) matches no calling code."""
        number = phone.translate(_SEPARATORS)
        if number.isascii() and number.isdigit() and len(number) <= _MAX_NUMBER_DIGITS:
            for length in range(min(len(number), 7), 0, -1):
                name = self.by_code.get(number[:length])
                if name is not None:
                    return self.markets[name]
        name = self.by_country.get(country.upper()) if country else None
        if name is not None:
            return self.markets[name]
        return self.markets.get(self.default_market) if self.default_market else None


@dataclass(frozen=True, slots=True)
class RateCard:
    currency: str
    periods: tuple[Period, ...]  # by valid_from, oldest first

    def period_at(self, at: float | None = None) -> Period | None:
        """The period in force at Unix time `at` (now if None); None before the first one."""
        t = time.time() if at is None else at
        for period in reversed(self.periods):
            if period.valid_from <= t:
                return period
        return None

    def market_of(self, phone: str, at: float | None = None, *,
                  country: str = "") -> Market | None:
        period = self.period_at(at)
        return None if period is None else period.market_of(phone, country)

    def message_price(self, recipient: str, category: str, at: float | None = None, *,
                      country: str = "") -> Decimal | None:
        """Price of one billable message of `category` to `recipient` (or, without a number,
        to a user of ISO `country`) sent at `at` (now if None); None if the card has none (the
        message is then counted as unpriced, never as free)."""
        market = self.market_of(recipient, at, country=country)
        return None if market is None else market.messages.get(category)

    def call_price(self, callee: str, duration_seconds: int, at: float | None = None, *,
                   country: str = "") -> Decimal | None:
        """Price of a business-initiated call of this length to `callee`, started at `at`."""
        market = self.market_of(callee, at, country=country)
        if market is None or market.call_per_minute is None:
            return None
        pulses = math.ceil(max(duration_seconds, 0) / PULSE_SECONDS)
        return market.call_per_minute * pulses * PULSE_SECONDS / 60


def load_rate_card(path: Path) -> RateCard:
    return tomlfile.load(path, parse_rate_card, RateCardError)


def parse_rate_card(raw: dict[str, Any]) -> RateCard:
    unknown = set(raw) - _CARD_KEYS
    if unknown:
        raise RateCardError(f"unknown key {sorted(unknown)[0]!r}")
    currency = raw.get("currency")
    if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3:
        raise RateCardError("currency must be a 3-letter ISO code such as USD")
    if "period" not in raw:
        return RateCard(currency.upper(), (_period(raw, -math.inf),))
    misplaced = sorted({"default_market", "markets"} & set(raw))
    if misplaced:
        raise RateCardError(f"{misplaced[0]} belongs inside each [[period]] when the card has "
                            f"periods")
    tables = raw["period"]
    if not isinstance(tables, list) or not tables:
        raise RateCardError("period must be one or more [[period]] tables")
    periods: list[Period] = []
    for number, table in enumerate(tables, start=1):
        periods.append(_dated_period(number, table, periods[-1] if periods else None))
    return RateCard(currency.upper(), tuple(periods))


def _dated_period(number: int, table: Any, before: Period | None) -> Period:
    """One [[period]] table; its errors start with the period's number and start."""
    if not isinstance(table, dict):
        raise RateCardError(f"period {number} must be a [[period]] table")
    try:
        start, shown = _instant(table.get("valid_from"))
    except RateCardError as exc:
        raise RateCardError(f"period {number}: {exc}") from None
    try:
        return _period_body(table, start, before)
    except RateCardError as exc:
        raise RateCardError(f"period {number} (valid_from {shown}): {exc}") from None


def _period_body(table: dict[str, Any], start: float, before: Period | None) -> Period:
    unknown = set(table) - _PERIOD_KEYS
    if unknown:
        raise RateCardError(f"unknown key {sorted(unknown)[0]!r} (a period holds "
                            f"{', '.join(sorted(_PERIOD_KEYS))}; currency is set once, at the "
                            f"top)")
    if before is not None and start <= before.valid_from:
        raise RateCardError("valid_from must be later than the period before it (periods go "
                            "oldest first)")
    return _period(table, start)


def _period(raw: dict[str, Any], start: float) -> Period:
    tables = raw.get("markets")
    if not isinstance(tables, dict) or not tables:
        raise RateCardError("needs at least one [markets.NAME] table")
    markets: dict[str, Market] = {}
    by_code: dict[str, str] = {}
    by_country: dict[str, str] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise RateCardError(f"{_where(name)} must be a table")
        markets[name] = _market(name, table)
        for code in _codes(name, table.get("calling_codes", [])):
            if code in by_code:
                raise RateCardError(f"calling code {code} is in both {_where(by_code[code])} "
                                    f"and {_where(name)}")
            by_code[code] = name
        for country in _countries(name, table.get("countries", [])):
            if country in by_country:
                raise RateCardError(f"country {country} is in both "
                                    f"{_where(by_country[country])} and {_where(name)}")
            by_country[country] = name
    default = raw.get("default_market")
    if default is not None and default not in markets:
        raise RateCardError(f"default_market {default!r} is not a [markets.*] table")
    return Period(start, markets, by_code, default, by_country)


def _instant(value: Any) -> tuple[float, str]:
    """valid_from as Unix seconds and as written: a date is 00:00 UTC; a date-time needs its
    offset, because Meta switches at midnight in each WABA's own time zone."""
    if value is None:
        raise RateCardError("valid_from is required, e.g. valid_from = 2026-10-01")
    if isinstance(value, str):
        try:
            value = (date.fromisoformat(value) if len(value) == 10
                     else datetime.fromisoformat(value))
        except ValueError:
            raise RateCardError(f"valid_from {value!r} is not a date such as 2026-10-01") \
                from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise RateCardError(f"valid_from {value.isoformat()} needs a UTC offset, e.g. "
                                f"{value.date().isoformat()}T00:00:00+02:00, or a plain date")
        return value.timestamp(), value.isoformat()
    if isinstance(value, date):
        midnight = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return midnight.timestamp(), value.isoformat()
    raise RateCardError(f"valid_from {value!r} is not a date such as 2026-10-01")


def _where(name: str) -> str:
    """markets.NAME as TOML writes the key, so any name stays on one line."""
    return "markets." + (name if _BARE_KEY.fullmatch(name) else json.dumps(name))


def _market(name: str, table: dict[str, Any]) -> Market:
    unknown = set(table) - _MARKET_KEYS
    if unknown:
        raise RateCardError(f"{_where(name)}: unknown key {sorted(unknown)[0]!r} (prices are "
                            f"named by category: {', '.join(sorted(CATEGORIES))})")
    prices = {key: _price(f"{_where(name)}.{key}", value) for key, value in table.items()
              if key in CATEGORIES}
    per_minute = table.get("call_per_minute")
    return Market(name, prices, None if per_minute is None
                  else _price(f"{_where(name)}.call_per_minute", per_minute))


def _codes(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise RateCardError(f"{_where(name)}.calling_codes must be a list of strings")
    codes = []
    for code in value:
        text = str(code).lstrip("+") if isinstance(code, (str, int)) else ""
        if not text.isascii() or not text.isdigit() or len(text) > 7:
            raise RateCardError(f"{_where(name)}.calling_codes: {code!r} is not a calling code")
        codes.append(text)
    return codes


def _countries(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise RateCardError(f"{_where(name)}.countries must be a list of ISO codes such as \"DE\"")
    for country in value:
        if not (isinstance(country, str) and len(country) == 2 and country.isascii()
                and country.isalpha()):
            raise RateCardError(f"{_where(name)}.countries: {country!r} is not a 2-letter ISO "
                                f"country code")
    return [country.upper() for country in value]


def _price(where: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RateCardError(f"{where} must be a number")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise RateCardError(f"{where} must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise RateCardError(f"{where} must be a price of 0 or more, got {value!r}")
    return price
