"""Batch runs: a model (plus optional telemetry) → evaluated series, warnings and a RunResult.

A batch run is the live engine's evaluation over the whole grid at once (SPEC §2: batch ≡ live).
`V` is the evaluated matrix: `V[row, bin]`, rows as the plan numbers the series.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine_live.derived.live_hooks import CODES, key_spec, mismatch_entities, node_flag_block
from engine_live.derived.node_checks import CHECKS
from engine_live.derived.stack import StackLayout
from engine_live.model.build import build_model
from engine_live.model.document import ModelDoc, load_model
from engine_live.model.series_defs import ModelGraph
from engine_live.model.text import dump_yaml
from engine_live.plan.budget import check_cells
from engine_live.plan.compiler import ZERO, Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.plan.run_result import RunResult, SeriesOut
from engine_live.warnings.book import WarningBook


@dataclass(frozen=True)
class BatchRun:
    """A model evaluated over its whole grid: document, graph, plan, matrix and result."""

    doc: ModelDoc
    graph: ModelGraph
    plan: Plan
    matrix: np.ndarray
    result: RunResult

    def series(self, sid: str) -> np.ndarray:
        """One evaluated series by id."""
        values: np.ndarray = self.matrix[self.plan.row[sid]]
        return values


def scenario_hash(spec_text: str, seed: int) -> str:
    """sha256 of the model text and the seed (`spec_text + "\\n" + str(seed)`)."""
    return "sha256:" + hashlib.sha256(f"{spec_text}\n{seed}".encode()).hexdigest()


def new_run_id(spec_hash: str | None = None, now: datetime | None = None) -> str:
    """`run_deterministic_<hash prefix>` for a scenario hash, else `run_<UTC stamp>_<random hex>`."""
    if spec_hash is not None:
        return f"run_deterministic_{spec_hash.removeprefix('sha256:')[:8]}"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"run_{stamp}_{secrets.token_hex(4)}"


def spec_text_of(doc: ModelDoc, source_text: str | None) -> str:
    """The model as run: the original text when it has no provenance, else re-dumped without it."""
    if source_text is not None and doc.provenance is None:
        return source_text
    return dump_yaml(doc.data)


def _node_warnings(book: WarningBook, plan: Plan, V: np.ndarray, gaps: Mapping[str, np.ndarray] | None) -> None:
    """Every node check of every topology node over the whole grid at once: the stacked (nodes × bins)
    path live runs take (`derived.stack`, `live_hooks.node_flag_block`), which equals `node_flags` of
    `derive` per node bit for bit; `gaps` (bundle runs) are per node."""
    layout = StackLayout.from_plan(plan)
    if not layout.ids:
        return
    block = layout.gather(V, 0, 0, V.shape[1])
    if gaps:
        gap = np.zeros_like(block.gap)
        for i, node_id in enumerate(layout.ids):
            node_gap = gaps.get(node_id)
            if node_gap is not None:
                gap[i] = node_gap[: gap.shape[1]]
        block = replace(block, gap=gap)
    mask, value = node_flag_block(layout, block)
    bins = np.arange(V.shape[1], dtype=np.int64)
    for code_index, code in enumerate(CODES):
        spec = CHECKS[code]
        for i in np.flatnonzero(mask[code_index].any(axis=1)).tolist():
            key = (code, layout.ids[i], None)
            book.set_flags(
                key,
                bins,
                mask[code_index, i],
                value[code_index, i],
                severity=spec.severity,
                message_fn=spec.message,
                worst=spec.worst,
            )


def collect_warnings(
    graph: ModelGraph, plan: Plan, V: np.ndarray, gaps: Mapping[str, np.ndarray] | None = None
) -> list[dict[str, Any]]:
    """Warnings of a whole evaluated grid: model info, non-finite values, and per-node checks."""
    book = WarningBook()
    bins = np.arange(V.shape[1], dtype=np.int64)
    for sid, row in plan.row.items():
        if sid == ZERO or plan.kind_of.get(sid) in ("const", "telemetry", "file"):
            continue
        bad = ~np.isfinite(V[row])
        if bad.any():
            book.set_flags(
                ("nan_detected", None, sid),
                bins,
                bad,
                np.zeros(len(bins)),
                severity="warning",
                message=f"series '{sid}' has non-finite values",
            )
    for key, row in mismatch_entities(plan):
        off = V[row]
        if off.any():
            severity, worst, _, message = key_spec(key)
            book.set_flags(key, bins, off != 0, off, severity=severity, message=message, worst=worst)  # type: ignore[arg-type]
    _node_warnings(book, plan, V, gaps)
    info = [{**warning, "bins": [], "count": 0, "value": warning.get("value")} for warning in graph.info]
    return info + book.active()


def topology_view(graph: ModelGraph) -> dict[str, Any]:
    """topology.json: nodes with their resolved semantics, and edges."""
    return {
        "nodes": [
            {"id": binding.id, "kind": binding.kind, "semantics": dict(binding.fields), "ui": binding.ui}
            | binding.extras()  # declaredKind, aliases, labels when the model has them (SPEC §13)
            for binding in graph.topo
        ],
        "edges": [{"from": edge.source, "to": edge.target, "weight": edge.weight} for edge in graph.edges],
    }


def output_series(graph: ModelGraph, plan: Plan, V: np.ndarray) -> list[SeriesOut]:
    """The series a run writes: `outputs` when the model lists them, else every series; each
    class-bearing one is followed by its per-class series (`<id>@<ID>@<classId>`, SPEC §14)."""
    component = {sid: binding.id for binding in graph.topo for sid in binding.fields.values()}
    chosen: list[tuple[str, str | None]]
    if graph.outputs is not None:
        chosen = [(sid, name) for sid, name in graph.outputs if sid is not None]
    else:
        hidden = graph.input_rows()
        chosen = [(sid, None) for sid in plan.names if sid != ZERO and sid not in graph.class_of and sid not in hidden]
    out: list[SeriesOut] = []
    for sid, name in chosen:
        kind = plan.kind_of.get(sid, "expr")
        out.append(SeriesOut(sid, V[plan.row[sid]], kind, component_id=component.get(sid), path_name=name))
        for row_id in graph.class_rows(sid):
            class_id = graph.class_of[row_id][1]
            class_name = None if name is None else _class_file(name, class_id)
            values = V[plan.row[row_id]]
            out.append(
                SeriesOut(sid, values, kind, component_id=component.get(sid), class_id=class_id, path_name=class_name)
            )
    return out


def _class_file(name: str, class_id: str) -> str:
    """`served.csv` → `served@Alpha.csv`: the file of one class of a series written under `outputs[].as`."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}@{class_id}.{ext}" if dot else f"{name}@{class_id}"


