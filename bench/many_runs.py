"""Many live runs on one instance (issue 16): R runs of N nodes, each fed 1 bin/s, bin → run_update latency.

One `flowtime serve` subprocess holds `--runs` live runs (default 100), each a topology of `--nodes`
services (default 100; `fanout.model_text`: arrivals / served / capacity from telemetry, a chain of
edges). A *separate* client process opens one WebSocket observer per run (`websockets` package, one
asyncio loop) and records when each bin's `run_update` arrives, reading only the message's head. This
process is the feeder: one keep-alive HTTP/1.1 connection per run (a minimal client on asyncio
streams, so that the feeder's own cost stays small next to the server's), and every second it POSTs
the next bin (NDJSON, one frame per service) to every run, after `--warmup` bins that are not counted.

`--spread` says how a second's R bins are placed: `stagger` (run k at k/R s into the second: R requests/s,
evenly) or `burst` (all R at the start of the second: the worst case of R feeders on one
clock); `both` (default) runs one phase of `--bins` bins each, stagger then burst, on the same runs.

Reported per phase: latency from the start of a bin's POST to the arrival of that bin's run_update at
the run's observer (CLOCK_MONOTONIC, shared by the processes on one host) p50 / p99 / max over all
(run, bin) pairs; the POST round trip p50 / p99 (the server answers after the bin is logged,
evaluated and its event queued to the subscribers); the server's CPU over exactly `--bins` seconds
of the phase as a fraction of one core (utime + stime of all its threads, from /proc); the feeder's
and the observer process's CPU, and the rest of the host's (other sessions: /proc/stat); the
server's RSS; the three bins with the slowest run_update of each phase. `--profile S` records the
server with py-spy for S seconds of the first phase (this perturbs the figures; profile in a run of
its own; raw stacks in /tmp/many_runs_profile.txt).

    python bench/many_runs.py [--runs 100] [--nodes 100] [--bins 30] [--warmup 5]
                              [--spread both|stagger|burst] [--compact] [--no-fsync]
                              [--no-snapshots] [--profile 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_util import bin_body, pct, proc_cpu, rss_mib
from fanout import HEAD_RE, model_text, start_server

NDJSON = b"application/x-ndjson"
PROFILE = Path(tempfile.gettempdir()) / "many_runs_profile.txt"  # py-spy raw output (--profile)


def host_busy() -> float:
    """CPU seconds every process on the host has used so far (busy, not idle or iowait, from /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")


# -- observer process ------------------------------------------------------------------------------
async def observer_main(url: str, run_ids: list[str], out: Path, compact: bool) -> None:
    """One WebSocket per run; when told to stop writes {"seen": [[[bin, t], ...] per run], "closed", "size"}."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    seen: list[list[tuple[int, float]]] = [[] for _ in run_ids]
    sizes: list[int] = []
    closed: list[str] = []
    ready = 0
    go = asyncio.Event()

    async def one(k: int) -> None:
        nonlocal ready
        rec = seen[k]
        async with connect(f"{url}/v1/runs/{run_ids[k]}/stream", max_size=None, max_queue=None) as ws:
            subscribe: dict[str, Any] = {"type": "subscribe", "since": None, "nodes": None}
            if compact:
                subscribe["format"] = "compact"
            await ws.send(json.dumps(subscribe))
            await ws.recv()  # "subscribed"
            ready += 1
            if ready == len(run_ids):
                go.set()
            try:
                while True:
                    msg = await ws.recv(decode=False)
                    t = time.monotonic()
                    m = HEAD_RE.search(msg, 0, 400)
                    if m is not None and m.group(1) == b"run_update" and m.group(3) is not None:
                        rec.append((int(m.group(3)), t))
                        sizes.append(len(msg))
            except ConnectionClosed as exc:
                closed.append(f"{run_ids[k]}: {exc.rcvd.code if exc.rcvd is not None else None}")

    tasks = []
    for k in range(len(run_ids)):
        tasks.append(asyncio.create_task(one(k)))
        if k % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    await asyncio.wait_for(go.wait(), 120)
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the feeder says when it is done
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sizes.sort()
    out.write_text(json.dumps({"seen": seen, "closed": closed, "size": sizes[len(sizes) // 2] if sizes else 0}))


# -- feeder ----------------------------------------------------------------------------------------
class Conn:
    """A keep-alive HTTP/1.1 connection that POSTs bodies and reads the (Content-Length) answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, float, float]:
        """POST `body`: (status, start, answered), both CLOCK_MONOTONIC."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        start = time.monotonic()
        self.writer.write(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
            % (path.encode(), NDJSON, len(body))
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        answered = time.monotonic()
        if close:
            self.close()
        return status, start, answered

    def close(self) -> None:
        """Close the connection (the next post opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


Posted = dict[tuple[int, int], tuple[float, float, int]]  # (run, bin) -> (start, answered, status)


async def feed(
    conns: list[Conn], run_ids: list[str], bodies: list[bytes], first: int, count: int, stagger: bool, t0: float
) -> Posted:
    """Bins first..first+count-1 to every run, bin i of run k due at t0 + i (+ k/R when staggered)."""
    posted: Posted = {}
    runs = len(run_ids)

    async def one(k: int) -> None:
        path = f"/v1/runs/{run_ids[k]}/bins"
        for i in range(count):
            due = t0 + i + (k / runs if stagger else 0.0)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            b = first + i
            status, start, answered = await conns[k].post(path, bodies[b])
            posted[(k, b)] = (start, answered, status)

    await asyncio.gather(*(one(k) for k in range(runs)))
    return posted


async def phase(
    conns: list[Conn],
    run_ids: list[str],
    bodies: list[bytes],
    first: int,
    count: int,
    stagger: bool,
    pids: dict[str, int],
    profile: tuple[str, float] | None,
) -> tuple[Posted, dict[str, float]]:
    """One paced phase; each process's CPU (fraction of one core) over exactly `count` seconds from its start."""
    t0 = time.monotonic() + 0.2
    spy = None
    if profile is not None:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [pyspy, "record", "-p", str(pids["server"]), "-r", "100", "-d", str(int(profile[1]))]
        cmd += ["-f", "raw", "-o", profile[0], "-t", "--nonblocking"]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    task = asyncio.create_task(feed(conns, run_ids, bodies, first, count, stagger, t0))
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    cpu0 = {name: proc_cpu(pid) for name, pid in pids.items()}
    busy0, w0 = host_busy(), time.monotonic()
    await asyncio.sleep(max(0.0, t0 + count - time.monotonic()))
    wall = time.monotonic() - w0
    cpu = {name: (proc_cpu(pid) - cpu0[name]) / wall for name, pid in pids.items()}
    cpu["other"] = max(0.0, (host_busy() - busy0) / wall - sum(cpu.values()))  # the rest of the host
    posted = await task
    if spy is not None:
        await asyncio.to_thread(spy.wait, 120)
    return posted, cpu


async def drive(args: argparse.Namespace, port: int, ws_url: str, server_pid: int, tmp: Path) -> dict[str, Any]:
    import httpx

    modes = ["stagger", "burst"] if args.spread == "both" else [args.spread]
    total = args.warmup + args.bins * len(modes)
    bodies = [bin_body(args.nodes, b) for b in range(total)]
    model = model_text(args.nodes, total + 10)
    stamp = int(time.time())
    run_ids = [f"many_{stamp}_{k}" for k in range(args.runs)]
    rss: dict[str, float] = {"idle": rss_mib(server_pid)}
    t = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for run_id in run_ids:
            r = await http.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": run_id}})
            if r.status_code != 202:
                raise SystemExit(f"create {run_id}: {r.status_code} {r.text}")
    create_s = time.monotonic() - t
    created_at = time.monotonic()
    rss["created"] = rss_mib(server_pid)
    out = tmp / "observer.json"
    cmd = [sys.executable, __file__, "--observer-role", "--url", ws_url, "--ids", ",".join(run_ids)]
    cmd += ["--out", str(out)] + (["--compact"] if args.compact else [])
    obs = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert obs.stdout is not None and obs.stdin is not None
    line = await asyncio.to_thread(obs.stdout.readline)
    if line.strip() != "READY":
        raise RuntimeError(f"observer process failed to start: {line!r}")
    pids = {"server": server_pid, "feeder": os.getpid(), "observer": obs.pid}
    conns = [Conn(port) for _ in run_ids]
    await feed(conns, run_ids, bodies, 0, args.warmup, True, time.monotonic())  # warm-up, not counted
    await asyncio.sleep(1.0)
    phases: list[tuple[str, range, Posted, dict[str, float]]] = []
    first = args.warmup
    for i, mode in enumerate(modes):
        prof = (str(PROFILE), args.profile) if args.profile and i == 0 else None
        posted, cpu = await phase(conns, run_ids, bodies, first, args.bins, mode == "stagger", pids, prof)
        phases.append((mode, range(first, first + args.bins), posted, cpu))
        first += args.bins
        await asyncio.sleep(1.0)  # let the last events arrive before the next phase
    rss["end"] = rss_mib(server_pid)
    for c in conns:
        c.close()
    obs.stdin.write("STOP\n")
    obs.stdin.flush()
    await asyncio.to_thread(obs.wait, 120)
    result = json.loads(out.read_text())
    seen = [{b: t for b, t in rec} for rec in result["seen"]]
    rows = []
    for mode, bins, posted, cpu in phases:
        lat: list[float] = []
        per_bin: dict[int, list[float]] = {}
        missing = errors = 0
        for (k, b), (start, _answered, status) in posted.items():
            errors += status != 202
            if b in seen[k]:
                lat.append((seen[k][b] - start) * 1e3)
                per_bin.setdefault(b, []).append(lat[-1])
            else:
                missing += 1
        bin_start = {b: min(s for (_, b2), (s, _, _) in posted.items() if b2 == b) for b in per_bin}
        worst = sorted(per_bin, key=lambda b: -max(per_bin[b]))[:3]
        post_ms = [(a - s) * 1e3 for s, a, _ in posted.values()]
        rows.append(
            {
                "mode": mode,
                "bins": len(bins),
                "samples": len(lat),
                "missing": missing,
                "errors": errors,
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "max": max(lat, default=float("nan")),
                "post_p50": pct(post_ms, 50),
                "post_p99": pct(post_ms, 99),
                "cpu": cpu,
                "worst": [
                    (b, bin_start[b] - created_at, max(per_bin[b]), sum(x > 20 for x in per_bin[b])) for b in worst
                ],
            }
        )
    return {"rows": rows, "rss": rss, "create_s": create_s, "closed": result["closed"], "size": result["size"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--bins", type=int, default=30, help="paced bins per run and phase")
    p.add_argument("--warmup", type=int, default=5, help="bins per run before the measured phases")
    p.add_argument("--spread", choices=["both", "stagger", "burst"], default="both")
    p.add_argument("--compact", action="store_true", help="observers subscribe with format: compact")
    p.add_argument("--no-fsync", action="store_true", help="server with FLOWTIME_FSYNC=false (to see its share)")
    p.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="no periodic snapshots (default: the server's, every 60 bins or 30 s per run)",
    )
    p.add_argument("--profile", type=float, default=0, help="py-spy the server for this many seconds")
    p.add_argument("--observer-role", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--ids")
    p.add_argument("--out")
    args = p.parse_args()
    if args.observer_role:
        asyncio.run(observer_main(args.url, args.ids.split(","), Path(args.out), args.compact))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="many-runs-"))
    env = {
        "FLOWTIME_MAX_LIVE_RUNS": str(max(100, args.runs)),
        # every observer is on loopback: one address, whose default limit (100 connections) is the edge
        "FLOWTIME_WS_MAX_CONNECTIONS_PER_TOKEN": str(max(1000, args.runs + 10)),
        "FLOWTIME_WS_MAX_CONNECTIONS": str(max(1000, args.runs + 10)),
    }
    if args.no_fsync:
        env["FLOWTIME_FSYNC"] = "false"
    if not args.snapshots:
        env |= {"FLOWTIME_SNAPSHOT_EVERY_BINS": str(10**9), "FLOWTIME_SNAPSHOT_EVERY_SECONDS": str(10**9)}
    load = os.getloadavg()[0]
    server, _base, ws_url = start_server(tmp / "data", tmp / "server.log", env)
    port = int(ws_url.rsplit(":", 1)[1])
    try:
        time.sleep(2.0)  # serve loads numba in the background at start: not part of the runs
        res = asyncio.run(drive(args, port, ws_url, server.pid, tmp))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(
        f"\nmany runs: {args.runs} runs × {args.nodes} services, 1 bin/s per run, {args.bins} bins per phase "
        f"after {args.warmup} warm-up bins; fsync: {not args.no_fsync}; snapshots: {args.snapshots}; events: "
        f"{'compact' if args.compact else 'full'}; CPUs: {os.cpu_count()}; load before: {load:.1f}, "
        f"after: {os.getloadavg()[0]:.1f}"
    )
    rss = res["rss"]
    print(
        f"created {args.runs} runs in {res['create_s']:.1f} s; server RSS idle {rss['idle']:.0f} MiB, "
        f"with the runs {rss['created']:.0f} MiB, at the end {rss['end']:.0f} MiB; median run_update on the "
        f"socket {res['size']:,} B\n"
    )
    hdr = (
        f"{'spread':>7} {'samples':>7} {'miss':>4} {'err':>3} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'POST p50':>8} {'POST p99':>8} {'server':>7} {'feeder':>7} {'observer':>8} {'others':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in res["rows"]:
        cpu = r["cpu"]
        print(
            f"{r['mode']:>7} {r['samples']:>7} {r['missing']:>4} {r['errors']:>3} {r['p50']:>7.1f} "
            f"{r['p99']:>7.1f} {r['max']:>7.1f} {r['post_p50']:>8.1f} {r['post_p99']:>8.1f} "
            f"{cpu['server']:>6.0%} {cpu['feeder']:>6.0%} {cpu['observer']:>7.0%} {cpu['other']:>6.0%}"
        )
    print(
        "(latency: start of a bin's POST → its run_update at the run's observer; server / feeder / observer:"
        " CPU over the phase as a fraction of one core; others: the rest of the host)"
    )
    for r in res["rows"]:
        print(
            f"{r['mode']}: slowest bins: "
            + "; ".join(
                f"bin {b} (posted {t:.0f} s after the runs were created): max {m:.0f} ms, {n} runs over 20 ms"
                for b, t, m, n in r["worst"]
            )
        )
    if res["closed"]:
        print(f"observer connections closed by the server: {res['closed'][:10]}")
    if args.profile:
        from live_ingest import profile_summary

        mode = res["rows"][0]["mode"]
        print(f"\nwhere the server's time goes ({mode} phase, py-spy, inclusive, busy samples; raw: {PROFILE}):")
        print(profile_summary(str(PROFILE), top=30))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
