#!/usr/bin/env python3
"""Snapshots never stall ingestion (issue 5): ingest latency with snapshots every 10 bins vs none.

Setup: a 1,000-node topology (1,000 services, arrivals / served / capacity from telemetry: 3,000
telemetry series), open-ended grid, `retentionBins` 8,640. The retained matrix must be full before
measuring, and 8,640 bins over HTTP cost minutes of server CPU (~35 ms of parse + validate + apply
per 3,000-frame bin), so the pre-fill is built once, in-process and fast (a spawned child process
runs a `LiveService` on the fixture folder and feeds pre-validated records through the normal
worker: log append, apply, events.log, then a committed snapshot and a clean stop). The fixture is
therefore a real run folder: CURRENT + snapshot (8,640 held bins), events.log, ingestion log.

Measured, per variant, on a real `flowtime serve` subprocess (FLOWTIME_FSYNC=true) started on a
copy of the fixture (the run comes back by recovery, holding 8,640 bins):

  none   options.snapshotEveryBins = snapshotEverySeconds = 10**9 (no periodic snapshot at all)
  every10 options.snapshotEveryBins = 10 (snapshotEverySeconds 10**9)

The variant's options are written into the fixture's `create.json` (hashes in state.json and
CURRENT fixed up), which is where a recovered run takes its options from. Then `--bins` bins are
sent over HTTP, NDJSON, one request per bin (3,000 frames), one request in flight, paced at
`--rate` bins/s (0 = back to back), and the request → 202 latency is recorded from this process
(after `--warmup` bins). The matrix slides as bins arrive, so it stays at 8,640 held bins.

  python bench/snapshot.py                    # 1,000 nodes, 8,640 bins, 300 measured bins per variant
  python bench/snapshot.py --nodes 200 --bins 100 --retain 2000   # quick look
  python bench/snapshot.py --profile          # py-spy of the server during `every10` (+ GIL holders)

Everything lives in a temp folder that is removed at the end (also on failure).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from live_ingest import BodyMaker, model_text, pct  # noqa: E402
from server_proc import ServerProcess  # noqa: E402

RUN_ID = "bench"
HUGE = 10**9
METRICS = ("arrivals", "served", "capacity")


# -- the fixture: a real run folder, built in-process ------------------------------------------------
def bin_values(nodes: int, b: int) -> list[tuple[str, float]]:
    """The same values BodyMaker sends for bin b (variant b % 16), as (series, value)."""
    k = b % 16
    out: list[tuple[str, float]] = []
    for i in range(nodes):
        a, s, c = 50.0 + (i % 97) + k, 40.0 + (i % 89) + k / 2, 120.0 + (i % 13)
        out += ((f"S{i}.arrivals", a), (f"S{i}.served", s), (f"S{i}.capacity", c))
    return out


async def _build(
    data_dir: Path, nodes: int, prefill: int, tail: int, options: dict[str, Any], crash: bool, report: Any
) -> None:
    from compat_api.compose import build_live_service
    from compat_api.settings import Settings
    from engine_live.runtime.handle import QueuedRecord
    from engine_live.runtime.records import FramesRecord
    from engine_live.state.frame_batch import FrameBatch

    svc = build_live_service(Settings(data_dir=data_dir, fsync=False, log_level="warning"))
    await svc.start()
    await svc.create_run({"model": model_text(nodes, None), "options": {"runId": RUN_ID, **options}})
    h = svc.runs[RUN_ID]
    variants = [bin_values(nodes, k) for k in range(16)]
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()

    async def feed(lo: int, hi: int) -> None:
        window = 8  # a few records in flight: group commit, like concurrent clients
        pending: list[asyncio.Future[Any]] = []
        for b in range(lo, hi):
            vals = variants[b % 16]
            record = FramesRecord(FrameBatch.from_frames([(b, s, v) for s, v in vals]))
            item = QueuedRecord(record, svc.ctx.logs.encode(record), len(vals), loop.create_future())
            pending.append(asyncio.ensure_future(svc.worker.submit(h, item)))
            if len(pending) >= window:
                await pending.pop(0)
            if b % 1000 == 999:
                report(f"  fixture: {b + 1} bins fed ({time.monotonic() - t0:.0f} s)")
        await asyncio.gather(*pending)

    await feed(0, prefill)
    meta = await svc.request_snapshot(h)  # the snapshot recovery starts from
    assert h.files.checkpoint is not None
    await h.files.checkpoint.drain()
    report(f"  fixture: snapshot {meta.name} at bin {meta.last_bin} ({time.monotonic() - t0:.0f} s)")
    await feed(prefill, prefill + tail)
    if crash:  # kill -9 equivalent: the log records are written (page cache), nothing else happens
        assert h.files.events is not None
        h.files.events.flush()
        os._exit(0)
    h.files.checkpoint.every_bins = h.files.checkpoint.every_seconds = HUGE  # no final snapshot on stop
    h.files.checkpoint.requests.clear()
    h.run.status  # noqa: B018
    if h.work.task is not None:
        h.work.task.cancel()
    if h.files.log is not None:
        await h.files.log.close()
    if h.files.events is not None:
        h.files.events.close()


def _build_main(data_dir: str, nodes: int, prefill: int, tail: int, options: dict[str, Any], crash: bool) -> None:
    asyncio.run(_build(Path(data_dir), nodes, prefill, tail, options, crash, lambda m: print(m, flush=True)))


def build_fixture(
    data_dir: Path,
    nodes: int,
    prefill: int,
    tail: int = 0,
    *,
    crash: bool = False,
    options: dict[str, Any] | None = None,
) -> float:
    """A run folder under data_dir/runs/bench: `prefill` bins, a committed snapshot, then `tail` logged
    bins (no snapshot after them; `crash` ends the builder with os._exit). Returns the seconds taken."""
    opts = {"graceBins": 2, "retentionBins": prefill, "snapshotEveryBins": HUGE, "snapshotEverySeconds": HUGE}
    opts |= options or {}
    t0 = time.monotonic()
    proc = mp.get_context("spawn").Process(target=_build_main, args=(str(data_dir), nodes, prefill, tail, opts, crash))
    proc.start()
    proc.join(timeout=900)
    if proc.exitcode != 0:
        raise SystemExit(f"fixture builder failed (exit {proc.exitcode})")
    return time.monotonic() - t0


def set_run_options(live_dir: Path, options: dict[str, Any]) -> None:
    """Rewrite CURRENT's snapshot create.json options (a recovered run takes them from there)."""
    from snapshot_writer.atomic_files import json_bytes

    cur = orjson.loads((live_dir / "CURRENT").read_bytes())
    snap = live_dir / "snapshots" / cur["snapshot"]
    create = orjson.loads((snap / "create.json").read_bytes())
    create["options"] = {**create.get("options", {}), **options}
    raw = json_bytes(create)
    (snap / "create.json").write_bytes(raw)
    state = orjson.loads((snap / "state.json").read_bytes())
    state["files"]["create.json"] = "sha256:" + hashlib.sha256(raw).hexdigest()
    sraw = json_bytes(state)
    (snap / "state.json").write_bytes(sraw)
    cur["stateHash"] = "sha256:" + hashlib.sha256(sraw).hexdigest()
    (live_dir / "CURRENT").write_bytes(orjson.dumps(cur))


