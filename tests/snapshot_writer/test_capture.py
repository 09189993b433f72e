"""Telemetry capture (SPEC §5, §12.10): bundle layout, byte identity, gap injection, replay."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from engine_live.errors import CaptureError, ConflictError, NotFoundError
from engine_live.model.build import load_graph
from engine_live.model.text import parse_model_text
from engine_live.plan.batch_run import run_model
from ingestion.bundle import bundle_telemetry, load_bundle, telemetry_model
from snapshot_writer.artifacts import write_run_artifacts
from snapshot_writer.capture import BUNDLE_HEADER, capture_run
from tests.snapshot_writer.class_run import ROUTER_MIXED, make_class_run

CREATED = "2025-10-08T12:00:00Z"
ORDER_SYSTEM = Path(__file__).parents[2] / "compat_api" / "examples" / "order_system.yaml"
SMALL = """\
schemaVersion: 1
grid: {bins: 6, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arrivals, kind: const, values: [10, 20.5, 30, 0.1, 76.72999999999999, 1e-7]}
  - {id: capacity, kind: const, values: [25, 25, 25, 25, 25, 25]}
  - {id: served, kind: expr, expr: "MIN(arrivals, capacity)"}
  - {id: spare, kind: expr, expr: "capacity - served"}
topology:
  nodes:
    - id: Svc
      kind: service
      semantics: {arrivals: arrivals, served: served, capacity: capacity}
