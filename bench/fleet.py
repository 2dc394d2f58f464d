"""A large persisted fleet for benchmarks: N channels in WABAs of skewed sizes, each with a
month of usage in every category, calls, a balance and webhook counters, as the exporter would
have stored them. Deterministic for a seed."""

from __future__ import annotations

import calendar
import random
from decimal import Decimal
from pathlib import Path

from exporter.domain import Balance, CallTotal, Channel, Client, MessageTotal, MonthUsage
from exporter.polling.store import Store

NOW = calendar.timegm((2026, 11, 20, 12, 0, 0))
MONTH = calendar.timegm((2026, 11, 1, 0, 0, 0))
KINDS = [("marketing", "regular"), ("marketing", "free_entry_point"),
         ("marketing_lite", "regular"), ("utility", "regular"),
         ("utility", "free_customer_service"), ("authentication", "regular"),
         ("service", "free_customer_service")]


def waba_sizes(channels: int, wabas: int, rnd: random.Random) -> list[int]:
    """Skewed sizes summing to `channels`: a few WABAs over 100 channels, most small."""
    weights = [rnd.paretovariate(1.2) for _ in range(wabas)]
    scale = (channels - wabas) / sum(weights)
    sizes = [1 + int(w * scale) for w in weights]
    sizes[0] += channels - sum(sizes)
    return sizes


def build(path: Path, channels: int = 10_000, wabas: int = 1_000, seed: int = 1) -> Store:
    rnd = random.Random(seed)
    store = Store(path)
    clients = [Client(f"cl_{i:04d}", f"Client {i}", "active") for i in range(max(1, wabas // 10))]
    fleet: list[Channel] = []
    for w, size in enumerate(waba_sizes(channels, wabas, rnd)):
        client = clients[w % len(clients)]
        for i in range(size):
            fleet.append(Channel(f"ch_{len(fleet):06d}", client.id, f"wa_{w:05d}",
                                 str(100_000_000_000_000 + w), f"+49151{len(fleet):07d}",
                                 f"Channel {w}-{i}", "ready"))
    store.set_discovery(clients, fleet)
    for ch in fleet:
        messages = {kind: MessageTotal(rnd.randrange(1, 50_000),
                                       Decimal(rnd.randrange(0, 500_000)) / 100)
                    for kind in KINDS}
        calls = {d: CallTotal(rnd.randrange(100), rnd.randrange(10_000),
                              Decimal(rnd.randrange(1000)) / 100)
                 for d in ("business_initiated", "user_initiated")}
        store.put_usage(ch.id, {MONTH: MonthUsage(MONTH, "USD", messages, calls)},
                        NOW - rnd.randrange(3600), keep_from=MONTH)
        store.put_channel_balance(ch.id, Balance(Decimal(rnd.randrange(10_000)) / 100, "USD"),
                                  NOW)
    for client in clients:
        store.put_client_balance(client.id, Balance(Decimal(1000), "USD"), NOW)
    return store
