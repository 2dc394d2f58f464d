"""Scrape cost at fleet scale: `/metrics` over HTTP on loopback against prometheus-client's
`generate_latest` on the same registry, and a static-bytes floor on the same server stack.

    .venv/bin/python bench/scrape.py [--channels 10000] [--wabas 1000] [--rounds 20]

Three HTTP cases: the data unchanged since the last scrape (the cached body), the data changed
by one poll between scrapes (at 10,000 channels polls land every few hundred milliseconds, so
this is the usual case), and gzip. Prints one line per case (median and p90 in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import MONTH, NOW, build
from exporter.clock import FakeClock
from exporter.collector import UsageCollector
from exporter.domain import MessageTotal, MonthUsage
from exporter.exposition import Exposition
from exporter.http import metrics_app
from exporter.selfmetrics import SelfMetrics
from exporter.serving import bind_socket, embedded_server, url_of


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(name: str, ms: list[float], size: int) -> str:
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name:<34} median {statistics.median(ms):9.1f} ms   p90 {p90:9.1f} ms   {size:>10} B"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = build(tmp / "state.sqlite3", args.channels, args.wabas)
    usage = UsageCollector(store, FakeClock(NOW), 1800, lambda _: True)
    data = CollectorRegistry(auto_describe=False)  # for generate_latest, the comparison
    data.register(usage)
    own = SelfMetrics()
    exposition = Exposition(CollectorRegistry(auto_describe=False), own.registry,
                            lambda: store.version, usage=usage)
    body, _ = exposition.body(openmetrics=False, compress=False)
    series = body.count(b"\n") - body.count(b"\n#")
    print(f"fleet: {len(store.channels)} channels, {args.wabas} WABAs, {series} series, "
          f"{len(body) / 1e6:.1f} MB plain")

    static = body

    async def constant(_: Request) -> Response:
        return Response(static, media_type="text/plain")

    servers = []
    urls = []
    for app in (metrics_app(exposition, lambda: True, "bench"),
                Starlette(routes=[Route("/metrics", constant)])):
        sock = bind_socket("127.0.0.1", 0)
        server = embedded_server(app)
        servers.append((server, asyncio.create_task(server.serve(sockets=[sock]))))
        urls.append(url_of(sock) + "/metrics")
    while not all(s.started for s, _ in servers):  # noqa: ASYNC110 - uvicorn has a flag only
        await asyncio.sleep(0.01)
    ours, floor = urls

    rounds = args.rounds
    results = [line("generate_latest (in process)",
                    timed(lambda: generate_latest(data) + generate_latest(own.registry),
                          max(3, rounds // 4)), len(body))]
    channel = next(iter(store.channels))
    bump = {"n": 0}

    def one_poll() -> None:
        bump["n"] += 1
        usage = MonthUsage(MONTH, "USD", {("marketing", "regular"): MessageTotal(
            bump["n"], Decimal(bump["n"]))})
        store.put_usage(channel, {MONTH: usage}, NOW, keep_from=MONTH)

    async with httpx.AsyncClient(timeout=60) as client:
        for name, url, extra, before in (
                ("static bytes, same stack (floor)", floor, {}, None),
                ("/metrics, unchanged", ours, {}, None),
                ("/metrics gzip, unchanged", ours, {"Accept-Encoding": "gzip"}, None),
                ("/metrics, one poll between", ours, {}, one_poll),
                ("/metrics gzip, one poll between", ours, {"Accept-Encoding": "gzip"},
                 one_poll)):
            headers = {"Accept-Encoding": "identity"} | extra
            await client.get(url, headers=headers)  # warm
            ms, size = [], 0
            for _ in range(rounds if before is None else max(3, rounds // 4)):
                if before is not None:
                    before()
                started = time.perf_counter()
                r = await client.get(url, headers=headers)
                ms.append((time.perf_counter() - started) * 1000)
                size = len(r.content)
            results.append(line(name, ms, size))
    for text in results:
        print(text)
    for server, task in servers:
        server.should_exit = True
        await task


if __name__ == "__main__":
    asyncio.run(main())