"""


def make_run(folder: Path, model: str = SMALL) -> Path:
    run = run_model(model, created_utc=CREATED, run_id="run_test")
    write_run_artifacts(run.result, folder, fsync=False)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_capture_writes_a_schema_2_bundle(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    result = capture_run(run_dir, tmp_path / "b", fsync=False)
    manifest = orjson.loads((tmp_path / "b" / "manifest.json").read_bytes())
    assert result.written and manifest == result.manifest
    assert manifest["schemaVersion"] == 2
    assert manifest["window"] == {"startTimeUtc": "2025-10-07T00:00:00Z", "durationMinutes": 30}
    assert manifest["grid"]["bins"] == 6 and manifest["grid"]["binMinutes"] == 5
    run_json = orjson.loads((run_dir / "run.json").read_bytes())
    assert manifest["provenance"] == {
        "runId": "run_test",
        "scenarioHash": run_json["scenarioHash"],
        "modelHash": run_json["modelHash"],
        "capturedAtUtc": CREATED,
    }
    assert [(f["nodeId"], f["metric"]) for f in manifest["files"]] == [
        ("Svc", "arrivals"),
        ("Svc", "served"),
        ("Svc", "capacity"),
    ]
    for entry in manifest["files"]:
        body = (tmp_path / "b" / entry["path"]).read_bytes()
        assert entry["hash"] == "sha256:" + hashlib.sha256(body).hexdigest()
        assert entry["classId"] == "DEFAULT" and entry["points"] == 6
        assert body.startswith(BUNDLE_HEADER)
    arrivals = (tmp_path / "b" / "Svc_arrivals.csv").read_text()
    assert arrivals.splitlines()[1:] == [
        "0,DEFAULT,10",
        "1,DEFAULT,20.5",
        "2,DEFAULT,30",
        "3,DEFAULT,0.1",
        "4,DEFAULT,76.72999999999999",
        "5,DEFAULT,1e-7",
    ]
    assert manifest["warnings"] == []
    loaded = load_bundle(tmp_path / "b")
    assert loaded.warnings == () and len(loaded.series) == 3


def test_capturing_twice_gives_identical_bytes(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    gaps = {"gaps": [{"nodeId": "Svc", "metric": "served", "bins": [1, 2], "fill": "nan"}]}
    capture_run(run_dir, tmp_path / "one", gaps=gaps, fsync=False)
    capture_run(run_dir, tmp_path / "two", gaps=gaps, fsync=False)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    again = capture_run(run_dir, tmp_path / "one", gaps=gaps, fsync=False)
    assert not again.written  # an identical bundle is left alone
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")


def test_gap_injection_zero_fills_and_nans_chosen_bins(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    gaps_file = tmp_path / "gaps.yaml"
    gaps_file.write_text(
        "gaps:\n"
        "  - {nodeId: Svc, metric: arrivals, bins: [1, 3]}\n"
        "  - {nodeId: Svc, metric: served, bins: {from: 2, to: 4}, fill: nan}\n"
    )
    result = capture_run(run_dir, tmp_path / "b", gaps=gaps_file, fsync=False)
    warnings = {(w["code"], w["metric"]): w for w in result.manifest["warnings"]}
    assert set(warnings) == {("data_gap", "arrivals"), ("nan_fill", "served")}
    assert warnings[("data_gap", "arrivals")]["bins"] == [1, 3]
    assert warnings[("data_gap", "arrivals")]["times"] == ["2025-10-07T00:05:00Z", "2025-10-07T00:15:00Z"]
    assert warnings[("nan_fill", "served")]["bins"] == [2, 3, 4]
    assert warnings[("nan_fill", "served")]["nodeId"] == "Svc"
    points = {f["metric"]: f["points"] for f in result.manifest["files"]}
    assert points == {"arrivals": 4, "served": 6, "capacity": 6}
    served = (tmp_path / "b" / "Svc_served.csv").read_text().splitlines()
    assert served[3:6] == ["2,DEFAULT,NaN", "3,DEFAULT,NaN", "4,DEFAULT,NaN"]
    bundle = load_bundle(tmp_path / "b")
    by_metric = {s.metric: s for s in bundle.series}
    assert by_metric["arrivals"].values.tolist() == [10, 0, 30, 0, 76.72999999999999, 1e-7]
    assert by_metric["arrivals"].present.tolist() == [True, False, True, False, True, True]
    assert np.isnan(by_metric["served"].values[2:5]).all()
    assert [w["bins"] for w in bundle.warnings if w["code"] == "data_gap"] == [[1, 3]]


def test_a_later_gap_entry_wins_and_no_metric_means_every_metric(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    gaps = [{"nodeId": "Svc", "bins": [0, 1]}, {"nodeId": "Svc", "metric": "capacity", "bins": [1], "fill": "nan"}]
    result = capture_run(run_dir, tmp_path / "b", gaps=gaps, dry_run=True)
    found = sorted((w["code"], w["metric"], tuple(w["bins"])) for w in result.manifest["warnings"])
    assert found == [
        ("data_gap", "arrivals", (0, 1)),
        ("data_gap", "capacity", (0,)),
        ("data_gap", "served", (0, 1)),
        ("nan_fill", "capacity", (1,)),
    ]


@pytest.mark.parametrize(
    ("gaps", "fragment"),
    [
        ([{"nodeId": "Nope", "bins": [1]}], "no captured series"),
        ([{"nodeId": "Svc", "metric": "queueDepth", "bins": [1]}], "no captured series"),
        ([{"nodeId": "Svc", "metric": "bogus", "bins": [1]}], "Gold metric"),
        ([{"nodeId": "Svc", "bins": [6]}], "0..5"),
        ([{"nodeId": "Svc", "bins": {"from": 3, "to": 1}}], "from ≤ to"),
        ([{"nodeId": "Svc", "bins": []}], "non-empty"),
        ([{"nodeId": "Svc", "bins": [1], "fill": "mean"}], "zero or nan"),
        ([{"bins": [1]}], "nodeId"),
        ({"gaps": "nope"}, "must be a list"),
        ("gaps: [unclosed", "gaps:"),
    ],
)
def test_bad_gaps_are_rejected(tmp_path: Path, gaps: object, fragment: str) -> None:
    run_dir = make_run(tmp_path / "run")
    with pytest.raises(CaptureError) as info:
        capture_run(run_dir, tmp_path / "b", gaps=gaps, fsync=False)  # type: ignore[arg-type]
    assert fragment in info.value.message and info.value.http_status == 422
    assert not (tmp_path / "b").exists()


def test_dry_run_reports_without_writing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    result = capture_run(run_dir, tmp_path / "b", dry_run=True)
    assert result.dry_run and not result.written and not (tmp_path / "b").exists()
    assert [f["path"] for f in result.files] == ["Svc_arrivals.csv", "Svc_served.csv", "Svc_capacity.csv"]
    real = capture_run(run_dir, tmp_path / "b", fsync=False)
    assert real.manifest_bytes == result.manifest_bytes and real.total_bytes == result.total_bytes
    assert real.total_bytes == sum(p.stat().st_size for p in (tmp_path / "b").iterdir())


def test_a_different_existing_output_needs_overwrite(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    out = tmp_path / "b"
    out.mkdir()
    (out / "other.txt").write_text("x")
    with pytest.raises(ConflictError):
        capture_run(run_dir, out, fsync=False)
    capture_run(run_dir, out, overwrite=True, fsync=False)
    assert not (out / "other.txt").exists() and (out / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_an_incomplete_run_is_not_found(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "manifest.json").unlink()
    with pytest.raises(NotFoundError):
        capture_run(run_dir, tmp_path / "b")


def test_a_replayed_capture_reproduces_the_run(tmp_path: Path) -> None:
    source = ORDER_SYSTEM.read_text(encoding="utf-8")
    original = run_model(source, created_utc=CREATED)
    write_run_artifacts(original.result, tmp_path / "run", fsync=False)
    capture_run(tmp_path / "run", tmp_path / "b", fsync=False)

    graph = load_graph(source)
    telemetry, warnings = bundle_telemetry(load_bundle(tmp_path / "b"), graph)
    assert not [w for w in warnings if w["severity"] == "warning"]
    gold = {sid for t in graph.topo for f, sid in t.fields.items() if f in ("arrivals", "served", "capacity")}
    assert gold <= set(telemetry)
    replay = run_model(telemetry_model(parse_model_text(source), graph, telemetry), telemetry=telemetry)
    replayed = {s.node_id: s.values for s in replay.result.series}
    compared = 0
    for s in original.result.series:
        if s.node_id in replayed:
            np.testing.assert_array_equal(replayed[s.node_id], s.values, err_msg=s.node_id)
            compared += 1
        else:  # only the internals of a queue that telemetry now feeds directly
            assert s.node_id.startswith("payment_queue_"), s.node_id
    assert compared >= 12 and {"pay_capacity", "fast", "slow", "payment_queue"} <= set(replayed)


def test_a_missing_gaps_file_is_a_capture_error(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    with pytest.raises(CaptureError, match="gaps:"):
        capture_run(run_dir, tmp_path / "b", gaps=tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# no gaps\n")
    assert capture_run(run_dir, tmp_path / "b", gaps=empty, fsync=False).manifest["warnings"] == []


# Issue 14: bundles keep classId (SPEC §14), as upstream FlowTime's capture writes them: after each
# DEFAULT file, one file per class `<node>_<metric>_<classId>.csv` with that classId in its rows and
# in its files[] entry.
CLASS_FILES = [
    ("Split", "arrivals", "DEFAULT", "Split_arrivals.csv"),
    ("Split", "arrivals", "Alpha", "Split_arrivals_Alpha.csv"),
    ("Split", "arrivals", "Beta", "Split_arrivals_Beta.csv"),
    ("Airport", "arrivals", "DEFAULT", "Airport_arrivals.csv"),
    ("Airport", "arrivals", "Alpha", "Airport_arrivals_Alpha.csv"),
    ("Airport", "arrivals", "Beta", "Airport_arrivals_Beta.csv"),
    ("Airport", "served", "DEFAULT", "Airport_served.csv"),
    ("Airport", "served", "Alpha", "Airport_served_Alpha.csv"),
    ("Airport", "served", "Beta", "Airport_served_Beta.csv"),
    ("General", "arrivals", "DEFAULT", "General_arrivals.csv"),
    ("General", "arrivals", "Alpha", "General_arrivals_Alpha.csv"),
    ("General", "arrivals", "Beta", "General_arrivals_Beta.csv"),
]
BOUND = {"Split": "total_arrivals", "Airport": "airport", "General": "general"}


def bundle_rows(path: Path) -> list[tuple[int, str, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "bin_index,classId,value"
    return [(int(i), c, float(v)) for i, c, v in (line.split(",") for line in lines[1:])]


def test_a_class_run_captures_one_file_per_class(tmp_path: Path) -> None:
    series = make_class_run(tmp_path / "run")
    result = capture_run(tmp_path / "run", tmp_path / "b", fsync=False)
    manifest = orjson.loads((tmp_path / "b" / "manifest.json").read_bytes())
    assert manifest == result.manifest
    assert [(f["nodeId"], f["metric"], f["classId"], f["path"]) for f in manifest["files"]] == CLASS_FILES
    assert manifest["supportsClassMetrics"] is True and manifest["classes"] == ["Alpha", "Beta"]
    assert manifest["classCoverage"] == "full"
    values: dict[tuple[str, str, str], list[float]] = {}
    for entry in manifest["files"]:
        body = (tmp_path / "b" / entry["path"]).read_bytes()
        assert entry["hash"] == "sha256:" + hashlib.sha256(body).hexdigest() and entry["points"] == 3
        rows = bundle_rows(tmp_path / "b" / entry["path"])
        assert [(i, c) for i, c, _ in rows] == [(0, entry["classId"]), (1, entry["classId"]), (2, entry["classId"])]
        key = (entry["nodeId"], entry["metric"], entry["classId"])
        values[key] = [v for _, _, v in rows]
        sid = BOUND[entry["nodeId"]]
        np.testing.assert_array_equal(values[key], series[f"{sid}@{sid.upper()}@{entry['classId']}"], err_msg=str(key))
    assert values[("Airport", "served", "Alpha")] == [40, 20, 0] and values[("Airport", "served", "Beta")] == [0, 0, 0]
    assert values[("General", "arrivals", "Alpha")] == [0, 0, 0]
    assert values[("General", "arrivals", "Beta")] == [45, 22.5, 0]
    assert values[("Split", "arrivals", "Alpha")] == [40, 20, 0] and values[("Split", "arrivals", "Beta")] == [
        60,
        30,
        0,
    ]
    for node, metric, class_id, _ in CLASS_FILES:
        if class_id == "DEFAULT":  # the classes of a bin sum to the DEFAULT file
            total = np.add(values[(node, metric, "Alpha")], values[(node, metric, "Beta")])
            np.testing.assert_allclose(total, values[(node, metric, "DEFAULT")], rtol=1e-12)
    again = capture_run(tmp_path / "run", tmp_path / "again", fsync=False)
    assert again.manifest_bytes == result.manifest_bytes
    assert files_of(tmp_path / "b") == files_of(tmp_path / "again")


def test_a_gap_applies_to_the_class_files_too(tmp_path: Path) -> None:
    make_class_run(tmp_path / "run")
    gaps = [{"nodeId": "General", "bins": [1]}, {"nodeId": "Airport", "metric": "served", "bins": [0], "fill": "nan"}]
    result = capture_run(tmp_path / "run", tmp_path / "b", gaps=gaps, fsync=False)
    points = {(f["nodeId"], f["metric"], f["classId"]): f["points"] for f in result.manifest["files"]}
    assert {points[("General", "arrivals", c)] for c in ("DEFAULT", "Alpha", "Beta")} == {2}
    assert [i for i, _, _ in bundle_rows(tmp_path / "b" / "General_arrivals_Beta.csv")] == [0, 2]
    served = bundle_rows(tmp_path / "b" / "Airport_served_Alpha.csv")
    assert np.isnan(served[0][2]) and served[1] == (1, "Alpha", 20.0)
    # one warning per node metric, not per class file
    assert sorted((w["code"], w["nodeId"]) for w in result.manifest["warnings"]) == [
        ("data_gap", "General"),
        ("nan_fill", "Airport"),
    ]


# sha256 of the CSVs of `make_run` captured before class files existed (a class-less bundle is unchanged)
BEFORE_CLASSES = {
    "Svc_arrivals.csv": "2a7a2751576199e526f96f28ece758540a15d096e02cfa51b14c195e263e37dd",
    "Svc_capacity.csv": "92ab106f9a135ffac0d6af45823e9d730f3239accc896ceaf4f0b7e8f24b066b",
    "Svc_served.csv": "f2c8e10b83e3be7fddd15061ae7d3ab7e563c9a9a8b925a6eb7f219d8cdd93bc",
}


def test_a_class_less_bundle_is_what_it_was_before_classes(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    result = capture_run(run_dir, tmp_path / "b", fsync=False)
    got = {name: hashlib.sha256(data).hexdigest() for name, data in files_of(tmp_path / "b").items()}
    assert {name: got[name] for name in BEFORE_CLASSES} == BEFORE_CLASSES and set(got) == {
        *BEFORE_CLASSES,
        "manifest.json",
    }
    assert list(result.manifest) == ["schemaVersion", "window", "grid", "files", "warnings", "provenance"]


def test_a_captured_class_bundle_replays_its_classes(tmp_path: Path) -> None:
    """Class files feed the class inputs of a telemetry-fed class source (SPEC §14): the replay keeps the
    source's classes exactly; class files of series that take no classes are left out (the total is there)."""
    make_class_run(tmp_path / "run")
    capture_run(tmp_path / "run", tmp_path / "b", fsync=False)
    source = parse_model_text(ROUTER_MIXED)
    graph = load_graph(source)
    bundle = load_bundle(tmp_path / "b")
    telemetry, _ = bundle_telemetry(bundle, graph)
    replay_model = telemetry_model(source, graph, telemetry)
    replay_graph = load_graph(replay_model)
    telemetry, warnings = bundle_telemetry(bundle, replay_graph)
    assert not [w for w in warnings if w["severity"] == "warning"]
    assert "class_summed" in {w["code"] for w in warnings}  # airport and general take no classes
    replayed = {s.series_id: s.values.tolist() for s in run_model(replay_model, telemetry=telemetry).result.series}
    assert replayed["total_arrivals@TOTAL_ARRIVALS@DEFAULT"] == [100, 50, 0]
    assert replayed["total_arrivals@TOTAL_ARRIVALS@Alpha"] == [40, 20, 0]
    assert replayed["total_arrivals@TOTAL_ARRIVALS@Beta"] == [60, 30, 0]
    assert replayed["general@GENERAL@DEFAULT"] == [45, 22.5, 0]
