"""Export and capture routes (SPEC §8, §5): success and failure of each endpoint, scopes, confinement."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from compat_runs_support import GOLDEN_MODEL, MY_ROUTERS, post_model
from fastapi.testclient import TestClient

from compat_api.app import ROUTERS, create_app
from compat_api.auth import TokenAuthenticator, parse_tokens_setting
from compat_api.context import AppContext
from compat_api.settings import Settings
from tests.duckdb_query import duckdb_fetchall
from tests.snapshot_writer.class_run import ROUTER_MIXED

ROUTER = "compat_api.routes.exports"


@contextmanager
def client_for(data_dir: Path, tokens: str | None = None) -> Iterator[TestClient]:
    ctx = AppContext(Settings(data_dir=data_dir, fsync=False, port=8080))
    if tokens is not None:
        ctx.auth = TokenAuthenticator(parse_tokens_setting(tokens))
    app = create_app(ctx.settings, ctx)
    for name in (*MY_ROUTERS, ROUTER):
        if name not in ROUTERS:
            app.include_router(import_module(name).router)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path / "data") as c:
        yield c


def test_post_export_writes_every_format(client: TestClient, tmp_path: Path) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    r = client.post(f"/v1/runs/{run_id}/export")
    assert r.status_code == 201, r.text
    body = r.json()
    assert sorted(body["files"]) == ["csv", "ndjson", "parquet"] and body["binMinutes"] == 5
    run_dir = tmp_path / "data" / "runs" / run_id
    for fmt, info in body["files"].items():
        assert (run_dir / info["path"]).stat().st_size == info["bytes"] > 0
        assert info["url"] == f"/v1/runs/{run_id}/export/{fmt}"
    catalog = orjson.loads((run_dir / "export" / "catalog.json").read_bytes())
    assert body["catalog"]["body"] == catalog and body["catalog"]["rows"] == catalog["rows"] > 0


def test_post_export_of_an_unknown_run_is_404(client: TestClient) -> None:
    r = client.post("/v1/runs/run_nope/export")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_get_export_generates_on_demand_and_streams(client: TestClient, tmp_path: Path) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    csv = client.get(f"/v1/runs/{run_id}/export/csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "time_utc,bin_index,node,metric,series_id,value"
    assert lines[1] == "2025-10-07T00:00:00Z,0,Svc,arrivals,arrivals@ARRIVALS@DEFAULT,10"
    ndjson = client.get(f"/v1/runs/{run_id}/export/ndjson")
    assert ndjson.status_code == 200 and ndjson.headers["content-type"] == "application/x-ndjson"
    rows = [orjson.loads(line) for line in ndjson.text.splitlines()]
    assert len(rows) == len(lines) - 1 and rows[0]["value"] == 10
    parquet = client.get(f"/v1/runs/{run_id}/export/parquet")
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == len(rows)
    frame = pd.read_parquet(io.BytesIO(parquet.content))
    assert frame["node"].iloc[0] == "Svc"
    (tmp_path / "got.parquet").write_bytes(parquet.content)
    duck = duckdb_fetchall(f"SELECT count(*) FROM '{tmp_path / 'got.parquet'}' WHERE node = 'Q'")
    assert duck[0][0] == (frame["node"] == "Q").sum() > 0


@pytest.mark.parametrize(
    ("path", "code"),
    [("/v1/runs/run_nope/export/csv", "not_found"), ("/v1/runs/{run}/export/xlsx", "unknown_format")],
)
def test_get_export_failures_are_404(client: TestClient, path: str, code: str) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    r = client.get(path.format(run=run_id))
    assert r.status_code == 404 and r.json()["error"] == code


def test_capture_creates_a_bundle_and_repeats_identically(client: TestClient, tmp_path: Path) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    gaps = {"gaps": [{"nodeId": "Svc", "metric": "arrivals", "bins": [1], "fill": "nan"}]}
    r = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "day1", "gaps": gaps})
    assert r.status_code == 201, r.text
    body = r.json()
    folder = tmp_path / "data" / "bundles" / "day1"
    assert body["written"] and body["path"] == "bundles/day1"
    assert orjson.loads((folder / "manifest.json").read_bytes()) == body["manifest"]
    assert body["manifest"]["schemaVersion"] == 2
    assert [w["code"] for w in body["manifest"]["warnings"]] == ["nan_fill"]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "day1", "gaps": gaps})
    assert again.status_code == 200 and not again.json()["written"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    other = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "day1"})
    assert other.status_code == 409 and other.json()["error"] == "bundle_exists"
    forced = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "day1", "overwrite": True})
    assert forced.status_code == 201 and forced.json()["manifest"]["warnings"] == []


def test_capture_dry_run_and_default_output(client: TestClient, tmp_path: Path) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    dry = client.post("/v1/telemetry/captures", json={"runId": run_id, "dryRun": True})
    assert dry.status_code == 200 and dry.json()["dryRun"] and not dry.json()["written"]
    assert not (tmp_path / "data" / "bundles" / run_id).exists()
    real = client.post("/v1/telemetry/captures", json={"runId": run_id})
    assert real.status_code == 201 and (tmp_path / "data" / "bundles" / run_id / "manifest.json").is_file()
    assert real.json()["manifest"] == dry.json()["manifest"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"runId": "run_nope"}, 404, "not_found"),
        ({"runId": "{run}", "output": "../escape"}, 400, "invalid_bundle_path"),
        ({"runId": "{run}", "output": "/tmp/abs"}, 400, "invalid_bundle_path"),
        ({"runId": "{run}", "output": "."}, 400, "invalid_bundle_path"),
        ({"runId": "{run}", "output": "two\nlines"}, 400, "invalid_bundle_path"),  # issue 12 #10
        ({"runId": "{run}", "output": "x" * 256}, 400, "invalid_bundle_path"),  # issue 12 #9: was a 500
        ({"runId": "{run}", "overwrite": "yes"}, 422, "invalid_request"),  # issue 12 #10: only true overwrites
        ({"runId": "{run}", "dryRun": 1}, 422, "invalid_request"),
        ({"runId": "{run}", "gaps": [{"nodeId": "Nope", "bins": [0]}]}, 422, "invalid_gaps"),
        ({"runId": "{run}", "gaps": [{"nodeId": "Svc", "bins": [99]}]}, 422, "invalid_gaps"),
        ({"output": "x"}, 422, "invalid_request"),
        ({"runId": "{run}", "surprise": 1}, 422, "invalid_request"),
    ],
)
def test_capture_failures(client: TestClient, tmp_path: Path, body: dict[str, object], status: int, code: str) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    if body.get("runId") == "{run}":
        body = {**body, "runId": run_id}
    r = client.post("/v1/telemetry/captures", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert not (tmp_path / "escape").exists() and not Path("/tmp/abs").exists()


def test_a_symlink_cannot_lead_a_capture_out_of_the_bundles_folder(client: TestClient, tmp_path: Path) -> None:
    run_id = post_model(client, GOLDEN_MODEL)
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "bundles" / "link").symlink_to(tmp_path / "outside")
    r = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "link/b"})
    assert r.status_code == 400 and not list((tmp_path / "outside").iterdir())


def test_scopes(tmp_path: Path) -> None:
    with client_for(tmp_path / "data", tokens="w:read,ingest;r:read;narrow:read,ingest:other*") as c:
        writer = {"Authorization": "Bearer w"}
        r = c.post("/v1/runs", json={"mode": "simulation", "model": GOLDEN_MODEL}, headers=writer)
        run_id = r.json()["runId"]
        reader = {"Authorization": "Bearer r"}
        assert c.post(f"/v1/runs/{run_id}/export").status_code == 401
        assert c.post(f"/v1/runs/{run_id}/export", headers=reader).status_code == 403
        assert c.get(f"/v1/runs/{run_id}/export/csv", headers=reader).status_code == 200
        assert c.post("/v1/telemetry/captures", json={"runId": run_id}, headers=reader).status_code == 403
        narrow = {"Authorization": "Bearer narrow"}
        assert c.post("/v1/telemetry/captures", json={"runId": run_id}, headers=narrow).status_code == 403
        assert c.post("/v1/telemetry/captures", json={"runId": run_id}, headers=writer).status_code == 201


def test_a_class_run_exports_class_columns_and_captures_class_files(client: TestClient) -> None:
    run_id = post_model(client, ROUTER_MIXED)  # issue 14: SPEC §14 per-class columns; bundles keep classId
    csv = client.get(f"/v1/runs/{run_id}/export/csv").text.splitlines()
    assert csv[0] == "time_utc,bin_index,node,metric,series_id,value,value@Alpha,value@Beta"
    assert "2025-01-01T00:00:00Z,0,General,arrivals,general@GENERAL@DEFAULT,45,0,45" in csv
    parquet = pq.read_table(io.BytesIO(client.get(f"/v1/runs/{run_id}/export/parquet").content))
    airport = parquet.filter(pc.equal(parquet.column("node"), "Airport")).slice(0, 1).to_pylist()[0]
    assert (airport["value"], airport["value@Alpha"], airport["value@Beta"]) == (40, 40, 0)
    r = client.post("/v1/telemetry/captures", json={"runId": run_id, "output": "classes"})
    assert r.status_code == 201, r.text
    files = {(f["nodeId"], f["metric"], f["classId"]): f["path"] for f in r.json()["manifest"]["files"]}
    assert files[("General", "arrivals", "Beta")] == "General_arrivals_Beta.csv"
    assert files[("Airport", "served", "Alpha")] == "Airport_served_Alpha.csv" and len(files) == 12
