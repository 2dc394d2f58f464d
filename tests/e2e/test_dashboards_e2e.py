"""Every dashboard query against a real Prometheus scraping the real exporter, fed by the
simulator's polls and its signed webhooks, must return data."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import exporter.webhooks
from tests.e2e.conftest import Proc, base_env, free_port, wait_http
from tests.e2e.test_e2e_polling import FAST, fast_env
from tests.e2e.webhook_stream import Sink
from tests.unit.test_dashboards import load_generator

pytestmark = pytest.mark.e2e

CARD = Path(exporter.webhooks.__file__).parent / "ratecards" / "example-usd.toml"
HMAC_SECRET = "dashboards-e2e-secret"

# What Grafana would put in place of its variables. The label filters are used with =~, so
# ".*" is "All". $__range is short enough that "offset $__range" still lands on scraped data
# within the test's time.
RANGE_SECONDS = 30
SUBSTITUTIONS = (
    ("${datasource}", "prometheus"),
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range_s", str(RANGE_SECONDS)),
    ("$__range", f"{RANGE_SECONDS}s"),
    ("$client", ".*"),
    ("$waba", ".*"),
    ("$channel", ".*"),
)
RANGE_WINDOW_SECONDS = 120
# The previous month's panels need a month of history, which this test does not have; their
# arithmetic is checked on known series in tests/component/test_spend_dashboard.py.
NEEDS_LAST_MONTH = "offset 28d"
RANGE_STEP = "15s"
DEADLINE_SECONDS = 110


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS:
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def panel_queries() -> list[tuple[str, str, bool]]:
    """(where, PromQL with variables substituted, instant?) for every panel target."""
    out = []
    for name, dashboard in load_generator().dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                where = f"{name} / {panel['title']} / {target['refId']}"
                out.append((where, substitute(target["expr"]), bool(target.get("instant"))))
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(where, series selector, label) for every label_values() variable, substituted."""
    out = []
    for name, dashboard in load_generator().dashboards().items():
        for variable in dashboard["templating"]["list"]:
            found = re.fullmatch(r"label_values\((.*), *(\w+)\)", str(variable.get("query")))
            if variable["type"] == "query" and found:
                out.append((f"{name} / ${variable['name']}", substitute(found.group(1)),
                            found.group(2)))
    return out


def empty_or_failing(prom_url: str, queries: list[tuple[str, str, bool]]) -> list[str]:
    """A line per panel query that errors or returns no series, and per variable without
    values."""
    now = time.time()
    problems = []
    with httpx.Client(base_url=prom_url, timeout=10) as client:
        for where, expr, instant in queries:
            if instant:
                r = client.get("/api/v1/query", params={"query": expr, "time": now})
            else:
                r = client.get("/api/v1/query_range", params={
                    "query": expr, "start": now - RANGE_WINDOW_SECONDS, "end": now,
                    "step": RANGE_STEP})
            body = r.json()
            if r.status_code != 200 or body.get("status") != "success":
                problems.append(f"{where}: error {body.get('error', r.status_code)}: {expr}")
            elif not body["data"]["result"]:
                problems.append(f"{where}: no data: {expr}")
        for where, selector, label in variable_queries():
            r = client.get(f"/api/v1/label/{label}/values", params={"match[]": selector})
            if r.status_code != 200 or not r.json().get("data"):
                problems.append(f"{where}: no values: label_values({selector}, {label})")
    return problems


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def webhook_port() -> int:
    return free_port()


@pytest.fixture
def simulator_with_webhooks(tmp_path: Path, webhook_port: int) -> Iterator[str]:
    args = [sys.executable, "-m", "exporter.simulator", "--host", "127.0.0.1", "--port", "0",
            "--seed", "7", "--api-key", "e2e-key", "--partner-id", "e2e_PA",
            "--webhook-url", f"http://127.0.0.1:{webhook_port}/webhook",
            "--webhook-interval", "1"]
    for kind, limit in FAST.items():
        args += [f"--limit-{kind.replace('_', '-')}", limit]
    env = base_env(tmp_path) | {"SIM_WEBHOOK_HMAC_SECRET": HMAC_SECRET}
    proc = Proc(args, env, tmp_path / "sim.log")
    try:
        yield proc.read_line_with("SIMULATOR_URL=")
    finally:
        proc.stop()


def test_every_dashboard_query_returns_data(simulator_with_webhooks, webhook_port, sink,
                                            start_exporter, prometheus, tmp_path):
    """Every panel query of every dashboard runs without error and returns series once the
    exporter has polled and received webhooks for a minute or so."""
    queries = [q for q in panel_queries() if NEEDS_LAST_MONTH not in q[1]]
    assert queries
    budgets = tmp_path / "spend-budgets.toml"
    budgets.write_text('[default]\namount = 100\ncurrency = "USD"\n')
    _, url = start_exporter(fast_env(simulator_with_webhooks) | {
        "D360_SPEND_BUDGETS": str(budgets),
        "D360_WEBHOOK_HMAC_SECRET": HMAC_SECRET,
        # A short run: show ratios from the first polled message, not from 100.
        "D360_WEBHOOK_RECONCILE_MIN_MESSAGES": "1",
        "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{webhook_port}",
        "D360_WEBHOOK_RATE_CARD": str(CARD),
        "D360_WEBHOOK_FORWARD_URL": sink.url,
    })
    wait_http(url + "/readyz", timeout=30)
    prom = prometheus(url.removeprefix("http://"))
    prom.wait_for("whatsapp_channel_info")

    deadline = time.monotonic() + DEADLINE_SECONDS
    problems = empty_or_failing(prom.url, queries)
    while problems and time.monotonic() < deadline:
        time.sleep(3)
        problems = empty_or_failing(prom.url, queries)
    assert not problems, f"{len(problems)} of {len(queries)} queries failed:\n" + "\n".join(
        problems)
