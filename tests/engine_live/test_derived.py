"""Derived metrics, colours, capacity inference, SLA and wire rounding (SPEC §3, §12.5)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from engine_live.derived.node_metrics import (
    NodeInputs,
    derive,
    round_wire,
    sla_summary,
    to_wire_list,
    to_wire_value,
)

NAN = math.nan


def arr(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def same(actual: np.ndarray, expected: list[float]) -> None:
    """Equal with NaN == NaN (null)."""
    np.testing.assert_allclose(actual, np.array(expected, dtype=np.float64), rtol=1e-12, atol=0, equal_nan=True)


def example() -> NodeInputs:
    return NodeInputs(
        "OrderService",
        "service",
        {
            "arrivals": arr(10, 20, 0, 40),
            "served": arr(10, 15, 0, 30),
            "capacity": arr(20, 20, 20, 0),
            "queueDepth": arr(0, 5, 5, 15),
        },
    )


def test_example_node_by_hand() -> None:
    d = derive(example(), 5)
    same(d.utilization, [10 / 20, 15 / 20, 0 / 20, NAN])  # capacity 0 → null
    same(d.latency_minutes, [0 / 10 * 5, 5 / 15 * 5, NAN, 15 / 30 * 5])  # served 0 → null
    same(d.queue_time_ms, [0.0, 5 / 15 * 300000, NAN, 15 / 30 * 300000])
    same(d.throughput_ratio, [1.0, 0.75, NAN, 0.75])
    same(d.service_time_ms, [NAN] * 4)
    same(d.cycle_time_ms, [0.0, 100000.0, NAN, 150000.0])  # missing service time counts 0
    same(d.flow_efficiency, [NAN] * 4)
    same(d.retry_tax, [NAN] * 4)
    same(d.capacity_inferred, [NAN] * 4)  # a capacity series exists
    assert d.capacity_method.tolist() == [None] * 4
    assert d.sla_met.tolist() == [True, False, True, False]  # 0.75 < 0.95; arrivals 0 is met
    assert d.color.tolist() == ["green", "yellow", "green", "gray"]
    assert d.color_reason.tolist() == ["utilization", "utilization", "utilization", "no_capacity"]


def test_wire_bin_and_window_shapes() -> None:
    d = derive(example(), 5)
    b = d.wire_bin(1)
    assert b["latencyMinutes"] == 1.666667
    assert b["utilization"] == 0.75 and b["serviceTimeMs"] is None
    assert b["slaMet"] is False and b["color"] == "yellow" and b["colorReason"] == "utilization"
    assert b["capacityMethod"] is None and b["capacityConfidence"] is None
    w = d.wire_window(1, 4)
    assert w["utilization"] == [0.75, 0.0, None]
    assert w["latencyMinutes"] == [1.666667, None, 2.5]
    assert w["color"] == ["yellow", "green", "gray"]
    assert w["slaMet"] == [False, True, False]


def test_utilization_colour_thresholds_and_parallelism() -> None:
    served = arr(6.9, 7, 8.99, 9, 12, 0, NAN)
    node = NodeInputs("S", "router", {"served": served, "capacity": np.full(7, 5.0)}, parallelism=2.0)
    d = derive(node, 1)
    same(d.utilization, [0.69, 0.7, 0.899, 0.9, 1.2, 0.0, NAN])
    assert d.color.tolist() == ["green", "yellow", "yellow", "red", "red", "green", "gray"]
    assert d.color_reason[-1] == "no_throughput"  # capacity known, served unknown
    # parallelism as a series
    node = NodeInputs("S", "sink", {"served": arr(4, 4), "capacity": arr(4, 4)}, parallelism=arr(1, 4))
    same(derive(node, 1).utilization, [1.0, 0.25])


@pytest.mark.parametrize("kind", ["service", "serviceWithBuffer", "router", "sink"])
def test_utilization_rule_applies_to_kind(kind: str) -> None:
    d = derive(NodeInputs("N", kind, {"served": arr(1, 8, 9.5), "capacity": arr(10, 10, 10)}), 1)
    assert d.color.tolist() == ["green", "yellow", "red"]


def test_no_capacity_is_gray() -> None:
    d = derive(NodeInputs("N", "service", {"served": arr(1, 2)}), 1)
    assert d.color.tolist() == ["gray", "gray"]
    assert d.color_reason.tolist() == ["no_capacity", "no_capacity"]


def test_queue_colours_against_sla() -> None:
    # latency = queueDepth / served × binMinutes, binMinutes 1: [1, 2, 3, 3.5, null]
    metrics = {"served": arr(10, 10, 10, 10, 0), "queueDepth": arr(10, 20, 30, 35, 5)}
    d = derive(NodeInputs("Q", "queue", metrics, sla_min=2.0), 1)
    same(d.latency_minutes, [1, 2, 3, 3.5, NAN])
    assert d.color.tolist() == ["green", "green", "yellow", "red", "gray"]
    assert d.color_reason.tolist() == ["latency"] * 4 + ["no_throughput"]
    no_sla = derive(NodeInputs("Q", "queue", metrics), 1)
    assert set(no_sla.color.tolist()) == {"gray"} and set(no_sla.color_reason.tolist()) == {"no_sla"}


def test_dlq_and_data_gap_colours() -> None:
    metrics = {"arrivals": arr(1, 1, 1), "served": arr(1, 1, 1), "capacity": arr(2, 2, 2)}
    d = derive(NodeInputs("D", "dlq", metrics), 1)
    assert d.color.tolist() == ["dlq"] * 3 and d.color_reason.tolist() == ["dlq"] * 3
    assert d.sla_evaluated.tolist() == [False] * 3  # dlq never counts for SLA
    gap = np.array([False, True, False])
    d = derive(NodeInputs("S", "service", metrics, gap=gap), 1)
    assert d.color.tolist() == ["green", "gray", "green"]
    assert d.color_reason.tolist() == ["utilization", "data_gap", "utilization"]
    assert d.sla_evaluated.tolist() == [True, False, True]
    assert d.wire_bin(1)["slaMet"] is None
    d = derive(NodeInputs("D", "dlq", metrics, gap=gap), 1)
    assert d.color.tolist() == ["dlq", "gray", "dlq"]


def test_service_cycle_and_flow_efficiency() -> None:
    metrics = {
        "served": arr(10, 10, 0, 10, 10),
        "queueDepth": arr(1, 0, 4, 2, 0),
        "processingTimeMsSum": arr(1000, 0, 500, 300, 0),
        "servedCount": arr(10, 0, 5, 0, 4),
    }
    d = derive(NodeInputs("S", "serviceWithBuffer", metrics), 1)  # binMs 60000
    same(d.queue_time_ms, [6000, 0, NAN, 12000, 0])
    same(d.service_time_ms, [100, NAN, 100, NAN, 0])
    same(d.cycle_time_ms, [6100, 0, 100, 12000, 0])
    same(d.flow_efficiency, [100 / 6100, NAN, 1.0, NAN, NAN])  # 0/0 → null
    empty = derive(NodeInputs("S", "service", {"served": arr(1, 2)}), 1)
    same(empty.cycle_time_ms, [NAN, NAN])


def test_throughput_clamp_and_retry_tax_floor() -> None:
    metrics = {"arrivals": arr(10, 10, 0, 5), "served": arr(8, 12, 0, 5), "attempts": arr(10, 10, 0, 5)}
    d = derive(NodeInputs("S", "service", metrics), 1)
    same(d.throughput_ratio, [0.8, 1.0, NAN, 1.0])
    same(d.retry_tax, [0.2, 0.0, NAN, 0.0])  # (10-12)/10 floored at 0; attempts 0 → null
    assert d.sla_met.tolist() == [False, True, True, True]


def test_capacity_inferred_saturation_and_rolling_max() -> None:
    metrics = {"served": arr(5, 8, 6, 7), "externalDemand": arr(5, 10, 6, 7), "queueDepth": arr(0, 0, 3, 0)}
    d = derive(NodeInputs("S", "service", metrics), 1)
    # saturated: [no, demand > served, queue > 0, no]; rolling max of served: [5, 8, 8, 8]
    same(d.capacity_inferred, [5, 8, 6, 8])
    assert d.capacity_method.tolist() == ["rolling_max", "saturation", "saturation", "rolling_max"]
    assert d.capacity_confidence.tolist() == ["low", "high", "high", "low"]
    same(d.utilization, [NAN] * 4)  # utilization never uses the inferred capacity
    assert d.wire_bin(1)["capacityInferred"] == 8.0 and d.wire_bin(1)["capacityMethod"] == "saturation"


def test_rolling_max_uses_lookback_history_over_12_bins() -> None:
    served = np.concatenate([arr(100, 50), np.ones(12)])
    d = derive(NodeInputs("S", "service", {"served": served}, lookback=2), 1)
    assert d.n_bins == 12
    # output bin k is input bin k+2; window = input bins max(0, k+2-11)..k+2
    same(d.capacity_inferred, [100.0] * 10 + [50.0, 1.0])
    without = derive(NodeInputs("S", "service", {"served": served[2:]}), 1)
    same(without.capacity_inferred, [1.0] * 12)


def test_capacity_inferred_ignores_nan_and_needs_served() -> None:
    d = derive(NodeInputs("S", "service", {"served": arr(NAN, 3, NAN)}), 1)
    same(d.capacity_inferred, [NAN, 3, 3])
    assert d.capacity_method.tolist() == [None, "rolling_max", "rolling_max"]
    d = derive(NodeInputs("S", "service", {"arrivals": arr(1, 2)}), 1)
    same(d.capacity_inferred, [NAN, NAN])


def test_lookback_bins_are_excluded_from_outputs() -> None:
    full = derive(example(), 5)
    node = example()
    tail = derive(NodeInputs(node.node_id, node.kind, node.metrics, lookback=2), 5)
    assert tail.n_bins == 2
    same(tail.utilization, full.utilization[2:].tolist())
    assert tail.color.tolist() == full.color[2:].tolist()


def test_no_numpy_warnings_on_hostile_inputs() -> None:
    metrics = {
        k: arr(0, NAN, math.inf, -math.inf, 1e308, 1e-308)
        for k in (
            "arrivals",
            "served",
            "capacity",
            "queueDepth",
            "externalDemand",
            "attempts",
            "processingTimeMsSum",
            "servedCount",
        )
    }
    d = derive(NodeInputs("S", "queue", metrics, parallelism=arr(0, 1, 1, 1, 1e-10, 1), sla_min=1), 1)
    for field in ("utilization", "queue_time_ms", "cycle_time_ms", "flow_efficiency", "retry_tax"):
        assert not np.isinf(getattr(d, field)).any()


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        NodeInputs("X", "widget", {})
    with pytest.raises(ValueError, match="lengths differ"):
        NodeInputs("X", "service", {"served": arr(1, 2), "arrivals": arr(1)})
    with pytest.raises(ValueError, match="lookback"):
        NodeInputs("X", "service", {"served": arr(1, 2)}, lookback=3)


def test_sla_summary() -> None:
    a = derive(example(), 5)  # met [T, F, T, F]
    b = derive(
        NodeInputs(
            "B",
            "service",
            {"arrivals": arr(10, 10, 10, 10), "served": arr(10, 10, 10, 9)},
            gap=np.array([False, False, False, True]),
        ),
        5,
    )  # 3 evaluated, all met
    c = derive(NodeInputs("C", "dlq", {"arrivals": arr(1, 1, 1, 1), "served": arr(0, 0, 0, 0)}), 5)
    s = sla_summary({"A": a, "B": b, "C": c})
    assert s["nodes"] == [
        {"nodeId": "A", "binsEvaluated": 4, "binsMet": 2, "percentMet": 50.0},
        {"nodeId": "B", "binsEvaluated": 3, "binsMet": 3, "percentMet": 100.0},
        {"nodeId": "C", "binsEvaluated": 0, "binsMet": 0, "percentMet": None},
    ]
    assert s["overall"] == {"binsEvaluated": 7, "binsMet": 5, "percentMet": 71.428571}
    assert sla_summary({"A": a}, 1, 3)["overall"]["percentMet"] == 50.0


# ---- wire rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.1234565, 0.123457),
        (-0.1234565, -0.123457),
        (-0.0000000001, 0.0),
        (2.5e-7, 0.0),
        (5e-7, 1e-6),
        (-5e-7, -1e-6),
        (2.5e-6, 3e-6),  # half away from zero, not half to even
        (1.0000005, 1.000001),
        (0.1 + 0.2, 0.3),
        (123.456, 123.456),
        (1e20, 1e20),
        (-0.0, 0.0),
    ],
)
def test_to_wire_value(x: float, expected: float) -> None:
    got = to_wire_value(x)
    assert got == expected
    assert math.copysign(1.0, got) == math.copysign(1.0, expected)  # no "-0"
    vec = round_wire([x])[0]
    assert vec == expected and math.copysign(1.0, vec) == math.copysign(1.0, expected)


@pytest.mark.parametrize("x", [NAN, math.inf, -math.inf])
def test_to_wire_value_non_finite_is_null(x: float) -> None:
    assert to_wire_value(x) is None
    assert to_wire_list([x, 1.5]) == [None, 1.5]


def test_vectorized_rounding_matches_scalar_reference() -> None:
    rng = np.random.default_rng(7)
    ties = rng.integers(-(10**9), 10**9, 3000) / 1e7 + 0.00000005  # many exact decimal ties
    values = np.concatenate(
        [
            ties,
            rng.normal(0, 1e3, 3000),
            rng.normal(0, 1e12, 500),
            rng.integers(-(10**6), 10**6, 500) * 0.5e-6,
            [1e-9, -1e-9, 9.99e-10],
        ]
    )
    vec = round_wire(values)

    def reference(v: float) -> float:
        r = float(Decimal(repr(v)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))
        return 0.0 if abs(r) < 1e-9 else r

    expected = [reference(v) for v in values.tolist()]
    assert vec.tolist() == expected
    assert [to_wire_value(v) for v in values.tolist()] == expected
