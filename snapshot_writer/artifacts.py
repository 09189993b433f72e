"""Writes the canonical artifacts of a run (SPEC §4) into a run folder.

Layout: ``spec.yaml``, ``model/{model.yaml, metadata.json, provenance.json?, adjustments.json?}``,
``run.json``, ``series/{index.json, <file>.csv...}``, ``series.parquet``, ``topology.json`` and,
last, ``manifest.json`` — a folder without a manifest is an incomplete set.

Decisions (where SPEC leaves room):

* Series hash = ``sha256:`` of the exact bytes of the series' CSV file (checkable with
  ``sha256sum``); computed even when the CSVs are not written (``formats`` without ``"csv"``).
* ``modelHash`` = sha256 of ``model/model.yaml``; when ``model/adjustments.json`` exists (§12.8: it
  "enters modelHash") it is sha256 of the model.yaml bytes followed by the adjustments.json bytes.
* ``scenarioHash`` = sha256 of ``spec_text + "\\n" + str(seed)`` (UTF-8).
* Paths in ``run.json`` and ``series/index.json`` are relative to the run folder (``series/x.csv``),
  also when the CSVs are left out; ``index.json`` lists the written ``formats``.
* ``series.parquet`` holds bin_index (int64), series_id (dictionary string), value (float64,
  ``-0`` stored as ``0``), zstd; the writer puts no time or random id in, so same input, same bytes.
* Every file goes to a temporary name and is renamed into place (the CSVs and index.json into a
  temporary ``series`` folder that replaces the old one); everything is fsynced before
  ``manifest.json`` is written. Rewriting a folder first removes its manifest, and files of the
  old set that the new one lacks. One writer per folder at a time (the caller serialises).
* JSON: sorted keys, 2-space indent, final newline. Byte identity (§12.10) holds for everything but
  runId / createdUtc / live in run.json and runId / createdUtc / liveSession in manifest.json.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine_live.model.checking import file_name_problem
from engine_live.model.grid import Grid
from engine_live.plan.run_result import RunResult, SeriesOut
from engine_live.runtime.storage import REAL_FS, FsOps
from snapshot_writer.atomic_files import (
    TEMP_MARK,
    atomic_path,
    fsync_dir,
    json_bytes,
    remove_file,
    write_bytes_atomic,
    write_file,
)
from snapshot_writer.number_format import CsvBody, iter_csv_bodies

SCHEMA_VERSION = 1
FORMATS = frozenset({"csv", "parquet"})
MANIFEST = "manifest.json"
DEFAULT_RNG_KIND = "pcg32"
_IO_THREADS = 8
FORMAT_THREADS = max(1, min(4, os.cpu_count() or 1))  # CSV formatting threads (series split in parts)
_OLD_MARK = ".old-"


@dataclass(frozen=True)
class ArtifactsInfo:
    """What `write_run_artifacts` wrote: the folder and the hashes the manifest records."""

    run_dir: Path
    manifest_hash: str  # sha256 of manifest.json's bytes
    model_hash: str
    scenario_hash: str
    series_hashes: Mapping[str, str]  # series id -> sha256 of its CSV bytes


def sha256_hex(*chunks: bytes) -> str:
    """`sha256:<hex>` of the chunks' bytes, in order."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def scenario_hash(spec_text: str, seed: int) -> str:
    """sha256 of `spec_text + "\\n" + str(seed)` (UTF-8)."""
    return sha256_hex(f"{spec_text}\n{seed}".encode())


def model_hash(model_yaml: bytes, adjustments_json: bytes | None = None) -> str:
    """sha256 of model.yaml's bytes, followed by adjustments.json's when there is one."""
    return sha256_hex(model_yaml, adjustments_json or b"")


def csv_file_name(series: SeriesOut) -> str:
    """`outputs[].as` when given, else `<series id>.csv`; a plain file name, never a path."""
    name = series.path_name if series.path_name is not None else f"{series.series_id}.csv"
    if file_name_problem(name) is not None:
        raise ValueError(f"series {series.series_id!r}: {name!r} is not a valid file name")
    return name


