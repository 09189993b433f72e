#!/usr/bin/env python3
"""Live ingest benchmark (issue 3): a real `flowtime serve` subprocess, a 1,000-node topology model
(1,000 services, arrivals / served / capacity from telemetry), and 3 metrics × 1,000 nodes per bin
sent as NDJSON batches by a separate sender process, while a WebSocket client in this process
watches the run's `run_update` events.

Phases
  max     : `--max-bins` bins as fast as the sender can push them (`--inflight` requests in flight,
            one bin per request): frames/s acknowledged (202, durable: the fsync group commit is on)
            and evaluated (the bin's run_update seen on the WebSocket), and per-bin latency.
  paced   : `--paced-bins` bins at `--rate` bins/s: latency from the send of the request that
            completes a bin to that bin's run_update on the WebSocket (p50 / p99 / max).
  memory  : the server's RSS once `--retain-bins` bins are held (retentionBins = bins) against the
            raw float64 size of the retained series (bins × series × 8), also net of the idle RSS.
            Uses the `max` run when `--max-bins` ≥ `--retain-bins`; otherwise a run of its own.

A frame is one value (`{"bin", "series", "value"}`), so frames/s = values/s; `--form node` sends
one frame per node with its 3 metrics instead. `--body columns` sends each bin as one column line
(`application/x-flowtime-columns+ndjson`: `{"bin", "series": [...], "values": [...]}`), `--body arrow`
as an Arrow IPC stream (`application/vnd.apache.arrow.stream`); `--compact` subscribes the observer to
compact `run_update`s (docs/stream-protocol.md). The observer reads only each message's head.
`--profile` records the server with py-spy during the max phase and prints where its time goes.

  python bench/live_ingest.py                       # the full run (8,640 bins: several minutes)
  python bench/live_ingest.py --max-bins 600 --paced-bins 20 --retain-bins 0   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from server_proc import ServerProcess  # noqa: E402

METRICS = ("arrivals", "served", "capacity")
VARIANTS = 16
HEAD_RE = re.compile(rb'"type":"(\w+)".*?"epoch":"([^"]*)","seq":(\d+)(?:,"binIndex":(\d+))?')
CONTENT_TYPES = {
    "ndjson": "application/x-ndjson",
    "columns": "application/x-flowtime-columns+ndjson",
    "arrow": "application/vnd.apache.arrow.stream",
}


def model_text(nodes: int, bins: int | None) -> str:
    grid = f"bins: {bins}, " if bins else ""
    lines = [
        f'grid: {{{grid}binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}',
        "nodes: []",
        "topology:",
        "  nodes:",
    ]
    for i in range(nodes):
        lines.append(
            f"    - {{id: S{i}, kind: service, semantics: "
            f"{{arrivals: telemetry, served: telemetry, capacity: telemetry}}}}"
        )
    return "\n".join(lines) + "\n"


# -- sender process ---------------------------------------------------------------------------------
class BodyMaker:
    """NDJSON bodies for one bin, built from pre-encoded fragments (the sender must not be the bottleneck)."""

    def __init__(self, run_id: str, nodes: int, form: str, body: str = "ndjson") -> None:
        self.form, self.kind = form, body
        self.tails: list[list[bytes]] = []
        self.series = [f"S{i}.{m}" for i in range(nodes) for m in METRICS]
        self.columns: list[list[float]] = []
        for k in range(VARIANTS):
            row: list[bytes] = []
            self.columns.append([])
            for i in range(nodes):
                a, s, c = 50.0 + (i % 97) + k, 40.0 + (i % 89) + k / 2, 120.0 + (i % 13)
                self.columns[-1] += (a, s, c)
                if form == "series":
                    for m, v in zip(METRICS, (a, s, c), strict=True):
                        row.append(b',"series":"S%d.%s","value":%s}' % (i, m.encode(), repr(v).encode()))
                else:
                    row.append(
                        b',"node":"S%d","arrivals":%s,"served":%s,"capacity":%s}'
                        % (i, repr(a).encode(), repr(s).encode(), repr(c).encode())
                    )
            self.tails.append(row)
        self.values_per_bin = nodes * 3

    def body(self, b: int) -> tuple[bytes, int]:
        """The request body of bin b and its frames (values for the column forms)."""
        if self.kind == "columns":
            values = self.columns[b % VARIANTS]
            return orjson.dumps({"bin": b, "series": self.series, "values": values}), len(values)
        if self.kind == "arrow":
            return self.arrow(b), len(self.series)
        head = b'{"bin":%d' % b
        tails = self.tails[b % VARIANTS]
        return b"\n".join([head + t for t in tails]), len(tails)

    def arrow(self, b: int) -> bytes:
        import pyarrow as pa

        values = self.columns[b % VARIANTS]
        table = pa.table(
            {
                "bin": pa.array([b] * len(values), pa.int64()),
                "series": pa.array(self.series).dictionary_encode(),
                "value": pa.array(values, pa.float64()),
            }
        )
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue().to_pybytes())


def sender_main(
    port: int,
    run_id: str,
    nodes: int,
    form: str,
    bins: int,
    rate: float,
    inflight: int,
    start_evt: Any,
    out_q: Any,
    body_kind: str = "ndjson",
) -> None:
    """Send bins 0..bins-1 (one request each) with `inflight` connections, at `rate` bins/s (0 = max).
    Puts one list of (bin, frames, t_send, t_ack, status) on out_q at the end."""
    maker = BodyMaker(run_id, nodes, form, body_kind)
    content_type = CONTENT_TYPES[body_kind]
    path = f"/v1/runs/{run_id}/bins"
    results: list[tuple[int, int, float, float, int]] = []
    lock = threading.Lock()
    next_bin = [0]
    start_evt.wait()
    t0 = time.monotonic()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                b = next_bin[0]
                if b >= bins:
                    break
                next_bin[0] += 1
            body, frames = maker.body(b)
            if rate > 0:
                due = t0 + b / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing, not synchronisation
            while True:
                t_send = time.monotonic()
                conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 429:
                    time.sleep(0.01)
                    continue
                break
            with lock:
                results.append((b, frames, t_send, time.monotonic(), resp.status))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(max(1, inflight))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out_q.put(results)


# -- observer (this process) --------------------------------------------------------------------------
class Observer:
    """Subscribes to a run and records the first time each bin's run_update arrives."""

    def __init__(self, ws_url: str, run_id: str, compact: bool = False) -> None:
        self.url = f"{ws_url}/v1/runs/{run_id}/stream"
        self.compact = compact
        self.bytes: list[int] = []  # size of each run_update received
        self.seen: dict[int, float] = {}
        self.other: Counter[str] = Counter()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        since: dict[str, Any] | None = None
        while not self.stop.is_set():
            try:
                since = await self._session(since)
            except ConnectionClosed as exc:  # e.g. 4008 on a loaded machine: counted, then resumed
                code = exc.rcvd.code if exc.rcvd is not None else None
                self.other[f"closed {code}"] += 1

    async def _session(self, since: dict[str, Any] | None) -> dict[str, Any] | None:
        async with connect(self.url, max_size=None, open_timeout=10) as ws:
            subscribe: dict[str, Any] = {"type": "subscribe", "since": since, "nodes": None}
            if self.compact:
                subscribe["format"] = "compact"
            await ws.send(orjson.dumps(subscribe).decode())
            self.ready.set()
            while not self.stop.is_set():
                try:
                    async with asyncio.timeout(0.5):
                        raw = await ws.recv(decode=False)
                except TimeoutError:
                    continue
                now = time.monotonic()
                head = HEAD_RE.search(raw, 0, 400)  # the head only: a full decode made this client the slow one
                if head is not None:
                    since = {"epoch": head.group(2).decode(), "seq": int(head.group(3))}
                    if head.group(1) == b"run_update" and head.group(4) is not None:
                        self.seen.setdefault(int(head.group(4)), now)
                        self.bytes.append(len(raw))
                        continue
                msg = orjson.loads(raw)
                kind = msg.get("type")
                self.other[str(kind)] += 1
                if kind == "snapshot":  # after a resync the snapshot stands for every bin it holds
                    since = {"epoch": msg.get("epoch"), "seq": msg.get("seq")}
                    for b in range(int((msg.get("state") or {}).get("lastBin", -1)) + 1):
                        self.seen.setdefault(b, now)
        return since

    def wait_bins(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.seen) >= n


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def run_phase(
    srv: ServerProcess,
    name: str,
    nodes: int,
    bins: int,
    rate: float,
    inflight: int,
    form: str,
    grace: int,
    profile: bool,
    snapshots: bool,
    body_kind: str = "ndjson",
    compact: bool = False,
) -> dict[str, Any]:
    run_id = f"bench_{name}"
    options: dict[str, Any] = {"runId": run_id, "graceBins": grace, "retentionBins": bins}
    if not snapshots:
        options |= {"snapshotEveryBins": 10**9, "snapshotEverySeconds": 10**9}
    with httpx.Client(base_url=srv.base_url, timeout=120) as c:
        r = c.post("/v1/runs", json={"mode": "live", "model": model_text(nodes, bins), "options": options})
        if r.status_code != 202:
            raise SystemExit(f"create failed: {r.status_code} {r.text}")
    obs = Observer(srv.ws_url, run_id, compact)
    obs.thread.start()
    if not obs.ready.wait(10):
        raise SystemExit("websocket did not subscribe")
    ctx = mp.get_context("spawn")
    start_evt, out_q = ctx.Event(), ctx.Queue()
    sender_args = (srv.port, run_id, nodes, form, bins, rate, inflight, start_evt, out_q, body_kind)
    proc = ctx.Process(target=sender_main, args=sender_args)
    proc.start()
    spy = None
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profile and Path(pyspy).exists():
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "-p",
                str(srv.pid),
                "-r",
                "50",
                "-d",
                "20",
                "-f",
                "raw",
                "-o",
                f"/tmp/live_ingest_{name}.txt",
                "-t",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1.0)
    t_start = time.monotonic()
    start_evt.set()
    results: list[tuple[int, int, float, float, int]] = out_q.get(timeout=3600)
    t_acked = time.monotonic()
    proc.join(timeout=30)
    ok = obs.wait_bins(bins, timeout_s=600)
    t_eval = max(obs.seen.values()) if obs.seen else float("nan")
    obs.stop.set()
    obs.thread.join(timeout=5)
    if spy is not None:
        spy.wait(timeout=120)
    bad = [r for r in results if r[4] != 202]
    frames = sum(r[1] for r in results if r[4] == 202)
    values = frames if form == "series" or body_kind != "ndjson" else frames * 3
    first_send = min(r[2] for r in results)
    lat_ack = [(r[3] - r[2]) * 1e3 for r in results]
    lat_upd = [(obs.seen[r[0]] - r[2]) * 1e3 for r in results if r[0] in obs.seen]
    rss = rss_kib(srv.pid)
    return {
        "name": name,
        "bins": bins,
        "ok": ok and not bad,
        "errors": len(bad),
        "frames": frames,
        "values": values,
        "ack_s": t_acked - first_send,
        "eval_s": t_eval - first_send,
        "wall_s": t_acked - t_start,
        "lat_ack": lat_ack,
        "lat_upd": lat_upd,
        "rss_kib": rss,
        "other_events": dict(obs.other),
        "update_bytes": sorted(obs.bytes)[len(obs.bytes) // 2] if obs.bytes else 0,
    }


def profile_summary(path: str, top: int = 25) -> str:
    """Inclusive share of the main thread's samples per function, from py-spy's raw output."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "(no profile)"
    incl: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if "MainThread" not in stack:
            continue
        total += int(n)
        for f in set(stack.split(";")):
            incl[f] += int(n)
    skip = (
        "<module>",
        "_run_code",
        "_run_module_as_main",
        "main (",
        "cmd_serve",
        "run_server",
        "Server.run",
        "asyncio_run",
        "Runner.run",
        "run_until_complete",
        "run_forever",
        "thread (",
    )
    out = [f"main thread samples: {total}"]
    for func, count in incl.most_common(200):
        if any(s in func for s in skip):
            continue
        out.append(f"  {count / max(total, 1) * 100:5.1f}%  {func[:120]}")
        if len(out) > top:
            break
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--max-bins", type=int, default=8640)
    p.add_argument("--paced-bins", type=int, default=60)
    p.add_argument("--rate", type=float, default=1.0, help="bins per second in the paced phase")
    p.add_argument("--retain-bins", type=int, default=8640, help="0: skip the memory phase")
    p.add_argument("--inflight", type=int, default=4)
    p.add_argument("--grace", type=int, default=16)
    p.add_argument("--form", choices=["series", "node"], default="series")
    p.add_argument("--body", choices=sorted(CONTENT_TYPES), default="ndjson", help="request body form")
    p.add_argument("--compact", action="store_true", help="the observer subscribes with format: compact")
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="disable periodic snapshots (default: the server's snapshotEveryBins/Seconds)",
    )
    p.add_argument("--data-dir", type=Path)
    args = p.parse_args()

    tmp = Path(args.data_dir or tempfile.mkdtemp(prefix="ft-bench-"))
    env = {"FLOWTIME_FSYNC": "true"}
    rows: list[dict[str, Any]] = []
    with ServerProcess(tmp / "data", env=env, ready_timeout_s=60) as srv:
        idle = rss_kib(srv.pid)
        print(f"server pid {srv.pid}, idle RSS {idle / 1024:.0f} MiB, data {tmp}", flush=True)
        if args.max_bins:
            rows.append(
                run_phase(
                    srv,
                    "max",
                    args.nodes,
                    args.max_bins,
                    0.0,
                    args.inflight,
                    args.form,
                    args.grace,
                    args.profile,
                    args.snapshots,
                    args.body,
                    args.compact,
                )
            )
            print(f"max phase done in {rows[-1]['wall_s']:.1f} s", flush=True)
        if args.paced_bins:
            rows.append(
                run_phase(
                    srv,
                    "paced",
                    args.nodes,
                    args.paced_bins,
                    args.rate,
                    1,
                    args.form,
                    args.grace,
                    False,
                    args.snapshots,
                    args.body,
                    args.compact,
                )
            )
        mem_row = next((r for r in rows if r["name"] == "max" and r["bins"] >= args.retain_bins), None)
        if args.retain_bins and mem_row is None:
            mem_row = run_phase(
                srv,
                "memory",
                args.nodes,
                args.retain_bins,
                0.0,
                args.inflight,
                args.form,
                args.grace,
                False,
                args.snapshots,
                args.body,
                args.compact,
            )
            rows.append(mem_row)
        final_rss = rss_kib(srv.pid)

    print()
    print(
        f"live ingest: {args.nodes} nodes × 3 metrics, {args.form} frames, body {args.body}, fsync group commit on, "
        f"{os.cpu_count()} CPUs, observer {'compact' if args.compact else 'full'} events"
    )
    print(
        f"{'phase':<7} {'bins':>6} {'values':>10} {'acked/s':>11} {'evaluated/s':>12} "
        f"{'ack p50':>8} {'ack p99':>8} {'upd p50':>8} {'upd p99':>8} {'upd max':>8}"
    )
    for r in rows:
        print(
            f"{r['name']:<7} {r['bins']:>6} {r['values']:>10} {r['values'] / r['ack_s']:>11,.0f} "
            f"{r['values'] / r['eval_s']:>12,.0f} {pct(r['lat_ack'], 50):>6.1f}ms {pct(r['lat_ack'], 99):>6.1f}ms "
            f"{pct(r['lat_upd'], 50):>6.1f}ms {pct(r['lat_upd'], 99):>6.1f}ms {max(r['lat_upd'] or [0]):>6.1f}ms"
            + ("" if r["ok"] else f"   (errors: {r['errors']}, bins seen incomplete)")
        )
        print(f"        median run_update on the socket: {r['update_bytes']:,} bytes")
        if r["other_events"]:
            print(f"        other events on the socket: {r['other_events']}")
    print(
        "(acked/s: 202s; evaluated/s: run_update of the last bin seen on the WebSocket; latencies from the"
        " send of the bin's request)"
    )
    if mem_row is not None:
        raw = mem_row["bins"] * args.nodes * 3 * 8
        rss = mem_row["rss_kib"] * 1024
        print(
            f"\nmemory at {mem_row['bins']} retained bins: raw {raw / 2**20:.0f} MiB "
            f"({mem_row['bins']} × {args.nodes * 3} × 8); server RSS {rss / 2**20:.0f} MiB = {rss / raw:.2f}× raw; "
            f"net of idle ({idle / 1024:.0f} MiB): {(rss - idle * 1024) / raw:.2f}× raw; "
            f"at exit {final_rss / 1024:.0f} MiB"
        )
    if args.profile:
        print("\nwhere the server's time goes (max phase, py-spy, inclusive):")
        print(profile_summary("/tmp/live_ingest_max.txt"))
    if args.data_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
