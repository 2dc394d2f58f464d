"""Gathering deliveries into one commit: the window, and handing a batch on at once when every
open connection waits on it (nothing more can arrive before it is answered)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest

from exporter import serving
from exporter.webhooks.parser import Delivery
from exporter.webhooks.receiver import Gathering, GroupCommit, Waiting

from .webhooks_kit import SECRET, Receiver, status_body


class Batches(Gathering):
    """Answers every delivery as new and remembers the batch sizes."""

    def __init__(self, window: float) -> None:
        super().__init__()
        self.WINDOW_SECONDS = window
        self.sizes: list[int] = []

    def _flush(self, batch: Waiting) -> None:
        self.sizes.append(len(batch))
        self.answer([done for _, done in batch], [True] * len(batch))


def delivery(n: int) -> Delivery:
    return Delivery(b"{}", float(n), [], None)


async def test_without_watching_a_batch_waits_out_the_window() -> None:
    batches = Batches(window=0.2)
    started = time.monotonic()
    answers = await asyncio.gather(batches.append(delivery(1)), batches.append(delivery(2)))
    assert list(answers) == [True, True]
    assert time.monotonic() - started >= 0.19
    assert batches.sizes == [2]


async def test_a_batch_holding_every_open_connection_goes_at_once() -> None:
    batches = Batches(window=60)
    batches.watch(lambda: 2)
    answers = await asyncio.wait_for(
        asyncio.gather(batches.append(delivery(1)), batches.append(delivery(2))), 5)
    assert list(answers) == [True, True]
    assert batches.sizes == [2]


async def test_a_batch_waits_while_a_connection_may_still_send() -> None:
    batches = Batches(window=60)
    batches.watch(lambda: 3)
    first = [asyncio.ensure_future(batches.append(delivery(n))) for n in (1, 2)]
    done, _ = await asyncio.wait(first, timeout=0.1)
    assert not done
    assert batches.sizes == []
    assert await asyncio.wait_for(batches.append(delivery(3)), 5) is True
    assert [task.result() for task in first] == [True, True]
    assert batches.sizes == [3]


async def test_the_timer_of_a_batch_handed_on_early_does_not_flush_the_next_one() -> None:
    open_now = 1
    batches = Batches(window=0.2)
    batches.watch(lambda: open_now)
    assert await batches.append(delivery(1)) is True  # alone: at once, its timer never set
    open_now = 2
    first = asyncio.ensure_future(batches.append(delivery(2)))
    await asyncio.sleep(0.1)
    assert not first.done()  # the second connection may still send
    assert await asyncio.wait_for(first, 5) is True
    assert batches.sizes == [1, 1]


@pytest.fixture
async def served(tmp_path, monkeypatch):
    """The real receiver and state on an embedded server, with a window no test waits out."""
    monkeypatch.setattr(GroupCommit, "WINDOW_SECONDS", 60.0)
    receiver = Receiver(tmp_path)
    sock = serving.bind_socket("127.0.0.1", 0)
    server = serving.embedded_server(receiver.app)
    receiver.app.watch(serving.open_connections(server))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    yield receiver, f"http://127.0.0.1:{sock.getsockname()[1]}/webhook"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task
    receiver.state.close()


async def test_one_sender_on_one_connection_is_answered_without_the_window(served) -> None:
    """A sender that waits for each answer on its one connection: every delivery is committed
    and answered as it comes, not after the window (60 s here)."""
    receiver, url = served
    headers = {"Content-Type": "application/json", "X-Webhook-Secret": SECRET}
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:
        for n in range(3):
            response = await client.post(url, headers=headers, content=json.dumps(
                status_body(wamid=f"wamid.batching.{n}")).encode())
            assert response.status_code == 200
            assert response.json() == {"result": "ok"}
    assert receiver.requests.labels("ok")._value.get() == 3
    assert receiver.state.counters  # counted, in the commit each answer waited for


async def test_two_connections_share_a_commit(served) -> None:
    """Two senders with a request each: the first waits for the second, then both go."""
    receiver, url = served
    headers = {"Content-Type": "application/json", "X-Webhook-Secret": SECRET}
    async with httpx.AsyncClient(timeout=5) as one, httpx.AsyncClient(timeout=5) as two:
        await asyncio.gather(one.get(url.replace("/webhook", "/nowhere")),
                             two.get(url.replace("/webhook", "/nowhere")))  # both open
        first = asyncio.ensure_future(one.post(url, headers=headers, content=json.dumps(
            status_body(wamid="wamid.batching.a")).encode()))
        await asyncio.sleep(0.2)
        assert not first.done()
        second = await two.post(url, headers=headers, content=json.dumps(
            status_body(wamid="wamid.batching.b")).encode())
        assert second.status_code == 200
        assert (await first).status_code == 200
    assert receiver.requests.labels("ok")._value.get() == 2
