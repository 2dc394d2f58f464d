"""Spend budgets end to end: the exporter with a budgets file, polling the simulator, scraped
by a real Prometheus that loads the shipped rules file."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.simulator.fleet import build_fleet
from tests.component.test_alert_rules import PLAIN_RULES
from tests.e2e.conftest import Proc, Prometheus, base_env, free_port, prometheus_binary, wait_http
from tests.e2e.test_e2e_polling import FAST, fast_env

pytestmark = pytest.mark.e2e

Key = tuple[str, str]  # (client_id, currency)
Series = tuple[dict[str, str], list[tuple[float, float]]]


class RulingPrometheus(Prometheus):
    """Prometheus scraping one target every second and evaluating the plain rules file."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {PLAIN_RULES}\n"
            "scrape_configs:\n  - job_name: whatsapp-usage-exporter\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        data = tmp_path / "tsdb"
        data.mkdir()
        self._log = (tmp_path / "prometheus.log").open("wb")
        self.popen = subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/-/ready")

    def results(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def samples(self, selector: str, window: str) -> list[Series]:
        """The stored samples of `selector` in the last `window`, with their timestamps."""
        return [(dict(s["metric"]), [(float(t), float(v)) for t, v in s["values"]])
                for s in self.results(f"{selector}[{window}]")]

    def values(self, promql: str) -> dict[Key, float]:
        return {(s["metric"]["client_id"], s["metric"]["currency"]): float(s["value"][1])
                for s in self.results(promql)}


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[str]:
    """The simulator with the fast limits of the polling end-to-end tests."""
    args = [sys.executable, "-m", "exporter.simulator", "--host", "127.0.0.1", "--port", "0",
            "--seed", "7", "--api-key", "e2e-key", "--partner-id", "e2e_PA"]
    for kind, limit in FAST.items():
        args += [f"--limit-{kind.replace('_', '-')}", limit]
    proc = Proc(args, base_env(tmp_path), tmp_path / "sim.log")
    try:
        yield proc.read_line_with("SIMULATOR_URL=")
    finally:
        proc.stop()


def spend_at(raw: list[Series], at: float, back: int = 0) -> dict[Key, float]:
    """Per (client, currency): the sum over every cost series of its `back`-th latest sample
    at or before `at`, added up here rather than by PromQL."""
    totals: dict[Key, float] = defaultdict(float)
    for labels, points in raw:
        upto = [v for t, v in points if t <= at]
        if len(upto) > back:
            totals[(labels["client_id"], labels["currency"])] += upto[-1 - back]
    return dict(totals)


def test_budget_gauge_recording_rules_and_alerts(tmp_path, simulator_url, start_exporter):
    """The budget series carry the file's amounts; the month-to-date rule equals the cost
    series added up per client; the forecast is no lower than it; a client over a tiny default
    budget has its over-budget alert pending, and one whose budget is in another currency
    than its spend has none."""
    fleet = build_fleet(7, partner_id="e2e_PA")
    eur = next(c for c in fleet.clients if c.currency == "EUR")
    waba = fleet.clients[0].wabas[0].external_id
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(f'[default]\namount = 0.01\ncurrency = "USD"\n'
                       f'[clients.{eur.id}]\namount = 5\ncurrency = "USD"\n'
                       f'[wabas."{waba}"]\namount = 1000000\ncurrency = "USD"\n')
    _, url = start_exporter(fast_env(simulator_url) | {"D360_SPEND_BUDGETS": str(budgets)})
    wait_http(url + "/readyz", timeout=30)
    prom = RulingPrometheus(tmp_path, url.removeprefix("http://"))
    try:
        prom.wait_for("whatsapp_spend_budget")
        # Prometheus stores an empty label as no label.
        got = {(s["metric"].get("client_id", ""), s["metric"].get("waba_id", ""),
                s["metric"]["currency"]): float(s["value"][1])
               for s in prom.results("whatsapp_spend_budget")}
        assert got == {**{(c.id, "", "USD"): 0.01 for c in fleet.clients if c is not eur},
                       (eur.id, "", "USD"): 5.0, ("", waba, "USD"): 1e6}

        clients = {c.id for c in fleet.clients}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recorded = prom.values("client:whatsapp_spend:month_to_date")
            if {client for client, _ in recorded} == clients:
                break
            time.sleep(1)
        time.sleep(5)  # a few evaluations to compare

        raw = (prom.samples("whatsapp_cost_total", "20s")
               + prom.samples("whatsapp_call_cost_total", "20s"))
        compared = stable = 0
        for labels, points in prom.samples("client:whatsapp_spend:month_to_date", "20s"):
            key = (labels["client_id"], labels["currency"])
            for at, value in points:
                latest, before = spend_at(raw, at).get(key), spend_at(raw, at, 1).get(key)
                # A scrape that started before the evaluation may be stored after it; sums in
                # another order differ in the last bits.
                assert any(math.isclose(value, want, rel_tol=1e-12)
                           for want in (latest, before) if want is not None), (
                    key, at, value, latest, before)
                compared += 1
                stable += latest == before
        assert compared >= len(clients)
        assert stable

        forecast = prom.values("client:whatsapp_spend:month_end_forecast")
        mtd = prom.values("client:whatsapp_spend:month_to_date")
        assert forecast.keys() == mtd.keys()
        assert all(forecast[k] >= mtd[k] for k in mtd)
        assert prom.query("waba:whatsapp_spend:month_end_forecast")

        alerts = httpx.get(prom.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        over = {a["labels"]["client_id"] for a in alerts
                if a["labels"]["alertname"] == "WhatsAppSpendOverBudget"}
        assert all(a["state"] == "pending" for a in alerts
                   if a["labels"]["alertname"] == "WhatsAppSpendOverBudget")  # for: 15m
        spent_usd = {k[0] for k, v in mtd.items() if k[1] == "USD" and v > 0.01}
        assert spent_usd
        assert spent_usd - {eur.id} <= over
        assert eur.id not in over  # its spend is in EUR, its budget in USD
    finally:
        prom.stop()
