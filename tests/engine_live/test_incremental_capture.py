"""Incremental capture (`CaptureMirror`): a capture that copies only the columns written since the
previous one, materialized against the mirror, equals a full `capture(run)` bit for bit — after
corrections of old bins, slides and grows of the matrix, a PATCH (`replace_plan`) and a lost capture."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.errors import StateMismatchError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import CaptureMirror, RunState, capture, restore
from tests.engine_live.live_support import TinyRun, apply_frames, draw_records
from tests.engine_live.test_live_state import feed, make_hooks, models, models_fixed, values


def assert_same(got: RunState, want: RunState) -> None:
    assert got.delta is None
    assert orjson.dumps(got.counters()) == orjson.dumps(want.counters())
    assert got.V.shape == want.V.shape and got.P.shape == want.P.shape
    assert np.array_equal(got.V.view(np.uint64), want.V.view(np.uint64))
    assert np.array_equal(got.P, want.P)


def patched(model: dict[str, Any]) -> Plan:
    m = copy.deepcopy(model)
    m["nodes"].insert(-1, {"id": "px", "kind": "expr", "expr": "t0 * 2 + 1"})
    return compile_model(load_graph(m, live=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), data=st.data())
def test_incremental_capture_equals_full_capture(model: dict[str, Any], data: st.DataObject) -> None:
    plan = compile_model(load_graph(model, live=True))
    bins = model["grid"]["bins"]
    tele = plan.graph.telemetry_ids()
    records = draw_records(data, bins, tele, values)
    retention = data.draw(st.sampled_from([bins, max(1, bins // 2), 3]), "retention")
    hooks_kind = data.draw(st.sampled_from(["none", "flag", "derived"]), "hooks")
    cls = TinyRun if data.draw(st.booleans(), "tiny") else LiveRun
    persisted = data.draw(st.sampled_from([None, 0]), "persisted")
    run = cls(
        plan,
        run_id="r",
        epoch="e",
        grace_bins=data.draw(st.integers(0, 3), "grace"),
        retention_bins=retention,
        hooks=make_hooks(hooks_kind, plan),
        persisted_before=persisted,
    )
    run.start()
    mirror = CaptureMirror()
    patch_at = data.draw(st.integers(-1, len(records)), "patch at")
    for i, record in enumerate(records):
        if i == patch_at:
            new = patched(model)
            frm = data.draw(st.integers(run.lowest_correctable, run.last_bin + 1), "from bin")
            run.replace_plan(new, frm, make_hooks(hooks_kind, new) if hooks_kind == "derived" else None)
            plan = new
        feed(run, [record])
        action = data.draw(st.sampled_from(["capture", "capture", "skip", "lose", "persist"]), "action")
        if action == "lose":  # a capture whose commit never happened: the loop side invalidates
            mirror.capture(run)
            mirror.invalidate()
        elif action == "capture":
            got = mirror.materialize(mirror.capture(run))
            want = capture(run)
            assert_same(got, want)
            restored = restore(plan, got, make_hooks(hooks_kind, plan))
            assert np.array_equal(restored.V.view(np.uint64), run.V.view(np.uint64))
            assert np.array_equal(restored.P, run.P)
        elif action == "persist" and run.persisted_before is not None:
            run.mark_persisted(run.immutable_before)  # lets the matrix slide
    run.close()
    assert_same(mirror.materialize(mirror.capture(run)), capture(run))


def test_correction_slide_and_patch_restore_bit_identically() -> None:
    model = models_fixed()
    model["grid"]["bins"] = 60
    plan = compile_model(load_graph(model, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=3, persisted_before=0)
    run.start()
    mirror = CaptureMirror()

    def check() -> None:
        state = mirror.capture(run)
        assert state.delta is not None
        got = mirror.materialize(state)
        assert_same(got, capture(run))
        restored = restore(run.plan, got)
        assert np.array_equal(restored.V.view(np.uint64), run.V.view(np.uint64))
        assert (restored.base, restored.V.shape, restored.seq) == (run.base, run.V.shape, run.seq)

    apply_frames(run, [(b, "t0", float(b)) for b in range(8)])
    check()
    assert mirror.capture(run).V.shape[1] == 0  # nothing written since: an empty delta
    mirror.invalidate()
    check()  # full again after an invalidation
    apply_frames(run, [(run.last_bin, "t0", 41.5)])  # a correction of an evaluated bin
    state = mirror.capture(run)
    assert state.delta is not None and not state.delta.full and state.delta.from_bin == run.last_bin
    assert_same(mirror.materialize(state), capture(run))
    apply_frames(run, [(run.lowest_correctable, "t0", -0.0)])  # the oldest correctable bin
    check()
    base = run.base
    for lo in range(8, 40, 4):  # slides (and grows) the window; a capture between some of them
        run.mark_persisted(run.immutable_before)
        apply_frames(run, [(b, "t0", 2.0 * b) for b in range(lo, lo + 4)])
        if lo % 8:
            check()
    assert run.base > base
    apply_frames(run, [(run.lowest_correctable, "t0", 0.5)])  # the oldest correctable bin
    check()
    run.replace_plan(patched(model), run.last_bin - 2)  # PATCH: rows change, a full copy
    state = mirror.capture(run)
    assert state.delta is not None and state.delta.full
    assert_same(mirror.materialize(state), capture(run))
    apply_frames(run, [(run.last_bin - 1, "t0", 7.25)])
    check()
    run.close()
    check()


def test_a_delta_after_a_lost_capture_is_refused() -> None:
    plan = compile_model(load_graph(models_fixed(), live=True))
    run = LiveRun(plan, run_id="r", epoch="e")
    run.start()
    mirror = CaptureMirror()
    apply_frames(run, [(0, "t0", 1.0)])
    mirror.materialize(mirror.capture(run))
    apply_frames(run, [(1, "t0", 1.0)])
    mirror.capture(run)  # never materialized
    apply_frames(run, [(2, "t0", 1.0)])
    with pytest.raises(StateMismatchError):
        mirror.materialize(mirror.capture(run))
    with pytest.raises(StateMismatchError):
        restore(plan, mirror.capture(run))
