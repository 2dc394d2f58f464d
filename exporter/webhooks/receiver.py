"""The webhook endpoint: size limit, authentication, validation, counted and recorded, then 200.

Bad input gets a 4xx and is counted by result; nothing a sender can put in a body makes a 5xx.
A delivery is counted in the same commit that records it (`WebhookState.accept_many`), shared
by the requests that arrive together, and answered after that commit.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from starlette.types import Message, Receive, Scope, Send

from exporter.webhooks.parser import Delivery, MalformedWebhook, parse

if TYPE_CHECKING:  # the worker processes import this module, and need neither
    from prometheus_client import Counter

    from exporter.webhooks.state import WebhookState

log = structlog.get_logger("exporter.webhooks")

RESULTS = ("ok", "duplicate", "unauthorized", "malformed", "too_large", "unsupported_media_type",
           "timeout", "error")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


Waiting = list[tuple[Delivery, "asyncio.Future[bool]"]]


class Gathering:
    """Deliveries gathered from the first for 5 ms, then handed on together (`_flush`); each
    request waits for its own answer. Under a stream, one batch then holds a dozen requests.

    With `watch`, a batch is handed on at once when it holds a request from every open
    connection: HTTP/1.1 carries one request at a time on a connection, so nothing more can
    arrive before this batch is answered, and waiting out the window would leave the process
    idle (a sender that waits for each answer before its next request on a connection would
    otherwise lose most of the window on every batch)."""

    WINDOW_SECONDS = 0.005

    def __init__(self) -> None:
        self._waiting: Waiting = []
        self._timer: asyncio.TimerHandle | None = None
        self._connections: Callable[[], int] | None = None

    def watch(self, connections: Callable[[], int]) -> None:
        """`connections`: how many connections the server has open now."""
        self._connections = connections

    async def append(self, delivery: Delivery) -> bool:
        """True once counted and recorded; False if the same bytes were accepted before."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((delivery, done))
        if self._connections is not None and len(self._waiting) >= self._connections():
            self._hand_on()
        elif self._timer is None:
            self._timer = loop.call_later(self.WINDOW_SECONDS, self._hand_on)
        return await done

    def _hand_on(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            self._flush(batch)

    def _flush(self, batch: Waiting) -> None:
        raise NotImplementedError

    @staticmethod
    def answer(waiting: Sequence[asyncio.Future[bool]], fresh: Sequence[bool]) -> None:
        """Each request its answer: whether its delivery was new."""
        for done, new in zip(waiting, fresh, strict=True):
            if not done.done():
                done.set_result(new)

    @staticmethod
    def fail(waiting: Sequence[asyncio.Future[bool]], exc: Exception) -> None:
        """Every request of a batch that could not be recorded answers 503."""
        for done in waiting:
            if not done.done():
                done.set_exception(exc)


class Folding:
    """Folds the state's log into its tables (`WebhookState.fold`) when a commit made it due,
    after that batch's answers have gone (they were scheduled first), and a second after the
    last commit otherwise, so a stream that stops leaves nothing in the log for long."""

    RETRY_SECONDS = 1.0

    def __init__(self, state: WebhookState, now: Callable[[], float]) -> None:
        self._state = state
        self._now = now
        self._timer: asyncio.Handle | None = None
        self._not_before = 0.0

    def committed(self) -> None:
        loop = asyncio.get_running_loop()
        if self._state.fold_due(self._now()) and self._now() >= self._not_before:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_soon(self._fold)
        elif self._timer is None and self._state.unfolded_rows:
            self._timer = loop.call_later(self._state.FOLD_SECONDS, self._fold)

    def _fold(self) -> None:
        self._timer = None
        try:
            self._state.fold()
        except Exception:  # e.g. a full disk: the log keeps the rows, memory counts them
            log.exception("webhook_fold_failed")
            self._not_before = self._now() + self.RETRY_SECONDS
            self._timer = asyncio.get_running_loop().call_later(self.RETRY_SECONDS, self._fold)


class GroupCommit(Gathering):
    """Deliveries counted and recorded together: every request that arrives within 5 ms of
    the first shares one commit, and is answered after it."""

    def __init__(self, state: WebhookState, now: Callable[[], float]) -> None:
        super().__init__()
        self._state = state
        self._now = now
        self._folding = Folding(state, now)

    def _flush(self, batch: Waiting) -> None:
        waiting = [done for _, done in batch]
        try:
            fresh = self._state.accept_many([delivery for delivery, _ in batch], self._now())
        except Exception as exc:
            self.fail(waiting, exc)
            return
        self.answer(waiting, fresh)
        self._folding.committed()


# Who signs a delivery, by header: 360dialog (keyed with the partner's platform secret) and Meta
# itself, for deliveries straight from a Meta app (keyed with the app secret).
SIGNATURE_HEADERS = ("x-360dialog-signature", "x-hub-signature-256")


def _signature_digest(value: str) -> bytes | None:
    """The 32 bytes a signature header carries, or None if it carries none. 360dialog does not
    document its encoding, so hex and base64 (standard or URL-safe, padded or not) are read,
    each with or without Meta's `sha256=` prefix; the lengths tell them apart (64 against 44)."""
    text = value.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:]
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        if len(text) in {43, 44}:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/").ljust(44, "="),
                                   validate=True)
            return raw if len(raw) == 32 else None
    except ValueError:  # binascii.Error is one
        return None
    return None


