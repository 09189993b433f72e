"""Schemathesis against the app's own OpenAPI, in process (ASGI), with auth off (loopback) and on
(each case with an admin, a pattern-limited read, an ingest or no token): SPEC §8, issue 12.

Every documented operation gets a bounded number of generated requests (valid and invalid). Checks:
no 5xx for any input (`not_a_server_error`), every response matches the schema documented for
its status code (`response_schema_conformance`, which also covers the `{"error", "message"}` body of
every 4xx) and carries a documented content type (`content_type_conformance`). The only route
left out is the WebSocket stream, which is not in the OpenAPI document.

Generated run ids are mostly unknown (404 paths); `map_path_parameters` points a share of them at a
finished run and a live run seeded in the fixture, so the run routes are also exercised on real data.
DELETE and close keep their generated ids, so they cannot remove the seeded runs.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from compat_api.app import ROUTERS, create_app
from compat_api.batch_runs import MODEL_EXAMPLE
from compat_api.compose import build_context
from compat_api.settings import Settings
from tests.fuzz_counts import count

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
LIVE_MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: cap, kind: const, values: [10, 10, 10, 10, 10, 10, 10, 10]}
  - {id: served, kind: expr, expr: "MIN(demand, cap)"}
topology:
  nodes:
    - {id: Svc, kind: service, semantics: {arrivals: demand, served: served, capacity: cap}}
"""
LIVE_RUN = "live-st"
ADMIN_ROUTER = "compat_api.routes.admin"
SEEDED: list[str] = []  # finished run id, live run id (filled by the fixture)
DESTRUCTIVE = ("DELETE", "/close")


def make_app(settings: Settings) -> Any:
    """The full service app; the admin router is added here until `compat_api.app` registers it."""
    app = create_app(settings, build_context(settings))
    if ADMIN_ROUTER not in ROUTERS:
        app.include_router(import_module(ADMIN_ROUTER).router)
    return app


def seed(client: Any, headers: dict[str, str]) -> None:
    finished = client.post(
        "/v1/runs",
        json={"mode": "simulation", "model": MODEL_EXAMPLE, "options": {"deterministicRunId": True}},
        headers=headers,
    )
    assert finished.status_code == 201, finished.text
    live = client.post(
        "/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": LIVE_RUN}}, headers=headers
    )
    assert live.status_code == 202, live.text
    frames = [{"bin": b, "series": "demand", "value": v} for b, v in enumerate([12, 8, 15, 9])]
    assert client.post(f"/v1/runs/{LIVE_RUN}/bins", json=frames, headers=headers).status_code == 202
    SEEDED[:] = [finished.json()["runId"], LIVE_RUN]


# NDJSON ingest bodies are text on the wire (one JSON object per line).
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schemathesis.serializer.alias("application/x-flowtime-columns+ndjson", "text/plain")
schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")
# The document comes from an app that is never started; requests go to the started one (`app=`).
schema = schemathesis.openapi.from_dict(
    make_app(Settings.model_validate({"data_dir": Path("unused-data-dir")})).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    database="none",
    deterministic=True,
)


@schema.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    op = context.operation
    run_id = (path_parameters or {}).get("run_id")
    if path_parameters is None or not SEEDED or not isinstance(run_id, str) or op is None:
        return path_parameters
    if any(d in f"{op.method.upper()} {op.path}" for d in DESTRUCTIVE):
        return path_parameters
    pick = zlib.crc32(run_id.encode()) % 4  # deterministic: a quarter each on the finished and live run
    if pick < 2:
        path_parameters["run_id"] = SEEDED[pick]
        if "series_id" in path_parameters and pick == 0:
            path_parameters["series_id"] = "served"
    return path_parameters


# With auth on, each case carries one of these (picked from the case's own hash): an admin token, a
# read token limited to `a*` (403s on most runs), an ingest token, or none (401).
TOKENS = "fuzz-admin:admin;fuzz-read-a:read:a*;fuzz-ingest:ingest"
BEARERS = ("fuzz-admin", "fuzz-read-a", "fuzz-ingest", None)


