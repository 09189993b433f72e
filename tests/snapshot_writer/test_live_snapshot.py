"""Snapshots of live runs: the commit order, crash + recover ≡ uninterrupted, fallbacks, truncation.

The crash injector is a fixture: the service's snapshot writer calls it after every commit step
and it raises at the chosen step of the chosen commit. The crashed service is then abandoned
(workers cancelled, files closed, nothing flushed or snapshotted on the way out), a new service
recovers from the folder, gets the rest of the records, and closes the run. Its events.log and
series artifacts must equal those of a run that never crashed — for a crash after every step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from compat_api.compose import build_live_service
from compat_api.settings import Settings
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.runtime.service import LiveService
from engine_live.runtime.snapshot_types import SnapshotJob
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import capture
from ingestion.log_segments import list_segments, scan_log, segment_path
from snapshot_writer.event_log import read_event_log
from snapshot_writer.live_snapshot import STEPS, SnapshotWriter
from snapshot_writer.snapshot_files import read_current
from snapshot_writer.snapshot_loader import load_current
from stream_hub.hub import Hub
from tests.engine_live.live_support import apply_frames

BINS = 40
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arr, kind: const, source: telemetry}}
  - {{id: cap, kind: const, values: {[5.0] * BINS}}}
  - {{id: served, kind: expr, expr: "MIN(arr, cap)"}}
  - {{id: echo, kind: expr, expr: "SHIFT(arr, 3) + CONV(arr, [0.5, 0.5])"}}
topology:
  nodes:
    - id: Svc
      kind: serviceWithBuffer
      semantics: {{arrivals: arr, served: served, capacity: cap, errors: telemetry}}
"""


class Crash(Exception):
    pass


class CrashInjector:
    """Raises `Crash` right after `step` of commit number `at` (1-based)."""

    def __init__(self, step: str | None = None, at: int = 2) -> None:
        self.step, self.at, self.commits, self.fired = step, at, 0, False

    def __call__(self, step: str) -> None:
        if step == STEPS[0]:
            self.commits += 1
        if step == self.step and self.commits == self.at and not self.fired:
            self.fired = True
            raise Crash(step)


@pytest.fixture
def crash_injector() -> Callable[..., CrashInjector]:
    return CrashInjector


