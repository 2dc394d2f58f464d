"""Start-up from a persisted fleet: time from spawning the exporter to its first complete
/metrics, and its resident memory then.

    .venv/bin/python bench/startup.py [--channels 10000] [--wabas 1000] [--runs 3]
        [--tree DIR --tree DIR2 ...]

The state file is the one `bench/fleet.py` builds. The exporter gets credentials for an API
that does not answer (nothing listens on the port), so everything it serves comes from the
state file, as after a restart during an outage.

`--tree` runs the exporter package of another tree (a directory holding `exporter/`, e.g. from
`git archive <commit> exporter | tar -x -C DIR`) instead of this checkout's; given several
times, the runs alternate between the trees, so that a machine whose speed drifts slows both
alike, and each tree's figures are printed apart. Every run starts from a copy of the same
state file, as built: a run's poller records its failed calls in the file it was given.
"""

from __future__ import annotations

import argparse
import os
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
from bench.processes import free_port, rss_mb  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(state: Path, channels: int, tree: Path = ROOT) -> tuple[float, float, float]:
    """Seconds from spawning to the first complete /metrics; resident MB and CPU seconds of
    the exporter then (the CPU time drifts less than the wall time on a shared machine)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("D360_")} | {
        "D360_STATE_PATH": str(state), "D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "D360_API_URL": f"http://127.0.0.1:{free_port()}/api/v2", "D360_PARTNER_ID": "bench",
        "D360_API_KEY": "bench-key", "D360_LOG_LEVEL": "error", "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "exporter"], env=env, cwd=tree,
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
                    return (time.perf_counter() - started, rss_mb(proc.pid),
                            cpu_seconds(proc.pid))
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=10_000)
    p.add_argument("--wabas", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tree", type=Path, action="append", default=[],
                   help="a directory holding the exporter package to run (repeatable: the runs "
                   "alternate); default: this checkout")
    args = p.parse_args()
    trees = [t.resolve() for t in args.tree] or [ROOT]
    for tree in trees:
        if not (tree / "exporter" / "__main__.py").is_file():
            p.error(f"--tree {tree}: no exporter/__main__.py there")
    state = Path(tempfile.mkdtemp()) / "state.sqlite3"
    build(state, args.channels, args.wabas).close()
    print(f"state: {args.channels} channels, {state.stat().st_size / 1e6:.1f} MB on disk")
    runs: dict[Path, list[tuple[float, float, float]]] = {tree: [] for tree in trees}
    for _ in range(args.runs):
        for tree in trees:
            copy = state.with_name(f"run-{len(runs[tree])}-{trees.index(tree)}.sqlite3")
            shutil.copyfile(state, copy)
            runs[tree].append(one_run(copy, args.channels, tree))
    for tree in trees:
        seconds = [s for s, _, _ in runs[tree]]
        cpu = [c for _, _, c in runs[tree]]
        name = "" if tree == ROOT and len(trees) == 1 else f"{tree}: "
        print(f"{name}first complete /metrics after start: median "
              f"{statistics.median(seconds):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})")
        print(f"{name}resident memory then: {max(m for _, m, _ in runs[tree]):.0f} MB; "
              f"CPU time then: median {statistics.median(cpu):.2f} s "
              f"(runs: {', '.join(f'{c:.2f}' for c in cpu)})")


if __name__ == "__main__":
    main()
