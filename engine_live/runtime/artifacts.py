"""Canonical artifacts of a live run at close and on POST /snapshots (SPEC §4, §6 Retention, §12.7).

The full series of bins 0..lastBin are assembled from the run's committed segments
(`live/segments/*.parquet`, the bins that left memory) and the columns still in its matrix.
`take_view` copies everything needed on the event loop, between two records (the columns, the
counters, the segment list, the model); `build_result` reads the segments and builds the RunResult
and may run in a worker thread, so a slow disk never blocks the loop and later records cannot
tear the view. Segments are read and artifacts written through the `SnapshotStore` port. A damaged
or missing segment raises `SegmentError` (the close then fails the run with that reason instead of
leaving it `closing`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.model.grid import Grid
from engine_live.model.series_defs import ModelGraph
from engine_live.plan.batch_run import collect_warnings, output_series, topology_view
from engine_live.plan.compiler import ZERO, Plan
from engine_live.plan.run_result import RunResult
from engine_live.protocol import RunStatus
from engine_live.runtime.handle import RunHandle
from engine_live.runtime.ports import ArtifactsWritten, SnapshotStore
from engine_live.runtime.snapshot_types import Segment
from engine_live.state.class_inputs import ClassInputIndex
from engine_live.state.run_window import node_gap_masks


@dataclass(frozen=True)
class LiveView:
    """A consistent copy of what the artifacts of a live run are built from."""

    run_id: str
    live_dir: Path
    plan: Plan
    graph: ModelGraph
    telemetry_ids: tuple[str, ...]
    first: int  # first bin of V/P (the matrix's base); bins below come from `segments`
    V: NDArray[np.float64]
    P: NDArray[np.bool_]
    segments: tuple[Segment, ...]
    status: RunStatus
    epoch: str
    seq: int
    last_bin: int
    watermark: int
    revision: int
    model_text: str
    provenance: dict[str, Any] | None
    created_utc: str
    adjustments: tuple[dict[str, Any], ...]
    grid: Grid


def take_view(h: RunHandle) -> LiveView:
    """Copy the run's evaluated columns and counters (call on the event loop, between two records)."""
    run = h.run
    first, V, P = run.held_columns()
    return LiveView(
        run_id=h.run_id,
        live_dir=h.folder,
        plan=run.plan,
        graph=h.model.graph,
        telemetry_ids=run.telemetry_ids,
        first=first,
        V=V,
        P=P,
        segments=tuple(h.durable.segments),
        status=run.status,
        epoch=run.epoch,
        seq=run.seq,
        last_bin=run.last_bin,
        watermark=run.watermark,
        revision=run.revision,
        model_text=h.model.text,
        provenance=h.model.provenance,
        created_utc=h.created_utc,
        adjustments=tuple(h.model.adjustments),
        grid=run.grid,
    )


def build_result(view: LiveView, store: SnapshotStore) -> RunResult:
    """Segments + the copied columns → the RunResult of bins 0..lastBin (reads files: off the loop)."""
    plan = view.plan
    n = view.last_bin + 1
    if n > 0:
        V, P = store.assemble(view.live_dir, view.segments, plan.names, view.telemetry_ids, view.first, view.V, view.P)
    else:
        V, P = np.zeros((plan.n_rows, 0)), np.zeros((len(view.telemetry_ids), 0), dtype=bool)
    V[plan.row[ZERO]] = 0.0  # as a batch run has it
    inputs = ClassInputIndex.of(plan.graph, plan.row, view.telemetry_ids)
    present = P if inputs is None else inputs.presence(P)
    gaps = node_gap_masks(plan, view.telemetry_ids, ~present) if n else {}
    provenance, seed = view.provenance, view.graph.seed
    status = view.status
    return RunResult(
        run_id=view.run_id,
        mode="live",
        status="completed" if status in (RunStatus.CLOSING, RunStatus.COMPLETED) else status.value,
        grid=view.grid.with_bins(n),
        spec_text=view.model_text,
        provenance=provenance,
        template_id=(provenance or {}).get("templateId"),
        seed=seed,
        rng={"kind": "pcg32", "seed": seed},
        series=output_series(view.graph, plan, V),
        warnings=collect_warnings(view.graph, plan, V, gaps),
        created_utc=view.created_utc,
        topology=topology_view(view.graph),
        live={
            "epoch": view.epoch,
            "seq": view.seq,
            "lastBin": view.last_bin,
            "watermark": view.watermark,
            "revision": view.revision,
        },
        live_session=view.epoch,
        adjustments=list(view.adjustments),
    )


async def write_live_artifacts(h: RunHandle, store: SnapshotStore) -> ArtifactsWritten:
    """Write the run's canonical artifacts (SPEC §4) into its run folder, off the event loop."""
    view = take_view(h)
    return await asyncio.to_thread(lambda: store.write_artifacts(build_result(view, store), h.folder.parent))


__all__ = ["LiveView", "build_result", "take_view", "write_live_artifacts"]
