"""Snapshots, events.log and artifacts on failing storage (issue 12 #1): a snapshot whose write fails
never replaces CURRENT, the run keeps going and the snapshot is retried; steps after CURRENT only
free space and cannot fail a commit; a failed events.log write never leaves a torn frame; a close
whose artifacts cannot be written stays `closing` and completes once writes succeed."""

from __future__ import annotations

import errno
from pathlib import Path

import orjson
import pytest

from compat_api.compose import build_live_service
from compat_api.settings import Settings
from engine_live.errors import StorageUnavailableError
from engine_live.protocol import RunStatus
from engine_live.runtime.service import LiveService
from snapshot_writer.event_log import frame, read_event_log
from snapshot_writer.live_store import EventLogFile
from snapshot_writer.snapshot_files import CURRENT, SNAPSHOTS
from stream_hub.hub import Hub
from tests.fault_fs import FaultyFs

BINS = 40
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arr, kind: const, source: telemetry}}
  - {{id: served, kind: expr, expr: "MIN(arr, 5)"}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def start(data_dir: Path, fs: FaultyFs, clock: Clock | None = None, **kw: object) -> LiveService:
    settings = Settings(data_dir=data_dir, snapshot_every_bins=1000, snapshot_every_seconds=1e9, **kw)
    svc = build_live_service(settings, hub=Hub(), clock=clock or Clock(), fs=fs)
    await svc.start()
    return svc


async def ingest(svc: LiveService, b: int, value: float = 3.0) -> dict[str, object]:
    return await svc.ingest("r1", orjson.dumps({"bin": b, "series": "arr", "value": value}))


def tmp_folders(live: Path) -> list[str]:
    snaps = live / SNAPSHOTS
    return [p.name for p in snaps.iterdir() if p.name.startswith(".tmp-")] if snaps.is_dir() else []


@pytest.mark.parametrize(
    ("op", "path"),
    [
        ("write", "snapshots/.tmp-"),  # a snapshot file
        ("fsync", "snapshots/.tmp-"),  # a snapshot file's fsync
        ("rename", f"{SNAPSHOTS}/"),  # the folder renamed into place
        ("fsync", "events.log"),  # events.log synced up to the snapshot's seq
        ("write", ".CURRENT"),  # CURRENT's temporary file
        ("rename", CURRENT),  # CURRENT replaced
    ],
)
async def test_a_failed_snapshot_never_replaces_current_and_the_run_goes_on(
    tmp_path: Path, faulty_fs: FaultyFs, op: str, path: str
) -> None:
    svc = await start(tmp_path, faulty_fs)
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await ingest(svc, 0)
    first = await svc.request_snapshot(h)
    current = (h.folder / CURRENT).read_bytes()
    await ingest(svc, 1)
    faulty_fs.arm(op, path=path, errno=errno.ENOSPC)
    with pytest.raises(OSError):
        await svc.request_snapshot(h)
    assert faulty_fs.failures, "the fault did not fire"
    assert (h.folder / CURRENT).read_bytes() == current  # CURRENT still names the last good snapshot
    assert tmp_folders(h.folder) == []
    assert svc.ctx.storage.kinds["snapshot"].failing
    assert (await ingest(svc, 2))["lastBin"] == 2  # the run goes on
    second = await svc.request_snapshot(h)  # the retry works once storage does
    assert second.seq > first.seq and (h.folder / CURRENT).read_bytes() != current
    assert not svc.ctx.storage.failing
    await svc.stop()
    svc = await start(tmp_path, FaultyFs())  # every acknowledged bin is there after a restart
    assert svc.runs["r1"].run.last_bin == 2
    await svc.stop()


async def test_post_snapshot_via_http_answers_503_when_the_snapshot_fails(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    svc = await start(tmp_path, faulty_fs)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await ingest(svc, 0)
    faulty_fs.arm("fsync", path="snapshots/.tmp-")
    with pytest.raises(StorageUnavailableError) as info:
        await svc.snapshot("r1")
    assert info.value.http_status == 503
    faulty_fs.arm("rename", path="series")  # snapshot committed, artifacts not
    with pytest.raises(StorageUnavailableError, match="artifacts"):
        await svc.snapshot("r1")
    assert svc.ctx.storage.kinds["artifacts"].failing
    body = await svc.snapshot("r1")
    assert body["lastBin"] == 0 and not svc.ctx.storage.failing
    await svc.stop()


async def test_steps_after_current_only_free_space(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    svc = await start(tmp_path, faulty_fs, snapshots_kept=1)
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await ingest(svc, 0)
    await svc.request_snapshot(h)
    await ingest(svc, 1)
    faulty_fs.arm("rmtree", path=SNAPSHOTS, times=None)  # pruning fails
    faulty_fs.arm("unlink", path="ingest.log", times=None)  # log truncation fails
    meta = await svc.request_snapshot(h)
    assert f'"snapshot": "{meta.name}"' in (h.folder / CURRENT).read_text()  # the commit stands
    assert len(list((h.folder / SNAPSHOTS).iterdir())) == 2 and not svc.ctx.storage.failing
    faulty_fs.heal()
    await ingest(svc, 2)
    await svc.request_snapshot(h)
    assert len(list((h.folder / SNAPSHOTS).iterdir())) == 1  # the next commit pruned
    await svc.stop()


def test_a_failed_events_log_write_leaves_whole_frames(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    path = tmp_path / "events.log"
    events = EventLogFile(path, faulty_fs)
    events.write(frame(b'{"seq":1}'))
    events.flush()
    events.write(frame(b'{"seq":2}'))
    faulty_fs.arm("write", torn=True)
    with pytest.raises(OSError):
        events.flush()
    assert path.stat().st_size == events.tell() == len(frame(b'{"seq":1}'))  # cut back, frame 2 dropped
    events.write(frame(b'{"seq":3}'))
    events.flush()
    events.close()
    scan = read_event_log(path)
    assert scan.problem is None and [e["seq"] for e, _ in scan.events] == [1, 3]


async def test_a_close_whose_artifacts_cannot_be_written_stays_closing_then_completes(
    tmp_path: Path, faulty_fs: FaultyFs
) -> None:
    clock = Clock()
    svc = await start(tmp_path, faulty_fs, clock)
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await ingest(svc, 0)
    faulty_fs.arm("mkdir", path="runs/r1/model", times=None)  # the artifacts cannot be written
    await svc.close_run("r1")
    assert h.run.status is RunStatus.CLOSING and svc.ctx.storage.kinds["artifacts"].failing
    assert h.work.close_retry_at == clock.now + 1.0
    clock.now += 1.0
    await svc.retry_closes()  # still failing: the next retry backs off
    assert h.run.status is RunStatus.CLOSING and h.work.close_retry_at == clock.now + 2.0
    faulty_fs.heal()
    await svc.retry_closes()  # not due yet
    assert h.run.status is RunStatus.CLOSING
    clock.now += 2.0
    await svc.retry_closes()
    assert h.run.status is RunStatus.COMPLETED and (tmp_path / "runs/r1/manifest.json").is_file()
    assert not svc.ctx.storage.failing
    await svc.stop()


async def test_a_close_interrupted_by_a_restart_completes_on_recovery(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    svc = await start(tmp_path, faulty_fs)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await ingest(svc, 0)
    faulty_fs.arm("mkdir", path="runs/r1/model", times=None)
    await svc.close_run("r1")
    assert svc.runs["r1"].run.status is RunStatus.CLOSING
    await svc.stop()
    svc = await start(tmp_path, FaultyFs())  # the close record replays and the artifacts are written
    assert svc.runs["r1"].run.status is RunStatus.COMPLETED and (tmp_path / "runs/r1/manifest.json").is_file()
    await svc.stop()


async def test_a_close_that_cannot_be_logged_leaves_the_run_open(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    svc = await start(tmp_path, faulty_fs)
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    faulty_fs.arm("fsync", path="ingest.log")
    with pytest.raises(StorageUnavailableError):
        await svc.close_run("r1")
    assert h.run.status is RunStatus.LIVE and not h.work.closing
    assert (await ingest(svc, 0))["lastBin"] == 0  # it takes frames again
    await svc.close_run("r1")
    assert h.run.status is RunStatus.COMPLETED
    await svc.stop()
