"""Live-run routes: ingest bins, close, current state (SPEC §8, §12.1, §12.3, §12.7)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from engine_live.errors import NotFoundError

router = APIRouter(tags=["live"])

INGEST_EXAMPLE = {"bin": 12, "node": "OrderService", "arrivals": 35, "served": 33, "errors": 2}


def _live(ctx: AppContext) -> Any:
    if ctx.live is None:
        raise NotFoundError("the live engine is not running")
    return ctx.live


@router.post(
    "/v1/runs/{run_id}/bins",
    status_code=202,
    dependencies=[Depends(require("ingest"))],
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}, "example": INGEST_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}},
    }}},  # fmt: skip
    responses={202: {"content": {"application/json": {"example": {
        "accepted": 3, "duplicates": 0, "corrected": 0, "logOffset": 4096, "watermark": 12, "lastBin": 10}}}}},
)
async def ingest_bins(run_id: str, request: Request, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    live = _live(ctx)
    body = await request.body()
    return JSONResponse(await live.ingest(run_id, body), status_code=202)


@router.post("/v1/runs/{run_id}/close", status_code=202, dependencies=[Depends(require("ingest"))])
async def close_run(run_id: str, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    return JSONResponse(await _live(ctx).close_run(run_id), status_code=202)


@router.get("/v1/runs/{run_id}/state/live", dependencies=[Depends(require("read"))])
async def state_live(run_id: str, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    return JSONResponse(_live(ctx).state_live(run_id))


@router.patch(
    "/v1/runs/{run_id}/model",
    status_code=202,
    dependencies=[Depends(require("admin"))],
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object"},
        "example": {"fromBin": 12, "nodes": [{"id": "capacity", "kind": "expr", "expr": "150 + 20 * PULSE(6)"}]},
    }}}},  # fmt: skip
)
async def patch_model(run_id: str, request: Request, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    import orjson

    from engine_live.errors import FlowTimeError

    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise FlowTimeError("the body is not valid JSON", code="malformed_body") from None
    return JSONResponse(await _live(ctx).patch_model(run_id, body), status_code=202)
