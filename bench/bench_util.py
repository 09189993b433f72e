"""Helpers the server benches share: a free loopback port, a process's CPU seconds and RSS, percentiles."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], p: float) -> float:
    """The `p`-th percentile of `xs` (nearest rank; NaN when empty)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def bin_body(nodes: int, b: int, prefix: str = "Svc_") -> bytes:
    """Bin `b`'s NDJSON node frames for services `<prefix>0..nodes-1` (arrivals, served, capacity)."""
    rows = []
    for i in range(nodes):
        cap = 100 + (i * 7 + b * 3) % 50
        arr = 40 + (i * 13 + b * 11) % 90
        rows.append(
            b'{"bin":%d,"node":"%s%d","arrivals":%d,"served":%d,"capacity":%d}'
            % (b, prefix.encode(), i, arr, min(arr, cap), cap)
        )
    return b"\n".join(rows)
