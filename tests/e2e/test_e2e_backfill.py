"""History from day one, through real processes: the exporter backfills the simulator's past
inside its budgets, `backfill --out` writes it, Debian's promtool makes TSDB blocks of it, and a
real Prometheus started on those blocks answers `increase(whatsapp_cost_total[1d])` for past
days with the simulator's daily truth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.backfill.plan import wanted_ranges
from exporter.calendar import DAY, month_start
from exporter.simulator.fleet import build_fleet
from exporter.simulator.traffic import usage_points
from tests import tools
from tests.e2e.conftest import ROOT, Proc, base_env, free_port, wait_http

pytestmark = pytest.mark.e2e

SIZES = (2, 1)
WINDOW = 4  # seconds: the usage budgets' window, small so the past comes in seconds
MONTHS = 1


def dashboard_expr(title: str) -> str:
    """A usage dashboard panel's query, with every filter variable set to all."""
    board = json.loads((ROOT / "grafana" / "usage-costs.json").read_text())

    def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for panel in node.get("panels", []):
            yield panel
            yield from panels(panel)

    panel = next(p for p in panels(board) if p.get("title") == title)
    expr = str(panel["targets"][0]["expr"])
    for variable in ("$client", "$waba", "$channel"):
        expr = expr.replace(variable, ".*")
    return expr


def progress(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        if family.name == "whatsapp_exporter_backfill_months":
            for s in family.samples:
                out[s.labels["state"]] = out.get(s.labels["state"], 0) + s.value
    return out


def test_backfilled_blocks_answer_past_days_with_the_simulators_truth(tmp_path: Path):
    env = base_env(tmp_path)
    sim = Proc([sys.executable, "-m", "exporter.simulator", "--port", "0", "--seed", "7",
                "--api-key", "e2e-key", "--waba-sizes", ",".join(map(str, SIZES)),
                "--limit-usage-channel", f"10/{WINDOW}", "--limit-usage-waba",
                f"200/{WINDOW}"], env, tmp_path / "sim.log")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exporter = None
    try:
        sim_url = sim.read_line_with("SIMULATOR_URL=")
        started = time.time()
        exporter = Proc([sys.executable, "-m", "exporter"], env | {
            "D360_API_URL": sim_url + "/api/v2", "D360_PARTNER_ID": "sim_PA",
            "D360_API_KEY": "e2e-key", "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "D360_LIMIT_USAGE_CHANNEL": f"10/{WINDOW}", "D360_LIMIT_USAGE_WABA": f"200/{WINDOW}",
            "D360_BACKFILL_MONTHS": str(MONTHS)}, tmp_path / "exporter.log")
        wait_http(url + "/readyz")
        deadline = time.monotonic() + 90
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            seen = progress(url)
            if seen and seen.get("done", 0) + seen.get("unavailable", 0) == seen["wanted"]:
                break
            time.sleep(0.5)
        ranges = wanted_ranges(started, MONTHS)
        n_channels = sum(SIZES)
        assert seen == {"wanted": n_channels * len(ranges), "done": n_channels * len(ranges),
                        "unavailable": 0}
        served = httpx.get(url + "/backfill")
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("application/openmetrics-text")
        assert served.text.endswith("# EOF\n")
    finally:
        if exporter is not None:
            exporter.stop()
        sim.stop()

    out = tmp_path / "history.om"
    done = subprocess.run([sys.executable, "-m", "exporter", "backfill", "--out", str(out),
                           "--label", "job=whatsapp"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{n_channels * len(ranges)} channel-months" in done.stderr
    blocks = tmp_path / "blocks"
    made = subprocess.run([tools.binary("promtool"), "tsdb", "create-blocks-from",
                           "openmetrics", str(out), str(blocks)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stdout + made.stderr

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [tools.binary("prometheus"), f"--config.file={config}",
         f"--storage.tsdb.path={blocks}", "--storage.tsdb.retention.time=10y",
         f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        prom_url = f"http://127.0.0.1:{prom_port}"
        wait_http(prom_url + "/-/ready", timeout=60)
        fleet = build_fleet(7, waba_sizes=SIZES)
        oldest = min(r.month_start for r in ranges)
        newest = max(r.end for r in ranges)
        checked = 0
        # Every past day but the first (increase needs the day before it).
        for day in range(oldest + DAY, newest, DAY):
            at = day + DAY - 1
            r = httpx.get(prom_url + "/api/v1/query", params={
                "query": 'increase(whatsapp_cost_total{job="whatsapp"}[1d])', "time": at},
                timeout=10)
            r.raise_for_status()
            got = {(s["metric"]["channel_id"], s["metric"]["category"],
                    s["metric"]["pricing_type"]): float(s["value"][1])
                   for s in r.json()["data"]["result"]}
            want: dict[tuple[str, str, str], Decimal] = {}
            for ch in fleet.channels():
                pricing, _ = usage_points(fleet.seed, ch, day, day + DAY - 1, day + DAY,
                                          "DAILY")
                for p in pricing:
                    key = (ch.id, p.category.lower(), p.pricing_type.lower())
                    want[key] = want.get(key, Decimal(0)) + p.cost
            for key, amount in want.items():
                assert got.get(key, 0.0) == pytest.approx(float(amount), rel=1e-9,
                                                          abs=1e-9), (day, key)
                checked += 1
            assert all(v == pytest.approx(0.0, abs=1e-9) for k, v in got.items()
                       if k not in want), day
        assert checked > 100

        # The dashboard's month-to-date panel shows the past: at noon of a past day, its query
        # gives the month's spend up to the end of the day before, as the simulator has it.
        expr = dashboard_expr("Month-to-date cost")
        # Not a month's first day: there the day before's sample, the last within the panel's
        # day, is the month before's total (each month's peak, as the panel says).
        late = newest - 3 * DAY
        if month_start(late) == late:
            late -= DAY
        for day in (oldest + 5 * DAY, late):
            r = httpx.get(prom_url + "/api/v1/query",
                          params={"query": expr, "time": day + DAY // 2}, timeout=10)
            r.raise_for_status()
            result = r.json()["data"]["result"]
            month = month_start(day)
            total = Decimal(0)
            for ch in fleet.channels():
                pricing, _ = usage_points(fleet.seed, ch, month, day - 1, day, "DAILY")
                total += sum((p.cost for p in pricing), Decimal(0))
            assert [float(x["value"][1]) for x in result] == [
                pytest.approx(float(total), rel=1e-9)], day
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()
