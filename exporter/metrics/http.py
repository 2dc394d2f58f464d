"""The exporter's HTTP face: /metrics, /healthz, /readyz, /backfill (the fetched past), and a
small landing page."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from exporter.metrics.exposition import Exposition

_LANDING = """<!doctype html><html><head><title>WhatsApp usage exporter</title></head><body>
<h1>WhatsApp usage exporter</h1><p>{mode}</p><ul><li><a href="metrics">/metrics</a></li>
<li><a href="healthz">/healthz</a></li><li><a href="readyz">/readyz</a></li></ul></body></html>"""


@dataclass(frozen=True, slots=True)
class ScrapeAuth:
    """What `/metrics` asks of a scraper: a bearer token, basic auth, either, or nothing.

    Probes (`/healthz`, `/readyz`) stay open: the kubelet carries no credentials."""

    bearer_token: str | None = None
    basic: tuple[str, str] | None = None  # (username, password)

    @property
    def required(self) -> bool:
        return self.bearer_token is not None or self.basic is not None

    def allows(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer_token is not None:
            return hmac.compare_digest(value.strip().encode(), self.bearer_token.encode())
        if scheme == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            expected = f"{self.basic[0]}:{self.basic[1]}".encode()
            return hmac.compare_digest(given, expected)
        return False

    def challenge(self) -> str:
        return 'Basic realm="metrics"' if self.basic is not None else "Bearer"


class ChunksResponse(Response):
    """A body sent as the pieces it is made of, with one Content-Length: joining them first
    would copy the whole body per scrape, and the first pieces reach the socket sooner."""

    def __init__(self, chunks: list[bytes], media_type: str, headers: dict[str, str]) -> None:
        super().__init__(b"", media_type=media_type, headers=headers)
        self._chunks = chunks
        self.headers["content-length"] = str(sum(len(c) for c in chunks))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        last = len(self._chunks) - 1
        for i, chunk in enumerate(self._chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < last})


# The fetched past as OpenMetrics text, in pieces: produced in a thread, never on the loop.
History = Callable[[], Iterator[str]]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def metrics_app(exposition: Exposition, ready: Callable[[], bool], mode: str,
                auth: ScrapeAuth | None = None,
                on_unauthorized: Callable[[], None] = lambda: None, *,
                history: History | None = None,
                not_ready: Callable[[], str] = lambda: "") -> Starlette:
    """`not_ready` says why the exporter is not ready yet, for `/readyz`'s 503 answer."""
    auth = auth or ScrapeAuth()

    def refused(request: Request) -> Response | None:
        if auth.required and not auth.allows(request.headers.get("authorization", "")):
            on_unauthorized()
            return PlainTextResponse("unauthorized\n", status_code=401,
                                     headers={"WWW-Authenticate": auth.challenge()})
        return None

    async def metrics(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        accept = request.headers.get("accept", "")
        encoding = request.headers.get("accept-encoding", "")
        openmetrics = "application/openmetrics-text" in accept
        compress = "gzip" in encoding
        chunks, ctype = await exposition.achunks(openmetrics=openmetrics, compress=compress)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept, Accept-Encoding"} if compress \
            else {"Vary": "Accept, Accept-Encoding"}
        return ChunksResponse(chunks, media_type=ctype, headers=headers)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if ready():
            return PlainTextResponse("ready\n")
        reason = not_ready() or "waiting for the first discovery"
        return PlainTextResponse(f"not ready: {reason}\n", status_code=503)

    async def backfill(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        if history is None:
            return PlainTextResponse("no history: D360_BACKFILL_MONTHS is 0 or this process "
                                     "does not poll\n", status_code=404)
        # A sync iterator: Starlette runs it in its thread pool.
        return StreamingResponse(history(), media_type=OPENMETRICS)

    async def landing(_: Request) -> Response:
        return HTMLResponse(_LANDING.format(mode=mode))

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/backfill", backfill),
        Route("/", landing),
    ])
