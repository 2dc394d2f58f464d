"""Small helpers the benchmarks share for the processes they start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """The processes a process started (the exporter's webhook workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def family(pid: int) -> list[int]:
    return [pid, *children(pid)]


def rss_mb(pid: int, *, with_children: bool = True) -> float:
    """Resident memory of a process and, by default, of the processes it started, in MB."""
    total = 0.0
    for member in family(pid) if with_children else [pid]:
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:")) / 1024
    return total


def machine_line(root: Path) -> str:
    """What a benchmark's figures were measured on: cores, Python, the tree's commit."""
    commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return f"machine: {os.cpu_count()} CPU, Python {sys.version.split()[0]}, commit {commit}"
