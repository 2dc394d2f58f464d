"""The examples/ files, each checked with its own tool: the Prometheus configurations with
promtool, the compose file with docker-compose and against the files it mounts, and
examples/run-local.sh run as a user would: its Prometheus scrapes the demo, loads every shipped
alert rule and answers each of the README's queries with data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import tools
from tests.e2e.conftest import free_port, wait_http
from tests.unit.test_readme import readme_queries

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RULES = ROOT / "helm" / "whatsapp-usage-exporter-alerts.rules.yaml"
COMPOSE_RULES = "/etc/prometheus/rules/whatsapp-usage-exporter-alerts.rules.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def promtool_check_config(config: Path) -> None:
    result = subprocess.run([tools.binary("promtool"), "check", "config", str(config)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout


def test_local_prometheus_config_passes_promtool() -> None:
    """examples/prometheus.yml is valid and finds the shipped rules file (promtool checks it
    too)."""
    promtool_check_config(EXAMPLES / "prometheus.yml")


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """The compose network's Prometheus configuration is valid once its rules path is where the
    compose file mounts the rules."""
    config = tmp_path / "prometheus.yml"
    text = (EXAMPLES / "compose" / "prometheus.yml").read_text(encoding="utf-8")
    assert COMPOSE_RULES in text
    config.write_text(text.replace(COMPOSE_RULES, str(RULES)), encoding="utf-8")
    promtool_check_config(config)


def test_scrape_job_is_the_one_the_down_alert_watches() -> None:
    """Both configurations name their job so that WhatsAppExporterDown's selector matches it,
    and scrape one exporter target."""
    rule = next(r for group in load(RULES)["groups"] for r in group["rules"]
                if r.get("alert") == "WhatsAppExporterDown")
    pattern = re.search(r'job=~"([^"]+)"', rule["expr"])
    assert pattern
    for config in (EXAMPLES / "prometheus.yml", EXAMPLES / "compose" / "prometheus.yml"):
        (job,) = load(config)["scrape_configs"]
        assert re.fullmatch(pattern.group(1), job["job_name"]), config
        (static,) = job["static_configs"]
        assert len(static["targets"]) == 1


def test_compose_file_is_valid() -> None:
    """docker-compose accepts examples/compose.yaml (its own schema, no Docker daemon)."""
    result = subprocess.run([tools.binary("docker-compose"), "-f", "compose.yaml", "config",
                             "-q"], cwd=EXAMPLES, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (EXAMPLES / source).resolve()
    return mounts


def test_compose_mounts_and_addresses_agree() -> None:
    """Every file the compose file mounts exists, each service finds the others where their
    configurations say, and Grafana's provisioning reads the dashboards where they are mounted."""
    compose = load(EXAMPLES / "compose.yaml")
    services = compose["services"]
    assert (EXAMPLES / services["exporter"]["build"]["context"]
            / services["exporter"]["build"]["dockerfile"]).is_file()
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), (name, target, source)

    prometheus = bind_mounts(services["prometheus"])
    config_path = next(arg.split("=", 1)[1] for arg in services["prometheus"]["command"]
                       if arg.startswith("--config.file="))
    config = load(prometheus[config_path])
    assert prometheus[COMPOSE_RULES] == RULES
    assert config["rule_files"] == [COMPOSE_RULES]
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "exporter"
    assert f"{port}:{port}" in services["exporter"]["ports"][0]

    grafana = bind_mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    (source,) = load(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    (provider,) = load(provisioning / "dashboards" / "whatsapp.yaml")["providers"]
    dashboards = grafana[provider["options"]["path"]]
    assert dashboards == ROOT / "grafana"
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "exporter-health.json", "usage-costs.json", "voice-calls.json"]
    home = Path(services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (dashboards / home.relative_to(provider["options"]["path"])).is_file()


def listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.TransportError:
        return False
    return True


def test_run_local_shows_the_demo_in_prometheus(tmp_path: Path) -> None:
    """examples/run-local.sh starts the demo and Prometheus together: Prometheus loads every
    shipped alert rule, scrapes the demo, and answers each README query with data; a SIGTERM
    stops both."""
    ports = {"EXPORTER_PORT": free_port(), "WEBHOOK_PORT": free_port(),
             "PROMETHEUS_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("D360_")}
    env |= {name: str(port) for name, port in ports.items()}
    env |= {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
            "PROMETHEUS": tools.binary("prometheus"), "RUN_DIR": str(tmp_path / "run"),
            "D360_API_KEY": "the-script-runs-the-demo-whatever-the-shell-holds"}
    log = (tmp_path / "run-local.out").open("wb")
    script = subprocess.Popen([str(EXAMPLES / "run-local.sh")], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    prom = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    try:
        wait_http(prom + "/-/ready", timeout=60)
        rules = httpx.get(prom + "/api/v1/rules").json()["data"]["groups"]
        shipped = load(RULES)["groups"]
        assert sorted(g["name"] for g in rules) == sorted(g["name"] for g in shipped)
        assert sum(len(g["rules"]) for g in rules) == sum(len(g["rules"]) for g in shipped)

        queries = dict(readme_queries())
        empty = set(queries)
        deadline = time.monotonic() + 120
        while empty and time.monotonic() < deadline:
            for question in sorted(empty):
                r = httpx.get(prom + "/api/v1/query", params={"query": queries[question]})
                body = r.json()
                assert body["status"] == "success", (question, body)
                if body["data"]["result"]:
                    empty.discard(question)
            time.sleep(2)
        assert not empty, [queries[q] for q in empty]
        up = httpx.get(prom + "/api/v1/query", params={
            "query": 'up{job="whatsapp-usage-exporter"}'}).json()["data"]["result"]
        assert [sample["value"][1] for sample in up] == ["1"]
    finally:
        script.send_signal(signal.SIGTERM)
        try:
            code = script.wait(30)
        except subprocess.TimeoutExpired:  # leave nothing running, then fail
            os.killpg(script.pid, signal.SIGKILL)
            code = script.wait(5)
        log.close()
    output = (tmp_path / "run-local.out").read_text()
    assert code == 143, output
    assert f"http://localhost:{ports['PROMETHEUS_PORT']}" in output
    assert not any(listening(port) for port in ports.values())
    assert '"exporter_stopped"' in (tmp_path / "run" / "exporter.log").read_text()

