"""Model documents → primitive series definitions (SPEC §1–§2).

Resolves topology semantics (series ids, `file:`, `telemetry`, `self`), synthesizes topology
queues with the snake-case naming, retry echo, shared-capacity constraints and router targets,
and checks every reference. Errors name the node and the field.

The work is done by `engine_live.model.topology_builder.TopologyBuilder` (the topology) on top of
`engine_live.model.node_builder.SeriesBuilder` (the nodes list); this module runs the steps in
order and raises every problem together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_live.model.class_expand import expand_classes
from engine_live.model.document import ModelDoc, load_model, model_error
from engine_live.model.outputs import resolve_outputs
from engine_live.model.series_defs import ModelGraph
from engine_live.model.topology_builder import TopologyBuilder


def build_model(doc: ModelDoc) -> ModelGraph:
    """Resolve a validated document into primitive series definitions. Raises ModelError."""
    builder = TopologyBuilder(doc)
    for spec in doc.nodes:
        builder.node(spec)
    builder.routers(doc.nodes)
    topo = builder.topology() if not builder.errors else []
    topo_ids = {node.id for node in doc.topo_nodes}
    for edge in doc.edges:
        for end in (edge.source, edge.target):
            if end not in topo_ids:
                builder.err("topology.edges", f"unknown topology node '{end}'")
    builder.check_refs()
    outputs = None
    if doc.outputs is not None:
        members = {binding.id: frozenset(binding.fields.values()) for binding in topo}
        outputs = resolve_outputs(doc.outputs, builder.owner, members, builder.err)
    if builder.errors:
        raise model_error(builder.errors)
    graph = ModelGraph(
        doc.grid,
        tuple(builder.defs.values()),
        tuple(topo),
        doc.edges,
        doc.seed,
        outputs,
        frozenset(builder.hidden),
        tuple(builder.info),
        routes=tuple(builder.routes),
    )
    if doc.classes is None:
        return graph
    graph, errors = expand_classes(graph, doc.classes)
    if errors:
        raise model_error(errors)
    return graph


def load_graph(source: str | dict[str, Any], *, base_dir: Path | None = None, live: bool = False) -> ModelGraph:
    """Validate (`load_model`) and build (`build_model`) a model given as text or parsed data."""
    return build_model(load_model(source, base_dir=base_dir, live=live))
