"""DerivedHooks in a LiveRun: derived{} in run_updates, warning_update add/clear, final set ≡ batch."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.derived.hooks_state import join_cells, jsonable, split_cells
from engine_live.derived.live_hooks import DerivedHooks
from engine_live.derived.node_checks import CHECKS, node_flags, record_node_flags
from engine_live.derived.node_metrics import derive, node_inputs
from engine_live.errors import OutsideRetentionError
from engine_live.model.build import load_graph
from engine_live.plan.batch_run import collect_warnings
from engine_live.plan.compiler import ZERO, Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.protocol import decode_event, encode_event
from engine_live.state.live_run import LiveRun
from engine_live.warnings.book import WarningBook
from tests.engine_live.live_support import Frame, apply_frames

BINS = 30
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: cap, kind: const, values: {[10.0] * BINS}}}
  - {{id: ratio, kind: expr, expr: "POW(Svc.arrivals, -1)"}}
topology:
  nodes:
    - {{id: Svc, kind: service, semantics: {{arrivals: telemetry, served: telemetry, queueDepth: telemetry,
                                           capacity: cap, parallelism: 2}}}}
    - {{id: Buf, kind: serviceWithBuffer, semantics: {{arrivals: telemetry, served: telemetry, slaMin: 5}}}}
    - {{id: Inf, kind: service, semantics: {{arrivals: telemetry, served: telemetry, externalDemand: telemetry}}}}
    - {{id: Q, kind: queue, semantics: {{arrivals: telemetry, served: telemetry, queueDepth: telemetry,
                                       slaMin: 10}}}}
    - {{id: D, kind: dlq, semantics: {{arrivals: telemetry}}}}
"""
VALUES = (0.0, 1.0, 2.0, 5.0, 8.0, 12.0, 30.0, -1.0)


def make(hooks_state: dict[str, Any] | None = None) -> tuple[LiveRun, Plan, DerivedHooks]:
    plan = compile_model(load_graph(MODEL, live=True))
    hooks = DerivedHooks(plan) if hooks_state is None else DerivedHooks.from_state(plan, hooks_state)
    run = LiveRun(plan, run_id="r", epoch="e", hooks=hooks)
    run.start()
    return run, plan, hooks


def final_matrix(run: LiveRun) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    plan, n = run.plan, run.last_bin + 1
    V = np.zeros((plan.n_rows, n))
    for sid, values in run.final_series().items():
        V[plan.row[sid]] = values
    missing = run.gaps(0, n)
    tele = {sid: missing[i] for i, sid in enumerate(run.telemetry_ids)}
    gaps = {}
    for b in plan.graph.topo:
        masks = [tele[s] for s in b.fields.values() if s in tele]
        if masks:
            gaps[b.id] = np.logical_or.reduce(masks)
    return V, gaps


def expected_warnings(run: LiveRun) -> list[dict[str, Any]]:
    V, gaps = final_matrix(run)
    return [w for w in collect_warnings(run.plan.graph, run.plan, V, gaps) if w["count"]]


def visible(warnings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in w.items() if k not in ("count", "message")} for w in warnings]


