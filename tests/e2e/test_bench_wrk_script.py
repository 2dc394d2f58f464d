"""bench/webhook.lua, the saturation benchmark's generator, run by the real wrk: every request
it makes must carry a valid HMAC-SHA256 of its body (its SHA-256 is hand-written in Lua), be
a status webhook the exporter's parser reads, and name a message no other request named."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from exporter.webhooks.parser import StatusEvent, parse
from tests import tools

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "webhook.lua"
SECRET = b"a secret longer than sixty-four bytes, so the script hashes the key first: ........"


def _server(seen: list[tuple[bytes, str]]) -> Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A keep-alive HTTP/1.1 server that answers 200 to everything and keeps each body with
    its signature header."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
                body = await reader.readexactly(int(fields["content-length"]))
                seen.append((body, fields.get("x-hub-signature-256", "")))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return serve


async def _wrk(threads: int, connections: int, env: dict[str, str],
               ) -> tuple[list[tuple[bytes, str]], bytes]:
    """The real wrk for a second with the script against `_server`: the bodies and signature
    headers the server took, and what wrk printed."""
    wrk_binary = tools.binary("wrk")  # skipped without it, except in CI (tests/run.sh has it)
    seen: list[tuple[bytes, str]] = []
    server = await asyncio.start_server(_server(seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        wrk = await asyncio.create_subprocess_exec(
            wrk_binary, f"-t{threads}", f"-c{connections}", "-d1s", "-s", str(SCRIPT),
            f"http://127.0.0.1:{port}/webhook", env=os.environ | env,
            stdout=asyncio.subprocess.PIPE)
        out, _ = await wrk.communicate()
    assert wrk.returncode == 0
    return seen, out


async def test_wrk_script_signs_unique_status_webhooks() -> None:
    bodies, _ = await _wrk(2, 2, {"WRK_SECRET": SECRET.decode(), "WRK_CHANNELS": "50"})
    assert bodies
    ids = []
    for body, signature in bodies:
        assert signature == "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        [event] = parse(json.loads(body))
        assert isinstance(event, StatusEvent)
        assert event.pricing is not None
        assert 0 <= int(event.display_phone_number[5:]) < 50
        ids.append(event.message_id)
    assert len(set(ids)) == len(ids)


async def test_wrk_script_with_a_rate_reports_its_schedule() -> None:
    """With WRK_RATE, wrk paces its requests and the script says how many went out to the
    schedule and how many behind it, for every request wrk made."""
    seen, out = await _wrk(1, 4, {"WRK_RATE": "200"})
    paced, behind = map(int, re.search(  # type: ignore[union-attr]
        rb"schedule: (\d+) paced, (\d+) more than 5 ms behind", out).groups())
    # A slot is taken after each answer, so a connection's first request has none, and wrk
    # may stop with a connection waiting for its slot: at most one a connection.
    assert 0 < paced <= len(seen) + 4
    assert behind <= paced
