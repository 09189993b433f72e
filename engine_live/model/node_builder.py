"""Series definitions from a model's `nodes` list (SPEC §2), and the registry they go into.

`SeriesBuilder` keeps every series definition with the series it produces (a series id has one
producer), turns each node kind into its primitive definition (const values or a `file:` CSV,
telemetry, expression, pmf, serviceWithBuffer queue, router), synthesizes router targets from the
routes' weights and finally checks that every reference names an existing series. Errors and
info warnings are collected; `engine_live.model.build` raises them together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine_live.errors import ExprSyntaxError
from engine_live.expressions.parser import longest_window, parse_expr, refs_of
from engine_live.expressions.syntax import Binary, Expr, Num, Ref
from engine_live.model.document import ModelDoc
from engine_live.model.node_specs import NodeSpec
from engine_live.model.profiles import profile_weights
from engine_live.model.series_csv import read_series_csv, resolve_inside
from engine_live.model.series_defs import (
    ConstDef,
    ExprDef,
    PmfSampleDef,
    QueueDef,
    RoutePart,
    SeriesDef,
    TelemetryDef,
)


def expected_value(values: list[float], probabilities: list[float]) -> float:
    """Σ value·probability, summed in order (a pmf node that is not sampled)."""
    total = 0.0
    for value, probability in zip(values, probabilities, strict=True):
        total += float(value) * float(probability)
    return total


class SeriesBuilder:
    """The series definitions of one document, keyed by id, with their problems."""

    def __init__(self, doc: ModelDoc) -> None:
        self.doc = doc
        self.bins = doc.grid.bins
        self.defs: dict[str, SeriesDef] = {}
        self.owner: dict[str, str] = {}  # series id -> def id producing it
        self.errors: list[str] = []
        self.info: list[dict[str, Any]] = list(doc.info)
        self.hidden: set[str] = set()
        self.routes: list[RoutePart] = []

    def err(self, where: str, msg: str) -> None:
        """Record an error naming the node and field (`where`)."""
        self.errors.append(f"{where}: {msg}")

    def add(self, definition: SeriesDef, where: str) -> None:
        """Register a definition; an error when one of its outputs already has a producer."""
        for out in definition.outputs:
            if out in self.owner:
                self.err(where, f"series '{out}' already exists")
                return
        self.defs[definition.id] = definition
        for out in definition.outputs:
            self.owner[out] = definition.id

    def exists(self, series_id: str) -> bool:
        """Whether some definition produces `series_id`."""
        return series_id in self.owner

    # -- nodes list -----------------------------------------------------------------------------
    def const_values(self, where: str, raw: Any) -> np.ndarray:
        """The `values` of a const node as float64 (one per grid bin; one number fills every bin)."""
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            if self.bins is None:
                self.err(where, "values: one number needs grid.bins (give a list)")
                return np.zeros(0)
            return np.full(self.bins, float(raw))
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            self.err(where, "values: must be numbers")
            return np.zeros(self.bins or 0)
        if values.ndim != 1:
            self.err(where, "values: must be a flat list of numbers")
        elif self.bins is not None and len(values) != self.bins:
            self.err(where, f"values: expected exactly {self.bins} numbers (grid.bins), got {len(values)}")
        return values

    def file_values(self, where: str, ref: str, node_id: str) -> np.ndarray:
        """The values of a `file:<path>` CSV under the model folder, zero-filled/truncated to the grid."""
        base = self.doc.base_dir
        n = self.bins or 0
        if base is None:
            self.err(where, f"'{ref}': file sources need a model folder")
            return np.zeros(n)
        try:
            csv = read_series_csv(resolve_inside(base, ref[5:]))
        except (OSError, ValueError) as exc:
            self.err(where, f"'{ref}': {exc}")
            return np.zeros(n)
        values = csv.values
        if self.bins is not None and len(values) != self.bins:
            self.info.append(
                {
                    "code": "length_mismatch",
                    "severity": "warning",
                    "nodeId": node_id,
                    "message": f"{ref}: {len(values)} values for {self.bins} bins (zero-filled/truncated)",
                    "value": float(len(values)),
                }
            )
            fixed = np.zeros(self.bins)
            fixed[: min(len(values), self.bins)] = values[: self.bins]
            values = fixed
        return values

    def node(self, spec: NodeSpec) -> None:
        """Add the definition of one `nodes` entry."""
        where, data = f"node '{spec.id}'", spec.data
        if spec.kind == "const":
            source = data.get("source")
            if source == "telemetry":
                self.add(TelemetryDef(spec.id), where)
            elif isinstance(source, str):
                self.add(ConstDef(spec.id, self.file_values(where, source, spec.id), "file"), where)
            else:
                values = self.shaped(where, data, self.const_values(where, data["values"]))
                self.add(ConstDef(spec.id, values), where)
        elif spec.kind == "expr":
            try:
                expr = parse_expr(str(data["expr"]))
            except ExprSyntaxError as exc:
                self.err(where, f"expr: {exc.message}")
                return
            if self.bins is not None and (window := longest_window(expr)) > self.bins:  # SPEC §10: windows ≤ bins
                self.err(where, f"expr: a window of {window} bins is longer than the grid ({self.bins} bins)")
                return
            initial = float(data["initial"]) if "initial" in data else None
            self.add(ExprDef(spec.id, expr, initial), where)
        elif spec.kind == "pmf":
            self.pmf(spec, where)
        elif spec.kind == "serviceWithBuffer":
            self.add(
                QueueDef(
                    spec.id,
                    data.get("inflow"),
                    data.get("outflow"),
                    data.get("loss"),
                    float(data.get("initial", 0.0)),
                    float(data["wipLimit"]) if "wipLimit" in data else None,
                    data.get("wipLimitSeries"),
                    data.get("wipOverflow"),
                    data.get("dispatchSchedule"),
                    f"{spec.id}_outflow",
                    f"{spec.id}_overflow",
                ),
                where,
            )
        elif spec.kind == "router":
            self.add(ExprDef(spec.id, Ref(data["inputs"]["queue"]), None, "router"), where)

    def shaped(self, where: str, data: dict[str, Any], values: np.ndarray) -> np.ndarray:
        """`values` multiplied per bin by the node's `profile` weights (as given without one)."""
        if "profile" not in data:
            return values
        try:
            weights = profile_weights(data["profile"], self.bins)
        except ValueError as exc:
            self.err(where, f"profile: {exc}")
            return values
        if len(values) != len(weights):
            return values  # a values length error is already reported
        shaped: np.ndarray = values * weights
        return shaped

    def pmf(self, spec: NodeSpec, where: str) -> None:
        """A pmf node: sampled per bin (`sample: true`), else its expected value in every bin (shaped by
        its `profile`). Probabilities arrive renormalized when they did not sum to 1."""
        pmf = spec.data["pmf"]
        values = [float(value) for value in pmf["values"]]
        probabilities = [float(probability) for probability in pmf["probabilities"]]
        if pmf.get("sample"):
            self.add(
                PmfSampleDef(spec.id, tuple(values), tuple(probabilities), self.doc.seed + spec.index),
                where,
            )
        else:
            mean = expected_value(values, probabilities)
            series = self.shaped(where, spec.data, np.full(self.bins or 0, mean))
            self.add(ConstDef(spec.id, series, "pmf"), where)

    def route_weights(self, spec: NodeSpec) -> list[float | None]:
        """Each route's weight: its own, 1 when it has neither weight nor classes (info
        `router_default_weight`), None for a class route (classes are not evaluated yet: it carries 0,
        info `route_without_weight`)."""
        weights: list[float | None] = []
        for route in spec.data["routes"]:
            target = route["target"]
            if "weight" in route:
                weights.append(float(route["weight"]))
            elif route.get("classes"):
                weights.append(None)
                if self.doc.classes is None:  # with classes declared it carries its classes (SPEC §14)
                    self.note(
                        spec.id,
                        "route_without_weight",
                        f"route to '{target}' routes classes (not evaluated); it carries 0",
                    )
            else:
                weights.append(1.0)
                self.note(spec.id, "router_default_weight", f"route to '{target}' has no weight; it takes weight 1")
        return weights

    def note(self, node_id: str, code: str, message: str) -> None:
        """An info warning about node `node_id`."""
        self.info.append(
            {"code": code, "severity": "info", "nodeId": node_id, "message": f"node '{node_id}': {message}"}
        )

    def routers(self, specs: tuple[NodeSpec, ...]) -> None:
        """Each route target becomes the sum of its weighted shares of the routers' queues."""
        contributions: dict[str, list[Expr]] = {}
        sources: dict[str, set[str]] = {}
        for spec in specs:
            if spec.kind != "router":
                continue
            source = spec.data["inputs"]["queue"]
            weights = self.route_weights(spec)
            total = 0.0
            for weight in weights:
                if weight is not None:
                    total += weight
            routed = tuple(c for route in spec.data["routes"] for c in route.get("classes") or ())
            for route, weight in zip(spec.data["routes"], weights, strict=True):
                classes = tuple(route.get("classes") or ()) if weight is None else ()
                self.routes.append(RoutePart(spec.id, source, route["target"], classes, weight, total, routed))
                parts = contributions.setdefault(route["target"], [])
                sources.setdefault(route["target"], set()).add(source)
                if weight is not None:
                    parts.append(Binary("/", Binary("*", Ref(source), Num(weight)), Num(total)))
        for target, parts in contributions.items():
            if self.exists(target) and self.is_placeholder(target):
                # upstream's templates declare route targets as `expr: "0"` / all-zero const nodes that the
                # router fills: the placeholder carried nothing, so the route replaces it (SPEC §2 deviation)
                del self.defs[self.owner.pop(target)]
                self.note(target, "router_target_placeholder", "a placeholder filled by its router's routes")
            elif self.exists(target) and self.is_legacy_split(target, sources[target]):
                # upstream's router overrides replace a legacy percentage split of the router's input
                del self.defs[self.owner.pop(target)]
                self.note(
                    target, "router_target_override", "a percentage split of the router's input, replaced by its routes"
                )
            if self.exists(target):
                self.err(
                    f"router target '{target}'",
                    "names an existing series — a route creates its target series: remove the node "
                    f"'{target}' or route to a new id",
                )
                continue
            expr: Expr = parts[0] if parts else Num(0.0)
            for part in parts[1:]:
                expr = Binary("+", expr, part)
            self.add(ExprDef(target, expr, None, "router"), f"router target '{target}'")

    def is_placeholder(self, series_id: str) -> bool:
        """Whether `series_id` is a node of its own that is the constant 0 (`expr: "0"`, all-zero values)."""
        definition = self.defs.get(self.owner[series_id])
        if definition is None or definition.id != series_id:
            return False
        if isinstance(definition, ExprDef):
            zero = isinstance(definition.expr, Num) and definition.expr.value == 0.0
            return definition.kind == "expr" and zero and not definition.initial
        return isinstance(definition, ConstDef) and definition.kind == "const" and not np.any(definition.values)

    def is_legacy_split(self, series_id: str, sources: set[str]) -> bool:
        """Whether `series_id` is an expression node that reads only its routers' inputs (e.g.
        `returns_processed * 0.5`): upstream's routers replace such percentage splits."""
        definition = self.defs.get(self.owner[series_id])
        if not isinstance(definition, ExprDef) or definition.id != series_id or definition.kind != "expr":
            return False
        same, shifted = refs_of(definition.expr)
        return not shifted and bool(same) and same <= sources and definition.initial is None

    def check_refs(self) -> None:
        """Every reference of an expression or queue names an existing series; a self-SHIFT has `initial`."""
        for definition in self.defs.values():
            where = f"node '{definition.id}'"
            if isinstance(definition, ExprDef):
                same, shifted = refs_of(definition.expr)
                for name in sorted(same | shifted):
                    if not self.exists(name):
                        self.err(where, f"unknown reference '{name}'")
                if definition.id in shifted and definition.initial is None and definition.kind == "expr":
                    self.err(where, "initial: required because the expression SHIFTs itself")
            elif isinstance(definition, QueueDef):
                dispatch = definition.dispatch
                for field_name, ref in (
                    ("inflow", definition.inflow),
                    ("outflow", definition.outflow),
                    ("loss", definition.loss),
                    ("wipLimitSeries", definition.wip_series),
                    ("dispatchSchedule.capacitySeries", dispatch.capacity if dispatch else None),
                ):
                    if ref is not None and not self.exists(ref):
                        self.err(where, f"{field_name}: unknown reference '{ref}'")
