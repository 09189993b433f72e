"""Telemetry bundles (SPEC §5, §12.13): formats, gaps, classes, hashes, binding, frames, confinement."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine_live.errors import BundleError, BundlePathError, GridMismatchError, NotFoundError
from engine_live.model.build import load_graph
from engine_live.model.text import parse_model_text
from engine_live.plan.batch_run import run_model
from ingestion.bundle import bundle_telemetry, gap_masks, iter_frames, load_bundle, resolve_bundle, telemetry_model

MODEL = """\
schemaVersion: 1
grid: {bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arrivals, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "arrivals * 0.5"}
  - {id: doubled, kind: expr, expr: "served * 2"}
topology:
  nodes:
    - id: Svc
      kind: service
      semantics: {arrivals: arrivals, served: served}
"""


def write_bundle(
    folder: Path,
    files: dict[tuple[str, str], str],
    *,
    bins: int = 4,
    bin_size: int = 5,
    class_ids: dict[tuple[str, str], str] | None = None,
    hashes: bool = True,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for i, ((node, metric), body) in enumerate(files.items()):
        name = f"{node}_{metric}_{i}.csv"
        (folder / name).write_text(body, encoding="utf-8")
        entry: dict[str, Any] = {"nodeId": node, "metric": metric, "path": name, "points": bins}
        entry["classId"] = (class_ids or {}).get((node, metric), "DEFAULT")
        if hashes:
            entry["hash"] = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        entries.append(entry)
    manifest = {
        "schemaVersion": 2,
        "window": {"startTimeUtc": "2025-10-07T00:00:00Z", "durationMinutes": bins * bin_size},
        "grid": {"bins": bins, "binSize": bin_size, "binUnit": "minutes"},
        "files": entries,
        "warnings": [],
        "provenance": {"runId": "run_x", "scenarioHash": "sha256:0", "capturedAtUtc": "2025-10-08T00:00:00Z"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def codes(warnings: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[str]:
    return [w["code"] for w in warnings]


def test_three_csv_formats_read_alike(tmp_path: Path) -> None:
    b = load_bundle(
        write_bundle(
            tmp_path / "b",
            {
                ("Svc", "arrivals"): "bin_index,classId,value\n0,DEFAULT,1\n1,DEFAULT,2\n2,DEFAULT,3\n3,DEFAULT,4\n",
                ("Svc", "served"): "bin_index,value\n0,1\n1,2\n2,3\n3,4\n",
                ("Svc", "errors"): "1\n2\n3\n4\n",
            },
        )
    )
    assert b.warnings == ()
    for s in b.series:
        assert s.values.tolist() == [1, 2, 3, 4] and s.present.all()


def test_missing_bins_are_zero_filled_with_a_data_gap_naming_bins_and_times(tmp_path: Path) -> None:
    b = load_bundle(write_bundle(tmp_path / "b", {("Svc", "arrivals"): "bin_index,value\n0,5\n3,8\n"}))
    (s,) = b.series
    assert s.values.tolist() == [5, 0, 0, 8] and s.present.tolist() == [True, False, False, True]
    (gap,) = b.warnings
    assert gap == {
        "code": "data_gap",
        "severity": "warning",
        "nodeId": "Svc",
        "message": "Svc.arrivals: 2 missing bins zero-filled: 1-2 (2025-10-07T00:05:00Z)",
        "bins": [1, 2],
        "count": 2,
        "metric": "arrivals",
        "times": ["2025-10-07T00:05:00Z", "2025-10-07T00:10:00Z"],
    }


def test_short_data_is_zero_filled_with_length_mismatch(tmp_path: Path) -> None:
    b = load_bundle(write_bundle(tmp_path / "b", {("Svc", "arrivals"): "7\n8\n"}))
    assert b.series[0].values.tolist() == [7, 8, 0, 0]
    assert codes(b.warnings) == ["length_mismatch"] and b.warnings[0]["bins"] == [2, 3]
    # a bundle shorter than the model: the model's extra bins are zero-filled too
    short = load_bundle(write_bundle(tmp_path / "s", {("Svc", "arrivals"): "1\n2\n"}, bins=2))
    telemetry, warnings = bundle_telemetry(short, load_graph(MODEL))
    assert telemetry["arrivals"].tolist() == [1, 2, 0, 0]
    assert codes(warnings) == ["length_mismatch"] and warnings[0]["bins"] == [2, 3]


def test_class_ids_sum_into_default_with_an_info_warning(tmp_path: Path) -> None:
    rows = "bin_index,classId,value\n0,web,1\n0,mobile,2\n1,web,3\n1,mobile,4\n2,web,0\n3,web,1\n"
    b = load_bundle(write_bundle(tmp_path / "b", {("Svc", "arrivals"): rows}))
    assert b.series[0].values.tolist() == [3, 7, 0, 1]
    assert codes(b.warnings) == ["class_summed"] and b.warnings[0]["severity"] == "info"
    # two files for one node field, one per class
    folder = write_bundle(tmp_path / "c", {("Svc", "arrivals"): "1\n1\n1\n1\n"}, class_ids={("Svc", "arrivals"): "web"})
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "more.csv").write_text("2\n2\n2\n2\n")
    manifest["files"].append({"nodeId": "Svc", "metric": "arrivals", "path": "more.csv", "classId": "mobile"})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    two = load_bundle(folder)  # the reader keeps the classes apart; a model without classes sums them
    assert [(one.class_id, one.values.tolist()) for one in two.series] == [("web", [1] * 4), ("mobile", [2] * 4)]
    telemetry, warnings = bundle_telemetry(two, load_graph(MODEL))
    assert telemetry["arrivals"].tolist() == [3, 3, 3, 3]
    assert codes(warnings).count("class_summed") == 2


def test_a_changed_file_fails_its_hash(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "b", {("Svc", "arrivals"): "1\n2\n3\n4\n"})
    (folder / "Svc_arrivals_0.csv").write_text("1\n2\n3\n5\n")
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert info.value.code == "hash_mismatch" and info.value.http_status == 422


def test_bad_manifests_are_rejected(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "b", {("Svc", "arrivals"): "1\n"})
    manifest = json.loads((folder / "manifest.json").read_text())
    for broken in (
        {**manifest, "schemaVersion": 3},
        {**manifest, "grid": {"bins": 0, "binSize": 5}},
        {**manifest, "files": {}},
    ):
        (folder / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError):
            load_bundle(folder)
    with pytest.raises(NotFoundError):
        load_bundle(tmp_path / "missing")


def test_grid_mismatch_is_422(tmp_path: Path) -> None:
    b = load_bundle(write_bundle(tmp_path / "b", {("Svc", "arrivals"): "1\n2\n"}, bins=2, bin_size=10))
    with pytest.raises(GridMismatchError) as info:
        bundle_telemetry(b, load_graph(MODEL))
    assert info.value.http_status == 422
    assert info.value.to_body() == {
        "error": "grid_mismatch",
        "message": "bundle bins are 10 minutes, the model's 5",
        "bundleBinMinutes": 10,
        "modelBinMinutes": 5,
    }


def test_a_file_replaces_its_series_whatever_its_definition(tmp_path: Path) -> None:
    b = load_bundle(
        write_bundle(
            tmp_path / "b",
            {
                ("Svc", "arrivals"): "10\n20\n30\n40\n",
                ("Svc", "served"): "1\n2\n3\n4\n",
                ("Nope", "served"): "1\n",
            },
        )
    )
    graph = load_graph(MODEL)
    telemetry, warnings = bundle_telemetry(b, graph)
    assert sorted(telemetry) == ["arrivals", "served"]
    replaced = [w for w in warnings if w["code"] == "telemetry_replaces_series"]
    assert len(replaced) == 1 and replaced[0]["seriesId"] == "served" and replaced[0]["severity"] == "info"
    assert "unbound_telemetry" in codes(warnings)
    data = telemetry_model(parse_model_text(MODEL), graph, telemetry)
    assert data["nodes"][1] == {"id": "served", "kind": "const", "source": "telemetry"}
    run = run_model(data, telemetry=telemetry, mode="telemetry")
    assert run.series("served").tolist() == [1, 2, 3, 4]
    assert run.series("doubled").tolist() == [2, 4, 6, 8]  # dependents see the telemetry


def test_frames_replay_given_values_and_leave_gaps_out(tmp_path: Path) -> None:
    b = load_bundle(
        write_bundle(
            tmp_path / "b",
            {
                ("Svc", "arrivals"): "bin_index,value\n0,5\n1,6.5\n3,8\n",
                ("Svc", "served"): "1\n1\n1\n1\n",
            },
        )
    )
    graph = load_graph(MODEL)
    assert {k: v.tolist() for k, v in gap_masks(b, graph).items()} == {"Svc": [False, False, True, False]}
    frames = list(iter_frames(b, graph))  # served is not telemetry-fed: not in frames
    assert frames == [
        [{"bin": 0, "node": "Svc", "arrivals": 5}],
        [{"bin": 1, "node": "Svc", "arrivals": 6.5}],
        [],
        [{"bin": 3, "node": "Svc", "arrivals": 8}],
    ]


def test_bundle_folders_stay_under_the_bundles_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_bundle(data_dir / "bundles" / "good", {("Svc", "arrivals"): "1\n"})
    write_bundle(tmp_path / "outside", {("Svc", "arrivals"): "1\n"})
    assert resolve_bundle("good", data_dir) == (data_dir / "bundles" / "good").resolve()
    for ref in ("../../outside", str(tmp_path / "outside")):
        with pytest.raises(BundlePathError) as info:
            resolve_bundle(ref, data_dir)
        assert info.value.http_status == 400
    os.symlink(tmp_path / "outside", data_dir / "bundles" / "sneaky")
    with pytest.raises(BundlePathError):
        resolve_bundle("sneaky", data_dir)
    with pytest.raises(NotFoundError):
        resolve_bundle("absent", data_dir)
    assert resolve_bundle("art_1", data_dir, artifacts={"art_1": data_dir / "bundles" / "good"}).name == "good"
    with pytest.raises(BundlePathError):
        resolve_bundle("art_2", data_dir, artifacts={"art_2": tmp_path / "outside"})


def test_a_file_path_cannot_leave_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("1\n")
    folder = write_bundle(tmp_path / "b", {("Svc", "arrivals"): "1\n"}, hashes=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["path"] = "../secret.csv"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundlePathError):
        load_bundle(folder)
    os.symlink(tmp_path / "secret.csv", folder / "link.csv")
    manifest["files"][0]["path"] = "link.csv"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundlePathError):
        load_bundle(folder)


def test_shipped_microservices_bundle_has_a_day_with_gaps() -> None:
    from compat_api.templates.catalog import BUNDLE_DIR

    b = load_bundle(BUNDLE_DIR / "microservices")
    assert b.bins == 288 and b.grid.bin_minutes == 5 and b.manifest["schemaVersion"] == 2
    gaps = [w for w in b.warnings if w["code"] == "data_gap"]
    assert {w["nodeId"] for w in gaps} == {"PaymentService", "CatalogService"}
    nodes = {s.node_id for s in b.series}
    assert len(nodes) >= 6 and {"OrderQueue", "PaymentDLQ"} <= nodes
    assert all(np.isfinite(s.values).all() for s in b.series)
