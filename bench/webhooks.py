"""Webhook load on the real exporter: open-loop latency at a fixed rate, the exact counters
afterwards, memory over the run, and the same load against a hello-world endpoint on the same
server stack as the physical ceiling.

    .venv/bin/python bench/webhooks.py [--channels 10000] [--wabas 1000] [--rate 3000]
        [--duration 60] [--connections 64] [--saturate-seconds 10] [--saturate-connections 32]
        [--workers N] [--py-spy /tmp/exporter-profile]

1. `bench/fleet.py` builds the persisted state of a fleet (10,000 channels by default) in a
   temporary directory; the exporter is spawned on it (`python -m exporter`, credentials for an
   API port nothing listens on, log level error) with its webhook receiver on a free loopback
   port, an HMAC secret and the example rate card. Webhooks carry the fleet's phone numbers in
   `metadata.display_phone_number`, so they map to the discovered channels.
2. `bench/loadgen.py`, in its own process, builds and signs every request first (one status
   per delivery, each message `sent` then mostly `delivered` and often `read`, with `pricing`),
   then sends them open loop at `--rate` over `--connections` keep-alive connections; latency
   is measured from each request's scheduled time. Then a saturating closed-loop phase.
3. When every request is answered (a delivery is counted in the commit before its answer; the
   inbox only ever holds rows an earlier build left), one scrape of /metrics is compared with
   what the sent statuses must produce, computed here without the exporter's code: PASS or
   FAIL with the differences.
4. The same two phases against a Starlette hello-world route on `exporter.serving`'s embedded
   uvicorn, in its own process.
5. The exporter's RSS is sampled every second (also its CPU time and inbox depth); with
   `--workers N` (`D360_WEBHOOK_WORKERS`) its worker processes are counted in both.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import build  # noqa: E402
from bench.loadgen import NOT_SENT, Delivery, Target, plan  # noqa: E402
from bench.processes import family, free_port, rss_mb  # noqa: E402

SECRET = "bench-webhook-hmac-secret"
CARD = ROOT / "exporter" / "webhooks" / "ratecards" / "example-usd.toml"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the processes it started (webhook workers)."""
    total = 0.0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return total


def write_bytes(pid: int) -> int:
    """Bytes the process (and the processes it started) caused to be written to storage."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in ticks, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {seconds} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    webhook_port: int
    state: Path
    log: Path


def start_exporter(state: Path, workdir: Path, *, polling: bool = True,
                   workers: int = 0, root: Path = ROOT) -> Exporter:
    """`root`: the source tree to run (another checkout, to compare commits in one run)."""
    port, webhook_port = free_port(), free_port()
    api = {"D360_API_URL": f"http://127.0.0.1:{free_port()}/api/v2", "D360_PARTNER_ID": "bench",
           "D360_API_KEY": "bench-key"} if polling else {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("D360_")} | api | {
        "D360_STATE_PATH": str(state), "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "D360_LOG_LEVEL": "error", "D360_LOG_FORMAT": "json",
        "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{webhook_port}",
        "D360_WEBHOOK_HMAC_SECRET": SECRET, "D360_WEBHOOK_RATE_CARD": str(CARD),
        "D360_WEBHOOK_WORKERS": str(workers), "PYTHONPATH": str(root)}
    log = workdir / f"exporter-{port}.log"
    with log.open("wb") as out:
        # From `root`: `python -m` puts the working directory first on sys.path, ahead of
        # PYTHONPATH, so from another checkout's directory that checkout's code would run.
        proc = subprocess.Popen([sys.executable, "-m", "exporter"], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=out)
    wait_port(port, proc)
    wait_port(webhook_port, proc)
    return Exporter(proc, port, webhook_port, state, log)


def start_hello() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-hello", f"127.0.0.1:{port}"],
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    wait_port(port, proc)
    return proc, port


async def serve_hello(host: str, port: int) -> None:
    """The floor: a route that reads the body and answers a tiny JSON 200, on the same
    embedded uvicorn server (`embedded_server`, its HTTP protocol, `bind_socket`) as the
    exporter's receiver."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import JSONResponse, Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from exporter.serving import bind_socket, embedded_server  # noqa: PLC0415

    async def hello(request: Request) -> Response:
        await request.body()
        return JSONResponse({"result": "ok"})

    server = embedded_server(Starlette(routes=[Route("/webhook", hello, methods=["POST"])]))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[bind_socket(host, port)])


