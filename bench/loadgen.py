"""Load generator for the webhook benchmark: signed Meta status webhooks over raw HTTP/1.1
keep-alive connections (asyncio streams), open loop at a constant arrival rate or closed loop
at saturation. Run as its own process by `bench/webhooks.py`:

    python bench/loadgen.py SPEC.json --phase open --rate 3000 --duration 60 --out PREFIX
    python bench/loadgen.py SPEC.json --phase closed --duration 10 --connections 32 --out PREFIX

SPEC.json names the target (host, port, path, HMAC secret), the channels (`targets`), the seed
and the status timestamps' base. Every request is built and signed before the first is sent.

Open loop: request i is due at t0 + i/rate whatever happened to the ones before, and its latency
is measured from that scheduled time, so time spent waiting for a free connection (queueing
behind a slow server) is part of it. Closed loop: each connection sends its next request as soon
as the previous answer is in; latency there is from the actual send.

Results go to PREFIX.codes (int16 per request: HTTP status; 0 not sent; -1 connection lost or
bad answer, -2 cannot connect, -3 timed out), PREFIX.lat and PREFIX.svc (float64 seconds:
latency from schedule, and from the actual send) and PREFIX.json (summary). A line
`start <unix time>` on stdout marks the first send; `done` the end.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import heapq
import hmac
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

# (category, pricing type, weight): how a sender's statuses split over Meta's pricing categories.
KINDS = (
    ("marketing", "regular", 34), ("marketing", "free_entry_point", 3),
    ("marketing_lite", "regular", 7), ("utility", "regular", 25),
    ("utility", "free_customer_service", 5), ("authentication", "regular", 10),
    ("service", "free_customer_service", 16),
)
# (calling code, national prefix, random digits after it, weight). Jamaica (1876) falls into the
# example card's North America by its "1"; France and Indonesia are in no market of that card
# and are priced by its default market, which has no marketing_lite price (-> unpriced).
COUNTRIES = (
    ("49", "176", 8, 28), ("44", "7700", 6, 14), ("55", "1199", 7, 12), ("91", "98", 8, 14),
    ("1", "415555", 4, 10), ("1", "876555", 4, 2), ("34", "6", 8, 8), ("33", "6", 8, 6),
    ("62", "812", 8, 6),
)
# Mean distance, in deliveries, from a message's `sent` to its `delivered` and on to `read`.
DELIVERED_AFTER, READ_AFTER = 300, 3000
P_DELIVERED, P_READ = 0.95, 0.6

NOT_SENT, LOST, NO_CONNECT, TIMED_OUT = 0, -1, -2, -3


class Target(NamedTuple):
    waba_id: str  # Meta's WABA id: the entry id
    channel_id: str  # the exporter's label for the number (only used to check the counters)
    display_phone_number: str  # digits, as Meta sends it
    phone_number_id: str


class Delivery(NamedTuple):
    target: int
    wamid: str
    status: str
    category: str
    pricing_type: str
    recipient: str
    shape: int  # 0: v24 pricing; 1: v24 without the deprecated `billable`; 2: v23 + conversation


def plan(seed: int, tag: str, count: int, targets: int, *, lifecycle: bool = True
         ) -> list[Delivery]:
    """`count` deliveries, one status each, deterministic for (seed, tag).

    With `lifecycle`, each message gets `sent`, then (mostly) `delivered` some hundreds of
    deliveries later and (often) `read` later still, all with the same wamid and pricing, as
    Meta sends them: every (wamid, status) is unique, a message has up to three statuses.
    Without it, every delivery is a new message with a random status."""
    rnd = random.Random(f"{seed}:{tag}")
    channel_weights = list(itertools.accumulate(rnd.paretovariate(1.16) for _ in range(targets)))
    kind_weights = list(itertools.accumulate(k[2] for k in KINDS))
    country_weights = list(itertools.accumulate(c[3] for c in COUNTRIES))
    channels = range(targets)
    out: list[Delivery] = []
    due: list[tuple[int, int, str, Delivery]] = []  # (due index, order, status, message)
    messages = 0
    for i in range(count):
        if due and due[0][0] <= i:
            _, _, status, msg = heapq.heappop(due)
            delivery = msg._replace(status=status)
        else:
            target = rnd.choices(channels, cum_weights=channel_weights)[0]
            category, pricing_type, _ = rnd.choices(KINDS, cum_weights=kind_weights)[0]
            code, prefix, free, _ = rnd.choices(COUNTRIES, cum_weights=country_weights)[0]
            recipient = f"{code}{prefix}{rnd.randrange(10**free):0{free}d}"
            raw = f"{recipient}\x15\x02\x00\x11\x18\x12{tag}{seed:04X}{messages:014X}".encode()
            wamid = "wamid.HBgN" + base64.b64encode(raw).decode().rstrip("=")
            messages += 1
            status = "sent" if lifecycle else rnd.choice(("sent", "delivered", "read"))
            delivery = Delivery(target, wamid, status, category, pricing_type, recipient,
                                rnd.choices((0, 1, 2), (6, 2, 2))[0])
        out.append(delivery)
        if lifecycle and delivery.status in ("sent", "delivered"):
            sent = delivery.status == "sent"
            if rnd.random() < (P_DELIVERED if sent else P_READ):
                after = rnd.expovariate(1 / (DELIVERED_AFTER if sent else READ_AFTER))
                heapq.heappush(due, (i + 1 + int(after), i, "delivered" if sent else "read",
                                     delivery))
    return out


def body(d: Delivery, target: Target, timestamp: int) -> bytes:
    """The webhook body Meta sends (and 360dialog relays) for one status."""
    pricing: dict[str, Any] = {"billable": d.pricing_type == "regular", "pricing_model": "PMP",
                               "category": d.category, "type": d.pricing_type}
    if d.shape == 1:
        del pricing["billable"]
    status: dict[str, Any] = {"id": d.wamid, "status": d.status, "timestamp": str(timestamp),
                              "recipient_id": d.recipient}
    if d.shape == 2:
        conversation: dict[str, Any] = {"id": hashlib.md5(d.wamid.encode()).hexdigest()}
        if d.status == "sent":
            conversation["expiration_timestamp"] = str(timestamp + 86_400)
        conversation["origin"] = {"type": d.category}
        status["conversation"] = conversation
    status["pricing"] = pricing
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": target.display_phone_number,
                          "phone_number_id": target.phone_number_id},
             "statuses": [status]}
    root = {"object": "whatsapp_business_account",
            "entry": [{"id": target.waba_id, "changes": [{"value": value, "field": "messages"}]}]}
    return json.dumps(root, separators=(",", ":")).encode()


def request(host: str, path: str, secret: bytes, payload: bytes) -> bytes:
    signature = hmac.new(secret, payload, hashlib.sha256).hexdigest()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: facebookexternalua\r\n"
            f"Accept: */*\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: sha256={signature}\r\nContent-Length: {len(payload)}\r\n"
            "\r\n").encode() + payload


def build_requests(spec: dict[str, Any], tag: str, count: int) -> list[bytes]:
    targets = [Target(*t) for t in spec["targets"]]
    host = f"{spec['host']}:{spec['port']}"
    secret = spec["secret"].encode()
    base = int(spec["base_ts"])
    return [request(host, spec["path"], secret, body(d, targets[d.target], base + i // 1000))
            for i, d in enumerate(plan(spec["seed"], tag, count, len(targets),
                                       lifecycle=spec["lifecycle"]))]


class Connection:
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.writer is not None
        assert self.reader is not None
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        code = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("answer without content-length")
        length = int(head[at + 17:head.index(b"\r\n", at + 2)])
        answer = await self.reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in head:
            self.close()
        return code, answer


class Results:
    def __init__(self, n: int) -> None:
        self.codes = array.array("h", bytes(2 * n))
        self.lat = array.array("d", bytes(8 * n))
        self.svc = array.array("d", bytes(8 * n))
        self.errors: Counter[str] = Counter()
        self.duplicates = 0

    async def send(self, conn: Connection, i: int, raw: bytes, limit: float) -> float:
        """Send request i; record its status; return when the answer was complete."""
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                code, answer = await conn.exchange(raw)
            if b'"duplicate"' in answer:
                self.duplicates += 1
        except TimeoutError:
            code = TIMED_OUT
            self.errors["timeout"] += 1
            conn.close()
        except OSError as exc:
            code = NO_CONNECT if conn.writer is None else LOST
            self.errors[type(exc).__name__] += 1
            conn.close()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            code = LOST
            self.errors[type(exc).__name__] += 1
            conn.close()
        done = time.perf_counter()
        self.codes[i] = code
        self.svc[i] = done - sent
        return done

    def save(self, prefix: Path, summary: dict[str, Any]) -> None:
        for name in ("codes", "lat", "svc"):
            with open(f"{prefix}.{name}", "wb") as f:
                getattr(self, name).tofile(f)
        summary |= {"errors": dict(self.errors), "duplicates": self.duplicates}
        Path(f"{prefix}.json").write_text(json.dumps(summary))


async def connect_all(host: str, port: int, n: int) -> list[Connection]:
    conns = [Connection(host, port) for _ in range(n)]
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.gather(*(c.open() for c in conns if c.writer is None))
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            return conns


def started(t0: float) -> None:
    print(f"start {time.time() + (t0 - time.perf_counter()):.6f}", flush=True)


async def open_loop(reqs: list[bytes], host: str, port: int, rate: float, connections: int,
                    limit: float, res: Results) -> tuple[float, float]:
    """Request i is due at t0 + i/rate; returns (t0, time of the last answer)."""
    conns = await connect_all(host, port, connections)
    queue: asyncio.Queue[int] = asyncio.Queue()
    n = len(reqs)
    t0 = time.perf_counter() + 0.05
    last = [t0]

    async def worker(conn: Connection) -> None:
        while (i := await queue.get()) >= 0:
            done = await res.send(conn, i, reqs[i], limit)
            res.lat[i] = done - (t0 + i / rate)
            last[0] = max(last[0], done)

    workers = [asyncio.create_task(worker(c)) for c in conns]
    started(t0)
    i = 0
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            queue.put_nowait(i)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(-1)
    await asyncio.gather(*workers)
    for c in conns:
        c.close()
    return t0, last[0]


async def closed_loop(reqs: list[bytes], host: str, port: int, seconds: float, connections: int,
                      limit: float, res: Results) -> tuple[float, float]:
    """Every connection sends its next request as soon as it has the previous answer."""
    conns = await connect_all(host, port, connections)
    t0 = time.perf_counter()
    end = t0 + seconds
    counter = itertools.count()
    last = [t0]

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < end and (i := next(counter)) < len(reqs):
            done = await res.send(conn, i, reqs[i], limit)
            res.lat[i] = res.svc[i]
            last[0] = max(last[0], done)

    started(t0)
    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()
    return t0, last[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", type=Path)
    p.add_argument("--phase", choices=["open", "closed"], required=True)
    p.add_argument("--rate", type=float, default=3000.0, help="open loop: requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--max-rate", type=float, default=20_000.0,
                   help="closed loop: requests built per second of --duration (the most it "
                   "can send)")
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--tag", default="", help="makes wamids unique per phase (default: phase)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    spec = json.loads(args.spec.read_text())
    tag = args.tag or args.phase
    count = int(args.duration * (args.rate if args.phase == "open" else args.max_rate))
    built = time.perf_counter()
    reqs = build_requests(spec, tag, count)
    built = time.perf_counter() - built
    print(f"built {count} requests in {built:.1f} s, mean {sum(map(len, reqs)) / count:.0f} "
          f"bytes", file=sys.stderr, flush=True)
    res = Results(count)
    cpu = os.times()
    if args.phase == "open":
        t0, last = asyncio.run(open_loop(reqs, spec["host"], spec["port"], args.rate,
                                         args.connections, args.timeout, res))
    else:
        t0, last = asyncio.run(closed_loop(reqs, spec["host"], spec["port"], args.duration,
                                           args.connections, args.timeout, res))
    used = os.times()
    elapsed = max(last - t0, 1e-9)
    res.save(args.out, {
        "phase": args.phase, "tag": tag, "planned": count, "rate": args.rate,
        "connections": args.connections, "elapsed": elapsed,
        "sent": sum(1 for c in res.codes if c != NOT_SENT),
        "request_bytes_mean": sum(map(len, reqs)) / max(count, 1),
        "build_seconds": built,
        "cpu": (used.user - cpu.user + used.system - cpu.system) / elapsed})
    print("done", flush=True)


if __name__ == "__main__":
    main()
