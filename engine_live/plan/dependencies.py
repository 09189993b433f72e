"""Dependency analysis for the compiler: edges between series definitions, their strongly
connected components and levels, the order inside a component, and the history an expression reads.

A reference inside SHIFT(·, k ≥ 1) is a previous-bin edge, every other reference a same-bin edge.
Components are ordered by their same-bin edges; a same-bin cycle is a CycleError naming it.
"""

from __future__ import annotations

from collections import defaultdict

from engine_live.errors import CycleError
from engine_live.expressions.parser import refs_of
from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Unary
from engine_live.model.class_defs import ClassQueueDef, ClassSplitDef, class_row
from engine_live.model.series_defs import CapDef, ExprDef, QueueDef, SeriesDef


def series_deps(definition: SeriesDef) -> tuple[set[str], set[str]]:
    """(same-bin, previous-bin) series ids a definition reads."""
    if isinstance(definition, ExprDef):
        return refs_of(definition.expr)
    if isinstance(definition, QueueDef):
        same = {ref for ref in (definition.inflow, definition.outflow, definition.loss, definition.wip_series) if ref}
        if definition.dispatch and definition.dispatch.capacity:
            same.add(definition.dispatch.capacity)
        same.update(definition.extra_inflows)
        return same, set()
    if isinstance(definition, CapDef):
        return {demand for _, demand in definition.members} | {definition.capacity}, set()
    if isinstance(definition, ClassSplitDef):
        same, shifted = {definition.total}, set()
        for expr in (*definition.raw, *(definition.fallback or ())):
            expr_same, expr_shifted = refs_of(expr)
            same |= expr_same
            shifted |= expr_shifted
        return same, shifted
    if isinstance(definition, ClassQueueDef):
        rows = {class_row(inflow, c) for inflow in definition.inflows for c in definition.classes}
        return rows | {definition.queue, definition.outflow_id, definition.overflow_id}, set()
    return set(), set()


def expr_lookback(expr: Expr) -> int:
    """Bins of history an expression reads (SHIFT k, CONV kernel length - 1, ROLLING_* window - 1)."""
    if isinstance(expr, Call):
        inner = max((expr_lookback(arg) for arg in expr.args), default=0)
        if expr.name == "SHIFT":
            assert isinstance(expr.args[1], Num)
            return inner + int(expr.args[1].value)
        if expr.name == "CONV":
            assert isinstance(expr.args[1], ListLit)
            return inner + len(expr.args[1].items) - 1
        if expr.name in ("ROLLING_MAX", "ROLLING_MEAN"):
            assert isinstance(expr.args[1], Num)
            return inner + int(expr.args[1].value) - 1
        return inner
    if isinstance(expr, Binary):
        return max(expr_lookback(expr.left), expr_lookback(expr.right))
    if isinstance(expr, Unary):
        return expr_lookback(expr.operand)
    return 0


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
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
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


def component_levels(components: list[list[str]], edges: dict[str, set[str]]) -> list[int]:
    """Longest-path level of each component (components given dependencies-first)."""
    component_of = {member: i for i, component in enumerate(components) for member in component}
    level = [0] * len(components)
    for i, component in enumerate(components):
        deps = {component_of[dep] for member in component for dep in edges[member]} - {i}
        level[i] = 1 + max((level[j] for j in deps), default=-1)
    return level


def order_same_bin(members: list[str], same: dict[str, set[str]]) -> list[str]:
    """Order SCC members by their same-bin edges; a same-bin cycle is an error naming it."""
    inside = set(members)
    indegree = {member: len(same[member] & inside) for member in members}
    users: dict[str, list[str]] = defaultdict(list)
    for member in members:
        for dep in same[member] & inside:
            users[dep].append(member)
    ready = sorted(member for member in members if indegree[member] == 0)
    order: list[str] = []
    while ready:
        member = ready.pop(0)
        order.append(member)
        for user in sorted(users[member]):
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) < len(members):
        left = sorted(set(members) - set(order))
        raise CycleError(
            f"same-bin cycle between nodes {', '.join(repr(x) for x in left)} "
            "(close the loop through SHIFT(x, k >= 1))",
            nodes=left,
        )
    return order
