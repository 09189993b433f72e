"""`POST /v1/validate` and `POST /v1/graph`: check a model, or show its topology and series (SPEC §8).

Both take the model as the whole body (YAML or JSON text, or JSON `{"model": ...}`); `file:`
sources resolve under `<dataDir>/inputs` (§12.15). Validation answers 200 even for an invalid model.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from compat_api.auth import require
from compat_api.batch_runs import MODEL_EXAMPLE, read_model_source
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from engine_live.errors import ModelError
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from engine_live.plan.batch_run import topology_view
from engine_live.plan.budget import check_cells
from engine_live.plan.compiler import ZERO, Plan, compile_model

Ctx = Annotated[AppContext, Depends(get_ctx)]
router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)

MODEL_BODY = {
    "required": True,
    "content": {
        "application/x-yaml": {"schema": {"type": "string"}, "example": MODEL_EXAMPLE},
        "application/json": {"schema": {"type": "object"}, "example": {"model": MODEL_EXAMPLE}},
    },
}
VALID_EXAMPLE = {"valid": False, "errors": ["node 'served': unknown reference 'capcity'"], "warnings": []}
GRAPH_EXAMPLE = {
    "grid": {"bins": 4, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
    "binMinutes": 5,
    "nodes": [
        {
            "id": "Svc",
            "kind": "service",
            "semantics": {"arrivals": "arrivals", "served": "served"},
            "ui": None,
        }
    ],
    "edges": [],
    "series": [{"id": "served", "kind": "expr", "hidden": False}],
}


def compile_source(source: str | dict[str, Any], ctx: AppContext) -> tuple[Plan, list[dict[str, Any]]]:
    """Load, build and compile; ModelError on any problem. Returns the plan and info warnings."""
    doc = load_model(source, base_dir=ctx.inputs_dir)
    graph = build_model(doc)
    plan = compile_model(graph)
    check_cells(plan, graph.grid.bins, ctx.settings.max_batch_cells)
    return plan, [dict(w) for w in graph.info]


def validate_source(source: str | dict[str, Any], ctx: AppContext) -> dict[str, Any]:
    """The `/v1/validate` answer for a model: valid, every error, and the info warnings."""
    try:
        _, warnings = compile_source(source, ctx)
    except ModelError as exc:
        return {"valid": False, "errors": list(exc.errors), "warnings": []}
    return {"valid": True, "errors": [], "warnings": warnings}


def graph_body(source: str | dict[str, Any], ctx: AppContext) -> dict[str, Any]:
    """The `/v1/graph` answer for a model: grid, topology, series and info warnings; ModelError if invalid."""
    plan, warnings = compile_source(source, ctx)
    graph = plan.graph
    series = [
        {"id": sid, "kind": plan.kind_of.get(sid, "expr"), "hidden": sid in graph.hidden}
        for sid in plan.names
        if sid != ZERO
    ]
    return {
        "grid": graph.grid.to_wire(),
        "binMinutes": graph.grid.bin_minutes,
        **topology_view(graph),
        "series": series,
        "warnings": warnings,
    }


@router.post(
    "/v1/validate",
    dependencies=[Depends(require("read"))],
    openapi_extra={"requestBody": MODEL_BODY},
    responses={200: {"content": {"application/json": {"example": VALID_EXAMPLE}}}},
)
async def validate(request: Request, ctx: Ctx) -> JSONResponse:
    """Every validation error (each naming node and field) and the info warnings of a model."""
    source = read_model_source(await request.body(), ctx.settings.max_model_bytes)
    return JSONResponse(await run_in_threadpool(validate_source, source, ctx))


@router.post(
    "/v1/graph",
    dependencies=[Depends(require("read"))],
    openapi_extra={"requestBody": MODEL_BODY},
    responses={200: {"content": {"application/json": {"example": GRAPH_EXAMPLE}}}},
)
async def graph(request: Request, ctx: Ctx) -> JSONResponse:
    """The topology (nodes and edges) and every series of a model; 422 when the model is invalid."""
    source = read_model_source(await request.body(), ctx.settings.max_model_bytes)
    return JSONResponse(await run_in_threadpool(graph_body, source, ctx))
