"""Model documents → primitive series definitions (SPEC §1–§2).

Resolves topology semantics (series ids, `file:`, `telemetry`, `self`), synthesizes topology
queues with the snake-case naming, retry echo, shared-capacity constraints and router targets,
and checks every reference. Errors name the node and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from engine_live.errors import ExprSyntaxError, ModelError
from engine_live.expressions.parser import parse_expr, refs_of
from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref
from engine_live.model.document import ModelDoc, NodeSpec, TopoNodeSpec
from engine_live.model.series_csv import read_series_csv, resolve_inside
from engine_live.model.series_defs import (
    CapDef,
    ConstDef,
    ExprDef,
    ModelGraph,
    PmfSampleDef,
    QueueDef,
    SeriesDef,
    TelemetryDef,
    TopoBinding,
)

QUEUE_KINDS = ("serviceWithBuffer", "queue", "dlq")
DEFAULT_RETRY_KERNEL = (0.0, 0.6, 0.3, 0.1)


def snake_case(name: str) -> str:
    """`HTTPService` → `http_service`, `QueueA` → `queue_a`, `Service2A` → `service2_a`."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]", "_", s)
    return re.sub(r"_+", "_", s).lower()


def expected_value(values: list[float], probabilities: list[float]) -> float:
    total = 0.0
    for v, p in zip(values, probabilities, strict=True):
        total += float(v) * float(p)
    return total