def run_model(
    source: str | dict[str, Any],
    *,
    base_dir: Path | None = None,
    telemetry: Mapping[str, np.ndarray] | None = None,
    mode: str = "simulation",
    run_id: str | None = None,
    deterministic_run_id: bool = False,
    created_utc: str | None = None,
    adjustments: list[dict[str, Any]] | None = None,
    max_cells: int | None = None,
) -> BatchRun:
    """Load, compile and evaluate a model over its whole grid. Raises ModelError on a bad model.
    `adjustments` (model/adjustments.json of a live run) are applied as the live run did (§12.8).
    `max_cells` bounds the evaluation matrix (`TooLargeError` before it is allocated)."""
    doc = load_model(source, base_dir=base_dir)
    graph = build_model(doc)
    plan = compile_model(graph)
    check_cells(plan, doc.grid.bins, max_cells)
    if adjustments:
        from engine_live.model.patch import evaluate_with_adjustments

        assert doc.grid.bins is not None
        plan, V = evaluate_with_adjustments(dict(doc.data), adjustments, doc.grid.bins, telemetry, base_dir)
        graph = plan.graph
    else:
        V = evaluate_batch(plan, telemetry)
    spec_text = spec_text_of(doc, source if isinstance(source, str) else None)
    shash = scenario_hash(spec_text, doc.seed)
    rid = run_id or new_run_id(shash if deterministic_run_id else None)
    result = RunResult(
        run_id=rid,
        mode=mode,
        status="completed",
        grid=doc.grid,
        spec_text=spec_text,
        seed=doc.seed,
        rng=doc.rng,
        series=output_series(graph, plan, V),
        warnings=collect_warnings(graph, plan, V),
        created_utc=created_utc or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        topology=topology_view(graph),
        provenance=doc.provenance,
        template_id=(doc.provenance or {}).get("templateId"),
        adjustments=list(adjustments or []),
    )
    return BatchRun(doc, graph, plan, V, result)
