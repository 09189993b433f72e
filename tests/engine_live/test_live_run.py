"""LiveRun: bin closing, duplicates, corrections, retention, seq numbering and close."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_live.errors import IllegalTransitionError, IngestError, OutsideRetentionError, RunClosedError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.protocol import RunStatus, decode_event, encode_event, validate_event
from engine_live.state.live_run import ApplyResult, LiveRun
from tests.engine_live.live_support import Frame, TinyRun, apply_frames

BINS = 8
QUEUE_MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arr, kind: const, source: telemetry}}
  - {{id: cap, kind: const, values: {[5.0] * BINS}}}
  - {{id: served, kind: expr, expr: "MIN(arr, cap)"}}
topology:
  nodes:
    - id: Svc
      kind: serviceWithBuffer
      semantics: {{arrivals: arr, served: served, capacity: cap, errors: telemetry}}
"""
# no queue: a correction changes only its own bin
PLAIN_MODEL = f"""
grid: {{bins: {BINS}, binSize: 1, binUnit: hours, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: x, kind: const, source: telemetry}}
  - {{id: y, kind: expr, expr: "x * 2"}}
"""


def make_run(text: str = QUEUE_MODEL, **kw: Any) -> tuple[LiveRun, Plan]:
    plan = compile_model(load_graph(text, live=True))
    run = LiveRun(plan, run_id="r1", epoch="e1", **kw)
    run.start()
    return run, plan


def updates(res: ApplyResult | list[dict[str, Any]]) -> list[int]:
    events = res.events if isinstance(res, ApplyResult) else res
    return [e["binIndex"] for e in events if e["type"] == "run_update"]


def both(b: int, arr: float, err: float = 0.0) -> list[Frame]:
    return [(b, "arr", arr), (b, "Svc.errors", err)]


def test_bin_closes_when_every_telemetry_series_has_a_value() -> None:
    run, _ = make_run()
    res = apply_frames(run, [(0, "arr", 7.0)])
    assert updates(res) == [] and run.last_bin == -1 and run.watermark == 0
    res = apply_frames(run, [(0, "Svc.errors", 1.0)])
    assert updates(res) == [0] and run.last_bin == 0
    ev = res.events[0]
    validate_event(ev)
    assert ev["binStartUtc"] == "2025-10-07T00:00:00Z" and ev["binMinutes"] == 5 and ev["status"] == "live"
    (delta,) = ev["deltas"]
    assert delta["nodeId"] == "Svc" and delta["kind"] == "serviceWithBuffer"
    assert delta["metrics"] == {
        "arrivals": 7.0,
        "served": 5.0,
        "capacity": 5.0,
        "errors": 1.0,
        "queueDepth": 1.0,
    }
    assert decode_event(encode_event(ev)) == ev


def test_grace_closes_with_zero_fill_and_a_late_value_replaces_the_placeholder() -> None:
    run, plan = make_run()
    assert updates(apply_frames(run, [(0, "arr", 9.0), (1, "arr", 9.0)])) == []
    res = apply_frames(run, [(2, "arr", 9.0)])  # watermark 2 >= 0 + grace 2
    assert updates(res) == [0] and res.accepted == 1
    assert run.gaps(0, 1)[:, 0].tolist() == [False, True]  # arr present, Svc.errors zero-filled
    assert res.events[0]["deltas"][0]["metrics"]["errors"] == 0.0
    q_before = run.state_at(0)[plan.row["svc_queue"]]
    assert q_before == 4.0
    res = apply_frames(run, [(0, "Svc.errors", 0.0)])  # same value as the placeholder
    assert (res.accepted, res.duplicates, res.corrected) == (0, 0, 1)
    assert updates(res) == [0] and run.revision == 1 and res.events[0]["revision"] == 1
    assert not run.gaps(0, 1).any()


def test_duplicates_change_nothing_and_last_write_wins_before_evaluation() -> None:
    run, _ = make_run()
    res = apply_frames(run, [(0, "arr", 3.0), (0, "arr", 4.0), (0, "arr", 4.0)])
    assert (res.accepted, res.duplicates, res.corrected) == (2, 1, 0)
    apply_frames(run, [(0, "Svc.errors", 0.0)])
    seq = run.seq
    res = apply_frames(run, both(0, 4.0))
    assert (res.accepted, res.duplicates, res.corrected) == (0, 2, 0)
    assert res.events == [] and run.seq == seq and run.revision == 0
    assert run.series("arr").tolist() == [4.0]