# -- sampling --------------------------------------------------------------------------------------

@dataclass
class Sample:
    at: float  # unix time
    rss: float  # MB
    cpu: float  # seconds of CPU used by the process so far
    inbox: int  # deliveries recorded, not yet counted (-1: not known)


class Sampler(threading.Thread):
    """RSS, CPU time and (for the exporter) inbox depth of a process, every second."""

    def __init__(self, pid: int, state: Path | None) -> None:
        super().__init__(daemon=True)
        self.pid, self.state = pid, state
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        db = None
        if self.state is not None:
            db = sqlite3.connect(str(self.state), isolation_level=None, timeout=5)
        try:
            while not self.halt.is_set():
                self.samples.append(self.sample(db))
                self.halt.wait(1.0)
        finally:
            if db is not None:
                db.close()

    def sample(self, db: sqlite3.Connection | None) -> Sample:
        inbox = -1
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                inbox = int(db.execute("SELECT COUNT(*) FROM webhook_inbox").fetchone()[0])
        try:
            return Sample(time.time(), rss_mb(self.pid), cpu_seconds(self.pid), inbox)
        except OSError:
            return Sample(time.time(), math.nan, math.nan, inbox)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in list(self.samples) if start <= s.at <= end]


class Scraper(threading.Thread):
    """Scrapes /metrics (gzip, as Prometheus does) every `every` seconds while the load runs,
    so memory and latency include the exposition kept up to date; records each scrape's
    duration."""

    def __init__(self, port: int, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every = f"http://127.0.0.1:{port}/metrics", every
        self.durations: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60, headers={"Accept-Encoding": "gzip"}) as client:
            while not self.halt.wait(self.every):
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.url).raise_for_status()
                    self.durations.append(time.perf_counter() - started)


def settle(pid: int, limit: float = 120) -> tuple[float, float]:
    """Wait until the process has used under 5% of a core for 3 seconds running (after a
    start against a dead API the poller is busy failing its first calls for some seconds);
    return (seconds waited, CPU share over those last 3 seconds)."""
    began = time.monotonic()
    window = [cpu_seconds(pid)]
    while time.monotonic() - began < limit:
        time.sleep(1)
        window = [*window[-3:], cpu_seconds(pid)]
        if len(window) == 4 and window[-1] - window[0] < 0.15:
            break
    else:
        print(f"!! the exporter did not settle within {limit:.0f} s")
    return time.monotonic() - began, (window[-1] - window[0]) / max(1, len(window) - 1)


def inbox_depth(state: Path) -> int:
    with contextlib.closing(sqlite3.connect(str(state), isolation_level=None, timeout=5)) as db:
        return int(db.execute("SELECT COUNT(*) FROM webhook_inbox").fetchone()[0])


