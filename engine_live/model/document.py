"""Model documents: validate parsed model data (SPEC §1) into frozen dataclasses.

Every problem is collected and reported together; each message names the node and the field,
e.g. `node 'served': expr: unknown function 'MINN' at position 0`. Keys of the upstream FlowTime
schema that this engine does not use yet are accepted with an info warning; any other unknown key
is an error that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_live.errors import ModelError
from engine_live.model.grid import MAX_BINS, UNIT_MINUTES, Grid, parse_utc
from engine_live.model.text import parse_model_text

ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_KINDS = ("const", "expr", "pmf", "serviceWithBuffer", "router")
TOPO_KINDS = ("service", "serviceWithBuffer", "queue", "dlq", "router", "sink")
TOP_KEYS = {"schemaVersion", "grid", "window", "nodes", "topology", "outputs", "rng", "provenance"}
UPSTREAM_KEYS = {
    "classes",
    "traffic",
    "metadata",
    "nodeRole",
    "group",
    "id",
    "type",
    "measure",
    "lag",
    "multiplier",
    "variables",
    "constraints",
    "parameters",
    "description",
    "title",
    "label",
    "tags",
    "aliases",
    "exhaustedFailures",
    "retryBudgetRemaining",
    "maxAttempts",
    "exhaustedPolicy",
    "backoffStrategy",
    "notes",
    "version",
    "unit",
    "category",
    "owner",
}
NODE_KEYS = {
    "const": {"values", "source"},
    "expr": {"expr", "initial"},
    "pmf": {"pmf"},
    "serviceWithBuffer": {
        "inflow",
        "outflow",
        "loss",
        "initial",
        "wipLimit",
        "wipLimitSeries",
        "wipOverflow",
        "dispatchSchedule",
    },
    "router": {"inputs", "routes", "router"},
}
SERIES_FIELDS = (
    "arrivals",
    "served",
    "errors",
    "capacity",
    "queueDepth",
    "externalDemand",
    "attempts",
    "failures",
    "retryEcho",
    "processingTimeMsSum",
    "servedCount",
)
SEMANTIC_KEYS = {*SERIES_FIELDS, "slaMin", "parallelism", "retryKernel"}
TOPO_NODE_KEYS = {
    "id",
    "kind",
    "semantics",
    "initialCondition",
    "ui",
    "wipLimit",
    "wipLimitSeries",
    "wipOverflow",
    "dispatchSchedule",
    "constraints",
}


@dataclass(frozen=True)
class Dispatch:
    period: int
    phase: int
    capacity: str | None


@dataclass(frozen=True)
class NodeSpec:
    id: str
    kind: str
    index: int
    data: dict[str, Any]


@dataclass(frozen=True)
class TopoNodeSpec:
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


@dataclass(frozen=True)
class EdgeSpec:
    source: str
    target: str
    weight: float | None


@dataclass(frozen=True)
class ConstraintSpec:
    id: str
    served: str | None
    arrivals: str | None


@dataclass(frozen=True)
class ModelDoc:
    grid: Grid
    nodes: tuple[NodeSpec, ...]
    topo_nodes: tuple[TopoNodeSpec, ...]
    edges: tuple[EdgeSpec, ...]
    constraints: tuple[ConstraintSpec, ...]
    outputs: tuple[tuple[str, str | None], ...] | None
    seed: int
    rng: dict[str, Any] | None
    provenance: dict[str, Any] | None
    data: dict[str, Any]  # the model as run, provenance stripped
    base_dir: Path | None
    info: tuple[dict[str, Any], ...] = field(default_factory=tuple)


class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.info: list[dict[str, Any]] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}" if where else msg)

    def keys(self, where: str, obj: dict[str, Any], allowed: set[str]) -> None:
        for key in obj:
            if key in allowed:
                continue
            if key in UPSTREAM_KEYS:
                self.info.append(
                    {
                        "code": "unused_upstream_key",
                        "severity": "info",
                        "nodeId": None,
                        "message": f"{where}: key '{key}' is accepted but not used by this engine",
                    }
                )
            else:
                self.err(where, f"unknown key '{key}'")


def _num(c: _Collector, where: str, value: Any, *, integer: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.err(where, f"expected a number, got {value!r}")
        return None
    if integer and float(value) != int(value):
        c.err(where, f"expected an integer, got {value!r}")
        return None
    return float(value)


def _grid(c: _Collector, raw: Any, *, live: bool) -> Grid:
    if not isinstance(raw, dict):
        c.err("grid", "missing or not a mapping")
        return Grid(1, 1, "minutes")
    c.keys("grid", raw, {"bins", "binSize", "binUnit", "start", "startTimeUtc"})
    bins = raw.get("bins")
    if bins is None:
        if not live:
            c.err("grid", "bins: required")
    elif isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        c.err("grid", f"bins: must be an integer from 1 to {MAX_BINS}, got {bins!r}")
        bins = 1
    size = raw.get("binSize")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
        c.err("grid", f"binSize: must be an integer from 1 to 1000, got {size!r}")
        size = 1
    unit = raw.get("binUnit")
    if unit not in UNIT_MINUTES:
        c.err("grid", f"binUnit: must be one of minutes, hours, days, weeks, got {unit!r}")
        unit = "minutes"
    start = raw.get("start", raw.get("startTimeUtc"))
    grid = Grid(bins, size, unit, None)
    if start is not None:
        if not isinstance(start, str) or not start.endswith("Z"):
            c.err("grid", f"start: must be an RFC 3339 UTC time ending in 'Z', got {start!r}")
        else:
            try:
                dt = parse_utc(start)
            except ValueError:
                c.err("grid", f"start: not a valid time: {start!r}")
            else:
                minutes = dt.hour * 60 + dt.minute
                aligned = dt.second == 0 and dt.microsecond == 0
                if unit in ("minutes", "hours"):
                    aligned = aligned and minutes % grid.bin_minutes == 0
                else:
                    aligned = aligned and minutes == 0
                if not aligned:
                    c.err("grid", f"start: {start} does not lie on a bin boundary")
                else:
                    grid = Grid(bins, size, unit, start)
    if live and grid.start is None and not c.errors:
        c.err("grid", "start: required for a live run")
    return grid


def _dispatch(c: _Collector, where: str, raw: Any) -> Dispatch | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        c.err(where, "dispatchSchedule: must be a mapping")
        return None
    c.keys(f"{where}: dispatchSchedule", raw, {"kind", "periodBins", "phaseOffset", "capacitySeries"})
    if raw.get("kind", "time-based") not in ("time-based", "periodic"):
        c.err(where, f"dispatchSchedule.kind: must be time-based or periodic, got {raw.get('kind')!r}")
    period = raw.get("periodBins")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        c.err(where, f"dispatchSchedule.periodBins: must be an integer >= 1, got {period!r}")
        return None
    phase = raw.get("phaseOffset", 0)
    if isinstance(phase, bool) or not isinstance(phase, int):
        c.err(where, f"dispatchSchedule.phaseOffset: must be an integer, got {phase!r}")
        return None
    cap = raw.get("capacitySeries")
    if cap is not None and not isinstance(cap, str):
        c.err(where, "dispatchSchedule.capacitySeries: must name a series")
        cap = None
    return Dispatch(period, phase % period, cap)


def _node(c: _Collector, raw: Any, index: int, seen: set[str]) -> NodeSpec | None:
    if not isinstance(raw, dict):
        c.err(f"nodes[{index}]", "must be a mapping")
        return None
    nid = raw.get("id")
    if not isinstance(nid, str) or not ID_RE.match(nid):
        c.err(f"nodes[{index}]", f"id: must match {ID_RE.pattern}, got {nid!r}")
        return None
    where = f"node '{nid}'"
    if nid in seen:
        c.err(where, "duplicate id")
    seen.add(nid)
    kind = raw.get("kind")
    if kind not in NODE_KINDS:
        c.err(where, f"kind: must be one of {', '.join(NODE_KINDS)}, got {kind!r}")
        return None
    c.keys(where, raw, {"id", "kind"} | NODE_KEYS[kind])
    data = dict(raw)
    if kind == "const":
        if ("values" in raw) == ("source" in raw):
            c.err(where, "exactly one of values or source is required")
        elif "source" in raw:
            src = raw["source"]
            if not isinstance(src, str) or not (src == "telemetry" or src.startswith("file:")):
                c.err(where, f"source: must be 'telemetry' or 'file:<path>', got {src!r}")
        elif not isinstance(raw["values"], list):
            c.err(where, "values: must be a list of numbers")
    elif kind == "expr":
        if not isinstance(raw.get("expr"), str | int | float) or isinstance(raw.get("expr"), bool):
            c.err(where, "expr: required (a string)")
        if "initial" in raw:
            _num(c, f"{where}: initial", raw["initial"])
    elif kind == "pmf":
        pmf = raw.get("pmf")
        if not isinstance(pmf, dict):
            c.err(where, "pmf: required mapping {values, probabilities}")
        else:
            c.keys(f"{where}: pmf", pmf, {"values", "probabilities", "sample"})
            vals, probs = pmf.get("values"), pmf.get("probabilities")
            if not isinstance(vals, list) or not isinstance(probs, list) or len(vals) != len(probs) or not vals:
                c.err(where, "pmf: values and probabilities must be non-empty lists of equal length")
            elif all(_num(c, f"{where}: pmf", v) is not None for v in vals + probs):
                if len(set(vals)) != len(vals):
                    c.err(where, "pmf.values: must be unique")
                total = 0.0
                for p in probs:
                    total += float(p)
                if abs(total - 1.0) > 1e-4:
                    c.err(where, f"pmf.probabilities: must sum to 1 (±1e-4), got {total!r}")
    elif kind == "serviceWithBuffer":
        if "initial" in raw:
            _num(c, f"{where}: initial", raw["initial"])
        if "wipLimit" in raw:
            _num(c, f"{where}: wipLimit", raw["wipLimit"])
        data["dispatchSchedule"] = _dispatch(c, where, raw.get("dispatchSchedule"))
    elif kind == "router":
        body = raw.get("router", raw)
        if not isinstance(body, dict):
            c.err(where, "router: must be a mapping")
            return None
        if body is not raw:
            c.keys(f"{where}: router", body, {"inputs", "routes"})
        inputs = body.get("inputs")
        if not isinstance(inputs, dict) or not isinstance(inputs.get("queue"), str):
            c.err(where, "inputs.queue: required (a series id)")
        routes = body.get("routes")
        if not isinstance(routes, list) or not routes:
            c.err(where, "routes: required non-empty list")
        else:
            for j, route in enumerate(routes):
                if not isinstance(route, dict) or not isinstance(route.get("target"), str):
                    c.err(where, f"routes[{j}].target: required")
                    continue
                c.keys(f"{where}: routes[{j}]", route, {"target", "weight", "classes"})
                if "weight" in route:
                    _num(c, f"{where}: routes[{j}].weight", route["weight"])
        data = {"id": nid, "kind": kind, "inputs": inputs, "routes": routes}
    return NodeSpec(nid, kind, index, data)


def _topo_node(c: _Collector, raw: Any, index: int, seen: set[str]) -> TopoNodeSpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        c.err(f"topology.nodes[{index}]", "id: required")
        return None
    tid = raw["id"]
    where = f"topology node '{tid}'"
    if tid in seen:
        c.err(where, "duplicate id")
    seen.add(tid)
    c.keys(where, raw, TOPO_NODE_KEYS)
    kind = raw.get("kind", "service")
    if kind not in TOPO_KINDS:
        c.err(where, f"kind: must be one of {', '.join(TOPO_KINDS)}, got {kind!r}")
    sem = raw.get("semantics") or {}
    if not isinstance(sem, dict):
        c.err(where, "semantics: must be a mapping")
        sem = {}
    c.keys(f"{where}: semantics", sem, SEMANTIC_KEYS)
    for key in SERIES_FIELDS:
        if key in sem and not isinstance(sem[key], str):
            c.err(where, f"semantics.{key}: must name a series, 'file:<path>' or 'telemetry'")
    if "slaMin" in sem:
        _num(c, f"{where}: semantics.slaMin", sem["slaMin"])
    par = sem.get("parallelism")
    if par is not None and not isinstance(par, str):
        _num(c, f"{where}: semantics.parallelism", par)
    kernel = sem.get("retryKernel")
    if kernel is not None and (
        not isinstance(kernel, list)
        or not all(_num(c, f"{where}: semantics.retryKernel", k) is not None for k in kernel)
    ):
        c.err(where, "semantics.retryKernel: must be a list of numbers")
    init = raw.get("initialCondition") or {}
    q0 = None
    if isinstance(init, dict):
        c.keys(f"{where}: initialCondition", init, {"queueDepth"})
        if "queueDepth" in init:
            q0 = _num(c, f"{where}: initialCondition.queueDepth", init["queueDepth"])
    wip = _num(c, f"{where}: wipLimit", raw["wipLimit"]) if "wipLimit" in raw else None
    cons = raw.get("constraints") or []
    if not isinstance(cons, list) or not all(isinstance(x, str) for x in cons):
        c.err(where, "constraints: must be a list of constraint ids")
        cons = []
    if len(cons) > 1:
        c.err(where, "constraints: a node joins at most one constraint")
    return TopoNodeSpec(
        tid,
        kind,
        dict(sem),
        q0,
        raw.get("ui"),
        wip,
        raw.get("wipLimitSeries"),
        raw.get("wipOverflow"),
        _dispatch(c, where, raw.get("dispatchSchedule")),
        tuple(cons),
    )


def _edge(c: _Collector, raw: Any, index: int) -> EdgeSpec | None:
    if not isinstance(raw, dict):
        c.err(f"topology.edges[{index}]", "must be a mapping")
        return None
    c.keys(f"topology.edges[{index}]", raw, {"from", "to", "source", "target", "weight"})
    src, dst = raw.get("from", raw.get("source")), raw.get("to", raw.get("target"))
    if not isinstance(src, str) or not isinstance(dst, str):
        c.err(f"topology.edges[{index}]", "from and to are required")
        return None
    weight = _num(c, f"topology.edges[{index}].weight", raw["weight"]) if "weight" in raw else None
    return EdgeSpec(src.split(":")[0], dst.split(":")[0], weight)


def load_model(source: str | dict[str, Any], *, base_dir: Path | None = None, live: bool = False) -> ModelDoc:
    """Validate a model given as text (YAML or JSON) or as already-parsed data."""
    data = parse_model_text(source) if isinstance(source, str) else source
    if not isinstance(data, dict):
        raise ModelError("model must be a mapping with grid and nodes")
    c = _Collector()
    c.keys("model", data, TOP_KEYS)
    if data.get("schemaVersion", 1) != 1:
        c.err("model", f"schemaVersion: only 1 is supported, got {data.get('schemaVersion')!r}")
    grid = _grid(c, data.get("grid", data.get("window")), live=live)
    raw_nodes = data.get("nodes") or []
    if not isinstance(raw_nodes, list):
        c.err("model", "nodes: must be a list")
        raw_nodes = []
    seen: set[str] = set()
    nodes = [n for i, r in enumerate(raw_nodes) if (n := _node(c, r, i, seen)) is not None]
    topo = data.get("topology") or {}
    if not isinstance(topo, dict):
        c.err("model", "topology: must be a mapping")
        topo = {}
    c.keys("topology", topo, {"nodes", "edges", "constraints"})
    tseen: set[str] = set()
    tnodes = [t for i, r in enumerate(topo.get("nodes") or []) if (t := _topo_node(c, r, i, tseen))]
    edges = [e for i, r in enumerate(topo.get("edges") or []) if (e := _edge(c, r, i))]
    constraints = []
    for i, r in enumerate(topo.get("constraints") or []):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            c.err(f"topology.constraints[{i}]", "id: required")
            continue
        c.keys(f"constraint '{r['id']}'", r, {"id", "semantics"})
        sem = r.get("semantics") or {}
        constraints.append(ConstraintSpec(r["id"], sem.get("served"), sem.get("arrivals")))
    outputs = None
    if data.get("outputs") is not None:
        if not isinstance(data["outputs"], list):
            c.err("model", "outputs: must be a list")
        else:
            outputs = tuple(
                (str(o.get("series")), o.get("as") if isinstance(o.get("as"), str) else None)
                for o in data["outputs"]
                if isinstance(o, dict)
            )
    rng = data.get("rng")
    seed = 0
    if rng is not None:
        if not isinstance(rng, dict) or rng.get("kind", "pcg32") != "pcg32":
            c.err("rng", "must be {kind: pcg32, seed: <integer>}")
        elif not isinstance(rng.get("seed", 0), int) or isinstance(rng.get("seed"), bool):
            c.err("rng", f"seed: must be an integer, got {rng.get('seed')!r}")
        else:
            seed = int(rng.get("seed", 0))
    if c.errors:
        raise ModelError(
            c.errors[0] if len(c.errors) == 1 else f"{len(c.errors)} errors: " + "; ".join(c.errors), errors=c.errors
        )
    run_data = {k: v for k, v in data.items() if k != "provenance"}
    return ModelDoc(
        grid,
        tuple(nodes),
        tuple(tnodes),
        tuple(edges),
        tuple(constraints),
        outputs,
        seed,
        rng,
        data.get("provenance"),
        run_data,
        base_dir,
        tuple(c.info),
    )
