"""Issue 12 regressions over HTTP (an in-process app on real files): snapshots are routed, a create
with an unbounded option leaves nothing behind, and storage failures answer 503 with Retry-After."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings

NDJSON = {"content-type": "application/x-ndjson"}
MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""


def client(tmp_path: Path) -> tuple[TestClient, Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    return TestClient(create_app(settings, build_context(settings))), settings


def test_post_snapshots_commits_a_snapshot_and_the_artifacts(tmp_path: Path) -> None:
    app, settings = client(tmp_path)
    with app as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "s1"}}).status_code == 202
        frames = b"\n".join(orjson.dumps({"bin": b, "series": "demand", "value": 4.0 + b}) for b in range(4))
        assert c.post("/v1/runs/s1/bins", content=frames, headers=NDJSON).status_code == 202
        r = c.post("/v1/runs/s1/snapshots")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["runId"] == "s1" and body["lastBin"] == 3 and body["path"].startswith("live/snapshots/")
        run_dir = settings.data_dir / "runs" / "s1"
        assert (run_dir / body["path"] / "state.json").is_file() and (run_dir / "manifest.json").is_file()
        assert c.post("/v1/runs/nope/snapshots").status_code == 404
        assert c.post("/v1/runs/s1/close").status_code == 202
        assert c.post("/v1/runs/s1/snapshots").status_code == 409  # not open any more


def test_an_unbounded_option_is_refused_and_leaves_no_ghost_run(tmp_path: Path) -> None:
    app, settings = client(tmp_path)
    with app as c:
        for option in ("graceBins", "snapshotEveryBins"):
            r = c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "g1", option: 2**70}})
            assert r.status_code == 422 and r.json()["option"] == option, r.text
            assert c.get("/v1/runs/g1").status_code == 404
            assert (
                c.post(
                    "/v1/runs/g1/bins", content=b'{"bin": 0, "series": "demand", "value": 1}', headers=NDJSON
                ).status_code
                == 404
            )
        assert not (settings.data_dir / "runs" / "g1").exists()
        created = c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "g1"}})
        assert created.status_code == 202  # the id was never taken


def test_an_empty_array_is_refused_and_logs_nothing(tmp_path: Path) -> None:
    """Issue 12 #10: `[]` used to append (and fsync) an empty record."""
    app, settings = client(tmp_path)
    with app as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "e1"}}).status_code == 202
        log = settings.data_dir / "runs" / "e1" / "live" / "ingest.log"
        size = log.stat().st_size
        r = c.post("/v1/runs/e1/bins", content=b"[]", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "no_frames", r.text
        assert log.stat().st_size == size


def test_column_lines_and_arrow_streams_are_ingested_by_content_type(tmp_path: Path) -> None:
    """Issue 16: the Content-Type picks the body's form; the browser guard lets both types through."""
    import pyarrow as pa

    table = pa.table({"bin": pa.array([2, 3], pa.int32()), "series": ["demand", "demand"], "value": [6.0, 7.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    app, _ = client(tmp_path)
    with app as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "c1"}}).status_code == 202
        columns = {"content-type": "application/x-flowtime-columns+ndjson"}
        line = orjson.dumps({"bin": 0, "series": ["demand", "demand"], "values": [4.0, 5.0]}) + b"\n"
        r = c.post("/v1/runs/c1/bins", content=line, headers=columns)
        assert r.status_code == 202 and r.json()["accepted"] == 2 and r.json()["corrected"] == 0, r.text
        arrow = {"content-type": "application/vnd.apache.arrow.stream"}
        r = c.post("/v1/runs/c1/bins", content=sink.getvalue().to_pybytes(), headers=arrow)
        assert r.status_code == 202 and r.json()["accepted"] == 2, r.text
        bad = orjson.dumps({"bin": 1, "series": ["demand"], "values": [None]})
        r = c.post("/v1/runs/c1/bins", content=bad, headers=columns)
        assert r.status_code == 422 and r.json()["frame"] == 0 and r.json()["position"] == 0, r.text
        assert c.post("/v1/runs/c1/bins", content=b"\x00\x01", headers=arrow).status_code == 400
        state = c.get("/v1/runs/c1/state/live").json()
        assert state["watermark"] == 3
