"""Rate cards: what a webhook-counted message or call probably cost.

Meta prices a template message by its category and the recipient's market, and a
business-initiated call per 6-second pulse (a partial pulse counts whole) by the callee's market;
user-initiated calls are free. A market is a country or a region of several calling codes, so a
card maps calling codes to markets and markets to prices. The card holds one price per market and
category, so volume tiers (utility and authentication get cheaper past a monthly volume) are not
modelled: high-volume senders will see the estimate run above the polled cost, which is final.

File format (TOML), see `ratecards/example-usd.toml`:

    currency = "USD"
    default_market = "Other"           # optional: used when no calling code matches
    [markets.Germany]
    calling_codes = ["49"]
    marketing = 0.1365                 # per message; any category in labels.CATEGORIES
    call_per_minute = 0.06             # optional: business-initiated calls
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from exporter.labels import CATEGORIES

PULSE_SECONDS = 6
_MARKET_KEYS = frozenset({"calling_codes", "call_per_minute"}) | CATEGORIES


class RateCardError(ValueError):
    """The rate card file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Market:
    name: str
    messages: dict[str, Decimal]  # category -> price per message
    call_per_minute: Decimal | None


@dataclass(frozen=True, slots=True)
class RateCard:
    currency: str
    markets: dict[str, Market]
    by_code: dict[str, str]  # calling code -> market name
    default_market: str | None

    def market_of(self, phone: str) -> Market | None:
        """The market of an E.164 number: its longest matching calling code (NANP area codes
        such as 1876 may be their own market), else the default market."""
        number = "".join(ch for ch in phone if ch.isdigit())
        for length in range(min(len(number), 7), 0, -1):
            name = self.by_code.get(number[:length])
            if name is not None:
                return self.markets[name]
        return self.markets.get(self.default_market) if self.default_market else None

    def message_price(self, recipient: str, category: str) -> Decimal | None:
        """Price of one billable message of `category` to `recipient`; None if the card has
        none (the message is then counted as unpriced, never as free)."""
        market = self.market_of(recipient)
        return None if market is None else market.messages.get(category)

    def call_price(self, callee: str, duration_seconds: int) -> Decimal | None:
        """Price of a business-initiated call of this length to `callee`."""
        market = self.market_of(callee)
        if market is None or market.call_per_minute is None:
            return None
        pulses = math.ceil(max(duration_seconds, 0) / PULSE_SECONDS)
        return market.call_per_minute * pulses * PULSE_SECONDS / 60


def load_rate_card(path: Path) -> RateCard:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RateCardError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RateCardError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_rate_card(raw)
    except RateCardError as exc:
        raise RateCardError(f"{path}: {exc}") from None


def parse_rate_card(raw: dict[str, Any]) -> RateCard:
    unknown = set(raw) - {"currency", "default_market", "markets", "effective", "source"}
    if unknown:
        raise RateCardError(f"unknown key {sorted(unknown)[0]!r}")
    currency = raw.get("currency")
    if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3:
        raise RateCardError("currency must be a 3-letter ISO code such as USD")
    tables = raw.get("markets")
    if not isinstance(tables, dict) or not tables:
        raise RateCardError("needs at least one [markets.NAME] table")
    markets: dict[str, Market] = {}
    by_code: dict[str, str] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise RateCardError(f"markets.{name} must be a table")
        markets[name] = _market(name, table)
        for code in _codes(name, table.get("calling_codes", [])):
            if code in by_code:
                raise RateCardError(f"calling code {code} is in both markets.{by_code[code]} "
                                    f"and markets.{name}")
            by_code[code] = name
    default = raw.get("default_market")
    if default is not None and default not in markets:
        raise RateCardError(f"default_market {default!r} is not a [markets.*] table")
    return RateCard(currency.upper(), markets, by_code, default)


def _market(name: str, table: dict[str, Any]) -> Market:
    unknown = set(table) - _MARKET_KEYS
    if unknown:
        raise RateCardError(f"markets.{name}: unknown key {sorted(unknown)[0]!r} (prices are "
                            f"named by category: {', '.join(sorted(CATEGORIES))})")
    prices = {key: _price(f"markets.{name}.{key}", value) for key, value in table.items()
              if key in CATEGORIES}
    per_minute = table.get("call_per_minute")
    return Market(name, prices, None if per_minute is None
                  else _price(f"markets.{name}.call_per_minute", per_minute))


def _codes(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise RateCardError(f"markets.{name}.calling_codes must be a list of strings")
    codes = []
    for code in value:
        text = str(code).lstrip("+") if isinstance(code, (str, int)) else ""
        if not text.isdigit() or len(text) > 7:
            raise RateCardError(f"markets.{name}.calling_codes: {code!r} is not a calling code")
        codes.append(text)
    return codes


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
