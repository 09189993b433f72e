"""Live-run routes: ingest bins, close, current state (SPEC §8, §12.1, §12.3, §12.7)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from compat_api.live_api import LiveApi
from engine_live.errors import NotFoundError

router = APIRouter(tags=["live"], responses=ERROR_RESPONSES)

INGEST_EXAMPLE = {"bin": 12, "node": "OrderService", "arrivals": 35, "served": 33, "errors": 2}
NDJSON_EXAMPLE = (
    '{"bin": 12, "node": "OrderService", "arrivals": 35, "served": 33, "errors": 2}\n'
    '{"ts": "2025-10-07T01:00:00Z", "series": "live_in", "value": 17.5}\n'
)
COLUMNS_EXAMPLE = '{"bin": 12, "series": ["OrderService.arrivals", "live_in"], "values": [35, 17.5]}\n'
INGEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}, "example": INGEST_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}, "example": NDJSON_EXAMPLE},
        "application/x-flowtime-columns+ndjson": {"schema": {"type": "string"}, "example": COLUMNS_EXAMPLE},
        "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
PATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object"},
            "example": {"fromBin": 12, "nodes": [{"id": "capacity", "kind": "expr", "expr": "150 + 20 * PULSE(6)"}]},
        }
    },
}
INGEST_ANSWER = {"accepted": 3, "duplicates": 0, "corrected": 0, "logOffset": 4096, "watermark": 12, "lastBin": 10}
LIVE_DETAIL = {
    "runId": "r1",
    "mode": "live",
    "status": "live",
    "epoch": "5a4a27b4",
    "seq": 42,
    "lastBin": 10,
    "watermark": 12,
    "revision": 0,
    "modelRevision": 0,
    "grid": {"bins": 288, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z", "binMinutes": 5},
    "binMinutes": 5,
    "createdUtc": "2025-10-07T00:00:00Z",
    "links": {"self": "/v1/runs/r1", "stream": "/v1/runs/r1/stream"},
}
STATE_LIVE_EXAMPLE = {
    "runId": "r1",
    "grid": LIVE_DETAIL["grid"],
    "binMinutes": 5,
    "bin": {"index": 10, "startUtc": "2025-10-07T00:50:00Z", "endUtc": "2025-10-07T00:55:00Z"},
    "nodes": [
        {
            "id": "Svc",
            "kind": "service",
            "metrics": {"arrivals": 30, "served": 25},
            "derived": {"utilization": 1.0, "color": "red", "colorReason": "utilization"},
        }
    ],
    "warnings": [],
    "dataQuality": {"complete": True, "gaps": []},
    "status": "live",
    "epoch": "5a4a27b4",
    "seq": 42,
    "revision": 0,
    "watermark": 12,
    "lastBin": 10,
    "window": {"startBin": 0, "endBin": 10, "timestampsUtc": ["2025-10-07T00:00:00Z", "..."], "nodes": []},
}
PATCH_ANSWER = {"runId": "r1", "modelRevision": 1, "revision": 3, "fromBin": 12, "logOffset": 8192, "lastBin": 11}


def _example(status: int, example: Any, media_type: str = "application/json") -> dict[int | str, dict[str, Any]]:
    return {status: {"content": {media_type: {"example": example}}}}


def _live(ctx: AppContext) -> LiveApi:
    if ctx.live is None:
        raise NotFoundError("the live engine is not running")
    return ctx.live


@router.post(
    "/v1/runs/{run_id}/bins",
    status_code=202,
    dependencies=[Depends(require("ingest"))],
    openapi_extra={"requestBody": INGEST_BODY},
    responses=_example(202, INGEST_ANSWER),
)
async def ingest_bins(run_id: str, request: Request, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Ingest telemetry bins into a live run; answers once they are durably logged. The Content-Type picks
    the form: JSON or NDJSON frames, column lines (`application/x-flowtime-columns+ndjson`) or an Arrow
    IPC stream (`application/vnd.apache.arrow.stream`; docs/api.md)."""
    live = _live(ctx)
    body = await request.body()
    answer = await live.ingest(run_id, body, media_type=request.headers.get("content-type"))
    return JSONResponse(answer, status_code=202)


@router.post(
    "/v1/runs/{run_id}/close",
    status_code=202,
    dependencies=[Depends(require("ingest"))],
    responses=_example(202, {**LIVE_DETAIL, "status": "completed"}),
)
async def close_run(run_id: str, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Close a live run, evaluating its remaining bins, and return the run's detail."""
    return JSONResponse(await _live(ctx).close_run(run_id), status_code=202)


SNAPSHOT_ANSWER = {
    "runId": "r1",
    "seq": 42,
    "lastBin": 10,
    "path": "live/snapshots/00000000000000000042",
    "manifestHash": "sha256:…",
}


@router.post(
    "/v1/runs/{run_id}/snapshots",
    status_code=201,
    dependencies=[Depends(require("ingest"))],
    responses=_example(201, SNAPSHOT_ANSWER),
)
async def snapshot_run(run_id: str, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Commit a snapshot of a live run now and write its full canonical artifacts."""
    return JSONResponse(await _live(ctx).snapshot(run_id), status_code=201)


@router.get(
    "/v1/runs/{run_id}/state/live", dependencies=[Depends(require("read"))], responses=_example(200, STATE_LIVE_EXAMPLE)
)
async def state_live(run_id: str, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """The live run's state at its last evaluated bin, with its position and a window of recent bins."""
    return JSONResponse(_live(ctx).state_live(run_id))


@router.patch(
    "/v1/runs/{run_id}/model",
    status_code=202,
    dependencies=[Depends(require("admin"))],
    openapi_extra={"requestBody": PATCH_BODY},
    responses=_example(202, PATCH_ANSWER),
)
async def patch_model(run_id: str, request: Request, ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Adjust an open live run's model from a given bin on and return its new model revision."""
    import orjson

    from engine_live.errors import FlowTimeError

    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise FlowTimeError("the body is not valid JSON", code="malformed_body") from None
    return JSONResponse(await _live(ctx).patch_model(run_id, body), status_code=202)
