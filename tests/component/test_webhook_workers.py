"""Webhook worker processes (`D360_WEBHOOK_WORKERS`): real processes on a real socket, counting
into the main process's state exactly as the in-process receiver does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter.serving import bind_socket, url_of
from exporter.webhooks.pool import WorkerPool
from exporter.webhooks.state import MESSAGES, STATUSES_METRIC, WebhookState
from exporter.webhooks.worker import WorkerConfig
from tests.component.webhooks_kit import KNOWN, SECRET, status_body


class Pool:
    def __init__(self, tmp_path, workers: int = 2) -> None:
        self.state = WebhookState(tmp_path / "state.sqlite3", channel_of=KNOWN.get)
        self.registry = CollectorRegistry()
        self.requests = Counter("r", "r", ["result"], registry=self.registry)
        self.socket = bind_socket("127.0.0.1", 0)
        self.accepted = 0
        config = WorkerConfig(header="X-Webhook-Secret", secret=SECRET, hmac_secret=None,
                              max_body_bytes=64 * 1024, read_timeout_seconds=5.0,
                              forward_headers=None, log_format="json", log_level="warning")
        self.restarts = Counter("restarts", "r", registry=self.registry)
        self.pool = WorkerPool(self.state, config, self.socket, self.requests, workers=workers,
                               now=lambda: 1_751_371_300.0, on_accept=self._accepted,
                               restarts_total=self.restarts)
        self.url = url_of(self.socket) + "/webhook"

    def _accepted(self) -> None:
        self.accepted += 1

    def result(self, name: str) -> float:
        return self.registry.get_sample_value("r_total", {"result": name}) or 0

    async def post(self, client: httpx.AsyncClient, body: object, secret: str = SECRET,
                   raw: bytes | None = None) -> httpx.Response:
        return await client.post(self.url, content=raw if raw is not None else json.dumps(
            body).encode(), headers={"Content-Type": "application/json",
                                     "X-Webhook-Secret": secret})

    async def close(self) -> None:
        await self.pool.stop()
        self.socket.close()
        self.state.close()


@pytest.fixture
async def pool(tmp_path):
    p = Pool(tmp_path)
    await p.pool.start()
    yield p
    await p.close()


async def eventually(check, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the checks read state, not events
            await asyncio.sleep(0.05)


async def test_workers_count_once_and_answer_every_result(pool):
    """Concurrent deliveries through two workers: each counted once in the main process (a
    retry answered `duplicate` wherever it lands), bad ones refused by the worker, and every
    request's result reaches the main process's counter."""
    async with httpx.AsyncClient(timeout=10) as client:
        answers = await asyncio.gather(*(pool.post(client, status_body(f"wamid.w{i}"))
                                         for i in range(60)))
        assert [a.status_code for a in answers] == [200] * 60
        assert {a.json()["result"] for a in answers} == {"ok"}
        again = await pool.post(client, status_body("wamid.w7"))
        assert again.json() == {"result": "duplicate"}
        assert (await pool.post(client, status_body(), secret="wrong")).status_code == 401
        bad = await pool.post(client, None, raw=b"{not json")
        assert (bad.status_code, bad.json()["result"]) == (400, "malformed")
    assert sum(pool.state.counters[MESSAGES].values()) == 60
    assert sum(pool.state.counters[STATUSES_METRIC].values()) == 60
    assert pool.accepted >= 1
    await eventually(lambda: pool.result("malformed") == 1)  # reported every quarter second
    assert (pool.result("ok"), pool.result("duplicate"), pool.result("unauthorized")) == (
        60, 1, 1)


async def test_a_killed_worker_is_started_again_and_nothing_is_lost(pool):
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await pool.post(client, status_body("wamid.k1"))).status_code == 200
        victim = next(iter(pool.pool._procs.values()))
        os.kill(victim.pid, signal.SIGKILL)
        await eventually(lambda: pool.pool.restarts == 1)
        assert pool.registry.get_sample_value("restarts_total") == 1
        # Whichever worker takes them, later deliveries are counted.
        answers = await asyncio.gather(*(pool.post(client, status_body(f"wamid.k{i}"))
                                         for i in range(2, 30)))
    assert [a.status_code for a in answers] == [200] * 28
    assert sum(pool.state.counters[MESSAGES].values()) == 29


async def test_a_failing_store_answers_503_and_counts_nothing(pool, monkeypatch):
    def broken(deliveries, now):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(pool.state, "accept_many", broken)
    async with httpx.AsyncClient(timeout=10) as client:
        r = await pool.post(client, status_body("wamid.f1"))
        assert (r.status_code, r.json()["result"]) == (503, "error")
        monkeypatch.undo()
        r = await pool.post(client, status_body("wamid.f1"))  # Meta's retry
        assert r.json()["result"] == "ok"
    assert sum(pool.state.counters[MESSAGES].values()) == 1
    await eventually(lambda: pool.result("error") == 1)


async def test_stopping_ends_the_workers(tmp_path):
    p = Pool(tmp_path, workers=1)
    await p.pool.start()
    procs = list(p.pool._procs.values())
    await p.close()
    assert all(proc.returncode is not None for proc in procs)
    assert p.pool.restarts == 0


def test_a_worker_loads_only_the_http_side() -> None:
    """Each worker is a whole Python process: it must not load the store, the settings or the
    metrics library it never uses (about 15 MB each)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, exporter.webhooks.worker; print(*sys.modules)"],
        capture_output=True, text=True, check=True).stdout.split()
    heavy = {"exporter.store", "exporter.webhooks.state", "exporter.config", "prometheus_client",
             "pydantic", "sqlite3", "httpx"}
    assert heavy.isdisjoint(loaded)
