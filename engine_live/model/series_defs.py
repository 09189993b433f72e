"""Primitive series definitions: what a model becomes after topology synthesis, before compiling.

Every model reduces to these few kinds; routers and retry echo become expressions, topology
queues become QueueDefs, shared capacity becomes a CapDef.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine_live.expressions.syntax import Expr
from engine_live.model.class_defs import ClassInput, ClassQueueDef, ClassSplitDef
from engine_live.model.grid import Grid
from engine_live.model.node_specs import Dispatch
from engine_live.model.topology_specs import EdgeSpec


@dataclass(frozen=True)
class ConstDef:
    """A series of given values: a const node, a `file:` CSV or a pmf's expected value."""

    id: str
    values: np.ndarray
    kind: str = "const"  # const | file | pmf (expected value)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return (self.id,)


@dataclass(frozen=True)
class TelemetryDef:
    """A series fed by telemetry (ingested bins)."""

    id: str

    kind = "telemetry"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return (self.id,)


@dataclass(frozen=True)
class ExprDef:
    """A series computed by an expression (also routers and retry echo)."""

    id: str
    expr: Expr
    initial: float | None = None
    kind: str = "expr"  # expr | router | retryEcho

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return (self.id,)


@dataclass(frozen=True)
class PmfSampleDef:
    """A series sampled per bin from a pmf (pcg32, seeded)."""

    id: str
    values: tuple[float, ...]
    probabilities: tuple[float, ...]
    seed: int

    kind = "pmf"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return (self.id,)


@dataclass(frozen=True)
class QueueDef:
    """A queue with its inflow, outflow, loss, WIP limit and dispatch; it also outputs its outflow and overflow."""

    id: str
    inflow: str | None
    outflow: str | None
    loss: str | None
    initial: float
    wip_limit: float | None
    wip_series: str | None
    overflow_to: str | None  # id of the queue whose inflow this queue's overflow joins
    dispatch: Dispatch | None
    outflow_id: str
    overflow_id: str
    extra_inflows: tuple[str, ...] = ()  # overflow series of queues that overflow into this one

    kind = "queue"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return (self.id, self.outflow_id, self.overflow_id)


@dataclass(frozen=True)
class CapDef:
    """Shared capacity: members' demands capped to C·d_i/D when D > C."""

    id: str
    members: tuple[tuple[str, str], ...]  # (capped series id, demand series id)
    capacity: str

    kind = "constraint"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The series ids this definition produces."""
        return tuple(out for out, _ in self.members)


SeriesDef = ConstDef | TelemetryDef | ExprDef | PmfSampleDef | QueueDef | CapDef | ClassSplitDef | ClassQueueDef


@dataclass(frozen=True)
class RoutePart:
    """One route of a router: `classes` (a class route) or `weight` out of the router's `total_weight`."""

    router: str
    source: str
    target: str
    classes: tuple[str, ...]
    weight: float | None
    total_weight: float
    routed: tuple[str, ...]  # every class the router's class routes name


@dataclass(frozen=True)
class TopoBinding:
    """A topology node with its semantic fields resolved to series ids."""

    id: str
    kind: str
    fields: dict[str, str]  # arrivals, served, errors, capacity, queueDepth, ... → series id
    parallelism: float | str | None
    sla_min: float | None
    telemetry_fields: frozenset[str]
    ui: dict[str, Any] | None
    constraint: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # metric → display name (upstream `aliases`)
    labels: dict[str, Any] = field(default_factory=dict)  # exhaustedPolicy, backoffStrategy, maxAttempts
    declared_kind: str | None = None  # upstream's kind when it is evaluated as `kind` (e.g. dependency)

    def extras(self) -> dict[str, Any]:
        """`declaredKind`, `aliases` and `labels` as the wire shows them (only those present)."""
        out: dict[str, Any] = {}
        if self.declared_kind is not None:
            out["declaredKind"] = self.declared_kind
        if self.aliases:
            out["aliases"] = dict(self.aliases)
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class ModelGraph:
    """A model reduced to primitive series definitions, with its topology bindings."""

    grid: Grid
    defs: tuple[SeriesDef, ...]
    topo: tuple[TopoBinding, ...]
    edges: tuple[EdgeSpec, ...]
    seed: int
    outputs: tuple[tuple[str, str | None], ...] | None
    hidden: frozenset[str] = field(default_factory=frozenset)
    info: tuple[dict[str, Any], ...] = ()
    classes: tuple[str, ...] = ()  # declared classes (SPEC §14); empty for a class-less model
    class_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # class row -> (series, classId)
    routes: tuple[RoutePart, ...] = ()
    class_inputs: tuple[ClassInput, ...] = ()  # telemetry-fed class sources and their hidden input rows

    def input_rows(self) -> frozenset[str]:
        """The hidden telemetry rows of class inputs (never addressed, written or shown as series)."""
        return frozenset(row for one in self.class_inputs for row in one.rows)

    def class_rows(self, series_id: str) -> tuple[str, ...]:
        """The per-class rows of a series (empty when it carries no classes)."""
        if not self.classes or f"{series_id}@{self.classes[0]}" not in self.class_of:
            return ()
        return tuple(f"{series_id}@{class_id}" for class_id in self.classes)

    def telemetry_ids(self) -> tuple[str, ...]:
        """The ids of the telemetry series, in definition order (class input rows included)."""
        return tuple(definition.id for definition in self.defs if isinstance(definition, TelemetryDef))
