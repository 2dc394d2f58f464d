"""Webhook saturation as a ratio: the exporter against a bare ASGI endpoint on the same server
stack, loaded by the same wrk on its own core, in alternating rounds of one run.

    .venv/bin/python bench/saturation.py [--rounds 3] [--seconds 10] [--connections 32]
        [--channels 10000] [--wabas 1000] [--server-cpu 0] [--wrk-cpu 1] [--py-spy PREFIX]
        [--baseline TREE]

1. `bench/fleet.py` builds the persisted 10,000-channel fleet; the exporter is spawned on it
   webhook-only (no API credentials), with an HMAC secret and the example rate card, one
   process (`bench/webhooks.py`'s `start_exporter`).
2. The floor is a bare ASGI app (no framework: it reads the body and sends a small JSON 200) on
   `exporter.serving`'s embedded uvicorn, the exporter's own server stack.
3. Each round runs `wrk -t1 -cN` with `bench/webhook.lua` (every request a new message,
   signed) first against the floor, then against the exporter; the ratio is computed per
   round and its median reported. Both servers are pinned to one core (`--server-cpu`), wrk
   to the other (`--wrk-cpu`).
4. At the end, the exporter's own count of answered deliveries by result is read from its
   `/metrics`: every one must be `ok` (a signature or parse failure would show here).

With `--py-spy PREFIX`, the exporter's rounds are profiled (PREFIX-N.txt, raw py-spy output).
With `--baseline TREE` (another checkout, e.g. `git worktree add /tmp/base COMMIT`), that
tree's exporter runs too, on its own copy of the state, in the same rounds: before and after
in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
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
from bench.processes import free_port, machine_line  # noqa: E402
from bench.webhooks import SECRET, cpu_seconds, settle, start_exporter, stop, wait_port  # noqa: E402

LUA = ROOT / "bench" / "webhook.lua"


async def serve_bare(host: str, port: int) -> None:
    """The floor: plain ASGI, the body read and a fixed JSON answer, nothing else."""
    import signal  # noqa: PLC0415

    from starlette.types import Message, Receive, Scope, Send  # noqa: PLC0415

    from exporter.serving import bind_socket, embedded_server  # noqa: PLC0415

    start: Message = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")]}
    body: Message = {"type": "http.response.body", "body": b'{"result":"ok"}'}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        await send(start)
        await send(body)

    server = embedded_server(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[bind_socket(host, port)])


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu >= 0 and shutil.which("taskset") else []


def pin(pid: int, cpu: int) -> None:
    """Pin a process and all its threads (the exporter's checkpoint thread too)."""
    if cpu >= 0:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                       stdout=subprocess.DEVNULL)


def wrk(port: int, args: argparse.Namespace, seconds: float, tag: str, pid: int
        ) -> dict[str, float]:
    env = os.environ | {"WRK_SECRET": SECRET, "WRK_CHANNELS": str(args.channels),
                        "WRK_TAG": tag}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(pid)
    began = time.perf_counter()
    out = subprocess.run(
        [*pinned(args.wrk_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s",
         "--latency", "-s", str(LUA), f"http://127.0.0.1:{port}/webhook"],
        env=env, capture_output=True, text=True, check=True).stdout
    server_used = cpu_seconds(pid) - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    found = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
             "requests": float(re.search(r"(\d+) requests in", out)[1]),  # type: ignore[index]
             "non2xx": 0.0, "errors": 0.0,
             "wrk_cpu": wrk_cpu / (time.perf_counter() - began)}
    # The server's CPU per answered request: steadier than requests/s on a shared machine,
    # where a neighbour's load takes the server's core away for part of a round.
    found["cpu_us"] = server_used / max(1.0, found["requests"]) * 1e6
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        found["non2xx"] = float(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        found["errors"] = float(sum(int(g) for g in m.groups()))
    if m := re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out):
        found["p99_ms"] = float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]
    return found