# -- measurement -------------------------------------------------------------------------------------
def measure(srv: ServerProcess, nodes: int, first_bin: int, bins: int, warmup: int, rate: float) -> dict[str, Any]:
    maker = BodyMaker(RUN_ID, nodes, "series")
    path = f"/v1/runs/{RUN_ID}/bins"
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    lat: list[tuple[int, float]] = []
    codes: Counter[int] = Counter()
    t0 = time.monotonic()
    for k in range(warmup + bins):
        b = first_bin + k
        if rate > 0:
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        body, _ = maker.body(b)
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-ndjson"})
        resp = conn.getresponse()
        resp.read()
        dt = (time.perf_counter() - t) * 1e3
        codes[resp.status] += 1
        if k >= warmup:
            lat.append((b, dt))
    conn.close()
    snaps = sorted(p.name for p in (srv.data_dir / "runs" / RUN_ID / "live" / "snapshots").iterdir())
    return {"lat": lat, "codes": dict(codes), "snapshots": snaps, "wall_s": time.monotonic() - t0}


def run_variant(
    name: str, fixture: Path, work: Path, args: argparse.Namespace, options: dict[str, Any]
) -> dict[str, Any]:
    data = work / name / "data"
    t = time.monotonic()
    copy_tree(fixture, data)
    set_run_options(data / "runs" / RUN_ID / "live", options)
    print(f"[{name}] fixture copied ({time.monotonic() - t:.1f} s); starting the server", flush=True)
    t = time.monotonic()
    with ServerProcess(data, env={"FLOWTIME_FSYNC": "true"}, ready_timeout_s=300) as srv:
        ready_s = time.monotonic() - t
        print(f"[{name}] ready after {ready_s:.1f} s (pid {srv.pid}); measuring {args.bins} bins", flush=True)
        spy = gil = None
        if args.profile and name == "every10":
            pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            dur = str(int(max(10, (args.bins + args.warmup) / max(args.rate, 1) + 5)))
            spy = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "-p",
                    str(srv.pid),
                    "-r",
                    "200",
                    "-d",
                    dur,
                    "-f",
                    "raw",
                    "-t",
                    "-o",
                    str(work / "spy_all.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            gil = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "-p",
                    str(srv.pid),
                    "-r",
                    "200",
                    "-d",
                    dur,
                    "-f",
                    "raw",
                    "-t",
                    "--gil",
                    "-o",
                    str(work / "spy_gil.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            time.sleep(1.0)
        res = measure(srv, args.nodes, args.retain, args.bins, args.warmup, args.rate)
        for p in (spy, gil):
            if p is not None:
                p.wait(timeout=300)
        res["ready_s"] = ready_s
        res["log"] = srv.log_tail(2000)
    shutil.rmtree(work / name, ignore_errors=True)
    return res


FOCUS = (
    "capture (engine_live/state/live_state.py",
    "SegmentedLog.roll",
    "_ensure_columns",
    "LiveRun._publish",
    "LiveService.apply ",
    "FrameValidator.validate",
    "parse_body",
    "commit_sync",
    "encode_retained",
    "write_table",
    "_read_meta",
    "write_file",
    "fsync",
    "_sha ",
    "materialize",
    "to_state",
    "_hooks_parts",
    "encode_cells",
    "release_before",
    "_write_segments",
    "prune ",
)
IDLE = ("Condition.wait", "Queue.get", "select (selectors.py", "_worker (concurrent", "WorkerThread.run")


def profile_summary(path: Path, title: str) -> str:
    """Share of the samples (inclusive) in the functions that matter, per thread kind (main = event loop)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return f"{title}: (no profile)"
    per: dict[str, Counter[str]] = {"main": Counter(), "other": Counter()}
    tot: Counter[str] = Counter()
    for line in lines:
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any(i in frames[-1] for i in IDLE):
            continue  # a thread waiting for work
        kind = "main" if "MainThread" in ";".join(frames[:2]) else "other"
        tot[kind] += int(n)
        for f in set(frames):
            for key in FOCUS:
                if f.startswith(key) or key in f:
                    per[kind][key.split(" (")[0].strip()] += int(n)
                    break
    out = [f"{title}: busy samples main={tot['main']} other threads={tot['other']}"]
    for kind in ("main", "other"):
        shown = ", ".join(f"{k} {c / max(tot[kind], 1) * 100:.1f}%" for k, c in per[kind].most_common())
        out.append(f"  {kind}: {shown or '-'}")
    return "\n".join(out)


def copy_tree(src: Path, dst: Path) -> None:
    """A copy that keeps holes (events.log releases its old bytes as a punched hole) and is on disk
    before measuring: copying the holes as zeros left gigabytes of writeback running under the timings."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)
    else:
        shutil.copytree(src, dst)
    os.sync()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--retain", type=int, default=8640, help="bins held when measuring (the pre-fill)")
    p.add_argument("--bins", type=int, default=300, help="measured bins per variant")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rate", type=float, default=4.0, help="bins/s sent (0: back to back)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--keep", type=Path, help="keep the fixture here (reused when it exists)")
    p.add_argument("--variants", default="none,every10", help="comma-separated subset of none,every10")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ft-snapbench-"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        fixture = args.keep or work / "fixture"
        if not (fixture / "runs" / RUN_ID / "live" / "CURRENT").exists():
            print(f"building the fixture: {args.nodes} nodes × {args.retain} bins in {fixture}", flush=True)
            took = build_fixture(fixture, args.nodes, args.retain)
            print(f"fixture built in {took:.0f} s", flush=True)
        for name, opts in (
            ("none", {"snapshotEveryBins": HUGE, "snapshotEverySeconds": HUGE}),
            ("every10", {"snapshotEveryBins": 10, "snapshotEverySeconds": HUGE}),
        ):
            if name in args.variants.split(","):
                rows[name] = run_variant(name, fixture, work, args, opts)
    finally:
        shutil.rmtree(work, ignore_errors=True) if not args.profile else None

    print()
    print(
        f"ingest latency, request → 202: {args.nodes} nodes × 3 metrics = {args.nodes * 3} frames per request, "
        f"{args.retain} bins held, {args.bins} bins measured at "
        f"{'max' if args.rate <= 0 else f'{args.rate:g} bins/s'}, one request in flight, fsync on, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'variant':<8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8} {'snapshots':>10} {'codes'}")
    for name, r in rows.items():
        v = [x for _, x in r["lat"]]
        n_snaps = len([s for s in r["snapshots"] if not s.startswith(".")])
        print(
            f"{name:<8} {pct(v, 50):>6.1f}ms {pct(v, 90):>6.1f}ms {pct(v, 99):>6.1f}ms {max(v):>6.1f}ms "
            f"{sum(v) / len(v):>6.1f}ms {n_snaps:>10} {r['codes']}"
        )
    if "none" in rows and "every10" in rows:
        a = [x for _, x in rows["none"]["lat"]]
        b = [x for _, x in rows["every10"]["lat"]]
        print(
            f"added p99: {pct(b, 99) - pct(a, 99):+.1f} ms (target ≤ 2 ms); "
            f"added p50: {pct(b, 50) - pct(a, 50):+.1f} ms"
        )
        worst = sorted(rows["every10"]["lat"], key=lambda t: -t[1])[:8]
        print("every10, slowest requests (bin: ms): " + ", ".join(f"{bb}: {x:.0f}" for bb, x in worst))
        trig = [x for bb, x in rows["every10"]["lat"] if bb % 10 == 9]
        rest = [x for bb, x in rows["every10"]["lat"] if bb % 10 != 9]
        if trig and rest:
            print(
                f"every10, requests whose bin triggers a capture (bin % 10 == 9): mean "
                f"{sum(trig) / len(trig):.1f} ms, p50 {pct(trig, 50):.1f} ms; the others: mean "
                f"{sum(rest) / len(rest):.1f} ms, p50 {pct(rest, 50):.1f} ms"
            )
    if args.profile:
        print()
        print(profile_summary(work / "spy_all.txt", "server, every10, all samples (py-spy, inclusive)"))
        print(profile_summary(work / "spy_gil.txt", "server, every10, GIL holder (py-spy --gil, inclusive)"))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
