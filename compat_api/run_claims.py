"""The id of a run being created, authorized before anything is evaluated or written (SPEC §10, §12.3).

A create request names its run (`options.runId`) or lets the server generate one. Either way the id
is checked with `ingest` (`compat_api.access.Access.new_run`): a token limited to `a*` cannot create
a run it could not then read. With auth on, the id is generated here, before the run exists
(`run_…` for batch runs, `live_…` for live runs, the same forms the engine uses); a pattern-limited
token whose patterns a generated id cannot match gets a 403 asking for an explicit id. With auth off
nothing changes: the engine picks the id as it always did.

Decisions where the spec is silent: an explicit `options.runId` names batch runs too (simulation,
overlay, telemetry), with the live rule — `^[A-Za-z0-9_.-]{1,128}$`, 409 when a run folder, a live run
or an async run already has it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool

from compat_api.access import Access, new_live_run_id
from compat_api.batch_runs import BatchJob, planned_run_id
from compat_api.context import AppContext
from engine_live.errors import ConflictError
from engine_live.model.series_csv import resolve_inside
from engine_live.plan.batch_run import new_run_id


def ensure_free(ctx: AppContext, run_id: str) -> None:
    """ConflictError (409) when a run folder, a live run or an async run already has `run_id`."""
    taken = (ctx.runs_dir / run_id).exists() or run_id in ctx.pending_runs
    if taken or (ctx.live is not None and ctx.live.knows(run_id)):
        raise ConflictError(f"run '{run_id}' already exists", runId=run_id)


async def claim_batch_run(ctx: AppContext, access: Access, job: BatchJob, explicit: str | None) -> None:
    """Give a batch job its authorized run id: `explicit` (checked, then 409 when taken) or, with auth
    on, the id it would be generated (deterministic: from the model's scenario hash)."""
    if explicit is None and not access.enabled:
        return
    generated = ""
    if explicit is None:
        if job.deterministic:
            generated = await run_in_threadpool(planned_run_id, job, max_cells=ctx.settings.max_batch_cells)
        else:
            generated = new_run_id()
    job.run_id = access.new_run(explicit, lambda: generated)
    if explicit is not None:
        ensure_free(ctx, explicit)
        # Reserved at once (no await since the check): a second create of the same id is 409 while
        # this one evaluates, instead of both passing the check and the last write replacing the first.
        ctx.pending_runs[explicit] = {
            "runId": explicit,
            "mode": job.mode,
            "status": "running",
            "links": {"self": f"/v1/runs/{explicit}"},
        }


def claim_live_run(access: Access, body: dict[str, Any]) -> None:
    """Authorize a live create request's run id; with auth on a generated id goes into `options.runId`."""
    options = body.get("options")
    explicit = options.get("runId") if isinstance(options, dict) else None
    run_id = access.new_run(explicit if isinstance(explicit, str) else None, new_live_run_id)
    if run_id is not None:
        body["options"] = {**(options if isinstance(options, dict) else {}), "runId": run_id}


def bundle_source_run(data_dir: Path, ref: Any) -> str | None:
    """The run a telemetry bundle under `<dataDir>/bundles/` was captured from (its `provenance.runId`)."""
    if not isinstance(ref, str) or not ref:
        return None
    try:
        manifest = orjson.loads((resolve_inside(data_dir / "bundles", ref) / "manifest.json").read_bytes())
    except (ValueError, OSError):  # not a bundle: the run request fails on it by itself
        return None
    provenance = manifest.get("provenance") if isinstance(manifest, dict) else None
    run_id = provenance.get("runId") if isinstance(provenance, dict) else None
    return run_id if isinstance(run_id, str) else None


__all__ = ["bundle_source_run", "claim_batch_run", "claim_live_run", "ensure_free"]
