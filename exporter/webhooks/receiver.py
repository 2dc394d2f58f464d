"""The webhook endpoint: size limit, authentication, validation, counted and recorded, then 200.

Bad input gets a 4xx and is counted by result; nothing a sender can put in a body makes a 5xx.
A delivery is counted in the same commit that records it (`WebhookState.accept_many`), shared
by the requests that arrive together, and answered after that commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence

import structlog
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exporter.webhooks.parser import MalformedWebhook, parse
from exporter.webhooks.state import Delivery, WebhookState

log = structlog.get_logger("exporter.webhooks")

RESULTS = ("ok", "duplicate", "unauthorized", "malformed", "too_large", "unsupported_media_type",
           "timeout", "error")


class _TooLarge(Exception):
    pass


class GroupCommit:
    """Deliveries counted and recorded together: each request waits for the commit that holds
    it, and every request that arrives within 5 ms of the first shares one commit."""

    def __init__(self, state: WebhookState, now: Callable[[], float]) -> None:
        self._state = state
        self._now = now
        self._waiting: list[tuple[Delivery, asyncio.Future[bool]]] = []

    async def append(self, delivery: Delivery) -> bool:
        """True once counted and recorded; False if the same bytes were accepted before."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        if not self._waiting:
            # Wait 5 ms for company: under a stream, one commit then holds a dozen requests.
            loop.call_later(0.005, self._commit)
        self._waiting.append((delivery, done))
        return await done

    def _commit(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            fresh = self._state.accept_many([delivery for delivery, _ in batch], self._now())
        except Exception as exc:  # every request of the batch answers 503
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done), new in zip(batch, fresh, strict=True):
            if not done.done():
                done.set_result(new)


class WebhookAuth:
    """A shared secret in a header, and/or an HMAC-SHA256 of the raw body; both constant time."""

    def __init__(self, *, header: str, secret: str | None, hmac_secret: str | None) -> None:
        self._header = header
        self._secret = secret.encode() if secret else None
        self._hmac = hmac_secret.encode() if hmac_secret else None

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._hmac is not None

    def check(self, request: Request, body: bytes) -> bool:
        if self._secret is not None:
            given = request.headers.get(self._header, "").encode()
            if not hmac.compare_digest(given, self._secret):
                return False
        if self._hmac is not None:
            signature = request.headers.get("x-hub-signature-256", "")
            expected = "sha256=" + hmac.new(self._hmac, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature.encode(), expected.encode()):
                return False
        return True


def webhook_app(
    state: WebhookState,
    auth: WebhookAuth,
    requests_total: Counter,
    *,
    now: Callable[[], float],
    max_body_bytes: int,
    read_timeout_seconds: float = 10.0,
    forward_headers: Sequence[str] | None = None,
    on_accept: Callable[[], None] = lambda: None,
) -> Starlette:
    """`forward_headers`: None when nothing is forwarded, else the request headers that travel
    with the body to the application (Content-Type always does)."""
    passed = [h.lower() for h in forward_headers or ()]
    recorder = GroupCommit(state, now)
    # The answers a stream gets thousands of times a second, and their counters, made once.
    counted = {result: requests_total.labels(result) for result in RESULTS}
    plain = {result: json.dumps({"result": result}, separators=(",", ":")).encode()
             for result in ("ok", "duplicate")}

    def answer(result: str, status: int, detail: str = "") -> Response:
        counted[result].inc()
        if not detail and result in plain:
            return Response(plain[result], status, media_type="application/json")
        body: dict[str, str] = {"result": result}
        if detail:
            body["detail"] = detail
        return JSONResponse(body, status)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def receive(request: Request) -> Response:
        try:
            # A sender trickling its body (slow loris) must not hold a connection for ever.
            async with asyncio.timeout(read_timeout_seconds):
                body = await read_body(request)
        except TimeoutError:
            return answer("timeout", 408, f"the body must arrive within {read_timeout_seconds:g} s")
        except _TooLarge:
            return answer("too_large", 413, f"bodies are limited to {max_body_bytes} bytes")
        except ClientDisconnect:
            return answer("malformed", 400, "the client went away mid-body")
        if not auth.check(request, body):
            log.warning("webhook_unauthorized", client=request.client.host if request.client
                        else "")
            return answer("unauthorized", 401)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype not in {"application/json", "text/json", ""}:
            return answer("unsupported_media_type", 415, "send application/json")
        try:
            events = parse(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and MalformedWebhook too
            reason = str(exc) if isinstance(exc, MalformedWebhook) else "body is not valid JSON"
            return answer("malformed", 400, reason[:200])
        headers = None
        if forward_headers is not None:
            headers = {"content-type": request.headers.get("content-type", "application/json")}
            headers |= {h: request.headers[h] for h in passed if h in request.headers}
        try:
            if not await recorder.append(Delivery(body, now(), events, headers)):
                return answer("duplicate", 200)
        except Exception:  # the store, not the sender, failed: ask Meta to retry
            log.exception("webhook_record_failed")
            return answer("error", 503)
        on_accept()
        return answer("ok", 200)

    return Starlette(routes=[Route("/webhook", receive, methods=["POST"]),
                             Route("/", receive, methods=["POST"])])
