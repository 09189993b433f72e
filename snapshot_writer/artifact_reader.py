"""Reads run folders written by `snapshot_writer.artifacts` (SPEC §4).

A folder is complete when `manifest.json` exists (it is written last). Series come from
`series.parquet` when present, else from the per-series CSVs listed in `series/index.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
_CSV_TYPES = {"bin_index": pa.int64(), "value": pa.float64()}


def is_complete(run_dir: Path) -> bool:
    """True when the artifact set is complete (its manifest, written last, is present)."""
    return (Path(run_dir) / MANIFEST).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], orjson.loads(path.read_bytes()))


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """The run folder's `run.json`."""
    return _read_json(Path(run_dir) / "run.json")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run folder's `manifest.json`."""
    return _read_json(Path(run_dir) / MANIFEST)


def read_series_index(run_dir: Path) -> dict[str, Any]:
    """The run folder's `series/index.json`."""
    return _read_json(Path(run_dir) / "series" / "index.json")


def _place(bin_index: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Values ordered by bin; bins never written read as NaN."""
    if bin_index.size and (np.diff(bin_index) == 1).all() and bin_index[0] == 0:
        return values.copy()
    out = np.full(int(bin_index.max()) + 1 if bin_index.size else 0, np.nan)
    out[bin_index] = values
    return out


def _from_parquet(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    table = pq.read_table(path, columns=["bin_index", "series_id", "value"])
    names: dict[str, int] = {}
    codes = []
    for chunk in table.column("series_id").chunks:  # one dictionary per row group
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        chunk = cast(pa.DictionaryArray, chunk)
        remap = np.array([names.setdefault(n, len(names)) for n in chunk.dictionary.to_pylist()], np.int64)
        codes.append(remap[chunk.indices.to_numpy(zero_copy_only=False)] if remap.size else remap)
    code = np.concatenate(codes) if codes else np.empty(0, np.int64)
    bins = table.column("bin_index").to_numpy().astype(np.int64)
    values = table.column("value").to_numpy().astype(np.float64)
    order = np.argsort(code, kind="stable")
    if not (order == np.arange(order.size)).all():
        code, bins, values = code[order], bins[order], values[order]
    bounds = np.searchsorted(code, np.arange(len(names) + 1))
    return {
        name: _place(bins[bounds[i] : bounds[i + 1]], values[bounds[i] : bounds[i + 1]])
        for name, i in names.items()
        if bounds[i + 1] > bounds[i]
    }


def read_series_csv(path: Path) -> npt.NDArray[np.float64]:
    """One `bin_index,value` CSV (numbers incl. NaN / Infinity / -Infinity) as a float64 array."""
    table = pcsv.read_csv(
        path,
        convert_options=pcsv.ConvertOptions(column_types=_CSV_TYPES, null_values=[], strings_can_be_null=False),
    )
    return _place(
        table.column("bin_index").to_numpy().astype(np.int64),
        table.column("value").to_numpy().astype(np.float64),
    )


def read_run_series(run_dir: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Every series of a run folder by series id (index order when read from the CSVs)."""
    run_dir = Path(run_dir)
    parquet = run_dir / "series.parquet"
    if parquet.is_file():
        return _from_parquet(parquet)
    index = read_series_index(run_dir)
    return {entry["id"]: read_series_csv(run_dir / entry["path"]) for entry in index["series"]}
