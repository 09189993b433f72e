"""Auth on every HTTP endpoint (SPEC §10, §12.15) and `DELETE /v1/runs/{id}` (§12.9), on the full service.

The endpoint list is `app.routes`, so a route added later is covered; each route's scope is read
from the endpoint table of docs/security.md (a route missing there fails the test). Each endpoint
refuses a missing, wrong, expired or under-scoped token (401 / 401 / 401 / 403) and accepts the
right one (anything but 401/403; the request is otherwise empty, so 4xx answers are expected). The
WebSocket gets the same checks against a real server in `tests/integration/test_ws_auth_service.py`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from security_doc import endpoint_rows, flat_routes
from starlette.routing import Mount

from compat_api.app import ROUTERS, create_app
from compat_api.batch_runs import MODEL_EXAMPLE
from compat_api.compose import build_context
from compat_api.settings import Settings

ADMIN_ROUTER = "compat_api.routes.admin"
STREAM_PATH = "/v1/runs/{run_id}/stream"
TOKENS = {
    "read": "tok-read-7f3a",
    "ingest": "tok-ingest-91bc",
    "admin": "tok-admin-c04e",
    "metrics": "tok-metrics-2b9d",
}
RUN_LIMITED = "tok-read-a-only-5d2e"  # read, runs matching a*
EXPIRED = "tok-expired-admin-e8b1"  # admin, expired in 2020
WRONG = "tok-nobody-0000"
# a scope that does not grant the endpoint's (read has none below it; metrics is implied by admin only)
LOWER = {"ingest": "read", "admin": "ingest", "metrics": "ingest"}
PATH_VALUES = {"run_id": "a1", "series_id": "served", "template_id": "http-service", "artifact_id": "a1", "fmt": "csv"}
LIVE_MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: cap, kind: const, values: [10, 10, 10, 10, 10, 10, 10, 10]}
  - {id: served, kind: expr, expr: "MIN(demand, cap)"}
"""


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # the route path, e.g. /v1/runs/{run_id}
    scope: str | None  # None: open

    @property
    def path(self) -> str:
        return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x1"), self.template)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def scope_of(method: str, path: str) -> str | None:
    """The scope docs/security.md gives the endpoint (None: open)."""
    row = endpoint_rows().get((method, path))
    assert row is not None, f"{method} {path}: no row in docs/security.md — add the route to its endpoint table"
    return row.scope


def make_app(settings: Settings) -> FastAPI:
    app = create_app(settings, build_context(settings))
    if ADMIN_ROUTER not in ROUTERS:  # until compat_api.app registers it
        app.include_router(import_module(ADMIN_ROUTER).router)
    return app


def http_endpoints(app: FastAPI) -> list[Endpoint]:
    out = []
    for route, path, methods in flat_routes(app):
        if isinstance(route, APIRoute):
            out += [Endpoint(m, path, scope_of(m, path)) for m in sorted(methods - {"HEAD"})]
        elif isinstance(route, APIWebSocketRoute):
            assert path == STREAM_PATH, f"a WebSocket route without auth tests: {path}"
        elif isinstance(route, Mount):
            assert path == "/dashboard", f"a mount without auth tests: {path}"
        # other starlette routes: FastAPI's own /openapi.json and /docs pages
    return out


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    expired = [{"token": EXPIRED, "scopes": ["admin"], "expires": "2020-01-01T00:00:00Z", "name": "old"}]
    (tmp_path / "tokens.json").write_text(json.dumps(expired))
    tokens = ";".join(f"{t}:{s}" for s, t in TOKENS.items()) + f";{RUN_LIMITED}:read:a*"
    values = {"data_dir": tmp_path / "data", "tokens": tokens, "tokens_file": tmp_path / "tokens.json", "fsync": False}
    return Settings.model_validate(values)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(settings)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(c: TestClient, ep: Endpoint, token: str | None) -> Any:
    return c.request(ep.method, ep.path, headers=bearer(token) if token is not None else {})


def test_the_route_table_is_complete(client: TestClient) -> None:
    eps = {str(e): e.scope for e in http_endpoints(client.app)}  # type: ignore[arg-type]
    for expected, scope in {
        "GET /v1/runs/{run_id}": "read",
        "POST /v1/runs": "ingest",
        "POST /v1/runs/{run_id}/bins": "ingest",
        "PATCH /v1/runs/{run_id}/model": "admin",
        "DELETE /v1/runs/{run_id}": "admin",
        "POST /v1/compare": "read",
        "GET /metrics": "metrics",
        "GET /healthz": None,
    }.items():
        assert eps[expected] == scope, expected


def test_every_endpoint_refuses_missing_wrong_expired_and_under_scoped_tokens(client: TestClient) -> None:
    checked = 0
    for ep in http_endpoints(client.app):  # type: ignore[arg-type]
        if ep.scope is None:
            continue
        for token, want, code in (
            (None, 401, "unauthenticated"),
            (WRONG, 401, "unauthenticated"),
            (EXPIRED, 401, "unauthenticated"),
        ):
            r = call(client, ep, token)
            assert r.status_code == want, f"{ep} with {token!r}: {r.status_code} {r.text}"
            assert r.json()["error"] == code
        lower = LOWER.get(ep.scope)
        if lower is not None:
            r = call(client, ep, TOKENS[lower])
            assert r.status_code == 403, f"{ep} with a {lower} token: {r.status_code} {r.text}"
            assert r.json() == {"error": "forbidden", "message": r.json()["message"], "scope": ep.scope}
        checked += 1
    assert checked >= 20


