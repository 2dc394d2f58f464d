"""The spend budgets file: what it accepts, how it fails, and the budget series it gives."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.__main__ import main
from exporter.spend.budgets import (
    Budget,
    BudgetSeries,
    SpendBudgetError,
    SpendBudgets,
    budget_series,
    load_spend_budgets,
)

GOOD = """\
[default]
amount = 500
currency = "eur"

[clients.acme]
amount = 2000.50
currency = "EUR"

[wabas."102290129340398"]
amount = 300
currency = "USD"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_a_file_with_a_default_a_client_and_a_waba_loads(tmp_path):
    """Amounts are exact decimals and currencies upper case, as on the cost series."""
    budgets = load_spend_budgets(write(tmp_path, GOOD))
    assert budgets == SpendBudgets(
        clients={"acme": Budget(Decimal("2000.50"), "EUR")},
        wabas={"102290129340398": Budget(Decimal(300), "USD")},
        default=Budget(Decimal(500), "EUR"))


def test_an_empty_file_has_no_budgets(tmp_path):
    """An empty file is valid and gives no series."""
    budgets = load_spend_budgets(write(tmp_path, ""))
    assert budget_series(budgets, ["c1"]) == []


@pytest.mark.parametrize(("text", "named"), [
    ("[clients.acme]\namount = -5\ncurrency = 'EUR'\n", "[clients.acme]: amount must be above 0"),
    ("[clients.acme]\namount = 0\ncurrency = 'EUR'\n", "[clients.acme]: amount must be above 0"),
    ("[clients.acme]\namount = nan\ncurrency = 'EUR'\n", "[clients.acme]: amount must be above"),
    ("[clients.acme]\namount = true\ncurrency = 'EUR'\n", "[clients.acme]: amount must be a num"),
    ("[clients.acme]\namount = '10'\ncurrency = 'EUR'\n", "[clients.acme]: amount must be a num"),
    ("[clients.acme]\ncurrency = 'EUR'\n", "[clients.acme]: amount must be a number, got None"),
    ("[clients.acme]\namount = 10\n", "[clients.acme]: currency must be a 3-letter"),
    ("[clients.acme]\namount = 10\ncurrency = 'EURO'\n", "[clients.acme]: currency must be"),
    ("[wabas.'1 2']\namount = 10\ncurrency = 'US1'\n", "[wabas.\"1 2\"]: currency must be"),
    ("[clients.acme]\namount = 10\ncurrency = 'EUR'\nlimit = 3\n",
     "[clients.acme]: unknown key 'limit'"),
    ("[default]\namount = 10\n", "[default]: currency must be"),
    ("[client.acme]\namount = 10\ncurrency = 'EUR'\n", "unknown key 'client'"),
    ("clients = 3\n", "clients must be a table"),
    ("[clients]\nacme = 3\n", "[clients.acme] must be a table with amount and currency"),
    ("[clients.'']\namount = 10\ncurrency = 'EUR'\n", "the id is empty"),
    ("[clients.acme\n", "is not valid TOML"),
])
def test_a_bad_file_names_itself_and_the_entry(tmp_path, text, named):
    """Every mistake is one message naming the file and the entry at fault."""
    path = write(tmp_path, text)
    with pytest.raises(SpendBudgetError) as error:
        load_spend_budgets(path)
    message = str(error.value)
    assert str(path) in message
    assert named in message
    assert "\n" not in message


def test_a_missing_file_is_named(tmp_path):
    """A path that does not exist is reported with the path."""
    with pytest.raises(SpendBudgetError, match=r"cannot read .*nowhere\.toml"):
        load_spend_budgets(tmp_path / "nowhere.toml")


def test_the_default_covers_each_polled_client_without_a_budget(tmp_path):
    """Entries are exposed as written; the default only for polled clients lacking an entry,
    client budgets with waba_id empty and WABA budgets with client_id empty."""
    budgets = load_spend_budgets(write(tmp_path, GOOD))
    assert budget_series(budgets, ["acme", "beta", "beta", "gamma"]) == [
        BudgetSeries("", "102290129340398", "USD", Decimal(300)),
        BudgetSeries("acme", "", "EUR", Decimal("2000.50")),
        BudgetSeries("beta", "", "EUR", Decimal(500)),
        BudgetSeries("gamma", "", "EUR", Decimal(500)),
    ]


def test_without_a_default_only_the_entries_are_exposed():
    """No default: a polled client without an entry has no budget series."""
    budgets = SpendBudgets(clients={"acme": Budget(Decimal(1), "USD")})
    assert budget_series(budgets, ["acme", "beta"]) == [
        BudgetSeries("acme", "", "USD", Decimal(1))]


def test_a_bad_budgets_file_stops_start_up_with_one_line(monkeypatch, tmp_path, capsys):
    """D360_SPEND_BUDGETS with a bad entry exits 2 with one `config error:` line naming the
    setting, the file and the entry."""
    for key in list(os.environ):
        if key.startswith("D360_"):
            monkeypatch.delenv(key)
    path = write(tmp_path, "[wabas.w1]\namount = -1\ncurrency = 'USD'\n")
    monkeypatch.setenv("D360_SPEND_BUDGETS", str(path))
    assert main(["--check-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"config error: D360_SPEND_BUDGETS: {path}: [wabas.w1]: amount must be "
                   "above 0, got -1"]