def grid_wire(grid: Grid) -> dict[str, Any]:
    """The grid as run.json and series/index.json write it."""
    return {**grid.to_wire(), "binMinutes": grid.bin_minutes, "timezone": "UTC", "align": "left"}


PARQUET_SCHEMA = pa.schema(
    [
        ("bin_index", pa.int64()),
        ("series_id", pa.dictionary(pa.int32(), pa.string())),
        ("value", pa.float64()),
    ]
)
_ROW_GROUP_ROWS = 1 << 20


def parquet_row_groups(series: Sequence[SeriesOut]) -> Iterator[pa.Table]:
    """series.parquet's rows, whole series per row group of about 1 Mi rows (small buffers, reused)."""
    bins = max((np.size(one.values) for one in series), default=0)
    per_group = max(1, _ROW_GROUP_ROWS // max(bins, 1))
    bin_index = np.tile(np.arange(bins, dtype=np.int64), per_group)
    for first in range(0, len(series), per_group):
        group = series[first : first + per_group]
        lengths = np.array([np.size(one.values) for one in group], dtype=np.int64)
        values = np.concatenate([np.asarray(one.values, dtype=np.float64).reshape(-1) for one in group])
        with np.errstate(invalid="ignore"):
            values += 0.0  # -0 -> 0, as in the CSVs
        if (lengths == bins).all():
            index = bin_index[: values.size]
        else:
            index = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        codes = np.repeat(np.arange(len(group), dtype=np.int32), lengths)
        ids = pa.DictionaryArray.from_arrays(codes, pa.array([one.series_id for one in group], pa.string()))
        yield pa.table([pa.array(index), ids, pa.array(values)], schema=PARQUET_SCHEMA)


def _write_parquet(path: Path, series: Sequence[SeriesOut], fsync: bool, fs: FsOps = REAL_FS) -> None:
    options: dict[str, Any] = {"compression": "zstd", "use_dictionary": True, "write_statistics": False}
    with (
        atomic_path(path, fsync=fsync, fs=fs) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pq.ParquetWriter(sink, PARQUET_SCHEMA, **options) as writer,
    ):
        for table in parquet_row_groups(series):
            writer.write_table(table, row_group_size=max(1, table.num_rows))  # 0 rows: a live run with no bin yet


def _hash_and_write(body: CsvBody, path: Path | None, fsync: bool, fs: FsOps = REAL_FS) -> str:
    if path is not None:
        write_file(path, body.chunks(), fsync=fsync, fs=fs)
    return body.sha256()


def _write_series_dir(
    pool: ThreadPoolExecutor,
    run_dir: Path,
    series: Sequence[SeriesOut],
    names: Sequence[str],
    formats: frozenset[str],
    grid: dict[str, Any],
    fsync: bool,
    fs: FsOps = REAL_FS,
) -> dict[str, str]:
    """Format every series once: hash it, write its CSV into a temporary folder (when "csv" is
    among `formats`), add index.json, then swap the folder in as `series/`."""
    tmp_dir = run_dir / f".series{TEMP_MARK}{secrets.token_hex(6)}"
    fs.mkdir(tmp_dir)
    jobs: list[Future[str]] = []
    try:
        csv = "csv" in formats

        def format_part(lo: int, hi: int) -> list[Future[str]]:
            bodies = iter_csv_bodies([one.values for one in series[lo:hi]])
            return [
                pool.submit(_hash_and_write, body, tmp_dir / name if csv else None, fsync, fs)
                for name, body in zip(names[lo:hi], bodies, strict=True)
            ]

        # formatting releases the GIL for most of its time (numpy, Arrow): parts format in parallel
        parts = FORMAT_THREADS if len(series) >= 4 * FORMAT_THREADS else 1
        cuts = [len(series) * k // parts for k in range(parts + 1)]
        with ThreadPoolExecutor(parts, thread_name_prefix="csv-format") as formatters:
            formatted = [formatters.submit(format_part, lo, hi) for lo, hi in itertools.pairwise(cuts)]
        for part in formatted:  # every part has finished: collect every write before raising
            jobs.extend(part.result() if part.exception() is None else [])
        for part in formatted:
            part.result()
        hashes = {one.series_id: job.result() for one, job in zip(series, jobs, strict=True)}
        index = {
            "schemaVersion": SCHEMA_VERSION,
            "grid": grid,
            "formats": sorted(formats),
            "series": [
                {
                    "id": one.series_id,
                    "kind": one.kind,
                    "path": f"series/{name}",
                    "unit": one.unit,
                    "componentId": one.component_id,
                    "class": one.class_id,
                    "points": int(np.size(one.values)),
                    "hash": hashes[one.series_id],
                }
                for one, name in zip(series, names, strict=True)
            ],
        }
        write_file(tmp_dir / "index.json", [json_bytes(index)], fsync=fsync, fs=fs)
        if fsync:
            fsync_dir(tmp_dir, fs=fs)
        final = run_dir / "series"
        old = run_dir / f".series{_OLD_MARK}{secrets.token_hex(6)}"
        had_old = final.exists()
        if had_old:
            fs.rename(final, old)
        fs.rename(tmp_dir, final)
        if fsync:
            fsync_dir(run_dir, fs=fs)
        if had_old:
            shutil.rmtree(old, ignore_errors=True)
        return hashes
    finally:
        wait(jobs)  # nothing may still write into tmp_dir when it is removed
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Temporary files and folders of an interrupted earlier write."""
    for entry in folder.iterdir():
        if entry.name.startswith(".") and (TEMP_MARK in entry.name or _OLD_MARK in entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _check(result: RunResult, formats: frozenset[str]) -> list[str]:
    """The CSV file name of each series, after checking formats, ids, names and shapes."""
    if not formats <= FORMATS:
        raise ValueError(f"unknown formats {sorted(formats - FORMATS)}; known: {sorted(FORMATS)}")
    if result.grid.bins is None:
        raise ValueError("the grid of a run to write must have bins")
    ids = [series.series_id for series in result.series]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate series ids")
    names = [csv_file_name(series) for series in result.series]
    if len(set(names)) != len(names):
        raise ValueError("two series would be written to the same file")
    for series in result.series:
        shape = np.shape(series.values)
        if shape != (result.grid.bins,):
            raise ValueError(f"series {series.series_id!r} has shape {shape}, not ({result.grid.bins},)")
    return names


def _clear_old_set(run_dir: Path, model_dir: Path, fsync: bool, fs: FsOps = REAL_FS) -> None:
    """Make `run_dir` an incomplete set first: its manifest and any leftovers of a crashed write go."""
    fs.mkdir(model_dir, parents=True, exist_ok=True)
    remove_file(run_dir / MANIFEST, fsync=fsync, fs=fs)
    _remove_leftovers(run_dir)
    _remove_leftovers(model_dir)


def _run_json(
    result: RunResult, names: Sequence[str], grid: dict[str, Any], m_hash: str, s_hash: str
) -> dict[str, Any]:
    """run.json: status, grid, hashes, warnings and where each series is."""
    run: dict[str, Any] = {
        "runId": result.run_id,
        "status": result.status,
        "mode": result.mode,
        "grid": grid,
        "modelHash": m_hash,
        "scenarioHash": s_hash,
        "createdUtc": result.created_utc,
        "warnings": result.warnings,
        "series": [
            {"id": series.series_id, "path": f"series/{name}", "unit": series.unit}
            for series, name in zip(result.series, names, strict=True)
        ],
    }
    if result.live is not None:
        run["live"] = result.live
    return run


def _manifest_json(result: RunResult, m_hash: str, s_hash: str, hashes: dict[str, str]) -> bytes:
    """manifest.json's bytes (written last)."""
    rng_kind = (result.rng or {}).get("kind", DEFAULT_RNG_KIND)
    return json_bytes(
        {
            "schemaVersion": SCHEMA_VERSION,
            "scenarioHash": s_hash,
            "modelHash": m_hash,
            "rng": {"kind": rng_kind, "seed": result.seed},
            "seriesHashes": hashes,
            "provenance": {
                "runId": result.run_id,
                "templateId": result.template_id,
                "captureManifestHash": result.capture_manifest_hash,
                "liveSession": result.live_session,
            },
            "createdUtc": result.created_utc,
        }
    )


def _write_files(
    run_dir: Path,
    files: dict[Path, bytes | None],
    result: RunResult,
    names: Sequence[str],
    formats: frozenset[str],
    grid: dict[str, Any],
    fsync: bool,
    fs: FsOps = REAL_FS,
) -> dict[str, str]:
    """Write every file but the manifest (in parallel); the series hashes. A None file is removed."""
    if "parquet" not in formats:
        remove_file(run_dir / "series.parquet", fsync=fsync, fs=fs)
    for path, data in files.items():
        if data is None:
            remove_file(path, fsync=fsync, fs=fs)
    with ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="artifacts") as pool:
        jobs = [
            pool.submit(write_bytes_atomic, path, data, fsync=fsync, fs=fs)
            for path, data in files.items()
            if data is not None
        ]
        if "parquet" in formats:
            jobs.append(pool.submit(_write_parquet, run_dir / "series.parquet", result.series, fsync, fs))
        hashes = _write_series_dir(pool, run_dir, result.series, names, formats, grid, fsync, fs)
        for job in jobs:
            job.result()
    return hashes


def write_run_artifacts(
    result: RunResult,
    run_dir: Path,
    *,
    formats: frozenset[str] = FORMATS,
    fsync: bool = True,
    fs: FsOps = REAL_FS,
) -> ArtifactsInfo:
    """Write (or safely rewrite) the §4 artifact set of `result` into `run_dir`; manifest.json last.

    `formats` picks the series files: "csv" (per-series CSVs) and/or "parquet" (series.parquet);
    everything else is always written. `fsync=False` skips the fsyncs (tests, throw-away output).
    Every write goes through `fs` (tests inject failing ones); a failed one raises its OSError and
    leaves the folder without a manifest (an incomplete set).
    """
    formats = frozenset(formats)
    names = _check(result, formats)
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    _clear_old_set(run_dir, model_dir, fsync, fs)

    spec = result.spec_text.encode()
    adjustments = json_bytes(result.adjustments) if result.adjustments else None
    m_hash = model_hash(spec, adjustments)
    s_hash = scenario_hash(result.spec_text, result.seed)
    grid = grid_wire(result.grid)
    metadata = {"schemaVersion": SCHEMA_VERSION, "templateId": result.template_id, "modelHash": m_hash}
    metadata |= {"hasProvenance": result.provenance is not None, "adjustmentCount": len(result.adjustments)}
    files: dict[Path, bytes | None] = {
        run_dir / "spec.yaml": spec,
        model_dir / "model.yaml": spec,
        model_dir / "metadata.json": json_bytes(metadata),
        model_dir / "provenance.json": None if result.provenance is None else json_bytes(result.provenance),
        model_dir / "adjustments.json": adjustments,
        run_dir / "topology.json": json_bytes(result.topology),
        run_dir / "run.json": json_bytes(_run_json(result, names, grid, m_hash, s_hash)),
    }
    hashes = _write_files(run_dir, files, result, names, formats, grid, fsync, fs)
    manifest = _manifest_json(result, m_hash, s_hash, hashes)
    write_bytes_atomic(run_dir / MANIFEST, manifest, fsync=fsync, fs=fs)
    return ArtifactsInfo(run_dir, sha256_hex(manifest), m_hash, s_hash, hashes)