def test_every_endpoint_accepts_the_right_token(client: TestClient) -> None:
    for ep in http_endpoints(client.app):  # type: ignore[arg-type]
        tokens = [None] if ep.scope is None else [TOKENS[ep.scope], TOKENS["admin"]]  # admin ⊇ everything
        for token in tokens:
            r = call(client, ep, token)
            assert r.status_code not in (401, 403), f"{ep} with the {ep.scope} token: {r.status_code} {r.text}"


def test_open_endpoints_and_the_dashboard_need_no_token(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    for ep in http_endpoints(client.app):  # type: ignore[arg-type]
        if ep.scope is None:
            assert call(client, ep, WRONG).status_code == 200, str(ep)  # a bad token is ignored, not refused
    dash = [r for r, _, _ in flat_routes(client.app) if isinstance(r, Mount)]  # type: ignore[arg-type]
    if dash:
        files = sorted(p.name for p in Path(dash[0].app.directory).iterdir() if p.is_file())  # type: ignore[attr-defined]
        assert client.get(f"/dashboard/{files[0]}").status_code == 200


def test_a_token_limited_to_runs_a_star_reads_a1_but_not_b1(client: TestClient) -> None:
    admin = bearer(TOKENS["admin"])
    for rid in ("a1", "b1"):
        r = client.post(
            "/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": rid}}, headers=admin
        )
        assert r.status_code == 202, r.text
    limited = bearer(RUN_LIMITED)
    assert client.get("/v1/runs/a1", headers=limited).json()["runId"] == "a1"
    r = client.get("/v1/runs/b1", headers=limited)
    assert r.status_code == 403 and r.json()["error"] == "forbidden" and r.json()["runId"] == "b1"
    for ep in http_endpoints(client.app):  # type: ignore[arg-type]
        if ep.scope == "read" and "{run_id}" in ep.template:
            on_b = Endpoint(ep.method, ep.template.replace("{run_id}", "b1"), ep.scope)
            assert call(client, on_b, RUN_LIMITED).status_code == 403, str(ep)
            assert call(client, ep, RUN_LIMITED).status_code not in (401, 403), str(ep)
    # a list shows only the runs the token may read; creating a run needs ingest whatever the id
    assert [i["runId"] for i in client.get("/v1/runs", headers=limited).json()["items"]] == ["a1"]
    r = client.post("/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": "a2"}}, headers=limited)
    assert r.status_code == 403


def test_tokens_never_reach_the_logs_or_the_answers(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [*TOKENS.values(), RUN_LIMITED, EXPIRED, WRONG]
    bodies = []
    for token in secrets:
        for method, path in (
            ("GET", "/v1/runs"),
            ("GET", "/v1/runs/nope"),
            ("POST", "/v1/runs/nope/bins"),
            ("DELETE", "/v1/runs/nope"),
            ("GET", "/metrics"),
        ):
            r = client.request(
                method, path, headers={**bearer(token), "content-type": "application/json"}, content=b"{not json"
            )
            bodies.append(r.text)
    logged = caplog.text + "".join(str(rec.__dict__) for rec in caplog.records)
    assert caplog.records, "expected some log records to inspect"
    for token in secrets:
        assert token not in logged
        assert all(token not in b for b in bodies)


def test_delete_stops_a_live_run_and_removes_its_folder(client: TestClient, settings: Settings) -> None:
    admin = bearer(TOKENS["admin"])
    r = client.post("/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": "d1"}}, headers=admin)
    assert r.status_code == 202
    frames = [{"bin": b, "series": "demand", "value": v} for b, v in enumerate([4.0, 12.0, 7.0])]
    assert client.post("/v1/runs/d1/bins", json=frames, headers=admin).status_code == 202
    folder = settings.data_dir / "runs" / "d1"
    assert folder.is_dir()
    r = client.delete("/v1/runs/d1", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"runId": "d1", "deleted": True, "status": "failed", "previousStatus": "live"}
    assert not folder.exists()
    assert client.get("/v1/runs/d1", headers=admin).status_code == 404
    assert client.post("/v1/runs/d1/bins", json=frames, headers=admin).status_code == 404
    assert "d1" not in [i["runId"] for i in client.get("/v1/runs", headers=admin).json()["items"]]
    assert client.delete("/v1/runs/d1", headers=admin).status_code == 404
    # the id is free again
    r = client.post("/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": "d1"}}, headers=admin)
    assert r.status_code == 202


def test_delete_removes_a_finished_run_and_a_closed_live_run(client: TestClient, settings: Settings) -> None:
    admin = bearer(TOKENS["admin"])
    r = client.post("/v1/runs", json={"mode": "simulation", "model": MODEL_EXAMPLE}, headers=admin)
    assert r.status_code == 201
    rid = r.json()["runId"]
    assert (settings.data_dir / "runs" / rid / "manifest.json").is_file()
    r = client.delete(f"/v1/runs/{rid}", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert not (settings.data_dir / "runs" / rid).exists()
    assert client.get(f"/v1/runs/{rid}/state?binIndex=0", headers=admin).status_code == 404

    client.post("/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": "c1"}}, headers=admin)
    assert client.post("/v1/runs/c1/close", headers=admin).json()["status"] == "completed"
    r = client.delete("/v1/runs/c1", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert not (settings.data_dir / "runs" / "c1").exists()


def test_delete_unknown_or_unsafe_ids_is_404(client: TestClient, settings: Settings) -> None:
    admin = bearer(TOKENS["admin"])
    (settings.data_dir / "runs" / "half").mkdir(parents=True)  # no manifest: not a run
    for rid in ("nope", "half", "..", "%2e%2e", "a%2Fb"):
        r = client.delete(f"/v1/runs/{rid}", headers=admin)
        assert r.status_code == 404, rid
        assert r.json()["error"] == "not_found"
    assert (settings.data_dir / "runs" / "half").is_dir()
    assert (settings.data_dir / "runs").is_dir()
