"""Checking the `topology` section of a model document (SPEC §1): nodes, edges, constraints.

A topology node names the series of its semantic fields (arrivals, served, ...) and may carry a
queue's initial condition, WIP limit and dispatch schedule; an edge joins two topology nodes;
a constraint shares one served series among its member nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine_live.model.checking import TOPO_HINTS, TOPO_KINDS, TOPO_NODE_KEYS, Problems, check_number, topo_id_problem
from engine_live.model.node_specs import Dispatch, check_dispatch
from engine_live.model.semantics import MAX_LABEL, check_semantics

_KIND_BY_LOWER = {kind.lower(): kind for kind in TOPO_KINDS}


@dataclass(frozen=True)
class TopoNodeSpec:
    """One checked topology node (`kind` as declared, in upstream's canonical spelling)."""

    id: str
    kind: str
    semantics: dict[str, Any]
    initial_queue: float | None
    ui: dict[str, Any] | None
    wip_limit: float | None
    wip_limit_series: str | None
    wip_overflow: str | None
    dispatch: Dispatch | None
    constraints: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EdgeSpec:
    """A topology edge between two node ids (a `node:port` suffix dropped)."""

    source: str
    target: str
    weight: float | None


@dataclass(frozen=True)
class ConstraintSpec:
    """A shared-capacity constraint: the `served` series its members share."""

    id: str
    served: str | None
    arrivals: str | None


def topo_kind(problems: Problems, where: str, raw: Any) -> str:
    """The declared kind in canonical spelling (upstream's kinds are case-insensitive; none is service)."""
    if raw is None:
        return "service"
    kind = _KIND_BY_LOWER.get(raw.lower()) if isinstance(raw, str) else None
    if kind is None:
        problems.error(where, f"kind: must be one of {', '.join(TOPO_KINDS)}, got {raw!r}")
        return "service"
    return kind


def check_topo_node(problems: Problems, raw: Any, index: int, seen: set[str]) -> TopoNodeSpec | None:
    """Entry `index` of `topology.nodes` (its id added to `seen`), or None without an id."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        problems.error(f"topology.nodes[{index}]", "id: required")
        return None
    node_id = raw["id"]
    if (problem := topo_id_problem(node_id)) is not None:
        problems.error(f"topology.nodes[{index}]", problem)
        return None
    where = f"topology node '{node_id}'"
    if node_id in seen:
        problems.error(where, "duplicate id")
    seen.add(node_id)
    problems.check_keys(where, raw, TOPO_NODE_KEYS, TOPO_HINTS)
    kind = topo_kind(problems, where, raw.get("kind"))
    semantics = check_semantics(problems, where, raw.get("semantics"))
    role = raw.get("nodeRole")
    if role is not None:  # upstream: a label, and `sink` makes the node a sink whatever its kind
        if not isinstance(role, str) or len(role) > MAX_LABEL:
            problems.error(where, f"nodeRole: must be text of at most {MAX_LABEL} characters, got {role!r}")
        else:
            semantics.labels["nodeRole"] = role
    initial_condition = raw.get("initialCondition") or {}
    initial_queue = None
    if isinstance(initial_condition, dict):
        problems.check_keys(f"{where}: initialCondition", initial_condition, {"queueDepth"})
        if initial_condition.get("queueDepth") is not None:
            initial_queue = check_number(
                problems, f"{where}: initialCondition.queueDepth", initial_condition["queueDepth"]
            )
    wip_limit = (
        check_number(problems, f"{where}: wipLimit", raw["wipLimit"]) if raw.get("wipLimit") is not None else None
    )
    constraints = raw.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(x, str) for x in constraints):
        problems.error(where, "constraints: must be a list of constraint ids")
        constraints = []
    if len(constraints) > 1:
        problems.error(where, "constraints: a node joins at most one constraint")
    return TopoNodeSpec(
        node_id,
        kind,
        semantics.fields,
        initial_queue,
        raw.get("ui"),
        wip_limit,
        raw.get("wipLimitSeries"),
        raw.get("wipOverflow"),
        check_dispatch(problems, where, raw.get("dispatchSchedule")),
        tuple(constraints),
        semantics.aliases,
        semantics.labels,
    )


def check_edge(problems: Problems, raw: Any, index: int) -> EdgeSpec | None:
    """Entry `index` of `topology.edges` (`from`/`to` or `source`/`target`), or None."""
    if not isinstance(raw, dict):
        problems.error(f"topology.edges[{index}]", "must be a mapping")
        return None
    problems.check_keys(f"topology.edges[{index}]", raw, {"from", "to", "source", "target", "weight"})
    source, target = raw.get("from", raw.get("source")), raw.get("to", raw.get("target"))
    if not isinstance(source, str) or not isinstance(target, str):
        problems.error(f"topology.edges[{index}]", "from and to are required")
        return None
    weight = raw.get("weight")
    if weight is not None:
        weight = check_number(problems, f"topology.edges[{index}].weight", weight)
    return EdgeSpec(source.split(":")[0], target.split(":")[0], weight)


def check_constraint(problems: Problems, raw: Any, index: int) -> ConstraintSpec | None:
    """Entry `index` of `topology.constraints`, or None without an id."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        problems.error(f"topology.constraints[{index}]", "id: required")
        return None
    problems.check_keys(f"constraint '{raw['id']}'", raw, {"id", "semantics"})
    semantics = raw.get("semantics") or {}
    return ConstraintSpec(raw["id"], semantics.get("served"), semantics.get("arrivals"))


def check_topology(problems: Problems, raw: Any) -> tuple[list[TopoNodeSpec], list[EdgeSpec], list[ConstraintSpec]]:
    """The nodes, edges and constraints of a `topology` mapping (missing: all empty)."""
    topology = raw or {}
    if not isinstance(topology, dict):
        problems.error("model", "topology: must be a mapping")
        topology = {}
    problems.check_keys("topology", topology, {"nodes", "edges", "constraints"})
    seen: set[str] = set()
    nodes = [
        node
        for index, entry in enumerate(topology.get("nodes") or [])
        if (node := check_topo_node(problems, entry, index, seen))
    ]
    edges = [
        edge for index, entry in enumerate(topology.get("edges") or []) if (edge := check_edge(problems, entry, index))
    ]
    constraints = [
        constraint
        for index, entry in enumerate(topology.get("constraints") or [])
        if (constraint := check_constraint(problems, entry, index)) is not None
    ]
    return nodes, edges, constraints
