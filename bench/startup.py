"""Start-up from a persisted fleet: time from spawning the exporter to its first complete
/metrics, and its resident memory then.

    .venv/bin/python bench/startup.py [--channels 10000] [--wabas 1000] [--runs 3]

The state file is the one `bench/fleet.py` builds. The exporter gets credentials for an API
that does not answer (nothing listens on the port), so everything it serves comes from the
state file, as after a restart during an outage.
"""

from __future__ import annotations

import argparse
import os
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
from bench.processes import free_port, rss_mb  # noqa: E402


def one_run(state: Path, channels: int) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("D360_")} | {
        "D360_STATE_PATH": str(state), "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "D360_API_URL": f"http://127.0.0.1:{free_port()}/api/v2", "D360_PARTNER_ID": "bench",
        "D360_API_KEY": "bench-key", "D360_LOG_LEVEL": "error", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "exporter"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    text = client.get(f"http://127.0.0.1:{port}/metrics").text
                except httpx.TransportError:
                    time.sleep(0.02)
                    continue
                if text.count("whatsapp_usage_updated_timestamp_seconds{") == channels:
                    return time.perf_counter() - started, rss_mb(proc.pid)
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp()) / "state.sqlite3"
    build(state, args.channels, args.wabas).close()
    print(f"state: {args.channels} channels, {state.stat().st_size / 1e6:.1f} MB on disk")
    runs = [one_run(state, args.channels) for _ in range(args.runs)]
    seconds = [s for s, _ in runs]
    print(f"first complete /metrics after start: median {statistics.median(seconds):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"resident memory then: {max(m for _, m in runs):.0f} MB")


if __name__ == "__main__":
    main()