def drain(state: Path, proc: subprocess.Popen[bytes], limit: float = 900) -> float:
    """Seconds until every recorded delivery is counted."""
    began = time.monotonic()
    while inbox_depth(state) > 0:
        if proc.poll() is not None:
            raise SystemExit(f"the exporter exited with {proc.returncode} while counting")
        if time.monotonic() - began > limit:
            raise SystemExit(f"the inbox did not drain in {limit:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


# -- load phases -----------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    summary: dict[str, Any]
    codes: array.array[int]
    lat: array.array[float]
    svc: array.array[float]
    started: float  # unix time of the first scheduled send
    ended: float  # unix time the generator finished
    server: list[Sample] = field(default_factory=list)
    server_busy: float = math.nan  # the server's CPU share of a core, from start to done
    machine_busy: float = math.nan  # cores busy on the whole machine, from start to done
    server_written: float = math.nan  # bytes the server wrote to storage, from start to done

    @property
    def other_load(self) -> float:
        """Cores used by processes other than the server and the generator."""
        return self.machine_busy - self.server_busy - float(self.summary["cpu"])

    @property
    def answered(self) -> list[int]:
        return [i for i, c in enumerate(self.codes) if c > 0]

    @property
    def statuses(self) -> Counter[str]:
        names = {-1: "connection lost", -2: "cannot connect", -3: "timeout"}
        return Counter(names.get(c, str(c)) for c in self.codes if c != NOT_SENT)

    @property
    def ok(self) -> int:
        return sum(1 for c in self.codes if 200 <= c < 300)

    @property
    def rate(self) -> float:
        return float(self.summary["sent"]) / float(self.summary["elapsed"])


def load(spec: Path, workdir: Path, name: str, args: list[str], pid: int | None = None,
         sampler: Sampler | None = None, py_spy: Path | None = None,
         py_spy_seconds: float = 0) -> Phase:
    out = workdir / name
    cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), str(spec), "--out", str(out),
           *args]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert gen.stdout is not None
    started = math.nan
    spy = None
    cpu0 = cpu1 = t0 = t1 = math.nan
    machine0 = machine1 = (0, 0)
    written0 = written1 = 0
    for line in gen.stdout:
        if line.startswith("start "):
            started = float(line.split()[1])
            machine0 = machine_jiffies()
            if pid is not None:
                written0 = write_bytes(pid)
            if pid is not None:
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
            if py_spy is not None and pid is not None:
                spy = subprocess.Popen(
                    [str(py_spy_binary()), "record", "--pid", str(pid), "--rate", "100",
                     "--duration", str(max(1, int(py_spy_seconds))), "--function",
                     "--nonblocking", "--idle", "--format", "raw", "-o", str(py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif line.startswith("done"):
            machine1 = machine_jiffies()
            if pid is not None:
                written1 = write_bytes(pid)
                cpu1, t1 = cpu_seconds(pid), time.monotonic()
            break
    if gen.wait() != 0:
        raise SystemExit(f"the load generator failed ({gen.returncode}): {' '.join(cmd)}")
    ended = time.time()
    if spy is not None:
        spy.wait()
    summary = json.loads(out.with_suffix(".json").read_text())
    codes, lat, svc = array.array("h"), array.array("d"), array.array("d")
    for kind, values in (("codes", codes), ("lat", lat), ("svc", svc)):
        values.frombytes(Path(f"{out}.{kind}").read_bytes())
    phase = Phase(name, summary, codes, lat, svc, started, ended,
                  server_busy=(cpu1 - cpu0) / (t1 - t0) if t1 > t0 else math.nan,
                  machine_busy=(machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
                  * (os.cpu_count() or 1),
                  server_written=written1 - written0)
    if sampler is not None:
        phase.server = sampler.between(started - 1.01, ended + 0.01)
    return phase


def py_spy_binary() -> Path:
    here = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy")
    if here.exists():
        return here
    if found:
        return Path(found)
    raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")


# -- what the counters must say --------------------------------------------------------------------

class Card:
    """The example rate card read directly: longest calling-code prefix, else the default
    market; a category the market lacks is unpriced."""

    def __init__(self, path: Path) -> None:
        raw = tomllib.loads(path.read_text())
        self.currency: str = raw["currency"]
        self.default: str | None = raw.get("default_market")
        self.prices: dict[str, dict[str, Decimal]] = {}
        self.by_code: dict[str, str] = {}
        for market, entry in raw["markets"].items():
            self.prices[market] = {k: Decimal(str(v)) for k, v in entry.items()
                                   if k not in {"calling_codes", "call_per_minute"}}
            for code in entry.get("calling_codes", []):
                self.by_code[str(code)] = market

    def price(self, recipient: str, category: str) -> Decimal | None:
        market = next((self.by_code[recipient[:n]] for n in range(min(len(recipient), 7), 0, -1)
                       if recipient[:n] in self.by_code), self.default)
        return None if market is None else self.prices[market].get(category)


Series = dict[str, dict[tuple[str, ...], float]]
FAMILIES = {  # metric -> label order
    "whatsapp_webhook_messages_total": ("waba_id", "channel_id", "category", "pricing_type",
                                        "billable"),
    "whatsapp_webhook_statuses_total": ("waba_id", "channel_id", "status"),
    "whatsapp_webhook_estimated_cost_total": ("waba_id", "channel_id", "category", "currency"),
    "whatsapp_webhook_unpriced_messages_total": ("waba_id", "channel_id", "category"),
    "whatsapp_webhook_calls_total": ("waba_id", "channel_id", "direction", "status"),
}


def expected(deliveries: Iterator[Delivery], targets: list[Target], card: Card) -> Series:
    """Each (message, status) counts once as a status; each message once, on its first status
    with pricing (every status here has it), in the category and type of that pricing;
    billable ones are priced by the recipient's market, or counted as unpriced."""
    out: Series = {name: {} for name in FAMILIES}
    seen_messages: set[str] = set()
    seen_statuses: set[tuple[str, str]] = set()
    cost: dict[tuple[str, ...], Decimal] = {}

    def add(metric: str, key: tuple[str, ...], amount: float = 1.0) -> None:
        out[metric][key] = out[metric].get(key, 0.0) + amount

    for d in deliveries:
        t = targets[d.target]
        if (d.wamid, d.status) not in seen_statuses:
            seen_statuses.add((d.wamid, d.status))
            add("whatsapp_webhook_statuses_total", (t.waba_id, t.channel_id, d.status))
        if d.wamid in seen_messages:
            continue
        seen_messages.add(d.wamid)
        billable = d.pricing_type == "regular"
        add("whatsapp_webhook_messages_total", (t.waba_id, t.channel_id, d.category,
                                                d.pricing_type, str(billable).lower()))
        if billable:
            price = card.price(d.recipient, d.category)
            if price is None:
                add("whatsapp_webhook_unpriced_messages_total",
                    (t.waba_id, t.channel_id, d.category))
            else:
                key = (t.waba_id, t.channel_id, d.category, card.currency)
                cost[key] = cost.get(key, Decimal(0)) + price
    out["whatsapp_webhook_estimated_cost_total"] = {k: float(v) for k, v in cost.items()}
    return out


_SAMPLE = re.compile(r'^([a-z_]+)\{(.*)\} (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> tuple[Series, dict[str, float]]:
    """The webhook families, and the exporter's own webhook gauges and counters by result."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=300).text
    series: Series = {name: {} for name in FAMILIES}
    own: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(("whatsapp_webhook_", "whatsapp_exporter_webhook_")):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            if line.startswith("whatsapp_exporter_webhook_"):
                name, value = line.rsplit(" ", 1)
                own[name] = float(value)
            continue
        name, labels, value = m.groups()
        if name in FAMILIES:
            found = dict(_LABEL.findall(labels))
            series[name][tuple(found[k] for k in FAMILIES[name])] = float(value)
        elif name.startswith("whatsapp_exporter_webhook_"):
            own[f"{name}{{{labels}}}"] = float(value)
    return series, own


def compare(want: Series, got: Series) -> list[str]:
    """Every series that differs: counts exactly, money to 1e-9 relative (sums of floats)."""
    problems = []
    for name in FAMILIES:
        w, g = want[name], got[name]
        for key in sorted(set(w) | set(g)):
            a, b = w.get(key, 0.0), g.get(key, 0.0)
            money = "cost" in name
            if not (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) if money else a == b):
                problems.append(f"{name}{{{','.join(key)}}}: sent {a:g}, exporter {b:g}")
    return problems


# -- report ----------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f}" if x < 0.1 else f"{x * 1000:,.0f}"


def latency_line(phase: Phase, which: str = "lat") -> str:
    values = [getattr(phase, which)[i] for i in phase.answered]
    return (f"p50 {ms(pct(values, 50))} / p90 {ms(pct(values, 90))} / p99 {ms(pct(values, 99))}"
            f" / max {ms(max(values, default=math.nan))} ms")


def describe(phase: Phase) -> list[str]:
    s = phase.summary
    lines = [f"  {phase.name}: {s['sent']:,} sent in {s['elapsed']:.1f} s = {phase.rate:,.0f}/s"
             f" over {s['connections']} connections; responses "
             + ", ".join(f"{k}: {v:,}" for k, v in sorted(phase.statuses.items()))]
    if s["errors"]:
        lines.append(f"  !! connection errors: {s['errors']}")
    bad = {k: v for k, v in phase.statuses.items() if not k.startswith("2")}
    if bad:
        lines.append(f"  !! NOT 2xx: {bad}")
    if s["duplicates"]:
        lines.append(f"  !! answered duplicate: {s['duplicates']}")
    lines.append(f"    latency from {'schedule' if s['phase'] == 'open' else 'send'}: "
                 f"{latency_line(phase)}")
    if s["phase"] == "open":
        lines.append(f"    of which on the wire (send to answer): {latency_line(phase, 'svc')}")
    else:
        if s["sent"] >= s["planned"]:
            lines.append("  !! ran out of pre-built requests: raise --max-rate")
    if s["phase"] == "open" and phase.rate < 0.98 * s["rate"]:
        lines.append(f"  !! offered {s['rate']:,.0f}/s, answered {phase.rate:,.0f}/s: the "
                     "server fell behind; requests queued in the generator, latency grows "
                     "with the backlog")
    busy, _ = server_cpu(phase)
    lines.append(f"    server CPU {busy * 100:.0f}% of a core; generator CPU "
                 f"{s['cpu'] * 100:.0f}% of a core; requests {s['request_bytes_mean']:.0f} "
                 "bytes on average")
    lines.append(f"    server wrote {phase.server_written / 1e6:,.0f} MB to storage, "
                 f"{phase.server_written / max(1, len(phase.answered)) / 1024:.1f} KiB per "
                 "request")
    lines.append(f"    {'!! ' if phase.other_load > 0.15 else ''}other load on the machine: "
                 f"{max(0.0, phase.other_load):.2f} cores (whole machine "
                 f"{phase.machine_busy:.2f} busy)")
    return lines


def server_cpu(phase: Phase, until: list[Sample] | None = None) -> tuple[float, float]:
    """(share of a core from the first send to the last answer, CPU microseconds per answered
    request from the sample before the phase to the phase's end or to `until`)."""
    samples = phase.server + (until or [])
    if len(samples) < 2:
        return phase.server_busy, math.nan
    used = samples[-1].cpu - samples[0].cpu
    return phase.server_busy, used / max(1, len(phase.answered)) * 1e6


@dataclass
class Rss:
    start: float
    low: float
    high: float
    end: float
    slope: float  # MB per minute over the second half


def rss_figures(samples: list[Sample], start: float, end: float) -> Rss:
    run = [s for s in samples if start - 1.01 <= s.at <= end + 0.01 and not math.isnan(s.rss)]
    half = [s for s in run if s.at >= start + (end - start) / 2]
    slope = math.nan
    if len(half) >= 3:
        mx = sum(s.at for s in half) / len(half)
        my = sum(s.rss for s in half) / len(half)
        var = sum((s.at - mx) ** 2 for s in half)
        slope = sum((s.at - mx) * (s.rss - my) for s in half) / var * 60 if var else math.nan
    return Rss(run[0].rss, min(s.rss for s in run), max(s.rss for s in run), run[-1].rss, slope)


def profile_summary(path: Path, seconds: float, top: int = 15) -> list[str]:
    """Own and total samples per function from py-spy's collapsed stacks (recorded with
    --idle: a leaf in selectors' select is the event loop waiting for work)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return ["  (no samples)"]
    idle = sum(n for f, n in own.items()
               if f.split(" (", 1)[0].endswith("select") and "selectors.py" in f)
    rows = [f"  {samples:,} samples in {seconds:.0f} s at 100 Hz; the event loop waited in "
            f"select for {idle / samples * 100:.0f}% of them",
            "", "  | own % | function |", "  |---|---|"]
    rows += [f"  | {n / samples * 100:.1f} | `{short(f)}` |" for f, n in own.most_common(top)]
    rows += ["", "  | total % | function |", "  |---|---|"]
    rows += [f"  | {n / samples * 100:.1f} | `{short(f)}` |" for f, n in total.most_common(top)]
    return rows


def short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where.replace(str(ROOT) + '/', '')})"


# -- main ------------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--rate", type=float, default=3000.0, help="open loop, requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="open loop, seconds")
    p.add_argument("--connections", type=int, default=64, help="open loop connection pool")
    p.add_argument("--saturate-seconds", type=float, default=10.0, help="0 skips")
    p.add_argument("--saturate-connections", type=int, default=32)
    p.add_argument("--max-rate", type=float, default=20_000.0,
                   help="requests pre-built per second of the saturating phase")
    p.add_argument("--unique-wamids", action="store_true",
                   help="every delivery a new message (default: sent/delivered/read lifecycles)")
    p.add_argument("--skip-hello", action="store_true")
    p.add_argument("--workers", type=int, default=0,
                   help="D360_WEBHOOK_WORKERS: webhook worker processes (0: in the exporter's)")
    p.add_argument("--scrape-every", type=float, default=0,
                   help="scrape /metrics (gzip) every this many seconds during the open loop")
    p.add_argument("--webhook-only", action="store_true",
                   help="no API credentials: the exporter only counts webhooks (channels still "
                   "come from the fleet's state file)")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="record the exporter with py-spy during the open loop (collapsed "
                   "stacks, speedscope and flamegraph tools read them)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--serve-hello", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_hello:
        host, port = args.serve_hello.rsplit(":", 1)
        asyncio.run(serve_hello(host, int(port)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    try:
        run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    machine = (f"{os.cpu_count()} CPU, "
               + next((line.split(":", 1)[1].strip() for line in
                       Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), "?")
               + f", Python {sys.version.split()[0]}")
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    machine += f"; commit {commit or '?'}"
    print(f"machine: {machine}")
    state = workdir / "state.sqlite3"
    began = time.perf_counter()
    store = build(state, args.channels, args.wabas)
    fleet = sorted(store.channels.values(), key=lambda ch: ch.id)
    store.close()
    targets = [Target(ch.waba_label, ch.id, "".join(c for c in ch.phone_number if c.isdigit()),
                      str(106_000_000_000_000 + n)) for n, ch in enumerate(fleet)]
    print(f"fleet: {len(targets):,} channels in {args.wabas:,} WABAs, "
          f"{state.stat().st_size / 1e6:.1f} MB state, "
          f"built in {time.perf_counter() - began:.1f} s")

    def spec_for(port: int) -> Path:
        spec = workdir / f"spec-{port}.json"
        spec.write_text(json.dumps({
            "host": "127.0.0.1", "port": port, "path": "/webhook", "secret": SECRET,
            "seed": args.seed, "base_ts": int(time.time()), "lifecycle": not args.unique_wamids,
            "targets": targets}))
        return spec

    open_args = ["--phase", "open", "--rate", str(args.rate), "--duration", str(args.duration),
                 "--connections", str(args.connections)]
    closed_args = ["--phase", "closed", "--duration", str(args.saturate_seconds),
                   "--connections", str(args.saturate_connections),
                   "--max-rate", str(args.max_rate)]

    # -- the exporter
    exporter = start_exporter(state, workdir, polling=not args.webhook_only,
                              workers=args.workers)
    sampler = Sampler(exporter.proc.pid, state)
    sampler.start()
    spec = spec_for(exporter.webhook_port)
    try:
        waited, idle_cpu = settle(exporter.proc.pid)
        idle_rss = rss_mb(exporter.proc.pid)
        print(f"\nexporter pid {exporter.proc.pid}: settled {waited:.0f} s after start; then "
              f"RSS {idle_rss:.0f} MB, CPU {idle_cpu * 100:.0f}% of a core before load")
        scraper = Scraper(exporter.metrics_port, args.scrape_every) if args.scrape_every else None
        if scraper is not None:
            scraper.start()
        ex_open = load(spec, workdir, "exporter-open", open_args, exporter.proc.pid, sampler,
                       args.py_spy, args.duration)
        if scraper is not None:
            scraper.halt.set()
            scraper.join()
            d = sorted(scraper.durations)
            if d:
                print(f"    scrapes during the open loop: {len(d)}, gzip, duration median "
                      f"{d[len(d) // 2] * 1000:.0f} ms, max {d[-1] * 1000:.0f} ms")
        inbox_open = max((s.inbox for s in ex_open.server), default=-1)
        drain_open = drain(state, exporter.proc)
        after_open = sampler.sample(None)
        rss = rss_figures(sampler.samples, ex_open.started, ex_open.ended)
        ex_closed = None
        drain_closed = math.nan
        if args.saturate_seconds > 0:
            ex_closed = load(spec, workdir, "exporter-closed", closed_args,
                             exporter.proc.pid, sampler)
            drain_closed = drain(state, exporter.proc)
        time.sleep(1.2)
        end_rss = rss_mb(exporter.proc.pid)
        want = expected(_accepted(args, ex_open, ex_closed, len(targets)), targets, Card(CARD))
        scraped = time.perf_counter()
        got, own = scrape(exporter.metrics_port)
        scraped = time.perf_counter() - scraped
    finally:
        sampler.halt.set()
        stop(exporter.proc)
    problems = compare(want, got)
    accepted = ex_open.ok + (ex_closed.ok if ex_closed else 0)
    ok_counter = own.get('whatsapp_exporter_webhook_requests_total{result="ok"}', math.nan)
    if ok_counter != accepted:
        problems.append(f"whatsapp_exporter_webhook_requests_total{{result=\"ok\"}}: "
                        f"{ok_counter:g}, answered 2xx {accepted}")
    for gauge in ("whatsapp_exporter_webhook_inbox_pending",
                  "whatsapp_exporter_webhook_dead_letters"):
        if own.get(gauge, math.nan) != 0:
            problems.append(f"{gauge} = {own.get(gauge)}")
    log_lines = exporter.log.read_text(errors="replace").splitlines()
    events = Counter(_event(line) for line in log_lines)
    first_of: dict[str, str] = {}
    for line in log_lines:
        first_of.setdefault(_event(line), line)

    # -- the hello-world floor
    hello_open = hello_closed = None
    if not args.skip_hello:
        proc, port = start_hello()
        hello_sampler = Sampler(proc.pid, None)
        hello_sampler.start()
        try:
            hspec = spec_for(port)
            hello_open = load(hspec, workdir, "hello-open", open_args, proc.pid, hello_sampler)
            if args.saturate_seconds > 0:
                hello_closed = load(hspec, workdir, "hello-closed", closed_args, proc.pid,
                                    hello_sampler)
        finally:
            hello_sampler.halt.set()
            stop(proc)

    # -- report
    print("\n== exporter ==")
    for phase in (ex_open, ex_closed):
        if phase is not None:
            print("\n".join(describe(phase)))
    _, cpu_per = server_cpu(ex_open, [after_open])
    print(f"    exporter: {cpu_per:.0f} us of CPU per webhook including counting (open loop "
          "until the inbox was empty)")
    print(f"    inbox: at most {inbox_open:,} waiting during the open loop; empty "
          f"{drain_open:.1f} s after the last answer")
    if ex_closed is not None:
        print(f"    saturation: {ex_closed.ok:,} recorded in {ex_closed.summary['elapsed']:.1f} s,"
              f" counted {drain_closed:.1f} s after the last answer: "
              f"{ex_closed.ok / (ex_closed.summary['elapsed'] + drain_closed):,.0f}/s end to end")
    span = ex_open.ended - ex_open.started
    print(f"    RSS: before load {idle_rss:.0f} MB; open loop ({span:.0f} s) start "
          f"{rss.start:.0f}, min "
          f"{rss.low:.0f}, max {rss.high:.0f}, end {rss.end:.0f} MB; slope over the second "
          f"half {rss.slope:+.2f} MB/min; after everything {end_rss:.0f} MB")
    print(f"    final scrape: {scraped:.2f} s; log lines by event: {dict(events)}")
    for event, line in first_of.items():
        print(f"  !! exporter logged {event} x{events[event]}; the first: {_log_detail(line)}")
    verdict = "PASS" if not problems else "FAIL"
    totals = {name.removeprefix("whatsapp_webhook_").removesuffix("_total"):
              sum(got[name].values()) for name in FAMILIES}
    print(f"\ncounter check: {verdict} ({len(want['whatsapp_webhook_statuses_total']):,} status "
          f"series, {len(want['whatsapp_webhook_messages_total']):,} message series; totals "
          + ", ".join(f"{k} {v:,.2f}" if "cost" in k else f"{k} {v:,.0f}"
                      for k, v in totals.items()) + ")")
    for line in problems[:40]:
        print(f"  {line}")
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more")

    if hello_open is not None:
        print("\n== hello world (exporter.serving's embedded uvicorn, reads the body, answers "
              "JSON 200) ==")
        for phase in (hello_open, hello_closed):
            if phase is not None:
                print("\n".join(describe(phase)))
        _, per = server_cpu(hello_open)
        print(f"    server: {per:.0f} us of CPU per request (open loop)")

    if args.py_spy is not None and args.py_spy.exists():
        print(f"\n== py-spy, exporter during the open loop ({args.py_spy}) ==")
        print("\n".join(profile_summary(args.py_spy, args.duration)))

    print("\n== summary ==\n")
    print(f"{machine}; fleet {len(targets):,} channels; open loop {args.rate:,.0f}/s for "
          f"{args.duration:g} s over {args.connections} connections; saturation "
          f"{args.saturate_seconds:g} s over {args.saturate_connections} connections; "
          f"webhook workers {args.workers}\n")
    rows = [("", "exporter", "hello world")]

    def both(f: Any) -> tuple[str, str]:
        return f(ex_open, ex_closed), (f(hello_open, hello_closed) if hello_open else "-")

    rows.append(("open loop: achieved rate", *both(lambda o, _: f"{o.rate:,.0f}/s")))
    rows.append(("latency p50 / p90 / p99 / max (ms, from schedule)",
                 *both(lambda o, _: latency_line(o).replace(" ms", "").replace("p50 ", "")
                       .replace("p90 ", "").replace("p99 ", "").replace("max ", ""))))
    rows.append(("responses", *both(lambda o, _: ", ".join(
        f"{k}: {v:,}" for k, v in sorted(o.statuses.items())))))
    rows.append(("connection errors", *both(
        lambda o, _: str(sum(o.summary["errors"].values())))))
    def cpu_cell(o: Phase, _: Phase | None) -> str:
        busy, per = server_cpu(o, [after_open] if o is ex_open else None)
        return f"{busy * 100:.0f}%; {per:.0f} us"

    rows.append(("server CPU in the open loop (share of a core; per request)", *both(cpu_cell)))
    if ex_closed is not None:
        rows.append(("saturation (closed loop) throughput", *both(
            lambda _, c: f"{c.rate:,.0f}/s" if c else "-")))
        rows.append(("saturation latency p50 / p99 (ms)", *both(
            lambda _, c: (f"{ms(pct([c.lat[i] for i in c.answered], 50))} / "
                          f"{ms(pct([c.lat[i] for i in c.answered], 99))}") if c else "-")))
        if hello_closed is not None:
            rows.append(("throughput ratio exporter / hello world",
                         f"{ex_closed.rate / hello_closed.rate:.2f}", ""))
        rows.append(("counting after saturation",
                     f"{drain_closed:.1f} s to empty the inbox; "
                     f"{ex_closed.ok / (ex_closed.summary['elapsed'] + drain_closed):,.0f}/s "
                     "end to end", ""))
    rows.append(("inbox after the open loop", f"max {inbox_open:,}; empty in {drain_open:.1f} s",
                 ""))
    rows.append(("other load on the machine, open / saturation (cores)", *both(
        lambda o, c: f"{max(0.0, o.other_load):.2f} / {max(0.0, c.other_load):.2f}" if c
        else f"{max(0.0, o.other_load):.2f}")))
    rows.append(("storage written per request, open / saturation (KiB)", *both(
        lambda o, c: "{:.1f} / {:.1f}".format(
            *(p.server_written / max(1, len(p.answered)) / 1024 for p in (o, c or o))))))
    rows.append(("counter check", f"{verdict} ({len(problems)} differences)", ""))
    rows.append(("RSS start / min / max / end (MB)",
                 f"{rss.start:.0f} / {rss.low:.0f} / {rss.high:.0f} / {rss.end:.0f}", ""))
    rows.append(("RSS slope, second half of the open loop", f"{rss.slope:+.2f} MB/min", ""))
    print(f"| {' | '.join(rows[0])} |\n|---|---|---|")
    for row in rows[1:]:
        print(f"| {' | '.join(row)} |")
    if problems:
        sys.exit(1)


def _accepted(args: argparse.Namespace, open_phase: Phase, closed_phase: Phase | None,
              targets: int) -> Iterator[Delivery]:
    """The deliveries the exporter answered 2xx, rebuilt from the generator's seed."""
    for phase in (open_phase, closed_phase):
        if phase is None:
            continue
        s = phase.summary
        deliveries = plan(args.seed, s["tag"], s["planned"], targets,
                          lifecycle=not args.unique_wamids)
        for d, code in zip(deliveries, phase.codes, strict=True):
            if 200 <= code < 300:
                yield d


def _log_detail(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    tail = " | ".join(str(entry.pop("exception", "")).strip().splitlines()[-3:])
    return f"{entry} {tail}"[:1200]


def _event(line: str) -> str:
    try:
        return str(json.loads(line).get("event", "?"))
    except ValueError:
        return "(not JSON)"


if __name__ == "__main__":
    main()
