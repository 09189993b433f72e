"""Run exports (SPEC §8): long table in csv / ndjson / parquet, catalog.json, freshness, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine_live.errors import NotFoundError
from engine_live.plan.batch_run import run_model
from engine_live.plan.run_result import SeriesOut
from snapshot_writer import exports
from snapshot_writer.artifacts import write_run_artifacts
from snapshot_writer.exports import ensure_export, export_run, is_current, read_catalog, value_tokens
from snapshot_writer.number_format import format_values
from tests.duckdb_query import duckdb_fetchall
from tests.snapshot_writer.class_run import make_class_run

CREATED = "2025-10-08T12:00:00Z"
MODEL = """\
schemaVersion: 1
grid: {bins: 4, binSize: 15, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arrivals, kind: const, values: [10, 20, 30, 40]}
  - {id: capacity, kind: const, values: [25, 25, 25, 25]}
  - {id: served, kind: expr, expr: "MIN(arrivals, capacity)"}
  - {id: odd, kind: const, values: [1, 2, 3, 4]}
topology:
  nodes:
    - id: Svc
      kind: service
      semantics: {arrivals: arrivals, served: served, capacity: capacity}
    - id: Next
      kind: sink
      semantics: {arrivals: served, served: served}
"""
ODD = [math.nan, math.inf, -0.0, 1e-7]
COLUMNS = ["time_utc", "bin_index", "node", "metric", "series_id", "value"]


def make_run(folder: Path, model: str = MODEL, odd: list[float] | None = None) -> Path:
    run = run_model(model, created_utc=CREATED, run_id="run_x")
    result = run.result
    if odd is not None:  # values no model writes easily: NaN, Infinity, -0, tiny
        series = [SeriesOut(s.node_id, np.array(odd), s.kind) if s.node_id == "odd" else s for s in result.series]
        result = dataclasses.replace(result, series=series)
    write_run_artifacts(result, folder, fsync=False)
    return folder


EXPECTED_KEYS = [
    ("Svc", "arrivals", "arrivals@ARRIVALS@DEFAULT"),
    ("Svc", "capacity", "capacity@CAPACITY@DEFAULT"),
    ("Svc", "served", "served@SERVED@DEFAULT"),
    ("Next", "arrivals", "served@SERVED@DEFAULT"),
    ("Next", "served", "served@SERVED@DEFAULT"),
    ("odd", "value", "odd@ODD@DEFAULT"),
]


def test_value_tokens_match_the_number_form() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [rng.normal(size=500) * 10.0 ** rng.integers(-12, 20, 500), [0.0, -0.0, 2.0, 1e-5, 1e16, *ODD]]
    )
    assert value_tokens(values).to_pylist() == format_values(values)
    assert value_tokens(np.zeros(0)).to_pylist() == []


def test_export_writes_three_formats_and_a_catalog(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", odd=ODD)
    catalog = export_run(run_dir, fsync=False)
    folder = run_dir / "export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "catalog.json",
        "export.csv",
        "export.ndjson",
        "export.parquet",
    ]
    assert orjson.loads((folder / "catalog.json").read_bytes()) == catalog
    assert [c["name"] for c in catalog["columns"]] == COLUMNS
    assert catalog["rows"] == 24 and catalog["binMinutes"] == 15
    assert catalog["grid"]["binMinutes"] == 15 and catalog["grid"]["start"] == "2025-10-07T00:00:00Z"
    assert catalog["provenance"]["runId"] == "run_x" and catalog["provenance"]["createdUtc"] == CREATED
    assert [(u["node"], u["metric"], u["seriesId"]) for u in catalog["units"]] == EXPECTED_KEYS
    assert {u["unit"] for u in catalog["units"]} == {"entities/bin"}
    for fmt, info in catalog["files"].items():
        assert (run_dir / info["path"]).stat().st_size == info["bytes"], fmt

    lines = (folder / "export.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "2025-10-07T00:00:00Z,0,Svc,arrivals,arrivals@ARRIVALS@DEFAULT,10"
    assert lines[-4:] == [
        "2025-10-07T00:00:00Z,0,odd,value,odd@ODD@DEFAULT,NaN",
        "2025-10-07T00:15:00Z,1,odd,value,odd@ODD@DEFAULT,Infinity",
        "2025-10-07T00:30:00Z,2,odd,value,odd@ODD@DEFAULT,0",
        "2025-10-07T00:45:00Z,3,odd,value,odd@ODD@DEFAULT,1e-7",
    ]
    rows = [json.loads(line) for line in (folder / "export.ndjson").read_text().splitlines()]
    assert len(rows) == 24 and list(rows[0]) == COLUMNS
    assert rows[5] == {
        "time_utc": "2025-10-07T00:15:00Z",
        "bin_index": 1,
        "node": "Svc",
        "metric": "capacity",
        "series_id": "capacity@CAPACITY@DEFAULT",
        "value": 25,
    }
    assert [r["value"] for r in rows[-4:]] == [None, None, 0, 1e-7]


def test_parquet_reads_back_with_pyarrow_pandas_and_duckdb(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", odd=ODD)
    path = ensure_export(run_dir, "parquet", fsync=False)
    table = pq.read_table(path)
    assert table.column_names == COLUMNS and table.num_rows == 24
    assert str(table.schema.field("time_utc").type) == "timestamp[ms, tz=UTC]"
    frame = pd.read_parquet(path)
    assert list(frame.columns) == COLUMNS
    assert frame["time_utc"].iloc[1] == pd.Timestamp("2025-10-07T00:15:00Z")
    assert frame["value"].iloc[:4].tolist() == [10, 20, 30, 40]
    assert math.isnan(frame["value"].iloc[20]) and frame["value"].iloc[21] == math.inf
    keys = frame[["node", "metric", "series_id"]].drop_duplicates()
    assert [tuple(k) for k in keys.itertuples(index=False)] == EXPECTED_KEYS
    got = duckdb_fetchall(f"SELECT * FROM '{path}' WHERE node = 'Next' ORDER BY metric, bin_index")
    assert len(got) == 8 and got[0][1:] == [0, "Next", "arrivals", "served@SERVED@DEFAULT", 10.0]
    assert got[0][0] == "2025-10-07 00:00:00+00:00"
    csv = pacsv.read_csv(run_dir / "export" / "export.csv")
    np.testing.assert_array_equal(csv.column("value").to_numpy(), table.column("value").to_numpy())


def test_exports_are_deterministic_and_chunking_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path / "run", odd=ODD)
    export_run(run_dir, fsync=False)
    first = {p.name: p.read_bytes() for p in (run_dir / "export").iterdir()}
    monkeypatch.setattr(exports, "CHUNK_ROWS", 5)  # one entry (4 rows) a chunk
    export_run(run_dir, fsync=False)
    second = {p.name: p.read_bytes() for p in (run_dir / "export").iterdir()}
    for name in ("export.csv", "export.ndjson"):
        assert first[name] == second[name], name
    a = pq.read_table(run_dir / "export" / "export.parquet")
    assert pq.ParquetFile(run_dir / "export" / "export.parquet").num_row_groups == 6
    monkeypatch.undo()
    export_run(run_dir, fsync=False)
    assert {p.name: p.read_bytes() for p in (run_dir / "export").iterdir()} == first
    b = pq.read_table(run_dir / "export" / "export.parquet")
    assert a.drop_columns(["value"]).equals(b.drop_columns(["value"]))
    np.testing.assert_array_equal(a.column("value").to_numpy(), b.column("value").to_numpy())


def test_ensure_export_writes_when_absent_or_stale(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    assert read_catalog(run_dir) is None
    path = ensure_export(run_dir, "csv", fsync=False)
    assert path == run_dir / "export" / "export.csv" and is_current(run_dir, read_catalog(run_dir))
    stamp = path.stat().st_mtime_ns
    assert ensure_export(run_dir, "csv", fsync=False).stat().st_mtime_ns == stamp  # current: untouched
    make_run(run_dir, MODEL.replace("[10, 20, 30, 40]", "[11, 20, 30, 40]"))  # the run is rewritten
    assert not is_current(run_dir, read_catalog(run_dir))
    assert ",arrivals@ARRIVALS@DEFAULT,11\n" in ensure_export(run_dir, "csv", fsync=False).read_text()
    (run_dir / "export" / "export.ndjson").write_text("torn")
    assert not is_current(run_dir, read_catalog(run_dir))
    assert len(ensure_export(run_dir, "ndjson", fsync=False).read_text().splitlines()) == 24
    with pytest.raises(NotFoundError):
        ensure_export(run_dir, "xlsx")


def test_a_grid_without_start_has_null_times(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", MODEL.replace(', start: "2025-10-07T00:00:00Z"', ""))
    export_run(run_dir, fsync=False)
    assert (run_dir / "export" / "export.csv").read_text().splitlines()[1].startswith(",0,Svc,arrivals,")
    first = json.loads((run_dir / "export" / "export.ndjson").read_text().splitlines()[0])
    assert first["time_utc"] is None
    assert pq.read_table(run_dir / "export" / "export.parquet").column("time_utc").null_count == 24


def test_an_incomplete_run_cannot_be_exported(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "manifest.json").unlink()
    with pytest.raises(NotFoundError):
        export_run(run_dir)


# Issue 14: per-class columns (SPEC §14). Class-less exports must stay what they were before classes:
# sha256 of export.csv / export.ndjson of `make_run(odd=ODD)` and of its catalog.json without `files`
# and `provenance` (those hold the parquet file's bytes, which name the pyarrow version, and run hashes),
# taken before per-class columns existed.
BEFORE_CLASSES = {
    "export.csv": "d2786e4e1e220ebda2e4cb4bac410282544133465d52f5d1dba756229fd197fe",
    "export.ndjson": "21dde1f0b2f9eb3ea42874d713018107d85498cf366bc6a2a1e72a438f8cf04c",
    "catalog": "0e7c1329fe4b29d81e0bf775cd5f9c062b10f4dc5f9c5c3c2340dea107afe9de",
}
CLASS_COLUMNS = [*COLUMNS, "value@Alpha", "value@Beta"]


def test_a_class_less_export_is_byte_identical_to_before_classes(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", odd=ODD)
    catalog = export_run(run_dir, fsync=False)
    for name in ("export.csv", "export.ndjson"):
        assert hashlib.sha256((run_dir / "export" / name).read_bytes()).hexdigest() == BEFORE_CLASSES[name], name
    stable = {k: v for k, v in catalog.items() if k not in ("files", "provenance")}
    assert hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest() == BEFORE_CLASSES["catalog"]
    assert "classes" not in catalog and all("classSeriesIds" not in u for u in catalog["units"])
    schema = pq.read_schema(run_dir / "export" / "export.parquet")
    assert schema.names == COLUMNS
    assert [str(t) for t in schema.types] == ["timestamp[ms, tz=UTC]", "int64", "string", "string", "string", "double"]


def test_a_class_run_exports_one_column_per_class(tmp_path: Path) -> None:
    series = make_class_run(tmp_path / "run")
    catalog = export_run(tmp_path / "run", fsync=False)
    folder = tmp_path / "run" / "export"
    assert [c["name"] for c in catalog["columns"]] == CLASS_COLUMNS and catalog["classes"] == ["Alpha", "Beta"]
    # rows stay one per (node, metric, bin): Split, Airport ×2, General; splitter, odd, overflow_target
    assert catalog["rows"] == 7 * 3
    units = {(u["node"], u["metric"]): u for u in catalog["units"]}
    assert units[("Airport", "served")]["classSeriesIds"] == {
        "Alpha": "airport@AIRPORT@Alpha",
        "Beta": "airport@AIRPORT@Beta",
    }
    assert "classSeriesIds" not in units[("odd", "value")]
    assert not [u for u in catalog["units"] if "@" in u["node"]]  # class rows are columns, not entries

    lines = (folder / "export.csv").read_text().splitlines()
    assert lines[0] == ",".join(CLASS_COLUMNS)
    rows = {(r.split(",")[2], r.split(",")[3], r.split(",")[1]): r.split(",")[5:] for r in lines[1:]}
    assert rows[("Airport", "arrivals", "0")] == ["40", "40", "0"]
    assert rows[("General", "arrivals", "0")] == ["45", "0", "45"]
    assert rows[("General", "arrivals", "1")] == ["22.5", "0", "22.5"]
    assert rows[("overflow_target", "value", "1")] == ["7.5", "0", "7.5"]
    assert rows[("Split", "arrivals", "1")] == ["50", "20", "30"]
    assert rows[("odd", "value", "2")] == ["3", "", ""]  # a class-less series: empty class cells

    ndjson = [orjson.loads(line) for line in (folder / "export.ndjson").read_bytes().splitlines()]
    assert all(list(r) == CLASS_COLUMNS for r in ndjson)
    general = [r for r in ndjson if r["node"] == "General"]
    assert [(r["value"], r["value@Alpha"], r["value@Beta"]) for r in general] == [
        (45, 0, 45),
        (22.5, 0, 22.5),
        (0, 0, 0),
    ]
    assert {(r["value@Alpha"], r["value@Beta"]) for r in ndjson if r["node"] == "odd"} == {(None, None)}

    table = pq.read_table(folder / "export.parquet")
    assert table.column_names == CLASS_COLUMNS and table.num_rows == 21
    frame = table.to_pandas()
    for (node, metric), unit in units.items():
        got = frame[(frame["node"] == node) & (frame["metric"] == metric)]
        sid = unit["seriesId"]
        np.testing.assert_array_equal(got["value"], series[sid], err_msg=sid)
        if node == "odd":
            assert got["value@Alpha"].isna().all() and got["value@Beta"].isna().all()
            continue
        for c in ("Alpha", "Beta"):  # each class column is the run's class series
            np.testing.assert_array_equal(got[f"value@{c}"], series[unit["classSeriesIds"][c]], err_msg=f"{sid} {c}")
        np.testing.assert_allclose(got["value@Alpha"] + got["value@Beta"], got["value"], rtol=1e-12)
    path = folder / "export.parquet"
    query = f"""SELECT bin_index, value, "value@Alpha", "value@Beta" FROM '{path}'"""
    duck = duckdb_fetchall(query + " WHERE node = 'Airport' AND metric = 'served' ORDER BY bin_index")
    assert duck == [[0, 40.0, 40.0, 0.0], [1, 20.0, 20.0, 0.0], [2, 0.0, 0.0, 0.0]]


def test_class_columns_do_not_depend_on_chunking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_class_run(tmp_path / "run")
    export_run(tmp_path / "run", fsync=False)
    first = {p.name: p.read_bytes() for p in (tmp_path / "run" / "export").iterdir() if p.suffix != ".parquet"}
    a = pq.read_table(tmp_path / "run" / "export" / "export.parquet")
    monkeypatch.setattr(exports, "CHUNK_ROWS", 4)  # one entry (3 rows) a chunk
    export_run(tmp_path / "run", fsync=False)
    assert pq.ParquetFile(tmp_path / "run" / "export" / "export.parquet").num_row_groups == 7
    for name in ("export.csv", "export.ndjson"):
        assert (tmp_path / "run" / "export" / name).read_bytes() == first[name], name
    assert pq.read_table(tmp_path / "run" / "export" / "export.parquet").equals(a)