class WebhookAuth:
    """A shared secret in a header, and/or an HMAC-SHA256 of the raw body; both constant time.

    With an HMAC secret, a delivery must carry `x-360dialog-signature` or `X-Hub-Signature-256`
    and pass if one that it carries matches: the same key checks both, since a deployment has
    one sender (360dialog, or a Meta app of its own)."""

    def __init__(self, *, header: str, secret: str | None, hmac_secret: str | None) -> None:
        self.header = header.lower()
        self._secret = secret.encode() if secret else None
        self._hmac = hmac_secret.encode() if hmac_secret else None

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._hmac is not None

    def check(self, headers: dict[str, str], body: bytes) -> bool:
        """`headers`: lower-case names; the shared secret's header and the signatures if sent."""
        if self._secret is not None:
            given = headers.get(self.header, "").encode()
            if not hmac.compare_digest(given, self._secret):
                return False
        if self._hmac is not None:
            expected = hmac.digest(self._hmac, body, "sha256")  # one call into OpenSSL
            verified = False
            for name in SIGNATURE_HEADERS:
                if name in headers:
                    digest = _signature_digest(headers[name])
                    # Every present header is compared, so timing does not tell which matched.
                    verified |= digest is not None and hmac.compare_digest(digest, expected)
            if not verified:
                return False
        return True


PATHS = frozenset({"/webhook", "/"})


class _Answer:
    """A response made once: its start message and body."""

    __slots__ = ("body", "start")

    def __init__(self, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.start: Message = {"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json" if body.startswith(b"{")
             else b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *extra]}
        self.body: Message = {"type": "http.response.body", "body": body}

    async def __call__(self, send: Send) -> None:
        await send(self.start)
        await send(self.body)


_NOT_FOUND = _Answer(404, b"Not Found")
_NOT_ALLOWED = _Answer(405, b"Method Not Allowed", [(b"allow", b"POST")])


class Recorder(Protocol):
    async def append(self, delivery: Delivery) -> bool:
        """True once counted and recorded; False if the same bytes were accepted before."""
        ...