class _Builder:
    def __init__(self, doc: ModelDoc) -> None:
        self.doc = doc
        self.bins = doc.grid.bins
        self.defs: dict[str, SeriesDef] = {}
        self.owner: dict[str, str] = {}  # series id -> def id producing it
        self.errors: list[str] = []
        self.info: list[dict[str, Any]] = list(doc.info)
        self.hidden: set[str] = set()

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def add(self, d: SeriesDef, where: str) -> None:
        for out in d.outputs:
            if out in self.owner:
                self.err(where, f"series '{out}' already exists")
                return
        self.defs[d.id] = d
        for out in d.outputs:
            self.owner[out] = d.id

    def exists(self, sid: str) -> bool:
        return sid in self.owner

    # -- nodes list -----------------------------------------------------------------------------
    def const_values(self, where: str, raw: list[Any]) -> np.ndarray:
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

    def file_values(self, where: str, ref: str, nid: str) -> np.ndarray:
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
                    "nodeId": nid,
                    "message": f"{ref}: {len(values)} values for {self.bins} bins (zero-filled/truncated)",
                    "value": float(len(values)),
                }
            )
            fixed = np.zeros(self.bins)
            fixed[: min(len(values), self.bins)] = values[: self.bins]
            values = fixed
        return values

    def node(self, spec: NodeSpec) -> None:
        where, d = f"node '{spec.id}'", spec.data
        if spec.kind == "const":
            src = d.get("source")
            if src == "telemetry":
                self.add(TelemetryDef(spec.id), where)
            elif isinstance(src, str):
                self.add(ConstDef(spec.id, self.file_values(where, src, spec.id), "file"), where)
            else:
                self.add(ConstDef(spec.id, self.const_values(where, d["values"])), where)
        elif spec.kind == "expr":
            try:
                expr = parse_expr(str(d["expr"]))
            except ExprSyntaxError as exc:
                self.err(where, f"expr: {exc.message}")
                return
            init = float(d["initial"]) if "initial" in d else None
            self.add(ExprDef(spec.id, expr, init), where)
        elif spec.kind == "pmf":
            pmf = d["pmf"]
            vals, probs = [float(v) for v in pmf["values"]], [float(p) for p in pmf["probabilities"]]
            if pmf.get("sample"):
                self.add(PmfSampleDef(spec.id, tuple(vals), tuple(probs), self.doc.seed + spec.index), where)
            else:
                ev = expected_value(vals, probs)
                self.add(ConstDef(spec.id, np.full(self.bins or 0, ev), "pmf"), where)
        elif spec.kind == "serviceWithBuffer":
            self.add(
                QueueDef(
                    spec.id,
                    d.get("inflow"),
                    d.get("outflow"),
                    d.get("loss"),
                    float(d.get("initial", 0.0)),
                    float(d["wipLimit"]) if "wipLimit" in d else None,
                    d.get("wipLimitSeries"),
                    d.get("wipOverflow"),
                    d.get("dispatchSchedule"),
                    f"{spec.id}_outflow",
                    f"{spec.id}_overflow",
                ),
                where,
            )
        elif spec.kind == "router":
            self.add(ExprDef(spec.id, Ref(d["inputs"]["queue"]), None, "router"), where)

    def routers(self, specs: tuple[NodeSpec, ...]) -> None:
        contributions: dict[str, list[Expr]] = {}
        for spec in specs:
            if spec.kind != "router":
                continue
            source = spec.data["inputs"]["queue"]
            routes = spec.data["routes"]
            total = 0.0
            for r in routes:
                if "weight" in r:
                    total += float(r["weight"])
            for r in routes:
                target = r["target"]
                if "weight" not in r:
                    self.info.append(
                        {
                            "code": "route_without_weight",
                            "severity": "info",
                            "nodeId": spec.id,
                            "message": f"node '{spec.id}': route to '{target}' has no weight "
                            "(class routing is not evaluated); it carries 0",
                        }
                    )
                    contributions.setdefault(target, [])
                    continue
                share = Binary("/", Binary("*", Ref(source), Num(float(r["weight"]))), Num(total))
                contributions.setdefault(target, []).append(share)
        for target, parts in contributions.items():
            if self.exists(target):
                self.err(f"router target '{target}'", "names an existing series")
                continue
            expr: Expr = parts[0] if parts else Num(0.0)
            for p in parts[1:]:
                expr = Binary("+", expr, p)
            self.add(ExprDef(target, expr, None, "router"), f"router target '{target}'")

    # -- topology -------------------------------------------------------------------------------
    def resolve_field(self, t: TopoNodeSpec, fld: str, value: str, telemetry: set[str]) -> str | None:
        where = f"topology node '{t.id}'"
        if value == "telemetry":
            sid = f"{t.id}.{fld}"
            self.add(TelemetryDef(sid), where)
            self.hidden.add(sid)
            telemetry.add(fld)
            return sid
        if value.startswith("file:"):
            sid = f"{t.id}.{fld}"
            self.add(ConstDef(sid, self.file_values(f"{where}: semantics.{fld}", value, t.id), "file"), where)
            self.hidden.add(sid)
            return sid
        if self.exists(value):
            if isinstance(self.defs.get(self.owner[value]), TelemetryDef):
                telemetry.add(fld)
            return value
        if fld == "queueDepth" or fld == "retryEcho":
            return None  # synthesized below
        self.err(where, f"semantics.{fld}: unknown series '{value}'")
        return None

    def topology(self) -> list[TopoBinding]:
        doc = self.doc
        fields_of: dict[str, dict[str, str]] = {}
        tele_of: dict[str, set[str]] = {}
        par_of: dict[str, float | str | None] = {}
        for t in doc.topo_nodes:
            fields: dict[str, str] = {}
            tele: set[str] = set()
            for fld, value in t.semantics.items():
                if fld in ("slaMin", "parallelism", "retryKernel") or not isinstance(value, str):
                    continue
                if fld == "queueDepth" and value == "self":
                    continue
                sid = self.resolve_field(t, fld, value, tele)
                if sid is not None:
                    fields[fld] = sid
            par = t.semantics.get("parallelism")
            if isinstance(par, str):
                sid = self.resolve_field(t, "parallelism", par, tele)
                par = sid
            fields_of[t.id], tele_of[t.id], par_of[t.id] = fields, tele, par
            self.retry_echo(t, fields)
        capped = self.constraints(fields_of)
        queue_of: dict[str, str] = {}
        for t in doc.topo_nodes:
            fields = fields_of[t.id]
            depth = t.semantics.get("queueDepth")
            wants = t.kind in QUEUE_KINDS and (depth is None or depth == "self" or "queueDepth" not in fields)
            if depth == "self":
                wants = True
            if not wants:
                continue
            snake = snake_case(t.id)
            qid = depth if isinstance(depth, str) and depth != "self" else f"{snake}_queue"
            where = f"topology node '{t.id}'"
            if self.exists(qid) or self.exists(f"{snake}_outflow") or self.exists(f"{snake}_overflow"):
                self.err(where, f"synthesized queue '{qid}' collides with an existing series")
                continue
            inflow = capped.get(t.id, fields.get("arrivals"))
            outflow = fields.get("served", fields.get("capacity"))
            initial = t.initial_queue if t.initial_queue is not None else 0.0
            self.add(
                QueueDef(
                    qid,
                    inflow,
                    outflow,
                    fields.get("errors"),
                    initial,
                    t.wip_limit,
                    t.wip_limit_series,
                    t.wip_overflow,
                    t.dispatch,
                    f"{snake}_outflow",
                    f"{snake}_overflow",
                ),
                where,
            )
            fields["queueDepth"] = qid
            queue_of[t.id] = qid
        self.overflow_targets(queue_of)
        out = []
        for t in doc.topo_nodes:
            sla = t.semantics.get("slaMin")
            out.append(
                TopoBinding(
                    t.id,
                    t.kind,
                    fields_of[t.id],
                    par_of[t.id],
                    float(sla) if sla is not None else None,
                    frozenset(tele_of[t.id]),
                    t.ui if isinstance(t.ui, dict) else None,
                    t.constraints[0] if t.constraints else None,
                )
            )
        return out

    def retry_echo(self, t: TopoNodeSpec, fields: dict[str, str]) -> None:
        name = t.semantics.get("retryEcho")
        if not isinstance(name, str) or "retryEcho" in fields:
            return
        where = f"topology node '{t.id}'"
        source = fields.get("failures", fields.get("errors"))
        if source is None:
            self.err(where, "semantics.retryEcho: needs failures or errors to synthesize a retry echo")
            return
        kernel = [float(k) for k in (t.semantics.get("retryKernel") or DEFAULT_RETRY_KERNEL)][:32]
        total = 0.0
        for k in kernel:
            total += k
        if total > 1.0:
            kernel = [k / total for k in kernel]
        self.add(ExprDef(name, Call("CONV", (Ref(source), ListLit(tuple(kernel)))), None, "retryEcho"), where)
        fields["retryEcho"] = name

    def constraints(self, fields_of: dict[str, dict[str, str]]) -> dict[str, str]:
        members: dict[str, list[str]] = {c.id: [] for c in self.doc.constraints}
        for t in self.doc.topo_nodes:
            for cid in t.constraints:
                if cid not in members:
                    self.err(f"topology node '{t.id}'", f"constraints: unknown constraint '{cid}'")
                else:
                    members[cid].append(t.id)
        capped: dict[str, str] = {}
        for c in self.doc.constraints:
            where = f"constraint '{c.id}'"
            if not c.served or not self.exists(c.served):
                self.err(where, f"semantics.served: unknown series '{c.served}'")
                continue
            pairs = []
            for tid in members[c.id]:
                demand = fields_of[tid].get("arrivals")
                if demand is None:
                    self.err(f"topology node '{tid}'", f"constraint '{c.id}': the node has no arrivals")
                    continue
                out = f"{snake_case(tid)}_capped_{c.id}"
                pairs.append((out, demand))
                capped[tid] = out
            if pairs:
                self.add(CapDef(f"__constraint__{c.id}", tuple(pairs), c.served), where)
        return capped

    def overflow_targets(self, queue_of: dict[str, str]) -> None:
        incoming: dict[str, list[str]] = {}
        for did, d in list(self.defs.items()):
            if not isinstance(d, QueueDef) or d.overflow_to is None or d.overflow_to == "loss":
                continue
            target = queue_of.get(d.overflow_to, d.overflow_to)
            if not isinstance(self.defs.get(target), QueueDef):
                self.err(f"queue '{did}'", f"wipOverflow: '{d.overflow_to}' is not a queue")
                continue
            self.defs[did] = _replace(d, overflow_to=target)
            incoming.setdefault(target, []).append(d.overflow_id)
        for target, sources in incoming.items():
            q = self.defs[target]
            assert isinstance(q, QueueDef)
            self.defs[target] = _replace(q, extra_inflows=tuple(sources))

    def check_refs(self) -> None:
        for d in self.defs.values():
            where = f"node '{d.id}'"
            if isinstance(d, ExprDef):
                same, shifted = refs_of(d.expr)
                for r in sorted(same | shifted):
                    if not self.exists(r):
                        self.err(where, f"unknown reference '{r}'")
                if d.id in shifted and d.initial is None and d.kind == "expr":
                    self.err(where, "initial: required because the expression SHIFTs itself")
            elif isinstance(d, QueueDef):
                for fld, ref in (
                    ("inflow", d.inflow),
                    ("outflow", d.outflow),
                    ("loss", d.loss),
                    ("wipLimitSeries", d.wip_series),
                    ("dispatchSchedule.capacitySeries", d.dispatch.capacity if d.dispatch else None),
                ):
                    if ref is not None and not self.exists(ref):
                        self.err(where, f"{fld}: unknown reference '{ref}'")


