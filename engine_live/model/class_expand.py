"""Class expansion (SPEC §14): a built model graph → the same graph plus per-class rows.

Which series carry classes: the sources named by `traffic.arrivals`, then everything that reads a
class-bearing series (expressions, routers, queue inflows, constrained demands), to a fixed point.
Each class-bearing series gets one definition that computes its class rows (`ClassSplitDef`, or
`ClassQueueDef` for a queue's depth, outflow and overflow). Router targets fed by class routes are
rewritten to read the source's class rows. Total series of a class-less model are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from engine_live.expressions.parser import refs_of
from engine_live.expressions.syntax import Binary, Expr, Num, Ref
from engine_live.model.class_defs import (
    MISMATCH_SUFFIX,
    ClassInput,
    ClassQueueDef,
    ClassSplitDef,
    class_input,
    class_row,
)
from engine_live.model.class_rules import ClassRules
from engine_live.model.classes import ClassSpec
from engine_live.model.series_defs import (
    CapDef,
    ExprDef,
    ModelGraph,
    QueueDef,
    RoutePart,
    SeriesDef,
    TelemetryDef,
)


def _reads(definition: SeriesDef) -> dict[str, set[str]]:
    """Output series → the series whose classes it takes (itself excluded)."""
    if isinstance(definition, ExprDef):
        same, shifted = refs_of(definition.expr)
        return {definition.id: (same | shifted) - {definition.id}}
    if isinstance(definition, QueueDef):
        inflows = {ref for ref in (definition.inflow, *definition.extra_inflows) if ref}
        return {out: inflows for out in definition.outputs}
    if isinstance(definition, CapDef):
        return {out: {demand} for out, demand in definition.members}
    return {}


class ClassExpander:
    """Expands one graph; `errors` and `info` collect what it finds."""

    def __init__(self, graph: ModelGraph, spec: ClassSpec) -> None:
        self.graph = graph
        self.spec = spec
        self.classes = spec.ids
        self.errors: list[str] = []
        self.info: list[dict[str, Any]] = []
        self.sources = self._sources()
        self.bearing = self._bearing()
        self.rules = ClassRules(self.classes, self.bearing.__contains__)

    def _sources(self) -> dict[str, tuple[float, ...]]:
        series = {out for definition in self.graph.defs for out in definition.outputs}
        arrivals = {binding.id: binding.fields.get("arrivals") for binding in self.graph.topo}
        out: dict[str, tuple[float, ...]] = {}
        for node_id in self.spec.sources:
            target = node_id if node_id in series else arrivals.get(node_id)
            if target is None or target not in series:
                self.errors.append(f"traffic.arrivals: nodeId '{node_id}' names no series")
                continue
            out[target] = self.spec.source_shares(node_id)
        return out

    def _bearing(self) -> set[str]:
        reads: dict[str, set[str]] = {}
        for definition in self.graph.defs:
            reads.update(_reads(definition))
        for part in self.graph.routes:  # a class route's target reads its router's input
            reads.setdefault(part.target, set()).add(part.source)
        bearing = set(self.sources)
        changed = True
        while changed:
            changed = False
            for out, inputs in reads.items():
                if out not in bearing and inputs & bearing:
                    bearing.add(out)
                    changed = True
        return bearing

    def warn(self, node_id: str, code: str, message: str) -> None:
        """A static class warning about a node (SPEC §14)."""
        self.info.append(
            {"code": code, "severity": "warning", "nodeId": node_id, "message": f"node '{node_id}': {message}"}
        )

    def expand(self) -> ModelGraph:
        """The graph with router targets rewritten and one class definition per class-bearing series."""
        routed = self._router_targets()
        defs = [routed.get(definition.id, definition) for definition in self.graph.defs]
        extra: list[SeriesDef] = []
        for definition in defs:
            extra.extend(self._class_defs(definition))
        class_of = {row: (definition_total, c) for definition_total, c, row in self._rows(extra)}
        inputs = tuple(
            ClassInput(d.id, tuple(class_input(d.id, c) for c in self.classes), d.id + MISMATCH_SUFFIX)
            for d in defs
            if isinstance(d, TelemetryDef) and d.id in self.sources
        )
        hidden = [TelemetryDef(row) for one in inputs for row in one.rows]
        return replace(
            self.graph,
            defs=tuple(defs) + tuple(hidden) + tuple(extra),
            info=self.graph.info + tuple(self.info),
            classes=self.classes,
            class_of=class_of,
            class_inputs=inputs,
        )

    def _rows(self, extra: list[SeriesDef]) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for definition in extra:
            totals = [definition.total] if isinstance(definition, ClassSplitDef) else []
            if isinstance(definition, ClassQueueDef):
                totals = [definition.queue, definition.outflow_id, definition.overflow_id]
            out.extend((total, c, class_row(total, c)) for total in totals for c in self.classes)
        return out

    def _split(self, total: str, raw: tuple[Expr, ...], fallback: tuple[Expr, ...] | None = None) -> ClassSplitDef:
        return ClassSplitDef(f"{total}@", total, self.classes, raw, fallback, self.spec.mix)

    def _class_defs(self, definition: SeriesDef) -> list[SeriesDef]:
        if definition.id in self.sources:
            shares = tuple(Num(share) for share in self.sources[definition.id])
            if isinstance(definition, TelemetryDef):  # the classes sent, else the model's shares
                sent = tuple(Ref(class_input(definition.id, c)) for c in self.classes)
                return [self._split(definition.id, sent, shares)]
            return [self._split(definition.id, shares)]
        if isinstance(definition, ExprDef) and definition.id in self.bearing:
            if definition.id in self.route_raw:
                return [self._split(definition.id, self.route_raw[definition.id])]
            raw, fallback = self.rules.raw(definition.expr)
            return [self._split(definition.id, raw, fallback)]
        if isinstance(definition, QueueDef) and definition.id in self.bearing:
            inflows = tuple(ref for ref in (definition.inflow, *definition.extra_inflows) if ref in self.bearing)
            return [
                ClassQueueDef(
                    f"{definition.id}@",
                    definition.id,
                    definition.outflow_id,
                    definition.overflow_id,
                    definition.initial,
                    self.classes,
                    inflows,
                    self.spec.mix,
                )
            ]
        if isinstance(definition, CapDef):
            return [
                self._split(out, tuple(Ref(class_row(demand, c)) for c in self.classes))
                for out, demand in definition.members
                if demand in self.bearing
            ]
        return []

    def _router_targets(self) -> dict[str, ExprDef]:
        """Targets of routers with class routes and a class-bearing input, rewritten to read its classes."""
        self.route_raw: dict[str, tuple[Expr, ...]] = {}
        by_target: dict[str, list[RoutePart]] = {}
        for part in self.graph.routes:
            by_target.setdefault(part.target, []).append(part)
        self._router_warnings()
        out: dict[str, ExprDef] = {}
        for target, parts in by_target.items():
            if not any(part.routed and part.source in self.bearing for part in parts):
                continue
            totals = [self._route_total(part) for part in parts]
            kept = [total for total in totals if total is not None]
            expr: Expr = kept[0] if kept else Num(0.0)
            for total in kept[1:]:
                expr = Binary("+", expr, total)
            out[target] = ExprDef(target, expr, None, "router")
            self.route_raw[target] = tuple(self._route_class(parts, c) for c in self.classes)
        return out

    def _route_total(self, part: RoutePart) -> Expr | None:
        source = Ref(part.source)
        if part.weight is None:
            picked = [Ref(class_row(part.source, c)) for c in part.classes if c in self.classes]
            if part.source not in self.bearing or not picked:
                return None
            return _plus(picked)
        if part.routed and part.source in self.bearing:
            routed = _plus([Ref(class_row(part.source, c)) for c in part.routed if c in self.classes])
            source_left: Expr = Binary("-", source, routed)
            return Binary("/", Binary("*", source_left, Num(part.weight)), Num(part.total_weight))
        return Binary("/", Binary("*", source, Num(part.weight)), Num(part.total_weight))

    def _route_class(self, parts: list[RoutePart], class_id: str) -> Expr:
        terms: list[Expr] = []
        for part in parts:
            if part.source not in self.bearing:
                continue
            row = Ref(class_row(part.source, class_id))
            if part.weight is None and class_id in part.classes:
                terms.append(row)
            elif part.weight is not None and class_id not in part.routed:
                terms.append(Binary("/", Binary("*", row, Num(part.weight)), Num(part.total_weight)))
        return _plus(terms) if terms else Num(0.0)

    def _router_warnings(self) -> None:
        routers: dict[str, list[RoutePart]] = {}
        for part in self.graph.routes:
            routers.setdefault(part.router, []).append(part)
        for router, parts in routers.items():
            routed = parts[0].routed
            for c in sorted(set(routed) - set(self.classes)):
                self.errors.append(f"node '{router}': routes: class '{c}' is not a declared class")
            if not routed or parts[0].source not in self.bearing:
                if routed:
                    self.warn(
                        router, "router_missing_class_route", "its input carries no classes: class routes carry 0"
                    )
                continue
            weighted = sum(part.weight for part in parts if part.weight is not None)
            missing = [c for c in self.classes if c not in routed]
            twice = sorted({c for c in routed if routed.count(c) > 1})
            if missing and not any(part.weight is not None for part in parts):
                self.warn(router, "router_missing_class_route", f"no route for classes {', '.join(missing)}")
            if twice or (missing and weighted == 0):
                lost = twice or missing
                self.warn(
                    router, "router_class_leakage", f"routed class totals differ from its input: {', '.join(lost)}"
                )


def _plus(parts: Sequence[Expr]) -> Expr:
    out = parts[0]
    for part in parts[1:]:
        out = Binary("+", out, part)
    return out


def expand_classes(graph: ModelGraph, spec: ClassSpec) -> tuple[ModelGraph, list[str]]:
    """The class-expanded graph and its errors (SPEC §14)."""
    expander = ClassExpander(graph, spec)
    expanded = expander.expand()
    return expanded, expander.errors
