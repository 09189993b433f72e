"""Run exports (SPEC §8): a finished run as one long table in CSV, NDJSON and Parquet, plus catalog.json.

Written under `runs/<id>/export/`: `export.csv`, `export.ndjson`, `export.parquet` and, last,
`catalog.json` (columns, units, grid with binMinutes, provenance, and each file's size and hash).
Rows: one per (topology node, semantic field) whose series the run holds (topology.json order:
nodes as listed, fields by name), then one per series outside the topology (`node` = the model node
id, `metric` = "value"); bins in order within each.

Columns (all formats): `time_utc` (bin start; timestamp[ms, UTC] in Parquet, `YYYY-MM-DDTHH:MM:SSZ`
text elsewhere; null when the grid has no start), `bin_index`, `node`, `metric`, `series_id`
(artifact id), `value` (float64), and for a run with classes (SPEC §14) one more column per class,
`value@<classId>` (float64): the value of that class of the row's series (artifact
`<id>@<ID>@<classId>`), null (empty in CSV) on a series without classes. A class-less run has no
such column, so its files are what they were before classes. CSV numbers use the shortest
round-trip form of §12.10 (`NaN`, `Infinity`); NDJSON writes non-finite values as null. Columns
are built with numpy repeat/tile and Arrow kernels in chunks of about `CHUNK_ROWS` rows, so no
Python work runs per value and memory stays bounded. Same run, same bytes (no clock). An export
is current while catalog.json names the run's manifest hash and every file has its recorded size;
`ensure_export` rewrites it otherwise.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine_live.errors import NotFoundError
from snapshot_writer.atomic_files import atomic_path, write_json_atomic
from snapshot_writer.export_layout import (
    SCHEMA,
    Entry,
    artifact_id,
    class_column,
    columns_of,
    entries_of,
    schema_of,
    unit_of,
)
from snapshot_writer.number_format import CSV_HEADER, series_csv_bytes
from snapshot_writer.run_view import RunView, read_run_view

EXPORT_DIR = "export"
CATALOG = "catalog.json"
FORMATS = ("csv", "ndjson", "parquet")
FILE_NAMES = {"csv": "export.csv", "ndjson": "export.ndjson", "parquet": "export.parquet"}
MEDIA_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}
CHUNK_ROWS = 1 << 20
_LOCKS = tuple(threading.Lock() for _ in range(64))
FloatArray = npt.NDArray[np.float64]


def _bin_times(view: RunView) -> npt.NDArray[np.datetime64] | None:
    if view.grid.start is None:
        return None
    start = np.datetime64(view.grid.start.removesuffix("Z").removesuffix("+00:00"), "ms")
    step = np.timedelta64(view.grid.bin_minutes * 60_000, "ms")
    return start + np.arange(view.bins) * step


def value_tokens(values: FloatArray) -> pa.StringArray:
    """The §12.10 number text of each value, as an Arrow string array (no per-value Python)."""
    body = series_csv_bytes(values)[len(CSV_HEADER) :]  # rows "<i>,<v>\n"
    raw = np.frombuffer(body, np.uint8)
    starts = np.flatnonzero(raw == 44) + 1
    ends = np.flatnonzero(raw == 10)
    delta = np.zeros(raw.size + 1, np.int8)
    delta[starts] += 1  # positions are distinct, so fancy-index updates are exact
    delta[ends] -= 1
    data = raw[np.cumsum(delta[:-1], dtype=np.int8).view(np.bool_)]
    offsets = np.zeros(values.size + 1, np.int32)
    np.cumsum(ends - starts, out=offsets[1:])
    return pa.StringArray.from_buffers(values.size, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def _csv_text(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(char in name for char in ',"\n\r') else name


def _joined(parts: Sequence[pa.Array | pa.Scalar]) -> memoryview:
    """The bytes of the element-wise concatenation of `parts` (one contiguous buffer)."""
    out = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(out.buffers()[1], np.int32, count=len(out) + 1, offset=out.offset * 4)
    return memoryview(out.buffers()[2])[offsets[0] : offsets[-1]]


@dataclass(frozen=True)
class Chunk:
    """Rows of whole entries: entry index, bin, value and time of each row."""

    codes: npt.NDArray[np.int64]  # entry index per row
    bins: npt.NDArray[np.int64]
    values: FloatArray
    times: npt.NDArray[np.datetime64] | None
    classes: tuple[tuple[FloatArray, npt.NDArray[np.bool_]], ...] = ()  # per class: values, has a class value


def iter_chunks(view: RunView, entries: Sequence[Entry], rows: int | None = None) -> Iterator[Chunk]:
    """The table's rows in chunks of whole entries, about `rows` (default CHUNK_ROWS) rows each."""
    n = view.bins
    times = _bin_times(view)
    per = max(1, (rows or CHUNK_ROWS) // max(n, 1))
    absent = np.full(n, np.nan)
    for lo in range(0, len(entries), per):
        group = entries[lo : lo + per]
        values = np.concatenate([view.series[entry.series] for entry in group]) + 0.0 if n else np.zeros(0)
        classes = []
        for c in view.class_ids:
            has = np.array([c in view.classes.get(entry.series, ()) for entry in group], dtype=np.bool_)
            parts = [view.series[f"{e.series}@{c}"] if h else absent for e, h in zip(group, has, strict=True)]
            classes.append((np.concatenate(parts) + 0.0 if n else np.zeros(0), np.repeat(has, n)))
        yield Chunk(
            np.repeat(np.arange(lo, lo + len(group), dtype=np.int64), n),
            np.tile(np.arange(n, dtype=np.int64), len(group)),
            values,
            None if times is None else np.tile(times, len(group)),
            tuple(classes),
        )


@dataclass(frozen=True)
class Prefixes:
    """Row text before the value, split in a per-bin part and a per-entry part (built once)."""

    csv_bin: pa.Array  # "<time>,<bin>,"
    csv_entry: pa.Array  # "<node>,<metric>,<series_id>,"
    json_bin: pa.Array  # '{"time_utc":"<time>","bin_index":<bin>,'
    json_entry: pa.Array  # '"node":"..","metric":"..","series_id":"..","value":'
    json_classes: tuple[str, ...] = ()  # ',"value@<classId>":' per class

    @staticmethod
    def of(view: RunView, entries: Sequence[Entry]) -> Prefixes:
        """The prefixes of a run's bins and entries."""
        times = _bin_times(view)
        bins = pc.cast(pa.array(np.arange(view.bins, dtype=np.int64)), pa.string())
        if times is None:
            text, quoted = pa.scalar(""), pa.scalar("null")
        else:
            text = pa.array(np.char.add(np.datetime_as_string(times, unit="s"), "Z").astype(object), pa.string())
            quoted = pc.binary_join_element_wise('"', text, '"', "")
        scalar = pa.scalar
        csv_bin = pc.binary_join_element_wise(text, scalar(","), bins, scalar(","), "")
        json_bin = pc.binary_join_element_wise(
            scalar('{"time_utc":'), quoted, scalar(',"bin_index":'), bins, scalar(","), ""
        )
        csv_entry = [
            ",".join(_csv_text(part) for part in (entry.node, entry.metric, artifact_id(entry.series))) + ","
            for entry in entries
        ]
        json_entry = [
            orjson.dumps({"node": entry.node, "metric": entry.metric, "series_id": artifact_id(entry.series)}).decode()[
                1:-1
            ]
            + ',"value":'
            for entry in entries
        ]
        json_classes = tuple("," + orjson.dumps(class_column(c)).decode() + ":" for c in view.class_ids)
        return Prefixes(
            csv_bin, pa.array(csv_entry, pa.string()), json_bin, pa.array(json_entry, pa.string()), json_classes
        )


def text_chunks(prefixes: Prefixes, chunk: Chunk) -> tuple[memoryview, memoryview]:
    """The CSV rows and the NDJSON lines of a chunk."""
    tokens = value_tokens(chunk.values)
    bins, codes = pa.array(chunk.bins), pa.array(chunk.codes)
    value = pc.if_else(pa.array(np.isfinite(chunk.values)), tokens, pa.scalar("null"))
    csv_parts = [prefixes.csv_bin.take(bins), prefixes.csv_entry.take(codes), tokens]
    json_parts = [prefixes.json_bin.take(bins), prefixes.json_entry.take(codes), value]
    for key, (values, has) in zip(prefixes.json_classes, chunk.classes, strict=True):
        text = value_tokens(values)
        csv_parts += [pa.scalar(","), pc.if_else(pa.array(has), text, pa.scalar(""))]
        json_parts += [pa.scalar(key), pc.if_else(pa.array(has & np.isfinite(values)), text, pa.scalar("null"))]
    csv = _joined([*csv_parts, pa.scalar("\n")])
    ndjson = _joined([*json_parts, pa.scalar("}\n")])
    return csv, ndjson


def arrow_chunk(entries: Sequence[Entry], chunk: Chunk, schema: pa.Schema = SCHEMA) -> pa.Table:
    """A chunk as an Arrow table of the parquet export's schema (`schema_of` the run's classes)."""
    codes = pa.array(chunk.codes)
    node, metric, sid = (
        pa.array([key(entry) for entry in entries], pa.string()).take(codes)
        for key in (lambda e: e.node, lambda e: e.metric, lambda e: artifact_id(e.series))
    )
    kind = SCHEMA.field("time_utc").type
    time = (
        pa.nulls(len(chunk.bins), kind)
        if chunk.times is None
        else pa.array(chunk.times.astype("datetime64[ms]")).cast(kind)
    )
    classes = [pa.array(values, mask=~has) for values, has in chunk.classes]
    columns = [time, pa.array(chunk.bins), node, metric, sid, pa.array(chunk.values), *classes]
    return pa.Table.from_arrays(columns, schema=schema)


class _Sink:
    """Writes to a file while hashing and counting the bytes."""

    def __init__(self, file: BinaryIO | None = None) -> None:
        self.file, self.sha, self.size = file, hashlib.sha256(), 0

    def add(self, piece: bytes | memoryview) -> None:
        if self.file is not None:
            self.file.write(piece)
        self.sha.update(piece)
        self.size += len(piece)

    def summary(self, fmt: str) -> dict[str, Any]:
        """The catalog's `files` entry of what was written."""
        return {
            "path": f"{EXPORT_DIR}/{FILE_NAMES[fmt]}",
            "bytes": self.size,
            "hash": "sha256:" + self.sha.hexdigest(),
            "mediaType": MEDIA_TYPES[fmt],
        }


def _write_files(view: RunView, entries: Sequence[Entry], folder: Path, fsync: bool) -> dict[str, dict[str, Any]]:
    """One pass over the table writing the three files (each to a temporary name, renamed at the end)."""
    prefixes = Prefixes.of(view, entries)
    schema = schema_of(view.class_ids)
    paths = [folder / FILE_NAMES[fmt] for fmt in FORMATS]
    with (
        atomic_path(paths[0], fsync=fsync) as csv_tmp,
        atomic_path(paths[1], fsync=fsync) as ndjson_tmp,
        atomic_path(paths[2], fsync=fsync) as parquet_tmp,
    ):
        with (
            csv_tmp.open("xb") as csv_file,
            ndjson_tmp.open("xb") as ndjson_file,
            pq.ParquetWriter(parquet_tmp, schema, compression="zstd") as parquet,
        ):
            csv, ndjson = _Sink(csv_file), _Sink(ndjson_file)
            csv.add(b",".join(name.encode() for name in schema.names) + b"\n")
            for chunk in iter_chunks(view, entries):
                rows, lines = text_chunks(prefixes, chunk)
                csv.add(rows)
                ndjson.add(lines)
                parquet.write_table(arrow_chunk(entries, chunk, schema))
        table = _Sink()
        with parquet_tmp.open("rb") as parquet_file:
            while block := parquet_file.read(1 << 20):
                table.add(block)
    return {"csv": csv.summary("csv"), "ndjson": ndjson.summary("ndjson"), "parquet": table.summary("parquet")}


def _manifest_hash(view: RunView) -> str:
    return "sha256:" + hashlib.sha256(view.manifest_bytes).hexdigest()


def write_exports(run_dir: Path, *, fsync: bool = True) -> dict[str, Any]:
    """Write every export format and catalog.json (last) of a finished run; returns the catalog."""
    view = read_run_view(run_dir)
    folder = Path(run_dir) / EXPORT_DIR
    folder.mkdir(exist_ok=True)
    entries = entries_of(view)
    files = _write_files(view, entries, folder, fsync)
    run = view.run_json
    grid = {**view.grid.to_wire(), "binMinutes": view.grid.bin_minutes, "timezone": "UTC", "align": "left"}
    catalog = {
        "schemaVersion": 1,
        "runId": run.get("runId", Path(run_dir).name),
        "rows": len(entries) * view.bins,
        "rowOrder": "node/metric entries in topology order, then series outside the topology; bins ascending",
        "columns": columns_of(view.class_ids),
        **({"classes": list(view.class_ids)} if view.class_ids else {}),
        "units": [unit_of(view, entry) for entry in entries],
        "grid": grid,
        "binMinutes": view.grid.bin_minutes,
        "provenance": {
            "runId": run.get("runId"),
            "mode": run.get("mode"),
            "createdUtc": run.get("createdUtc"),
            "modelHash": run.get("modelHash"),
            "scenarioHash": run.get("scenarioHash"),
            "manifestHash": _manifest_hash(view),
        },
        "files": files,
    }
    write_json_atomic(folder / CATALOG, catalog, fsync=fsync)
    return catalog


def read_catalog(run_dir: Path) -> dict[str, Any] | None:
    """catalog.json of a run's export, or None when missing or unreadable."""
    try:
        data = orjson.loads((Path(run_dir) / EXPORT_DIR / CATALOG).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_current(run_dir: Path, catalog: dict[str, Any] | None) -> bool:
    """Whether an export matches the run's current artifacts and every file is whole."""
    if catalog is None:
        return False
    try:
        manifest = (Path(run_dir) / "manifest.json").read_bytes()
        if (catalog.get("provenance") or {}).get("manifestHash") != "sha256:" + hashlib.sha256(manifest).hexdigest():
            return False
        files = catalog.get("files") or {}
        return all(
            fmt in files and (Path(run_dir) / files[fmt]["path"]).stat().st_size == files[fmt]["bytes"]
            for fmt in FORMATS
        )
    except (OSError, KeyError, TypeError):
        return False


def _lock(run_dir: Path) -> threading.Lock:
    return _LOCKS[zlib.crc32(str(Path(run_dir).resolve()).encode()) % len(_LOCKS)]


def export_run(run_dir: Path, *, fsync: bool = True) -> dict[str, Any]:
    """Write the export of a run (one writer per run at a time); returns the catalog."""
    with _lock(run_dir):
        return write_exports(run_dir, fsync=fsync)


def ensure_export(run_dir: Path, fmt: str, *, fsync: bool = True) -> Path:
    """The path of a current export file of `fmt`, writing the export first when absent or stale."""
    if fmt not in FORMATS:
        raise NotFoundError(f"no export format {fmt!r}; known: {list(FORMATS)}", code="unknown_format", format=fmt)
    with _lock(run_dir):
        catalog = read_catalog(run_dir)
        if not is_current(run_dir, catalog):
            catalog = write_exports(run_dir, fsync=fsync)
        assert catalog is not None
        return Path(run_dir) / str(catalog["files"][fmt]["path"])
