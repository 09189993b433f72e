"""Canonical artifacts of a live run at close (SPEC §4, §12.7): the evaluated bins as a RunResult."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np

from engine_live.batch_run import collect_warnings, output_series, topology_view
from engine_live.events import RunStatus
from engine_live.run_result import RunResult
from snapshot_writer.artifacts import write_run_artifacts

if TYPE_CHECKING:
    from compat_api.live_service import LiveService, RunHandle


def live_result(h: RunHandle) -> RunResult:
    run = h.run
    series = run.final_series()
    plan = run.plan
    n = run.last_bin + 1
    V = np.zeros((plan.n_rows, n))
    for sid, values in series.items():
        V[plan.row[sid]] = values
    grid = run.grid.with_bins(n)
    gaps = run.node_gaps(0, n) if n else {}
    provenance = h.provenance
    return RunResult(
        run_id=h.run_id, mode="live",
        status="completed" if run.status in (RunStatus.CLOSING, RunStatus.COMPLETED) else run.status.value,
        grid=grid, spec_text=h.model_text, provenance=provenance,
        template_id=(provenance or {}).get("templateId"),
        seed=h.graph.seed, rng={"kind": "pcg32", "seed": h.graph.seed}, series=output_series(h.graph, plan, V),
        warnings=collect_warnings(h.graph, plan, V, gaps), created_utc=h.created_utc,
        topology=topology_view(h.graph),
        live={"epoch": run.epoch, "seq": run.seq, "lastBin": run.last_bin, "watermark": run.watermark,
              "revision": run.revision},
        live_session=run.epoch, adjustments=list(h.adjustments),
    )  # fmt: skip


async def write_live_artifacts(service: LiveService, h: RunHandle) -> Any:
    result = live_result(h)
    return await asyncio.to_thread(write_run_artifacts, result, h.folder.parent)
