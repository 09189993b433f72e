"""Every expression function and operator of SPEC §2, hand-computed on small const inputs.

Each test builds a tiny model (const series + one expression node `x`), evaluates it in batch and
bin by bin, and compares with numbers worked out by hand. NaN compares equal to NaN; everything
else must match exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch, evaluate_range

NAN = math.nan
INF = math.inf


def run_nodes(nodes: list[dict[str, Any]], bins: int) -> dict[str, np.ndarray]:
    """Evaluate a model in batch, check bin-by-bin gives the same bits, return every series."""
    model = {"schemaVersion": 1, "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes}
    plan = compile_model(load_graph(model))
    V = evaluate_batch(plan)
    W = np.zeros_like(V)
    for t in range(bins):
        evaluate_range(plan, W, 0, t, t + 1)
    assert V.tobytes() == W.tobytes()
    return {name: V[plan.row[name]] for name in plan.names}


def ev(expr: str, initial: float | None = None, **series: list[float]) -> list[float]:
    """Value of `x = expr` with the given const series (all of the same length)."""
    bins = len(next(iter(series.values()))) if series else 4
    nodes: list[dict[str, Any]] = [{"id": k, "kind": "const", "values": v} for k, v in series.items()]
    node: dict[str, Any] = {"id": "x", "kind": "expr", "expr": expr}
    if initial is not None:
        node["initial"] = initial
    nodes.append(node)
    return list(run_nodes(nodes, bins)["x"])


def same(actual: list[float] | np.ndarray, expected: list[float]) -> None:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (list(a), expected)
    assert np.array_equal(a, e, equal_nan=True), (list(a), expected)


# -- arithmetic ---------------------------------------------------------------------------------


def test_add_sub_mul_div() -> None:
    a, b = [1, 2, 3, 4], [4, 3, 2, 0.5]
    same(ev("a + b", a=a, b=b), [5, 5, 5, 4.5])
    same(ev("a - b", a=a, b=b), [-3, -1, 1, 3.5])
    same(ev("a * b", a=a, b=b), [4, 6, 6, 2])
    same(ev("a / b", a=a, b=b), [0.25, 2 / 3, 1.5, 8])


def test_precedence_parentheses_and_number_forms() -> None:
    same(ev("1 + 2 * 3 - 4 / 2"), [5, 5, 5, 5])
    same(ev("(1 + 2) * 3"), [9, 9, 9, 9])
    same(ev("10 - 4 - 3"), [3, 3, 3, 3])  # left associative
    same(ev("16 / 4 / 2"), [2, 2, 2, 2])
    same(ev(".5 + 1e3 + 0.25"), [1000.75] * 4)


def test_division_by_zero_is_zero() -> None:
    a = [5, 0, NAN, -3, INF]
    zero = [0, 0, 0, 0, 0]
    same(ev("a / z", a=a, z=zero), [0, 0, 0, 0, 0])  # x/0, 0/0, NaN/0, -x/0, inf/0
    same(ev("a / 0", a=a), [0, 0, 0, 0, 0])
    same(ev("1 / (a - a)", a=[1, 2, 3]), [0, 0, 0])
    # a non-zero divisor keeps IEEE semantics
    same(ev("a / b", a=[1, NAN, INF, 0], b=[4, 2, 2, -2]), [0.25, NAN, INF, 0])


def test_unary_minus_and_plus() -> None:
    a = [1, -2, 0.5, 0]
    same(ev("-a", a=a), [-1, 2, -0.5, 0])
    same(ev("- -a", a=a), [1, -2, 0.5, 0])
    same(ev("+a", a=a), a)
    same(ev("2 - -a", a=a), [3, 0, 2.5, 2])
    same(ev("-(a + 1) * 2", a=a), [-4, 2, -3, -2])
    same(ev("-2 * -3"), [6, 6, 6, 6])


# -- SHIFT --------------------------------------------------------------------------------------


def test_shift_lags() -> None:
    a = [1, 2, 3, 4, 5]
    same(ev("SHIFT(a, 0)", a=a), [1, 2, 3, 4, 5])
    same(ev("SHIFT(a, 1)", a=a), [0, 1, 2, 3, 4])
    same(ev("SHIFT(a, 2)", a=a), [0, 0, 1, 2, 3])
    same(ev("SHIFT(a, 7)", a=a), [0, 0, 0, 0, 0])  # lag past the grid
    same(ev("SHIFT(SHIFT(a, 1), 2)", a=a), [0, 0, 0, 1, 2])


def test_shift_of_series_with_initial_uses_it() -> None:
    nodes = [
        {"id": "a", "kind": "const", "values": [1, 2, 3, 4, 5]},
        {"id": "s", "kind": "expr", "expr": "a * 10", "initial": 7},
        {"id": "s1", "kind": "expr", "expr": "SHIFT(s, 1)"},
        {"id": "s2", "kind": "expr", "expr": "SHIFT(s, 2)"},
        {"id": "e1", "kind": "expr", "expr": "SHIFT(s * 1, 1)"},  # an expression: initial 0
        {"id": "e2", "kind": "expr", "expr": "SHIFT(s + 0, 2)"},
        {"id": "s0", "kind": "expr", "expr": "SHIFT(s, 0)"},
    ]
    out = run_nodes(nodes, 5)
    same(out["s"], [10, 20, 30, 40, 50])  # initial does not change the series itself
    same(out["s1"], [7, 10, 20, 30, 40])
    same(out["s2"], [7, 7, 10, 20, 30])
    same(out["e1"], [0, 10, 20, 30, 40])
    same(out["e2"], [0, 0, 10, 20, 30])
    same(out["s0"], [10, 20, 30, 40, 50])


def test_shift_of_queue_uses_queue_initial() -> None:
    nodes = [
        {"id": "inn", "kind": "const", "values": [4, 4, 4]},
        {"id": "q", "kind": "serviceWithBuffer", "inflow": "inn", "initial": 3},
        {"id": "x", "kind": "expr", "expr": "SHIFT(q, 1)"},
        {"id": "y", "kind": "expr", "expr": "SHIFT(q_outflow, 1)"},  # helper series: no initial
    ]
    out = run_nodes(nodes, 3)
    same(out["q"], [7, 11, 15])
    same(out["x"], [3, 7, 11])
    same(out["y"], [0, 0, 0])


# -- CONV ---------------------------------------------------------------------------------------


def test_conv_is_causal() -> None:
    a = [4, 8, 0, 2]
    # t0: 4; t1: 8 + 4*.5; t2: 0 + 8*.5 + 4*.25; t3: 2 + 0 + 8*.25
    same(ev("CONV(a, [1, 0.5, 0.25])", a=a), [4, 10, 5, 4])
    same(ev("CONV(a, [0, 1])", a=a), [0, 4, 8, 0])  # a one-bin delay
    same(ev("CONV(a, [2])", a=a), [8, 16, 0, 4])
    same(ev("CONV(a, [0, 0, 0, 0, 0, 1])", a=a), [0, 0, 0, 0])  # taps past t read nothing
    same(ev("CONV(a, [1, -1])", a=a), [4, 4, -8, 2])


# -- MIN, MAX, CLAMP ----------------------------------------------------------------------------


def test_min_max_two_and_three_args_with_nan() -> None:
    a, b, c = [1, 5, NAN, 3], [2, 4, 1, NAN], [0, 9, 2, 3]
    same(ev("MIN(a, b)", a=a, b=b), [1, 4, NAN, NAN])
    same(ev("MAX(a, b)", a=a, b=b), [2, 5, NAN, NAN])
    same(ev("MIN(a, b, c)", a=a, b=b, c=c), [0, 4, NAN, NAN])
    same(ev("MAX(a, b, c)", a=a, b=b, c=c), [2, 9, NAN, NAN])
    same(ev("MAX(c, 2.5)", c=c), [2.5, 9, 2.5, 3])
    same(ev("min(c, 1)", c=c), [0, 1, 1, 1])  # case-insensitive names


def test_clamp() -> None:
    v = [1, 3, 5, NAN, -INF]
    same(ev("CLAMP(v, 2, 4)", v=v), [2, 3, 4, NAN, 2])
    same(ev("CLAMP(v, 5, 4)", v=v), [4, 4, 4, NAN, 4])  # MIN(MAX(v, lo), hi): hi wins
    same(ev("CLAMP(2, v, 10)", v=v), [2, 3, 5, NAN, 2])


# -- single-argument math -----------------------------------------------------------------------


def test_abs_sqrt() -> None:
    same(ev("ABS(a)", a=[-2, 0, 3.5, -INF]), [2, 0, 3.5, INF])
    same(ev("SQRT(a)", a=[4, -4, 2.25, 0, -0.01]), [2, 0, 1.5, 0, 0])


def test_pow_follows_c_pow() -> None:
    a, b = [2, 4, -8, 0, 0, -2, 1], [3, 0.5, 1 / 3, 0, -1, 2, NAN]
    same(ev("POW(a, b)", a=a, b=b), [8, 2, NAN, 1, INF, 4, 1])  # pow(1, NaN) = 1 in C


def test_floor_ceil() -> None:
    a = [-1.5, 1.5, 2, -0.2]
    same(ev("FLOOR(a)", a=a), [-2, 1, 2, -1])
    same(ev("CEIL(a)", a=a), [-1, 2, 2, 0])


def test_round_half_away_from_zero() -> None:
    a = [2.5, -2.5, 0.49999999999999994, 0.5, -0.5, 1.4999, 3.5, 4503599627370497.0]
    same(ev("ROUND(a)", a=a), [3, -3, 0, 1, -1, 1, 4, 4503599627370497.0])
    same(ev("ROUND(a)", a=[-0.49999999999999994, 1.5, 2.4999999999999996]), [0, 2, 2])


def test_mod_is_floored() -> None:
    v, d = [-7, 7, 7, 7.5, -7, 6], [3, -3, 0, 2, -3, 3]
    same(ev("MOD(v, d)", v=v, d=d), [2, -2, 0, 1.5, -1, 0])
    same(ev("MOD(v, 0)", v=v), [0, 0, 0, 0, 0, 0])


def test_step() -> None:
    same(ev("STEP(a, 3)", a=[2, 3, 4, NAN]), [0, 1, 1, 0])
    same(ev("STEP(3, a)", a=[2, 3, 4, -1]), [1, 1, 0, 1])


# -- PULSE --------------------------------------------------------------------------------------


def test_pulse_period_phase_amp() -> None:
    bins = 7
    z = [0] * bins
    same(ev("PULSE(3)", z=z), [1, 0, 0, 1, 0, 0, 1])
    same(ev("PULSE(3, 1)", z=z), [0, 1, 0, 0, 1, 0, 0])
    same(ev("PULSE(3, 0, 5)", z=z), [5, 0, 0, 5, 0, 0, 5])
    same(ev("PULSE(1)", z=z), [1] * bins)
    same(ev("PULSE(2, 5)", z=z), [0, 0, 0, 0, 0, 1, 0])  # t >= phase: no pulse at t=1 or t=3
    same(ev("PULSE(2, 1, a)", a=[9, 8, 7, 6, 5, 4, 3]), [0, 8, 0, 6, 0, 4, 0])  # amp any expression
    same(ev("PULSE(3, 0, -2) * 50 + 150", z=z), [50, 150, 150, 50, 150, 150, 50])
    same(ev("pulse(4, 2)", z=z), [0, 0, 1, 0, 0, 0, 1])


# -- ROLLING_* ----------------------------------------------------------------------------------


def test_rolling_max() -> None:
    a = [1, 5, 2, 0, -1, -3]
    same(ev("ROLLING_MAX(a, 3)", a=a), [1, 5, 5, 5, 2, 0])
    same(ev("ROLLING_MAX(a, 1)", a=a), a)
    same(ev("ROLLING_MAX(a, 6)", a=a), [1, 5, 5, 5, 5, 5])


def test_rolling_mean_divides_by_bins_present() -> None:
    a = [1, 5, 2, 0, -1, -3]
    # t0: 1/1; t1: 6/2; t2..: sums over 3 bins / 3
    same(ev("ROLLING_MEAN(a, 3)", a=a), [1, 3, 8 / 3, 7 / 3, 1 / 3, -4 / 3])
    same(ev("ROLLING_MEAN(a, 1)", a=a), a)
    same(ev("ROLLING_MEAN(a, 6)", a=a), [1, 3, 8 / 3, 2, 7 / 5, 4 / 6])


def test_nested_functions() -> None:
    a = [10, 20, 30, 40]
    # MAX(0, SHIFT(a,1) - 15) = [0, 0, 5, 15]; * ROUND(2.5)=3 → [0, 0, 15, 45]
    same(ev("MAX(0, SHIFT(a, 1) - 15) * ROUND(2.5)", a=a), [0, 0, 15, 45])
    same(ev("ROLLING_MAX(SHIFT(a, 1), 2)", a=a), [0, 10, 20, 30])
    same(ev("CONV(SHIFT(a, 1), [1, 1])", a=a), [0, 10, 30, 50])
    same(ev("SHIFT(ROLLING_MEAN(a, 2), 1)", a=a), [0, 10, 15, 25])
