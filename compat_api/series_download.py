"""`GET /v1/runs/{id}/series/{seriesId}`: one series of a finished run as a download (SPEC §8).

Runs off the event loop (a worker thread). `format=json` is an artifact download and keeps full
precision (non-finite → null).
"""

from __future__ import annotations

import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import Response

from compat_api.run_store import RunStore
from engine_live.plan.run_result import model_series_id
from snapshot_writer.number_format import series_csv_bytes


def series_response(store: RunStore, run_id: str, series_id: str, fmt: str) -> Response:
    """One series of a finished run as CSV (its file), JSON (full precision, non-finite → null) or Parquet."""
    entry = store.series_entry(run_id, series_id)
    run_dir = store.run_dir(run_id)
    path = (run_dir / str(entry.get("path", ""))).resolve()
    if fmt == "csv" and path.is_file() and path.is_relative_to(run_dir.resolve()):
        return Response(path.read_bytes(), media_type="text/csv")
    loaded = store.load(run_id)
    values = loaded.series[model_series_id(str(entry["id"]))]
    if fmt == "csv":
        return Response(series_csv_bytes(values), media_type="text/csv")
    if fmt == "json":
        obj = np.asarray(values, dtype=np.float64).astype(object)
        obj[~np.isfinite(values)] = None
        grid = loaded.run_json.get("grid") or {}
        return Response(
            orjson.dumps(
                {
                    "runId": run_id,
                    "seriesId": entry["id"],
                    "grid": grid,
                    "binMinutes": grid.get("binMinutes"),
                    "values": obj.tolist(),
                }
            ),
            media_type="application/json",
        )
    table = pa.table(
        {
            "bin_index": pa.array(np.arange(len(values), dtype=np.int64)),
            "value": pa.array(np.asarray(values, dtype=np.float64)),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return Response(sink.getvalue(), media_type="application/vnd.apache.parquet")


__all__ = ["series_response"]