def test_correction_recomputes_the_suffix_and_republishes_changed_bins_once_per_record() -> None:
    run, plan = make_run()
    for b in range(5):
        apply_frames(run, both(b, 3.0))
    assert run.last_bin == 4
    # arrivals 3 <= capacity 5: queue stays 0. A correction at bin 1 to 9 fills the queue at 1..4
    res = apply_frames(run, [(1, "arr", 9.0), (3, "Svc.errors", 1.0)])
    assert res.corrected == 2 and run.revision == 1
    assert updates(res) == [1, 2, 3, 4]
    assert all(e["revision"] == 1 and e["lastBin"] == 4 for e in res.events)
    batch = evaluate_batch(plan, {"arr": np.array([3, 9, 3, 3, 3.0]), "Svc.errors": np.array([0, 0, 0, 1, 0.0])}, 5)
    assert np.array_equal(run.V[:, :5], batch)


def test_correction_republishes_only_bins_whose_values_changed() -> None:
    run, _ = make_run(PLAIN_MODEL)
    apply_frames(run, [(b, "x", float(b)) for b in range(6)])
    assert run.last_bin == 5
    res = apply_frames(run, [(2, "x", 20.0)])
    assert updates(res) == [2]
    assert res.events[0]["deltas"] == [{"series": {"x": 20.0, "y": 40.0}}]
    assert run.revision == 1
    res = apply_frames(run, [(4, "x", 40.0), (5, "x", 50.0), (6, "x", 6.0)])
    assert updates(res) == [4, 5, 6] and run.revision == 2 and res.events[-1]["lastBin"] == 6


def test_outside_retention_is_rejected_before_anything_is_applied() -> None:
    run, _ = make_run(PLAIN_MODEL, retention_bins=3)
    apply_frames(run, [(b, "x", 1.0) for b in range(6)])
    assert run.lowest_correctable == 3
    seq, wm = run.seq, run.watermark
    with pytest.raises(OutsideRetentionError) as info:
        apply_frames(run, [(7, "x", 1.0), (2, "x", 5.0)])
    assert info.value.details["frame"] == 1 and info.value.http_status == 409
    assert run.seq == seq and run.watermark == wm and run.last_bin == 5
    res = apply_frames(run, [(3, "x", 5.0)])
    assert updates(res) == [3]
    with pytest.raises(IngestError):
        apply_frames(run, [(0, "nope", 1.0)])


def test_seq_is_contiguous_from_one_and_close_zero_fills_the_rest() -> None:
    run, _ = make_run()
    events: list[dict[str, Any]] = [{"seq": 1}]  # start()
    events += apply_frames(run, both(0, 1.0)).events
    events += apply_frames(run, [(2, "arr", 1.0)]).events  # grace closes bin 0? already; 1 pending
    events += apply_frames(run, both(0, 2.0)).events  # correction
    closing = run.close()
    events += closing
    assert closing[0]["type"] == "status" and closing[0]["status"] == "closing"
    assert updates(closing) == list(range(1, BINS))
    assert all(e["status"] == "closing" for e in closing[1:])
    assert run.status is RunStatus.CLOSING and run.last_bin == BINS - 1
    assert run.close() == []  # repeated close: no-op
    with pytest.raises(RunClosedError):
        apply_frames(run, both(3, 1.0))
    events += run.complete()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events[1:]:
        validate_event(e)
    assert run.gaps(3, 4).all() and not run.gaps(0, 1).any()
    assert run.final_series()["arr"].tolist() == [2.0, 0.0, 1.0] + [0.0] * (BINS - 3)


def test_open_ended_run_closes_through_the_watermark() -> None:
    text = PLAIN_MODEL.replace(f"bins: {BINS}, ", "")
    run, _ = make_run(text)
    apply_frames(run, [(0, "x", 1.0), (4, "x", 4.0)])
    assert run.last_bin == 2
    closing = run.close()
    assert updates(closing) == [3, 4] and run.last_bin == 4
    assert run.final_series()["y"].tolist() == [2.0, 0.0, 0.0, 0.0, 8.0]


def test_sliding_window_keeps_retained_bins_equal_to_batch() -> None:
    text = """
grid: {bins: 600, binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: x, kind: const, source: telemetry}
  - {id: m, kind: expr, expr: "ROLLING_MEAN(x, 5) + SHIFT(x, 3)"}
  - {id: acc, kind: expr, expr: "SHIFT(acc, 1) * 0.5 + x", initial: 1}
"""
    run, plan = make_run(text, retention_bins=20)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=600)
    for b in range(0, 600, 7):
        apply_frames(run, [(t, "x", float(xs[t])) for t in range(b, min(600, b + 7))])
    apply_frames(run, [(590, "x", 1.5)])
    xs[590] = 1.5
    run.close()
    assert run.V.shape[1] < 200 and run.base > 0
    batch = evaluate_batch(plan, {"x": xs})
    lo, hi = run.retained_range()
    assert (lo, hi) == (580, 600)
    assert np.array_equal(run.V[:, lo - run.base : hi - run.base], batch[:, lo:hi])
    with pytest.raises(OutsideRetentionError):
        run.final_series()
    with pytest.raises(OutsideRetentionError):
        run.state_at(10)


