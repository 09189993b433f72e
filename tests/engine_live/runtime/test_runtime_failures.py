"""Issue 12 #5 (second line of defence) and #7 on the in-memory ports.

A record that is logged and still fails to evaluate is never acknowledged and never wedges the run:
the run becomes `failed` with the reason (API, stream, metrics), stays so after a restart, and a
replay that fails fails only that run. DELETE during ingest refuses what waits for the log, lets
the batch being written finish, and removes the run whole or not at all. Storage failures are
tracked (`StorageHealth`) and the run resumes by itself. The evaluator fault is injected through
`RuntimeContext.evaluate_fault`; no model bug is relied on.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import orjson
import pytest

from engine_live.errors import ModelError, RunClosedError, StorageUnavailableError
from engine_live.protocol import RunStatus
from engine_live.runtime.context import RuntimeContext, RuntimeSettings
from engine_live.runtime.memory import MemoryLogStore, MemorySnapshotStore, RecordingSink
from engine_live.runtime.records import FailRecord, FramesRecord, LogRecord, PatchRecord
from engine_live.runtime.service import LiveService

BINS = 8
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arrivals, kind: const, source: telemetry}}
  - {{id: served, kind: expr, expr: "MIN(arrivals, 5)"}}
"""
PATCH = {"nodes": [{"id": "served", "kind": "expr", "expr": "MIN(arrivals, 4)"}]}


class Evaluator:
    """The fault seam: raises for the records `broken` picks (a failing evaluator)."""

    def __init__(self) -> None:
        self.broken: set[int] = set()  # bins whose frames fail
        self.patch = False
        self.close = False

    def __call__(self, run_id: str, record: LogRecord) -> None:
        if isinstance(record, FramesRecord) and set(record.batch.bins.tolist()) & self.broken:
            raise ZeroDivisionError("the evaluator broke")
        if isinstance(record, PatchRecord) and self.patch:
            raise FloatingPointError("the patched plan broke")
        if not isinstance(record, FramesRecord | PatchRecord) and self.close:
            raise OverflowError("closing broke")


class Stores:
    """One set of in-memory stores: services built on it share the "disk"."""

    def __init__(self, tmp: Path) -> None:
        self.settings = RuntimeSettings(data_dir=tmp)
        self.logs, self.snapshots, self.sink = MemoryLogStore(), MemorySnapshotStore(), RecordingSink()
        self.evaluator = Evaluator()

    async def service(self) -> LiveService:
        self.sink = RecordingSink()
        ctx = RuntimeContext(self.settings, self.logs, self.snapshots, sink=self.sink, evaluate_fault=self.evaluator)
        svc = LiveService(ctx)
        await svc.start()
        return svc


def body(*frames: tuple[int, float]) -> bytes:
    return orjson.dumps([[b, "arrivals", v] for b, v in frames])


async def crash(svc: LiveService) -> None:
    for h in svc.runs.values():
        await svc.worker.stop(h)


def statuses(stores: Stores, run_id: str) -> list[tuple[str, str | None, bool]]:
    return [(e["status"], e.get("reason"), seqd) for e, seqd in stores.sink.events[run_id] if e["type"] == "status"]


