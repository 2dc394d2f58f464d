"""Real processes on 127.0.0.1: the simulator, the exporter, and Debian's Prometheus."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import tools

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=self._out, cwd=log.parent)

    def read_line_with(self, prefix: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        os.set_blocking(self.popen.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.popen.stdout.read()
            if chunk:
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line[len(prefix):].strip()
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} line; log:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._out.close()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return int(self.popen.returncode)


def wait_http(url: str, timeout: float = 20, ok: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == ok:
                return r
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} not {ok} within {timeout}s (last: {last})")


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("D360_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["D360_STATE_PATH"] = str(tmp_path / "state.sqlite3")
    env["D360_LOG_FORMAT"] = "json"
    return env


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    proc = Proc([sys.executable, "-m", "exporter.simulator", "--host", "127.0.0.1", "--port", "0",
                 "--seed", "7", "--api-key", "e2e-key"], base_env(tmp_path), tmp_path / "sim.log")
    try:
        yield proc.read_line_with("SIMULATOR_URL=")
    finally:
        proc.stop()


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[object]:
    procs: list[Proc] = []

    def start(env_extra: dict[str, str], args: tuple[str, ...] = ()) -> tuple[Proc, str]:
        port = free_port()
        env = base_env(tmp_path) | env_extra
        env["D360_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"
        proc = Proc([sys.executable, "-m", "exporter", *args], env,
                    tmp_path / f"exporter-{len(procs)}.log")
        procs.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.stop()


def prometheus_binary() -> str:
    return tools.binary("prometheus")


class Prometheus:
    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = prometheus_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: whatsapp\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        data = tmp_path / "tsdb"
        data.mkdir()
        self._log = (tmp_path / "prometheus.log").open("wb")
        self.popen = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/-/ready")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, object]]:
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at  # one instant for several queries: a consistent view
        r = httpx.get(self.url + "/api/v1/query", params=params, timeout=5)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, object]]:
        """Prometheus takes a few seconds to hold its first sample: poll, do not sleep."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {promql!r} within {timeout}s")

    def stop(self) -> None:
        self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        if self.popen.poll() is None:
            self.popen.kill()
        self._log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[object]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        p = Prometheus(tmp_path, target)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def assert_matches_truth(sim_url: str, channel_id: str, fetched_at: float,
                         got: dict[tuple[str, str], float]) -> None:
    """The exporter's message counters for a channel equal the simulator's truth at the moment
    it answered. That moment lies between the exporter's fetch time and the end of that second
    (the request asks for data up to `end_date = int(now)`, inclusive to the second), so each
    counter must lie between the truth at those two instants."""
    bounds = []
    for at in (fetched_at, int(fetched_at) + 1):
        truth = httpx.get(sim_url + "/_sim/truth",
                          params={"channel_id": channel_id, "at": at}).json()
        bounds.append({(m["category"], m["pricing_type"]): float(m["volume"])
                       for m in truth["messages"]})
    low, high = bounds
    got = {k: v for k, v in got.items() if v}
    assert set(got) <= set(high), channel_id
    for key in high:
        assert low.get(key, 0.0) <= got.get(key, 0.0) <= high[key], (channel_id, key, got, low)
