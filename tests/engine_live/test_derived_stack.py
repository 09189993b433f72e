"""Stacked derived metrics ≡ `derive` per node, bit for bit (NaN = NaN), colours and wire dicts included."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.derived.node_metrics import KINDS, NUMERIC_FIELDS, NodeInputs, derive
from engine_live.derived.stack import STACK_FIELDS, WIRE_KEYS, StackLayout, to_wire_bins, to_wire_dicts
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model

FIELDS = (*STACK_FIELDS, "errors")
SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-12, -1e-12, 0.5, 0.7, 0.9, 1.0, 0.95, 3.0, -2.0, 1e300)


@dataclass(frozen=True)
class FakeBinding:
    id: str
    kind: str
    fields: dict[str, str]
    parallelism: float | str | None
    sla_min: float | None
    telemetry_fields: frozenset[str]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    n_rows = draw(st.integers(1, 8))
    bins = draw(st.integers(1, 30))
    values = st.one_of(st.sampled_from(SPECIAL), st.floats(-5, 50, allow_nan=False), st.integers(0, 12).map(float))
    V = np.array(draw(st.lists(values, min_size=n_rows * bins, max_size=n_rows * bins))).reshape(n_rows, bins)
    names = [f"s{r}" for r in range(n_rows)]
    tele = draw(st.lists(st.sampled_from(names), unique=True, max_size=n_rows))
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        chosen = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS)))
        fields = {f: draw(st.sampled_from([*names, "unknown"])) for f in chosen}
        par = draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.5, -1.0, math.nan]), st.sampled_from(names)))
        sla = draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 4.0, -1.0, math.inf])))
        tfields = frozenset(f for f, s in fields.items() if s in tele)
        nodes.append(FakeBinding(f"n{i}", draw(st.sampled_from(sorted(KINDS))), fields, par, sla, tfields))
    gap = np.array(
        draw(st.lists(st.booleans(), min_size=len(tele) * bins, max_size=len(tele) * bins)), dtype=np.bool_
    ).reshape(len(tele), bins)
    t1 = draw(st.integers(1, bins))
    t0 = draw(st.integers(0, t1 - 1))
    base = draw(st.integers(0, max(0, t0 - 11)))
    return {
        "V": V,
        "names": names,
        "tele": tele,
        "nodes": nodes,
        "gap": gap,
        "t0": t0,
        "t1": t1,
        "base": base,
        "bin_minutes": draw(st.sampled_from([1, 5, 60])),
    }


def reference(case: dict[str, Any], b: FakeBinding) -> Any:
    """`derive` of one node the batch way: whole series from bin 0, output bins t0..t1-1."""
    V, t0, t1 = case["V"], case["t0"], case["t1"]
    row = {s: i for i, s in enumerate(case["names"])}
    metrics = {f: V[row[s], :t1] for f, s in b.fields.items() if s in row}
    par: Any = 1.0
    if isinstance(b.parallelism, str):
        par = V[row[b.parallelism], :t1]
    elif b.parallelism is not None:
        par = b.parallelism
    tele = {s: case["gap"][i, :t1] for i, s in enumerate(case["tele"])}
    masks = [tele[s] for s in b.fields.values() if s in tele]
    gap = np.logical_or.reduce(masks) if masks else np.zeros(t1, dtype=np.bool_)
    return derive(NodeInputs(b.id, b.kind, metrics, par, b.sla_min, gap, lookback=t0), case["bin_minutes"])


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, NaN where the other is NaN, identical bits elsewhere (so -0.0 ≠ 0.0)."""
    na, nb = np.isnan(a), np.isnan(b)
    return (
        a.shape == b.shape and bool((na == nb).all()) and bool((a[~na].view(np.uint64) == b[~nb].view(np.uint64)).all())
    )


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_stacked_equals_derive_per_node(case: dict[str, Any]) -> None:
    row = {s: i for i, s in enumerate(case["names"])}
    layout = StackLayout.build(case["nodes"], row, case["tele"])
    base, t0, t1 = case["base"], case["t0"], case["t1"]
    gap = case["gap"]
    stacked = layout.derive_block(
        case["V"][:, base:], base, t0, t1, gaps=lambda a, b: gap[:, a:b], bin_minutes=case["bin_minutes"]
    )
    wire = to_wire_bins(stacked)
    assert stacked.t0 == t0 and stacked.n_bins == t1 - t0 and len(wire) == t1 - t0
    for i, b in enumerate(case["nodes"]):
        ref = reference(case, b)
        for _, attr in NUMERIC_FIELDS:
            assert bits_equal(stacked.field(attr)[i], getattr(ref, attr)), (b, attr)
        for attr in ("capacity_method", "capacity_confidence", "color", "color_reason"):
            assert stacked.labels(attr)[i].tolist() == getattr(ref, attr).tolist(), (b, attr)
        assert stacked.sla_met[i].tolist() == ref.sla_met.tolist()
        assert stacked.sla_evaluated[i].tolist() == ref.sla_evaluated.tolist()
        for j in range(t1 - t0):
            assert wire[j][i] == ref.wire_bin(j), (b, j)
    if t1 - t0 > 1:
        assert to_wire_dicts(stacked, 1) == wire[1]


