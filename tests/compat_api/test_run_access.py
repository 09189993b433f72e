"""Run-pattern tokens stay inside their patterns (SPEC §10, issue 12 #3): every run id a request
touches is checked — body ids (compare, overlay base, capture), artifact ids, telemetry bundles'
source runs, new run ids explicit and generated — lists and `/metrics` show only what the token may
see, and `/metrics` needs its own scope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.batch_runs import MODEL_EXAMPLE
from compat_api.compose import build_context
from compat_api.settings import Settings

ADMIN = "tok-admin-11aa"
READ_A = "tok-read-a-22bb"  # read, runs a*
INGEST_A = "tok-ingest-a-33cc"  # ingest, runs a*
INGEST_GENERATED = "tok-ingest-gen-44dd"  # ingest, runs run_* and live_*
READ = "tok-read-55ee"
METRICS = "tok-metrics-66ff"
METRICS_A = "tok-metrics-a-77aa"  # metrics, runs a*
LIVE_MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def simulation(run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    options = {"runId": run_id} if run_id else {}
    return {"mode": "simulation", "model": MODEL_EXAMPLE, "options": options, **extra}


def live(run_id: str | None = None) -> dict[str, Any]:
    return {"mode": "live", "model": LIVE_MODEL, "options": {"runId": run_id} if run_id else {}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tokens = (
        f"{ADMIN}:admin;{READ_A}:read:a*;{INGEST_A}:ingest:a*;{INGEST_GENERATED}:ingest:run_*|live_*;"
        f"{READ}:read;{METRICS}:metrics;{METRICS_A}:metrics:a*"
    )
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), tokens=tokens, fsync=False)
    with TestClient(create_app(settings, build_context(settings))) as c:
        admin = bearer(ADMIN)
        for rid in ("a1", "b2"):
            assert c.post("/v1/runs", json=simulation(rid), headers=admin).status_code == 201
        for rid in ("a_live", "b_live"):
            assert c.post("/v1/runs", json=live(rid), headers=admin).status_code == 202
            frames = [{"bin": 0, "series": "demand", "value": 3.0}]
            assert c.post(f"/v1/runs/{rid}/bins", json=frames, headers=admin).status_code == 202
        for rid in ("a1", "b2"):
            r = c.post("/v1/telemetry/captures", json={"runId": rid, "output": f"{rid}cap"}, headers=admin)
            assert r.status_code == 201, r.text
        yield c


def forbidden(r: Any, run_id: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden" and r.json()["runId"] == run_id, r.text


# ---- reads through bodies and artifact ids ----------------------------------------------------------
def test_compare_checks_both_runs(client: TestClient) -> None:
    h = bearer(READ_A)
    forbidden(client.post("/v1/compare", json={"baseRunId": "a1", "compareRunId": "b2"}, headers=h), "b2")
    forbidden(client.post("/v1/compare", json={"baseRunId": "b2", "compareRunId": "a1"}, headers=h), "b2")
    forbidden(client.post("/v1/compare", json={"baseRunId": "a1", "compareRunId": "b2/scenarios/s1"}, headers=h), "b2")
    assert client.post("/v1/compare", json={"baseRunId": "a1", "compareRunId": "a1"}, headers=h).status_code == 200


def test_artifact_ids_are_checked_against_their_run(client: TestClient) -> None:
    h = bearer(READ_A)
    forbidden(client.get("/v1/artifacts/b2", headers=h), "b2")
    forbidden(client.get("/v1/artifacts/b2cap", headers=h), "b2")  # a bundle captured from b2
    assert client.get("/v1/artifacts/a1", headers=h).json()["id"] == "a1"
    assert client.get("/v1/artifacts/a1cap", headers=h).json()["type"] == "bundle"


# ---- lists and /metrics -------------------------------------------------------------------------------
def test_run_list_shows_only_readable_runs(client: TestClient) -> None:
    body = client.get("/v1/runs", headers=bearer(READ_A)).json()
    ids = sorted(i["runId"] for i in body["items"])
    assert ids and all(rid.startswith("a") for rid in ids) and {"a1", "a_live"} <= set(ids)
    assert body["total"] == len(ids)
    everything = {i["runId"] for i in client.get("/v1/runs", headers=bearer(READ)).json()["items"]}
    assert {"a1", "b2", "a_live", "b_live"} <= everything


def test_artifact_list_shows_only_readable_runs_and_their_bundles(client: TestClient) -> None:
    body = client.get("/v1/artifacts", headers=bearer(READ_A)).json()
    ids = {i["id"] for i in body["items"]}
    assert {"a1", "a1cap"} <= ids and not ids & {"b2", "b2cap"}
    assert body["total"] == len(body["items"])
    assert {"b2", "b2cap"} <= {i["id"] for i in client.get("/v1/artifacts", headers=bearer(READ)).json()["items"]}


def test_metrics_needs_its_own_scope_and_shows_only_visible_runs(client: TestClient) -> None:
    r = client.get("/metrics", headers=bearer(READ))
    assert r.status_code == 403 and r.json()["scope"] == "metrics", r.text
    assert client.get("/metrics", headers=bearer(INGEST_A)).status_code == 403
    for token in (METRICS, ADMIN):
        text = client.get("/metrics", headers=bearer(token)).text
        assert 'run_id="a_live"' in text and 'run_id="b_live"' in text
    limited = client.get("/metrics", headers=bearer(METRICS_A)).text
    assert 'run_id="a_live"' in limited and 'run_id="b_live"' not in limited
    assert "# HELP flowtime_ingested_frames_total" in limited


# ---- creating runs -------------------------------------------------------------------------------------
def test_explicit_ids_outside_the_patterns_are_refused(client: TestClient, tmp_path: Path) -> None:
    h = bearer(INGEST_A)
    forbidden(client.post("/v1/runs", json=simulation("b9"), headers=h), "b9")
    forbidden(client.post("/v1/runs", json=live("b9"), headers=h), "b9")
    forbidden(client.post("/v1/runs", json=simulation("b9", options={"runId": "b9", "async": True}), headers=h), "b9")
    assert client.get("/v1/runs/b9", headers=bearer(ADMIN)).status_code == 404
    r = client.post("/v1/runs", json=simulation("a9"), headers=h)
    assert r.status_code == 201 and r.json()["runId"] == "a9", r.text
    assert client.post("/v1/runs", json=live("a_live2"), headers=h).status_code == 202


def test_generated_ids_outside_the_patterns_are_refused_with_a_hint(client: TestClient) -> None:
    h = bearer(INGEST_A)
    before = {i["runId"] for i in client.get("/v1/runs", headers=bearer(ADMIN)).json()["items"]}
    deterministic, background = simulation(options={"deterministicRunId": True}), simulation(options={"async": True})
    bodies = (simulation(), live(), deterministic, background)
    for body in bodies:
        r = client.post("/v1/runs", json=body, headers=h)
        assert r.status_code == 403 and r.json()["hint"] == "options.runId", r.text
        assert "explicit id" in r.json()["message"]
    r = client.post("/v1/run", content=MODEL_EXAMPLE, headers={**h, "content-type": "application/x-yaml"})
    assert r.status_code == 403 and r.json()["runId"].startswith("run_"), r.text
    after = {i["runId"] for i in client.get("/v1/runs", headers=bearer(ADMIN)).json()["items"]}
    assert after == before  # nothing was created


def test_generated_ids_inside_the_patterns_are_fine(client: TestClient) -> None:
    h = bearer(INGEST_GENERATED)
    r = client.post("/v1/runs", json=simulation(), headers=h)
    assert r.status_code == 201 and r.json()["runId"].startswith("run_"), r.text
    r = client.post("/v1/runs", json=simulation(options={"deterministicRunId": True}), headers=h)
    assert r.status_code == 201 and r.json()["runId"].startswith("run_deterministic_"), r.text
    r = client.post("/v1/runs", json=live(), headers=h)
    assert r.status_code == 202 and r.json()["runId"].startswith("live_"), r.text
    r = client.post("/v1/run", content=MODEL_EXAMPLE, headers={**h, "content-type": "application/x-yaml"})
    assert r.status_code == 200 and r.json()["runId"].startswith("run_"), r.text


def test_overlays_and_telemetry_runs_check_the_runs_they_read(client: TestClient) -> None:
    h = bearer(INGEST_A)
    overlay = {"mode": "overlay", "baseRunId": "b2", "overlays": [], "options": {"runId": "a20"}}
    forbidden(client.post("/v1/runs", json=overlay, headers=h), "b2")
    r = client.post("/v1/runs", json={**overlay, "baseRunId": "a1"}, headers=h)
    assert r.status_code == 201 and r.json()["runId"] == "a20", r.text
    telemetry = {**simulation("a21"), "mode": "telemetry", "telemetry": {"bundle": "b2cap"}}
    forbidden(client.post("/v1/runs", json=telemetry, headers=h), "b2")


def test_captures_check_the_run_and_the_bundle_they_replace(client: TestClient) -> None:
    h = bearer(INGEST_A)
    forbidden(client.post("/v1/telemetry/captures", json={"runId": "b2", "output": "x1"}, headers=h), "b2")
    body = {"runId": "a1", "output": "b2cap", "overwrite": True}
    forbidden(client.post("/v1/telemetry/captures", json=body, headers=h), "b2")
    r = client.post("/v1/telemetry/captures", json={"runId": "a1", "output": "a1cap2"}, headers=h)
    assert r.status_code == 201, r.text


def test_an_explicit_batch_id_that_is_taken_is_409(client: TestClient) -> None:
    for body in (simulation("a1"), simulation("a_live")):
        r = client.post("/v1/runs", json=body, headers=bearer(ADMIN))
        assert r.status_code == 409 and r.json()["runId"] == body["options"]["runId"], r.text


def test_auth_off_creates_runs_as_before(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", fsync=False)
    with TestClient(create_app(settings, build_context(settings))) as c:
        assert c.post("/v1/runs", json=simulation()).json()["runId"].startswith("run_")
        assert c.post("/v1/runs", json=live()).json()["runId"].startswith("live_")
        assert c.post("/v1/runs", json=simulation("mine")).json()["runId"] == "mine"
        assert c.get("/metrics").status_code == 200
