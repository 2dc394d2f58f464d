"""Fault injection for the simulated API: an ASGI middleware that spoils a share of answers.

The wrapped request is served first, so the simulator's rate windows count it (as a real API
gateway would count a request it then failed), and only then is its answer replaced by a fault:

    429 (with and without Retry-After), 500, 502, 503, a hang past the client's timeout, a
    connection reset mid-answer, a truncated body, malformed JSON, numbers turned into text,
    401 (an expired or revoked credential), and a listing page that moved because the fleet
    changed between pages (its items shifted by one and its total off by one).

Faults are drawn from a seeded generator, so a test run is reproducible; `enabled` switches
them off so a test can watch the exporter converge afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KINDS = ("429", "429_bare", "500", "502", "503", "hang", "reset", "truncated", "malformed",
         "wrong_types", "401", "paging")


class ConnectionReset(ConnectionError):
    """Raised after the answer has started: servers drop the connection, in-process transports
    hand it to the client (see `exporter.testing.NetworkFaults`)."""


class Hang(TimeoutError):
    """An in-process stand-in for a hang: raised where a real server would stall."""


class FaultInjector:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        seed: int = 1,
        kinds: tuple[str, ...] = KINDS,
        hang: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"fault rate must be in [0, 1] and kinds in {KINDS}")
        self.app = app
        self.rate = rate
        self.kinds = kinds
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        # Hang long enough for any sane client timeout; tests inject a hang that raises.
        self._hang = hang or (lambda: asyncio.sleep(120))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/") or not self.enabled \
                or self._random.random() >= self.rate:
            await self.app(scope, receive, send)
            return
        kind = self._random.choice(self.kinds)
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        status = next((m["status"] for m in messages if m["type"] == "http.response.start"), 500)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        if kind == "paging" and not (status == 200 and _later_page(body)):
            kind = "500"  # only a later page of a listing can have moved
        self.injected[kind] += 1
        await self._fault(kind, body, send)

    async def _fault(self, kind: str, body: bytes, send: Send) -> None:
        if kind == "hang":
            await self._hang()
            await _answer(send, 504, b'{"meta": {"developer_message": "gateway timeout"}}')
        elif kind == "reset":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body[:10], "more_body": True})
            raise ConnectionReset("simulated connection reset")
        elif kind in {"429", "429_bare"}:
            headers = [(b"retry-after", b"30")] if kind == "429" else []
            await _answer(send, 429, b'{"meta": {"success": false, "http_code": 429, '
                          b'"developer_message": "Too many requests"}}', headers)
        elif kind in {"500", "502", "503", "401"}:
            await _answer(send, int(kind), b'{"meta": {"developer_message": "simulated fault"}}')
        elif kind == "truncated":
            await _answer(send, 200, body[: max(1, len(body) // 2)])
        elif kind == "malformed":
            await _answer(send, 200, b'{"pricing_analytics": {"data": [}')
        elif kind == "wrong_types":
            await _answer(send, 200, json.dumps(_spoil(json.loads(body or b"{}"))).encode())
        else:  # paging: the fleet changed between pages
            data = json.loads(body)
            key = "partner_channels" if "partner_channels" in data else "clients"
            data[key] = data[key][1:]
            data["total"] = int(data["total"]) - 1
            await _answer(send, 200, json.dumps(data).encode())


def _later_page(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (isinstance(data, dict) and ("partner_channels" in data or "clients" in data)
            and data.get("offset", 0) > 0)


def _spoil(value: Any) -> Any:
    """Every number becomes text that is not a number: the fields keep their names."""
    if isinstance(value, dict):
        return {k: _spoil(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spoil(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a"
    return value


async def _answer(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
