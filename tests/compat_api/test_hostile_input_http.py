"""Issue 12 over HTTP: the cell budget of batch evaluation, grids past the year 9999, PATCHes that
could not be evaluated, non-finite template parameters, explicit run ids and deletes — each refused or
handled with a structured answer before anything is allocated, logged, applied or half-removed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings

YAML = {"content-type": "application/x-yaml"}
NDJSON = {"content-type": "application/x-ndjson"}


def wide_model(series: int, bins: int) -> str:
    lines = [f"grid: {{bins: {bins}, binSize: 1, binUnit: minutes}}", "nodes:", '- {id: a, kind: expr, expr: "1"}']
    lines += [f'- {{id: n{i}, kind: expr, expr: "a + {i}"}}' for i in range(series - 1)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def c(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", max_batch_cells=1000)
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as client:
        yield client


def test_batch_validate_and_graph_refuse_a_model_over_the_cell_budget(c: TestClient) -> None:
    big, small = wide_model(10, 100), wide_model(9, 100)  # 11 and 10 rows (with the zero row)
    for path in ("/v1/run", "/v1/validate", "/v1/graph"):
        r = c.post(path, content=big, headers=YAML)
        assert r.status_code == 413, (path, r.text)
        body = r.json()
        assert body["error"] == "too_large" and body["setting"] == "max_batch_cells" and body["cells"] == 1100
        assert c.post(path, content=small, headers=YAML).status_code == 200, path
    for options in ({}, {"async": True}):
        r = c.post("/v1/runs", json={"model": big, "options": options})
        assert r.status_code == 413, r.text
    assert c.get("/v1/runs").json()["total"] == 1  # only the small /v1/run; nothing of the refused ones


def test_an_overlay_over_the_budget_is_refused(c: TestClient) -> None:
    base = c.post("/v1/runs", json={"model": wide_model(4, 100)})
    assert base.status_code == 201, base.text
    overlays = [{"id": f"x{i}", "kind": "expr", "expr": "a * 2"} for i in range(6)]  # 4 + 6 + the zero row
    r = c.post("/v1/runs", json={"mode": "overlay", "baseRunId": base.json()["runId"], "overlays": overlays})
    assert r.status_code == 413 and r.json()["cells"] == 1100, r.text


def test_a_live_run_near_the_year_9999_refuses_the_bins_that_would_end_after_it(c: TestClient) -> None:
    model = (
        'grid: {binSize: 1, binUnit: days, start: "9999-12-29T00:00:00Z"}\n'
        "nodes:\n  - {id: x, kind: const, source: telemetry}\n"
    )
    assert c.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": "y"}}).status_code == 202
    ok = b"\n".join(orjson.dumps({"bin": b, "series": "x", "value": 1.0}) for b in (0, 1))
    assert c.post("/v1/runs/y/bins", content=ok, headers=NDJSON).status_code == 202
    r = c.post("/v1/runs/y/bins", content=b'{"bin": 2, "series": "x", "value": 1}', headers=NDJSON)
    assert r.status_code == 422 and r.json()["error"] == "bin_out_of_range", r.text
    state = c.get("/v1/runs/y/state", params={"binIndex": 1})
    assert state.status_code == 200 and state.json()["bin"]["endUtc"] == "9999-12-31T00:00:00Z", state.text
    assert c.get("/v1/runs/y").json()["lastBin"] == 1
    assert c.post("/v1/runs/y/close").status_code == 202


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
def test_a_non_finite_template_parameter_is_a_4xx_not_a_500(c: TestClient, value: str) -> None:
    """Issue 12 #9: the error naming the `NaN` could not be encoded as JSON (500)."""
    body = '{"parameters": {"q0": ' + value + "}}"
    r = c.post("/v1/templates/order-system/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "out_of_range", r.text


def test_an_explicit_batch_run_id_is_reserved_while_it_evaluates(c: TestClient) -> None:
    """Two creates of the same new id both passed the 409 check and the last write replaced the first:
    the id is now reserved before evaluation and released when the create ends either way."""
    small = wide_model(3, 10)
    ctx = c.app.state.ctx  # type: ignore[attr-defined]
    ctx.pending_runs["taken"] = {"runId": "taken", "status": "running"}  # a create of `taken` in flight
    r = c.post("/v1/runs", json={"model": small, "options": {"runId": "taken"}})
    assert r.status_code == 409, r.text
    ctx.pending_runs.pop("taken")
    assert c.post("/v1/runs", json={"model": wide_model(99, 100), "options": {"runId": "x1"}}).status_code == 413
    assert (
        c.post("/v1/runs", json={"model": wide_model(99, 100), "options": {"runId": "x1", "async": True}}).status_code
        == 413
    )
    assert "x1" not in ctx.pending_runs  # a refused create releases its reservation
    assert c.post("/v1/runs", json={"model": small, "options": {"runId": "x1"}}).status_code == 201
    assert c.post("/v1/runs", json={"model": small, "options": {"runId": "x1"}}).status_code == 409


@pytest.mark.parametrize("expr", ["PULSE(1e30)", "PULSE(2, 1e30)", "ROLLING_MEAN(demand, 1e30)", "SHIFT(demand, 2e7)"])
def test_a_patch_that_could_not_be_evaluated_is_refused_and_the_run_goes_on(c: TestClient, expr: str) -> None:
    """Issue 12 #5: such a PATCH validated, then every ingest failed (400 internal) and close wedged."""
    model = (
        'grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}\n'
        "nodes:\n  - {id: demand, kind: const, source: telemetry}\n"
    )
    assert c.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": "p"}}).status_code == 202
    r = c.patch("/v1/runs/p/model", json={"fromBin": 0, "nodes": [{"id": "x", "kind": "expr", "expr": expr}]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_model", r.text
    assert (
        c.post("/v1/runs/p/bins", content=b'{"bin": 0, "series": "demand", "value": 2}', headers=NDJSON).status_code
        == 202
    )
    assert c.get("/v1/runs/p").json()["modelRevision"] == 0
    assert c.post("/v1/runs/p/close").status_code == 202


def test_deleting_a_finished_run_removes_all_of_it_or_nothing(c: TestClient, tmp_path: Path) -> None:
    """Issue 12 #7: a finished run's folder was removed with a plain rmtree (a failure midway left half
    a run); now it is renamed to a tombstone first, and a failed rename leaves the run whole (503)."""
    runs = tmp_path / "data" / "runs"
    first = c.post("/v1/runs", json={"model": wide_model(2, 4), "options": {"runId": "d1"}})
    assert first.status_code == 201, first.text
    if (runs / ".deleted").is_dir():
        (runs / ".deleted").rmdir()
    (runs / ".deleted").write_text("in the way")  # the tombstone folder cannot be made: the rename fails
    r = c.delete("/v1/runs/d1")
    assert r.status_code == 503 and r.json()["error"] == "storage_unavailable", r.text
    assert c.get("/v1/runs/d1").status_code == 200 and (runs / "d1" / "manifest.json").is_file()
    (runs / ".deleted").unlink()
    assert c.delete("/v1/runs/d1").status_code == 200
    assert not (runs / "d1").exists() and list((runs / ".deleted").iterdir()) == []
    assert c.get("/v1/runs/d1").status_code == 404
    assert all(not r["runId"].startswith(".") for r in c.get("/v1/runs").json()["items"])