def bodies(seed: int) -> list[bytes]:
    """Requests in rough bin order: gaps, duplicates, late corrections, a far-ahead bin."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for b in range(BINS - 4):
        frames: list[dict[str, Any]] = []
        if rng.random() > 0.1:
            frames.append({"bin": b, "series": "arr", "value": float(rng.randint(0, 9))})
        if rng.random() > 0.2:
            frames.append({"bin": b, "series": "Svc.errors", "value": float(rng.randint(0, 2))})
        if b > 3 and rng.random() < 0.3:  # a correction or a duplicate of an earlier bin
            frames.append({"bin": b - rng.randint(1, 3), "series": "arr", "value": float(rng.randint(0, 3))})
        if rng.random() < 0.05:
            frames.append({"bin": min(BINS - 1, b + 6), "series": "arr", "value": 1.5})
        if frames:
            out.append(orjson.dumps(frames))
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def start(
    data_dir: Path, fault: Callable[[str], None] | None = None, clock: Clock | None = None, **kw: Any
) -> LiveService:
    settings = Settings(
        data_dir=data_dir,
        snapshot_every_bins=kw.pop("every_bins", 4),
        snapshot_every_seconds=kw.pop("every_s", 1e9),
        **kw,
    )
    svc = build_live_service(settings, hub=Hub(), clock=clock or Clock(), snapshot_fault=fault)
    await svc.start()
    return svc


async def crash(svc: LiveService) -> None:
    """Abandon the service as a killed process would: no drain, no final snapshot."""
    for h in svc.runs.values():
        if h.work.task is not None:
            h.work.task.cancel()
            await asyncio.gather(h.work.task, return_exceptions=True)
        if h.files.checkpoint is not None and h.files.checkpoint.task is not None:
            await asyncio.gather(h.files.checkpoint.task, return_exceptions=True)
        if h.files.log is not None:
            await h.files.log.close()
        if h.files.events is not None:
            h.files.events.close()


async def feed(svc: LiveService, reqs: list[bytes], *, settle: bool = True) -> None:
    for body in reqs:
        await svc.ingest("r1", body)
        if settle:  # each commit finishes before the next request: a deterministic crash point
            cp = svc.runs["r1"].files.checkpoint
            assert cp is not None
            await cp.drain()


def outcome(data_dir: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """(events of events.log without epoch, series artifact bytes)."""
    scan = read_event_log(data_dir / "runs/r1/live/events.log")
    assert scan.problem is None
    events = [{k: v for k, v in ev.items() if k != "epoch"} for ev, _ in scan.events]
    run_dir = data_dir / "runs/r1"
    files = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted((run_dir / "series").iterdir())}
    files["series.parquet"] = (run_dir / "series.parquet").read_bytes()
    return events, files


async def uninterrupted(tmp: Path, reqs: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    svc = await start(tmp / "clean")
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    await feed(svc, reqs)
    await svc.close_run("r1")
    await svc.stop()
    return outcome(tmp / "clean")


async def create_and_crash(data_dir: Path, reqs: list[bytes], injector: CrashInjector | None) -> tuple[int, str]:
    """Feed until the injector fires (or all of `reqs`), then crash; (requests fed, epoch)."""
    svc = await start(data_dir, fault=injector)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    epoch = svc.runs["r1"].run.epoch
    n = 0
    for body in reqs:
        await feed(svc, [body])
        n += 1
        if injector is not None and injector.fired:
            break
    await crash(svc)
    return n, epoch


async def recover_and_finish(data_dir: Path, rest: list[bytes]) -> LiveService:
    svc = await start(data_dir)
    assert svc.ready and "r1" in svc.runs
    await feed(svc, rest)
    await svc.close_run("r1")
    await svc.stop()
    return svc


@pytest.mark.parametrize("step", STEPS)
async def test_crash_after_each_commit_step_recovers_to_the_uninterrupted_run(
    tmp_path: Path, step: str, crash_injector: Callable[..., CrashInjector]
) -> None:
    reqs = bodies(7)
    expected = await uninterrupted(tmp_path, reqs)
    injector = crash_injector(step, at=3)
    n, epoch = await create_and_crash(tmp_path / "d", reqs, injector)
    assert injector.fired and n < len(reqs)
    svc = await recover_and_finish(tmp_path / "d", reqs[n:])
    assert svc.runs["r1"].run.epoch == epoch  # nothing acknowledged was lost: same epoch, same seqs
    assert outcome(tmp_path / "d") == expected


async def test_torn_events_log_and_ingest_log_tails_are_cut_and_regenerated(tmp_path: Path) -> None:
    reqs = bodies(3)
    expected = await uninterrupted(tmp_path, reqs)
    d = tmp_path / "d"
    n, epoch = await create_and_crash(d, reqs[:20], None)
    live = d / "runs/r1/live"
    with open(live / "events.log", "ab") as fh:  # an event past the snapshot, then a torn one
        fh.write((500).to_bytes(4, "little") + b'{"v": 1, "type": "run_upd')
    _, seg = list_segments(live)[-1]
    with open(seg, "ab") as fh:  # a torn, unacknowledged last record
        fh.write(b"\x40\x00\x00\x00\x01\x02")
    svc = await recover_and_finish(d, reqs[n:])
    assert svc.runs["r1"].run.epoch == epoch
    assert outcome(d) == expected


async def test_damaged_current_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    reqs = bodies(5)
    expected = await uninterrupted(tmp_path, reqs)
    d = tmp_path / "d"
    n, epoch = await create_and_crash(d, reqs[:25], None)
    live = d / "runs/r1/live"
    current = read_current(live)
    assert current is not None
    retained = live / "snapshots" / current[0] / "retained.parquet"
    retained.write_bytes(retained.read_bytes()[:-40])
    loaded = load_current(live)
    assert loaded is not None and loaded[1].fell_back and loaded[1].name != current[0]
    svc = await recover_and_finish(d, reqs[n:])
    assert svc.runs["r1"].run.epoch == epoch
    assert outcome(d) == expected


async def test_unreadable_acknowledged_log_continues_with_a_new_epoch_and_says_so(tmp_path: Path) -> None:
    d, reqs = tmp_path / "d", bodies(9)
    live = d / "runs/r1/live"
    svc = await start(d, every_bins=6)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    epoch = svc.runs["r1"].run.epoch
    for n, body in enumerate(reqs, 1):  # until acknowledged records follow a committed snapshot
        await feed(svc, [body])
        loaded = load_current(live)
        if n > 10 and loaded is not None and segment_path(live, loaded[1].log_offset).stat().st_size > 0:
            break
    await crash(svc)
    assert loaded is not None
    state, meta = loaded
    segment_path(live, meta.log_offset).unlink()
    svc = await start(d)
    h = svc.runs["r1"]
    assert h.run.epoch != epoch and h.run.seq == state.seq
    hub = svc.ctx.sink
    assert isinstance(hub, Hub) and hub.head("r1") == (h.run.epoch, h.run.seq)
    after = load_current(live)
    assert after is not None and after[0].epoch == h.run.epoch  # the hole is behind CURRENT now
    res = await svc.ingest("r1", reqs[n])
    assert res["logOffset"] >= meta.log_offset
    await svc.stop()
    svc2 = await start(d)  # no second epoch change
    assert svc2.runs["r1"].run.epoch == h.run.epoch
    await svc2.stop()


async def test_time_based_snapshot_uses_the_injected_clock(tmp_path: Path) -> None:
    clock = Clock()
    svc = await start(tmp_path, clock=clock, every_bins=1000, every_s=30.0)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    reqs = bodies(1)
    await feed(svc, reqs[:3])
    live = tmp_path / "runs/r1/live"
    assert read_current(live) is None
    clock.now += 31  # the first one waits 30 s plus the run's phase (< 30 s, from its id)
    await feed(svc, reqs[3:4])
    assert read_current(live) is None or svc.runs["r1"].files.checkpoint.phase < 1  # type: ignore[union-attr]
    clock.now += 30
    await feed(svc, reqs[4:5])
    current = read_current(live)
    assert current is not None and current[0] == str(svc.runs["r1"].run.seq)
    await svc.stop()


async def test_snapshot_request_writes_the_artifacts_and_publishes_snapshot_written(tmp_path: Path) -> None:
    svc = await start(tmp_path, every_bins=1000)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    seen: list[dict[str, Any]] = []
    hub = svc.ctx.sink
    assert isinstance(hub, Hub)
    hub.add_listener(lambda run_id, ev: seen.append(orjson.loads(ev.data)) if ev.type == "snapshot_written" else None)
    await feed(svc, bodies(2)[:10])
    res = await svc.snapshot("r1")
    run = svc.runs["r1"].run
    assert set(res) == {"runId", "seq", "lastBin", "path", "manifestHash"}
    assert res["seq"] == run.seq and res["lastBin"] == run.last_bin
    assert res["path"] == f"live/snapshots/{run.seq}" and res["manifestHash"].startswith("sha256:")
    assert (tmp_path / "runs/r1/manifest.json").exists()
    assert [e["seq"] for e in seen] == [run.seq]  # not seq'd: repeats the current seq
    await svc.stop()


async def test_log_offsets_stay_absolute_across_truncation(tmp_path: Path) -> None:
    svc = await start(tmp_path, every_bins=2)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    offsets = []
    for body in bodies(4)[:20]:
        offsets.append((await svc.ingest("r1", body))["logOffset"])
        cp = svc.runs["r1"].files.checkpoint
        assert cp is not None
        await cp.drain()
    await svc.stop()
    live = tmp_path / "runs/r1/live"
    segs = list_segments(live)
    assert segs[0][0] > 0 and len(list((live / "snapshots").iterdir())) == 2  # truncated and pruned
    scan = scan_log(live, segs[0][0], cut=False)
    assert not scan.lost and offsets[-1] in [off for off, _ in scan.records]


def test_writer_round_trip_keeps_every_bit(tmp_path: Path) -> None:
    plan = compile_model(load_graph(MODEL, live=True))
    run = LiveRun(plan, run_id="r1", epoch="e")
    run.start()
    apply_frames(
        run,
        [(b, "arr", v) for b, v in enumerate([-0.0, 1e-300, 7.25, 3.0])] + [(b, "Svc.errors", 0.0) for b in range(3)],
    )
    steps: list[str] = []
    writer = SnapshotWriter(tmp_path, after_step=steps.append)
    state = capture(run)
    meta = writer.commit_sync(SnapshotJob(state, 123, 45, {"runId": "r1", "model": MODEL}, {0: 17}))
    assert steps == list(STEPS)
    loaded = load_current(tmp_path)
    assert loaded is not None
    got, got_meta = loaded
    assert np.array_equal(got.V.view(np.uint64), state.V.view(np.uint64)) and np.array_equal(got.P, state.P)
    assert got.counters() == state.counters() and not got_meta.fell_back
    assert (got_meta.log_offset, got_meta.events_offset, got_meta.kafka_offsets) == (123, 45, {0: 17})
    assert got_meta.state_hash == meta.state_hash and got_meta.create["model"] == MODEL


@pytest.mark.parametrize("every_bins", [4, 10**9])  # with snapshots, and from the create record
async def test_a_long_replay_is_quiet_but_for_its_last_records(tmp_path: Path, every_bins: int) -> None:
    """Records beyond `recovery_history_records` after the snapshot replay without building events:
    the run, its seq numbering and every later event are those of the uninterrupted run; the hub
    history and events.log restart at the seq the quiet part reached."""
    reqs = bodies(11)
    expected_events, expected_files = await uninterrupted(tmp_path, reqs)
    d = tmp_path / "d"
    svc = await start(d, every_bins=every_bins)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    epoch = svc.runs["r1"].run.epoch
    await feed(svc, reqs[:30])
    head = svc.runs["r1"].run.seq
    await crash(svc)
    svc = await start(d, every_bins=every_bins, recovery_history_records=3)
    h = svc.runs["r1"]
    assert (h.run.epoch, h.run.seq) == (epoch, head)
    hub = svc.ctx.sink
    assert isinstance(hub, Hub)
    first = hub._runs["r1"].history.first_seq
    assert 1 < first <= head  # the history holds only the events of the last 3 records
    assert [e["seq"] for e, _ in read_event_log(d / "runs/r1/live/events.log").events] == list(range(first, head + 1))
    assert h.files.checkpoint is not None
    for _ in range(100):  # the worker snapshots right after a quiet replay (woken by recovery)
        await asyncio.sleep(0)
        await h.files.checkpoint.drain()
        current = read_current(d / "runs/r1/live")
        if current is not None and current[0] == str(head):
            break
    assert current is not None and current[0] == str(head)
    await feed(svc, reqs[30:])
    await svc.close_run("r1")
    await svc.stop()
    events, files = outcome(d)
    assert files == expected_files
    assert events == [e for e in expected_events if e["seq"] >= first]


async def test_the_first_snapshot_after_recovery_is_incremental_and_complete(tmp_path: Path) -> None:
    """Recovery seeds the capture mirror with the loaded snapshot: the next capture copies only the
    columns written since, and the committed snapshot equals a full capture of the run."""
    reqs = bodies(5)
    d = tmp_path / "d"
    svc = await start(d)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    await feed(svc, reqs[:12])
    await crash(svc)
    svc = await start(d, every_bins=10**9)
    h = svc.runs["r1"]
    assert (
        h.files.checkpoint is not None and h.run.capture_owner is h.files.checkpoint.mirror
    )  # seeded, not a full copy
    await feed(svc, reqs[12:20])
    job = svc.checkpoints.job(h)
    assert job.state.delta is not None and not job.state.delta.full
    assert job.state.V.shape[1] < capture(h.run).V.shape[1]  # only the new columns were copied
    full = capture(h.run)
    assert (
        h.files.checkpoint.mirror._reload is not None
    )  # the run adopted the loaded arrays: the mirror decodes its own
    got = h.files.checkpoint.mirror.materialize(job.state)
    assert h.files.checkpoint.mirror._reload is None
    assert got.V.tobytes() == full.V.tobytes() and (got.P == full.P).all() and got.base == full.base
    h.files.checkpoint.mirror.invalidate()
    await svc.stop()


def test_restore_adopts_window_wide_arrays_and_copies_otherwise(tmp_path: Path) -> None:
    from engine_live.state.live_state import restore
    from snapshot_writer.retained_table import decode_retained, encode_retained

    plan = compile_model(load_graph(MODEL, live=True))
    run = LiveRun(plan, run_id="r1", epoch="e1")
    run.start()
    apply_frames(run, [(b, "arr", float(b)) for b in range(6)] + [(2, "Svc.errors", 1.0)])
    state = capture(run)
    data = encode_retained(state.V, state.P, state.base, state.names, state.telemetry_ids)
    V, P = decode_retained(data, state.base, state.names, state.telemetry_ids, width=state.columns)
    assert V.shape == state.V.shape and V.base is not None and V.base.shape == (plan.n_rows, state.columns)
    loaded = replace(state, V=V, P=P)
    adopted = restore(plan, loaded, adopt=True)
    assert adopted.V is V.base and adopted.P is P.base  # no copy
    copied = restore(plan, state, adopt=True)  # a capture's arrays are exactly held-wide: copied
    assert copied.V is not state.V and np.shares_memory(copied.V, state.V) is False
    for r in (adopted, copied):
        assert r.V.tobytes() == run.V.tobytes() and (r.P == run.P).all()


async def test_a_quiet_replay_across_patches_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """PATCH records inside the quiet part of a long replay: the bins pending evaluation are
    evaluated first (a PATCH reads lastBin), so the run ends exactly as one that never crashed."""
    reqs = bodies(13)
    patches = {
        8: {"nodes": [{"id": "cap", "kind": "expr", "expr": "3 + PULSE(2)"}]},
        20: {"nodes": [{"id": "cap", "kind": "expr", "expr": "6"}]},
    }

    async def feed_with_patches(svc: LiveService, upto: int, start_at: int = 0) -> None:
        for i in range(start_at, upto):
            if i in patches:
                await svc.patch_model("r1", patches[i])
            await feed(svc, [reqs[i]])

    clean = await start(tmp_path / "clean", every_bins=10**9)
    await clean.create_run({"model": MODEL, "options": {"runId": "r1"}})
    await feed_with_patches(clean, len(reqs))
    await clean.close_run("r1")
    await clean.stop()
    expected_events, expected_files = outcome(tmp_path / "clean")
    d = tmp_path / "d"
    svc = await start(d, every_bins=10**9)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    await feed_with_patches(svc, 28)
    await crash(svc)
    svc = await start(d, every_bins=10**9, recovery_history_records=2)
    assert svc.runs["r1"].run.model_revision == 2
    await feed_with_patches(svc, len(reqs), 28)
    await svc.close_run("r1")
    await svc.stop()
    events, files = outcome(d)
    assert files == expected_files
    assert events == expected_events[len(expected_events) - len(events) :]
