"""Stateful schemathesis (issue 12 fuzzing): sequences of calls that follow the OpenAPI links from
`POST /v1/runs` / `POST /v1/run` to the operations on the new run (`compat_api/openapi_links.py`),
so generated requests reach real finished and live runs instead of 404s. Run with auth off and
with auth on (an admin token); every answer must be < 500 and match its documented schema."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings
from tests.fuzz_counts import count

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
ADMIN = "stateful-admin-token"
APP: list[Any] = []  # the started app the machine calls (set by the fixture)
HEADERS: dict[str, str] = {}

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schemathesis.serializer.alias("application/x-flowtime-columns+ndjson", "text/plain")
schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")
_doc_app = create_app(*(lambda s: (s, build_context(s)))(Settings.model_validate({"data_dir": Path("unused")})))
# The run operations only: every other one is covered statelessly (test_openapi_schemathesis.py), and
# here the machine should spend its steps on creates and the operations linked from them.
schema = schemathesis.openapi.from_dict(_doc_app.openapi()).include(path_regex=r"^/v1/runs")
schema.config.generation.update(database="none", deterministic=True)


LIVE_MODEL = """
grid: {binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
topology:
  nodes:
    - {id: Svc, kind: service, semantics: {arrivals: demand, served: served}}
"""
BATCH_MODEL = LIVE_MODEL.replace("binSize: 5", "bins: 4, binSize: 5").replace(
    "source: telemetry", "values: [3, 12, 7, 9]"
)
FRAMES = "\n".join(f'{{"bin": {b}, "series": "demand", "value": {v}}}' for b, v in enumerate([4, 11, 6]))


@schema.hook
def map_body(context: Any, body: Any) -> Any:
    """Half of the creates and ingests get a valid body, so the linked operations meet real runs."""
    op = context.operation
    if op is None or zlib.crc32(repr(body).encode()) % 2:
        return body
    label = f"{op.method.upper()} {op.path}"
    if label == "POST /v1/runs":
        return {"mode": "live", "model": LIVE_MODEL} if zlib.crc32(repr(body).encode()) % 4 else {"model": BATCH_MODEL}
    if label == "POST /v1/runs/{run_id}/bins":
        return FRAMES
    return body


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"app": APP[0], "base_url": f"http://{asgi.HOST}", "headers": dict(HEADERS)}

    def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
        count(f"stateful steps (auth {'on' if HEADERS else 'off'})")
        case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)


@pytest.fixture(params=["off", "on"])
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "fsync": False}
    if request.param == "on":
        values["tokens"] = f"{ADMIN}:admin"
        HEADERS["Authorization"] = f"Bearer {ADMIN}"
    app = create_app(*(lambda s: (s, build_context(s)))(Settings.model_validate(values)))
    with asgi.get_client(app):
        APP[:] = [app]
        try:
            yield
        finally:
            asgi.shutdown_lifespans()
            APP.clear()
            HEADERS.clear()


def test_linked_call_sequences_never_answer_5xx(started: None) -> None:
    Workflow.run(
        settings=settings(
            max_examples=60,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
