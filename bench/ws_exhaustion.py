#!/usr/bin/env python3
"""WebSocket resource exhaustion by a read token (issue 12 #4): server memory and ingest latency.

A real `flowtime serve` subprocess (auth off, loopback; `--tree` picks the source tree it runs, so
the same script measures a `git worktree` of an older commit) holds one live run of a topology of
`--nodes` services (arrivals / served / capacity from telemetry). This process posts one bin per
request (NDJSON, one frame per service); the WebSocket clients run in a separate process.

Scenarios (`--scenario memory,churn`):

memory  `--bins` bins ingested back to back with no client (the control: what the run itself
        grows by); then `--clients` clients, each with its own `nodes` filter (a seeded random
        `--filter-frac` of the services), subscribe (`since: null`, so each gets the snapshot, or with
        `--since head` a cursor at the head: live events only) and stay while `--bins` more bins
        are ingested, then leave. Server RSS after the preload, after the control, at the peak and
        end of the second ingest, and `--settle` s after the clients left.
churn   `--paced-bins` bins at `--rate` bins/s alone, then as many again while `--attackers` clients
        loop connect → subscribe(`since: null`) → abort (TCP reset, never reading the answer).
        Per phase: POST /bins round trip p50 / p99 / max, a healthy observer's POST → run_update
        latency p50 / p99, the attackers' loops/s and how their connections ended, server CPU.

Both scenarios first preload `--preload` bins so that the hub history no longer holds seq 1 (a
`since: null` subscriber then needs a snapshot). `--profile FILE` records the server with py-spy
during the churn phase (collapsed stacks per thread). Not part of the test run.

    python bench/ws_exhaustion.py                                  # both, on this tree
    python bench/ws_exhaustion.py --tree /tmp/before               # the same against another tree
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench_util import bin_body, free_port, pct, proc_cpu, rss_mib

ROOT = Path(__file__).resolve().parents[1]
START = "2025-10-07T00:00:00Z"
NDJSON = {"content-type": "application/x-ndjson"}


# -- model, frames, server ---------------------------------------------------------------------------
def model_text(nodes: int) -> str:
    lines = [f'grid: {{binSize: 1, binUnit: minutes, start: "{START}"}}', "nodes: []", "topology:", "  nodes:"]
    sem = "{arrivals: telemetry, served: telemetry, capacity: telemetry}"
    lines += [f"    - {{id: S{i}, kind: service, semantics: {sem}}}" for i in range(nodes)]
    return "\n".join(lines) + "\n"


def start_server(tree: Path, data: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "compat_api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--log-level", "warning"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tree, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server not ready in 60 s")
        time.sleep(0.05)


# -- client processes --------------------------------------------------------------------------------
async def _filtered_clients(
    url: str, filters: list[list[str]], since: dict[str, Any] | None, ready: Any, stop: Any, out: Any
) -> None:
    from websockets.asyncio.client import connect

    counts = Counter[str]()

    async def one(nodes: list[str]) -> None:
        async with connect(url, max_size=None, max_queue=None, compression=None, open_timeout=30) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "since": since, "nodes": nodes}).decode())
            counts["subscribed"] += 1
            while not stop.is_set():
                try:
                    async with asyncio.timeout(0.2):
                        msg = await ws.recv(decode=False)
                except TimeoutError:
                    continue
                counts["messages"] += 1
                counts["bytes"] += len(msg)

    tasks = [asyncio.create_task(one(f)) for f in filters]
    while counts["subscribed"] < len(filters):
        await asyncio.sleep(0.05)
    ready.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    counts["errors"] = sum(1 for r in results if isinstance(r, BaseException))
    out.put(dict(counts))


def filtered_clients_main(
    url: str, filters: list[list[str]], since: dict[str, Any] | None, ready: Any, stop: Any, out: Any
) -> None:
    asyncio.run(_filtered_clients(url, filters, since, ready, stop, out))


async def _attackers(url: str, n: int, start: Any, stop: Any, out: Any) -> None:
    from websockets.asyncio.client import connect

    ends = Counter[str]()

    async def loop() -> None:
        while not stop.is_set():
            try:
                ws = await connect(url, max_size=None, compression=None, open_timeout=10)
            except Exception as exc:  # refused or timed out: count it and go on
                ends[f"connect {type(exc).__name__}"] += 1
                continue
            await ws.send('{"type":"subscribe","since":null,"nodes":null}')
            ws.transport.abort()  # TCP reset: the server learns of it only when it next sends
            ends["aborted"] += 1

    start.wait()
    await asyncio.gather(*(loop() for _ in range(n)))
    out.put(dict(ends))


def attackers_main(url: str, n: int, start: Any, stop: Any, out: Any) -> None:
    asyncio.run(_attackers(url, n, start, stop, out))


# -- this process: feeder and observer ---------------------------------------------------------------
class Observer:
    """One healthy client: records when each bin's run_update first arrives."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self.other = url, dict[int, float](), Counter[str]()
        self.task: asyncio.Task[None] | None = None

    async def run(self, subscribed: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url, max_size=None, max_queue=None, compression=None) as ws:
            await ws.send('{"type":"subscribe","since":null,"nodes":null}')
            async for raw in ws:
                now = time.monotonic()
                msg = orjson.loads(raw)
                kind = str(msg.get("type"))
                if kind == "run_update":
                    self.seen.setdefault(int(msg["binIndex"]), now)
                else:
                    self.other[kind] += 1
                if kind == "snapshot" or (kind == "subscribed" and msg.get("recovered")):
                    subscribed.set()  # measuring starts once the observer is live


