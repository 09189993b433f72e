"""`POST /v1/validate`, `POST /v1/graph` and the `/v1/artifacts` registry (SPEC §8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from compat_runs_support import GOLDEN_MODEL, make_client, post_model, series_model
from fastapi.testclient import TestClient

YAML = {"content-type": "application/x-yaml"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


# ---- validate and graph ------------------------------------------------------------------------
def test_validate_valid_model(client: TestClient) -> None:
    r = client.post("/v1/validate", content=GOLDEN_MODEL, headers=YAML)
    assert r.status_code == 200 and r.json() == {"valid": True, "errors": [], "warnings": []}


def test_validate_collects_errors_and_info_warnings(client: TestClient) -> None:
    bad = GOLDEN_MODEL.replace("MIN(arrivals, capacity)", "MIN(arrivals, capcity)").replace(
        "kind: const, values: [5, 10, 20, 40]", "kind: const, values: [5, 10]"
    )
    body = client.post("/v1/validate", content=bad, headers=YAML).json()
    assert body["valid"] is False
    assert any("node 'served'" in e and "capcity" in e for e in body["errors"])
    assert any("node 'q_out'" in e and "4" in e for e in body["errors"])
    upstream = GOLDEN_MODEL.replace("schemaVersion: 1", "schemaVersion: 1\nmetadata: {title: t}")
    body = client.post(
        "/v1/validate", content=orjson.dumps({"model": upstream}), headers={"content-type": "application/json"}
    ).json()
    assert body["valid"] is True and any("metadata" in w["message"] for w in body["warnings"])
    cycle = series_model([1, 2, 3, 4]).replace(
        "- {id: flat, kind: const, values: [7, 7, 7, 7]}",
        '- {id: a, kind: expr, expr: "b"}\n  - {id: b, kind: expr, expr: "a"}',
    )
    body = client.post("/v1/validate", content=cycle, headers=YAML).json()
    assert body["valid"] is False and "a" in body["errors"][0] and "b" in body["errors"][0]


def test_validate_bad_bodies(client: TestClient) -> None:
    assert client.post("/v1/validate", content="", headers=YAML).status_code == 400
    body = client.post("/v1/validate", content="grid: [", headers=YAML).json()
    assert body["valid"] is False and "YAML" in body["errors"][0]


def test_graph(client: TestClient) -> None:
    r = client.post("/v1/graph", content=GOLDEN_MODEL, headers=YAML)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["binMinutes"] == 5
    assert [(n["id"], n["kind"]) for n in body["nodes"]] == [("Svc", "service"), ("Q", "queue")]
    assert body["edges"] == [{"from": "Svc", "to": "Q", "weight": None}]
    ids = {s["id"]: s["kind"] for s in body["series"]}
    assert ids["backlog"] == "queue" and ids["served"] == "expr" and "backlog_outflow" in ids
    r = client.post("/v1/graph", content=GOLDEN_MODEL.replace("capacity)", "nothing)"), headers=YAML)
    assert r.status_code == 422 and "node 'served'" in r.json()["message"]


# ---- artifacts ---------------------------------------------------------------------------------
def make_bundle(root: Path, name: str, captured: str, run_id: str = "run_x") -> None:
    folder = root / "bundles" / name
    folder.mkdir(parents=True)
    manifest = {
        "schemaVersion": 2,
        "window": {"startTimeUtc": "2025-10-07T00:00:00Z", "durationMinutes": 20},
        "grid": {"bins": 4, "binSize": 5, "binUnit": "minutes"},
        "files": [{"nodeId": "Svc"}],
        "provenance": {"runId": run_id, "capturedAtUtc": captured},
    }
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_artifacts_registry(client: TestClient, tmp_path: Path) -> None:
    rid = post_model(client, GOLDEN_MODEL)
    make_bundle(tmp_path, "order_bundle", "2000-01-02T00:00:00Z")
    make_bundle(tmp_path, "older_bundle", "2000-01-01T00:00:00Z")
    (tmp_path / "bundles" / "no_manifest").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "shop.yaml").write_text(
        GOLDEN_MODEL.replace("schemaVersion: 1", "metadata: {id: shop-tpl, title: Shop}")
    )
    (tmp_path / "models" / "notes.txt").write_text("not a model")

    body = client.get("/v1/artifacts").json()
    assert body["total"] == 4 and body["skip"] == 0 and body["limit"] == 50
    by_id = {i["id"]: i for i in body["items"]}
    assert set(by_id) == {rid, "order_bundle", "older_bundle", "shop"}
    assert by_id[rid]["type"] == "run" and by_id[rid]["links"]["run"] == f"/v1/runs/{rid}"
    assert by_id["shop"]["title"] == "Shop" and by_id["shop"]["templateId"] == "shop-tpl"
    assert by_id["order_bundle"]["sourceRunId"] == "run_x"
    assert [i["id"] for i in client.get("/v1/artifacts", params={"type": "bundle"}).json()["items"]] == [
        "order_bundle",
        "older_bundle",
    ]
    assert [i["id"] for i in client.get("/v1/artifacts", params={"search": "ORDER"}).json()["items"]] == [
        "order_bundle"
    ]
    assert [i["id"] for i in client.get("/v1/artifacts", params={"templateId": "shop-tpl"}).json()["items"]] == ["shop"]
    after = client.get("/v1/artifacts", params={"type": "bundle", "createdAfter": "2000-01-01T12:00:00Z"}).json()
    assert [i["id"] for i in after["items"]] == ["order_bundle"]
    page = client.get("/v1/artifacts", params={"type": "bundle", "limit": 1, "skip": 1}).json()
    assert [i["id"] for i in page["items"]] == ["older_bundle"] and page["total"] == 2

    run = client.get(f"/v1/artifacts/{rid}").json()
    assert run["type"] == "run" and "manifest.json" in run["files"] and "series/index.json" in run["files"]
    bundle = client.get("/v1/artifacts/order_bundle").json()
    assert bundle["manifest"]["schemaVersion"] == 2
    model = client.get("/v1/artifacts/shop", params={"type": "model"}).json()
    assert "metadata" in model["model"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/artifacts/missing", 404),
        ("/v1/artifacts?type=other", 422),
        ("/v1/artifacts?limit=0", 422),
        ("/v1/artifacts?limit=201", 422),
        ("/v1/artifacts?skip=-1", 422),
        ("/v1/artifacts?createdAfter=soon", 422),
    ],
)
def test_artifacts_failures(client: TestClient, path: str, status: int) -> None:
    assert client.get(path).status_code == status
