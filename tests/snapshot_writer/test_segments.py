"""Retention with persistence (SPEC §6): bins leave a run's memory only once a committed segment holds
them; segments round-trip every bit; the snapshot writer writes, lists and validates them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from engine_live.errors import SegmentError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import ZERO, compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.runtime.snapshot_types import SnapshotJob
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import capture, restore
from snapshot_writer.live_snapshot import SnapshotWriter
from snapshot_writer.segments import (
    SEGMENTS,
    Segment,
    assemble,
    parse_segments,
    read_segment,
    segments_end,
    write_segment,
)
from snapshot_writer.snapshot_loader import load_current
from tests.engine_live.live_support import apply_frames

BINS = 120
MODEL = f"""
grid: {{bins: {BINS}, binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: x, kind: const, source: telemetry}}
  - {{id: y, kind: expr, expr: "SHIFT(x, 2) + CONV(x, [0.5, 0.25, 0.25]) + ROLLING_MAX(x, 5)"}}
  - {{id: acc, kind: expr, expr: "SHIFT(acc, 1) * 0.5 + x", initial: 1}}
"""


class TinyRun(LiveRun):
    """Slides (or grows) its matrix as often as possible."""

    MIN_SLACK = 1
    INITIAL_COLUMNS = 1


def feed(run: LiveRun, xs: np.ndarray, bins: range, *, fix_oldest: bool = True) -> None:
    """One record per bin, then a correction at the oldest correctable bin (the deepest history)."""
    for b in bins:
        apply_frames(run, [(b, "x", float(xs[b]))])
        if fix_oldest:
            lc = run.lowest_correctable
            xs[lc] += 0.25
            apply_frames(run, [(lc, "x", float(xs[lc]))])


def held_equal_batch(run: LiveRun, xs: np.ndarray) -> None:
    first, V, _ = run.held_columns()
    n = run.last_bin + 1
    batch = evaluate_batch(run.plan, {"x": xs[:n]}, n)
    assert np.array_equal(V.view(np.uint64), batch[:, first:n].view(np.uint64))


@pytest.mark.parametrize("cls", [LiveRun, TinyRun])
def test_a_tracked_run_drops_no_bin_before_it_is_persisted(cls: type[LiveRun]) -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = cls(plan, run_id="r", epoch="e", retention_bins=3, persisted_before=0)
    xs = np.arange(BINS, dtype=float) % 13
    feed(run, xs, range(80))
    assert run.base == 0 and run.lowest_correctable == 77  # nothing persisted: everything still held
    held_equal_batch(run, xs)
    lo, hi = run.unpersisted_range()
    assert (lo, hi) == (0, 77 - plan.lookback)
    run.mark_persisted(hi)
    feed(run, xs, range(80, 100))
    assert 0 < run.base <= hi  # persisted bins may go now, never past the persisted boundary
    held_equal_batch(run, xs)


def test_an_untracked_run_still_slides_at_the_retention_window() -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=3)
    feed(run, np.arange(BINS, dtype=float), range(60))
    assert run.persisted_before is None and run.immutable_before - 2 <= run.base <= run.immutable_before


@pytest.mark.parametrize("every", [1, 5, 17])
def test_memory_is_bounded_by_retention_lookback_and_the_snapshot_interval(every: int) -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=4, persisted_before=0)
    xs = np.arange(BINS, dtype=float) % 7
    widest = 0
    for b in range(BINS):
        feed(run, xs, range(b, b + 1))
        if b % every == every - 1:  # a snapshot commit: its segment end becomes the boundary
            run.mark_persisted(run.unpersisted_range()[1])
        assert run.base <= (run.persisted_before or 0)
        widest = max(widest, run.V.shape[1])
    held_equal_batch(run, xs)
    bound = run.retention_bins + plan.lookback + every + 2 * run._slack + 1
    assert widest <= bound, (widest, bound)


def test_restore_keeps_the_persisted_boundary() -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=3, persisted_before=0)
    xs = np.arange(BINS, dtype=float)
    feed(run, xs, range(40))
    run.mark_persisted(20)
    state = capture(run)
    back = restore(plan, state)
    assert back.persisted_before == 20 and back.base == run.base
    feed(back, xs, range(40, 70))
    assert back.base <= 20
    held_equal_batch(back, xs)


def tricky(n: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    V = rng.normal(size=(rows, n))
    V[0, 0], V[0, 1] = -0.0, 1e-300
    V[1, 2] = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), dtype=np.float64)[0]  # a NaN payload
    return V


def test_segments_round_trip_every_bit_and_check_their_hash(tmp_path: Path) -> None:
    names, tele = ["__zero__", "x", "y"], ["x"]
    V, P = tricky(10, 3), np.arange(10)[None, :] % 3 == 0
    seg = write_segment(tmp_path, V, P, 40, names, tele)
    assert (tmp_path / SEGMENTS / "40-49.parquet").is_file() and seg.file == "40-49.parquet"
    got_names, got_tele, gv, gp = read_segment(tmp_path, seg)
    assert (got_names, got_tele) == (names, tele)
    assert np.array_equal(gv.view(np.uint64), V.view(np.uint64)) and np.array_equal(gp, P)
    path = tmp_path / SEGMENTS / seg.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SegmentError, match="hash"):
        read_segment(tmp_path, seg)


def test_segment_lists_must_be_contiguous_from_bin_zero() -> None:
    a, b = Segment(0, 10, "sha256:a", 1), Segment(10, 15, "sha256:b", 1)
    assert parse_segments([a.to_wire(), b.to_wire()]) == (a, b)
    assert b.to_wire()["toBin"] == 14 and segments_end((a, b)) == 15
    with pytest.raises(SegmentError):
        parse_segments([b.to_wire()])


def test_assemble_joins_segments_and_the_tail_and_maps_rows_by_name(tmp_path: Path) -> None:
    V = tricky(30, 3)
    P = np.arange(30)[None, :] % 4 != 0
    s1 = write_segment(tmp_path, V[:, :12], P[:, :12], 0, ["__zero__", "x", "y"], ["x"])
    s2 = write_segment(tmp_path, V[:, 12:20], P[:, 12:20], 12, ["__zero__", "x", "y"], ["x"])
    # the run's layout now has a series added by a PATCH (0 where a segment lacks it)
    names = ["__zero__", "x", "y", "new"]
    tail = np.vstack([V[:, 16:], np.full((1, 14), 5.0)])
    got_v, got_p = assemble(tmp_path, (s1, s2), names, ["x"], 16, tail, P[:, 16:])
    want = np.vstack([V, np.r_[np.zeros(16), np.full(14, 5.0)][None, :]])
    assert np.array_equal(got_v.view(np.uint64), want.view(np.uint64)) and np.array_equal(got_p, P)
    with pytest.raises(SegmentError, match="neither in a segment nor in memory"):
        assemble(tmp_path, (s1,), names, ["x"], 16, tail, P[:, 16:])


def commit(writer: SnapshotWriter, run: LiveRun, offset: int, segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
    job = SnapshotJob(
        capture(run), offset, 0, {"runId": "r", "model": MODEL}, segment_to=run.immutable_before, segments=segments
    )
    meta = writer.commit_sync(job)
    run.mark_persisted(segments_end(meta.segments))
    return meta.segments


def test_the_writer_writes_lists_and_validates_segments(tmp_path: Path) -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = TinyRun(plan, run_id="r", epoch="e", retention_bins=3, persisted_before=0)
    xs = np.arange(BINS, dtype=float) % 11
    writer = SnapshotWriter(tmp_path)
    feed(run, xs, range(30))
    segs = commit(writer, run, 100, ())
    assert [s.file for s in segs] == [f"0-{run.immutable_before - 1}.parquet"]
    feed(run, xs, range(30, 50))
    (tmp_path / SEGMENTS / "999-1000.parquet").write_bytes(b"orphan of a crashed commit")
    segs = commit(writer, run, 200, segs)
    assert len(segs) == 2 and segs[1].from_bin == segs[0].to_bin and segs[1].to_bin == run.immutable_before
    assert sorted(p.name for p in (tmp_path / SEGMENTS).iterdir()) == sorted(s.file for s in segs)  # orphan pruned
    loaded = load_current(tmp_path)
    assert loaded is not None
    state, meta = loaded
    assert meta.segments == segs and state.persisted_before == segs[1].to_bin
    body = orjson.loads((meta.path / "state.json").read_bytes())
    assert body["segments"][0]["file"] == segs[0].file and body["persistedBefore"] == segs[1].to_bin
    first, tail_v, tail_p = run.held_columns()
    full_v, _ = assemble(tmp_path, segs, plan.names, run.telemetry_ids, first, tail_v, tail_p)
    batch = evaluate_batch(plan, {"x": xs[:50]}, 50)
    batch[plan.row[ZERO]] = 0.0
    assert np.array_equal(full_v.view(np.uint64), batch.view(np.uint64))
    (tmp_path / SEGMENTS / segs[1].file).unlink()  # CURRENT's snapshot is unusable: fall back
    loaded = load_current(tmp_path)
    assert loaded is not None and loaded[1].fell_back and loaded[1].segments == segs[:1]
