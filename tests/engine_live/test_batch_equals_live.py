"""Batch ≡ live (SPEC §2): random models mixing every primitive evaluate to the same bits whether
the grid is evaluated at once, bin by bin, in random chunks, again, or in a window (`base` > 0)
after a correction. Plus the queue kernel: `queue_series` ≡ `step_bins` bit for bit."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.expressions.parser import parse_expr, refs_of
from engine_live.model.build import load_graph
from engine_live.model.topology_builder import snake_case
from engine_live.plan.compiler import Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch, evaluate_range
from engine_live.plan.queue_kernel import COMPILED_CELLS, compiled_steps, queue_series, step_bins

NAN, INF = math.nan, math.inf
CAMEL = ("HTTPService", "QueueA", "Service2A", "API_Gateway", "OrderSvc", "Pay")
TOPO_KINDS = ("service", "serviceWithBuffer", "queue", "dlq", "router", "sink")
QUEUE_KINDS = ("serviceWithBuffer", "queue", "dlq")
ROUTE_TARGETS = ("rt0", "rt1", "rt2")
LITERALS = (0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 10.0, 0.1, 1e-3, 100.0, 7.25)
SPECIAL = (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 0.1, 3.0, 7.0, 10.0, 100.0, 1e-300, 1e300)

finite = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(-1000, 1000, allow_nan=False),
    st.integers(-20, 60).map(float),
    st.integers(0, 40).map(lambda i: i / 4),
)
non_finite = st.sampled_from((NAN, INF, -INF))


def series_values(draw: Any, bins: int) -> list[float]:
    elem = st.one_of(*([finite] * 9), non_finite) if draw(st.booleans()) else finite
    return draw(st.lists(elem, min_size=bins, max_size=bins))


# -- random expressions: a tree of shapes, rendered with concrete references and numbers -------------


def expr_tree(draw: Any, depth: int) -> tuple[Any, ...]:
    if depth == 0 or draw(st.integers(0, 4)) == 0:
        return ("num",) if draw(st.integers(0, 3)) == 0 else ("ref",)
    tag = draw(
        st.sampled_from(("bin", "bin", "neg", "minmax", "clamp", "f1", "f2", "shift", "shift", "conv", "roll", "pulse"))
    )
    sub = lambda: expr_tree(draw, depth - 1)  # noqa: E731
    if tag == "bin":
        return ("bin", draw(st.sampled_from("+-*/")), sub(), sub())
    if tag == "neg":
        return ("neg", sub())
    if tag == "minmax":
        n = draw(st.integers(2, 3))
        return ("call", draw(st.sampled_from(("MIN", "MAX"))), *[sub() for _ in range(n)])
    if tag == "clamp":
        return ("call", "CLAMP", sub(), sub(), sub())
    if tag == "f1":
        return ("call", draw(st.sampled_from(("ABS", "SQRT", "FLOOR", "CEIL", "ROUND"))), sub())
    if tag == "f2":
        return ("call", draw(st.sampled_from(("POW", "MOD", "STEP"))), sub(), sub())
    if tag == "shift":
        return ("shift", sub(), draw(st.integers(0, 3)))
    if tag == "conv":
        kernel = draw(st.lists(st.sampled_from((0.0, 1.0, 0.5, -0.5, 0.3, 0.25, 1e-5)), min_size=1, max_size=5))
        return ("conv", sub(), tuple(kernel))
    if tag == "roll":
        return ("roll", draw(st.sampled_from(("ROLLING_MAX", "ROLLING_MEAN"))), sub(), draw(st.integers(1, 5)))
    nargs = draw(st.integers(1, 3))
    return ("pulse", draw(st.integers(1, 4)), draw(st.integers(0, 5)), sub() if nargs == 3 else None, nargs)


def render(draw: Any, t: tuple[Any, ...], shifted: bool, same: list[str], anyid: list[str]) -> str:
    def r(x: tuple[Any, ...], s: bool = shifted) -> str:
        return render(draw, x, s, same, anyid)

    tag = t[0]
    if tag == "num":
        return repr(draw(st.sampled_from(LITERALS)))
    if tag == "ref":
        return draw(st.sampled_from(anyid if shifted else same))
    if tag == "bin":
        return f"({r(t[2])} {t[1]} {r(t[3])})"
    if tag == "neg":
        return f"-({r(t[1])})"
    if tag == "call":
        return f"{t[1]}({', '.join(r(a) for a in t[2:])})"
    if tag == "shift":
        return f"SHIFT({r(t[1], shifted or t[2] >= 1)}, {t[2]})"
    if tag == "conv":
        return f"CONV({r(t[1])}, [{', '.join(repr(k) for k in t[2])}])"
    if tag == "roll":
        return f"{t[1]}({r(t[2])}, {t[3]})"
    _, period, phase, amp, nargs = t
    args = [str(period), str(phase), r(amp) if amp is not None else ""][:nargs]
    return f"PULSE({', '.join(args)})"


# -- random models ------------------------------------------------------------------------------------


@st.composite
def random_models(draw: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    bins = draw(st.integers(5, 40))  # ROLLING windows (1..5) may not be longer than the grid (SPEC §10)
    n_nodes = draw(st.integers(2, 14))
    kinds = [
        "const",
        *draw(
            st.lists(
                st.sampled_from(
                    ("const", "tele", "expr", "expr", "expr", "pmf", "pmf_sample", "queue", "queue", "router")
                ),
                min_size=n_nodes - 1,
                max_size=n_nodes - 1,
            )
        ),
    ]
    ids = [f"n{i}" for i in range(n_nodes)]
    produced: list[list[str]] = [
        [nid] + ([f"{nid}_outflow", f"{nid}_overflow"] if k == "queue" else [])
        for nid, k in zip(ids, kinds, strict=True)
    ]
    node_series = [s for p in produced for s in p]
    routes: dict[int, list[dict[str, Any]]] = {}
    for i, k in enumerate(kinds):
        if k == "router":
            routes[i] = [
                {
                    "target": draw(st.sampled_from(ROUTE_TARGETS)),
                    **({"weight": draw(st.sampled_from((0.0, 0.3, 0.7, 1.0, 2.0)))} if draw(st.integers(0, 5)) else {}),
                }
                for _ in range(draw(st.integers(1, 3)))
            ]
    targets = sorted({r["target"] for rs in routes.values() for r in rs})
    topo_series = node_series + targets  # what topology semantics may name
    telemetry_ids = [nid for nid, k in zip(ids, kinds, strict=True) if k == "tele"]

    # topology: drawn before the node details so expressions can SHIFT its series
    n_topo = draw(st.integers(0, 4))
    tids = draw(st.permutations(CAMEL))[:n_topo]
    topo_nodes: list[dict[str, Any]] = []
    topo_produced: list[str] = []
    synth: list[bool] = []
    members: dict[str, list[str]] = {"c0": [], "c1": []}
    for j, tid in enumerate(tids):
        kind = draw(st.sampled_from(TOPO_KINDS))
        sem: dict[str, Any] = {}
        for fld in ("arrivals", "served", "capacity", "errors"):
            choice = draw(st.integers(0, 4))
            if choice == 0 or (fld == "arrivals" and choice == 1):
                continue
            if choice == 1:
                sem[fld] = "telemetry"
                telemetry_ids.append(f"{tid}.{fld}")
                topo_produced.append(f"{tid}.{fld}")
            else:
                sem[fld] = draw(st.sampled_from(topo_series))
        node: dict[str, Any] = {"id": tid, "kind": kind, "semantics": sem}
        wants = False
        if kind in QUEUE_KINDS:
            depth = draw(st.sampled_from((None, "self", f"depth_{j}", "existing")))
            if depth == "existing":
                sem["queueDepth"] = draw(st.sampled_from(node_series))
            else:
                wants = True
                if depth is not None:
                    sem["queueDepth"] = depth
                snake = snake_case(tid)
                topo_produced += [
                    depth if depth not in (None, "self") else f"{snake}_queue",
                    f"{snake}_outflow",
                    f"{snake}_overflow",
                ]
                if draw(st.booleans()):
                    node["initialCondition"] = {"queueDepth": draw(finite.filter(lambda v: abs(v) < 1e6))}
                if draw(st.booleans()):
                    node["wipLimit"] = draw(st.sampled_from((0.0, 5.0, 12.5, 40.0, 1000.0)))
                if draw(st.integers(0, 2)) == 0:
                    node["wipLimitSeries"] = draw(st.sampled_from(node_series))
                if draw(st.integers(0, 2)) == 0:
                    node["dispatchSchedule"] = {
                        "periodBins": draw(st.integers(1, 4)),
                        "phaseOffset": draw(st.integers(-3, 5)),
                    }
                    if draw(st.booleans()):
                        node["dispatchSchedule"]["capacitySeries"] = draw(st.sampled_from(node_series))
        synth.append(wants)
        if draw(st.integers(0, 2)) == 0:
            if "errors" not in sem and draw(st.booleans()):
                sem["errors"] = draw(st.sampled_from(node_series))
            if "errors" not in sem or draw(st.booleans()):
                sem["failures"] = draw(st.sampled_from(node_series))
            sem["retryEcho"] = f"echo{j}"
            topo_produced.append(f"echo{j}")
            if draw(st.booleans()):
                taps = st.sampled_from((0.0, 0.1, 0.25, 0.5, 1.0, 2.0))
                sem["retryKernel"] = draw(st.lists(taps, min_size=1, max_size=35))
        if "arrivals" in sem and draw(st.integers(0, 2)) == 0:
            cid = draw(st.sampled_from(("c0", "c1")))
            node["constraints"] = [cid]
            members[cid].append(tid)
            topo_produced.append(f"{snake_case(tid)}_capped_{cid}")
        topo_nodes.append(node)
    for j, node in enumerate(topo_nodes):  # overflow only into later topology queues (no cycles)
        later = [tids[m] for m in range(j + 1, len(tids)) if synth[m]]
        if synth[j] and ("wipLimit" in node or "wipLimitSeries" in node):
            if later and draw(st.booleans()):
                node["wipOverflow"] = draw(st.sampled_from(later))
            elif draw(st.booleans()):
                node["wipOverflow"] = "loss"
    constraints = [
        {"id": cid, "semantics": {"served": draw(st.sampled_from(node_series)), "arrivals": "x"}}
        for cid in ("c0", "c1")
        if members[cid] or draw(st.booleans())
    ]
    synth_tids = [tid for tid, s in zip(tids, synth, strict=True) if s]
    anyid = node_series + targets + topo_produced

    # node details
    nodes: list[dict[str, Any]] = []
    trees: list[tuple[Any, ...]] = []
    for i, (nid, kind) in enumerate(zip(ids, kinds, strict=True)):
        same = [s for p in produced[:i] for s in p]
        if kind == "const":
            nodes.append({"id": nid, "kind": "const", "values": series_values(draw, bins)})
        elif kind == "tele":
            nodes.append({"id": nid, "kind": "const", "source": "telemetry"})
        elif kind == "expr":
            if trees and draw(st.integers(0, 2)) == 0:
                tree = draw(st.sampled_from(trees))  # same shape, other slots: a vectorized group
            else:
                tree = expr_tree(draw, draw(st.integers(0, 4)))
                trees.append(tree)
            text = render(draw, tree, False, same, [*anyid, nid])
            if draw(st.integers(0, 2)) == 0:  # feedback through SHIFT: a loop with a later series or itself
                loop_to = draw(st.sampled_from([*ids[i:], *topo_produced]))
                text = f"MIN({text}, 100 - SHIFT({loop_to}, {draw(st.integers(1, 2))}))"
            node = {"id": nid, "kind": "expr", "expr": text}
            if nid in refs_of(parse_expr(text))[1] or draw(st.integers(0, 3)) == 0:
                node["initial"] = draw(finite)
            nodes.append(node)
        elif kind in ("pmf", "pmf_sample"):
            vals = draw(st.lists(st.sampled_from((0.0, 1.0, 2.0, 5.0, -3.0, 0.5)), min_size=1, max_size=4, unique=True))
            weights = draw(st.lists(st.integers(1, 5), min_size=len(vals), max_size=len(vals)))
            probs = [w / sum(weights) for w in weights]
            probs[-1] = 1.0 - sum(probs[:-1])
            nodes.append(
                {
                    "id": nid,
                    "kind": "pmf",
                    "pmf": {"values": vals, "probabilities": probs, "sample": kind == "pmf_sample"},
                }
            )
        elif kind == "queue":
            q: dict[str, Any] = {"id": nid, "kind": "serviceWithBuffer"}
            for fld in ("inflow", "outflow", "loss", "wipLimitSeries"):
                if draw(st.integers(0, 3 if fld == "wipLimitSeries" else 1)) == 0 or not same:
                    continue
                q[fld] = draw(st.sampled_from(same))
            if draw(st.booleans()):
                q["initial"] = draw(st.sampled_from((0.0, 1.5, 10.0, 100.0)))
            if draw(st.booleans()):
                q["wipLimit"] = draw(st.sampled_from((0.0, 3.0, 12.5, 50.0)))
            if draw(st.integers(0, 2)) == 0:
                q["dispatchSchedule"] = {"periodBins": draw(st.integers(1, 4)), "phaseOffset": draw(st.integers(-4, 6))}
                if draw(st.booleans()):
                    q["dispatchSchedule"]["kind"] = draw(st.sampled_from(("time-based", "periodic")))
                if same and draw(st.booleans()):
                    q["dispatchSchedule"]["capacitySeries"] = draw(st.sampled_from(same))
            later = [ids[m] for m in range(i + 1, n_nodes) if kinds[m] == "queue"] + synth_tids
            if later and draw(st.booleans()):
                q["wipOverflow"] = draw(st.sampled_from(later))
            elif draw(st.integers(0, 3)) == 0:
                q["wipOverflow"] = "loss"
            nodes.append(q)
        else:  # router
            body = {"inputs": {"queue": draw(st.sampled_from(same))}, "routes": routes[i]}
            nodes.append({"id": nid, "kind": "router", **({"router": body} if draw(st.booleans()) else body)})
    m: dict[str, Any] = {"schemaVersion": 1, "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes}
    if topo_nodes or constraints:
        m["topology"] = {"nodes": topo_nodes, "constraints": constraints}
    if draw(st.booleans()):
        m["rng"] = {"kind": "pcg32", "seed": draw(st.integers(0, 2**40))}
    telemetry = {sid: np.array(series_values(draw, bins), dtype=np.float64) for sid in telemetry_ids}
    return m, telemetry


def live_eval(plan: Plan, telemetry: dict[str, np.ndarray], bounds: list[int]) -> np.ndarray:
    """Evaluate bins in the ranges [bounds[i], bounds[i+1]), telemetry arriving just before its range."""
    n = bounds[-1]
    W = np.zeros((plan.n_rows, n))
    for t0, t1 in itertools.pairwise(bounds):
        for sid, vals in telemetry.items():
            W[plan.row[sid], t0:t1] = vals[t0:t1]
        evaluate_range(plan, W, 0, t0, t1)
    return W


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=random_models(), data=st.data())
def test_batch_equals_bin_by_bin_and_chunks(case: tuple[dict[str, Any], dict[str, np.ndarray]], data: Any) -> None:
    m, telemetry = case
    graph = load_graph(m)
    assert sorted(graph.telemetry_ids()) == sorted(telemetry)
    plan = compile_model(graph)
    n = m["grid"]["bins"]
    V = evaluate_batch(plan, telemetry)
    # (a) bin by bin
    W = live_eval(plan, telemetry, list(range(n + 1)))
    assert V.tobytes() == W.tobytes(), _first_diff(plan, V, W)
    # (b) random chunks
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6, unique=True), label="cuts")
    bounds = sorted({0, n, *[c for c in cuts if 0 < c < n]})
    W = live_eval(plan, telemetry, bounds)
    assert V.tobytes() == W.tobytes(), _first_diff(plan, V, W)
    # (c) again, and from a fresh compile
    assert evaluate_batch(plan, telemetry).tobytes() == V.tobytes()
    assert evaluate_batch(compile_model(load_graph(m)), telemetry).tobytes() == V.tobytes()
    # (d) a correction: re-evaluating any suffix of an evaluated matrix changes nothing
    t0 = data.draw(st.integers(0, n - 1), label="suffix")
    W = V.copy()
    evaluate_range(plan, W, 0, t0, n)
    assert V.tobytes() == W.tobytes(), _first_diff(plan, V, W)
    # (e) a window that keeps only `lookback` bins of history (base > 0)
    if n > plan.lookback + 1:
        t0 = data.draw(st.integers(plan.lookback + 1, n - 1), label="window start")
        base = data.draw(st.integers(1, t0 - plan.lookback), label="base")
        win = V[:, base:].copy()
        keep = np.zeros(plan.n_rows, dtype=bool)
        keep[plan.telemetry_rows] = True
        win[~keep, t0 - base :] = 0.0
        evaluate_range(plan, win, base, t0, n)
        assert V[:, base:].tobytes() == win.tobytes(), _first_diff(plan, V[:, base:], win)


def _first_diff(plan: Plan, V: np.ndarray, W: np.ndarray) -> str:
    diff = np.argwhere(~((V == W) | (np.isnan(V) & np.isnan(W))) | (np.signbit(V) != np.signbit(W)))
    if len(diff) == 0:
        return "NaN payload differs"
    r, c = diff[0]
    return f"series {plan.names[r]!r} bin {c}: batch {V[r, c]!r} vs live {W[r, c]!r}"


# -- the queue kernel ------------------------------------------------------------------------------------


@st.composite
def queue_inputs(draw: Any) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shape chosen by hypothesis, values by a seeded numpy generator (fast for long ranges)."""
    n = draw(st.integers(0, 300))
    mode = draw(st.sampled_from(("busy", "mixed", "empty", "wild")))
    lim_kind = draw(st.sampled_from(("none", "const", "series")))
    lim_const = draw(st.sampled_from((0.0, 5.0, 100.0, 1000.0, 1e6, -1.0, -0.0, -INF, 37.5)))
    q0 = draw(st.sampled_from((0.0, 1.5, 100.0, 1e6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = np.array([0.0, -0.0, 0.1, 1e-9, 1e15, 1.0, 3.0, 7.5, 20.0])
    if mode == "wild":
        pool = np.concatenate([pool, [-5.0, 1e300, -1e300, 123.456]])

    def values() -> np.ndarray:
        picks = pool[rng.integers(0, len(pool), n)]
        return np.where(rng.random(n) < 0.5, picks, rng.uniform(0, 50, n).round(rng.integers(0, 4)))

    inn, out, loss = values(), values(), values()
    if mode == "busy":  # long spells without clipping exercise the cumulative-sum path
        inn = inn + 30.0
    elif mode == "empty":
        inn = inn / 10
    if lim_kind == "none":
        limit = np.full(n, INF)
    elif lim_kind == "const":
        limit = np.full(n, lim_const)
    else:
        lims = np.array([INF, 0.0, 5.0, 100.0, 1000.0, 1e6, -1.0, -0.0, -INF])
        limit = np.where(rng.random(n) < 0.7, lims[rng.integers(0, len(lims), n)], rng.uniform(0, 2000, n))
    return q0, inn, out, loss, limit


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(queue_inputs())
def test_queue_series_equals_step_bins(args: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    q0, inn, out, loss, limit = args
    q, ovf = queue_series(q0, inn, out, loss, limit)
    q_ref, ovf_ref = step_bins(np.array([q0]), inn[None, :], out[None, :], loss[None, :], limit[None, :])
    assert q.tobytes() == q_ref[0].tobytes()
    assert ovf.tobytes() == ovf_ref[0].tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(queue_inputs())
def test_the_compiled_queue_kernel_equals_step_bins(
    args: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """`queue_kernel.write_steps` compiled by numba (no fastmath) gives step_bins' bits."""
    q0, inn, out, loss, limit = args
    kernel = compiled_steps(COMPILED_CELLS)
    assert kernel is not None
    V = np.full((3, inn.size + 1), np.nan)
    kernel(
        V, np.array([1]), np.array([2]), 1, np.array([q0]), inn[None, :], out[None, :], loss[None, :], limit[None, :]
    )
    q_ref, ovf_ref = step_bins(np.array([q0]), inn[None, :], out[None, :], loss[None, :], limit[None, :])
    assert V[1, 1:].tobytes() == q_ref[0].tobytes()
    assert V[2, 1:].tobytes() == ovf_ref[0].tobytes()


def test_queue_series_long_busy_run_matches_step_bins() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    inn = rng.uniform(0, 10, n).round(3)
    out = rng.uniform(0, 9.9, n).round(3)
    loss = rng.uniform(0, 0.1, n)
    limit = np.full(n, np.inf)
    limit[15_000] = 1.0  # one clip deep into a long accumulate run
    q, ovf = queue_series(0.25, inn, out, loss, limit)
    q_ref, ovf_ref = step_bins(np.array([0.25]), inn[None], out[None], loss[None], limit[None])
    assert q.tobytes() == q_ref[0].tobytes()
    assert ovf.tobytes() == ovf_ref[0].tobytes()
    assert ovf[15_000] > 0


def test_nan_bits_are_the_same_batch_and_live() -> None:
    """Regression: a vectorized group (k = 3) of CONV over [..., NaN, inf] gave NaN with the sign
    bit set bin by bin and without it in batch (inf·0 makes a negative default NaN, and which NaN
    operand survives an addition differed between numpy's loops)."""
    n = 23
    vals = [0.0] * (n - 2) + [NAN, INF]
    nodes: list[dict[str, Any]] = [{"id": "a", "kind": "const", "values": vals}]
    nodes += [{"id": f"x{i}", "kind": "expr", "expr": "CONV(a, [0, 0.6, 0.3, 0.1])"} for i in range(3)]
    m = {"grid": {"bins": n, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes}
    plan = compile_model(load_graph(m))
    V = evaluate_batch(plan)
    W = live_eval(plan, {}, list(range(n + 1)))
    assert V.tobytes() == W.tobytes(), _first_diff(plan, V, W)
    assert np.isnan(V[plan.row["x0"], -2:]).all()
