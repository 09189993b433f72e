"""Telemetry bundles (SPEC §5, §12.13): load a bundle folder, bind it to a model, replay it as frames.

Reading and checking a folder lives in `ingestion.bundle_reader`; this module binds a bundle to a
model. A file binds to its topology node's semantics field (a per-class file of a telemetry-fed
class source feeds that class, SPEC §14; `bound_series`) (nodeId = topology node id, metric =
field) and replaces that series whatever its definition (info `telemetry_replaces_series`);
`telemetry_model` rewrites a model so such series become telemetry sources, since a batch run
evaluates every other definition. The bundle's binMinutes must equal the model's (422
`grid_mismatch`). `iter_frames` turns a bundle into the live ingest frames of §6.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from engine_live.errors import GridMismatchError
from engine_live.model.series_defs import ModelGraph, TelemetryDef
from engine_live.state.class_inputs import settle_batch
from ingestion.bundle_reader import (
    METRICS,
    Bundle,
    BundleSeries,
    load_bundle,
    resolve_bundle,
    warning,
)

TOTAL_CLASS = "DEFAULT"


def _binding(graph: ModelGraph, node: str, metric: str) -> str | None:
    for binding in graph.topo:
        if binding.id == node:
            return binding.fields.get(metric)
    return None


def _class_inputs(graph: ModelGraph) -> dict[tuple[str, str], str]:
    """(series, classId) → the hidden class input row of a telemetry-fed class source (SPEC §14)."""
    return {
        (one.source, class_id): row
        for one in graph.class_inputs
        for class_id, row in zip(graph.classes, one.inputs, strict=True)
    }


def bound_series(bundle: Bundle, graph: ModelGraph, warnings: list[dict[str, Any]]) -> list[BundleSeries]:
    """The bundle's series as the model takes them: totals, and per-class files of a series that takes
    classes (SPEC §14). Class files of any other series are summed into its total when the bundle has
    no total for it, else left out (info `class_summed` either way)."""
    inputs = _class_inputs(graph)
    totals = {(one.node_id, one.metric) for one in bundle.series if one.class_id == TOTAL_CLASS}
    out: list[BundleSeries] = []
    summed: dict[tuple[str, str], BundleSeries] = {}
    for one in bundle.series:
        key = (one.node_id, one.metric)
        sid = _binding(graph, *key)
        if one.class_id == TOTAL_CLASS or (sid, one.class_id) in inputs:
            out.append(one)
            continue
        what = "left out: the bundle has the total" if key in totals else "summed into the total"
        warnings.append(
            warning(
                "class_summed",
                f"{one.node_id}.{one.metric}: class '{one.class_id}' {what} (the model takes no classes there)",
                node=one.node_id,
                severity="info",
                metric=one.metric,
            )
        )
        if key in totals:
            continue
        acc = summed.get(key)
        if acc is None:
            summed[key] = replace(one, class_id=TOTAL_CLASS)
        else:
            summed[key] = replace(acc, values=acc.values + one.values, present=acc.present | one.present)
    return out + list(summed.values())


def _grid_warnings(bundle: Bundle, graph: ModelGraph, n: int) -> list[dict[str, Any]]:
    """`start_mismatch` and `length_mismatch` of a bundle bound to a model of `n` bins."""
    warnings: list[dict[str, Any]] = []
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
    return warnings


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
    warnings = list(bundle.warnings) + _grid_warnings(bundle, graph, n)
    owner = {out: definition for definition in graph.defs for out in definition.outputs}
    telemetry: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    inputs = _class_inputs(graph)
    for series in bound_series(bundle, graph, warnings):
        sid = _binding(graph, series.node_id, series.metric)
        if sid is not None and series.class_id != TOTAL_CLASS:
            sid = inputs[(sid, series.class_id)]
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
        mask = np.zeros(n, dtype=bool)
        mask[:given] = series.present[:given]
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
        telemetry[sid], present[sid] = values, mask
    settle_batch(graph, telemetry, present, n)
    hidden = graph.input_rows()
    missing = [sid for sid in graph.telemetry_ids() if sid not in telemetry and sid not in hidden]
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
    fields: dict[tuple[str, str], np.ndarray] = {}  # a total or any class given: present
    for series in bound_series(bundle, graph, []):
        if _binding(graph, series.node_id, series.metric) is None:
            continue
        present = np.zeros(n, dtype=bool)
        given = min(n, len(series.present))
        present[:given] = series.present[:given]
        key = (series.node_id, series.metric)
        fields[key] = fields[key] | present if key in fields else present
    masks: dict[str, np.ndarray] = {}
    for (node, _), present in fields.items():
        masks[node] = masks[node] | ~present if node in masks else ~present
    return {node: mask for node, mask in masks.items() if mask.any()}


def iter_frames(bundle: Bundle, graph: ModelGraph) -> Iterator[list[dict[str, Any]]]:
    """Per bin, the live ingest frames (§6) `{"bin", "node", <metric>: value, ...}` of the bundle's
    given values for telemetry-fed node fields; gap bins are left out so the live run sees the gap."""
    tele = set(graph.telemetry_ids())
    per_node: dict[tuple[str, str], list[BundleSeries]] = {}
    for series in bound_series(bundle, graph, []):
        if _binding(graph, series.node_id, series.metric) in tele:
            per_node.setdefault((series.node_id, series.class_id), []).append(series)
    n = min(bundle.bins, graph.grid.bins) if graph.grid.bins is not None else bundle.bins
    for bin_index in range(n):
        frames = []
        for (node, class_id), items in per_node.items():
            frame: dict[str, Any] = {"bin": bin_index, "node": node}
            if class_id != TOTAL_CLASS:
                frame["classId"] = class_id
            for series in items:
                value = float(series.values[bin_index])
                if series.present[bin_index] and np.isfinite(value):
                    frame[series.metric] = int(value) if value.is_integer() else value
            if len(frame) > (3 if "classId" in frame else 2):
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