async def create_run(http: httpx.AsyncClient, run_id: str, nodes: int) -> None:
    r = await http.post("/v1/runs", json={"mode": "live", "model": model_text(nodes), "options": {"runId": run_id}})
    r.raise_for_status()


async def post_bins(
    http: httpx.AsyncClient, run_id: str, nodes: int, bins: range, rate: float = 0.0
) -> dict[int, tuple[float, float]]:
    """POST one request per bin (at `rate` bins/s, 0: back to back); bin → (start, answered)."""
    posted: dict[int, tuple[float, float]] = {}
    t0 = time.monotonic()
    for k, b in enumerate(bins):
        body = bin_body(nodes, b, prefix="S")
        if rate > 0:
            await asyncio.sleep(max(0.0, t0 + k / rate - time.monotonic()))  # pacing
        start = time.monotonic()
        while True:
            r = await http.post(f"/v1/runs/{run_id}/bins", content=body, headers=NDJSON)
            if r.status_code != 429:
                break
            await asyncio.sleep(0.01)
        r.raise_for_status()
        posted[b] = (start, time.monotonic())
    return posted


async def preload(http: httpx.AsyncClient, run_id: str, nodes: int, bins: int) -> None:
    await post_bins(http, run_id, nodes, range(bins))


async def scenario_memory(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    base, run_id = f"http://127.0.0.1:{port}", "mem"
    rnd = random.Random(1)
    names = [f"S{i}" for i in range(args.nodes)]
    filters = [sorted(rnd.sample(names, max(1, int(args.nodes * args.filter_frac)))) for _ in range(args.clients)]
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        await create_run(http, run_id, args.nodes)
        await preload(http, run_id, args.nodes, args.preload)
        idle = rss_mib(pid)
        first = args.preload + args.bins
        await post_bins(http, run_id, args.nodes, range(args.preload, first))  # the control: no clients
        control = rss_mib(pid)
        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        url = f"ws://127.0.0.1:{port}/v1/runs/{run_id}/stream"
        since = None
        if args.since == "head":  # a cursor history serves: no snapshot, only the live events
            detail = (await http.get(f"/v1/runs/{run_id}")).json()
            since = {"epoch": detail["epoch"], "seq": detail["seq"]}
        proc = ctx.Process(target=filtered_clients_main, args=(url, filters, since, ready, stop, out))
        proc.start()
        await asyncio.to_thread(ready.wait, 120)
        subscribed = rss_mib(pid)
        t0 = time.monotonic()
        peak = subscribed
        for b in range(first, first + args.bins):
            await post_bins(http, run_id, args.nodes, range(b, b + 1))
            peak = max(peak, rss_mib(pid))
        ingest_s = time.monotonic() - t0
        end = rss_mib(pid)
        await asyncio.sleep(2.0)  # let the clients drain what is queued (bench pacing, not a sync)
        stop.set()
        counts = await asyncio.to_thread(out.get, True, 120)
        await asyncio.to_thread(proc.join, 30)
        await asyncio.sleep(args.settle)
        after = rss_mib(pid)
        metrics = (await http.get("/metrics")).text
    hub = {k: v for k, v in parse_metrics(metrics).items() if "websocket" in k and "_created" not in k}
    return {
        "rss_idle": idle,
        "rss_control": control,
        "rss_subscribed": subscribed,
        "rss_peak": peak,
        "rss_end": end,
        "rss_after": after,
        "ingest_s": ingest_s,
        "clients": counts,
        "metrics": hub,
    }


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def phase_row(name: str, posted: dict[int, tuple[float, float]], obs: Observer, cpu: float) -> dict[str, Any]:
    post = [(t1 - t0) * 1e3 for t0, t1 in posted.values()]
    lat = [(obs.seen[b] - t0) * 1e3 for b, (t0, _) in posted.items() if b in obs.seen]
    span = max(t1 for _, t1 in posted.values()) - min(t0 for t0, _ in posted.values())
    return {
        "phase": name,
        "bins": len(posted),
        "post_p50": pct(post, 50),
        "post_p99": pct(post, 99),
        "post_max": max(post),
        "obs_p50": pct(lat, 50),
        "obs_p99": pct(lat, 99),
        "obs_missing": len(posted) - len(lat),
        "cpu_s": cpu,
        "span_s": span,
    }


async def scenario_churn(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    base, run_id = f"http://127.0.0.1:{port}", "churn"
    url = f"ws://127.0.0.1:{port}/v1/runs/{run_id}/stream"
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        await create_run(http, run_id, args.nodes)
        await preload(http, run_id, args.nodes, args.preload)
        obs = Observer(url)
        subscribed = asyncio.Event()
        obs_task = asyncio.create_task(obs.run(subscribed))
        await subscribed.wait()
        first = args.preload
        rows = []
        cpu0 = proc_cpu(pid)
        posted = await post_bins(http, run_id, args.nodes, range(first, first + args.paced_bins), args.rate)
        await asyncio.sleep(0.5)  # let the last run_update reach the observer (bench pacing)
        rows.append(phase_row("alone", posted, obs, proc_cpu(pid) - cpu0))
        ctx = mp.get_context("spawn")
        start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=attackers_main, args=(url, args.attackers, start, stop, out))
        proc.start()
        start.set()
        await asyncio.sleep(1.0)  # the attackers get going
        first += args.paced_bins
        spy = profile(pid, args.profile, args.paced_bins / args.rate) if args.profile else None
        cpu0 = proc_cpu(pid)
        t0 = time.monotonic()
        posted = await post_bins(http, run_id, args.nodes, range(first, first + args.paced_bins), args.rate)
        stop.set()
        loops_s = time.monotonic() - t0
        await asyncio.sleep(0.5)
        rows.append(phase_row(f"{args.attackers} churners", posted, obs, proc_cpu(pid) - cpu0))
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
        ends = await asyncio.to_thread(out.get, True, 120)
        await asyncio.to_thread(proc.join, 30)
        obs_task.cancel()
    return {"rows": rows, "attackers": ends, "attack_s": loops_s, "observer_other": dict(obs.other)}


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (if installed) on the server for `seconds`: collapsed stacks, every thread, idle included."""
    cmd = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-o", str(out), "--format", "raw"]
    return subprocess.Popen([*cmd, "--threads", "--idle", "-r", "50"], stdout=subprocess.DEVNULL)


def report_memory(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nmemory: {args.nodes} services, {args.clients} clients with distinct filters "
        f"({args.filter_frac:.0%} of the services each), since {args.since}, {args.bins} bins ingested "
        "while they listen"
    )
    for key in ("rss_idle", "rss_control", "rss_subscribed", "rss_peak", "rss_end", "rss_after"):
        print(f"  {key:<15} {res[key]:>8.0f} MiB")
    print(f"  ingest {res['ingest_s']:.1f} s; clients: {res['clients']}")
    for k, v in sorted(res["metrics"].items()):
        print(f"  {k} {v:g}")


def report_churn(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nchurn: {args.nodes} services, {args.paced_bins} bins at {args.rate} bins/s per phase")
    hdr = f"{'phase':>12} {'bins':>4} {'POST p50':>9} {'p99':>8} {'max':>8} {'obs p50':>8} {'obs p99':>8} {'miss':>4} "
    print(hdr + f"{'CPU s':>6} {'span s':>6}")
    for r in res["rows"]:
        print(
            f"{r['phase']:>12} {r['bins']:>4} {r['post_p50']:>9.1f} {r['post_p99']:>8.1f} {r['post_max']:>8.1f} "
            f"{r['obs_p50']:>8.1f} {r['obs_p99']:>8.1f} {r['obs_missing']:>4} {r['cpu_s']:>6.1f} {r['span_s']:>6.1f}"
        )
    ends = res["attackers"]
    loops = sum(ends.values())
    print(f"  attackers: {loops} loops in {res['attack_s']:.1f} s ({loops / res['attack_s']:.1f}/s): {ends}")
    print(f"  observer's other messages: {res['observer_other']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="source tree the server runs from")
    p.add_argument("--scenario", default="memory,churn")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--preload", type=int, default=500, help="bins before the measurement (fills the history)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--filter-frac", type=float, default=0.5)
    p.add_argument("--since", choices=("null", "head"), default="null", help="memory: the clients' cursor")
    p.add_argument("--bins", type=int, default=300, help="memory: bins ingested while the clients listen")
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--attackers", type=int, default=2)
    p.add_argument("--paced-bins", type=int, default=60)
    p.add_argument("--rate", type=float, default=4.0)
    p.add_argument("--env", action="append", default=[], help="K=V for the server")
    p.add_argument("--profile", type=Path, help="churn: py-spy collapsed stacks of the server to this file")
    args = p.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="ws-exhaustion-"))
    print(f"tree {args.tree}, CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    try:
        for name in args.scenario.split(","):
            proc, port = start_server(args.tree, tmp / f"data-{name}", tmp / f"server-{name}.log", env)
            try:
                if name == "memory":
                    report_memory(asyncio.run(scenario_memory(args, port, proc.pid)), args)
                elif name == "churn":
                    report_churn(asyncio.run(scenario_churn(args, port, proc.pid)), args)
                else:
                    raise SystemExit(f"unknown scenario {name}")
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
