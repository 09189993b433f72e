"""Classes (SPEC §14): hand-computed per-class values of routers, queues, expressions and retries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine_live.errors import ModelError
from engine_live.model.build import load_graph
from engine_live.plan.batch_run import run_model
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch


def class_model(nodes: list[dict[str, Any]], arrivals: list[tuple[str, str, float]], **extra: Any) -> dict[str, Any]:
    classes = sorted({c for _, c, _ in arrivals}) if "classes" not in extra else extra.pop("classes")
    return {
        "grid": {"bins": 3, "binSize": 1, "binUnit": "hours"},
        "nodes": nodes,
        "classes": [{"id": c} for c in classes],
        "traffic": {
            "arrivals": [
                {"nodeId": n, "classId": c, "pattern": {"kind": "constant", "ratePerBin": r}} for n, c, r in arrivals
            ]
        },
        **extra,
    }


def series(m: dict[str, Any]) -> dict[str, list[float]]:
    plan = compile_model(load_graph(m))
    V = evaluate_batch(plan)
    return {name: [float(v) for v in V[row]] for name, row in plan.row.items()}


def const(nid: str, values: list[float]) -> dict[str, Any]:
    return {"id": nid, "kind": "const", "values": values}


def router(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "splitter", "kind": "router", "router": {"inputs": {"queue": "total"}, "routes": routes}}


AB = [("total", "Alpha", 40.0), ("total", "Beta", 60.0)]


def test_mixed_router_sends_alpha_by_class_and_splits_the_rest_by_weight() -> None:
    routes = [
        {"target": "airport", "classes": ["Alpha"]},
        {"target": "general", "weight": 0.75},
        {"target": "overflow", "weight": 0.25},
    ]
    out = series(class_model([const("total", [100, 100, 100]), router(routes)], AB))
    assert out["airport"] == [40, 40, 40] and out["airport@Alpha"] == [40, 40, 40] and out["airport@Beta"] == [0] * 3
    assert out["general"] == [45, 45, 45] and out["general@Beta"] == [45] * 3 and out["general@Alpha"] == [0] * 3
    assert out["overflow"] == [15, 15, 15] and out["overflow@Beta"] == [15] * 3


def test_class_router_sends_each_class_to_its_target() -> None:
    routes = [{"target": "airport", "classes": ["Alpha"]}, {"target": "general", "classes": ["Beta"]}]
    out = series(class_model([const("total", [100, 100, 100]), router(routes)], AB))
    assert out["airport"] == [40] * 3 and out["general"] == [60] * 3
    assert out["total@Alpha"] == [40] * 3 and out["splitter@Beta"] == [60] * 3


def test_router_warnings_for_a_class_without_route() -> None:
    routes = [{"target": "airport", "classes": ["Alpha"]}]
    graph = load_graph(class_model([const("total", [100, 100, 100]), router(routes)], AB))
    codes = {w["code"] for w in graph.info if w["nodeId"] == "splitter"}
    assert codes == {"router_missing_class_route", "router_class_leakage"}


def test_queue_fed_by_two_classes_keeps_a_depth_per_class() -> None:
    """Shares of the content available in each bin: t0 10/30 → 5/15; t1 5/35 → 2.5/17.5; t2 drains."""
    nodes = [
        const("ia", [10, 0, 0]),
        const("ib", [30, 20, 0]),
        {"id": "inflow", "kind": "expr", "expr": "ia + ib"},
        const("served", [20, 20, 20]),
        {"id": "q", "kind": "serviceWithBuffer", "inflow": "inflow", "outflow": "served", "initial": 0},
    ]
    out = series(class_model(nodes, [("ia", "A", 1), ("ib", "B", 1)]))
    assert out["q"] == [20, 20, 0]
    assert out["q@A"] == [5, 2.5, 0] and out["q@B"] == [15, 17.5, 0]
    assert out["q_outflow@A"] == [5, 2.5, 2.5] and out["q_outflow@B"] == [15, 17.5, 17.5]


def test_expression_shares_follow_the_first_class_bearing_input() -> None:
    nodes = [
        const("a", [100, 100, 100]),
        const("b", [50, 50, 50]),
        {"id": "x", "kind": "expr", "expr": "MIN(b, a)"},  # shares of b: all B
        {"id": "y", "kind": "expr", "expr": "a * 2"},  # shares of a: 1:3
        {"id": "z", "kind": "expr", "expr": "a - b"},  # per class: 25 - 0, 75 - 50
        {"id": "w", "kind": "expr", "expr": "b - a"},  # negative total: shares of the first term b
        {"id": "k", "kind": "expr", "expr": "y + 1"},  # a class-less term follows the classes' shares
    ]
    out = series(class_model(nodes, [("a", "A", 1), ("a", "B", 3), ("b", "B", 1)]))
    assert out["x@A"] == [0] * 3 and out["x@B"] == [50] * 3
    assert out["y@A"] == [50] * 3 and out["y@B"] == [150] * 3
    assert out["z@A"] == [25] * 3 and out["z@B"] == [25] * 3
    assert out["w@A"] == [0] * 3 and out["w@B"] == [-50] * 3
    assert out["k@A"] == [50.25] * 3 and out["k@B"] == [150.75] * 3


def test_retries_echo_per_class() -> None:
    """failures 10 per bin (A 2.5, B 7.5); echo CONV(f, [0, .6, .3, .1]) = 0, 6, 9 split 1:3."""
    nodes = [const("a", [100, 100, 100]), {"id": "f", "kind": "expr", "expr": "a * 0.1"}]
    topology = {
        "nodes": [
            {"id": "Svc", "kind": "service", "semantics": {"arrivals": "a", "failures": "f", "retryEcho": "echo"}}
        ]
    }
    out = series(class_model(nodes, [("a", "A", 1), ("a", "B", 3)], topology=topology))
    assert np.allclose(out["echo"], [0, 6, 9])
    assert np.allclose(out["echo@A"], [0, 1.5, 2.25]) and np.allclose(out["echo@B"], [0, 4.5, 6.75])


def test_shift_applies_per_class() -> None:
    nodes = [const("ia", [4, 0, 0]), const("ib", [0, 8, 0]), {"id": "s", "kind": "expr", "expr": "SHIFT(ia + ib, 1)"}]
    out = series(class_model(nodes, [("ia", "A", 1), ("ib", "B", 1)]))
    assert out["s"] == [0, 4, 8] and out["s@A"] == [0, 4, 0] and out["s@B"] == [0, 0, 8]


def test_an_arrival_naming_an_undeclared_class_is_an_error() -> None:
    m = class_model([const("total", [1, 1, 1])], AB, classes=["Alpha"])
    with pytest.raises(ModelError, match="classId: 'Beta' is not a declared class"):
        load_graph(m)


def test_artifacts_carry_per_class_series_beside_the_total() -> None:
    routes = [{"target": "airport", "classes": ["Alpha"]}, {"target": "general", "classes": ["Beta"]}]
    result = run_model(class_model([const("total", [100, 100, 100]), router(routes)], AB)).result
    ids = [(one.series_id, one.class_id) for one in result.series if one.node_id == "airport"]
    assert ids == [
        ("airport@AIRPORT@DEFAULT", "DEFAULT"),
        ("airport@AIRPORT@Alpha", "Alpha"),
        ("airport@AIRPORT@Beta", "Beta"),
    ]
