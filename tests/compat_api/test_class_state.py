"""Issue 14 (part): class-bearing runs in the state API (SPEC §14: `byClass{classId: {metric: value |
array}}` on class-bearing nodes) and finished runs read back with their totals — the per-class
artifact series `<id>@<ID>@<classId>` used to be read back as the total (the last class won)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings

CLASSES = {
    "classes": [{"id": "Alpha"}, {"id": "Beta"}],
    "traffic": {
        "arrivals": [
            {"nodeId": "a", "classId": "Alpha", "pattern": {"kind": "constant", "ratePerBin": 4}},
            {"nodeId": "b", "classId": "Beta", "pattern": {"kind": "constant", "ratePerBin": 6}},
        ]
    },
    "topology": {"nodes": [{"id": "Svc", "semantics": {"arrivals": "s", "served": "s"}}]},
}


def model(a: dict[str, Any], b: dict[str, Any], bins: int | None) -> dict[str, Any]:
    grid: dict[str, Any] = {"binSize": 5, "binUnit": "minutes", "start": "2025-01-01T00:00:00Z"}
    if bins is not None:
        grid["bins"] = bins
    nodes = [
        {"id": "a", "kind": "const", **a},
        {"id": "b", "kind": "const", **b},
        {"id": "s", "kind": "expr", "expr": "a + b"},
    ]
    return {"grid": grid, "nodes": nodes, **CLASSES}


@pytest.fixture
def c(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as client:
        yield client


def test_a_finished_class_run_answers_totals_and_by_class(c: TestClient) -> None:
    r = c.post("/v1/runs", json={"model": model({"values": [4, 2, 0]}, {"values": [6, 6, 3]}, 3)})
    assert r.status_code == 201, r.text
    rid = r.json()["runId"]
    node = c.get(f"/v1/runs/{rid}/state", params={"binIndex": 1}).json()["nodes"][0]
    assert node["metrics"] == {"arrivals": 8.0, "served": 8.0}
    assert node["byClass"] == {"Alpha": {"arrivals": 2.0, "served": 2.0}, "Beta": {"arrivals": 6.0, "served": 6.0}}
    window = c.get(f"/v1/runs/{rid}/state_window", params={"startBin": 0, "endBin": 2}).json()["nodes"][0]
    assert window["metrics"]["arrivals"] == [10.0, 8.0, 3.0]
    assert window["byClass"]["Alpha"]["arrivals"] == [4.0, 2.0, 0.0]
    assert window["byClass"]["Beta"]["arrivals"] == [6.0, 6.0, 3.0]
    assert c.get(f"/v1/runs/{rid}/series/s").text.split() == ["bin_index,value", "0,10", "1,8", "2,3"]


def test_a_class_less_node_has_no_by_class(c: TestClient) -> None:
    plain = {
        "grid": {"bins": 2, "binSize": 5, "binUnit": "minutes"},
        "nodes": [{"id": "s", "kind": "const", "values": [1, 2]}],
    }
    plain["topology"] = {"nodes": [{"id": "Svc", "semantics": {"arrivals": "s"}}]}
    rid = c.post("/v1/runs", json={"model": plain}).json()["runId"]
    assert "byClass" not in c.get(f"/v1/runs/{rid}/state", params={"binIndex": 0}).json()["nodes"][0]


def test_a_live_class_run_splits_telemetry_by_the_model_shares(c: TestClient) -> None:
    live = model({"source": "telemetry"}, {"values": [6]}, None)
    live["nodes"][1] = {"id": "b", "kind": "const", "source": "telemetry"}
    assert c.post("/v1/runs", json={"mode": "live", "model": live, "options": {"runId": "k"}}).status_code == 202
    frames = [{"bin": 0, "series": "a", "value": 8}, {"bin": 0, "series": "b", "value": 3}]
    body = b"\n".join(orjson.dumps(f) for f in frames)
    assert c.post("/v1/runs/k/bins", content=body, headers={"content-type": "application/x-ndjson"}).status_code == 202
    node = c.get("/v1/runs/k/state/live").json()["nodes"][0]
    assert node["metrics"]["arrivals"] == 11.0
    assert node["byClass"] == {"Alpha": {"arrivals": 8.0, "served": 8.0}, "Beta": {"arrivals": 3.0, "served": 3.0}}


def test_live_frames_with_class_id_feed_the_classes_and_a_mismatch_is_a_warning(c: TestClient) -> None:
    live = model({"source": "telemetry"}, {"values": [6]}, None)
    beta_too = {"nodeId": "a", "classId": "Beta", "pattern": {"kind": "constant", "ratePerBin": 4}}
    live["traffic"] = {"arrivals": [*live["traffic"]["arrivals"], beta_too]}  # not the shared CLASSES
    assert c.post("/v1/runs", json={"mode": "live", "model": live, "options": {"runId": "m"}}).status_code == 202
    frames = [
        {"bin": 0, "series": "a", "classId": "Alpha", "value": 1},
        {"bin": 0, "series": "a", "classId": "Beta", "value": 2},
        {"bin": 1, "series": "a", "value": 10},
        {"bin": 1, "series": "a", "classId": "Alpha", "value": 4},
        {"bin": 1, "series": "a", "classId": "Beta", "value": 5},
    ]
    body = b"\n".join(orjson.dumps(f) for f in frames)
    r = c.post("/v1/runs/m/bins", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202 and r.json()["accepted"] == 5
    window = c.get("/v1/runs/m/state_window", params={"startBin": 0, "endBin": 1}).json()["nodes"][0]
    # s = a + b: a is 1 + 2 = 3 sent per class, then 10 sent with classes 4 + 5 scaled to it; b = [6, 0], Beta
    assert window["metrics"]["arrivals"] == [9.0, 10.0]
    assert window["byClass"]["Alpha"]["arrivals"] == pytest.approx([1.0, 10 * 4 / 9], abs=1e-6)  # wire: 6 decimals
    assert window["byClass"]["Beta"]["arrivals"] == pytest.approx([8.0, 10 * 5 / 9], abs=1e-6)
    warnings = c.get("/v1/runs/m/state", params={"binIndex": 1}).json()["warnings"]
    found = [w for w in warnings if w["code"] == "class_totals_mismatch"]
    assert [(w["bins"], w["value"], w["seriesId"]) for w in found] == [([1], 1.0, "a")]
    bad = c.post("/v1/runs/m/bins", json={"bin": 2, "series": "a", "classId": "Gamma", "value": 1})
    assert bad.status_code == 422 and bad.json()["error"] == "unknown_class"


def test_class_frames_survive_a_restart_and_close_into_per_class_artifacts(tmp_path: Path) -> None:
    """The class values are log records like any frame: a restart replays them (no snapshot yet), and
    closing writes the source's class series as sent."""
    live = model({"source": "telemetry"}, {"values": [6, 6]}, 2)
    frames = [
        {"bin": 0, "series": "a", "classId": "Alpha", "value": 1},
        {"bin": 0, "series": "a", "classId": "Beta", "value": 2},
        {"bin": 1, "series": "a", "value": 4},
    ]
    body = b"\n".join(orjson.dumps(f) for f in frames)
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": live, "options": {"runId": "r"}}).status_code == 202
        ndjson = {"content-type": "application/x-ndjson"}
        assert c.post("/v1/runs/r/bins", content=body, headers=ndjson).status_code == 202
        before = c.get("/v1/runs/r/state_window", params={"startBin": 0, "endBin": 1}).json()["nodes"][0]
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as c:
        after = c.get("/v1/runs/r/state_window", params={"startBin": 0, "endBin": 1}).json()["nodes"][0]
        assert after["byClass"] == before["byClass"] and after["metrics"] == before["metrics"]
        assert after["byClass"]["Alpha"]["arrivals"][0] == 1.0  # a@Alpha as sent (b is all Beta)
        assert c.post("/v1/runs/r/close").status_code in (200, 202)
        series = c.get("/v1/runs/r/series/a@A@Alpha")
        assert series.status_code == 200, series.text
        assert series.text.split() == ["bin_index,value", "0,1", "1,4"]  # bin 1: a total only, all Alpha by the model
