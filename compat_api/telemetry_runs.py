"""Telemetry-mode runs (SPEC §5, §12.13): a model or template bound to a telemetry bundle, evaluated
once through the engine's evaluator (batch ≡ live, so the series equal a live run fed the bundle)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from compat_api.batch_runs import BatchJob, RunRequest, execute, template_source
from compat_api.context import AppContext
from engine_live.errors import InvalidRequestError
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from engine_live.model.text import parse_model_text
from ingestion.bundle import bundle_telemetry, load_bundle, resolve_bundle, telemetry_model


def telemetry_job(req: RunRequest, ctx: AppContext) -> BatchJob:
    """The batch job of a telemetry-mode run request: its model or template bound to the bundle's telemetry."""
    if (req.model is None) == (req.template is None):
        raise InvalidRequestError("give exactly one of model or template", code="invalid_request")
    ref = (req.telemetry or {}).get("bundle")
    if not isinstance(ref, str) or not ref:
        raise InvalidRequestError(
            "telemetry.bundle: required (a folder under bundles/ or an artifact id)", code="invalid_request"
        )
    warnings: list[dict[str, Any]] = []
    if req.template is not None:
        params = {"telemetryDir": f"bundles/{ref}", **req.parameters}
        data, warnings = template_source(req.template, params, ctx.data_dir)
    else:
        assert req.model is not None
        parsed = parse_model_text(req.model) if isinstance(req.model, str) else req.model
        if not isinstance(parsed, dict):
            raise InvalidRequestError("model must be a mapping", code="invalid_request")
        data = parsed
    bundle = load_bundle(resolve_bundle(ref, ctx.data_dir))
    graph = build_model(load_model(data, base_dir=ctx.inputs_dir))
    telemetry, bundle_warnings = bundle_telemetry(bundle, graph)
    data = telemetry_model(data, graph, telemetry)
    return BatchJob(
        data,
        ctx.inputs_dir,
        "telemetry",
        deterministic=req.options.deterministicRunId,
        telemetry=telemetry,
        extra_warnings=warnings + list(bundle_warnings),
    )


async def create_telemetry_run(
    body: dict[str, Any], ctx: AppContext, claim: Callable[[BatchJob], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """Evaluate a telemetry-mode run request and write its artifacts; returns the run's summary.
    `claim` gives the job its authorized run id first (`compat_api.run_claims`)."""
    req = RunRequest.model_validate(body)
    job = telemetry_job(req, ctx)
    if claim is not None:
        await claim(job)
    run, info = await asyncio.to_thread(
        execute, job, ctx.runs_dir, fsync=ctx.settings.fsync, max_cells=ctx.settings.max_batch_cells
    )
    res = run.result
    return {
        "runId": res.run_id,
        "mode": "telemetry",
        "status": res.status,
        "grid": res.grid.to_wire(),
        "binMinutes": res.grid.bin_minutes,
        "modelHash": info.model_hash,
        "warnings": res.warnings,
        "links": {"self": f"/v1/runs/{res.run_id}"},
    }
