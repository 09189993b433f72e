"""Run routes: create batch runs, list and describe runs, and serve their artifacts (SPEC §4, §8, §12.3).

Simulation and overlay runs are evaluated here (off the event loop); `live` runs are handed to the
live engine (`ctx.live.create_run`) and `telemetry` runs to `compat_api.telemetry_runs`; both need a
service that runs the live engine, else 422 `unsupported_mode`. Lists merge finished run folders,
live runs and async runs still in progress.

Decisions where the spec is silent:
- `POST /v1/run` answers 200 with values rounded for the wire (§12.5); `/series?format=json` is an
  artifact download and keeps full precision (non-finite → null).
- An async run that fails stays listed as `failed` with its error until the registry of the last
  1,000 async runs forgets it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from compat_api.access import Access, get_access
from compat_api.auth import require
from compat_api.batch_runs import (
    MODEL_EXAMPLE,
    BatchJob,
    RunRequest,
    execute,
    overlay_job,
    planned_run_id,
    read_model_source,
    simulation_job,
)
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from compat_api.live_api import LiveApi
from compat_api.run_claims import bundle_source_run, claim_batch_run, claim_live_run
from compat_api.run_store import filter_runs, paginate, run_links
from compat_api.series_download import series_response
from compat_api.telemetry_runs import create_telemetry_run
from engine_live.derived.node_metrics import to_wire_list
from engine_live.errors import FlowTimeError, InvalidRequestError, NotFoundError
from engine_live.plan.batch_run import topology_view
from engine_live.protocol import RunStatus

Ctx = Annotated[AppContext, Depends(get_ctx)]
Acc = Annotated[Access, Depends(get_access)]
router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES)
PENDING_KEEP = 1000
RUN_EXAMPLE = {
    "runId": "run_20251007T000000Z_1a2b3c4d",
    "mode": "simulation",
    "status": "completed",
    "createdUtc": "2025-10-07T00:00:00Z",
    "templateId": None,
    "binMinutes": 5,
    "grid": {
        "bins": 4,
        "binSize": 5,
        "binUnit": "minutes",
        "start": "2025-10-07T00:00:00Z",
        "binMinutes": 5,
        "timezone": "UTC",
        "align": "left",
    },
    "modelHash": "sha256:…",
    "links": run_links("run_20251007T000000Z_1a2b3c4d"),
}
ACCEPTED_EXAMPLE = {
    "runId": "r1",
    "mode": "live",
    "status": "live",
    "epoch": "5a4a27b4",
    "seq": 1,
    "lastBin": -1,
    "watermark": -1,
    "revision": 0,
    "modelRevision": 0,
    "links": {"self": "/v1/runs/r1", "stream": "/v1/runs/r1/stream"},
}
MODEL_BODY = {
    "required": True,
    "content": {
        "application/x-yaml": {"schema": {"type": "string"}, "example": MODEL_EXAMPLE},
        "application/yaml": {"schema": {"type": "string"}, "example": MODEL_EXAMPLE},
        "application/json": {
            "schema": {"type": "object"},
            "example": {
                "grid": {"bins": 2, "binSize": 1, "binUnit": "hours"},
                "nodes": [{"id": "demand", "kind": "const", "values": [1, 2]}],
            },
        },
    },
}


def _json(content: Any) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": content}}}}


def live_holding(ctx: AppContext, run_id: str) -> LiveApi | None:
    """The live engine, when it holds the run."""
    return ctx.live if ctx.live is not None and ctx.live.knows(run_id) else None


def pending_runs(ctx: AppContext) -> OrderedDict[str, dict[str, Any]]:
    """Async batch runs still being computed (`options.async`), by run id."""
    return ctx.pending_runs


@router.post(
    "/v1/run",
    dependencies=[Depends(require("ingest"))],
    openapi_extra={"requestBody": MODEL_BODY},
    responses=_json(
        {
            "runId": "run_20251007T000000Z_1a2b3c4d",
            "modelHash": "sha256:…",
            "grid": {"bins": 4, "binSize": 5, "binUnit": "minutes"},
            "binMinutes": 5,
            "order": ["arrivals", "capacity", "served"],
            "series": {"arrivals": [10, 20, 30, 40]},
        }
    ),
)
async def legacy_run(request: Request, ctx: Ctx, access: Acc) -> JSONResponse:
    """Legacy batch run: model YAML (or JSON) body → evaluate → artifacts → every series."""
    source = read_model_source(await request.body(), ctx.settings.max_model_bytes)
    job = BatchJob(source, ctx.inputs_dir, "simulation")
    await claim_batch_run(ctx, access, job, None)
    run, info = await run_in_threadpool(
        execute, job, ctx.runs_dir, fsync=ctx.settings.fsync, max_cells=ctx.settings.max_batch_cells
    )
    result = run.result
    return JSONResponse(
        {
            "runId": result.run_id,
            "modelHash": info.model_hash,
            "grid": result.grid.to_wire(),
            "binMinutes": result.grid.bin_minutes,
            "order": [s.node_id for s in result.series],
            "series": {s.node_id: to_wire_list(s.values) for s in result.series},
            "warnings": result.warnings,
        }
    )


@router.post(
    "/v1/runs",
    status_code=201,
    dependencies=[Depends(require("ingest"))],
    responses={
        201: {"content": {"application/json": {"example": RUN_EXAMPLE}}},
        202: {
            "description": "accepted: async run, or a live run (Location names the run)",
            "content": {"application/json": {"example": ACCEPTED_EXAMPLE}},
        },
    },
)
async def create_run(req: RunRequest, background: BackgroundTasks, ctx: Ctx, access: Acc) -> JSONResponse:
    """Create a run: simulation (model or template), overlay of a finished run, telemetry or live."""
    if req.mode in ("live", "telemetry"):
        return await _delegate(req, ctx, access)
    if req.mode == "overlay":
        access.check("read", req.baseRunId)  # before the base is looked up
        await _snapshot_live_base(ctx, req.baseRunId)
    job = await run_in_threadpool(_job_for, req, ctx)
    await claim_batch_run(ctx, access, job, req.options.runId)
    if req.options.run_async:
        try:
            planned = await run_in_threadpool(planned_run_id, job, max_cells=ctx.settings.max_batch_cells)
        except Exception:
            if req.options.runId is not None:  # the reservation of claim_batch_run
                pending_runs(ctx).pop(req.options.runId, None)
            raise
        job.run_id = job.run_id or planned
        pending = pending_runs(ctx)
        pending[job.run_id] = {
            "runId": job.run_id,
            "mode": job.mode,
            "status": "running",
            "links": {"self": f"/v1/runs/{job.run_id}"},
        }
        while len(pending) > PENDING_KEEP:
            pending.popitem(last=False)
        background.add_task(_run_pending, job, ctx)
        return JSONResponse(pending[job.run_id], status_code=202, headers={"Location": f"/v1/runs/{job.run_id}"})
    try:
        run, _ = await run_in_threadpool(
            execute, job, ctx.runs_dir, fsync=ctx.settings.fsync, max_cells=ctx.settings.max_batch_cells
        )
    finally:
        if req.options.runId is not None:  # the reservation of claim_batch_run
            pending_runs(ctx).pop(req.options.runId, None)
    run_id = run.result.run_id
    body = await run_in_threadpool(ctx.run_store.detail, run_id)
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/runs/{run_id}"})


async def _snapshot_live_base(ctx: AppContext, run_id: str | None) -> None:
    """SPEC §12.14: a live base is overlaid as of its latest snapshot. An open one is snapshotted now,
    with its §4 artifacts (periodic snapshots hold only live state: the overlay answered 404)."""
    live = live_holding(ctx, run_id) if run_id else None
    if live is not None and run_id is not None and live.detail(run_id)["status"] in (RunStatus.LIVE, RunStatus.CREATED):
        await live.snapshot(run_id)


def _job_for(req: RunRequest, ctx: AppContext) -> BatchJob:
    limit = ctx.settings.max_model_bytes
    if req.mode == "overlay":
        if not req.baseRunId:
            raise InvalidRequestError("overlay: baseRunId is required", code="invalid_request")
        store = ctx.run_store
        base = store.load(req.baseRunId)
        return overlay_job(req, base, store.model_text(req.baseRunId), limit, ctx.inputs_dir)
    return simulation_job(req, ctx.inputs_dir, limit, ctx.data_dir)


def _run_pending(job: BatchJob, ctx: AppContext) -> None:
    assert job.run_id is not None
    entry = pending_runs(ctx).get(job.run_id)
    try:
        execute(job, ctx.runs_dir, fsync=ctx.settings.fsync, max_cells=ctx.settings.max_batch_cells)
    except FlowTimeError as exc:
        if entry is not None:
            entry.update(status="failed", error=exc.to_body())
        return
    except Exception as exc:  # the task has no caller to report to: record it on the run
        if entry is not None:
            entry.update(status="failed", error={"error": "internal", "message": str(exc)})
        return
    pending_runs(ctx).pop(job.run_id, None)


async def _delegate(req: RunRequest, ctx: AppContext, access: Access) -> JSONResponse:
    """Live and telemetry runs: created by the live engine (live) or evaluated against a bundle (telemetry)."""
    if ctx.live is None:
        raise InvalidRequestError(
            f"mode '{req.mode}' is not available on this server", code="unsupported_mode", mode=req.mode
        )
    request_body = req.model_dump(by_alias=True, exclude_unset=True)
    if req.mode == "live":
        claim_live_run(access, request_body)
        body = await ctx.live.create_run(request_body)
    else:
        access.check("read", bundle_source_run(ctx.data_dir, (req.telemetry or {}).get("bundle")))

        async def claim(job: BatchJob) -> None:
            await claim_batch_run(ctx, access, job, req.options.runId)

        body = await create_telemetry_run(request_body, ctx, claim)
    run_id = body.get("runId")
    status = 202 if req.mode == "live" or req.options.run_async else 201
    return JSONResponse(body, status_code=status, headers={"Location": f"/v1/runs/{run_id}"} if run_id else None)


@router.get(
    "/v1/runs",
    dependencies=[Depends(require("read"))],
    responses=_json({"items": [RUN_EXAMPLE], "total": 1, "page": 1, "pageSize": 50}),
)
async def list_runs(
    ctx: Ctx,
    access: Acc,
    mode: Annotated[str | None, Query(examples=["simulation"])] = None,
    status: Annotated[str | None, Query(examples=["completed"])] = None,
    template_id: Annotated[str | None, Query(alias="templateId", examples=["order-system"])] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter", examples=["2025-10-07T00:00:00Z"])] = None,
    page: Annotated[int, Query(ge=1, examples=[1])] = 1,
    page_size: Annotated[int | None, Query(alias="pageSize", ge=1, examples=[50])] = None,
) -> JSONResponse:
    """Finished runs on disk merged with live runs and async runs in progress; newest first."""
    size = page_size or ctx.settings.page_size
    if size > ctx.settings.page_size_max:
        raise InvalidRequestError(
            f"pageSize: at most {ctx.settings.page_size_max}", code="invalid_paging", pageSize=size
        )
    merged = {r["runId"]: r for r in await run_in_threadpool(ctx.run_store.summaries)}
    for rid, entry in pending_runs(ctx).items():
        merged.setdefault(rid, entry)
    if ctx.live is not None:
        for r in ctx.live.list_runs():
            merged[r["runId"]] = r
    readable = access.visible(merged.values(), lambda r: str(r["runId"]))
    items = filter_runs(readable, mode=mode, status=status, template_id=template_id, created_after=created_after)
    return JSONResponse(paginate(items, page, size))


@router.get("/v1/runs/{run_id}", dependencies=[Depends(require("read"))], responses=_json(RUN_EXAMPLE))
async def get_run(run_id: str, ctx: Ctx) -> JSONResponse:
    """Run detail: mode, status, grid with binMinutes, warnings, links (a live run: §12.3)."""
    if (live := live_holding(ctx, run_id)) is not None:
        return JSONResponse(live.detail(run_id))
    store = ctx.run_store
    if store.exists(run_id):
        return JSONResponse(await run_in_threadpool(store.detail, run_id))
    entry = pending_runs(ctx).get(run_id)
    if entry is not None:
        return JSONResponse(entry)
    raise NotFoundError(f"run {run_id!r} not found", runId=run_id)


@router.get(
    "/v1/runs/{run_id}/graph",
    dependencies=[Depends(require("read"))],
    responses=_json(
        {"runId": "r1", "nodes": [{"id": "Svc", "kind": "service", "semantics": {}}], "edges": [], "classes": []}
    ),
)
async def run_graph(run_id: str, ctx: Ctx) -> JSONResponse:
    """topology.json: nodes and edges for a graph view, and the run's `classes` (SPEC §14; [] without)."""
    store = ctx.run_store
    if not store.exists(run_id) and ctx.live is not None and ctx.live.knows(run_id):
        graph = ctx.live.handle(run_id).model.graph
        return JSONResponse({"runId": run_id, **topology_view(graph), "classes": list(graph.classes)})
    return JSONResponse({"runId": run_id, **await run_in_threadpool(_finished_graph, ctx, run_id)})


