"""The spend budget panels' arithmetic, checked with the real promtool: the generator's own
expressions, evaluated on hourly series whose month-to-date truth is known."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests import tools
from tests.unit.test_dashboards import load_generator

# promtool's clock starts at 1970-01-01 00:00 UTC: February starts at 744h, March at 1416h.
# Messages and calls each cost 1 an hour, restarting at 0 each month.
SERIES = [
    {"series": 'whatsapp_cost_total{client_id="a", waba_id="w", channel_id="c", '
               'category="marketing", pricing_type="regular", currency="USD"}',
     "values": "0+1x743 0+1x671 0+1x800"},
    {"series": 'whatsapp_call_cost_total{client_id="a", waba_id="w", channel_id="c", '
               'direction="business_initiated", currency="USD"}',
     "values": "0+1x743 0+1x671 0+1x800"},
    # Only calls: still counted, as the `or` in the expressions keeps it.
    {"series": 'whatsapp_call_cost_total{client_id="b", waba_id="w2", channel_id="c2", '
               'direction="business_initiated", currency="EUR"}',
     "values": "0+1x743 0+1x671 0+1x800"},
    {"series": 'whatsapp_spend_budget{client_id="a", waba_id="", currency="USD"}',
     "values": "1000x2200"},
]
ALL = (("$client", ".*"), ("$waba", ".*"), ("$channel", ".*"))


def substituted(expr: str) -> str:
    for variable, value in ALL:
        expr = expr.replace(variable, value)
    return expr


@pytest.fixture(scope="module")
def build() -> ModuleType:
    tools.module("grafana_foundation_sdk")
    return load_generator()


def test_budget_panel_expressions_give_the_truth(build: ModuleType, tmp_path: Path) -> None:
    """Month to date, the previous month at the same day (a 31-day January behind February 3rd,
    February's last day behind March 30th), the forecast and the share of budget are what the
    series say."""
    per_client = "client_id, currency"
    exprs = {
        "now": build.spend("currency"),
        "previous": build.spend_previous_month("currency"),
        "forecast": build.spend_forecast(per_client),
        "share": f"{build.spend(per_client)} / on (client_id, currency) {build.BUDGET}",
    }
    rules = tmp_path / "panels.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "panels", "interval": "1h", "rules": [
        {"record": f"panel:{name}", "expr": substituted(expr)} for name, expr in exprs.items()
    ]}]}))

    def at(name: str, hours: int, *samples: tuple[str, float]) -> dict[str, object]:
        return {"expr": f"panel:{name}", "eval_time": f"{hours}h", "exp_samples": [
            {"labels": f"panel:{name}{{{labels}}}", "value": value} for labels, value in samples]}

    cases = [
        # February 3rd 12:00 (804h): 60 hours into the month, as on January 3rd 12:00.
        at("now", 804, ('currency="EUR"', 60), ('currency="USD"', 120)),
        at("previous", 804, ('currency="EUR"', 60), ('currency="USD"', 120)),
        # March 30th 12:00 (2124h): February has no 30th, so its last day at 12:00 (660h in).
        at("previous", 2124, ('currency="EUR"', 660), ('currency="USD"', 1320)),
        # January 9th 08:00 (200h), a full week of history: 400 spent + 2 an hour for 544 hours.
        at("forecast", 200, ('client_id="a", currency="USD"', 1488),
           ('client_id="b", currency="EUR"', 744)),
        at("share", 200, ('client_id="a", currency="USD"', 0.4)),
    ]
    test = tmp_path / "panels.test.yaml"
    test.write_text(yaml.safe_dump({
        "rule_files": [str(rules)], "evaluation_interval": "1h",
        "tests": [{"interval": "1h", "input_series": SERIES, "promql_expr_test": cases}]}))
    result = subprocess.run([tools.binary("promtool"), "test", "rules", str(test)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