async def test_a_record_that_fails_to_evaluate_fails_the_run_and_is_never_acknowledged(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await svc.create_run({"model": MODEL, "options": {"runId": "r2", "graceBins": 0}})
    await svc.ingest("r1", body((0, 7.0)))
    stores.evaluator.broken = {1}
    with pytest.raises(RunClosedError) as info:
        await svc.ingest("r1", body((1, 3.0)))
    assert info.value.http_status == 409 and info.value.code == "run_failed"
    assert h.run.status is RunStatus.FAILED and h.reason is not None
    assert h.reason.startswith("evaluation_failed: ZeroDivisionError: the evaluator broke")
    assert statuses(stores, "r1")[-1] == ("failed", h.reason, False)  # a run event, not seq'd
    assert stores.sink.closed["r1"] == 1000 and svc.failures.counts["evaluation"] == 1
    with pytest.raises(RunClosedError) as again:  # it takes nothing more
        await svc.ingest("r1", body((2, 1.0)))
    assert again.value.details["reason"] == h.reason
    assert (await svc.close_run("r1")).run.status is RunStatus.FAILED  # close is a no-op, never `closing`
    records = [stores.logs.decode(p) for _, p in stores.logs.logs[h.folder]]
    assert isinstance(records[-1], FailRecord) and records[-1].reason == h.reason
    await svc.ingest("r2", body((0, 1.0)))  # the other run is untouched
    await svc.stop()
    stores.evaluator.broken = set()  # even with a healthy evaluator, a restart keeps it failed
    svc = await stores.service()
    assert svc.runs["r1"].run.status is RunStatus.FAILED and svc.runs["r1"].reason == h.reason
    assert svc.runs["r2"].run.status is RunStatus.LIVE
    await svc.stop()


async def test_requests_queued_behind_the_failing_record_are_refused(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    appender = stores.logs.appenders[h.folder]
    appender.gate = asyncio.Event()
    stores.evaluator.broken = {0}
    first = asyncio.create_task(svc.ingest("r1", body((0, 1.0))))
    await appender.entered.wait()  # bin 0 is being written
    behind = [asyncio.create_task(svc.ingest("r1", body((b, 1.0)))) for b in (1, 2)]
    appender.gate.set()
    results = await asyncio.gather(first, *behind, return_exceptions=True)
    assert all(isinstance(r, RunClosedError) for r in results), results
    assert not [e for e in stores.sink.seqd("r1") if e["type"] == "run_update"]  # nothing of it was published
    assert h.run.status is RunStatus.FAILED and svc.queue.depth == 0
    await svc.stop()


@pytest.mark.parametrize("what", ["patch", "close"])
async def test_a_patch_or_close_that_fails_to_evaluate_fails_the_run(tmp_path: Path, what: str) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await svc.ingest("r1", body((0, 7.0)))
    setattr(stores.evaluator, what, True)
    with pytest.raises(RunClosedError, match="failed"):
        if what == "patch":
            await svc.patch_model("r1", PATCH)
        else:
            await svc.close_run("r1")
    assert h.run.status is RunStatus.FAILED and h.work.close_retry_at is None
    await svc.stop()
    svc = await stores.service()
    assert svc.runs["r1"].run.status is RunStatus.FAILED  # never `closing` after a restart
    await svc.stop()


async def test_a_replay_that_fails_fails_only_that_run(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    for run_id in ("r1", "r2"):
        await svc.create_run({"model": MODEL, "options": {"runId": run_id, "graceBins": 0}})
        await svc.ingest(run_id, body((0, 7.0)))
    await svc.ingest("r1", body((3, 2.0)))
    await crash(svc)  # no final snapshot: bin 3 replays from the log
    stores.evaluator.broken = {3}  # as if an upgrade broke what was logged
    svc = await stores.service()
    assert svc.ready
    r1, r2 = svc.runs["r1"], svc.runs["r2"]
    assert r1.run.status is RunStatus.FAILED and r1.reason is not None
    assert r1.reason.startswith("recovery_failed: ZeroDivisionError")
    assert r2.run.status is RunStatus.LIVE and r2.run.last_bin == 0
    assert svc.failures.counts["recovery"] == 1
    assert (await svc.ingest("r2", body((1, 1.0))))["lastBin"] == 1
    await svc.stop()


async def test_delete_refuses_what_waits_for_the_log_and_finishes_what_is_written(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    appender = stores.logs.appenders[h.folder]
    appender.gate = asyncio.Event()
    written = asyncio.create_task(svc.ingest("r1", body((0, 7.0))))
    await appender.entered.wait()  # bin 0's record is being written
    queued = [asyncio.create_task(svc.ingest("r1", body((b, 1.0)))) for b in (1, 2, 3)]
    patch = asyncio.create_task(svc.patch_model("r1", PATCH))
    deleting = asyncio.create_task(svc.delete_run("r1"))  # tasks start in order: the others queue first
    appender.gate.set()
    answer = await deleting
    assert answer is not None and answer["status"] == "failed" and answer["previousStatus"] == "live"
    assert (await written)["lastBin"] == 0  # the batch in flight was written, applied and answered
    for task in (*queued, patch):
        with pytest.raises(RunClosedError) as info:
            await task
        assert info.value.details.get("reason") == "deleted"
    assert svc.queue.depth == 0 and "r1" not in svc.runs and h.folder not in stores.logs.logs
    assert statuses(stores, "r1")[-1] == ("failed", "deleted", False)
    await svc.stop()


async def test_a_delete_that_cannot_remove_the_folder_leaves_it_whole_and_can_be_retried(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    await svc.ingest("r1", body((0, 7.0)))
    stores.logs.fail_remove = OSError(errno.EIO, "Input/output error")
    with pytest.raises(StorageUnavailableError):
        await svc.delete_run("r1")
    assert h.folder in stores.logs.logs  # whole: nothing was removed
    assert svc.runs["r1"].run.status is RunStatus.FAILED and svc.runs["r1"].reason == "deleted"
    with pytest.raises(RunClosedError):
        await svc.ingest("r1", body((1, 1.0)))
    stores.logs.fail_remove = None
    answer = await svc.delete_run("r1")
    assert answer is not None and "r1" not in svc.runs and h.folder not in stores.logs.logs
    await svc.stop()


async def test_storage_health_follows_the_writes_and_a_probe(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    stores.logs.appenders[h.folder].fail_next = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageUnavailableError):
        await svc.ingest("r1", body((0, 7.0)))
    health = svc.ctx.storage
    assert health.failing and health.kinds["log"].failures == 1
    stores.logs.fail_probe = OSError(errno.ENOSPC, "No space left on device")
    status = await svc.storage_status()
    assert status is not None and status["failing"] == ["log"] and "No space" in str(status["errors"])
    stores.logs.fail_probe = None
    assert await svc.storage_status() is None and not health.failing  # the probe write worked
    stores.snapshots.fail_next_commit = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError):
        await svc.request_snapshot(h)
    assert health.kinds["snapshot"].failing
    await svc.ingest("r1", body((0, 7.0)))  # the run went on all along
    await svc.request_snapshot(h)
    assert not health.failing and health.failure_counts() == {"log": 1, "snapshot": 1, "events": 0, "artifacts": 0}
    await svc.stop()


async def test_a_patch_that_fails_to_compile_is_refused_before_it_is_logged(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    logged = len(stores.logs.logs[h.folder])

    def broken_compiler(handle: object, body: object) -> None:
        raise KeyError("a compiler bug")

    svc.applier.prepare_patch = broken_compiler  # type: ignore[assignment,method-assign]
    with pytest.raises(ModelError) as info:
        await svc.patch_model("r1", PATCH)
    assert info.value.http_status == 422 and info.value.code == "invalid_patch"
    assert len(stores.logs.logs[h.folder]) == logged and h.run.status is RunStatus.LIVE
    await svc.stop()
