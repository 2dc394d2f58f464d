"""uvicorn servers embedded in our own event loop.

uvicorn normally owns SIGINT/SIGTERM and re-raises them after shutdown; with several servers in
one process (exporter, webhook receiver, demo simulator) that would end the process before our
own clean-up ran. Embedded servers leave signals to the process, which sets `should_exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long a client may take to send a request's headers (slow loris); bodies have their own
# limit in the webhook receiver.
HEADER_TIMEOUT_SECONDS = 10.0
MAX_HEAD_BYTES = 64 * 1024  # request line and headers; h11 allows 16 KiB, proxies more


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser; about twice the requests per second of h11,
    and it writes a body without copying it) with two guards it lacks: uvicorn arms no timer
    before a connection's first response and data cancels its keep-alive timer, so a client
    trickling request headers could hold a connection for ever; and httptools sets no limit
    on the size of a request's head. Here every request's headers must be complete within
    `HEADER_TIMEOUT_SECONDS` of the connection opening or of the previous response, and within
    `MAX_HEAD_BYTES`."""

    _deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self._deadline is not None
        if waiting:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still no complete head after this much: refuse (the parser has it buffered).
        if (waiting and self._deadline is not None and self._head_bytes > MAX_HEAD_BYTES
                and not self.transport.is_closing()):
            self._disarm()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
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
        timeout_graceful_shutdown=5, http=GuardedHttpToolsProtocol))


def open_connections(server: uvicorn.Server) -> Callable[[], int]:
    """How many connections `server` has open, at any moment."""
    connections = server.server_state.connections
    return lambda: len(connections)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so the caller knows the port before serving (port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then,
    # and without it a response's head and body wait on delayed ACKs (about 40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
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