@pytest.fixture(params=["auth-off", "auth-on"])
def live_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, bool]]:
    """A started, seeded app per operation: schemathesis ends an app's lifespan with each test item."""
    auth = request.param == "auth-on"
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "fsync": False}
    if auth:
        values["tokens"] = TOKENS
    app = make_app(Settings.model_validate(values))
    with asgi.get_client(app) as client:  # starts the app's lifespan on schemathesis' shared event loop
        seed(client, {"Authorization": "Bearer fuzz-admin"} if auth else {})
    yield app, auth
    asgi.shutdown_lifespans()
    SEEDED.clear()


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # one server per operation, on purpose
def test_api_conforms_to_its_openapi(case: schemathesis.Case[Any], live_app: tuple[Any, bool]) -> None:
    app, auth = live_app
    headers: dict[str, str] = {}
    if auth and (bearer := BEARERS[zlib.crc32(repr(case).encode()) % len(BEARERS)]) is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    count(f"stateless cases ({'auth on' if auth else 'auth off'})")
    before = fingerprint(app)
    response = case.call(app=app, base_url=f"http://{asgi.HOST}", headers=headers)
    case.validate_response(response, checks=CHECKS)
    if 400 <= response.status_code < 500:  # a refused request changes nothing
        count("refused requests checked for no change")
        assert fingerprint(app) == before, (case.operation.label, response.status_code, response.text)


def fingerprint(app: Any) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the seeded live run's counters, the run folders
    on disk (and their manifests), and the async runs."""
    ctx = app.state.ctx
    live = ctx.live.detail(LIVE_RUN) if ctx.live is not None and ctx.live.knows(LIVE_RUN) else {}
    counters = tuple(live.get(k) for k in ("seq", "lastBin", "watermark", "revision", "modelRevision", "status"))
    runs_dir = Path(ctx.settings.data_dir) / "runs"
    folders = sorted(
        (p.name, (p / "manifest.json").stat().st_mtime_ns if (p / "manifest.json").exists() else 0)
        for p in (runs_dir.iterdir() if runs_dir.is_dir() else ())
        if not p.name.startswith(".")
    )
    return counters, tuple(folders), tuple(ctx.pending_runs)


def test_openapi_documents_every_http_route(tmp_path: Path) -> None:
    """Every HTTP route but the dashboard is in the document, with an example for its 2xx answer."""
    settings = Settings.model_validate({"data_dir": tmp_path / "data"})
    app = make_app(settings)
    doc = app.openapi()
    missing = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ok = [r for code, r in op["responses"].items() if code.startswith("2")]
            has_example = any(
                "example" in m or "examples" in m or m.get("schema", {}).get("$ref")
                for r in ok
                for m in r.get("content", {}).values()
            )
            if not has_example:
                missing.append(f"{method.upper()} {path}")
    assert missing == []


# Inputs that once answered 500, found by probing beyond the generated cases.
LIVE_CREATE = {"mode": "live", "model": LIVE_MODEL}
BAD_INPUTS = [
    pytest.param(
        "POST", "/v1/runs", {**LIVE_CREATE, "options": {"runId": "o1", "graceBins": None}}, id="graceBins-null"
    ),
    pytest.param(
        "POST", "/v1/runs", {**LIVE_CREATE, "options": {"runId": "o2", "snapshotEverySeconds": "x"}}, id="seconds-str"
    ),
    pytest.param(
        "POST", "/v1/runs", {**LIVE_CREATE, "options": {"runId": "o3", "idleCloseSeconds": -1}}, id="idle-negative"
    ),
    pytest.param(
        "POST",
        f"/v1/runs/{LIVE_RUN}/bins",
        {"bin": 1, "series": {"a": 1}, "value": 1},
        id="frame-series-object",
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_INPUTS)
def test_bad_inputs_answer_structured_4xx(tmp_path: Path, method: str, path: str, body: Any) -> None:
    settings = Settings.model_validate({"data_dir": tmp_path / "data", "fsync": False})
    with TestClient(make_app(settings), raise_server_exceptions=False) as c:
        assert c.post("/v1/runs", json={**LIVE_CREATE, "options": {"runId": LIVE_RUN}}).status_code == 202
        r = c.request(method, path, json=body)
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()) >= {"error", "message"}
