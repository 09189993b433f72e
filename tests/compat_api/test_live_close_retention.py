"""Close of a live run whose early bins left memory (SPEC §6 Retention, §12.7), in process.

A run with `retentionBins` shorter than its evaluated bins closes with artifacts assembled from its
segments and its matrix, equal to a batch run bit for bit — also after a crash and a recovery —
and a close whose segments are unreadable marks the run `failed` instead of leaving it `closing`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from compat_api.compose import build_live_service
from compat_api.settings import Settings
from engine_live.errors import RunClosedError
from engine_live.plan.batch_run import run_model
from engine_live.protocol import RunStatus
from engine_live.runtime.service import LiveService
from snapshot_writer.artifact_reader import read_run_series
from snapshot_writer.artifacts import write_run_artifacts
from snapshot_writer.segments import SEGMENTS
from stream_hub.hub import Hub


def model(bins: int) -> str:
    return f"""
grid: {{bins: {bins}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arr, kind: const, source: telemetry}}
  - {{id: cap, kind: const, values: {[5.0] * bins}}}
  - {{id: served, kind: expr, expr: "MIN(arr, cap)"}}
  - {{id: echo, kind: expr, expr: "SHIFT(arr, 3) + CONV(arr, [0.5, 0.5]) + ROLLING_MAX(served, 4)"}}
topology:
  nodes:
    - id: Svc
      kind: serviceWithBuffer
      semantics: {{arrivals: arr, served: served, capacity: cap, errors: telemetry}}
