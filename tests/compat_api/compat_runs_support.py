"""Shared helpers for the run, state, compare, validate and artifact route tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from compat_api.app import ROUTERS, create_app
from compat_api.context import AppContext
from compat_api.settings import Settings

MY_ROUTERS = (
    "compat_api.routes.runs",
    "compat_api.routes.state",
    "compat_api.routes.compare",
    "compat_api.routes.validate",
    "compat_api.routes.artifacts",
)

# 4 bins of 5 minutes. Svc: a service with attempts; Q: a queue with slaMin 5 (see test_routes_state).
GOLDEN_MODEL = """\
schemaVersion: 1
grid: {bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arrivals, kind: const, values: [10, 20, 30, 40]}
  - {id: capacity, kind: const, values: [25, 25, 25, 25]}
  - {id: attempts, kind: const, values: [10, 25, 30, 25]}
  - {id: served, kind: expr, expr: "MIN(arrivals, capacity)"}
  - {id: q_out, kind: const, values: [5, 10, 20, 40]}
  - {id: backlog, kind: serviceWithBuffer, inflow: served, outflow: q_out, initial: 0}
topology:
  nodes:
    - id: Svc
      kind: service
      semantics: {arrivals: arrivals, served: served, capacity: capacity, attempts: attempts}
    - id: Q
      kind: queue
      semantics: {arrivals: served, served: q_out, queueDepth: backlog, slaMin: 5}
  edges:
    - {from: Svc, to: Q}
"""

SERIES_MODEL = """\
grid: {bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, values: [%s]}
  - {id: flat, kind: const, values: [7, 7, 7, 7]}
"""


def series_model(values: list[float], bin_size: int = 5, start: str = "2025-10-07T00:00:00Z") -> str:
    text = SERIES_MODEL % ", ".join(str(v) for v in values)
    return text.replace("binSize: 5", f"binSize: {bin_size}").replace("2025-10-07T00:00:00Z", start)


@contextmanager
def make_client(data_dir: Path, live: Any = None, **settings: Any) -> Iterator[TestClient]:
    ctx = AppContext(Settings(data_dir=data_dir, fsync=False, **settings))
    ctx.live = live
    app = create_app(ctx.settings, ctx)
    for name in MY_ROUTERS:
        if name not in ROUTERS:
            app.include_router(import_module(name).router)
    with TestClient(app) as client:
        yield client


def post_model(client: TestClient, model: str, **body: Any) -> str:
    r = client.post("/v1/runs", json={"mode": "simulation", "model": model, **body})
    assert r.status_code == 201, r.text
    run_id: str = r.json()["runId"]
    return run_id