def _replace(q: QueueDef, **changes: Any) -> QueueDef:
    from dataclasses import replace

    return replace(q, **changes)


def build_model(doc: ModelDoc) -> ModelGraph:
    """Resolve a validated document into primitive series definitions. Raises ModelError."""
    b = _Builder(doc)
    for spec in doc.nodes:
        b.node(spec)
    b.routers(doc.nodes)
    topo = b.topology() if not b.errors else []
    tids = {t.id for t in doc.topo_nodes}
    for e in doc.edges:
        for end in (e.source, e.target):
            if end not in tids:
                b.err("topology.edges", f"unknown topology node '{end}'")
    b.check_refs()
    if doc.outputs is not None:
        for series, _ in doc.outputs:
            if not isinstance(series, str) or not b.exists(series):
                b.err("outputs", f"unknown series {series!r}")
    if b.errors:
        msg = b.errors[0] if len(b.errors) == 1 else f"{len(b.errors)} errors: " + "; ".join(b.errors)
        raise ModelError(msg, errors=b.errors)
    return ModelGraph(
        doc.grid,
        tuple(b.defs.values()),
        tuple(topo),
        doc.edges,
        doc.seed,
        doc.outputs,
        frozenset(b.hidden),
        tuple(b.info),
    )


def load_graph(source: str | dict[str, Any], *, base_dir: Path | None = None, live: bool = False) -> ModelGraph:
    from engine_live.model.document import load_model

    return build_model(load_model(source, base_dir=base_dir, live=live))
