"""The one codec of log records: `engine_live.runtime.records` ⇄ the bytes of the ingestion log.

Records are orjson objects (the log adds its `[length][crc32]` header, `ingestion.ingest_log`):

- `{"t": "create", "runId", "epoch", "createdUtc", "model", "options"}`
- `{"t": "cols", "b": bin | [bin, ...], "s": [series, ...], "v": [value, ...], "src"?: [partition, offset]}`
  — frames as columns, the bin once when every value shares it; logs written before hold
  `{"t": "frames", "f": [[bin, series, value], ...]}`, still decoded
- `{"t": "patch", "modelRevision", "fromBin", "nodes", "topology"?}`
- `{"t": "close"}`
- `{"t": "fail", "reason"}` — the run failed (a record could not be evaluated)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from engine_live.runtime.records import CloseRecord, CreateRecord, FailRecord, FramesRecord, LogRecord, PatchRecord
from engine_live.state.frame_batch import FrameBatch

CLOSE = b'{"t":"close"}'


def encode(record: LogRecord) -> bytes:
    """A record as the bytes the log stores."""
    if isinstance(record, FramesRecord):
        return orjson.dumps(frames_fields(record))
    if isinstance(record, CreateRecord):
        return orjson.dumps(record.to_dict())
    if isinstance(record, PatchRecord):
        return orjson.dumps({"t": "patch", **record.body})
    if isinstance(record, FailRecord):
        return orjson.dumps({"t": "fail", "reason": record.reason})
    return CLOSE


def frames_fields(record: FramesRecord) -> dict[str, Any]:
    """The JSON object of a frames record."""
    batch = record.batch
    one_bin = batch.one_bin
    fields: dict[str, Any] = {
        "t": "cols",
        "b": one_bin if one_bin is not None else batch.bins.tolist(),
        "s": list(batch.series),
        "v": batch.values.tolist(),
    }
    if record.source is not None:
        fields["src"] = list(record.source)  # Kafka partition and offset the frames came from
    return fields


def decode(payload: bytes) -> LogRecord:
    """Stored bytes back into a record; ValueError when they are not one."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a JSON log record: {exc}") from None
    kind = fields.get("t") if isinstance(fields, dict) else None
    if kind in ("cols", "frames"):
        source = fields.get("src")
        return FramesRecord(decode_batch(fields), (int(source[0]), int(source[1])) if source else None)
    if kind == "create":
        return CreateRecord.from_dict(fields)
    if kind == "patch":
        return PatchRecord({k: v for k, v in fields.items() if k != "t"})
    if kind == "close":
        return CloseRecord()
    if kind == "fail":
        return FailRecord(str(fields.get("reason") or "failed"))
    raise ValueError(f"unknown log record type {kind!r}")


def decode_batch(fields: dict[str, Any]) -> FrameBatch:
    """The values of a `cols` record (or a `frames` record of older logs) as a batch."""
    if fields["t"] == "cols":
        series, values, bins = fields["s"], fields["v"], fields["b"]
        if isinstance(bins, int):
            bins_array = np.full(len(series), bins, dtype=np.int64)
        else:
            bins_array = np.array(bins, dtype=np.int64).reshape(-1)
    elif fields["f"]:
        bins, series, values = zip(*fields["f"], strict=True)
        bins_array = np.array(bins, dtype=np.int64)
    else:
        series, values, bins_array = [], [], np.zeros(0, dtype=np.int64)
    if len(bins_array) != len(series) or len(values) != len(series):
        raise ValueError("a frames record with columns of different lengths")
    return FrameBatch(bins_array, list(series), np.array(values, dtype=np.float64).reshape(-1))
