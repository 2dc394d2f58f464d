"""The exporter's HTTP face: /metrics, /healthz, /readyz, and a small landing page."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from exporter.exposition import Exposition

_LANDING = """<!doctype html><html><head><title>WhatsApp usage exporter</title></head><body>
<h1>WhatsApp usage exporter</h1><p>{mode}</p><ul><li><a href="metrics">/metrics</a></li>
<li><a href="healthz">/healthz</a></li><li><a href="readyz">/readyz</a></li></ul></body></html>"""


def metrics_app(exposition: Exposition, ready: Callable[[], bool], mode: str) -> Starlette:
    async def metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        encoding = request.headers.get("accept-encoding", "")
        openmetrics = "application/openmetrics-text" in accept
        compress = "gzip" in encoding
        body, ctype = exposition.body(openmetrics=openmetrics, compress=compress)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept, Accept-Encoding"} if compress \
            else {"Vary": "Accept, Accept-Encoding"}
        return Response(body, media_type=ctype, headers=headers)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready: waiting for the first discovery\n", status_code=503)

    async def landing(_: Request) -> Response:
        return HTMLResponse(_LANDING.format(mode=mode))

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/", landing),
    ])
