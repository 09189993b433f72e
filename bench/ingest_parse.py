#!/usr/bin/env python3
"""Parse + validate cost of one ingest request per body form (issue 16), in process, best of N.

One bin of the `bench/live_ingest.py` model (1,000 services × 3 telemetry metrics = 3,000 values) as
NDJSON series frames, NDJSON node frames, one column line and an Arrow IPC stream, each read by the
run's `FrameReader` exactly as `POST /v1/runs/{id}/bins` reads it. `--tree DIR` measures another
source tree (e.g. a copy of the tree before a change; forms it does not know are skipped).

    python bench/ingest_parse.py [--nodes 1000] [--repeat 50] [--tree DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRICS = ("arrivals", "served", "capacity")


def model(nodes: int) -> str:
    head = 'grid: {bins: 8640, binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}\nnodes: []\ntopology:\n'
    sem = "{arrivals: telemetry, served: telemetry, capacity: telemetry}"
    return head + "  nodes:\n" + "".join(f"    - {{id: S{i}, kind: service, semantics: {sem}}}\n" for i in range(nodes))


def bodies(nodes: int) -> dict[str, tuple[bytes, str]]:
    import orjson

    series = [f"S{i}.{m}" for i in range(nodes) for m in METRICS]
    values = [50.0 + (i % 97) + k for i in range(nodes) for k in range(3)]
    frames = b"\n".join(orjson.dumps({"bin": 5, "series": s, "value": v}) for s, v in zip(series, values, strict=True))
    node_frames = b"\n".join(
        orjson.dumps({"bin": 5, "node": f"S{i}", "arrivals": 50 + i % 97, "served": 40 + i % 89, "capacity": 120})
        for i in range(nodes)
    )
    out = {
        "ndjson series frames": (frames, "application/x-ndjson"),
        "ndjson node frames": (node_frames, "application/x-ndjson"),
        "column line": (
            orjson.dumps({"bin": 5, "series": series, "values": values}),
            "application/x-flowtime-columns+ndjson",
        ),
    }
    try:
        import pyarrow as pa

        table = pa.table(
            {"bin": pa.array([5] * len(series), pa.int32()), "series": pa.array(series).dictionary_encode()}
            | {"value": pa.array(values)}
        )
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out["arrow stream"] = (bytes(sink.getvalue().to_pybytes()), "application/vnd.apache.arrow.stream")
    except ImportError:
        pass
    return out


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = p.parse_args()
    sys.path.insert(0, str(args.tree))
    from engine_live.model.build import load_graph
    from ingestion.live_log import FileLogStore

    reader: Any = FileLogStore().frame_reader(load_graph(model(args.nodes), live=True), "r1")
    print(f"tree {args.tree}, {args.nodes * 3:,} values a request, best of {args.repeat}")
    for name, (body, media) in bodies(args.nodes).items():
        try:
            batch = reader.read(body, last_bin=0, max_frames=100_000, media_type=media)
        except TypeError:  # a tree without media types: frames only
            if "frames" not in name:
                print(f"  {name:<22} (not supported by this tree)")
                continue
            batch = reader.read(body, last_bin=0, max_frames=100_000)
            media = None
        if len(batch) != args.nodes * 3:
            raise SystemExit(f"{name}: {len(batch)} values")
        kwargs = {"media_type": media} if media is not None else {}
        ms = best_ms(lambda b=body, k=kwargs: reader.read(b, last_bin=0, max_frames=100_000, **k), args.repeat)
        print(f"  {name:<22} {len(body) / 1024:7.1f} KiB  {ms:6.2f} ms  {len(batch) / ms * 1e3:>12,.0f} values/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
