"""`DELETE /v1/runs/{id}` (admin, SPEC §12.9): stop a live run and remove a run's folder.

A live run becomes `failed` with reason `deleted` (a status event that repeats the current seq: no
log record causes it), its WebSocket clients are closed with 1000 after what is already queued, and
its folder `<dataDir>/runs/<id>` is removed. A finished run's folder is removed. An async run still
being evaluated answers 409 (delete it once it has finished); one that failed is forgotten.

Decision where the spec is silent: the answer is 200 with `{runId, deleted: true, status,
previousStatus}` — `status` is the run's status as it was left (`failed` for a stopped live run).
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES, error_doc
from compat_api.routes.runs import pending_runs
from compat_api.run_store import RUN_ID_RE
from engine_live.errors import ConflictError, NotFoundError, StorageUnavailableError
from ingestion.live_log import TOMBSTONES

Ctx = Annotated[AppContext, Depends(get_ctx)]
router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES)

DELETE_EXAMPLE = {"runId": "r1", "deleted": True, "status": "failed", "previousStatus": "live"}


def remove_run_folder(runs_dir: Path, run_id: str) -> bool:
    """Remove `<runs_dir>/<run_id>` as a whole or not at all (never following a symlink out of the
    data folder): renamed to a tombstone under `runs/.deleted/` first — one atomic step after which
    the run is gone — then deleted; a tombstone left behind is removed at the next start
    (`FileLogStore.clean`). StorageUnavailableError (503) when the rename fails: the run stays whole."""
    if not RUN_ID_RE.match(run_id) or run_id in (".", "..") or run_id.startswith("."):
        return False
    path = runs_dir / run_id
    if path.is_symlink():
        path.unlink()
        return True
    if not path.is_dir():
        return False
    tomb = runs_dir / TOMBSTONES / f"{run_id}.{secrets.token_hex(4)}"
    try:
        tomb.parent.mkdir(exist_ok=True)
        path.rename(tomb)
    except OSError as exc:
        raise StorageUnavailableError(f"run {run_id!r} could not be removed: {exc.strerror}", runId=run_id) from None
    shutil.rmtree(tomb, ignore_errors=True)
    return True


@router.delete(
    "/v1/runs/{run_id}",
    dependencies=[Depends(require("admin"))],
    responses={
        200: {"content": {"application/json": {"example": DELETE_EXAMPLE}}},
        404: error_doc("unknown run", {"error": "not_found", "message": "run 'r9' not found", "runId": "r9"}),
        409: error_doc("an async run still being evaluated", {"error": "conflict", "message": "...", "runId": "r1"}),
    },
)
async def delete_run(run_id: str, ctx: Ctx) -> JSONResponse:
    """Stop a live run (status `failed`, reason `deleted`, WebSocket 1000) and remove the run's folder."""
    pending = pending_runs(ctx).get(run_id)
    if pending is not None and pending.get("status") == "running":
        raise ConflictError(f"run {run_id!r} is still being evaluated", runId=run_id)
    body: dict[str, Any] | None = None
    if ctx.live is not None:
        body = await ctx.live.delete_run(run_id)
    if body is None:
        store = ctx.run_store
        if await run_in_threadpool(store.exists, run_id):
            status = str((await run_in_threadpool(store.detail, run_id)).get("status") or "completed")
        elif pending is not None:
            status = str(pending.get("status"))
        else:
            raise NotFoundError(f"run {run_id!r} not found", runId=run_id)
        body = {"runId": run_id, "deleted": True, "status": status, "previousStatus": status}
    pending_runs(ctx).pop(run_id, None)
    await run_in_threadpool(remove_run_folder, ctx.runs_dir, run_id)
    return JSONResponse(body)
