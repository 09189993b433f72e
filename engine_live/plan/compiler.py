"""Compiler: a model graph → one execution plan over a numpy matrix (rows = series, cols = bins).

Dependencies: a reference inside SHIFT(·, k ≥ 1) is a previous-bin edge, every other reference a
same-bin edge. Strongly connected parts of the full graph must be acyclic in their same-bin edges
(else a CycleError naming the cycle) and become bin-by-bin loops; everything else is levelled
(longest path) and grouped per level: expressions by shape, queues together, so each group runs
as a handful of numpy operations over any bin range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine_live.errors import CycleError
from engine_live.expressions.kernels import ShapeCompiler, shape_key
from engine_live.expressions.parser import refs_of
from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Unary
from engine_live.model.series_defs import (
    CapDef,
    ConstDef,
    ExprDef,
    ModelGraph,
    PmfSampleDef,
    QueueDef,
    SeriesDef,
    TelemetryDef,
)
from engine_live.plan.stages import BinLoop, CapStage, ConstStage, ExprGroup, PmfStage, QueueGroup, Stage

ZERO = "__zero__"
CAPACITY_WINDOW = 12


@dataclass(frozen=True)
class Plan:
    graph: ModelGraph
    names: tuple[str, ...]  # row → series id (row 0 is the zero row)
    row: dict[str, int]
    stages: tuple[Stage, ...]
    telemetry_rows: np.ndarray
    lookback: int  # bins of history any evaluation may read
    kind_of: dict[str, str]  # series id → kind (const, expr, queue, ...)

    @property
    def n_rows(self) -> int:
        return len(self.names)


def _deps(d: SeriesDef) -> tuple[set[str], set[str]]:
    if isinstance(d, ExprDef):
        return refs_of(d.expr)
    if isinstance(d, QueueDef):
        same = {r for r in (d.inflow, d.outflow, d.loss, d.wip_series) if r}
        if d.dispatch and d.dispatch.capacity:
            same.add(d.dispatch.capacity)
        same.update(d.extra_inflows)
        return same, set()
    if isinstance(d, CapDef):
        return {dem for _, dem in d.members} | {d.capacity}, set()
    return set(), set()


def _lookback(e: Expr) -> int:
    if isinstance(e, Call):
        inner = max((_lookback(a) for a in e.args), default=0)
        if e.name == "SHIFT":
            assert isinstance(e.args[1], Num)
            return inner + int(e.args[1].value)
        if e.name == "CONV":
            assert isinstance(e.args[1], ListLit)
            return inner + len(e.args[1].items) - 1
        if e.name in ("ROLLING_MAX", "ROLLING_MEAN"):
            assert isinstance(e.args[1], Num)
            return inner + int(e.args[1].value) - 1
        return inner
    if isinstance(e, Binary):
        return max(_lookback(e.left), _lookback(e.right))
    if isinstance(e, Unary):
        return _lookback(e.operand)
    return 0


def _sccs(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components come out in reverse topological order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _topo_same_bin(members: list[str], same: dict[str, set[str]]) -> list[str]:
    """Order SCC members by their same-bin edges; a same-bin cycle is an error naming it."""
    inside = set(members)
    indeg = {m: len(same[m] & inside) for m in members}
    users: dict[str, list[str]] = defaultdict(list)
    for m in members:
        for dep in same[m] & inside:
            users[dep].append(m)
    ready = sorted(m for m in members if indeg[m] == 0)
    order: list[str] = []
    while ready:
        m = ready.pop(0)
        order.append(m)
        for u in sorted(users[m]):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) < len(members):
        left = sorted(set(members) - set(order))
        raise CycleError(
            f"same-bin cycle between nodes {', '.join(repr(x) for x in left)} "
            "(close the loop through SHIFT(x, k >= 1))",
            nodes=left,
        )
    return order


def compile_model(graph: ModelGraph) -> Plan:
    defs = {d.id: d for d in graph.defs}
    owner = {out: d.id for d in graph.defs for out in d.outputs}
    names = [ZERO] + [out for d in graph.defs for out in d.outputs]
    row = {n: i for i, n in enumerate(names)}
    init: dict[str, float] = {}
    for d in graph.defs:
        initial = d.initial if isinstance(d, ExprDef | QueueDef) else None
        if initial is not None:
            init[d.id] = initial
    same: dict[str, set[str]] = {}
    shifted: dict[str, set[str]] = {}
    for d in graph.defs:
        s, p = _deps(d)
        same[d.id] = {owner[x] for x in s}
        shifted[d.id] = {owner[x] for x in p}
    order = [d.id for d in graph.defs]
    edges = {n: same[n] | shifted[n] for n in order}
    comps = _sccs(order, edges)
    # Tarjan emits a component after everything it depends on: already dependencies-first
    comp_of = {m: i for i, c in enumerate(comps) for m in c}
    level = [0] * len(comps)
    for i, comp in enumerate(comps):
        deps = {comp_of[x] for m in comp for x in edges[m]} - {i}
        level[i] = 1 + max((level[j] for j in deps), default=-1)
    for comp in comps:  # a same-bin cycle anywhere is an error naming it
        if len(comp) > 1 or comp[0] in same[comp[0]]:
            _topo_same_bin(comp, same)

    def rows_of(ids: Iterable[str]) -> np.ndarray:
        return np.array([row[i] for i in ids], dtype=np.intp)

    def init_of(name: str) -> float:
        return init.get(name, 0.0) if owner.get(name) == name else 0.0

    def expr_groups(members: list[ExprDef]) -> list[Stage]:
        by_shape: dict[str, list[tuple[ExprDef, object]]] = defaultdict(list)
        for d in members:
            key, slots = shape_key(d.expr, init_of)
            by_shape[key].append((d, slots))
        out: list[Stage] = []
        for key, items in by_shape.items():
            k = len(items)
            first = items[0][1]
            n_ref, n_num, n_init = len(first.refs), len(first.nums), len(first.inits)  # type: ignore[attr-defined]
            refs = [rows_of(s.refs[i] for _, s in items) for i in range(n_ref)]  # type: ignore[attr-defined]
            nums = [np.array([[s.nums[i]] for _, s in items]) for i in range(n_num)]  # type: ignore[attr-defined]
            inits = [np.array([[s.inits[i]] for _, s in items]) for i in range(n_init)]  # type: ignore[attr-defined]
            fn = ShapeCompiler(k, refs, nums, inits).compile(items[0][0].expr)
            out.append(ExprGroup(rows_of(d.id for d, _ in items), fn, key))
        return out

    def queue_group(members: list[QueueDef]) -> QueueGroup:
        m = max((len(q.extra_inflows) for q in members), default=0)
        extra = np.zeros((m, len(members)), dtype=np.intp)
        for j, q in enumerate(members):
            for i, src in enumerate(q.extra_inflows):
                extra[i, j] = row[src]

        def opt(ref: str | None) -> int:
            return row[ref] if ref else 0

        q_rows = rows_of(q.id for q in members)
        out_rows = rows_of(q.outflow_id for q in members)
        ovf_rows = rows_of(q.overflow_id for q in members)
        return QueueGroup(
            rows=np.concatenate([q_rows, out_rows, ovf_rows]),
            q_rows=q_rows,
            out_rows=out_rows,
            ovf_rows=ovf_rows,
            in_rows=np.array([opt(q.inflow) for q in members], dtype=np.intp),
            extra_rows=extra,
            outflow_src=np.array([opt(q.outflow) for q in members], dtype=np.intp),
            loss_src=np.array([opt(q.loss) for q in members], dtype=np.intp),
            initial=np.array([q.initial for q in members]),
            wip_num=np.array([q.wip_limit if q.wip_limit is not None else np.nan for q in members]),
            wip_rows=np.array([row[q.wip_series] if q.wip_series else -1 for q in members], dtype=np.intp),
            period=np.array([q.dispatch.period if q.dispatch else 0 for q in members], dtype=np.int64),
            phase=np.array([q.dispatch.phase if q.dispatch else 0 for q in members], dtype=np.int64),
            cap_rows=np.array(
                [row[q.dispatch.capacity] if q.dispatch and q.dispatch.capacity else -1 for q in members], dtype=np.intp
            ),
        )

    def single(d: SeriesDef) -> list[Stage]:
        if isinstance(d, ExprDef):
            return expr_groups([d])
        if isinstance(d, QueueDef):
            return [queue_group([d])]
        if isinstance(d, CapDef):
            return [CapStage(rows_of(d.outputs), rows_of(dem for _, dem in d.members), row[d.capacity])]
        if isinstance(d, PmfSampleDef):
            return [PmfStage(rows_of([d.id]), d.values, d.probabilities, d.seed)]
        return []

    by_level: dict[int, list[list[str]]] = defaultdict(list)
    for i, comp in enumerate(comps):
        by_level[level[i]].append(comp)
    stages: list[Stage] = []
    consts = [d for d in graph.defs if isinstance(d, ConstDef)]
    if consts:
        n = max(len(d.values) for d in consts)
        vals = np.zeros((len(consts), n))
        for i, d in enumerate(consts):
            vals[i, : len(d.values)] = d.values
        stages.append(ConstStage(rows_of(d.id for d in consts), vals))
    for lv in sorted(by_level):
        exprs: list[ExprDef] = []
        loop_exprs: list[ExprDef] = []
        queues: list[QueueDef] = []
        for comp in by_level[lv]:
            if len(comp) == 1:
                d = defs[comp[0]]
                looped = comp[0] in edges[comp[0]]
                if isinstance(d, ExprDef):
                    (loop_exprs if looped else exprs).append(d)
                elif isinstance(d, QueueDef) and not looped:
                    queues.append(d)
                elif isinstance(d, ConstDef | TelemetryDef):
                    continue
                else:
                    parts = single(d)
                    stages.append(BinLoop(parts[0].rows, parts) if looped else parts[0])
                continue
            members = _topo_same_bin(comp, same)
            parts = [p for m in members for p in single(defs[m])]
            stages.append(BinLoop(np.concatenate([p.rows for p in parts]), parts))
        stages.extend(expr_groups(exprs))
        stages.extend(BinLoop(g.rows, [g]) for g in expr_groups(loop_exprs))
        if queues:
            stages.append(queue_group(queues))
    lookback = CAPACITY_WINDOW
    for d in graph.defs:
        if isinstance(d, ExprDef):
            lookback = max(lookback, _lookback(d.expr))
    kind_of = {
        out: (d.kind if not isinstance(d, QueueDef) or out == d.id else "queue_helper")
        for d in graph.defs
        for out in d.outputs
    }
    telemetry = rows_of(d.id for d in graph.defs if isinstance(d, TelemetryDef))
    return Plan(graph, tuple(names), row, tuple(stages), telemetry, lookback, kind_of)
