"""WebSocket fan-out benchmark (issue 4): ingest → engine → hub → N WebSocket clients.

A `flowtime serve` subprocess holds one live run per client count: a topology of `--nodes` services
(default 1,000), each fed by telemetry `arrivals`, `served` and `capacity`. A *separate* client
process (or `--client-procs` processes, the clients split between them) opens N WebSocket clients
(`websockets` package, one asyncio loop per process) subscribed to the run. This process is the
feeder: it POSTs one bin (NDJSON, one frame per service) per second (`--paced-bins`), then bins back
to back as fast as the server answers (`--fast-bins`), and closes the run.

Every POST is timestamped (CLOCK_MONOTONIC, shared by the processes on one host); every client
records when the `run_update` of each bin arrived. Reported per client count and phase:
- ingest → client latency p50 / p99 / max over all (client, bin) pairs;
- the POST round trip (parse, validate, log fsync, evaluate, encode, publish — the hub queues the
  events to the clients before the request is answered) and the fan-out part (receive − POST start
  − POST round trip is not meaningful per client, so the table shows both numbers);
- client deliveries/s (every event message received by any client, per second of the fast phase);
- the size of one bin's `run_update`, the cost of encoding it once (orjson, measured here on the
  decoded event), and the CPU seconds the server and the client process(es) used per phase.

    python bench/fanout.py [--nodes 1000] [--clients 100,500] [--paced-bins 10] [--fast-bins 40]
                           [--client-procs 1] [--no-compression] [--compact]

`--compact` subscribes every client with `"format": "compact"` (issue 16: `run_update`s as columns,
only the nodes that changed; docs/stream-protocol.md); KiB/ev is then the compact size on the wire.

`--no-compression` makes the clients decline permessage-deflate (uvicorn negotiates it by default,
which compresses every message once per client on the server). Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_util import bin_body, free_port, pct, proc_cpu

ROOT = Path(__file__).resolve().parents[1]
HEAD_RE = re.compile(rb'"type":"(\w+)".*?"seq":(\d+)(?:,"binIndex":(\d+))?')
START = "2025-10-07T00:00:00Z"


# -- model and frames ------------------------------------------------------------------------------
def model_text(nodes: int, bins: int) -> str:
    lines = [
        f'grid: {{bins: {bins}, binSize: 1, binUnit: minutes, start: "{START}"}}',
        "nodes: []",
        "topology:",
        "  nodes:",
    ]
    sem = "{arrivals: telemetry, served: telemetry, capacity: telemetry, slaMin: 5}"
    lines += [f"    - {{id: Svc_{i}, kind: service, semantics: {sem}}}" for i in range(nodes)]
    lines.append("  edges:")
    lines += [f"    - {{from: Svc_{i}, to: Svc_{i + 1}}}" for i in range(nodes - 1)]
    return "\n".join(lines) + "\n"


# -- client process --------------------------------------------------------------------------------
async def client_main(url: str, run_id: str, n: int, out: Path, compression: bool, compact: bool = False) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    records: list[list[tuple[int, int, float, int]]] = [[] for _ in range(n)]  # (seq, bin, t, bytes)
    ready = 0

    async def one(k: int, go: asyncio.Event) -> None:
        nonlocal ready
        rec = records[k]
        async with connect(
            f"{url}/v1/runs/{run_id}/stream",
            max_size=None,
            max_queue=None,
            compression="deflate" if compression else None,
        ) as ws:
            subscribe: dict[str, Any] = {"type": "subscribe", "since": None, "nodes": None}
            if compact:
                subscribe["format"] = "compact"
            await ws.send(json.dumps(subscribe))
            await ws.recv()
            ready += 1
            if ready == n:
                go.set()
            try:
                while True:
                    msg = await ws.recv(decode=False)
                    t = time.monotonic()
                    m = HEAD_RE.search(msg, 0, 400)
                    if m is None:
                        continue
                    if m.group(1) == b"run_update":
                        rec.append((int(m.group(2)), int(m.group(3)), t, len(msg)))
                    elif m.group(1) != b"progress":
                        rec.append((int(m.group(2)), -1, t, len(msg)))
            except ConnectionClosed:
                return

    go = asyncio.Event()
    tasks = []
    for k in range(n):
        tasks.append(asyncio.create_task(one(k, go)))
        if k % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    await asyncio.wait_for(go.wait(), 120)
    print("READY", flush=True)
    await asyncio.gather(*tasks)
    cpu = time.process_time()
    out.write_text(json.dumps({"records": records, "cpu": cpu}))


# -- feeder / orchestration ------------------------------------------------------------------------
async def run_case(
    base: str, ws_url: str, server_pid: int, args: argparse.Namespace, clients: int, tmp: Path
) -> dict[str, Any]:
    import httpx

    run_id = f"fanout_{clients}_{int(time.time())}"
    bins = args.paced_bins + args.fast_bins
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        r = await http.post(
            "/v1/runs", json={"mode": "live", "model": model_text(args.nodes, bins + 5), "options": {"runId": run_id}}
        )
        r.raise_for_status()
        bodies = [bin_body(args.nodes, b) for b in range(bins)]
        procs, outs = [], []
        per = [
            clients // args.client_procs + (1 if i < clients % args.client_procs else 0)
            for i in range(args.client_procs)
        ]
        for i, n in enumerate(per):
            out = tmp / f"client-{clients}-{i}.json"
            outs.append(out)
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--client-role",
                    "--url",
                    ws_url,
                    "--run",
                    run_id,
                    "--n",
                    str(n),
                    "--out",
                    str(out),
                ]
                + (["--no-compression"] if args.no_compression else [])
                + (["--compact"] if args.compact else [])
            )
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.to_thread(p.stdout.readline)
            if line.strip() != "READY":
                raise RuntimeError(f"client process failed to start: {line!r}")
        posted: dict[int, tuple[float, float]] = {}  # bin -> (start, answered)
        phases: dict[str, tuple[float, float, float]] = {}  # name -> (t0, t1, server cpu used)
        headers = {"content-type": "application/x-ndjson"}
        cpu0, t0 = proc_cpu(server_pid), time.monotonic()
        for b in range(args.paced_bins):
            start = time.monotonic()
            r = await http.post(f"/v1/runs/{run_id}/bins", content=bodies[b], headers=headers)
            posted[b] = (start, time.monotonic())
            r.raise_for_status()
            await asyncio.sleep(max(0.0, t0 + b + 1 - time.monotonic()))
        phases["1 bin/s"] = (t0, time.monotonic(), proc_cpu(server_pid) - cpu0)
        cpu0, t0 = proc_cpu(server_pid), time.monotonic()
        for b in range(args.paced_bins, bins):
            start = time.monotonic()
            r = await http.post(f"/v1/runs/{run_id}/bins", content=bodies[b], headers=headers)
            posted[b] = (start, time.monotonic())
            r.raise_for_status()
        fast_posted = time.monotonic()
        phases["fast"] = (t0, fast_posted, proc_cpu(server_pid) - cpu0)  # to the last answered POST
        await http.post(f"/v1/runs/{run_id}/close")
        for p in procs:
            await asyncio.to_thread(p.wait, 300)
    results = [json.loads(o.read_text()) for o in outs]
    return summarize(clients, args, posted, phases, results)


Posted = dict[int, tuple[float, float]]


def summarize(
    clients: int,
    args: argparse.Namespace,
    posted: Posted,
    phases: dict[str, tuple[float, float, float]],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    records = [rec for r in results for rec in r["records"]]
    client_cpu = sum(r["cpu"] for r in results)
    rows = []
    for name, bins in (
        ("1 bin/s", range(args.paced_bins)),
        ("fast", range(args.paced_bins, args.paced_bins + args.fast_bins)),
    ):
        lat: list[float] = []
        missing = 0
        sizes: list[int] = []
        last_recv = 0.0
        events = 0
        t0 = posted[bins[0]][0]
        t_end = posted[bins[-1] + 1][0] if bins[-1] + 1 in posted else float("inf")
        for rec in records:
            got = {}
            for _seq, b, t, size in rec:
                if b in bins and b not in got:
                    got[b] = t
                    sizes.append(size)
                if t0 <= t < t_end and b != -2:
                    events += 1
                    if b in bins:
                        last_recv = max(last_recv, t)
            missing += sum(1 for b in bins if b not in got)
            lat += [(got[b] - posted[b][0]) * 1e3 for b in bins if b in got]
        post_ms = [(posted[b][1] - posted[b][0]) * 1e3 for b in bins]
        span = max(last_recv, phases[name][1]) - t0
        rows.append(
            {
                "clients": clients,
                "phase": name,
                "bins": len(bins),
                "missing": missing,
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": max(lat, default=float("nan")),
                "post_p50_ms": pct(post_ms, 50),
                "post_p99_ms": pct(post_ms, 99),
                "bins_per_s": len(bins) / span if span > 0 else float("nan"),
                "deliveries_per_s": events / span if span > 0 else float("nan"),
                "event_kb": statistics.mean(sizes) / 1024 if sizes else float("nan"),
                "server_cpu_s": phases[name][2],
                "span_s": span,
            }
        )
    return {"rows": rows, "client_cpu_s": client_cpu}


def start_server(data: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "compat_api.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--log-level",
        "warning",
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server not ready in 60 s")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"


def measure_compact() -> str:
    """Sizes of the two captured consecutive run_updates in compact form (issue 16), and the cost."""
    import orjson

    sys.path.insert(0, str(ROOT))
    try:
        from stream_hub.compact import CompactTable, compact_update
    except ImportError:
        return "(this tree has no compact form)"

    tmp = Path(tempfile.gettempdir())
    paths = [tmp / "fanout-sample-event.json", tmp / "fanout-sample-event-2.json"]
    if not all(p.exists() for p in paths):
        return "(no sample events)"
    first, second = (p.read_bytes() for p in paths)
    t = time.perf_counter()
    tables = [CompactTable.of(first), CompactTable.of(second)]
    decode_ms = (time.perf_counter() - t) / 2 * 1e3
    a, b = tables
    assert a is not None and b is not None
    key = compact_update(a, None)
    t = time.perf_counter()
    delta = compact_update(b, (1, a))
    delta_ms = (time.perf_counter() - t) * 1e3
    changed = len(orjson.loads(delta)["idx"])
    one = orjson.loads(second)
    for d in one["deltas"][1:]:  # the same bin again with one node changed (a correction upstream)
        d.update(next(x for x in orjson.loads(first)["deltas"] if x["nodeId"] == d["nodeId"]))
    c = CompactTable.of(orjson.dumps(one))
    assert c is not None
    single = compact_update(c, (1, a))
    return (
        f"compact run_update (issue 16): full {len(second):,} B; key update with layout {len(key):,} B "
        f"({len(second) / len(key):.1f}×); delta on the previous bin, {changed} nodes changed, {len(delta):,} B "
        f"({len(second) / len(delta):.1f}×); delta with 1 node changed {len(single):,} B; "
        f"decode once {decode_ms:.2f} ms, encode a delta {delta_ms:.2f} ms"
    )


def measure_encode(nodes: int) -> tuple[float, float, int]:
    """Engine-side encode of one bin's run_update: build the event like the server, time orjson."""
    import orjson

    event_path = Path(tempfile.gettempdir()) / "fanout-sample-event.json"
    if not event_path.exists():
        return float("nan"), float("nan"), 0
    raw = event_path.read_bytes()
    ev = orjson.loads(raw)
    t = time.perf_counter()
    for _ in range(20):
        data = orjson.dumps(ev)
    enc = (time.perf_counter() - t) / 20 * 1e3
    t = time.perf_counter()
    for _ in range(20):
        data.decode()
    dec = (time.perf_counter() - t) / 20 * 1e3
    return enc, dec, len(data)


