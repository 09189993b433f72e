"""Liveness, readiness (recovery done, storage takes writes) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from compat_api.access import Access, get_access
from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.dashboard import INDEX_HTML
from compat_api.http_errors import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)
METRICS_EXAMPLE = (
    "# HELP flowtime_ingested_frames_total Frames accepted per run\n"
    "# TYPE flowtime_ingested_frames_total counter\n"
    'flowtime_ingested_frames_total{run_id="r1"} 1440.0\n'
)


@router.get(
    "/healthz", tags=["operations"], responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}}
)
async def healthz() -> dict[str, str]:
    """Liveness check: answers ok while the process serves requests."""
    return {"status": "ok"}


STORAGE_FAILING_EXAMPLE = {
    "status": "storage_failing",
    "storage": {
        "failing": ["log"],
        "errors": {"log": "OSError: [Errno 28] No space left on device"},
        "since": 1759798800.0,
    },
}


@router.get(
    "/readyz",
    tags=["operations"],
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        503: {
            "description": "not ready: recovery in progress, or the last write of some kind (log, snapshot, "
            "events, artifacts) failed — a full disk or an I/O error (with Retry-After)",
            "content": {
                "application/json": {
                    "examples": {
                        "recovering": {
                            "value": {"status": "recovering", "progress": {"runs": 3, "runsDone": 1, "records": 1200}}
                        },
                        "storage_failing": {"value": STORAGE_FAILING_EXAMPLE},
                    }
                }
            },
        },
    },
)
async def readyz(ctx: AppContext = Depends(get_ctx)) -> JSONResponse:  # noqa: B008
    """Readiness check: ready once recovery has finished and storage takes writes.

    503 `recovering` with progress until recovery is done; 503 `storage_failing` while the last
    write of some kind failed (a probe write is tried first: ready again as soon as one succeeds)."""
    live = ctx.live
    if live is not None and not live.ready:
        return JSONResponse({"status": "recovering", "progress": live.recovery_progress()}, status_code=503)
    storage = await live.storage_status() if live is not None else None
    if storage is not None:
        body = {"status": "storage_failing", "storage": storage}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    tags=["operations"],
    dependencies=[Depends(require("metrics"))],  # its own scope (or admin) when auth is on
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
)
async def metrics(ctx: AppContext = Depends(get_ctx), access: Access = Depends(get_access)) -> Response:  # noqa: B008
    """The Prometheus metrics in the text exposition format (a run-limited token sees its runs only)."""
    if ctx.metrics is None:
        return Response(b"", media_type="text/plain; version=0.0.4")
    body, content_type = ctx.metrics.render()
    return Response(access.filter_metrics(body), media_type=content_type)


@router.get("/", include_in_schema=False)
async def dashboard() -> Response:
    """The dashboard page, or a pointer to the API docs when it is not installed."""
    if INDEX_HTML.is_file():
        return FileResponse(INDEX_HTML)
    return JSONResponse({"service": "FlowTime Live", "docs": "/docs"})
