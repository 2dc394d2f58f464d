"""Webhooks at a constant rate from wrk (C), with the poller running and /metrics scraped: the
latency of each answer, whether the counters are exact, and resident memory over the run.

    .venv/bin/python bench/openloop.py [--rate 3000] [--duration 60] [--connections 64]
        [--scrape-every 15] [--channels 10000] [--wabas 1000] [--wrk-cpu 1] [--tree DIR]

1. `bench/fleet.py` builds the persisted 10,000-channel fleet; the exporter is spawned on it in
   one process, with the poller on (credentials for an API port nothing listens on, so its
   discovery retries run as in an outage, and everything it serves comes from the state file),
   the webhook receiver with an HMAC secret and the example rate card (`bench/webhooks.py`'s
   `start_exporter`). Not pinned; wrk is pinned to `--wrk-cpu`.
2. wrk runs `bench/webhook.lua` with `WRK_RATE`: every request a new message, signed, sent to
   a schedule of `--rate` a second. wrk times a request from when it went out, so the script
   also counts requests that went out more than 5 ms behind their slot: while that stays near
   zero, wrk's percentiles are the open loop's.
3. Meanwhile a thread scrapes `/metrics` with gzip every `--scrape-every` seconds (how long
   each took is printed) and another samples the exporter's RSS every second.
4. Exact counters: every request is a new message with one status, so over the run the
   exporter must show as many `ok` answers as statuses counted, and as many messages as
   delivered and read statuses (two in three: statuses cycle sent, delivered, read), and no
   other answer.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import build  # noqa: E402
from bench.processes import machine_line  # noqa: E402
from bench.saturation import LUA, pinned  # noqa: E402
from bench.webhooks import SECRET, Sampler, Scraper, settle, start_exporter, stop  # noqa: E402


def totals(port: int) -> dict[str, float]:
    """Answers by result, and the statuses and messages counted, summed over their series."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
    out = {f"answer_{m[1]}": float(m[2]) for m in re.finditer(
        r'^whatsapp_exporter_webhook_requests_total\{result="(\w+)"\} (\S+)$', text, re.M)}
    for name in ("statuses", "messages"):
        out[name] = sum(float(m[1]) for m in re.finditer(
            rf"^whatsapp_webhook_{name}_total\{{.*\}} (\S+)$", text, re.M))
    out["charging_statuses"] = sum(float(m[1]) for m in re.finditer(
        r'^whatsapp_webhook_statuses_total\{.*status="(?:delivered|read)".*\} (\S+)$', text,
        re.M))
    return out


def percentiles(out: str) -> dict[str, float]:
    found = {}
    for q, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        found[q] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=3000)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--scrape-every", type=float, default=15,
                   help="0: never scraped until the end (the fleet holds no webhook counters)")
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--wrk-cpu", type=int, default=1, help="-1: not pinned")
    p.add_argument("--tree", type=Path, default=ROOT,
                   help="the exporter's source tree (another checkout, to compare commits)")
    p.add_argument("--log", type=Path, help="keep the exporter's log here")
    args = p.parse_args()
    print(machine_line(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        state = workdir / "state.sqlite3"
        build(state, args.channels, args.wabas).close()
        exporter = start_exporter(state, workdir, polling=True, root=args.tree)
        try:
            settle(exporter.proc.pid)
            # The first scrape also starts rendering ahead (Exposition.arefresh).
            before = totals(exporter.metrics_port) if args.scrape_every else {}
            scraper = Scraper(exporter.metrics_port, args.scrape_every or 1e9)
            memory = Sampler(exporter.proc.pid, None)
            scraper.start()
            memory.start()
            env = os.environ | {"WRK_SECRET": SECRET, "WRK_CHANNELS": str(args.channels),
                                "WRK_TAG": f"o{time.time_ns()}", "WRK_RATE": str(args.rate)}
            out = subprocess.run(
                [*pinned(args.wrk_cpu), "wrk", "-t1", f"-c{args.connections}",
                 f"-d{args.duration:g}s", "--latency", "-s", str(LUA),
                 f"http://127.0.0.1:{exporter.webhook_port}/webhook"],
                env=env, capture_output=True, text=True, check=True).stdout
            scraper.halt.set()
            memory.halt.set()
            scraper.join()
            memory.join()
            time.sleep(2)  # the last answers and their commit
            after = totals(exporter.metrics_port)
        finally:
            stop(exporter.proc)
            if args.log:
                shutil.copy(exporter.log, args.log)
    sent = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    schedule = re.search(r"^schedule: .*$", out, re.M)
    q = percentiles(out)
    print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s at {args.rate:g}/s: "
          f"{sent:,} answered, {rate:,.0f}/s; latency p50 {q.get('50', 0):.1f} ms, "
          f"p90 {q.get('90', 0):.1f} ms, p99 {q.get('99', 0):.1f} ms; "
          f"{schedule[0] if schedule else 'no schedule line'}")
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        print(f"!! non-2xx answers: {m[1]}")
    if m := re.search(r"Socket errors: .*", out):
        print(f"!! {m[0]}")
    if scraper.durations:
        took = sorted(scraper.durations)
        print(f"scrapes (gzip): {len(took)}, median {statistics.median(took) * 1e3:.0f} ms, "
              f"longest {took[-1] * 1e3:.0f} ms")
    grew = {k: v - before.get(k, 0.0) for k, v in after.items()}
    ok, statuses, messages = grew.get("answer_ok", 0), grew["statuses"], grew["messages"]
    others = {k: v for k, v in grew.items() if k.startswith("answer_") and k != "answer_ok" and v}
    # Each request is a new message, so each delivered or read status is one message counted.
    # (Which of the last requests made it before wrk closed its connections is not known, so
    # the check is on what the exporter counted, not on wrk's numbering.)
    want_messages = grew["charging_statuses"]
    exact = statuses == ok and messages == want_messages and not others
    print(f"counters over the run: {ok:,.0f} ok answers, {statuses:,.0f} statuses, "
          f"{messages:,.0f} messages (want {want_messages:,.0f}); other answers "
          f"{others or 'none'}: {'EXACT' if exact else 'NOT EXACT'}")
    if memory.samples:
        began = memory.samples[0].at
        timeline = [(sample.at - began, sample.rss) for sample in memory.samples]
        rss = [mb for _, mb in timeline]
        half = [(t, mb) for t, mb in timeline if t >= timeline[-1][0] / 2]
        slope = ((half[-1][1] - half[0][1]) / max(1e-9, half[-1][0] - half[0][0]) * 60
                 if len(half) > 1 else 0.0)
        print(f"RSS: {rss[0]:.0f} MB at the start, {rss[-1]:.0f} MB at the end, "
              f"{max(rss):.0f} MB at most; second half {slope:+.1f} MB/min")


if __name__ == "__main__":
    main()
