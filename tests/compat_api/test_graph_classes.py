"""Issue 14 (dashboard): `GET /v1/runs/{id}/graph` names the run's declared classes (`classes`, [] for a
class-less run), so the dashboard's class selector has its list before any bin arrives — for a live run
from its model, for a finished run from its per-class series (`series/index.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings

ARRIVALS = [
    {"nodeId": "a", "classId": "Beta", "pattern": {"kind": "constant", "ratePerBin": 6}},
    {"nodeId": "a", "classId": "Alpha", "pattern": {"kind": "constant", "ratePerBin": 4}},
]


def model(live: bool, classes: bool = True) -> dict[str, Any]:
    grid: dict[str, Any] = {"binSize": 5, "binUnit": "minutes", "start": "2025-01-01T00:00:00Z"}
    if not live:
        grid["bins"] = 2
    source = {"source": "telemetry"} if live else {"values": [10, 5]}
    body: dict[str, Any] = {
        "grid": grid,
        "nodes": [{"id": "a", "kind": "const", **source}, {"id": "b", "kind": "const", "values": [1, 1]}],
        "topology": {
            "nodes": [
                {"id": "Svc", "semantics": {"arrivals": "a", "served": "a"}},
                {"id": "Other", "semantics": {"arrivals": "b"}},
            ]
        },
    }
    if classes:
        body |= {"classes": [{"id": "Beta"}, {"id": "Alpha"}], "traffic": {"arrivals": ARRIVALS}}
    return body


@pytest.fixture
def c(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, build_context(settings)), base_url="http://127.0.0.1") as client:
        yield client


def test_a_live_class_run_names_its_declared_classes_in_order(c: TestClient) -> None:
    r = c.post("/v1/runs", json={"mode": "live", "model": model(live=True), "options": {"runId": "k"}})
    assert r.status_code == 202, r.text
    graph = c.get("/v1/runs/k/graph").json()
    assert graph["classes"] == ["Beta", "Alpha"]
    assert [n["id"] for n in graph["nodes"]] == ["Svc", "Other"]


def test_a_finished_class_run_names_the_classes_of_its_series(c: TestClient) -> None:
    r = c.post("/v1/runs", json={"model": model(live=False)})
    assert r.status_code == 201, r.text
    graph = c.get(f"/v1/runs/{r.json()['runId']}/graph").json()
    assert graph["classes"] == ["Beta", "Alpha"]
    assert {n["id"] for n in graph["nodes"]} == {"Svc", "Other"}


def test_a_class_less_run_has_an_empty_class_list(c: TestClient) -> None:
    r = c.post("/v1/runs", json={"model": model(live=False, classes=False)})
    assert r.status_code == 201, r.text
    assert c.get(f"/v1/runs/{r.json()['runId']}/graph").json()["classes"] == []
    r = c.post("/v1/runs", json={"mode": "live", "model": model(live=True, classes=False), "options": {"runId": "p"}})
    assert r.status_code == 202, r.text
    assert c.get("/v1/runs/p/graph").json()["classes"] == []