def results(metrics_port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60).text
    return {m[1]: float(m[2]) for m in re.finditer(
        r'^whatsapp_exporter_webhook_requests_total\{result="(\w+)"\} (\S+)$', text, re.M)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--server-cpu", type=int, default=0, help="-1: not pinned")
    p.add_argument("--wrk-cpu", type=int, default=1, help="-1: not pinned")
    p.add_argument("--py-spy", help="profile the exporter's rounds into PREFIX-N.txt")
    p.add_argument("--baseline", type=Path, help="another source tree to run side by side")
    p.add_argument("--serve-bare", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_bare:
        host, port = args.serve_bare.rsplit(":", 1)
        asyncio.run(serve_bare(host, int(port)))
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    print(machine_line(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        state = workdir / "state.sqlite3"
        build(state, args.channels, args.wabas).close()
        port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", f"127.0.0.1:{port}"],
                                env=os.environ | {"PYTHONPATH": str(ROOT)})
        base_state = workdir / "base" / "state.sqlite3"
        if args.baseline:
            base_state.parent.mkdir()
            shutil.copy(state, base_state)
        exporter = start_exporter(state, workdir, polling=False)
        baseline = (start_exporter(base_state, workdir, polling=False, root=args.baseline)
                    if args.baseline else None)
        try:
            wait_port(port, bare)
            pin(bare.pid, args.server_cpu)
            pin(exporter.proc.pid, args.server_cpu)
            settle(exporter.proc.pid)
            targets = {"bare ASGI": port, "exporter": exporter.webhook_port}
            pids = {"bare ASGI": bare.pid, "exporter": exporter.proc.pid}
            if baseline is not None:
                pin(baseline.proc.pid, args.server_cpu)
                settle(baseline.proc.pid)
                targets["baseline"] = baseline.webhook_port
                pids["baseline"] = baseline.proc.pid
            # Not scraped before the end: a scrape makes the exporter render ahead from then on
            # (Exposition.arefresh), which is the scrape's cost, not the webhooks'.
            sent = 0.0
            for name, target in targets.items():
                warm = wrk(target, args, args.warmup, f"warm{name[0]}{time.time_ns()}",
                           pids[name])
                if name == "exporter":
                    sent += warm["requests"]
            ratios: list[float] = []
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            base_ratios: list[float] = []
            print(f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, {LUA.name}; "
                  f"servers on CPU {args.server_cpu}, wrk on CPU {args.wrk_cpu}")
            for n in range(args.rounds):
                row = {}
                for name, target in targets.items():
                    spy = None
                    if args.py_spy and name == "exporter":
                        spy = subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200",
                             "--nolineno", "-f", "raw", "-o", f"{args.py_spy}-{n}.txt", "-d",
                             str(int(args.seconds)), "-p", str(exporter.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    row[name] = wrk(target, args, args.seconds,
                                    f"r{n}{name[0]}{time.time_ns()}", pids[name])
                    if spy is not None:
                        spy.wait()
                    if name == "exporter":
                        sent += row[name]["requests"]
                for name, r in row.items():
                    cpu[name].append(r["cpu_us"])
                ratio = row["exporter"]["rps"] / row["bare ASGI"]["rps"]
                ratios.append(ratio)
                if baseline is not None:
                    base_ratios.append(row["baseline"]["rps"] / row["bare ASGI"]["rps"])
                    ratio_text = f"; ratios {ratio:.3f}, baseline {base_ratios[-1]:.3f}"
                else:
                    ratio_text = f"; ratio {ratio:.3f}"
                print(f"round {n + 1}: " + "; ".join(
                    f"{name} {r['rps']:,.0f}/s ({r['cpu_us']:.0f} us CPU each, "
                    f"p99 {r.get('p99_ms', float('nan')):.1f} ms, "
                    f"non-2xx {r['non2xx']:.0f}, socket errors {r['errors']:.0f}, "
                    f"wrk {r['wrk_cpu'] * 100:.0f}% of a core)"
                    for name, r in row.items()) + ratio_text)
            print(f"ratio exporter / bare ASGI: median {statistics.median(ratios):.3f} "
                  f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
            print("CPU per request, median: " + ", ".join(
                f"{name} {statistics.median(v):.0f} us" for name, v in cpu.items())
                + "; bare / exporter: "
                + f"{statistics.median(cpu['bare ASGI']) / statistics.median(cpu['exporter']):.3f}")
            if base_ratios:
                print(f"ratio baseline / bare ASGI: median {statistics.median(base_ratios):.3f}")
            counted = results(exporter.metrics_port)
            others = {k: v for k, v in counted.items() if k != "ok" and v}
            # wrk stops with requests in flight: those are answered, not counted by wrk.
            print(f"exporter answered: {counted.get('ok', 0):,.0f} ok against wrk's "
                  f"{sent:,.0f} completed (at most {args.connections} a phase in flight "
                  f"when wrk stopped); other results: {others or 'none'}")
        finally:
            stop(exporter.proc)
            if baseline is not None:
                stop(baseline.proc)
            stop(bare)


if __name__ == "__main__":
    main()
