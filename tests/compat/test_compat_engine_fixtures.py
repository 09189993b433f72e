"""Upstream's engine fixtures (`engine/fixtures/*.yaml`), mirrored — same structure, written here — with
the numbers their headers document (hand-checked below each). Where SPEC deliberately differs nothing
here does: these fixtures exercise only shared semantics."""

from __future__ import annotations

import pytest
from compat_support import close, evaluate


def fixture(nodes: str, topology: str = "", bins: int = 3) -> str:
    return f"grid: {{bins: {bins}, binSize: 1, binUnit: hours}}\nnodes:\n{nodes}" + (
        f"topology:\n{topology}" if topology else ""
    )


def const(nid: str, value: float, bins: int = 3) -> str:
    return f"  - {{id: {nid}, kind: const, values: {[value] * bins}}}\n"


def shared(a: float, b: float) -> str:
    """Two serviceWithBuffer nodes (served 10 each) sharing a capacity of 80 through constraint `shared`."""
    nodes = const("demand_a", a) + const("demand_b", b) + const("capacity", 80) + const("sa", 10) + const("sb", 10)
    topology = """  nodes:
    - {id: NodeA, kind: serviceWithBuffer, constraints: [shared], semantics: {arrivals: demand_a, served: sa}}
    - {id: NodeB, kind: serviceWithBuffer, constraints: [shared], semantics: {arrivals: demand_b, served: sb}}
  edges: []
  constraints:
    - {id: shared, semantics: {arrivals: total_demand, served: capacity}}
"""
    return fixture(nodes, topology)


@pytest.mark.parametrize(
    ("a", "b", "queue_a", "queue_b"),
    [
        (60, 60, [30, 60, 90], [30, 60, 90]),  # proportional: 120 > 80 → 40 each, 40 − 10 a bin
        (30, 40, [20, 40, 60], [30, 60, 90]),  # below capacity: 70 ≤ 80, no capping
    ],
)
def test_constraint_fixtures(a: float, b: float, queue_a: list[float], queue_b: list[float]) -> None:
    _, out = evaluate(shared(a, b))
    close(out["node_a_queue"], queue_a)
    close(out["node_b_queue"], queue_b)


def test_router_weight_and_router_with_constraint() -> None:
    router = """  - id: splitter
    kind: router
    router:
      inputs: {queue: source}
      routes: [{target: route_a, weight: 0.6}, {target: route_b, weight: 0.4}]
"""
    nodes = const("source", 100) + router + const("shared_cap", 50) + const("served_a", 5) + const("served_b", 5)
    topology = """  nodes:
    - {id: QueueA, kind: serviceWithBuffer, constraints: [bottleneck], semantics: {arrivals: route_a, served: served_a}}
    - {id: QueueB, kind: serviceWithBuffer, constraints: [bottleneck], semantics: {arrivals: route_b, served: served_b}}
  edges: []
  constraints:
    - {id: bottleneck, semantics: {arrivals: total_demand, served: shared_cap}}
"""
    _, out = evaluate(fixture(nodes, topology))
    close(out["route_a"], [60] * 3)  # 100 · 0.6
    close(out["queue_a_queue"], [25, 50, 75])  # capped 30 (60/100 of 50), minus 5
    close(out["queue_b_queue"], [15, 30, 45])  # capped 20, minus 5


def test_backpressure_stabilizes_at_40_after_t2() -> None:
    nodes = const("raw_arrivals", 100, 6) + const("served", 20, 6) + const("wip_capacity", 50, 6)
    nodes += """  - {id: pressure, kind: expr, expr: "CLAMP(queue_depth / wip_capacity, 0, 1)"}
  - {id: shifted_pressure, kind: expr, expr: "SHIFT(pressure, 1)"}
  - {id: throttle, kind: expr, expr: "1 - shifted_pressure"}
  - {id: effective_arrivals, kind: expr, expr: "raw_arrivals * throttle"}
"""
    topology = """  nodes:
    - {id: Queue, kind: serviceWithBuffer,
       semantics: {arrivals: effective_arrivals, served: served, queueDepth: queue_depth}}
"""
    _, out = evaluate(fixture(nodes, topology, 6))
    # t0: 100 in → 80 (pressure 1); t1: throttle 0 → 60; t2: → 40 (pressure 0.8); then 20 in, 20 out
    close(out["queue_depth"], [80, 60, 40, 40, 40, 40])


def test_queue_fixtures_simple_wip_dispatch_cascade_and_retry_echo() -> None:
    nodes = const("arrivals", 10, 6) + const("served", 5, 6) + const("three", 3, 6) + const("two", 2, 6)
    nodes += const("a_in", 20, 6) + const("a_out", 5, 6) + const("zero", 0, 6) + const("errors", 10, 6)
    topology = """  nodes:
    - {id: Simple, kind: serviceWithBuffer, semantics: {arrivals: arrivals, served: three}}
    - {id: Wip, kind: serviceWithBuffer, wipLimit: 20, semantics: {arrivals: arrivals, served: two}}
    - {id: Dispatch, kind: serviceWithBuffer, dispatchSchedule: {kind: periodic, periodBins: 3, phaseOffset: 0},
       semantics: {arrivals: arrivals, served: served}}
    - {id: A, kind: serviceWithBuffer, wipLimit: 10, wipOverflow: B, semantics: {arrivals: a_in, served: a_out}}
    - {id: B, kind: serviceWithBuffer, wipLimit: 5, wipOverflow: C, semantics: {arrivals: zero, served: zero}}
    - {id: C, kind: serviceWithBuffer, semantics: {arrivals: zero, served: zero}}
    - {id: Retry, kind: serviceWithBuffer,
       semantics: {arrivals: arrivals, served: served, errors: errors, retryEcho: retry_echo,
                   retryKernel: [0.0, 0.6, 0.3, 0.1]}}
"""
    _, out = evaluate(fixture(nodes, topology, 6))
    close(out["simple_queue"], [7, 14, 21, 28, 35, 42])  # +10 −3 a bin
    close(out["wip_queue"], [8, 16, 20, 20, 20, 20])  # +10 −2, capped at 20
    close(out["wip_overflow"], [0, 0, 4, 8, 8, 8])
    close(out["dispatch_outflow"], [5, 0, 0, 5, 0, 0])  # released on bins 0 and 3
    close(out["dispatch_queue"], [5, 15, 25, 30, 40, 50])
    # A: 20 in, 5 out, limit 10 → overflow 5, then 15 a bin into B; B (limit 5) passes 0, then 15 to C
    close(out["a_overflow"], [5, 15, 15, 15, 15, 15])
    close(out["b_queue"], [5, 5, 5, 5, 5, 5])
    close(out["c_queue"], [0, 15, 30, 45, 60, 75])
    close(out["retry_echo"], [0, 6, 9, 10, 10, 10])  # CONV(10, [0, .6, .3, .1])
