"""Telemetry bundles (SPEC §5, §12.13): load a bundle folder, bind it to a model, replay it as frames.

Reading and checking a folder lives in `ingestion.bundle_reader`; this module binds a bundle to a
model. A file binds to its topology node's semantics field (nodeId = topology node id, metric =
field) and replaces that series whatever its definition (info `telemetry_replaces_series`);
`telemetry_model` rewrites a model so such series become telemetry sources, since a batch run
evaluates every other definition. The bundle's binMinutes must equal the model's (422
`grid_mismatch`). `iter_frames` turns a bundle into the live ingest frames of §6.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from engine_live.errors import GridMismatchError
from engine_live.model.series_defs import ModelGraph, TelemetryDef
from ingestion.bundle_reader import (
    METRICS,
    Bundle,
    BundleSeries,
    load_bundle,
    resolve_bundle,
    warning,
)


def _binding(graph: ModelGraph, node: str, metric: str) -> str | None:
    for binding in graph.topo:
        if binding.id == node:
            return binding.fields.get(metric)
    return None


def bundle_telemetry(bundle: Bundle, graph: ModelGraph) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Series values by series id for `run_model(telemetry=...)`, and the bundle's warnings.

    Raises GridMismatchError (422) when the bundle's binMinutes differ from the model's."""
    if bundle.grid.bin_minutes != graph.grid.bin_minutes:
        raise GridMismatchError(
            f"bundle bins are {bundle.grid.bin_minutes} minutes, the model's {graph.grid.bin_minutes}",
            bundleBinMinutes=bundle.grid.bin_minutes,
            modelBinMinutes=graph.grid.bin_minutes,
        )
    n = graph.grid.bins if graph.grid.bins is not None else bundle.bins
    warnings = list(bundle.warnings)
    if bundle.grid.start and graph.grid.start and bundle.grid.start != graph.grid.start:
        warnings.append(
            warning(
                "start_mismatch",
                f"bundle starts {bundle.grid.start}, the model {graph.grid.start}; bins are matched by index",
                severity="info",
            )
        )
    if n > bundle.bins:
        warnings.append(
            warning(
                "length_mismatch",
                f"bundle has {bundle.bins} bins, the model {n}: bins {bundle.bins}-{n - 1} zero-filled",
                bins=list(range(bundle.bins, n)),
                value=float(bundle.bins),
            )
        )
    owner = {out: definition for definition in graph.defs for out in definition.outputs}
    telemetry: dict[str, np.ndarray] = {}
    for series in bundle.series:
        sid = _binding(graph, series.node_id, series.metric)
        if sid is None:
            warnings.append(
                warning(
                    "unbound_telemetry",
                    f"{series.node_id}.{series.metric}: no such topology node field; skipped",
                    node=series.node_id,
                    severity="info",
                    metric=series.metric,
                )
            )
            continue
        values = np.zeros(n)
        given = min(n, len(series.values))
        values[:given] = series.values[:given]
        if sid in telemetry:
            if not np.array_equal(telemetry[sid], values, equal_nan=True):
                warnings.append(
                    warning(
                        "telemetry_conflict",
                        f"{series.node_id}.{series.metric}: series '{sid}' is already fed by another file; "
                        "the first one is kept",
                        node=series.node_id,
                    )
                )
            continue
        if not isinstance(owner.get(sid), TelemetryDef):
            warnings.append(
                warning(
                    "telemetry_replaces_series",
                    f"{series.node_id}.{series.metric}: telemetry replaces the definition of series '{sid}'",
                    node=series.node_id,
                    severity="info",
                    seriesId=sid,
                )
            )
        telemetry[sid] = values
    missing = [sid for sid in graph.telemetry_ids() if sid not in telemetry]
    if missing:
        warnings.append(
            warning(
                "telemetry_missing",
                f"telemetry series without bundle data (zero): {missing}",
                value=float(len(missing)),
            )
        )
    return telemetry, warnings


def telemetry_model(model: dict[str, Any], graph: ModelGraph, series_ids: Iterable[str]) -> dict[str, Any]:
    """A copy of parsed model data in which every bound series is a telemetry source.

    Nodes become `{id, kind: const, source: telemetry}`; a `file:` semantics field becomes
    `telemetry`; a synthesized topology queue becomes a telemetry node of the same id."""
    todo = set(series_ids) - set(graph.telemetry_ids())
    if not todo:
        return model
    data = copy.deepcopy(model)
    nodes = data.setdefault("nodes", [])
    for i, node in enumerate(nodes):
        if isinstance(node, dict) and node.get("id") in todo:
            nodes[i] = {"id": node["id"], "kind": "const", "source": "telemetry"}
            todo.discard(node["id"])
    topo = {node.get("id"): node for node in (data.get("topology") or {}).get("nodes") or [] if isinstance(node, dict)}
    for binding in graph.topo:
        sem = topo.get(binding.id, {}).setdefault("semantics", {})
        for fld, sid in binding.fields.items():
            if sid not in todo:
                continue
            if isinstance(sem.get(fld), str) and sem[fld].startswith("file:"):
                sem[fld] = "telemetry"
            elif fld == "queueDepth":
                nodes.append({"id": sid, "kind": "const", "source": "telemetry"})
                sem[fld] = sid
            else:
                continue
            todo.discard(sid)
    return data


def gap_masks(bundle: Bundle, graph: ModelGraph) -> dict[str, np.ndarray]:
    """Per topology node, the bins where a bound field of the node had no value (zero-filled):
    the `gaps` that colour a node gray with reason `data_gap` (§3)."""
    n = graph.grid.bins if graph.grid.bins is not None else bundle.bins
    masks: dict[str, np.ndarray] = {}
    for series in bundle.series:
        if _binding(graph, series.node_id, series.metric) is None:
            continue
        missing = np.ones(n, dtype=bool)
        given = min(n, len(series.present))
        missing[:given] = ~series.present[:given]
        masks[series.node_id] = masks[series.node_id] | missing if series.node_id in masks else missing
    return {node: mask for node, mask in masks.items() if mask.any()}


def iter_frames(bundle: Bundle, graph: ModelGraph) -> Iterator[list[dict[str, Any]]]:
    """Per bin, the live ingest frames (§6) `{"bin", "node", <metric>: value, ...}` of the bundle's
    given values for telemetry-fed node fields; gap bins are left out so the live run sees the gap."""
    tele = set(graph.telemetry_ids())
    per_node: dict[str, list[BundleSeries]] = {}
    for series in bundle.series:
        if _binding(graph, series.node_id, series.metric) in tele:
            per_node.setdefault(series.node_id, []).append(series)
    n = min(bundle.bins, graph.grid.bins) if graph.grid.bins is not None else bundle.bins
    for bin_index in range(n):
        frames = []
        for node, items in per_node.items():
            frame: dict[str, Any] = {"bin": bin_index, "node": node}
            for series in items:
                value = float(series.values[bin_index])
                if series.present[bin_index] and np.isfinite(value):
                    frame[series.metric] = int(value) if value.is_integer() else value
            if len(frame) > 2:
                frames.append(frame)
        yield frames


__all__ = [
    "METRICS",
    "Bundle",
    "BundleSeries",
    "bundle_telemetry",
    "gap_masks",
    "iter_frames",
    "load_bundle",
    "resolve_bundle",
    "telemetry_model",
]