class WebhookReceiver:
    """The receiver as a plain ASGI app. A stream sends thousands of requests a second here,
    and a framework's request objects, routing and middleware were a sixth of the CPU each
    one cost (bench/README.md); the checks themselves are the same.

    `recorder` counts and records accepted deliveries: a `GroupCommit` on the state in this
    process, or a worker process's link to the main one (`exporter.webhooks.worker`). `count`
    takes each request's result."""

    def __init__(self, recorder: Recorder, auth: WebhookAuth, count: Callable[[str], None], *,
                 now: Callable[[], float], max_body_bytes: int, read_timeout_seconds: float,
                 forward_headers: Sequence[str] | None, on_accept: Callable[[], None]) -> None:
        self._auth = auth
        self._count = count
        self._now = now
        self._max_body = max_body_bytes
        self._read_timeout = read_timeout_seconds
        # Requests reading their bodies, by when each must be done; those found late.
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._late: set[asyncio.Task[Any]] = set()
        self._sweep_every = min(1.0, read_timeout_seconds / 4)
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._forwarding = forward_headers is not None
        self._passed = [h.lower() for h in forward_headers or ()]
        self._on_accept = on_accept
        self._recorder = recorder
        # Only these headers are ever read: the rest are not even decoded.
        self._wanted = frozenset({b"content-length", b"content-type",
                                  *(h.encode("latin-1") for h in SIGNATURE_HEADERS),
                                  auth.header.encode("latin-1"),
                                  *(h.encode("latin-1") for h in self._passed)})
        # The answers a stream gets thousands of times a second, made once.
        self._plain = {result: _Answer(200, json.dumps({"result": result}, separators=(",", ":"))
                                       .encode()) for result in ("ok", "duplicate")}

    def watch(self, connections: Callable[[], int]) -> None:
        """Hand batches on as soon as every open connection waits on one (`Gathering.watch`);
        `connections`: how many the server serving this app has open."""
        if isinstance(self._recorder, Gathering):
            self._recorder.watch(connections)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] not in PATHS:
            await _NOT_FOUND(send)
            return
        if scope["method"] != "POST":
            await _NOT_ALLOWED(send)
            return
        result, status, detail = await self._handle(scope, receive)
        self._count(result)
        if not detail and result in self._plain:
            await self._plain[result](send)
            return
        body: dict[str, str] = {"result": result}
        if detail:
            body["detail"] = detail
        await _Answer(status, json.dumps(body, separators=(",", ":")).encode())(send)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[str, int, str]:
        wanted = self._wanted
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in wanted}
        try:
            body = await self._read_in_time(headers, receive)
        except TimeoutError:
            return "timeout", 408, f"the body must arrive within {self._read_timeout:g} s"
        except _TooLarge:
            return "too_large", 413, f"bodies are limited to {self._max_body} bytes"
        except _Disconnected:
            return "malformed", 400, "the client went away mid-body"
        if not self._auth.check(headers, body):
            client = scope.get("client")
            log.warning("webhook_unauthorized", client=client[0] if client else "")
            return "unauthorized", 401, ""
        ctype = headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype not in {"application/json", "text/json", ""}:
            return "unsupported_media_type", 415, "send application/json"
        try:
            events = parse(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and MalformedWebhook too
            reason = str(exc) if isinstance(exc, MalformedWebhook) else "body is not valid JSON"
            return "malformed", 400, reason[:200]
        forwarded = None
        if self._forwarding:
            forwarded = {"content-type": headers.get("content-type", "application/json")}
            forwarded |= {h: headers[h] for h in self._passed if h in headers}
        try:
            if not await self._recorder.append(Delivery(body, self._now(), events, forwarded)):
                return "duplicate", 200, ""
        except Exception:  # the store, not the sender, failed: ask Meta to retry
            log.exception("webhook_record_failed")
            return "error", 503, ""
        self._on_accept()
        return "ok", 200, ""

    async def _read_in_time(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The body, or TimeoutError if it has not all come within the read timeout: a sender
        trickling its body (slow loris) must not hold a connection for ever. A sweep every
        fraction of the timeout cancels the reads that are late; an `asyncio.timeout` for every
        request cost a timer of its own, set and cancelled, though nearly every body is there
        before the request is handed on."""
        task = asyncio.current_task()
        assert task is not None  # an ASGI app runs in a task
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + self._read_timeout
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._sweep_every, self._sweep)
        try:
            return await self._read_body(headers, receive)
        except asyncio.CancelledError:
            if task in self._late:
                self._late.discard(task)
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            del self._reading[task]

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in self._reading.items():
            if deadline <= now and task not in self._late:
                self._late.add(task)
                task.cancel()
        self._sweep_handle = (loop.call_later(self._sweep_every, self._sweep)
                              if self._reading else None)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
) -> WebhookReceiver:
    """The receiver in this process, counting into `state`. `forward_headers`: None when
    nothing is forwarded, else the request headers that travel with the body to the
    application (Content-Type always does)."""
    # Each result's counter child, looked up once: thousands of requests a second take one.
    counted = {result: requests_total.labels(result).inc for result in RESULTS}
    return WebhookReceiver(GroupCommit(state, now), auth, lambda result: counted[result](),
                           now=now, max_body_bytes=max_body_bytes,
                           read_timeout_seconds=read_timeout_seconds,
                           forward_headers=forward_headers, on_accept=on_accept)
