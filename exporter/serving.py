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


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def embedded_server(app: ASGIApp) -> EmbeddedServer:
    return EmbeddedServer(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=5))


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
