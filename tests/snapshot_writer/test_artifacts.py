"""Canonical run artifacts (SPEC §4, §12.10, §12.11)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from engine_live.model.grid import Grid
from engine_live.plan.run_result import RunResult, SeriesOut
from snapshot_writer import artifacts, atomic_files
from snapshot_writer.artifact_reader import (
    is_complete,
    read_manifest,
    read_run_json,
    read_run_series,
    read_series_csv,
    read_series_index,
)
from snapshot_writer.artifacts import write_run_artifacts
from snapshot_writer.number_format import series_csv_bytes

SPEC = "grid: {bins: 6, binSize: 5, binUnit: minutes}\nnodes:\n  - id: arrivals\n    kind: const\n"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_result(**changes: Any) -> RunResult:
    series = [
        SeriesOut("arrivals", np.array([10.0, 12.0, 0.0, -0.0, 7.5, 1e-7]), "const", component_id="Api"),
        SeriesOut("served", np.array([0.1, 76.72999999999999, math.nan, math.inf, -math.inf, 2.0]), "expr"),
        SeriesOut("queue", np.arange(6, dtype=np.float64) / 3, "queue", path_name="q.csv", unit="entities"),
    ]
    base: dict[str, Any] = dict(
        run_id="run_20250101T000000Z_0000abcd",
        mode="simulation",
        status="completed",
        grid=Grid(6, 5, "minutes", "2025-01-01T00:00:00Z"),
        spec_text=SPEC,
        seed=42,
        rng={"kind": "pcg32", "seed": 42},
        series=series,
        warnings=[{"code": "nan_detected", "nodeId": "served", "bins": [2], "count": 1}],
        created_utc="2025-01-01T00:00:00Z",
        topology={"nodes": [{"id": "Api"}], "edges": []},
        provenance={"source": "template", "templateId": "t1"},
        template_id="t1",
        adjustments=[{"modelRevision": 1, "fromBin": 3, "nodes": [{"id": "arrivals"}]}],
    )
    base.update(changes)
    return RunResult(**base)


def tree(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_layout_and_contents(tmp_path: Path) -> None:
    result = make_result()
    info = write_run_artifacts(result, tmp_path / "run")
    run_dir = tmp_path / "run"
    files = tree(run_dir)
    assert set(files) == {
        "spec.yaml",
        "model/model.yaml",
        "model/metadata.json",
        "model/provenance.json",
        "model/adjustments.json",
        "run.json",
        "manifest.json",
        "topology.json",
        "series.parquet",
        "series/index.json",
        "series/arrivals@ARRIVALS@DEFAULT.csv",
        "series/served@SERVED@DEFAULT.csv",
        "series/q.csv",
    }
    assert files["spec.yaml"] == files["model/model.yaml"] == SPEC.encode()
    assert files["series/served@SERVED@DEFAULT.csv"] == (
        b"bin_index,value\n0,0.1\n1,76.72999999999999\n2,NaN\n3,Infinity\n4,-Infinity\n5,2\n"
    )
    assert files["series/arrivals@ARRIVALS@DEFAULT.csv"].endswith(b"\n2,0\n3,0\n4,7.5\n5,1e-7\n")

    manifest = read_manifest(run_dir)
    model_hash = sha(files["model/model.yaml"] + files["model/adjustments.json"])
    assert manifest["schemaVersion"] == 1
    assert manifest["modelHash"] == info.model_hash == model_hash
    assert manifest["scenarioHash"] == info.scenario_hash == sha(f"{SPEC}\n42".encode())
    assert manifest["rng"] == {"kind": "pcg32", "seed": 42}
    assert manifest["provenance"] == {
        "runId": result.run_id,
        "templateId": "t1",
        "captureManifestHash": None,
        "liveSession": None,
    }
    assert manifest["createdUtc"] == "2025-01-01T00:00:00Z"
    assert info.manifest_hash == sha(files["manifest.json"])
    index = read_series_index(run_dir)
    by_id = {e["id"]: e for e in index["series"]}
    for s in result.series:
        entry = by_id[s.series_id]
        data = files[entry["path"]]
        assert manifest["seriesHashes"][s.series_id] == entry["hash"] == info.series_hashes[s.series_id]
        assert entry["hash"] == sha(data) == sha(series_csv_bytes(s.values))
        assert entry["points"] == 6 and entry["unit"] == s.unit and entry["kind"] == s.kind
    assert by_id["arrivals@ARRIVALS@DEFAULT"]["componentId"] == "Api"
    assert by_id["queue@QUEUE@DEFAULT"]["path"] == "series/q.csv"
    assert index["grid"]["binMinutes"] == 5

    run = read_run_json(run_dir)
    assert run["runId"] == result.run_id and run["status"] == "completed" and run["mode"] == "simulation"
    assert run["grid"] == {
        "bins": 6,
        "binSize": 5,
        "binUnit": "minutes",
        "start": "2025-01-01T00:00:00Z",
        "binMinutes": 5,
        "timezone": "UTC",
        "align": "left",
    }
    assert run["modelHash"] == model_hash and run["scenarioHash"] == info.scenario_hash
    assert run["warnings"] == result.warnings and "live" not in run
    assert run["series"][2] == {"id": "queue@QUEUE@DEFAULT", "path": "series/q.csv", "unit": "entities"}
    assert orjson.loads(files["topology.json"]) == result.topology
    assert orjson.loads(files["model/provenance.json"]) == result.provenance
    assert orjson.loads(files["model/adjustments.json"]) == result.adjustments
    assert orjson.loads(files["model/metadata.json"])["modelHash"] == model_hash
    assert files["run.json"].startswith(b'{\n  "createdUtc"')  # sorted keys, 2-space indent
    assert is_complete(run_dir)


def test_model_hash_without_adjustments_is_the_model_file_hash(tmp_path: Path) -> None:
    info = write_run_artifacts(make_result(adjustments=[], provenance=None, rng=None, seed=0), tmp_path)
    assert info.model_hash == sha((tmp_path / "model" / "model.yaml").read_bytes())
    assert not (tmp_path / "model" / "provenance.json").exists()
    assert not (tmp_path / "model" / "adjustments.json").exists()
    assert read_manifest(tmp_path)["rng"] == {"kind": "pcg32", "seed": 0}


def test_live_block_in_run_json(tmp_path: Path) -> None:
    live = {"epoch": 1, "seq": 9, "lastBin": 5, "watermark": "2025-01-01T00:25:00Z", "revision": 3}
    write_run_artifacts(make_result(live=live, status="live", mode="live"), tmp_path)
    assert read_run_json(tmp_path)["live"] == live


def test_byte_identity_across_run_ids(tmp_path: Path) -> None:
    a = make_result()
    b = make_result(
        run_id="run_20260202T020202Z_ffff0000",
        created_utc="2026-02-02T02:02:02Z",
        live={"epoch": 2, "seq": 1, "lastBin": 5, "watermark": None, "revision": 0},
        live_session="sess-1",
    )
    write_run_artifacts(a, tmp_path / "a")
    write_run_artifacts(b, tmp_path / "b")
    ta, tb = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert set(ta) == set(tb)
    for name in set(ta) - {"run.json", "manifest.json"}:
        assert ta[name] == tb[name], name
    assert ta["run.json"] != tb["run.json"]
    ra, rb = orjson.loads(ta["run.json"]), orjson.loads(tb["run.json"])
    for key in ("runId", "createdUtc", "live"):
        ra.pop(key, None), rb.pop(key, None)
    assert ra == rb
    ma, mb = orjson.loads(ta["manifest.json"]), orjson.loads(tb["manifest.json"])
    for m in (ma, mb):
        m.pop("createdUtc"), m["provenance"].pop("runId"), m["provenance"].pop("liveSession")
    assert ma == mb


def test_parquet_reads_back_equal(tmp_path: Path) -> None:
    result = make_result()
    write_run_artifacts(result, tmp_path)
    table = pq.read_table(tmp_path / "series.parquet")
    assert [f.name for f in table.schema] == ["bin_index", "series_id", "value"]
    assert str(table.schema.field("bin_index").type) == "int64"
    assert str(table.schema.field("value").type) == "double"
    metadata = pq.ParquetFile(tmp_path / "series.parquet").metadata
    assert metadata.row_group(0).column(2).compression == "ZSTD"
    got = read_run_series(tmp_path)
    assert list(got) == [s.series_id for s in result.series]
    for s in result.series:
        np.testing.assert_array_equal(got[s.series_id], s.values)
    assert math.copysign(1.0, got["arrivals@ARRIVALS@DEFAULT"][3]) == 1.0  # -0 stored as 0


def test_many_series_parquet_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "_ROW_GROUP_ROWS", 20)  # several row groups, one dictionary each
    rng = np.random.default_rng(1)
    series = [SeriesOut(f"s{i}", rng.standard_normal(6), "expr") for i in range(11)]
    write_run_artifacts(make_result(series=series), tmp_path)
    assert pq.ParquetFile(tmp_path / "series.parquet").metadata.num_row_groups == 4
    got = read_run_series(tmp_path)
    assert list(got) == [s.series_id for s in series]
    for s in series:
        np.testing.assert_array_equal(got[s.series_id], s.values)


def test_csv_only_and_csv_fallback_reader(tmp_path: Path) -> None:
    result = make_result()
    write_run_artifacts(result, tmp_path, formats=frozenset({"csv"}))
    assert not (tmp_path / "series.parquet").exists()
    got = read_run_series(tmp_path)
    for s in result.series:
        np.testing.assert_array_equal(got[s.series_id], s.values)
    np.testing.assert_array_equal(read_series_csv(tmp_path / "series" / "q.csv"), result.series[2].values)


def test_parquet_only_keeps_index_and_hashes(tmp_path: Path) -> None:
    result = make_result()
    full = write_run_artifacts(result, tmp_path / "full")
    write_run_artifacts(result, tmp_path / "slim", fsync=False)  # first a full set, then rewritten
    slim = write_run_artifacts(result, tmp_path / "slim", formats=frozenset({"parquet"}))
    assert sorted(p.name for p in (tmp_path / "slim" / "series").iterdir()) == ["index.json"]
    assert slim.series_hashes == full.series_hashes
    index = read_series_index(tmp_path / "slim")
    assert [e["hash"] for e in index["series"]] == [full.series_hashes[s.series_id] for s in result.series]
    assert index["formats"] == ["parquet"]
    assert read_manifest(tmp_path / "slim")["seriesHashes"] == dict(full.series_hashes)
    for name in ("spec.yaml", "run.json", "topology.json", "series.parquet", "model/metadata.json"):
        assert (tmp_path / "slim" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_rewrite_replaces_the_old_set(tmp_path: Path) -> None:
    write_run_artifacts(make_result(), tmp_path)
    (tmp_path / ".spec.yaml.tmp-deadbeef").write_bytes(b"left over by a crash")
    newer = make_result(
        provenance=None,
        adjustments=[],
        series=[SeriesOut("only", np.array([1.0] * 6), "const")],
    )
    info = write_run_artifacts(newer, tmp_path, formats=frozenset({"csv"}))
    files = tree(tmp_path)
    assert sorted(n for n in files if n.startswith("series")) == [
        "series/index.json",
        "series/only@ONLY@DEFAULT.csv",
    ]
    assert "model/provenance.json" not in files and "model/adjustments.json" not in files
    assert not any(".tmp-" in n or ".old-" in n for n in files)
    assert read_manifest(tmp_path)["seriesHashes"] == dict(info.series_hashes)
    assert list(info.series_hashes) == ["only@ONLY@DEFAULT"]


def test_manifest_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = atomic_files.write_bytes_atomic

    def spy(path: Any, data: Any, **kwargs: Any) -> None:
        real(path, data, **kwargs)
        order.append(Path(path).name)

    monkeypatch.setattr(artifacts, "write_bytes_atomic", spy)
    write_run_artifacts(make_result(), tmp_path)
    assert order[-1] == "manifest.json" and order.count("manifest.json") == 1
    assert {"run.json", "spec.yaml", "topology.json", "model.yaml"} <= set(order[:-1])


@pytest.mark.parametrize("fail_on", ["run.json", "topology.json", "series.parquet", "csv"])
def test_failure_mid_write_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str) -> None:
    write_run_artifacts(make_result(), tmp_path)  # an older complete set
    assert is_complete(tmp_path)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    if fail_on == "series.parquet":
        monkeypatch.setattr(artifacts, "_write_parquet", boom)
    elif fail_on == "csv":
        monkeypatch.setattr(artifacts, "_hash_and_write", boom)
    else:
        real = atomic_files.write_bytes_atomic

        def flaky(path: Any, data: Any, **kwargs: Any) -> None:
            if Path(path).name == fail_on:
                boom()
            real(path, data, **kwargs)

        monkeypatch.setattr(artifacts, "write_bytes_atomic", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_run_artifacts(make_result(run_id="run_new"), tmp_path)
    assert not (tmp_path / "manifest.json").exists()
    assert not is_complete(tmp_path)
    assert not any(".tmp-" in p.name for p in tmp_path.rglob("*"))


def test_bad_inputs_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="formats"):
        write_run_artifacts(make_result(), tmp_path, formats=frozenset({"xlsx"}))
    bad_name = [SeriesOut("x", np.zeros(6), "const", path_name="../escape.csv")]
    with pytest.raises(ValueError, match="file name"):
        write_run_artifacts(make_result(series=bad_name), tmp_path)
    short = [SeriesOut("x", np.zeros(5), "const")]
    with pytest.raises(ValueError, match="shape"):
        write_run_artifacts(make_result(series=short), tmp_path)
    same_file = [
        SeriesOut("x", np.zeros(6), "const", path_name="a.csv"),
        SeriesOut("y", np.zeros(6), "c", path_name="a.csv"),
    ]
    with pytest.raises(ValueError, match="same file"):
        write_run_artifacts(make_result(series=same_file), tmp_path)
    with pytest.raises(ValueError, match="bins"):
        write_run_artifacts(make_result(grid=dataclasses.replace(make_result().grid, bins=None)), tmp_path)
    assert not (tmp_path / "manifest.json").exists()
