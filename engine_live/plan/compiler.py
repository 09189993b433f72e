"""Compiler: a model graph → one execution plan over a numpy matrix (rows = series, cols = bins).

Dependencies: a reference inside SHIFT(·, k ≥ 1) is a previous-bin edge, every other reference a
same-bin edge. Strongly connected parts of the full graph must be acyclic in their same-bin edges
(else a CycleError naming the cycle) and become bin-by-bin loops; everything else is levelled
(longest path) and grouped per level: expressions by shape, queues together, so each group runs
as a handful of numpy operations over any bin range.

`engine_live.plan.dependencies` holds the graph analysis, `engine_live.plan.stage_builder` the
construction of each stage; this module puts them in order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from engine_live.model.class_defs import ClassQueueDef, ClassSplitDef
from engine_live.model.series_defs import ConstDef, ExprDef, ModelGraph, QueueDef, SeriesDef, TelemetryDef
from engine_live.plan.dependencies import (
    component_levels,
    expr_lookback,
    order_same_bin,
    series_deps,
    strongly_connected,
)
from engine_live.plan.stage_builder import StageBuilder
from engine_live.plan.stages import BinLoop, QueueGroup, Stage

ZERO = "__zero__"
CAPACITY_WINDOW = 12


@dataclass(frozen=True)
class Plan:
    """A compiled model: the matrix rows of its series and the stages that fill them, in order."""

    graph: ModelGraph
    names: tuple[str, ...]  # row → series id (row 0 is the zero row)
    row: dict[str, int]
    stages: tuple[Stage, ...]
    telemetry_rows: np.ndarray
    lookback: int  # bins of history any evaluation may read
    kind_of: dict[str, str]  # series id → kind (const, expr, queue, ...)

    @property
    def n_rows(self) -> int:
        """Rows of the plan's matrix (the zero row included)."""
        return len(self.names)


def _edges(graph: ModelGraph, owner: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(same-bin, all) dependencies between definition ids."""
    same: dict[str, set[str]] = {}
    shifted: dict[str, set[str]] = {}
    for definition in graph.defs:
        same_refs, shifted_refs = series_deps(definition)
        same[definition.id] = {owner[ref] for ref in same_refs}
        shifted[definition.id] = {owner[ref] for ref in shifted_refs}
    return same, {definition.id: same[definition.id] | shifted[definition.id] for definition in graph.defs}


def _level_stages(
    builder: StageBuilder,
    components: list[list[str]],
    defs: dict[str, SeriesDef],
    edges: dict[str, set[str]],
    same: dict[str, set[str]],
) -> list[Stage]:
    """The stages of one level: loops and single stages first, then expression groups, then queues."""
    stages: list[Stage] = []
    exprs: list[ExprDef] = []
    loop_exprs: list[ExprDef] = []
    queues: list[QueueDef] = []
    splits: list[ClassSplitDef] = []
    class_queues: list[ClassQueueDef] = []
    for component in components:
        if len(component) == 1:
            def_id = component[0]
            definition = defs[def_id]
            looped = def_id in edges[def_id]
            if isinstance(definition, ExprDef):
                (loop_exprs if looped else exprs).append(definition)
            elif isinstance(definition, QueueDef) and not looped:
                queues.append(definition)
            elif isinstance(definition, ClassSplitDef) and not looped:
                splits.append(definition)
            elif isinstance(definition, ClassQueueDef):
                class_queues.append(definition)
            elif isinstance(definition, ConstDef | TelemetryDef):
                continue
            else:
                parts = builder.single(definition)
                stages.append(BinLoop(parts[0].rows, parts) if looped else parts[0])
            continue
        members = order_same_bin(component, same)
        parts = [part for member in members for part in builder.single(defs[member])]
        stages.append(BinLoop(np.concatenate([part.rows for part in parts]), parts))
    stages.extend(builder.expr_groups(exprs))
    stages.extend(BinLoop(group.rows, [group]) for group in builder.expr_groups(loop_exprs))
    if queues:
        stages.append(builder.queue_group(queues))
    stages.extend(builder.class_groups(splits))
    if class_queues:
        stages.append(builder.class_queue_group(class_queues))
    return stages


def compile_model(graph: ModelGraph) -> Plan:
    """Compile a model graph into a plan (raises CycleError on a same-bin cycle)."""
    defs = {definition.id: definition for definition in graph.defs}
    owner = {out: definition.id for definition in graph.defs for out in definition.outputs}
    names = [ZERO] + [out for definition in graph.defs for out in definition.outputs]
    row = {name: i for i, name in enumerate(names)}
    initial: dict[str, float] = {}
    for definition in graph.defs:
        value = definition.initial if isinstance(definition, ExprDef | QueueDef) else None
        if value is not None:
            initial[definition.id] = value
    same, edges = _edges(graph, owner)
    components = strongly_connected([definition.id for definition in graph.defs], edges)
    # Tarjan emits a component after everything it depends on: already dependencies-first
    level = component_levels(components, edges)
    for component in components:  # a same-bin cycle anywhere is an error naming it
        if len(component) > 1 or component[0] in same[component[0]]:
            order_same_bin(component, same)
    builder = StageBuilder(row, owner, initial)
    by_level: dict[int, list[list[str]]] = defaultdict(list)
    for i, component in enumerate(components):
        by_level[level[i]].append(component)
    stages: list[Stage] = []
    consts = [definition for definition in graph.defs if isinstance(definition, ConstDef)]
    if consts:
        stages.append(builder.const_stage(consts))
    for depth in sorted(by_level):
        stages.extend(_level_stages(builder, by_level[depth], defs, edges, same))
    queues = [stage for stage in stages if isinstance(stage, QueueGroup)]
    for stage in queues:  # the compiled recurrence pays off over all of them (`queue_kernel.compiled_steps`)
        stage.plan_queues = sum(len(one.q_rows) for one in queues)
    lookback = CAPACITY_WINDOW
    for definition in graph.defs:
        if isinstance(definition, ExprDef):
            lookback = max(lookback, expr_lookback(definition.expr))
    kind_of = {
        out: (definition.kind if not isinstance(definition, QueueDef) or out == definition.id else "queue_helper")
        for definition in graph.defs
        for out in definition.outputs
    }
    telemetry = builder.rows_of(definition.id for definition in graph.defs if isinstance(definition, TelemetryDef))
    return Plan(graph, tuple(names), row, tuple(stages), telemetry, lookback, kind_of)
