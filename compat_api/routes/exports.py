"""Export and capture routes (SPEC §5, §8): long-table exports of a finished run, run → telemetry bundle.

- `POST /v1/runs/{run_id}/export` (ingest) writes every format plus catalog.json under
  `runs/<id>/export/` and answers 201 with the files' paths, sizes and hashes and the catalog.
- `GET /v1/runs/{run_id}/export/{fmt}` (read; csv | ndjson | parquet) streams the file, writing the
  export first when it is absent or older than the run's artifacts; 404 for an unknown run or format.
- A live run that is still open is exported as of now: both first take a snapshot with its §4
  artifacts (as `POST .../snapshots`), so the export holds every bin evaluated so far.
- `POST /v1/telemetry/captures` (ingest, on the body's runId) → 201 with the bundle manifest, 200 for
  a dry run or when an identical bundle is already there.

Decisions where the spec is silent:
- `output` is a relative folder name under `<dataDir>/bundles/` (default: the run id), confined
  there after resolving symlinks (400 `invalid_bundle_path`); an existing different bundle is 409
  `bundle_exists` unless `overwrite` is true.
- `gaps` takes the gaps.yaml content as an object `{gaps: [...]}`, a bare list, or YAML text.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from compat_api.access import Access, get_access
from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.run_claims import bundle_source_run
from engine_live.errors import BundlePathError, NotFoundError
from engine_live.model.series_csv import resolve_inside
from engine_live.protocol import RunStatus
from snapshot_writer.capture import capture_run
from snapshot_writer.exports import FORMATS, MEDIA_TYPES, ensure_export, export_run

Ctx = Annotated[AppContext, Depends(get_ctx)]
OPEN = (RunStatus.LIVE, RunStatus.CREATED)
router = APIRouter(tags=["exports"])

EXPORT_EXAMPLE = {
    "runId": "run_20251007T000000Z_1a2b3c4d",
    "files": {"csv": {"path": "export/export.csv", "bytes": 400538, "hash": "sha256:…", "mediaType": "text/csv"}},
    "catalog": {"path": "export/catalog.json", "rows": 4896},
}


# a bundle folder under <dataDir>/bundles/: plain name parts (no control characters, no absolute path),
# each at most 255 characters (a longer one is a filesystem error, not a folder)
BUNDLE_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")


class CaptureRequest(BaseModel):
    """A finished run to capture as a telemetry bundle: output name, gaps to inject, dry-run and overwrite flags."""

    model_config = ConfigDict(extra="forbid")

    runId: str = Field(examples=["run_20251007T000000Z_1a2b3c4d"])
    output: str | None = Field(default=None, examples=["captured_day"])
    gaps: dict[str, Any] | list[Any] | str | None = Field(
        default=None, examples=[{"gaps": [{"nodeId": "OrderService", "bins": [3, 4], "fill": "zero"}]}]
    )
    dryRun: StrictBool = False
    overwrite: StrictBool = False  # "yes" or 1 is not a yes: only JSON true overwrites


async def _checkpoint_live(ctx: AppContext, run_id: str) -> None:
    """An open live run is exported as of now: a snapshot writes its §4 artifacts first (as
    `POST /v1/runs/{id}/snapshots` does), then the export reads them like a finished run's."""
    live = ctx.live
    if live is not None and live.knows(run_id) and live.detail(run_id)["status"] in OPEN:
        await live.snapshot(run_id)


def _export_body(run_id: str, catalog: dict[str, Any]) -> dict[str, Any]:
    links = {fmt: f"/v1/runs/{run_id}/export/{fmt}" for fmt in FORMATS}
    files = {fmt: {**info, "url": links[fmt]} for fmt, info in (catalog.get("files") or {}).items()}
    return {
        "runId": run_id,
        "files": files,
        "catalog": {"path": "export/catalog.json", "rows": catalog.get("rows"), "body": catalog},
        "binMinutes": catalog.get("binMinutes"),
    }


@router.post(
    "/v1/runs/{run_id}/export",
    status_code=201,
    dependencies=[Depends(require("ingest"))],
    responses={201: {"content": {"application/json": {"example": EXPORT_EXAMPLE}}}},
)
async def create_export(run_id: str, ctx: Ctx) -> JSONResponse:
    """Write the run's export in csv, ndjson and parquet plus catalog.json; paths and sizes."""
    await _checkpoint_live(ctx, run_id)
    store = ctx.run_store
    run_dir = await run_in_threadpool(store.run_dir, run_id)
    catalog = await run_in_threadpool(export_run, run_dir, fsync=ctx.settings.fsync)
    return JSONResponse(_export_body(run_id, catalog), status_code=201)


@router.get(
    "/v1/runs/{run_id}/export/{fmt}",
    dependencies=[Depends(require("read"))],
    responses={
        200: {
            "content": {
                MEDIA_TYPES["csv"]: {"example": "time_utc,bin_index,node,metric,series_id,value\n"},
                MEDIA_TYPES["ndjson"]: {"schema": {"type": "string"}},
                MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def get_export(run_id: str, fmt: str, ctx: Ctx) -> FileResponse:
    """Stream the export file of `fmt` (csv | ndjson | parquet), generating it when absent."""
    if fmt not in FORMATS:
        raise NotFoundError(f"no export format {fmt!r}; known: {list(FORMATS)}", code="unknown_format", format=fmt)
    await _checkpoint_live(ctx, run_id)
    store = ctx.run_store
    run_dir = await run_in_threadpool(store.run_dir, run_id)
    path = await run_in_threadpool(ensure_export, run_dir, fmt, fsync=ctx.settings.fsync)
    return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=f"{run_id}.{fmt}")


@router.post(
    "/v1/telemetry/captures",
    status_code=201,
    dependencies=[Depends(require("ingest"))],
    responses={
        201: {"content": {"application/json": {"example": {"bundle": "captured_day", "manifest": {}}}}},
        200: {"description": "dry run, or an identical bundle already exists"},
    },
)
async def create_capture(req: CaptureRequest, ctx: Ctx, access: Annotated[Access, Depends(get_access)]) -> JSONResponse:
    """Turn a finished run into a telemetry bundle under `<dataDir>/bundles/` (with gap injection)."""
    access.check("ingest", req.runId)
    store = ctx.run_store
    run_dir = await run_in_threadpool(store.run_dir, req.runId)
    name = req.output if req.output is not None else req.runId
    bundles = ctx.bundles_dir
    try:
        if not BUNDLE_NAME.fullmatch(name) or any(len(part) > 255 or part in (".", "..") for part in name.split("/")):
            raise ValueError(name)
        output = resolve_inside(bundles, name)
    except ValueError:
        raise BundlePathError(f"output '{name}' is not a folder under <dataDir>/bundles/", output=name) from None
    if output == bundles.resolve():
        raise BundlePathError("output must name a folder inside <dataDir>/bundles/", output=name)
    access.check("ingest", bundle_source_run(ctx.data_dir, name))  # replacing another run's bundle
    result = await run_in_threadpool(
        capture_run,
        run_dir,
        output,
        gaps=req.gaps,
        dry_run=req.dryRun,
        overwrite=req.overwrite,
        fsync=ctx.settings.fsync,
    )
    body = {"bundle": name, "path": f"bundles/{name}", "runId": req.runId, **result.to_body()}
    return JSONResponse(body, status_code=201 if result.written else 200)


__all__ = ["CaptureRequest", "router"]