async def sample_event(ws_url: str, base: str, nodes: int) -> None:
    """Capture one real run_update of a `nodes`-service run (for the encode-cost line)."""
    import httpx
    from websockets.asyncio.client import connect

    run_id = f"sample_{int(time.time())}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        r = await http.post(
            "/v1/runs", json={"mode": "live", "model": model_text(nodes, 10), "options": {"runId": run_id}}
        )
        r.raise_for_status()
        async with connect(f"{ws_url}/v1/runs/{run_id}/stream", max_size=None) as ws:
            await ws.send('{"type":"subscribe","since":null,"nodes":null}')
            await ws.recv()
            updates: list[bytes] = []
            for b in (0, 1):
                await http.post(
                    f"/v1/runs/{run_id}/bins",
                    content=bin_body(nodes, b),
                    headers={"content-type": "application/x-ndjson"},
                )
            async with asyncio.timeout(30):
                while len(updates) < 2:
                    msg = await ws.recv(decode=False)
                    assert isinstance(msg, bytes)
                    if b'"run_update"' in msg[:100]:
                        updates.append(msg)
            (Path(tempfile.gettempdir()) / "fanout-sample-event.json").write_bytes(updates[0])
            (Path(tempfile.gettempdir()) / "fanout-sample-event-2.json").write_bytes(updates[1])
        await http.post(f"/v1/runs/{run_id}/close")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--clients", default="100,500")
    p.add_argument("--paced-bins", type=int, default=10)
    p.add_argument("--fast-bins", type=int, default=40)
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--no-compression", action="store_true")
    p.add_argument("--compact", action="store_true", help="clients subscribe with format: compact")
    p.add_argument("--no-fsync", action="store_true", help="server with FLOWTIME_FSYNC=false (to see its share)")
    p.add_argument("--client-role", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--run")
    p.add_argument("--n", type=int)
    p.add_argument("--out")
    args = p.parse_args()
    if args.client_role:
        asyncio.run(client_main(args.url, args.run, args.n, Path(args.out), not args.no_compression, args.compact))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="fanout-"))
    env = {"FLOWTIME_FSYNC": "false"} if args.no_fsync else {}
    # every client is on loopback: one address, whose default limit (100 connections) is too low here
    env["FLOWTIME_WS_MAX_CONNECTIONS_PER_TOKEN"] = "1000"
    server, base, ws_url = start_server(tmp / "data", tmp / "server.log", env)
    out: list[dict[str, Any]] = []
    client_cpu: dict[int, float] = {}
    try:
        asyncio.run(sample_event(ws_url, base, args.nodes))
        for n in (int(x) for x in args.clients.split(",")):
            res = asyncio.run(run_case(base, ws_url, server.pid, args, n, tmp))
            out += res["rows"]
            client_cpu[n] = res["client_cpu_s"]
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    enc, dec, size = measure_encode(args.nodes)
    mode = "deflate (uvicorn default)" if not args.no_compression else "off"
    print(
        f"\nfan-out: {args.nodes} services, client processes: {args.client_procs} (one asyncio loop each), "
        f"permessage-deflate: {mode}, fsync: {not args.no_fsync}, CPUs: {os.cpu_count()}, "
        f"events: {'compact' if args.compact else 'full'}"
    )
    print(
        f"one bin's run_update: {size / 1024:.1f} KiB; orjson encode once {enc:.2f} ms, decode to str once "
        f"{dec:.2f} ms\n{measure_compact()}\n"
    )
    hdr = (
        f"{'clients':>7} {'phase':>8} {'bins':>4} {'miss':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'POST p50':>8} {'POST p99':>8} {'bins/s':>7} {'deliv/s':>9} {'KiB/ev':>7} {'srvCPU s':>9} "
        f"{'span s':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in out:
        print(
            f"{r['clients']:>7} {r['phase']:>8} {r['bins']:>4} {r['missing']:>4} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['post_p50_ms']:>8.1f} {r['post_p99_ms']:>8.1f} "
            f"{r['bins_per_s']:>7.1f} {r['deliveries_per_s']:>9.0f} {r['event_kb']:>7.1f} "
            f"{r['server_cpu_s']:>9.2f} {r['span_s']:>6.1f}"
        )
    print(
        "\nclient process CPU seconds (whole case): "
        + ", ".join(f"{n} clients: {c:.1f}" for n, c in client_cpu.items())
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
