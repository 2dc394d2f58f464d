"""The alert rules, checked with the real promtool.

The rules are written once, as a Helm template (`helm/whatsapp-usage-exporter/files/alerts.yaml`),
and shipped twice: inside the chart's PrometheusRule and as a plain rules file rendered with the
default values (`helm/whatsapp-usage-exporter-alerts.rules.yaml`). Regenerate the plain file after
editing the template or the `alerts` defaults with:

    .venv/bin/python -m tests.component.test_alert_rules

Rule unit tests live in `helm/alerts-tests/*.test.yaml`. A test file with a sibling
`<name>.values.yaml` runs against the rules rendered with those chart values (for rules the
defaults switch off, such as budgets); the others run against the plain file, so
`promtool test rules helm/alerts-tests/alerts.test.yaml` also works by hand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "whatsapp-usage-exporter"
PLAIN_RULES = ROOT / "helm" / "whatsapp-usage-exporter-alerts.rules.yaml"
RULE_TESTS = ROOT / "helm" / "alerts-tests"

HEADER = """\
# Alert rules of whatsapp-usage-exporter for Prometheus without the Prometheus Operator
# (list this file under rule_files:). Generated from helm/whatsapp-usage-exporter/files/alerts.yaml
# with the chart's default values; do not edit by hand. Regenerate with:
#   .venv/bin/python -m tests.component.test_alert_rules
"""

ALERT_NAMES = {
    "WhatsAppChannelBalanceLow", "WhatsAppClientBalanceLow", "WhatsAppPartnerBalanceLow",
    "WhatsAppMonthlySpendOverBudget", "WhatsAppSpendSpike", "WhatsAppUsageDataStale",
    "WhatsAppApiErrors", "WhatsAppApiRateLimited", "WhatsAppWebhookAuthFailures",
    "WhatsAppWebhookOutboxBacklog", "WhatsAppWebhookForwardsExpired", "WhatsAppExporterDown",
    "WhatsAppWebhookWorkerRestarting", "WhatsAppSpendOverBudget", "WhatsAppSpendForecastOverBudget",
}


def promtool() -> str:
    return tools.binary("promtool")


def rule_groups(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `spec` of the chart's PrometheusRule rendered with `values` over the defaults."""
    import helm_python  # noqa: PLC0415 - a 75 MB native library; loaded only when rendering

    merged = {**(values or {}), "prometheusRule": {"enabled": True}}
    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(merged, name="wue", namespace="monitoring")
    text = rendered["whatsapp-usage-exporter/templates/prometheusrule.yaml"]
    spec: dict[str, Any] = yaml.safe_load(text)["spec"]
    return spec


class _BlockDumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, so the plain file reads like a hand-written one."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def plain_rules_text() -> str:
    body = yaml.dump(rule_groups(), Dumper=_BlockDumper, sort_keys=False, width=1000)
    return HEADER + body


def rendered_rules_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(values), sort_keys=False))
    return path


def test_plain_rules_file_is_the_chart_rule_spec() -> None:
    """The committed plain rules file equals the PrometheusRule spec rendered with defaults."""
    assert yaml.safe_load(PLAIN_RULES.read_text()) == rule_groups()


def test_plain_rules_file_has_every_alert_with_severity_and_annotations() -> None:
    """Every alert ships with a severity label and summary and description annotations."""
    groups = yaml.safe_load(PLAIN_RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    # The monthly budget is off by default (alerts.monthlyBudget: 0).
    assert {rule["alert"] for rule in rules} == ALERT_NAMES - {"WhatsAppMonthlySpendOverBudget"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_promtool_accepts_the_plain_rules_file() -> None:
    """`promtool check rules` accepts the plain rules file."""
    result = subprocess.run(
        [promtool(), "check", "rules", str(PLAIN_RULES)], capture_output=True, text=True,
        check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_rules_with_budgets_and_custom_thresholds(tmp_path: Path) -> None:
    """Rules rendered with budgets and non-default thresholds are valid PromQL too."""
    values = {"alerts": {
        "monthlyBudget": 2500, "clientBudgets": {"acme": 10000.5, "tiny.co": 20},
        "job": "wue|whatsapp", "spendSpikeBaselineDays": 14, "apiErrorRatio": 0.25,
        "staleUsageSeconds": 86400, "rateLimitedWindow": "30m",
    }}
    rules = rendered_rules_file(tmp_path, values)
    names = [rule.get("alert") for group in yaml.safe_load(rules.read_text())["groups"]
             for rule in group["rules"]]
    assert names.count("WhatsAppMonthlySpendOverBudget") == 3
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.test.yaml"))


def test_every_alert_has_unit_tests() -> None:
    """Each alert is named in the promtool unit tests, with a firing and a quiet case."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in _rule_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fired == ALERT_NAMES
    assert quiet == ALERT_NAMES


@pytest.mark.parametrize("test_file", _rule_test_files(), ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(test_file: Path, tmp_path: Path) -> None:
    """Each alert fires on the series it is for and stays quiet on the others (promtool)."""
    values_file = test_file.with_name(test_file.name.replace(".test.yaml", ".values.yaml"))
    if values_file.exists():
        rules = rendered_rules_file(tmp_path, yaml.safe_load(values_file.read_text()))
    else:
        rules = PLAIN_RULES
    spec = yaml.safe_load(test_file.read_text())
    spec["rule_files"] = [str(rules)]
    copy = tmp_path / test_file.name
    copy.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", str(copy)], capture_output=True, text=True, check=False,
        timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


if __name__ == "__main__":
    PLAIN_RULES.write_text(plain_rules_text())
    print(f"wrote {PLAIN_RULES.relative_to(ROOT)}")
