"""`POST /v1/run`, `POST /v1/runs`, run lists, details and artifacts (SPEC §4, §8, §12.3, §12.14)."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from compat_runs_support import GOLDEN_MODEL, make_client, post_model, series_model
from fastapi.testclient import TestClient

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifacts import write_run_artifacts

BAD_MODEL = GOLDEN_MODEL.replace("MIN(arrivals, capacity)", "MIN(arrivals, capcity)")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


# ---- POST /v1/run (legacy) ---------------------------------------------------------------------
@pytest.mark.parametrize("ctype", ["application/x-yaml", "application/yaml", "text/yaml"])
def test_legacy_run_yaml(client: TestClient, tmp_path: Path, ctype: str) -> None:
    r = client.post("/v1/run", content=GOLDEN_MODEL, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["binMinutes"] == 5 and body["grid"]["bins"] == 4
    assert body["series"]["served"] == [10, 20, 25, 25]
    assert body["series"]["backlog"] == [5, 15, 20, 5]
    assert body["order"][:4] == ["arrivals", "capacity", "attempts", "served"]
    assert body["modelHash"].startswith("sha256:")
    assert (tmp_path / "runs" / body["runId"] / "manifest.json").is_file()


def test_legacy_run_json(client: TestClient) -> None:
    model = {
        "grid": {"bins": 2, "binSize": 1, "binUnit": "hours"},
        "nodes": [{"id": "d", "kind": "const", "values": [1, 2]}],
    }
    for payload in (model, {"model": model}):
        r = client.post("/v1/run", content=orjson.dumps(payload), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["series"] == {"d": [1, 2]} and r.json()["binMinutes"] == 60


def test_legacy_run_failures(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/run", content=BAD_MODEL, headers={"content-type": "application/x-yaml"})
    assert r.status_code == 422
    assert "node 'served'" in r.json()["message"] and "capcity" in r.json()["message"]
    r = client.post("/v1/run", content="", headers={"content-type": "application/x-yaml"})
    assert r.status_code == 400 and r.json()["error"] == "empty_body"
    r = client.post("/v1/run", content=b"\xff\xfe", headers={"content-type": "application/x-yaml"})
    assert r.status_code == 400
    r = client.post("/v1/run", content="grid: [unclosed", headers={"content-type": "application/x-yaml"})
    assert r.status_code == 422
    with make_client(tmp_path / "small", max_model_bytes=100) as small:
        r = small.post("/v1/run", content=GOLDEN_MODEL, headers={"content-type": "application/x-yaml"})
        assert r.status_code == 413


# ---- POST /v1/runs: simulation -----------------------------------------------------------------
def test_create_simulation_run(client: TestClient) -> None:
    r = client.post("/v1/runs", json={"mode": "simulation", "model": GOLDEN_MODEL})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/runs/{body['runId']}"
    assert body["status"] == "completed" and body["mode"] == "simulation" and body["binMinutes"] == 5
    assert body["runId"].startswith("run_") and body["links"]["state"].endswith("/state")


def test_model_as_object_and_deterministic_id(client: TestClient) -> None:
    model = {
        "grid": {"bins": 2, "binSize": 1, "binUnit": "hours"},
        "nodes": [{"id": "d", "kind": "const", "values": [1, 2]}],
    }
    ids = [
        client.post("/v1/runs", json={"model": model, "options": {"deterministicRunId": True}}).json()["runId"]
        for _ in range(2)
    ]
    assert ids[0] == ids[1] and ids[0].startswith("run_deterministic_") and len(ids[0]) == len("run_deterministic_") + 8


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"mode": "simulation", "model": BAD_MODEL}, 422, "invalid_model"),
        ({"mode": "simulation"}, 422, "invalid_request"),
        ({"mode": "simulation", "model": GOLDEN_MODEL, "template": "x"}, 422, "invalid_request"),
        ({"mode": "nonsense", "model": GOLDEN_MODEL}, 422, "invalid_request"),
        ({"mode": "simulation", "model": GOLDEN_MODEL, "extra": 1}, 422, "invalid_request"),
        ({"mode": "live", "model": GOLDEN_MODEL}, 422, "unsupported_mode"),
        ({"mode": "telemetry", "model": GOLDEN_MODEL}, 422, "unsupported_mode"),
        ({"mode": "overlay"}, 422, "invalid_request"),
        ({"mode": "overlay", "baseRunId": "missing"}, 404, "not_found"),
    ],
)
def test_create_run_failures(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    r = client.post("/v1/runs", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    if code == "invalid_model":
        assert "node 'served'" in r.json()["message"]


def test_async_run(client: TestClient) -> None:
    r = client.post("/v1/runs", json={"model": GOLDEN_MODEL, "options": {"async": True, "deterministicRunId": True}})
    assert r.status_code == 202, r.text
    run_id = r.json()["runId"]
    assert run_id.startswith("run_deterministic_") and r.headers["location"] == f"/v1/runs/{run_id}"
    detail = client.get(f"/v1/runs/{run_id}").json()  # TestClient waits for the background task
    assert detail["status"] == "completed"
    r = client.post("/v1/runs", json={"model": BAD_MODEL, "options": {"async": True}})
    assert r.status_code == 422  # validated before answering


def test_template_runs(client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "compat_api.templates.catalog", None)  # import fails → 422
    r = client.post("/v1/runs", json={"template": "order-system", "parameters": {}})
    assert r.status_code == 422 and r.json()["error"] == "unsupported_template"

    fake = types.ModuleType("compat_api.templates.catalog")

    def instantiate(
        template_id: str, parameters: dict[str, Any], *, data_dir: Path
    ) -> tuple[str, dict[str, Any], list[str]]:
        assert data_dir == tmp_path
        values = [parameters.get("q0", 0)] * 4
        return series_model(values), {"q0": parameters.get("q0", 0)}, ["defaulted bins"]

    fake.instantiate = instantiate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "compat_api.templates.catalog", fake)
    r = client.post("/v1/runs", json={"template": "order-system", "parameters": {"q0": 3}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["templateId"] == "order-system"
    assert any(w["message"] == "defaulted bins" for w in body["warnings"])
    listed = client.get("/v1/runs", params={"templateId": "order-system"}).json()
    assert [i["runId"] for i in listed["items"]] == [body["runId"]]
    spec = client.get(f"/v1/runs/{body['runId']}/model").text
    assert "provenance" not in spec and "[3, 3, 3, 3]" in spec


# ---- overlay -----------------------------------------------------------------------------------
def test_overlay_changes_capacity(client: TestClient) -> None:
    base = post_model(client, GOLDEN_MODEL)
    r = client.post(
        "/v1/runs",
        json={
            "mode": "overlay",
            "baseRunId": base,
            "overlays": [{"id": "capacity", "kind": "const", "values": [15, 15, 15, 15]}],
            "topologyOverride": {"nodes": [{"id": "Q", "semantics": {"slaMin": 10}}]},
        },
    )
    assert r.status_code == 201, r.text
    over = r.json()["runId"]
    assert r.json()["mode"] == "overlay"
    base_served = client.get(f"/v1/runs/{base}/series/served", params={"format": "json"}).json()["values"]
    over_served = client.get(f"/v1/runs/{over}/series/served", params={"format": "json"}).json()["values"]
    assert base_served == [10, 20, 25, 25] and over_served == [10, 15, 15, 15]
    q = next(n for n in client.get(f"/v1/runs/{over}/graph").json()["nodes"] if n["id"] == "Q")
    assert q["semantics"]["queueDepth"] == "backlog"  # merged per field, not replaced
    spec = client.get(f"/v1/runs/{over}/model").text
    assert "queueDepth: backlog, slaMin: 10}" in spec and "values: [15, 15, 15, 15]" in spec
    state = client.get(f"/v1/runs/{over}/state", params={"binIndex": 1}).json()
    q_state = next(n for n in state["nodes"] if n["id"] == "Q")["derived"]
    # Q: in 10 15, out 5 10 → depth 5 10; latency 10/10·5 = 5 ≤ slaMin 10 → green
    assert (q_state["latencyMinutes"], q_state["color"]) == (5, "green")
    # an appended node
    r = client.post(
        "/v1/runs",
        json={
            "mode": "overlay",
            "baseRunId": base,
            "overlays": [{"id": "extra", "kind": "expr", "expr": "served * 2"}],
        },
    )
    extra = client.get(f"/v1/runs/{r.json()['runId']}/series/extra", params={"format": "json"}).json()
    assert extra["values"] == [20, 40, 50, 50]


def test_overlay_failures(client: TestClient) -> None:
    base = post_model(client, GOLDEN_MODEL)
    r = client.post(
        "/v1/runs",
        json={
            "mode": "overlay",
            "baseRunId": base,
            "topologyOverride": {"nodes": [{"id": "Nope", "semantics": {}}]},
        },
    )
    assert r.status_code == 422 and "Nope" in r.json()["message"]
    r = client.post(
        "/v1/runs",
        json={
            "mode": "overlay",
            "baseRunId": base,
            "overlays": [{"id": "served", "kind": "expr", "expr": "MIN(x)"}],
        },
    )
    assert r.status_code == 422 and "served" in r.json()["message"]


def test_overlay_carries_base_telemetry(client: TestClient, tmp_path: Path) -> None:
    model = GOLDEN_MODEL.replace(
        "{id: arrivals, kind: const, values: [10, 20, 30, 40]}",
        "{id: arrivals, kind: const, source: telemetry}",
    )
    base = run_model(model, telemetry={"arrivals": np.array([30.0, 30.0, 10.0, 0.0])}, mode="telemetry")
    write_run_artifacts(base.result, tmp_path / "runs" / base.result.run_id, fsync=False)
    r = client.post(
        "/v1/runs",
        json={
            "mode": "overlay",
            "baseRunId": base.result.run_id,
            "overlays": [{"id": "capacity", "kind": "const", "values": [20, 20, 20, 20]}],
        },
    )
    assert r.status_code == 201, r.text
    served = client.get(f"/v1/runs/{r.json()['runId']}/series/served", params={"format": "json"}).json()["values"]
    assert served == [20, 20, 10, 0]  # MIN(telemetry arrivals 30 30 10 0, capacity 20)


# ---- live and telemetry delegation -------------------------------------------------------------
class FakeLive:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    ready = True  # recovery is done

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def knows(self, run_id: str) -> bool:
        return run_id == "r1"

    async def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return self.detail("r1")

    def detail(self, run_id: str) -> dict[str, Any]:
        return {
            "runId": run_id,
            "mode": "live",
            "status": "live",
            "createdUtc": "2099-01-01T00:00:00Z",
            "binMinutes": 5,
        }

    def list_runs(self) -> list[dict[str, Any]]:
        return [self.detail("r1")]


def test_live_mode_is_delegated(tmp_path: Path) -> None:
    live = FakeLive()
    with make_client(tmp_path, live=live) as c:
        r = c.post(
            "/v1/runs",
            json={"mode": "live", "model": GOLDEN_MODEL, "options": {"runId": "r1", "graceBins": 1}},
        )
        assert r.status_code == 202 and r.headers["location"] == "/v1/runs/r1"
        assert live.created == [{"mode": "live", "model": GOLDEN_MODEL, "options": {"runId": "r1", "graceBins": 1}}]
        assert c.get("/v1/runs/r1").json()["status"] == "live"
        post_model(c, GOLDEN_MODEL)
        items = c.get("/v1/runs").json()["items"]
        assert [i["mode"] for i in items] == ["live", "simulation"]  # merged, newest first
        assert c.get("/v1/runs", params={"mode": "live"}).json()["total"] == 1
        r = c.post("/v1/runs", json={"mode": "telemetry", "model": GOLDEN_MODEL})  # evaluated here, not by the engine
        assert r.status_code == 422 and "telemetry.bundle" in r.json()["message"]


# ---- lists and details -------------------------------------------------------------------------
def test_list_filters_and_paging(client: TestClient, tmp_path: Path) -> None:
    ids = [post_model(client, series_model([i, 1, 1, 1])) for i in range(3)]
    (tmp_path / "runs" / "incomplete").mkdir()
    (tmp_path / "runs" / "incomplete" / "run.json").write_text("{}")
    body = client.get("/v1/runs").json()
    assert body["total"] == 3 and sorted(i["runId"] for i in body["items"]) == sorted(ids)
    page = client.get("/v1/runs", params={"page": 2, "pageSize": 2}).json()
    assert page["page"] == 2 and page["pageSize"] == 2 and len(page["items"]) == 1 and page["total"] == 3
    assert client.get("/v1/runs", params={"mode": "overlay"}).json()["total"] == 0
    assert client.get("/v1/runs", params={"status": "completed"}).json()["total"] == 3
    assert client.get("/v1/runs", params={"createdAfter": "2000-01-01T00:00:00Z"}).json()["total"] == 3
    assert client.get("/v1/runs", params={"createdAfter": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    assert client.get("/v1/runs/incomplete").status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"pageSize": 0},
        {"pageSize": 201},
        {"page": "x"},
        {"createdAfter": "2025-10-07T00:00:00+02:00"},
    ],
)
def test_list_bad_paging(client: TestClient, params: dict[str, Any]) -> None:
    r = client.get("/v1/runs", params=params)
    assert r.status_code == 422, r.text


def test_detail_and_artifacts(client: TestClient) -> None:
    rid = post_model(client, GOLDEN_MODEL)
    detail = client.get(f"/v1/runs/{rid}").json()
    assert detail["binMinutes"] == 5 and detail["grid"]["bins"] == 4 and detail["links"]["self"] == f"/v1/runs/{rid}"
    assert {s["id"] for s in detail["series"]} >= {"served@SERVED@DEFAULT"}
    graph = client.get(f"/v1/runs/{rid}/graph").json()
    assert [n["id"] for n in graph["nodes"]] == ["Svc", "Q"] and graph["edges"][0]["from"] == "Svc"
    index = client.get(f"/v1/runs/{rid}/index").json()
    assert index["grid"]["binMinutes"] == 5 and any(s["id"] == "backlog@BACKLOG@DEFAULT" for s in index["series"])
    model = client.get(f"/v1/runs/{rid}/model")
    assert model.text == GOLDEN_MODEL and model.headers["content-type"].startswith("application/x-yaml")
    csv = client.get(f"/v1/runs/{rid}/series/served@SERVED@DEFAULT")
    assert csv.text == "bin_index,value\n0,10\n1,20\n2,25\n3,25\n"
    assert client.get(f"/v1/runs/{rid}/series/served", params={"format": "csv"}).text == csv.text
    js = client.get(f"/v1/runs/{rid}/series/backlog", params={"format": "json"}).json()
    assert js["values"] == [5, 15, 20, 5] and js["binMinutes"] == 5 and js["seriesId"] == "backlog@BACKLOG@DEFAULT"
    pq_bytes = client.get(f"/v1/runs/{rid}/series/served", params={"format": "parquet"}).content
    table = pq.read_table(io.BytesIO(pq_bytes))
    assert table.column("value").to_pylist() == [10, 20, 25, 25]
    assert table.column("bin_index").to_pylist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/runs/nope",
        "/v1/runs/nope/graph",
        "/v1/runs/nope/index",
        "/v1/runs/nope/model",
        "/v1/runs/nope/series/x",
        "/v1/runs/..%2F..%2Fetc/graph",
    ],
)
def test_unknown_run_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_series_failures(client: TestClient) -> None:
    rid = post_model(client, GOLDEN_MODEL)
    r = client.get(f"/v1/runs/{rid}/series/unknown")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get(f"/v1/runs/{rid}/series/served", params={"format": "xml"}).status_code == 422


def test_openapi_has_examples_for_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    mine = [
        ("post", "/v1/run"),
        ("post", "/v1/runs"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{run_id}"),
        ("get", "/v1/runs/{run_id}/graph"),
        ("get", "/v1/runs/{run_id}/index"),
        ("get", "/v1/runs/{run_id}/model"),
        ("get", "/v1/runs/{run_id}/series/{series_id}"),
        ("get", "/v1/runs/{run_id}/state"),
        ("get", "/v1/runs/{run_id}/state_window"),
        ("get", "/v1/runs/{run_id}/metrics"),
        ("post", "/v1/compare"),
        ("post", "/v1/validate"),
        ("post", "/v1/graph"),
        ("get", "/v1/artifacts"),
        ("get", "/v1/artifacts/{artifact_id}"),
    ]
    for method, path in mine:
        op = spec["paths"][path][method]
        assert b'"example' in orjson.dumps(op), f"{method} {path} has no example"
    schemas = orjson.dumps(spec["components"]["schemas"])
    assert b"examples" in schemas  # request bodies (RunRequest, CompareRequest)


def test_shipped_template_run(client: TestClient) -> None:
    templates = pytest.importorskip("compat_api.templates.catalog")
    first = templates.list_templates()[0]
    r = client.post("/v1/runs", json={"template": first.id, "parameters": {}})
    assert r.status_code == 201, r.text
    assert r.json()["templateId"] == first.id
    r = client.post("/v1/runs", json={"template": "no-such-template", "parameters": {}})
    assert r.status_code == 404, r.text
