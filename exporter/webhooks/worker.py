"""A webhook worker process: the HTTP side of the receiver on a core of its own.

With `D360_WEBHOOK_WORKERS` above 0, the main process binds the webhook socket and starts that
many of these (`python -m exporter.webhooks.worker LISTEN_FD LINK_FD`), all accepting on the
same socket. Each runs the same `WebhookReceiver`: reads, authenticates and parses a request,
answers every 4xx itself, and sends what it accepted to the main process in batches over its
link (a socketpair). The main process counts and records each batch in one commit, as the
receiver does in process, and answers which deliveries were new; only then do their 200s go.
So the counting, the dedupe keys and every counter stay in one process, and what the workers
take off it is the HTTP stack, about half of what a webhook cost it.

Frames on the link are a 4-byte length and a pickle. Both ends are this program, started by
the main process over a socketpair nobody else holds, so pickle's trust in its input holds.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import pickle
import signal
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog

from exporter.logging import configure
from exporter.serving import embedded_server, open_connections
from exporter.webhooks.parser import Delivery
from exporter.webhooks.receiver import Gathering, Waiting, WebhookAuth, WebhookReceiver

log = structlog.get_logger("exporter.webhooks")

_LENGTH = struct.Struct("!I")
RESULTS_EVERY_SECONDS = 0.25  # how often a worker reports its requests' results


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs of the settings, sent as its link's first frame (secrets included:
    never on its command line, where `ps` shows them)."""

    header: str
    secret: str | None
    hmac_secret: str | None
    max_body_bytes: int
    read_timeout_seconds: float
    forward_headers: tuple[str, ...] | None
    log_format: str
    log_level: str
    secrets: tuple[str, ...] = ()


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - our own process, see above


class RecordFailed(Exception):
    """The main process could not record a batch (its store failed), or is gone."""


GONE = "the exporter's main process is gone"


class RemoteCommit(Gathering):
    """A worker's recorder: the deliveries accepted within 5 ms of each other go to the main
    process as one batch, and each request waits for its batch's answer. Request results are
    tallied here and sent along with the batches, and every quarter second."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._writer = writer
        self._sent: dict[int, list[asyncio.Future[bool]]] = {}
        self._ids = itertools.count()
        self._results: Counter[str] = Counter()
        self.gone = False

    async def append(self, delivery: Delivery) -> bool:
        if self.gone:
            raise RecordFailed(GONE)
        return await super().append(delivery)

    def count(self, result: str) -> None:
        self._results[result] += 1

    def _flush(self, batch: Waiting) -> None:
        if self.gone:
            self.fail([done for _, done in batch], RecordFailed(GONE))
            return
        batch_id = next(self._ids)
        self._sent[batch_id] = [done for _, done in batch]
        self._writer.write(frame(("batch", batch_id, [d for d, _ in batch], self._take())))

    def send_results(self) -> None:
        if self._results and not self.gone:
            self._writer.write(frame(("results", self._take())))

    def _take(self) -> dict[str, int]:
        results, self._results = dict(self._results), Counter()
        return results

    def answered(self, batch_id: int, fresh: list[bool] | None, error: str) -> None:
        waiting = self._sent.pop(batch_id, [])
        if fresh is None:
            self.fail(waiting, RecordFailed(error))
        else:
            self.answer(waiting, fresh)

    def lost(self) -> None:
        """The link closed: every request still waiting answers 503 (Meta retries it)."""
        self.gone = True
        for waiting in self._sent.values():
            self.fail(waiting, RecordFailed(GONE))
        self._sent.clear()
        self.fail([done for _, done in self._waiting], RecordFailed(GONE))
        self._waiting = []


async def run(listen_fd: int, link_fd: int) -> None:
    listener = socket.socket(fileno=listen_fd)
    listener.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=link_fd))
    config: WorkerConfig = await read_frame(reader)
    configure(config.log_format, config.log_level, config.secrets)
    recorder = RemoteCommit(writer)
    auth = WebhookAuth(header=config.header, secret=config.secret, hmac_secret=config.hmac_secret)
    app = WebhookReceiver(recorder, auth, recorder.count, now=time.time,
                          max_body_bytes=config.max_body_bytes,
                          read_timeout_seconds=config.read_timeout_seconds,
                          forward_headers=config.forward_headers, on_accept=lambda: None)
    server = embedded_server(app)
    app.watch(open_connections(server))
    # What is loaded by now lives as long as the worker: out of the collections, which walked
    # it all (full passes of 14 to 22 ms with requests waiting; 0.6 s a minute in all at
    # 2,000 requests a second over two workers, 20 ms with the freeze).
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))

    async def answers() -> None:
        try:
            while True:
                kind, *rest = await read_frame(reader)
                if kind == "answer":
                    recorder.answered(*rest)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the main process ended (or was killed): nothing can be recorded any more
        except Exception:  # an answer we cannot read: end, and the main process starts anew
            log.exception("webhook_worker_link_failed")
        recorder.lost()
        server.should_exit = True

    async def report() -> None:
        while True:
            await asyncio.sleep(RESULTS_EVERY_SECONDS)
            recorder.send_results()

    tasks = [asyncio.create_task(answers()), asyncio.create_task(report())]
    try:
        await server.serve(sockets=[listener])
    finally:
        recorder.send_results()
        for task in tasks:
            task.cancel()
        if not recorder.gone:
            try:
                await writer.drain()
                writer.close()
            except ConnectionError:
                pass


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: python -m exporter.webhooks.worker LISTEN_FD LINK_FD "
                         "(started by the exporter when D360_WEBHOOK_WORKERS > 0)")
    asyncio.run(run(int(argv[1]), int(argv[2])))


if __name__ == "__main__":
    main(sys.argv)
