"""Webhook worker processes (`D360_WEBHOOK_WORKERS`): real processes on a real socket, counting
into the main process's state exactly as the in-process receiver does."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys

import httpx
import pytest
import structlog.testing
from prometheus_client import CollectorRegistry, Counter

from exporter.serving import bind_socket, url_of
from exporter.webhooks import pool as pool_module
from exporter.webhooks.pool import WorkerPool
from exporter.webhooks.state import MESSAGES, STATUSES_METRIC, WebhookState
from exporter.webhooks.worker import WorkerConfig, read_frame
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

    def results() -> tuple[float, ...]:
        return tuple(pool.result(r) for r in ("ok", "duplicate", "unauthorized", "malformed"))

    # Each worker reports on its own every quarter second: one's report says nothing of the
    # other's, so wait for all of them.
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: results() == (60, 1, 1, 1))
    assert results() == (60, 1, 1, 1)


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
    heavy = {"exporter.polling.store", "exporter.webhooks.state", "exporter.config",
             "prometheus_client", "pydantic", "sqlite3", "httpx"}
    assert heavy.isdisjoint(loaded)


GARBAGE = b"\x00\xff not a pickle"


class GarbledLink:
    """Stands in for the pool's `read_frame`: frames pass through until `arm()`, then the pool
    reads garbage where a worker's next batch was, or right after it; or, `instead` of the batch,
    a frame that unpickles but is no frame the pool knows."""

    def __init__(self, *, after_the_batch: bool, instead: object = None) -> None:
        self._after = after_the_batch
        self._instead = instead
        self._armed = False
        self._garbled_next: asyncio.StreamReader | None = None

    def arm(self) -> None:
        self._armed = True

    async def __call__(self, reader: asyncio.StreamReader):
        if reader is self._garbled_next:
            self._garbled_next = None
            return await self._garbage()
        message = await read_frame(reader)
        if self._armed and message[0] == "batch":
            self._armed = False
            if self._instead is not None:
                return self._instead
            if not self._after:
                return await self._garbage()
            self._garbled_next = reader  # the pool holds the batch; its next frame is garbage
        return message

    @staticmethod
    async def _garbage():
        # The real decoder on bytes that are no pickle, as a corrupted link would deliver them.
        stream = asyncio.StreamReader()
        stream.feed_data(struct.pack("!I", len(GARBAGE)) + GARBAGE)
        stream.feed_eof()
        return await read_frame(stream)


@pytest.mark.parametrize(("after_the_batch", "instead", "retried"), [
    (False, None, "ok"), (True, None, "duplicate"), (False, ("hello", 1), "ok"),
    (False, ("batch", 7, ["not a delivery"], {}), "ok")],
    ids=["instead-of-the-batch", "after-the-batch", "an-unknown-frame", "a-batch-of-no-deliveries"])
async def test_an_unreadable_frame_restarts_that_worker_and_its_request_is_retried(
        pool, monkeypatch, after_the_batch, instead, retried):
    """A frame the pool cannot read or use drops that worker's link: its waiting request
    answers 503, the worker is started again, and Meta's retry and later deliveries are each
    counted once."""
    monkeypatch.setattr(pool_module, "RESTART_DELAY_SECONDS", 0.05)
    garbled = GarbledLink(after_the_batch=after_the_batch, instead=instead)
    monkeypatch.setattr(pool_module, "read_frame", garbled)
    before = dict(pool.pool._procs)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await pool.post(client, status_body("wamid.g1"))).status_code == 200
        await eventually(lambda: pool.result("ok") == 1)  # not riding on the garbled frame
        garbled.arm()
        with structlog.testing.capture_logs() as logs:
            r = await pool.post(client, status_body("wamid.g2"))
            # counted as the restart begins, replaced in `_procs` once started
            await eventually(lambda: pool.pool.restarts == 1 and pool.pool._procs != before)
        (failed,) = [e for e in logs if e["event"] == "webhook_worker_link_failed"]
        assert pool.pool._procs[failed["worker"]] is not before[failed["worker"]]
        assert pool.registry.get_sample_value("restarts_total") == 1
        assert (r.status_code, r.json()["result"]) == (503, "error")
        again = await pool.post(client, status_body("wamid.g2"))  # Meta's retry
        assert (again.status_code, again.json()["result"]) == (200, retried)
        later = await asyncio.gather(*(pool.post(client, status_body(f"wamid.g{i}"))
                                       for i in range(3, 13)))
    assert [a.status_code for a in later] == [200] * 10
    assert sum(pool.state.counters[MESSAGES].values()) == 12
    await eventually(lambda: pool.result("ok") + pool.result("duplicate") == 12)


async def test_a_worker_that_cannot_be_started_is_tried_again_until_it_serves(
        tmp_path, monkeypatch):
    """A worker whose start fails (fork refused, say) is logged and tried again, and once it
    starts it serves the deliveries, including one that waited while no worker ran."""
    p = Pool(tmp_path, workers=1)  # one worker: whatever is served, the restarted one served
    await p.pool.start()
    try:
        monkeypatch.setattr(pool_module, "RESTART_DELAY_SECONDS", 0.05)
        spawn = asyncio.create_subprocess_exec
        attempts = 0
        waiting: list[asyncio.Task[httpx.Response]] = []

        async def refused_once(*args, **kwargs):
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                # No worker runs now: this delivery waits on the pool's socket, not refused.
                waiting.append(asyncio.create_task(p.post(client, status_body("wamid.s2"))))
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            return await spawn(*args, **kwargs)

        # The pool looks it up on the asyncio module at each start.
        monkeypatch.setattr(asyncio, "create_subprocess_exec", refused_once)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await p.post(client, status_body("wamid.s1"))).status_code == 200
            with structlog.testing.capture_logs() as logs:
                os.kill(next(iter(p.pool._procs.values())).pid, signal.SIGKILL)
                await eventually(lambda: attempts == 2)
                assert (await waiting[0]).status_code == 200
            assert [e["worker"] for e in logs if e["event"] == "webhook_worker_start_failed"] == [0]
            answers = await asyncio.gather(*(p.post(client, status_body(f"wamid.s{i}"))
                                             for i in range(3, 8)))
        assert [a.status_code for a in answers] == [200] * 5
        assert sum(p.state.counters[MESSAGES].values()) == 7
    finally:
        await p.close()
