"""Which matrix rows a live run's `run_update` carries, and how one bin's values become its deltas.

Built once per plan (at start and after a PATCH): a topology model's deltas are one per topology node
— its semantic fields as `metrics`, its derived values, and for a class-bearing node `byClass{classId:
{metric: value}}` (SPEC §14) from the fields whose series carry classes; a model without topology
sends its visible series. All rows are gathered in one fancy-indexing step per published block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.plan.compiler import ZERO, Plan


@dataclass(frozen=True)
class NodeSlice:
    """One topology node's fields (or one of its classes' fields) in the gathered column."""

    node_id: str
    kind: str
    fields: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class DeltaLayout:
    """The gathered rows and how to read them back per node (or per series)."""

    gather: NDArray[np.intp]
    nodes: tuple[NodeSlice, ...]
    classes: tuple[tuple[int, str, NodeSlice], ...]  # (index into nodes, classId, the class's fields)
    series_ids: tuple[str, ...]

    @classmethod
    def of(cls, plan: Plan) -> DeltaLayout:
        """The layout of `plan`'s run_update deltas."""
        graph = plan.graph
        rows: list[int] = []
        nodes: list[NodeSlice] = []
        classes: list[tuple[int, str, NodeSlice]] = []
        for b in graph.topo:
            names = tuple(b.fields)
            nodes.append(NodeSlice(b.id, b.kind, names, len(rows), len(rows) + len(names)))
            rows.extend(plan.row[b.fields[f]] for f in names)
        for index, b in enumerate(graph.topo):
            for class_id in graph.classes:
                names = tuple(f for f in b.fields if f"{b.fields[f]}@{class_id}" in plan.row)
                if names:
                    classes.append((index, class_id, NodeSlice(b.id, b.kind, names, len(rows), len(rows) + len(names))))
                    rows.extend(plan.row[f"{b.fields[f]}@{class_id}"] for f in names)
        series_ids: tuple[str, ...] = ()
        if not graph.topo:
            shown = set(plan.names) - graph.hidden - graph.class_of.keys() - graph.input_rows() - {ZERO}
            series_ids = tuple(s for s in plan.names if s in shown)
            rows = [plan.row[s] for s in series_ids]
        return cls(np.asarray(rows, dtype=np.intp), tuple(nodes), tuple(classes), series_ids)

    def deltas(self, values: list[Any], derived: dict[str, Any]) -> list[dict[str, Any]]:
        """One bin's deltas from its gathered column `values` and the derived values per node."""
        if not self.nodes:
            return [{"series": dict(zip(self.series_ids, values, strict=True))}]
        out: list[dict[str, Any]] = [
            {
                "nodeId": n.node_id,
                "kind": n.kind,
                "metrics": dict(zip(n.fields, values[n.start : n.end], strict=True)),
                "derived": derived.get(n.node_id, {}),
            }
            for n in self.nodes
        ]
        for index, class_id, n in self.classes:
            out[index].setdefault("byClass", {})[class_id] = dict(zip(n.fields, values[n.start : n.end], strict=True))
        return out
