"""Class properties (SPEC §14): conservation on random class models; batch ≡ bin by bin ≡ chunks ≡
a live run restored from a captured state, per class, bit for bit; class-less models unchanged."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine_live.errors import ModelError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch, evaluate_range
from engine_live.plan.stage_builder import StageBuilder
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import capture, restore
from tests.engine_live.live_support import TinyRun, apply_frames

CLASSES = ("A", "B", "C")
EXPRS = (
    "{a} + {b}",
    "{a} - {b}",
    "MIN({a}, {b}) * 2",
    "MAX({a}, 1) / {b}",
    "SHIFT({a}, 2) + {b}",
    "CONV({a}, [0.5, 0.3, 0.2])",
    "ROLLING_MEAN({a}, 3) - {b}",
    "CLAMP({a}, 0, 10) + 1",
)


@st.composite
def class_models(draw: st.DrawFn) -> dict[str, Any]:
    bins = draw(st.integers(4, 30))
    nodes: list[dict[str, Any]] = [{"id": f"t{i}", "kind": "const", "source": "telemetry"} for i in range(2)]
    nodes.append({"id": "c0", "kind": "const", "values": [float(v % 7) for v in range(bins)]})
    names = ["t0", "t1", "c0"]
    for i in range(draw(st.integers(1, 6))):
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        nodes.append({"id": f"e{i}", "kind": "expr", "expr": draw(st.sampled_from(EXPRS)).format(a=a, b=b)})
        names.append(f"e{i}")
    if draw(st.booleans()):
        a = draw(st.sampled_from(names))
        nodes.append({"id": "loop", "kind": "expr", "expr": f"MAX(0, SHIFT(loop, 1) + {a} - 2)", "initial": 1})
        names.append("loop")
    routes: list[dict[str, Any]] = [{"target": "r_a", "classes": ["A"]}]
    if draw(st.booleans()):
        routes.append({"target": "r_bc", "classes": ["B", "C"]})
    else:
        routes += [{"target": "r_w1", "weight": 0.75}, {"target": "r_w2", "weight": 0.25}]
    nodes.append({"id": "rt", "kind": "router", "inputs": {"queue": draw(st.sampled_from(names))}, "routes": routes})
    inflow = draw(st.sampled_from([*names, "r_a"]))
    nodes.append(
        {
            "id": "q",
            "kind": "serviceWithBuffer",
            "inflow": inflow,
            "outflow": draw(st.sampled_from(names)),
            "initial": draw(st.sampled_from([0, 2])),
            "wipLimit": draw(st.sampled_from([5, 1000])),
        }
    )
    sources = draw(st.lists(st.sampled_from(["t0", "t1", "c0"]), min_size=1, max_size=3, unique=True))
    arrivals = [
        {"nodeId": s, "classId": c, "pattern": {"kind": "constant", "ratePerBin": draw(st.sampled_from([0, 1, 2.5]))}}
        for s in sources
        for c in draw(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True))
    ]
    return {
        "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
        "nodes": nodes,
        "classes": [{"id": c} for c in CLASSES],
        "traffic": {"arrivals": arrivals},
    }


values = st.one_of(st.integers(0, 20).map(float), st.floats(-50, 100, allow_nan=False, width=32).map(float))


def telemetry_of(data: st.DataObject, bins: int) -> dict[str, np.ndarray]:
    return {s: np.array(data.draw(st.lists(values, min_size=bins, max_size=bins), s)) for s in ("t0", "t1")}


def bin_by_bin(plan: Plan, telemetry: dict[str, np.ndarray], bounds: list[int]) -> np.ndarray:
    W = np.zeros((plan.n_rows, bounds[-1]))
    for t0, t1 in itertools.pairwise(bounds):
        for sid, vals in telemetry.items():
            W[plan.row[sid], t0:t1] = vals[t0:t1]
        evaluate_range(plan, W, 0, t0, t1)
    return W


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=class_models(), data=st.data())
def test_classes_sum_to_their_total_and_batch_equals_bin_by_bin(model: dict[str, Any], data: st.DataObject) -> None:
    try:
        graph = load_graph(model, live=True)
    except ModelError:  # e.g. a window longer than a short grid
        assume(False)
        raise
    plan = compile_model(graph)
    bins = model["grid"]["bins"]
    telemetry = telemetry_of(data, bins)
    V = evaluate_batch(plan, telemetry)
    for sid in plan.names:
        rows = graph.class_rows(sid)
        if not rows:
            continue
        total = V[plan.row[sid]]
        summed = np.sum([V[plan.row[r]] for r in rows], axis=0)
        finite = np.isfinite(total) & (np.abs(total) < 1e12)
        assert np.all(np.abs(summed - total)[finite] <= 1e-9 * np.maximum(1.0, np.abs(total[finite]))), (sid, model)
    assert bin_by_bin(plan, telemetry, list(range(bins + 1))).tobytes() == V.tobytes()
    cuts = data.draw(st.lists(st.integers(1, bins - 1), max_size=4, unique=True), "cuts")
    assert bin_by_bin(plan, telemetry, sorted({0, bins, *cuts})).tobytes() == V.tobytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=class_models(), data=st.data())
def test_a_restored_live_run_equals_batch_per_class(model: dict[str, Any], data: st.DataObject) -> None:
    try:
        plan = compile_model(load_graph(model, live=True))
    except ModelError:
        assume(False)
        raise
    bins = model["grid"]["bins"]
    telemetry = telemetry_of(data, bins)
    crash = data.draw(st.integers(0, bins), "crash")
    run: LiveRun = TinyRun(plan, run_id="r", epoch="e", grace_bins=0)
    run.start()
    for b in range(bins):
        if b == crash:
            run = restore(plan, capture(run))
        apply_frames(run, [(b, s, float(telemetry[s][b])) for s in ("t0", "t1")])
    batch = evaluate_batch(plan, telemetry)
    lo, hi = run.retained_range()
    live = run.V[:, lo - run.base : hi - run.base]
    assert np.array_equal(live.view(np.uint64), batch[:, lo:hi].view(np.uint64))
    assert plan.graph.class_of  # per-class rows are among the compared rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=class_models(), data=st.data())
def test_the_compiled_linear_parts_equal_the_expression_closures(model: dict[str, Any], data: st.DataObject) -> None:
    """The fast path (raw class parts as linear forms over rows, `plan/class_linear.py`) gives the
    values of the general path (the parts' expression closures), to rounding."""
    try:
        graph = load_graph(model, live=True)
    except ModelError:
        assume(False)
        raise
    telemetry = telemetry_of(data, model["grid"]["bins"])
    fast = evaluate_batch(compile_model(graph), telemetry)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StageBuilder, "_linear_parts", lambda self, parts: None)
        slow_plan = compile_model(graph)
    assert not any(type(stage).__name__ == "LinearSplitGroup" for stage in slow_plan.stages)
    slow = evaluate_batch(slow_plan, telemetry)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