def _finished_graph(ctx: AppContext, run_id: str) -> dict[str, Any]:
    """A finished run's topology.json with its classes: those of its per-class series in series/index.json
    (a total's `class` is DEFAULT), in the model's order (each class-bearing series lists all of them)."""
    topology = ctx.run_store.read_json(run_id, "topology.json")
    classes = (s.get("class") for s in ctx.run_store.read_json(run_id, "series/index.json").get("series") or [])
    return {**topology, "classes": list(dict.fromkeys(c for c in classes if isinstance(c, str) and c != "DEFAULT"))}


@router.get(
    "/v1/runs/{run_id}/index",
    dependencies=[Depends(require("read"))],
    responses=_json({"grid": {"bins": 4, "binMinutes": 5}, "series": [{"id": "served@SERVED@DEFAULT"}]}),
)
async def run_index(run_id: str, ctx: Ctx) -> JSONResponse:
    """series/index.json of a finished run."""
    return JSONResponse(await run_in_threadpool(ctx.run_store.read_json, run_id, "series/index.json"))


@router.get(
    "/v1/runs/{run_id}/model",
    dependencies=[Depends(require("read"))],
    response_class=Response,
    responses={200: {"content": {"application/x-yaml": {"example": MODEL_EXAMPLE}}}},
)
async def run_model_text(run_id: str, ctx: Ctx) -> Response:
    """The model as run (spec.yaml)."""
    store = ctx.run_store
    if not store.exists(run_id) and ctx.live is not None and ctx.live.knows(run_id):
        return Response(ctx.live.handle(run_id).model.text, media_type="application/x-yaml")
    return Response(await run_in_threadpool(store.model_text, run_id), media_type="application/x-yaml")


@router.get(
    "/v1/runs/{run_id}/series/{series_id}",
    dependencies=[Depends(require("read"))],
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/csv": {"example": "bin_index,value\n0,10\n1,20\n"},
                "application/json": {"example": {"seriesId": "served@SERVED@DEFAULT", "values": [10, 20]}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def run_series(
    run_id: str,
    series_id: str,
    ctx: Ctx,
    format: Annotated[Literal["csv", "json", "parquet"], Query(examples=["csv"])] = "csv",
) -> Response:
    """One series (artifact id `served@SERVED@DEFAULT` or model id `served`) as CSV, JSON or Parquet."""
    return await run_in_threadpool(series_response, ctx.run_store, run_id, series_id, format)
