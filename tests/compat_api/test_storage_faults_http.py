"""Issue 12 #1, #5, #7 over HTTP and WebSocket (an in-process app on real files, writes through a
`FaultyFs`): a full disk answers 503 `storage_unavailable` with Retry-After and applies nothing,
`/readyz` and the metrics say storage is failing, and once writes succeed ingest resumes by itself —
202s, the subscriber gets every acknowledged bin and nothing else, never a "400 internal". A run
whose record fails to evaluate shows `failed` with its reason in detail, list and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings
from engine_live.runtime.records import FramesRecord, LogRecord
from tests.fault_fs import FaultyFs

MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""
NDJSON = {"content-type": "application/x-ndjson"}


def client(
    tmp_path: Path, fs: FaultyFs, evaluate_fault: Any = None, seen: list[dict[str, Any]] | None = None
) -> TestClient:
    """The app on `fs`; `seen` collects every seq'd event the hub hands to its subscribers."""
    settings = Settings(data_dir=tmp_path / "data")
    ctx = build_context(settings, fs=fs, evaluate_fault=evaluate_fault)
    if seen is not None and ctx.hub is not None:
        ctx.hub.add_listener(lambda run_id, ev: seen.append(orjson.loads(ev.data)) if ev.seqd else None)
    return TestClient(create_app(settings, ctx))


def frames(b: int, value: float) -> bytes:
    return orjson.dumps({"bin": b, "series": "demand", "value": value})


def metric(c: TestClient, line_start: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def test_a_full_disk_answers_503_and_ingest_resumes_by_itself(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    answers: list[int] = []
    seen: list[dict[str, Any]] = []
    with client(tmp_path, faulty_fs, seen=seen) as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "r1"}}).status_code == 202
        r = c.post("/v1/runs/r1/bins", content=frames(0, 4.0), headers=NDJSON)
        answers.append(r.status_code)
        faulty_fs.fill()
        for attempt in range(3):
            r = c.post("/v1/runs/r1/bins", content=frames(1, 90.0 + attempt), headers=NDJSON)
            answers.append(r.status_code)
            assert r.status_code == 503 and r.json()["error"] == "storage_unavailable", r.text
            assert r.headers["Retry-After"] == "1"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "storage_failing"
        assert ready.json()["storage"]["failing"] == ["log"] and ready.headers["Retry-After"] == "1"
        assert metric(c, 'flowtime_storage_failing{kind="log"}') == 1.0
        assert metric(c, 'flowtime_storage_failures_total{kind="log"}') == 3.0
        assert c.get("/v1/runs/r1").json()["watermark"] == 0  # nothing of the refused requests applied
        faulty_fs.heal()
        assert c.get("/readyz").json() == {"status": "ready"}  # a probe write: storage works again
        assert metric(c, 'flowtime_storage_failing{kind="log"}') == 0.0
        for b in (1, 2, 3):
            r = c.post("/v1/runs/r1/bins", content=frames(b, float(b)), headers=NDJSON)
            answers.append(r.status_code)
            assert r.status_code == 202, r.text
    assert all(code in (202, 503) for code in answers)
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free, from the create's `live` on
    updates = {e["binIndex"]: e["deltas"][0]["series"]["demand"] for e in seen if e["type"] == "run_update"}
    assert updates == {0: 4.0, 1: 1.0, 2: 2.0, 3: 3.0}  # every acknowledged bin, no refused value
    with client(tmp_path, FaultyFs()) as c:  # a restart has every acknowledged bin
        detail = c.get("/v1/runs/r1").json()
        assert detail["watermark"] == 3 and detail["status"] == "live"


def test_a_run_whose_record_fails_to_evaluate_is_failed_in_the_api(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    def evaluator(run_id: str, record: LogRecord) -> None:
        if run_id == "bad" and isinstance(record, FramesRecord):
            raise ArithmeticError("evaluator bug")

    with client(tmp_path, faulty_fs, evaluator) as c:
        for run_id in ("bad", "good"):
            assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": run_id}}).is_success
        r = c.post("/v1/runs/bad/bins", content=frames(0, 1.0), headers=NDJSON)
        assert r.status_code == 409 and r.json()["error"] == "run_failed", r.text
        assert r.json()["reason"].startswith("evaluation_failed: ArithmeticError: evaluator bug")
        detail = c.get("/v1/runs/bad").json()
        assert detail["status"] == "failed" and detail["reason"] == r.json()["reason"]
        listed = {run["runId"]: run for run in c.get("/v1/runs").json()["items"]}
        assert listed["bad"]["status"] == "failed" and listed["good"]["status"] == "live"
        assert metric(c, 'flowtime_run_failures_total{cause="evaluation"}') == 1.0
        assert metric(c, 'flowtime_live_runs{status="failed"}') == 1.0
        assert c.post("/v1/runs/bad/bins", content=frames(1, 1.0), headers=NDJSON).status_code == 409
        assert c.post("/v1/runs/bad/close").json()["status"] == "failed"  # a no-op, never `closing`
        assert c.post("/v1/runs/good/bins", content=frames(0, 1.0), headers=NDJSON).status_code == 202
        assert c.delete("/v1/runs/bad").status_code == 200
        assert not (tmp_path / "data/runs/bad").exists()


def test_a_delete_that_cannot_remove_the_folder_answers_503_and_keeps_it_whole(
    tmp_path: Path, faulty_fs: FaultyFs
) -> None:
    with client(tmp_path, faulty_fs) as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "r1"}}).is_success
        assert c.post("/v1/runs/r1/bins", content=frames(0, 1.0), headers=NDJSON).status_code == 202
        faulty_fs.arm("rename", path=".deleted")
        r = c.delete("/v1/runs/r1")
        assert r.status_code == 503 and r.json()["error"] == "storage_unavailable", r.text
        assert (tmp_path / "data/runs/r1/live/ingest.log").is_file()
        assert c.get("/v1/runs/r1").json()["reason"] == "deleted"
        assert c.delete("/v1/runs/r1").status_code == 200
        assert not (tmp_path / "data/runs/r1").exists()
        assert c.get("/v1/runs/r1").status_code == 404