def derive_first_wire_keys() -> list[str]:
    return list(derive(NodeInputs("X", "service", {"served": np.ones(1)}), 1).wire_bin(0))


def test_layout_of_a_compiled_plan_and_known_colours() -> None:
    text = """
grid: {bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arr, kind: const, values: [10, 10, 10, 10]}
  - {id: srv, kind: const, values: [5, 8, 9.5, 0]}
  - {id: cap, kind: const, values: [10, 10, 10, 10]}
  - {id: depth, kind: const, values: [0, 2, 40, 1]}
topology:
  nodes:
    - {id: A, kind: service, semantics: {arrivals: arr, served: srv, capacity: cap}}
    - {id: Q, kind: queue, semantics: {arrivals: arr, served: srv, queueDepth: depth, slaMin: 5}}
    - {id: D, kind: dlq, semantics: {arrivals: arr}}
    - {id: B, kind: service, semantics: {served: srv}}
"""
    plan = compile_model(load_graph(text))
    V = np.zeros((plan.n_rows, 4))
    inputs: dict[str, list[float]] = {
        "arr": [10, 10, 10, 10],
        "srv": [5, 8, 9.5, 0],
        "cap": [10] * 4,
        "depth": [0, 2, 40, 1],
    }
    for sid, vals in inputs.items():
        V[plan.row[sid]] = vals
    layout = StackLayout.from_plan(plan)
    assert layout.ids == ("A", "Q", "D", "B")
    s = layout.derive_block(V, 0, 0, 4, bin_minutes=5)
    assert s.labels("color")[0].tolist() == ["green", "yellow", "red", "green"]
    assert s.labels("color")[1].tolist() == ["green", "green", "red", "gray"]  # latency 0, 1.25, 21, null
    assert s.labels("color_reason")[1].tolist() == ["latency"] * 3 + ["no_throughput"]
    assert s.labels("color")[2].tolist() == ["dlq"] * 4
    assert s.labels("capacity_method")[3].tolist() == ["rolling_max"] * 4
    assert s.field("capacity_inferred")[3].tolist() == [5, 8, 9.5, 9.5]
    assert list(to_wire_dicts(s, 0)[0]) == list(WIRE_KEYS) == list(derive_first_wire_keys())
    assert to_wire_dicts(s, 2)[0] == {
        "utilization": 0.95,
        "queueTimeMs": None,
        "latencyMinutes": None,
        "serviceTimeMs": None,
        "cycleTimeMs": None,
        "flowEfficiency": None,
        "throughputRatio": 0.95,
        "retryTax": None,
        "capacityInferred": None,
        "capacityMethod": None,
        "capacityConfidence": None,
        "slaMet": True,
        "color": "red",
        "colorReason": "utilization",
    }


def test_data_gap_of_any_telemetry_field_greys_the_node() -> None:
    nodes = [FakeBinding("A", "service", {"served": "s0", "capacity": "s1"}, None, None, frozenset({"served"}))]
    V = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    gap = np.array([[False, True, False]])
    layout = StackLayout.build(nodes, {"s0": 0, "s1": 1}, ["s0"])
    s = layout.derive_block(V, 0, 0, 3, gaps=lambda a, b: gap[:, a:b])
    assert s.labels("color")[0].tolist() == ["green", "gray", "green"]
    assert s.labels("color_reason")[0].tolist() == ["utilization", "data_gap", "utilization"]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(KeyError):
        StackLayout.build([FakeBinding("A", "bogus", {}, None, None, frozenset())], {}, [])


def test_colour_boundaries_equal_derive() -> None:
    """Utilization and latency exactly on the thresholds (0.7, 0.9, slaMin, 1.5·slaMin)."""
    served = np.array([0.0, 0.69, 0.7, 0.89, 0.9, 1.0, 2.0, 0.4, 0.8, np.nan])
    depth = np.array([0.0, 0.69, 0.35, 0.89, 9.0, 2.0, 6.0, 0.6, 1.2, 1.0])
    V = np.vstack([served, np.ones_like(served), depth])
    nodes = [
        FakeBinding("S", "service", {"served": "s", "capacity": "c"}, None, None, frozenset()),
        FakeBinding("R", "router", {"served": "s", "capacity": "c"}, 2.0, None, frozenset()),
        FakeBinding("Q", "queue", {"served": "s", "queueDepth": "d"}, None, 2.0, frozenset()),
    ]
    layout = StackLayout.build(nodes, {"s": 0, "c": 1, "d": 2}, [])
    s = layout.derive_block(V, 0, 0, len(served), bin_minutes=1)
    case = {
        "V": V,
        "names": ["s", "c", "d"],
        "tele": [],
        "gap": np.zeros((0, len(served)), dtype=np.bool_),
        "t0": 0,
        "t1": len(served),
        "bin_minutes": 1,
    }
    for i, b in enumerate(nodes):
        ref = reference(case, b)
        assert s.labels("color")[i].tolist() == ref.color.tolist(), b.id
        assert s.labels("color_reason")[i].tolist() == ref.color_reason.tolist(), b.id
    assert set(s.labels("color")[0].tolist()) == {"green", "yellow", "red", "gray"}
    assert set(s.labels("color")[2].tolist()) == {"green", "yellow", "red", "gray"}
