"""Scrape cost at fleet scale: `/metrics` over HTTP on loopback against prometheus-client's
`generate_latest` on the same registry, and a static-bytes floor on the same server stack.

    .venv/bin/python bench/scrape.py [--channels 10000] [--wabas 1000] [--rounds 20]

The servers run in a child process, as the exporter would; the client is a plain blocking
socket in this process that reads each body into one buffer, so the client is not what is
measured. Cases: the data unchanged since the last scrape (the cached body), the data changed by
one poll between scrapes, and polls landing at the fleet's own pace (27 a second at 10,000
channels, so this is the usual case) with scrapes at random moments; each plain and gzip. The
server runs the exporter's background refresh, as the exporter does. Prints one line per case
(median and p90 in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import MONTH, NOW, build
from exporter.clock import FakeClock
from exporter.domain import MessageTotal, MonthUsage
from exporter.metrics.exposition import Exposition
from exporter.metrics.http import metrics_app
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.polling.collector import UsageCollector
from exporter.polling.store import Store
from exporter.runtime import refresh_exposition
from exporter.serving import bind_socket, embedded_server


def exposition_of(store: Store) -> tuple[Exposition, CollectorRegistry, SelfMetrics]:
    usage = UsageCollector(store, FakeClock(NOW), 1800, lambda _: True)
    data = CollectorRegistry(auto_describe=False)  # for generate_latest, the comparison
    data.register(usage)
    own = SelfMetrics()
    exposition = Exposition(CollectorRegistry(auto_describe=False), own.registry,
                            [store], parts=[usage])
    return exposition, data, own


def serve(path: Path, conn: Connection) -> None:
    """The child: the exporter's /metrics app, a static-bytes app, and /poll, which lands one
    poll in the store (called before a timed request, not timed)."""
    store = Store(path)
    exposition, _, _ = exposition_of(store)
    static = exposition.body(openmetrics=False, compress=False)[0]
    channels = list(store.channels)
    bump = {"n": 0}
    streaming: list[asyncio.Task[None]] = []

    def land(channel: str) -> None:
        bump["n"] += 1
        usage = MonthUsage(MONTH, "USD", {("marketing", "regular"): MessageTotal(
            bump["n"], Decimal(bump["n"]))})
        store.put_usage(channel, {MONTH: usage}, NOW, keep_from=MONTH)

    async def stream(rate: float) -> None:
        rnd = random.Random(1)
        while True:
            await asyncio.sleep(rnd.expovariate(rate))
            land(rnd.choice(channels))

    async def constant(_: Request) -> Response:
        return Response(static, media_type="text/plain")

    async def poll(_: Request) -> Response:
        land(channels[0])
        return Response(b"")

    async def polls(request: Request) -> Response:
        """Polls landing at a steady rate (per second) from now on, as the poller lands them."""
        streaming.append(asyncio.create_task(stream(float(request.query_params["rate"]))))
        return Response(b"")

    ours = metrics_app(exposition, lambda: True, "bench")
    ours.router.routes += [Route("/poll", poll), Route("/polls", polls)]
    floor = Starlette(routes=[Route("/metrics", constant)])

    async def main() -> None:
        servers = [asyncio.create_task(refresh_exposition(exposition))]  # as the app runs it
        ports = []
        for app in (ours, floor):
            sock = bind_socket("127.0.0.1", 0)
            server = embedded_server(app)
            servers.append(asyncio.create_task(server.serve(sockets=[sock])))
            ports.append(sock.getsockname()[1])
        await asyncio.sleep(0.5)
        conn.send(ports)
        await asyncio.gather(*servers)

    asyncio.run(main())


class Client:
    """HTTP/1.1 keep-alive GETs on one blocking socket; bodies read with Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(64 * 1024 * 1024)

    def get(self, path: str, encoding: str = "identity") -> memoryview:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                          f"Accept-Encoding: {encoding}\r\n\r\n".encode())
        view = memoryview(self.buf)
        got = 0
        while (end := self.buf.find(b"\r\n\r\n", 0, got)) < 0:
            got += self.sock.recv_into(view[got:])
        head = bytes(self.buf[:end]).decode().lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        total = end + 4 + length
        if total > len(self.buf):
            raise RuntimeError("body larger than the buffer")
        while got < total:
            got += self.sock.recv_into(view[got:total])
        return view[end + 4:total]


def timed(fn: Callable[[], object], rounds: int, before: Callable[[], object] | None = None,
          ) -> list[float]:
    out = []
    for _ in range(rounds):
        if before is not None:
            before()
        else:
            time.sleep(0.1)  # the background refresh runs between scrapes, as it would
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(name: str, ms: list[float], size: int) -> str:
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name:<34} median {statistics.median(ms):9.1f} ms   p90 {p90:9.1f} ms   {size:>10} B"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    path = Path(tempfile.mkdtemp()) / "state.sqlite3"
    store = build(path, args.channels, args.wabas)
    exposition, data, own = exposition_of(store)
    body, _ = exposition.body(openmetrics=False, compress=False)
    series = body.count(b"\n") - body.count(b"\n#")
    print(f"fleet: {len(store.channels)} channels, {args.wabas} WABAs, {series} series, "
          f"{len(body) / 1e6:.1f} MB plain")
    rounds = args.rounds
    results = [line("generate_latest (in process)",
                    timed(lambda: generate_latest(data) + generate_latest(own.registry),
                          max(3, rounds // 4)), len(body))]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(path, child),
                                                          daemon=True)
    server.start()
    ours_port, floor_port = parent.recv()
    ours, floor, poller = Client(ours_port), Client(floor_port), Client(ours_port)
    plain = bytes(ours.get("/metrics"))
    if plain[:len(body) - 4096] != body[:len(body) - 4096]:
        raise SystemExit("the served body is not the rendered one")
    if gzip.decompress(bytes(ours.get("/metrics", "gzip")))[:len(body) // 2] != \
            body[:len(body) // 2]:
        raise SystemExit("the gzip body does not decode to the plain one")

    def poll() -> None:
        poller.get("/poll")

    def pause() -> None:
        time.sleep(random.uniform(0.1, 1.0))

    cases: list[tuple[str, Client, str, Callable[[], object] | None]] = [
        ("static bytes, same stack (floor)", floor, "identity", None),
        ("/metrics, unchanged", ours, "identity", None),
        ("/metrics gzip, unchanged", ours, "gzip", None),
        ("/metrics, one poll between", ours, "identity", poll),
        ("/metrics gzip, one poll between", ours, "gzip", poll)]
    for name, client, encoding, before in cases:
        client.get("/metrics", encoding)  # warm
        size = len(client.get("/metrics", encoding))
        results.append(line(name, timed(lambda c=client, e=encoding: c.get("/metrics", e),
                                        rounds, before), size))
    # The fleet's own pace: every channel polled 10 times an hour, less the safety margin.
    rate = len(store.channels) * 10 / 3600 / 1.02
    poller.get(f"/polls?rate={rate}")
    for name, encoding in ((f"/metrics, polls landing {rate:.0f}/s", "identity"),
                           (f"/metrics gzip, polls landing {rate:.0f}/s", "gzip")):
        size = len(ours.get("/metrics", encoding))
        results.append(line(name, timed(lambda e=encoding: ours.get("/metrics", e), rounds,
                                        pause), size))
    for text in results:
        print(text)
    server.terminate()


if __name__ == "__main__":
    main()
