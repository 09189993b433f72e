"""Property: a live run fed frames in any order (duplicates, late corrections) ≡ batch of the final inputs.

Random small models (telemetry series, expressions with SHIFT/CONV/ROLLING, a self loop, a
queue, optionally a topology node with a telemetry field), random record order and grouping.
Frames that fall outside retention are rejected whole (nothing applied) and dropped. After close,
every retained bin of every series equals `evaluate_batch` of the inputs that were applied, bit for
bit, and seq runs 1, 2, 3, … without a gap.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.errors import OutsideRetentionError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.state.live_run import LiveRun
from tests.engine_live.live_support import TinyRun, apply_frames

EXPRS = (
    "{a} + {b}",
    "{a} * 0.5 - {b}",
    "MIN({a}, {b})",
    "MAX({a}, 0) / {b}",
    "SHIFT({a}, 2)",
    "CONV({a}, [0.5, 0.3, 0.2])",
    "ROLLING_MEAN({a}, 3)",
    "ROLLING_MAX({b}, 4)",
    "CLAMP({a}, 0, 10)",
    "{a} * {b} + SHIFT({b}, 1)",
    "SHIFT(ROLLING_MEAN({a}, 4), 5) - {b}",
)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    bins = draw(st.integers(4, 40))
    n_tele = draw(st.integers(1, 3))
    nodes: list[dict[str, Any]] = [{"id": f"t{i}", "kind": "const", "source": "telemetry"} for i in range(n_tele)]
    nodes.append({"id": "c0", "kind": "const", "values": [float(v % 7) for v in range(bins)]})
    names = [n["id"] for n in nodes]
    for i in range(draw(st.integers(1, 5))):
        tpl = draw(st.sampled_from(EXPRS))
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        nodes.append({"id": f"e{i}", "kind": "expr", "expr": tpl.format(a=a, b=b)})
        names.append(f"e{i}")
    if draw(st.booleans()):
        a = draw(st.sampled_from(names))
        nodes.append({"id": "loop", "kind": "expr", "expr": f"MAX(0, SHIFT(loop, 1) + {a} - 2)", "initial": 1})
    if draw(st.booleans()):
        nodes.append(
            {"id": "s", "kind": "pmf", "pmf": {"values": [0, 1, 2], "probabilities": [0.5, 0.3, 0.2], "sample": True}}
        )
    nodes.append(
        {
            "id": "q",
            "kind": "serviceWithBuffer",
            "inflow": draw(st.sampled_from(names)),
            "outflow": draw(st.sampled_from(names)),
            "initial": 2,
            "wipLimit": draw(st.sampled_from([5, 50, 1000])),
        }
    )
    model: dict[str, Any] = {
        "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
        "nodes": nodes,
    }
    if draw(st.booleans()):
        semantics = {"arrivals": "t0", "served": "e0", "errors": "telemetry"}
        model["topology"] = {"nodes": [{"id": "Svc", "kind": "serviceWithBuffer", "semantics": semantics}]}
    return model


def assert_retained_equal_batch(run: LiveRun, applied: dict[tuple[int, str], float]) -> np.ndarray:
    """Every retained evaluated bin equals a batch run of the inputs applied so far (missing = 0)."""
    bins = run.grid.bins
    assert bins is not None
    telemetry = {s: np.zeros(bins) for s in run.telemetry_ids}
    for (b, s), v in applied.items():
        telemetry[s][b] = v
    batch = evaluate_batch(run.plan, telemetry)
    lo, hi = run.retained_range()
    live = run.V[:, lo - run.base : hi - run.base]
    assert np.array_equal(live.view(np.uint64), batch[:, lo:hi].view(np.uint64))
    return batch


values = st.one_of(st.integers(-3, 20).map(float), st.floats(-100, 100, allow_nan=False, width=32).map(float))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), data=st.data())
def test_live_run_equals_batch_of_final_inputs(model: dict[str, Any], data: st.DataObject) -> None:
    plan = compile_model(load_graph(model, live=True))
    bins = model["grid"]["bins"]
    tele = plan.graph.telemetry_ids()
    cells = [(b, s) for b in range(bins) for s in tele]
    present = data.draw(st.lists(st.sampled_from(cells), unique=True, max_size=len(cells)), "present")
    frames = [(b, s, data.draw(values)) for b, s in present]
    # duplicates and late corrections of already written cells
    extra = (
        data.draw(
            st.lists(st.tuples(st.integers(0, max(0, len(frames) - 1)), st.booleans(), values), max_size=10), "extra"
        )
        if frames
        else []
    )
    for i, same, v in extra:
        f = frames[i]
        frames.append(f if same else (f[0], f[1], v))
    if data.draw(st.booleans(), "shuffled"):
        order = data.draw(st.permutations(range(len(frames))), "order")
    else:  # roughly in bin order, a few bins of jitter: corrections stay inside retention
        jitter = data.draw(st.lists(st.integers(0, 3), min_size=len(frames), max_size=len(frames)), "jitter")
        order = sorted(range(len(frames)), key=lambda k: (frames[k][0] + jitter[k], k))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frames)), max_size=8), "cuts"))
    retention = data.draw(st.sampled_from([bins, max(1, bins // 2), 3]), "retention")
    grace = data.draw(st.integers(0, 3), "grace")

    cls = TinyRun if data.draw(st.booleans(), "tiny") else LiveRun
    run = cls(plan, run_id="r", epoch="e", grace_bins=grace, retention_bins=retention)
    events = run.start()
    applied: dict[tuple[int, str], float] = {}
    bounds = [0, *cuts, len(frames)]
    for lo, hi in itertools.pairwise(bounds):
        record = [frames[order[k]] for k in range(lo, hi)]
        seq = run.seq
        try:
            events += apply_frames(run, record).events
        except OutsideRetentionError:
            assert run.seq == seq
            record = [f for f in record if f[0] >= run.lowest_correctable]
            events += apply_frames(run, record).events
        for f in record:
            applied[(f[0], f[1])] = f[2]
        if run.last_bin >= 0 and data.draw(st.booleans(), "edge correction"):
            # a correction at the oldest correctable bin reads the deepest history
            fix = (run.lowest_correctable, data.draw(st.sampled_from(tele)), data.draw(values))
            events += apply_frames(run, [fix]).events
            applied[(fix[0], fix[1])] = fix[2]
        assert_retained_equal_batch(run, applied)
    events += run.close()
    events += run.complete()

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    batch = assert_retained_equal_batch(run, applied)
    lo, hi = run.retained_range()
    assert hi == bins and (lo == 0 or retention < bins)
    if lo == 0:
        final = run.final_series()
        for name, series in final.items():
            assert np.array_equal(series.view(np.uint64), batch[plan.row[name]].view(np.uint64)), name
    # the last run_update per bin carries the final metrics of that bin
    last: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "run_update":
            last[e["binIndex"]] = e
    assert sorted(last) == list(range(bins))
    if not plan.graph.topo:
        for b in range(lo, hi):
            for sid, v in last[b]["deltas"][0]["series"].items():
                got, want = np.float64(v).view(np.uint64), batch[plan.row[sid], b].view(np.uint64)
                assert got == want, (b, sid)
