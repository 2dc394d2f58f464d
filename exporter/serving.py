"""uvicorn servers embedded in our own event loop.

uvicorn normally owns SIGINT/SIGTERM and re-raises them after shutdown; with several servers in
one process (exporter, webhook receiver, demo simulator) that would end the process before our
own clean-up ran. Embedded servers leave signals to the process, which sets `should_exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

# How long a client may take to send a request's headers (slow loris); bodies have their own
# limit in the webhook receiver.
HEADER_TIMEOUT_SECONDS = 10.0


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn arms no timer before a connection's first response, and data cancels its
    keep-alive timer: a client trickling request headers could hold a connection for ever.
    Here every request's headers must be complete within `HEADER_TIMEOUT_SECONDS` of the
    connection opening or of the previous response."""

    _deadline: asyncio.TimerHandle | None = None
    _seen: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen:  # headers complete
            self._seen = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def embedded_server(app: ASGIApp) -> EmbeddedServer:
    return EmbeddedServer(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=5, http=HeaderDeadlineH11Protocol))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so the caller knows the port before serving (port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then,
    # and without it a response's head and body wait on delayed ACKs (about 40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel background tasks and wait until each has finished unwinding."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
