"""Time-travel routes (SPEC §8, §12.4): a run's state at one bin, over a window, and its SLA summary.

Live runs the engine knows are answered from its retained bins (`ctx.live.state`, `state_window`,
`state_source`); finished runs from their artifacts through `compat_api.state_view`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from compat_api.routes.runs import live_holding
from compat_api.state_view import StateSource, metrics_body, state_body, state_window_body
from engine_live.errors import InvalidRequestError
from engine_live.model.grid import Grid, parse_utc

Ctx = Annotated[AppContext, Depends(get_ctx)]
router = APIRouter(tags=["state"], responses=ERROR_RESPONSES)

_NODE = {
    "id": "Svc",
    "kind": "service",
    "metrics": {"arrivals": 30, "served": 25, "capacity": 25},
    "derived": {
        "utilization": 1.0,
        "throughputRatio": 0.833333,
        "color": "red",
        "colorReason": "utilization",
    },
}
_HEAD = {
    "runId": "run_20251007T000000Z_1a2b3c4d",
    "grid": {"bins": 4, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
    "binMinutes": 5,
}
STATE_EXAMPLE = {
    **_HEAD,
    "bin": {"index": 2, "startUtc": "2025-10-07T00:10:00Z", "endUtc": "2025-10-07T00:15:00Z"},
    "nodes": [_NODE],
    "warnings": [],
    "dataQuality": {"complete": True, "gaps": []},
}
WINDOW_EXAMPLE = {
    **_HEAD,
    "window": {"startBin": 0, "endBin": 1},
    "timestampsUtc": ["2025-10-07T00:00:00Z", "2025-10-07T00:05:00Z"],
    "nodes": [
        {
            "id": "Svc",
            "kind": "service",
            "metrics": {"served": [10, 20]},
            "derived": {"utilization": [0.4, 0.8], "color": ["green", "yellow"]},
        }
    ],
    "warnings": [],
    "dataQuality": {"complete": True, "gaps": []},
}
METRICS_EXAMPLE = {
    **_HEAD,
    "window": {"startBin": 0, "endBin": 3},
    "overall": {"binsEvaluated": 4, "binsMet": 3, "percentMet": 75.0},
    "nodes": [{"nodeId": "Svc", "binsEvaluated": 4, "binsMet": 3, "percentMet": 75.0}],
}


def _json(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": example}}}}


def bin_of_ts(grid: Grid, ts: str) -> int:
    """The bin starting at `ts`; 422 `invalid_timestamp` / `ts_not_aligned` otherwise (§12.2)."""
    try:
        parse_utc(ts)
    except ValueError as exc:
        raise InvalidRequestError(f"ts: {exc}", code="invalid_timestamp", ts=ts) from None
    if grid.start is None:
        raise InvalidRequestError("ts: the run's grid has no start; use binIndex", code="ts_not_aligned", ts=ts)
    try:
        return grid.bin_of(ts)
    except ValueError as exc:
        raise InvalidRequestError(f"ts: {exc}", code="ts_not_aligned", ts=ts) from None


async def _source(ctx: AppContext, run_id: str) -> StateSource:
    if (live := live_holding(ctx, run_id)) is not None:
        src: StateSource = live.state_source(run_id)
        return src
    store = ctx.run_store
    loaded = await run_in_threadpool(store.load, run_id)
    return loaded.source()


@router.get("/v1/runs/{run_id}/state", dependencies=[Depends(require("read"))], responses=_json(STATE_EXAMPLE))
async def run_state(
    run_id: str,
    ctx: Ctx,
    bin_index: Annotated[int | None, Query(alias="binIndex", examples=[2])] = None,
    ts: Annotated[str | None, Query(examples=["2025-10-07T00:10:00Z"])] = None,
) -> JSONResponse:
    """State of one bin: nodes with metrics, derived values and colours, warnings, dataQuality."""
    if (bin_index is None) == (ts is None):
        raise InvalidRequestError("give exactly one of binIndex or ts", code="invalid_request")
    src = await _source(ctx, run_id)
    index = bin_index if bin_index is not None else bin_of_ts(src.wire_grid, str(ts))
    if (live := live_holding(ctx, run_id)) is not None:
        return JSONResponse(live.state(run_id, index))
    return JSONResponse(await run_in_threadpool(state_body, src, index))


@router.get("/v1/runs/{run_id}/state_window", dependencies=[Depends(require("read"))], responses=_json(WINDOW_EXAMPLE))
async def run_state_window(
    run_id: str,
    ctx: Ctx,
    start_bin: Annotated[int, Query(alias="startBin", ge=0, examples=[0])],
    end_bin: Annotated[int, Query(alias="endBin", ge=0, examples=[287])],
) -> JSONResponse:
    """Bins startBin..endBin (inclusive, at most `state_window_max_bins`) with arrays per node."""
    limit = ctx.settings.state_window_max_bins
    if (live := live_holding(ctx, run_id)) is not None:
        return JSONResponse(live.state_window(run_id, start_bin, end_bin))
    src = await _source(ctx, run_id)
    return JSONResponse(await run_in_threadpool(state_window_body, src, start_bin, end_bin, limit))


@router.get("/v1/runs/{run_id}/metrics", dependencies=[Depends(require("read"))], responses=_json(METRICS_EXAMPLE))
async def run_metrics(run_id: str, ctx: Ctx) -> JSONResponse:
    """SLA summary per node and overall (share of bins with served/arrivals ≥ 0.95)."""
    src = await _source(ctx, run_id)
    return JSONResponse(await run_in_threadpool(metrics_body, src))
