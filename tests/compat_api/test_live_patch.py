"""PATCH /v1/runs/{id}/model: logged, replayed, and batch ≡ live with the adjustments applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings
from engine_live.plan.batch_run import run_model
from snapshot_writer.artifact_reader import read_run_series

NDJSON = {"content-type": "application/x-ndjson"}
MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: cap, kind: const, values: [10, 10, 10, 10, 10, 10, 10, 10]}
  - {id: served, kind: expr, expr: "MIN(demand, cap)"}
  - {id: backlog, kind: expr, expr: "MAX(0, SHIFT(backlog, 1) + demand - served)", initial: 0}
"""
DEMAND = [12.0, 8.0, 15.0, 9.0, 20.0, 4.0, 11.0, 13.0]
PATCH = {
    "fromBin": 3,
    "nodes": [
        {"id": "cap", "kind": "expr", "expr": "14 + PULSE(2)"},
        {"id": "extra", "kind": "expr", "expr": "served * 2"},
    ],
}


def _app(tmp_path: Path) -> tuple[TestClient, Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    return TestClient(create_app(settings, build_context(settings))), settings


def test_patch_recomputes_and_batch_with_adjustments_is_identical(tmp_path: Path) -> None:
    client, settings = _app(tmp_path)
    with client as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "p1"}}).status_code == 202
        frames = b"\n".join(orjson.dumps({"bin": b, "series": "demand", "value": v}) for b, v in enumerate(DEMAND[:6]))
        assert c.post("/v1/runs/p1/bins", content=frames, headers=NDJSON).json()["lastBin"] == 5
        before = c.get("/v1/runs/p1").json()
        r = c.patch("/v1/runs/p1/model", json=PATCH)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["modelRevision"] == 1 and body["revision"] == before["revision"] + 1
        bad = c.patch("/v1/runs/p1/model", json={"fromBin": 99, "nodes": [{"id": "x", "kind": "expr", "expr": "1"}]})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_patch"
        tele = c.patch("/v1/runs/p1/model", json={"nodes": [{"id": "demand", "kind": "const", "values": [1] * 8}]})
        assert tele.status_code == 422
        frames = b"\n".join(orjson.dumps({"bin": b, "series": "demand", "value": DEMAND[b]}) for b in (6, 7))
        c.post("/v1/runs/p1/bins", content=frames, headers=NDJSON)
        assert c.post("/v1/runs/p1/close").status_code == 202
    run_dir = settings.data_dir / "runs" / "p1"
    adjustments = orjson.loads((run_dir / "model" / "adjustments.json").read_bytes())
    assert [a["fromBin"] for a in adjustments] == [3]
    live = read_run_series(run_dir)
    batch = run_model(MODEL, telemetry={"demand": np.array(DEMAND)}, adjustments=adjustments)
    for s in batch.result.series:
        assert live[s.series_id].tobytes() == s.values.tobytes(), s.node_id
    cap = live["cap@CAP@DEFAULT"]
    assert cap.tolist() == [10, 10, 10, 14, 15, 14, 15, 14]  # old values before bin 3, PULSE(2) from bin 3
    assert live["extra@EXTRA@DEFAULT"][:3].tolist() == [0, 0, 0]  # a new series holds 0 before fromBin


def test_patch_survives_restart(tmp_path: Path) -> None:
    client, _ = _app(tmp_path)
    with client as c:
        c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "p2"}})
        frames = b"\n".join(orjson.dumps({"bin": b, "series": "demand", "value": v}) for b, v in enumerate(DEMAND[:5]))
        c.post("/v1/runs/p2/bins", content=frames, headers=NDJSON)
        c.patch("/v1/runs/p2/model", json=PATCH)
        first = c.get("/v1/runs/p2/state/live").json()
    client2, _ = _app(tmp_path)
    with client2 as c:
        again = c.get("/v1/runs/p2/state/live").json()
        assert again["seq"] == first["seq"]
        assert again["series"] == first["series"]
        assert again["series"]["extra"] == first["series"]["cap"] * 0 + 2 * first["series"]["served"]
        assert c.get("/v1/runs/p2").json()["modelRevision"] == 1