def replay(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The active set a client builds from warning_update events."""
    active: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in events:
        if ev["type"] == "warning_update":
            w = ev["warning"]
            key = (w["code"], w["nodeId"] or "", w.get("seriesId") or "")
            if ev["op"] == "add":
                active[key] = w
            else:
                assert active.pop(key) == w
    return [active[k] for k in sorted(active)]


def frames_for(run: LiveRun, b: int, values: dict[str, float]) -> list[Frame]:
    return [(b, sid, values.get(sid, 5.0)) for sid in run.telemetry_ids]


def test_run_updates_carry_derived_and_warnings_add_then_clear_after_a_correction() -> None:
    run, _, hooks = make()
    events: list[dict[str, Any]] = []
    for b in range(6):
        bad = {"Svc.arrivals": -3.0} if b == 3 else {}
        events += apply_frames(run, frames_for(run, b, bad)).events
    updates = [e for e in events if e["type"] == "run_update"]
    assert [u["binIndex"] for u in updates] == list(range(6))
    svc = updates[0]["deltas"][0]
    assert svc["nodeId"] == "Svc" and svc["derived"]["color"] == "green"
    assert svc["derived"]["utilization"] == 0.25 and svc["derived"]["colorReason"] == "utilization"
    dlq = updates[0]["deltas"][4]
    assert dlq["derived"]["color"] == "dlq"
    # the warning follows bin 3's run_update, in (code, nodeId) order
    after3 = events[events.index(updates[3]) + 1 :]
    adds = [e["warning"]["code"] for e in after3 if e["type"] == "warning_update" and e["op"] == "add"]
    assert "arrivals_negative" in adds and "served_exceeds_arrivals" in adds
    assert [e["seq"] for e in events] == list(range(2, 2 + len(events)))
    # a correction of bin 3 clears them
    fix = apply_frames(run, [(3, "Svc.arrivals", 5.0)]).events
    clears = {e["warning"]["code"] for e in fix if e["type"] == "warning_update" and e["op"] == "clear"}
    assert {"arrivals_negative", "served_exceeds_arrivals"} <= clears
    assert all(w["code"] not in clears for w in hooks.active())
    # the events survive the JSON wire (NaN → null)
    for e in fix + events:
        assert decode_event(encode_event(e))["seq"] == e["seq"]


def test_derived_of_in_order_bins_equals_batch_derive() -> None:
    run, plan, _ = make()
    rng = np.random.default_rng(7)
    events: list[dict[str, Any]] = []
    for b in range(BINS):
        vals = {sid: float(rng.choice(VALUES[:-1])) for sid in run.telemetry_ids}
        events += apply_frames(run, frames_for(run, b, vals)).events
    V, gaps = final_matrix(run)
    view = {sid: V[r] for sid, r in plan.row.items()}
    for i, binding in enumerate(plan.graph.topo):
        ref = derive(node_inputs(binding, view, gaps.get(binding.id)), 5)
        got = [e["deltas"][i]["derived"] for e in events if e["type"] == "run_update"]
        assert got == [ref.wire_bin(b) for b in range(BINS)], binding.id


@st.composite
def feeds(draw: st.DrawFn) -> dict[str, Any]:
    tele = make()[0].telemetry_ids
    cells = [(b, s) for b in range(BINS) for s in tele]
    present = draw(st.lists(st.booleans(), min_size=len(cells), max_size=len(cells)))
    final = [
        (b, s, draw(st.sampled_from(VALUES)))
        for (b, s), p in zip(cells, present, strict=True)
        if p or draw(st.booleans())
    ]
    order = draw(st.permutations(final))
    frames = list(order)
    for f in draw(st.lists(st.sampled_from(final), max_size=40)) if final else []:  # wrong values sent earlier
        pos = frames.index(f)
        frames.insert(draw(st.integers(0, pos)), (f[0], f[1], draw(st.sampled_from(VALUES))))
    cuts = sorted(draw(st.lists(st.integers(0, len(frames)), max_size=25)))
    records = [frames[a:b] for a, b in zip([0, *cuts], [*cuts, len(frames)], strict=True)]
    return {"records": [r for r in records if r], "swap": draw(st.integers(0, 30))}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_final_warnings_equal_collect_warnings_of_the_final_series(feed: dict[str, Any]) -> None:
    run, plan, hooks = make()
    events: list[dict[str, Any]] = []
    for i, record in enumerate(feed["records"]):
        if i == feed["swap"]:  # a snapshot/restore of the hooks mid-run changes nothing
            part, cells = split_cells(hooks.capture().to_state())  # as a snapshot stores it: JSON + arrays
            state = join_cells(json.loads(json.dumps(part)), {k: a.copy() for k, a in cells.items()})
            run.hooks = hooks = DerivedHooks.from_state(plan, state)
        events += apply_frames(run, record).events
    events += run.close()
    expected = expected_warnings(run)
    assert hooks.active() == expected
    assert visible(replay(events)) == visible(expected)  # the stream does not re-send count-only changes


class SlidingRun(LiveRun):
    """Slides its matrix as often as possible."""

    MIN_SLACK = 1
    INITIAL_COLUMNS = 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_short_retention_and_sliding_matrix_still_end_equal_to_batch(feed: dict[str, Any]) -> None:
    """Retention 8 bins: late frames outside it are dropped; expected = batch of what was applied."""
    plan = compile_model(load_graph(MODEL, live=True))
    hooks = DerivedHooks(plan)
    hooks.prune_every = 1
    run = SlidingRun(plan, run_id="r", epoch="e", hooks=hooks, retention_bins=8)
    run.start()
    events: list[dict[str, Any]] = []
    applied: dict[tuple[int, str], float] = {}
    for record in feed["records"]:
        try:
            events += apply_frames(run, record).events
        except OutsideRetentionError:
            record = [f for f in record if f[0] >= run.lowest_correctable]
            events += apply_frames(run, record).events
        applied.update({(f[0], f[1]): f[2] for f in record})
    events += run.close()
    telemetry = {s: np.zeros(BINS) for s in run.telemetry_ids}
    missing = {s: np.ones(BINS, dtype=np.bool_) for s in run.telemetry_ids}
    for (b, sid), v in applied.items():
        telemetry[sid][b], missing[sid][b] = v, False
    gaps = {}
    for binding in plan.graph.topo:
        masks = [missing[s] for s in binding.fields.values() if s in missing]
        if masks:
            gaps[binding.id] = np.logical_or.reduce(masks)
    V = evaluate_batch(plan, telemetry)
    expected = [w for w in collect_warnings(plan.graph, plan, V, gaps) if w["count"]]
    assert hooks.active() == expected
    assert visible(replay(events)) == visible(expected)  # the stream does not re-send count-only changes


def test_nan_detected_for_an_evaluated_series_and_cleared_when_fixed() -> None:
    run, _, hooks = make()
    events: list[dict[str, Any]] = []
    for b in range(3):
        events += apply_frames(run, frames_for(run, b, {"Svc.arrivals": 0.0 if b == 1 else 4.0})).events
    nan = [e for e in events if e["type"] == "warning_update" and e["warning"]["code"] == "nan_detected"]
    assert [(e["op"], e["warning"]["seriesId"], e["warning"]["bins"]) for e in nan] == [("add", "ratio", [1])]
    fix = apply_frames(run, [(1, "Svc.arrivals", 4.0)]).events
    assert [e["op"] for e in fix if e["type"] == "warning_update" and e["warning"]["code"] == "nan_detected"] == [
        "clear"
    ]
    assert ZERO not in {w.get("seriesId") for w in hooks.active()}


def test_a_model_without_topology_gets_series_updates_and_nan_warnings() -> None:
    text = """
grid: {bins: 4, binSize: 1, binUnit: hours, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: x, kind: const, source: telemetry}
  - {id: y, kind: expr, expr: "POW(x, -1) * 3"}
"""
    plan = compile_model(load_graph(text, live=True))
    hooks = DerivedHooks(plan)
    run = LiveRun(plan, run_id="r", epoch="e", hooks=hooks)
    run.start()
    events = apply_frames(run, [(0, "x", 3.0), (1, "x", 0.0)]).events
    ups = [e for e in events if e["type"] == "run_update"]
    ys = [u["deltas"][0]["series"]["y"] for u in ups]
    assert ys[0] == 1.0 and np.isnan(ys[1])  # non-finite → NaN on the wire rounding → null in JSON
    assert decode_event(encode_event(ups[1]))["deltas"][0]["series"]["y"] is None
    warns = [(e["op"], e["warning"]["seriesId"], e["warning"]["bins"]) for e in events if e["type"] == "warning_update"]
    assert warns == [("add", "y", [1])]


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_a_capture_is_not_changed_by_later_records(feed: dict[str, Any]) -> None:
    """`capture()` holds pointer copies: what a commit thread encodes later is the state at capture."""
    run, plan, hooks = make()
    taken: list[tuple[Any, Any]] = []
    for record in feed["records"]:
        apply_frames(run, record)
        taken.append((hooks.capture(), jsonable(hooks.state())))
    run.close()
    for cap, at_the_time in taken:
        assert jsonable(cap.to_state()) == at_the_time
        restored = DerivedHooks.from_state(plan, cap)
        assert jsonable(restored.state()) == at_the_time


def test_legacy_json_state_restores_the_same_book() -> None:
    """Snapshots written before hooks.bin (state version 1: the whole book as JSON) still restore."""
    run, plan, hooks = make()
    for b in range(12):
        apply_frames(run, frames_for(run, b, {"Svc.arrivals": -3.0} if b % 3 == 0 else {"Q.queueDepth": b * 2.0}))
    legacy = {"version": 1, "done": hooks._done, "book": hooks.book.to_state()}
    restored = DerivedHooks.from_state(plan, json.loads(json.dumps(legacy)))
    assert jsonable(restored.state()) == jsonable(hooks.state())
    assert restored.active() == hooks.active()


def test_patch_keeps_the_book_clears_what_no_longer_holds_and_restores_orphans() -> None:
    """A PATCH builds hooks over the run's book: flags that no longer hold are cleared, keys of a
    removed node stay (orphans), and a capture/restore after the PATCH keeps all of it."""
    run, _plan, hooks = make()
    for b in range(8):
        apply_frames(run, frames_for(run, b, {"Svc.served": 9.0, "Inf.served": 9.0}))  # served > arrivals
    keys = {(w["code"], w["nodeId"]) for w in hooks.active()}
    assert ("served_exceeds_arrivals", "Svc") in keys and ("served_exceeds_arrivals", "Inf") in keys
    patched = MODEL.replace(
        "    - {id: Inf, kind: service, semantics: {arrivals: telemetry, served: telemetry, "
        "externalDemand: telemetry}}\n",
        "",
    )
    new_plan = compile_model(load_graph(patched.replace("Svc.arrivals", "Svc.served"), live=True))
    assert "Inf.served" not in new_plan.row
    new_hooks = hooks.for_plan(new_plan)
    run.replace_plan(new_plan, 0, new_hooks)
    assert ("served_exceeds_arrivals", "Inf") in {(w["code"], w["nodeId"]) for w in new_hooks.active()}  # orphan
    for b in range(8, 10):
        apply_frames(run, frames_for(run, b, {"Svc.served": 5.0}))  # served == arrivals from here on
    apply_frames(run, [(b, "Svc.served", 5.0) for b in range(8)])  # a correction: no excess anywhere
    active = {(w["code"], w["nodeId"]) for w in new_hooks.active()}
    assert ("served_exceeds_arrivals", "Svc") not in active
    assert ("served_exceeds_arrivals", "Inf") in active
    restored = DerivedHooks.from_state(new_plan, new_hooks.capture())
    assert restored.active() == new_hooks.active()
    assert jsonable(restored.state()) == jsonable(new_hooks.state())


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds(), st.integers(0, 40), st.integers(1, 300))
def test_quiet_records_advance_seq_and_hooks_exactly_as_publishing_ones(
    feed: dict[str, Any], quiet: int, max_pending: int
) -> None:
    """`LiveRun.quiet` (a long recovery replay) builds no events and evaluates the bins its records
    let close together, later (`flush`), but leaves the run, its seq and its warning book exactly
    where publishing would have: the events after it are the same, bit for bit."""
    loud, _, loud_hooks = make()
    hush, _, hush_hooks = make()
    hush.MAX_PENDING = max_pending  # type: ignore[misc]
    for i, record in enumerate(feed["records"]):
        hush.quiet = i < quiet  # turning it off flushes
        if not hush.quiet:
            assert (hush.seq, hush.last_bin, hush.revision) == (loud.seq, loud.last_bin, loud.revision)
        want, got = apply_frames(loud, record).events, apply_frames(hush, record).events
        if not hush.quiet:
            assert [encode_event(e) for e in got] == [encode_event(e) for e in want]
        else:
            assert got == [] and hush.seq <= loud.seq
    hush.quiet = False
    assert [encode_event(e) for e in hush.close()] == [encode_event(e) for e in loud.close()]
    lo, hi = max(hush.base, loud.base), loud.last_bin + 1
    assert hush.V[:, lo - hush.base : hi - hush.base].tobytes() == loud.V[:, lo - loud.base : hi - loud.base].tobytes()
    assert jsonable(hush_hooks.state()) == jsonable(loud_hooks.state())
    assert hush_hooks.active() == loud_hooks.active()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_batch_node_warnings_equal_the_per_node_checks(feed: dict[str, Any]) -> None:
    """`collect_warnings` takes the stacked (nodes × bins) path; the reference here is `node_flags`
    of `derive`, one node at a time, with the same gaps."""
    run, plan, _ = make()
    for record in feed["records"]:
        apply_frames(run, record)
    run.close()
    V, gaps = final_matrix(run)
    view = {sid: V[r] for sid, r in plan.row.items()}
    book = WarningBook()
    for binding in plan.graph.topo:
        node = node_inputs(binding, view, gaps.get(binding.id))
        record_node_flags(book, binding.id, 0, node_flags(node, derive(node, 5), binding.telemetry_fields))
    node_codes = set(CHECKS)
    got = [w for w in collect_warnings(plan.graph, plan, V, gaps) if w["code"] in node_codes]
    assert got == [w for w in book.active() if w["code"] in node_codes]
