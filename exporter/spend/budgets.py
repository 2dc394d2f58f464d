"""The spend budgets file (`D360_SPEND_BUDGETS`) and the budget series it gives.

A budget is a monthly amount in one currency, for a client (`client_id`) or a WABA (`waba_id`,
the label value on the cost series, Meta's WABA id where discovery knows it). An optional
`[default]` applies to every polled client without a budget of its own. The amounts are compared
with the cost series as they are: a budget in another currency than a client's spend compares
with nothing (there is no conversion).

File format (TOML):

    [default]                 # optional
    amount = 500
    currency = "EUR"
    [clients.acme-client-id]
    amount = 2000
    currency = "EUR"
    [wabas."102290129340398"]
    amount = 300
    currency = "USD"

Errors:

    ValueError
     └── SpendBudgetError   names the file and the entry, in one line
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from exporter import tomlfile

_FILE_KEYS = frozenset({"default", "clients", "wabas"})
_ENTRY_KEYS = frozenset({"amount", "currency"})


class SpendBudgetError(ValueError):
    """The budgets file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Budget:
    amount: Decimal  # per UTC calendar month, in units of `currency`
    currency: str  # upper-case ISO code, as on the cost series


@dataclass(frozen=True, slots=True)
class SpendBudgets:
    clients: dict[str, Budget] = field(default_factory=dict)
    wabas: dict[str, Budget] = field(default_factory=dict)
    default: Budget | None = None


@dataclass(frozen=True, slots=True, order=True)
class BudgetSeries:
    """One sample of `whatsapp_spend_budget`: a client's budget has `waba_id=""`, a WABA's has
    `client_id=""`, so the two kinds never share a label set."""

    client_id: str
    waba_id: str
    currency: str
    amount: Decimal


def load_spend_budgets(path: Path) -> SpendBudgets:
    return tomlfile.load(path, parse_spend_budgets, SpendBudgetError, parse_float=Decimal)


def parse_spend_budgets(raw: dict[str, Any]) -> SpendBudgets:
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise SpendBudgetError(
            f"unknown key {unknown[0]!r} (expected [default], [clients.ID] or [wabas.ID])")
    default = _budget("[default]", raw["default"]) if "default" in raw else None
    return SpendBudgets(clients=_entries("clients", raw.get("clients", {})),
                        wabas=_entries("wabas", raw.get("wabas", {})), default=default)


def _entries(kind: str, table: Any) -> dict[str, Budget]:
    if not isinstance(table, dict):
        raise SpendBudgetError(f"{kind} must be a table of [{kind}.ID] entries")
    entries: dict[str, Budget] = {}
    for key, entry in table.items():
        if not key.strip():
            raise SpendBudgetError(f"[{kind}.\"{key}\"]: the id is empty")
        entries[key] = _budget(f"[{kind}.{_quoted(key)}]", entry)
    return entries


def _budget(where: str, entry: Any) -> Budget:
    if not isinstance(entry, dict):
        raise SpendBudgetError(f"{where} must be a table with amount and currency")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise SpendBudgetError(f"{where}: unknown key {unknown[0]!r}")
    amount = entry.get("amount")
    # bool is an int to Python; `amount = true` is a mistake, not a budget of 1.
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise SpendBudgetError(f"{where}: amount must be a number, got {amount!r}")
    value = Decimal(amount)
    if not value.is_finite() or value <= 0:
        raise SpendBudgetError(f"{where}: amount must be above 0, got {amount}")
    currency = entry.get("currency")
    if not isinstance(currency, str) or not currency.isascii() or not currency.isalpha() \
            or len(currency) != 3:
        raise SpendBudgetError(
            f"{where}: currency must be a 3-letter ISO code such as EUR, got {currency!r}")
    return Budget(value, currency.upper())


def _quoted(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() and key.isascii() \
        else f'"{key}"'


def budget_series(budgets: SpendBudgets, polled_clients: Iterable[str]) -> list[BudgetSeries]:
    """The budget samples to expose: every client and WABA entry, and the default for each
    polled client that has no entry of its own (so the default follows discovery)."""
    series = [BudgetSeries(client, "", b.currency, b.amount)
              for client, b in budgets.clients.items()]
    series += [BudgetSeries("", waba, b.currency, b.amount) for waba, b in budgets.wabas.items()]
    default = budgets.default
    if default is not None:
        series += [BudgetSeries(client, "", default.currency, default.amount)
                   for client in set(polled_clients) - budgets.clients.keys()]
    return sorted(series)