def test_status_transitions_are_checked() -> None:
    assert RunStatus.CREATED.to(RunStatus.LIVE) is RunStatus.LIVE
    with pytest.raises(IllegalTransitionError):
        RunStatus.COMPLETED.to(RunStatus.LIVE)
    with pytest.raises(IllegalTransitionError):
        RunStatus.LIVE.to(RunStatus.COMPLETED)
    run, _ = make_run()
    ev = run.set_status(RunStatus.RECOVERING, seqd=False)
    assert ev["seq"] == run.seq == 1
    assert run.progress() == {
        "v": 1,
        "type": "progress",
        "runId": "r1",
        "epoch": "e1",
        "seq": 1,
        "watermark": -1,
        "lagBins": 0,
    }


def test_corrections_at_the_oldest_retained_bin_read_their_full_lookback() -> None:
    text = """
grid: {bins: 60, binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: x, kind: const, source: telemetry}
  - {id: y, kind: expr, expr: "SHIFT(x, 2) + CONV(x, [0.5, 0.25, 0.25]) + ROLLING_MAX(x, 13)"}
  - {id: q, kind: serviceWithBuffer, inflow: x, outflow: y, initial: 1}
"""
    plan = compile_model(load_graph(text, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=3)
    xs = np.arange(60.0) % 17
    for b in range(60):
        apply_frames(run, [(b, "x", float(xs[b]))])
        lc = run.lowest_correctable
        xs[lc] += 0.5
        assert updates(apply_frames(run, [(lc, "x", float(xs[lc]))]))[0] == lc
        lo, hi = run.retained_range()
        assert hi == b + 1 and lo == lc
        batch = evaluate_batch(plan, {"x": xs[: b + 1]}, b + 1)
        assert np.array_equal(run.V[:, lo - run.base : hi - run.base], batch[:, lo:hi])
    assert run.V.shape[1] <= 3 + plan.lookback + 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, BINS - 1),
                st.sampled_from(["arr", "Svc.errors"]),
                st.sampled_from([0.0, -0.0, 1.0, 2.5, 7.0]),
            ),
            max_size=8,
        ),
        max_size=10,
    )
)
def test_vector_writes_equal_frame_by_frame_writes(records: list[list[tuple[int, str, float]]]) -> None:
    """A record whose cells are all distinct is written with vector operations; the result (counts,
    events, matrix bits) equals applying its frames one by one."""
    from unittest import mock

    import engine_live.state.live_run as live_run_module

    def feed(run: LiveRun) -> list[tuple[int, int, int, list[bytes], bytes, bytes, int]]:
        out = []
        for rec in records:
            r = apply_frames(run, [tuple(f) for f in rec])
            out.append(
                (
                    r.accepted,
                    r.duplicates,
                    r.corrected,
                    encode_event_list(r.events),
                    run.V.tobytes(),
                    run.P.tobytes(),
                    run.dirty_from,
                )
            )
        return out

    vec = feed(make_run(grace_bins=1)[0])
    with mock.patch.object(live_run_module, "write_distinct", live_run_module.write_in_order):
        seq = feed(make_run(grace_bins=1)[0])
    assert vec == seq


def encode_event_list(events: list[dict[str, Any]]) -> list[bytes]:
    return [encode_event(e) for e in events]


CLASS_MODEL = """
grid: {binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
classes: [{id: Alpha}, {id: Beta}]
traffic:
  arrivals:
    - {nodeId: a, classId: Alpha, pattern: {kind: constant, ratePerBin: 1}}
    - {nodeId: b, classId: Beta, pattern: {kind: constant, ratePerBin: 1}}
nodes:
  - {id: a, kind: const, source: telemetry}
  - {id: b, kind: const, source: telemetry}
  - {id: s, kind: expr, expr: "a + b"}
  - {id: cap, kind: const, values: [100]}
topology:
  nodes:
    - {id: Svc, semantics: {arrivals: s, served: s, capacity: cap}}
"""


def test_a_class_bearing_node_carries_by_class_in_its_run_update() -> None:
    """Issue 14: `run_update` deltas carry `byClass` for class-bearing nodes only (SPEC §14)."""
    run, _ = make_run(CLASS_MODEL)
    res = apply_frames(run, [(0, "a", 8.0), (0, "b", 3.0)])
    (update,) = [e for e in res.events if e["type"] == "run_update"]
    (delta,) = update["deltas"]
    assert delta["metrics"] == {"arrivals": 11.0, "served": 11.0, "capacity": 100.0}
    assert delta["byClass"] == {"Alpha": {"arrivals": 8.0, "served": 8.0}, "Beta": {"arrivals": 3.0, "served": 3.0}}
    validate_event(update)
    plain, _ = make_run()
    res = apply_frames(plain, both(0, 5.0))
    assert all("byClass" not in d for e in res.events if e["type"] == "run_update" for d in e["deltas"])
