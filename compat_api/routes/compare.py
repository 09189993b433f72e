"""`POST /v1/compare`: diff two finished runs and keep it at `<dataDir>/compares/<id>/diff.json` (§12.14).

The compare id is `cmp_<16 hex of sha256(baseRunId + "\\n" + compareRunId)>`: runs never change, so
comparing the same pair again rewrites the same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from compat_api.access import Access, get_access, run_of_ref
from compat_api.auth import require
from compat_api.compare import compare_runs
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from engine_live.errors import CompareMismatchError, InvalidRequestError
from snapshot_writer.atomic_files import json_bytes, write_bytes_atomic

Ctx = Annotated[AppContext, Depends(get_ctx)]
router = APIRouter(tags=["compare"], responses=ERROR_RESPONSES)

DIFF_EXAMPLE = {
    "compareId": "cmp_0123456789abcdef",
    "baseRunId": "run_a",
    "compareRunId": "run_b",
    "binMinutes": 5,
    "start": "2025-10-07T00:00:00Z",
    "bins": 4,
    "series": [
        {
            "id": "served",
            "bins": 4,
            "mae": 2.5,
            "smape": 0.1,
            "pearson": 1.0,
            "percentDelta": -10.0,
            "sumBase": 100.0,
            "sumCompare": 90.0,
        }
    ],
    "nodes": [{"nodeId": "Svc", "metrics": {"served": {"bins": 4, "mae": 2.5}}}],
    "onlyInBase": [],
    "onlyInCompare": [],
    "path": "compares/cmp_0123456789abcdef/diff.json",
}


class CompareRequest(BaseModel):
    """The two finished runs to compare."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "baseRunId": "run_20251007T000000Z_1a2b3c4d",
                    "compareRunId": "run_20251007T000500Z_5e6f7a8b",
                }
            ]
        },
    )

    baseRunId: str
    compareRunId: str


def compare_id(base: str, other: str) -> str:
    """The compare id of a (base, compare) run pair: `cmp_` and 16 hex digits of a SHA-256."""
    return "cmp_" + hashlib.sha256(f"{base}\n{other}".encode()).hexdigest()[:16]


def _compare(ctx: AppContext, req: CompareRequest) -> dict[str, Any]:
    store = ctx.run_store
    base, other = store.load(req.baseRunId), store.load(req.compareRunId)
    try:
        diff = compare_runs(base.compared(), other.compared())
    except CompareMismatchError as exc:
        raise InvalidRequestError(
            str(exc), code="grid_mismatch", baseRunId=req.baseRunId, compareRunId=req.compareRunId
        ) from None
    cid = compare_id(req.baseRunId, req.compareRunId)
    folder = ctx.compares_dir / cid
    folder.mkdir(parents=True, exist_ok=True)
    body = {"compareId": cid, **diff, "path": f"compares/{cid}/diff.json"}
    write_bytes_atomic(folder / "diff.json", json_bytes(body), fsync=ctx.settings.fsync)
    return body


@router.post(
    "/v1/compare",
    dependencies=[Depends(require("read"))],
    responses={200: {"content": {"application/json": {"example": DIFF_EXAMPLE}}}},
)
async def compare(req: CompareRequest, ctx: Ctx, access: Annotated[Access, Depends(get_access)]) -> JSONResponse:
    """MAE, SMAPE, Pearson and % change of the total per shared series and node metric."""
    access.check("read", run_of_ref(req.baseRunId), run_of_ref(req.compareRunId))
    return JSONResponse(await run_in_threadpool(_compare, ctx, req))