"""


BINS = 120  # well past the 48 columns the matrix starts with (retention 4 + lookback 12 + slack 32)
OPTIONS = {"runId": "r1", "retentionBins": 4, "snapshotEveryBins": 2}


class Clock:
    def __call__(self) -> float:
        return 1000.0


async def start(data_dir: Path) -> LiveService:
    svc = build_live_service(Settings(data_dir=data_dir, snapshot_every_seconds=1e9), hub=Hub(), clock=Clock())
    await svc.start()
    return svc


def frames(b: int) -> list[dict[str, Any]]:
    return [
        {"bin": b, "series": "arr", "value": float(b % 7) + 0.125},
        {"bin": b, "series": "Svc.errors", "value": float(b % 2)},
    ]


async def feed(svc: LiveService, bodies: list[list[dict[str, Any]]]) -> None:
    for body in bodies:
        await svc.ingest("r1", orjson.dumps(body))
        cp = svc.runs["r1"].files.checkpoint
        assert cp is not None
        await cp.drain()  # each commit lands before the next request


async def abandon(svc: LiveService) -> None:
    """Leave the service as a killed process would: no drain, no final snapshot."""
    for h in svc.runs.values():
        if h.work.task is not None:
            h.work.task.cancel()
            await asyncio.gather(h.work.task, return_exceptions=True)
        if h.files.log is not None:
            await h.files.log.close()
        if h.files.events is not None:
            h.files.events.close()


def plan_of_requests(sent: int, bins: int) -> tuple[list[list[dict[str, Any]]], dict[str, np.ndarray]]:
    """Bins 0..sent-1 in order, corrections inside the retention window every 9 bins; the final inputs."""
    bodies = [frames(b) for b in range(sent)]
    for b in range(sent - 1, 2, -9):  # after bin b is in, bin b-2 is still correctable (retention 4)
        bodies.insert(b + 1, [{"bin": b - 2, "series": "arr", "value": 4.5 + b}])
    inputs = {"arr": np.zeros(bins), "Svc.errors": np.zeros(bins)}
    for body in bodies:
        for f in body:
            inputs[f["series"]][f["bin"]] = f["value"]
    return bodies, inputs


def assert_series_equal_batch(data_dir: Path, tmp: Path, inputs: dict[str, np.ndarray], bins: int) -> None:
    run_dir = data_dir / "runs/r1"
    batch = run_model(model(bins), telemetry=inputs, deterministic_run_id=True)
    write_run_artifacts(batch.result, tmp / "batch")
    live, want = read_run_series(run_dir), read_run_series(tmp / "batch")
    assert sorted(live) == sorted(want)
    differ = [s for s in want if live[s].view(np.uint64).tobytes() != want[s].view(np.uint64).tobytes()]
    assert not differ, differ
    assert (run_dir / "series.parquet").read_bytes() == (tmp / "batch/series.parquet").read_bytes()


async def test_the_repro_closes_short_retention_run(tmp_path: Path) -> None:
    """The bug: bins 20, retentionBins 4, bins 0..9 sent, close → 409 and stuck in `closing`."""
    d = tmp_path / "d"
    svc = await start(d)
    await svc.create_run({"model": model(20), "options": {"runId": "r1", "retentionBins": 4}})
    bodies, inputs = plan_of_requests(10, 20)
    await feed(svc, bodies)
    assert svc.runs["r1"].run.lowest_correctable > 0
    res = await svc.close_run("r1")
    assert res.run.status is RunStatus.COMPLETED
    await svc.stop()
    assert_series_equal_batch(d, tmp_path, inputs, 20)


async def test_a_run_whose_bins_left_memory_closes_with_every_bin(tmp_path: Path) -> None:
    d = tmp_path / "d"
    svc = await start(d)
    await svc.create_run({"model": model(BINS), "options": OPTIONS})
    bodies, inputs = plan_of_requests(100, BINS)
    await feed(svc, bodies)
    h = svc.runs["r1"]
    assert h.durable.segments and h.run.base > 0  # early bins did leave memory, into segments
    persisted = h.run.persisted_before
    assert persisted is not None and h.run.base <= persisted == h.durable.segments[-1].to_bin
    res = await svc.close_run("r1")
    assert res is h and h.run.status is RunStatus.COMPLETED
    await svc.stop()
    assert_series_equal_batch(d, tmp_path, inputs, BINS)


async def test_crash_and_recovery_keep_the_segments_and_the_series(tmp_path: Path) -> None:
    d = tmp_path / "d"
    svc = await start(d)
    await svc.create_run({"model": model(BINS), "options": OPTIONS})
    bodies, inputs = plan_of_requests(100, BINS)
    await feed(svc, bodies[:70])
    segs = svc.runs["r1"].durable.segments
    assert segs
    await abandon(svc)
    svc = await start(d)
    h = svc.runs["r1"]
    assert h.durable.segments == segs and h.run.persisted_before == segs[-1].to_bin
    await feed(svc, bodies[70:])
    assert len(h.durable.segments) > len(segs) and h.durable.segments[: len(segs)] == segs  # appended, never rewritten
    await svc.close_run("r1")
    assert h.run.status is RunStatus.COMPLETED
    await svc.stop()
    assert_series_equal_batch(d, tmp_path, inputs, BINS)


async def test_a_close_that_cannot_assemble_the_series_fails_the_run(tmp_path: Path) -> None:
    svc = await start(tmp_path)
    await svc.create_run({"model": model(BINS), "options": OPTIONS})
    seen: list[dict[str, Any]] = []
    hub = svc.ctx.sink
    assert isinstance(hub, Hub)
    hub.add_listener(lambda run_id, ev: seen.append(orjson.loads(ev.data)) if ev.type == "status" else None)
    await feed(svc, [frames(b) for b in range(80)])
    h = svc.runs["r1"]
    assert h.run.base > 0
    (h.folder / SEGMENTS / h.durable.segments[0].file).unlink()
    res = await svc.close_run("r1")
    assert res is h and h.run.status is RunStatus.FAILED
    assert seen[-1]["status"] == "failed" and seen[-1]["reason"].startswith("artifacts_failed: SegmentError")
    assert seen[-1]["seq"] == h.run.seq  # not seq'd: a failure is not a function of the log
    assert not (tmp_path / "runs/r1/manifest.json").exists()
    await svc.stop()


async def test_delete_waits_for_queued_requests_and_the_snapshot_writer(tmp_path: Path) -> None:
    """Issue 12 #7: a DELETE during ingest raced the snapshot writer (a 500, a folder left behind)
    and left queued requests unanswered. Now every queued request is answered (logged and applied,
    or refused as closed) and no commit step writes into the folder after delete returned. The
    snapshot commit runs on a slow disk (a 0.2 s stall in its first step, in the commit thread)."""
    committing, deleted = threading.Event(), threading.Event()
    late_steps: list[str] = []

    def slow_disk(step: str) -> None:
        if step == "temp_written":
            committing.set()
            time.sleep(0.2)  # a slow disk in the commit thread, not a synchronisation of the test
        if deleted.is_set():
            late_steps.append(step)

    settings = Settings(data_dir=tmp_path / "d", snapshot_every_bins=1)
    svc = build_live_service(settings, hub=Hub(), clock=Clock(), snapshot_fault=slow_disk)
    await svc.start()
    await svc.create_run({"model": model(40), "options": {"runId": "r1", "snapshotEveryBins": 1}})
    await svc.ingest("r1", orjson.dumps(frames(0)))
    checkpoint = svc.runs["r1"].files.checkpoint
    assert checkpoint is not None
    assert await asyncio.to_thread(committing.wait, 30)  # bin 0's snapshot commit is in its first step
    sent = [asyncio.ensure_future(svc.ingest("r1", orjson.dumps(frames(b)))) for b in range(1, 12)]
    body = await svc.delete_run("r1")
    deleted.set()
    assert body is not None and body["deleted"] and body["status"] == "failed"
    assert all(task.done() for task in sent)
    for task in sent:
        assert task.exception() is None or isinstance(task.exception(), RunClosedError)
    assert not (tmp_path / "d" / "runs" / "r1").exists()  # delete removed the folder itself
    await checkpoint.drain()  # (already drained by delete; before the fix the commit was still running)
    await svc.stop()
    assert late_steps == []  # nothing was written into the folder after delete returned
    assert not (tmp_path / "d" / "runs" / "r1").exists()
