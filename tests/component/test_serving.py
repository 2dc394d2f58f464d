"""The embedded HTTP servers cut off clients that trickle their request headers (slow loris)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from exporter import serving


@pytest.fixture
async def server(monkeypatch):
    monkeypatch.setattr(serving, "HEADER_TIMEOUT_SECONDS", 0.5)

    async def hello(_):
        return PlainTextResponse("hi")

    sock = serving.bind_socket("127.0.0.1", 0)
    srv = serving.embedded_server(Starlette(routes=[Route("/", hello)]))
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    srv.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closed the connection (EOF, or a reset seen while writing)."""
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(), timeout=limit)
    except ConnectionError:
        data = b""
    assert data == b""
    return time.monotonic() - started


async def test_unfinished_headers_are_cut_off(server):
    """A connection whose headers never finish is closed after the header timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    assert await closed_after(reader, 5) < 2
    writer.close()


async def test_a_kept_alive_connection_gets_the_same_deadline_per_request(server):
    """After a full exchange, a second request trickled on the same connection is cut off too,
    while a prompt client is served normally."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"hi"), timeout=5)
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        for _ in range(20):  # a byte at a time, faster than the keep-alive timeout
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.1)
    await closed_after(reader, 5)
    assert time.monotonic() - started < 1.5
    writer.close()


async def test_an_endless_request_head_is_refused(server):
    """httptools buffers a head of any size; past MAX_HEAD_BYTES the server answers 431 and
    closes, while a normal request with a body larger than that limit is served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with contextlib.suppress(ConnectionError):
        for _ in range(serving.MAX_HEAD_BYTES // 1000 + 2):
            writer.write(b"X-Filler: " + b"a" * 988 + b"\r\n")
            await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    assert answer.startswith(b"HTTP/1.1 431")
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    body = b"b" * (2 * serving.MAX_HEAD_BYTES)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 405")  # served (the route takes GET only), not refused
    writer.close()


def test_the_installed_uvicorn_is_within_the_bound_the_guards_were_checked_on() -> None:
    """serving.py subclasses uvicorn's private httptools protocol, so pyproject.toml bounds
    uvicorn from above and the installed release lies within that bound."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (uvicorn,) = [r for r in map(Requirement, dependencies) if r.name == "uvicorn"]
    assert any(spec.operator == "<" for spec in uvicorn.specifier)
    assert uvicorn.specifier.contains(metadata.version("uvicorn"))
