"""The main process's side of the webhook workers (`exporter.webhooks.worker`): starts them on
the bound webhook socket, counts and records the batches they send, answers them, and starts a
worker again if it dies.

Batches are counted with `WebhookState.accept_many`, as the in-process receiver's are: the
dedupe look-ups, the counters and the commit stay here, in one process, so two workers can
never both count a delivery that Meta sent twice at once. Batches that arrived while the last
commit ran (from any worker) share the next one: when this process is busy, commits grow
instead of queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter

from exporter.webhooks.parser import Delivery
from exporter.webhooks.receiver import RESULTS, Folding
from exporter.webhooks.state import WebhookState
from exporter.webhooks.worker import WorkerConfig, frame, read_frame

log = structlog.get_logger("exporter.webhooks")

RESTART_DELAY_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 8.0  # a worker's own graceful shutdown takes up to 5 s


class WorkerPool:
    def __init__(self, state: WebhookState, config: WorkerConfig, listener: socket.socket,
                 requests_total: Counter, *, workers: int, now: Callable[[], float],
                 on_accept: Callable[[], None] = lambda: None,
                 restarts_total: Counter | None = None) -> None:
        self._state = state
        self._config = config
        self._listener = listener
        self._workers = workers
        self._now = now
        self._on_accept = on_accept
        self._counted = {result: requests_total.labels(result) for result in RESULTS}
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._links: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[asyncio.StreamWriter, int, list[Delivery]]] = []
        self._stopping = False
        self._restarts_total = restarts_total
        self.restarts = 0
        self._folding = Folding(state, now)

    async def start(self) -> None:
        for index in range(self._workers):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        mine, theirs = socket.socketpair()
        fds = (self._listener.fileno(), theirs.fileno())
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "exporter.webhooks.worker", *map(str, fds), pass_fds=fds)
        except BaseException:
            mine.close()  # else every failed start, tried again each second, leaks a descriptor
            raise
        finally:
            theirs.close()
        self._procs[index] = proc
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        writer.write(frame(self._config))
        task = asyncio.create_task(self._serve(index, proc, reader, writer),
                                   name=f"webhook-worker-{index}")
        self._links.add(task)
        task.add_done_callback(self._links.discard)

    async def _serve(self, index: int, proc: asyncio.subprocess.Process,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unreadable = False
        try:
            while True:
                self._take(writer, await read_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited: its link closed
        except Exception:  # a frame we cannot read or use: that worker is started afresh
            log.exception("webhook_worker_link_failed", worker=index)
            unreadable = True
        finally:
            writer.close()
        if unreadable:
            # Its link closed, the worker answers its waiting requests 503 (Meta retries them)
            # and exits; killed at once, it would drop them unanswered.
            await _exit_or_kill([proc])
        code = await proc.wait()
        if self._stopping:
            return
        log.warning("webhook_worker_exited", worker=index, code=code,
                    note=f"starting it again in {RESTART_DELAY_SECONDS:g} s")
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            if self._stopping:
                return
            self.restarts += 1
            if self._restarts_total is not None:
                self._restarts_total.inc()
            try:
                await self._spawn(index)
            except OSError:  # no process could be started (out of memory, say): try again
                log.exception("webhook_worker_start_failed", worker=index)
            else:
                return

    def _take(self, writer: asyncio.StreamWriter, message: Any) -> None:
        """One frame from a worker: a batch to commit, or results to count. Anything else
        raises, and that worker is started afresh."""
        if message[0] == "batch":
            _, batch_id, deliveries, results = message
            # Checked here, not in the commit: there it would fail the batches of every worker
            # sharing that commit.
            if not all(type(d) is Delivery for d in deliveries):
                raise TypeError("a batch holds something other than deliveries")
            self._count(results)
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._commit)
            self._pending.append((writer, batch_id, deliveries))
        elif message[0] == "results":
            self._count(message[1])
        else:  # ignored, a batch's requests would wait for an answer that never comes
            raise ValueError(f"unexpected frame {message[0]!r}")

    def _commit(self) -> None:
        pending, self._pending = self._pending, []
        everything = [d for _, _, deliveries in pending for d in deliveries]
        fresh: list[bool] | None = None
        error = ""
        try:
            fresh = self._state.accept_many(everything, self._now())
        except Exception as exc:  # the store failed: the workers answer 503, Meta retries
            log.exception("webhook_record_failed")
            error = f"{type(exc).__name__}: {exc}"[:300]
        start = 0
        for writer, batch_id, deliveries in pending:
            part = None if fresh is None else fresh[start:start + len(deliveries)]
            start += len(deliveries)
            if not writer.is_closing():  # else that worker died; Meta retries its requests
                writer.write(frame(("answer", batch_id, part, error)))
        if fresh is not None and any(fresh):
            self._on_accept()
        self._folding.committed()

    def _count(self, results: dict[str, int]) -> None:
        for result, n in results.items():
            counter = self._counted.get(result)
            if counter is not None:
                counter.inc(n)

    async def stop(self) -> None:
        """Workers finish the requests they hold (their batches are still answered here),
        then exit; any still running after `STOP_TIMEOUT_SECONDS` are killed."""
        self._stopping = True
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        await _exit_or_kill(procs)
        for task in list(self._links):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _exit_or_kill(procs: list[asyncio.subprocess.Process]) -> None:
    """Give workers `STOP_TIMEOUT_SECONDS` to finish what they hold and exit; kill the rest."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
            await asyncio.gather(*(proc.wait() for proc in procs))
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                log.warning("webhook_worker_killed", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(proc.wait() for proc in procs))
