"""The webhook request path in process, without HTTP: CPU per delivery of counting and recording
(`WebhookState.accept_many`, with its folds), or of the receiver's checks and parsing, and the
pages a run writes to the WAL; for this tree and, side by side, for others.

    .venv/bin/python bench/commit.py [--mode accept|receiver] [--deliveries 30000]
        [--batch 12] [--rounds 3] [--fold-table-rows N] [--tree DIR ...]

Bodies are those of `bench/webhook.lua`: one status each, every one a new message on one of
10,000 channels, statuses cycling sent, delivered, read, all with pricing, the example rate
card. `accept` parses and counts them in batches of `--batch` (what the receiver's 5 ms
gathering makes of 32 connections), folding when a fold is due, as the receiver does after a
batch's answers; then it counts the WAL's frames (automatic checkpoints off for the count).
`receiver` sends each body, signed, through the ASGI app with a recorder that answers at once:
headers, body read, HMAC, JSON and parsing, the answer. Each tree runs in its own process, the
trees alternating round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ("sent", "delivered", "read")
KINDS = (("marketing", "regular", "true"), ("utility", "regular", "true"),
         ("authentication", "regular", "true"), ("service", "free_customer_service", "false"),
         ("utility", "free_customer_service", "false"), ("marketing_lite", "regular", "true"))
RECIPIENTS = ("4917612345678", "447700123456", "5511991234567", "919812345678", "14155550123",
              "34612345678")
SECRET = b"bench-secret"


def body(n: int, at: int) -> bytes:
    channel = n * 7919 % 10_000
    category, pricing_type, billable = KINDS[n % 6]
    status = {"id": f"wamid.bench.{n}", "status": STATUSES[n % 3], "timestamp": str(at),
              "recipient_id": RECIPIENTS[n % 6],
              "pricing": {"billable": billable == "true", "pricing_model": "PMP",
                          "category": category, "type": pricing_type}}
    value = {"messaging_product": "whatsapp", "metadata": {
        "display_phone_number": f"49151{channel:07d}",
        "phone_number_id": str(200_000_000_000_000 + channel)}, "statuses": [status]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": str(100_000_000_000_000 + channel % 1000),
        "changes": [{"value": value, "field": "messages"}]}]}, separators=(",", ":")).encode()


def run_accept(deliveries: int, batch: int, fold_table_rows: int) -> str:
    import exporter.db  # noqa: PLC0415 - the tree's own modules, after sys.path is set
    from exporter.webhooks import state as webhook_state  # noqa: PLC0415
    from exporter.webhooks.parser import Delivery, parse  # noqa: PLC0415
    from exporter.webhooks.ratecard import load_rate_card  # noqa: PLC0415

    connect = exporter.db.connect

    def counted_connect(path: str) -> Any:
        db = connect(path)
        db.execute("PRAGMA wal_autocheckpoint=0")  # every frame stays in the WAL, to count
        return db

    webhook_state.connect = counted_connect  # type: ignore[attr-defined]
    card = load_rate_card(Path(exporter.__file__).parent / "webhooks" / "ratecards"
                          / "example-usd.toml")
    mapping = {f"49151{c:07d}": webhook_state.ChannelLabel(str(100_000_000_000_000 + c % 1000),
                                                           f"ch{c}") for c in range(10_000)}
    now = float(int(time.time()))
    bodies = [body(n, int(now)) for n in range(deliveries)]
    with tempfile.TemporaryDirectory() as tmp:
        state = webhook_state.WebhookState(Path(tmp) / "s.db", channel_of=mapping.get,
                                           rate_card=card)
        if fold_table_rows and hasattr(state, "FOLD_TABLE_ROWS"):
            state.FOLD_TABLE_ROWS = fold_table_rows
        pauses: list[float] = []
        began = time.process_time()
        for i in range(0, deliveries, batch):
            state.accept_many([Delivery(b, now, parse(json.loads(b)))
                               for b in bodies[i:i + batch]], now)
            if hasattr(state, "fold_due") and state.fold_due(now):
                folding = time.perf_counter()
                state.fold()
                pauses.append(time.perf_counter() - folding)
        if hasattr(state, "fold"):
            state.fold()
        used = time.process_time() - began
        frames = state._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        state.close()
    folds = (f", {len(pauses)} folds of median {statistics.median(pauses) * 1e3:.1f} ms"
             if pauses else "")
    return (f"{used / deliveries * 1e6:.1f} us CPU a delivery, "
            f"{frames / deliveries:.2f} WAL frames a delivery ({frames * 4120 / 1e6:.0f} MB)"
            + folds)


def run_receiver(deliveries: int) -> str:
    from exporter.webhooks.receiver import WebhookAuth, WebhookReceiver  # noqa: PLC0415

    class Answered:
        async def append(self, delivery: Any) -> bool:
            return True

    app = WebhookReceiver(Answered(), WebhookAuth(header="x-secret", secret=None,
                                                  hmac_secret=SECRET.decode()),
                          lambda result: None, now=time.time, max_body_bytes=65_536,
                          read_timeout_seconds=10, forward_headers=None,
                          on_accept=lambda: None)
    requests = []
    for n in range(deliveries):
        raw = body(n, int(time.time()))
        signature = b"sha256=" + hmac.new(SECRET, raw, "sha256").hexdigest().encode()
        requests.append(({"type": "http", "path": "/webhook", "method": "POST", "headers": [
            (b"host", b"bench"), (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()), (b"x-hub-signature-256", signature)]},
            {"type": "http.request", "body": raw, "more_body": False}))

    async def send(message: Any) -> None:
        return None

    async def main() -> float:
        async def one(scope: Any, message: Any) -> None:
            async def receive() -> Any:
                return message
            await app(scope, receive, send)

        for scope, message in requests[:1000]:  # warm
            await one(scope, message)
        began = time.process_time()
        for scope, message in requests:
            await one(scope, message)
        return time.process_time() - began

    used = asyncio.run(main())
    return f"{used / deliveries * 1e6:.1f} us CPU a request"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("accept", "receiver"), default="accept")
    p.add_argument("--deliveries", type=int, default=30_000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fold-table-rows", type=int, default=0,
                   help="accept: fold at this many table rows instead of the tree's own")
    p.add_argument("--tree", type=Path, action="append", default=[],
                   help="another source tree to run too (repeatable)")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        sys.path.insert(0, str(args.one))
        print(run_accept(args.deliveries, args.batch, args.fold_table_rows)
              if args.mode == "accept"
              else run_receiver(args.deliveries))
        return
    trees = [ROOT, *args.tree]
    for n in range(args.rounds):
        for tree in trees:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(tree), "--mode", args.mode,
                 "--deliveries", str(args.deliveries), "--batch", str(args.batch),
                 "--fold-table-rows", str(args.fold_table_rows)],
                env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True,
                check=True).stdout.strip()
            print(f"round {n + 1}, {tree}: {out}")


if __name__ == "__main__":
    main()
