"""Issue 12 #10: an overlay on a live base uses the base as of its latest snapshot (SPEC §12.14).
Periodic snapshots hold only live state, so the overlay of an open base answered 404; and a
snapshot of a live run without any bin failed to write its (empty) Parquet artifacts (500)."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings

MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""
OVERLAY = {
    "mode": "overlay",
    "baseRunId": "b",
    "overlays": [{"id": "served", "kind": "expr", "expr": "MIN(demand, 5)"}],
}
NDJSON = {"content-type": "application/x-ndjson"}


def test_an_overlay_of_an_open_live_base_sees_every_acknowledged_bin(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as c:
        created = c.post(
            "/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "b", "snapshotEveryBins": 2}}
        )
        assert created.status_code == 202
        empty = c.post("/v1/runs", json=OVERLAY)  # no bin yet: an all-zero overlay, not a 500
        assert empty.status_code == 201, empty.text
        frames = b"\n".join(orjson.dumps({"bin": b, "series": "demand", "value": 4.0 + b}) for b in range(5))
        assert c.post("/v1/runs/b/bins", content=frames, headers=NDJSON).status_code == 202
        r = c.post("/v1/runs", json=OVERLAY)
        assert r.status_code == 201, r.text
        csv = c.get(f"/v1/runs/{r.json()['runId']}/series/served").text.split()
        assert csv[1:6] == ["0,4", "1,5", "2,5", "3,5", "4,5"], csv
        assert c.get("/v1/runs/b").json()["status"] == "live"  # the base goes on


def test_a_topology_run_without_any_bin_snapshots_and_closes(tmp_path: Path) -> None:
    """Found by the stateful fuzzing: derived metrics of zero bins failed (500 on POST /snapshots, and
    the close failed the run with `artifacts_failed`)."""
    model = (
        MODEL + "topology:\n  nodes:\n    - {id: Svc, kind: service, semantics: {arrivals: demand, served: served}}\n"
    )
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": "t"}}).status_code == 202
        assert c.post("/v1/runs/t/snapshots").status_code == 201
        assert c.post("/v1/runs/t/close").status_code == 202
        assert c.get("/v1/runs/t").json()["status"] == "completed"
