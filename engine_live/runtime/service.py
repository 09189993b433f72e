"""The live service: owns every live run and the order things happen in (SPEC §6, §12.1, §12.7).

It is the runtime's one entry point for the HTTP, WebSocket and Kafka adapters: create, ingest,
patch, close, delete, snapshot, and lookups of run handles. The work is done by its parts —
`RunWorker` (queue → log → apply), `Applier`/`Publisher` (records → events), `Checkpoints`
(snapshots), `Recovery` (start-up) and `RunFailures` (runs that cannot go on) — which share one
`RuntimeContext`. Storage failures are answered 503 and tracked in `ctx.storage`
(`storage_status` probes while failing); see `docs/storage-faults.md`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from engine_live.errors import (
    BackpressureError,
    ConflictError,
    FlowTimeError,
    ModelError,
    NotFoundError,
    OutsideRetentionError,
    RunClosedError,
    StorageUnavailableError,
    TooLargeError,
)
from engine_live.protocol import RunStatus
from engine_live.runtime.apply import Applier, Publisher
from engine_live.runtime.build import build_handle, model_text, parse_create
from engine_live.runtime.checkpoints import Checkpoints
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.failures import RunFailures
from engine_live.runtime.handle import QueuedRecord, RunHandle
from engine_live.runtime.records import CloseRecord, CreateRecord, FramesRecord, PatchRecord
from engine_live.runtime.recovery import Recovery, RecoveryProgress
from engine_live.runtime.snapshot_types import SnapshotMeta
from engine_live.runtime.worker import IngestQueue, RunWorker

log = logging.getLogger("flowtime.live")
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class LiveService:
    """Every live run of the process, and the operations on them (see the module docstring)."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.runs: dict[str, RunHandle] = {}
        self.queue = IngestQueue(ctx.settings.ingest_queue_frames)
        self.publisher = Publisher(ctx)
        self.failures = RunFailures(ctx)
        self.applier = Applier(ctx, self.publisher, self.failures)
        self.checkpoints = Checkpoints(ctx)
        self.worker = RunWorker(ctx, self.queue, self.applier, self.checkpoints)
        self.recovery = Recovery(ctx, self.applier, self.failures)
        self.ready = False
        self.ready_event = asyncio.Event()  # set when recovery is done
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover every unfinished run, then start the snapshot ticker (readiness follows)."""
        self.ctx.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        runs_dir = self.ctx.settings.runs_dir
        await asyncio.to_thread(self.ctx.logs.clean, runs_dir)  # deletes a crash interrupted
        dirs = sorted(set(self.ctx.logs.live_dirs(runs_dir)) | set(self.ctx.snapshots.live_dirs(runs_dir)))
        # Recovery builds large long-lived state (matrices, warning books, hub history): with the
        # collector on, every few thousand allocations would trigger full passes over all of it
        # (decoding the log alone took 10x longer). It makes no cyclic garbage worth chasing.
        collecting = gc.isenabled() and bool(dirs)
        if collecting:
            gc.disable()
        self.publisher.recovering = True
        try:
            async for recovered in self.recovery.recover_each(dirs):
                self.adopt(recovered.handle)
                await self.recovery.after_adopt(recovered, self.checkpoints)
        finally:
            self.publisher.recovering = False
            if collecting:
                gc.enable()
        self.ready = True
        self.ready_event.set()
        self._ticker = asyncio.create_task(self._tick(), name="live-ticker")

    async def _tick(self) -> None:
        """Once a second: time-based snapshots of idle runs and close retries (both read the injected clock)."""
        while True:
            await asyncio.sleep(1.0)
            self.checkpoints.tick(list(self.runs.values()))
            try:
                await self.retry_closes()
            except Exception:
                log.exception("close retry failed")

    async def retry_closes(self) -> None:
        """Write the artifacts of closing runs whose last attempt storage refused, when their retry is due."""
        now = self.ctx.clock()
        for h in list(self.runs.values()):
            at = h.work.close_retry_at
            if at is not None and now >= at and h.run.status is RunStatus.CLOSING:
                h.work.close_retry_at = None
                await self.applier.finish_close(h)

    async def storage_status(self) -> dict[str, object] | None:
        """None while storage takes writes; else what fails. While failing a probe write is tried first
        (storage may have recovered with no write since, e.g. while readiness kept clients away)."""
        health = self.ctx.storage
        if not health.failing:
            return None
        try:
            await asyncio.to_thread(self.ctx.logs.probe, self.settings.runs_dir)
        except OSError:
            return health.to_wire()
        health.recovered()
        return None

    async def stop(self) -> None:
        """Drain every run, take a last snapshot of open ones, close their files."""
        if self._ticker is not None:
            self._ticker.cancel()
        for h in list(self.runs.values()):
            await self.worker.drain(h)
            checkpoint = h.files.checkpoint
            if checkpoint is not None:
                task = h.work.task
                if task is not None and not task.done() and h.run.status.is_open:
                    try:  # SIGTERM: a last snapshot, so the restart replays little
                        await self.checkpoints.request(h)
                    except Exception:
                        log.exception("run %s: final snapshot failed", h.run_id, extra={"run_id": h.run_id})
                await checkpoint.drain()
            await self._halt(h, StorageUnavailableError("the service is stopping; retry", runId=h.run_id))
            await self._close_files(h)

    async def _halt(self, h: RunHandle, leftover: FlowTimeError) -> None:
        """Stop the run's worker; what it still holds (requests, snapshot requests) is answered `leftover`."""
        await self.worker.stop(h, leftover)
        checkpoint = h.files.checkpoint
        if checkpoint is not None:
            requests, checkpoint.requests[:] = list(checkpoint.requests), []
            for future in requests:
                if not future.done():
                    future.set_exception(leftover)

    async def _close_files(self, h: RunHandle) -> None:
        if h.work.task is not None:
            h.work.task.cancel()
        log_, events, h.files.log, h.files.events = h.files.log, h.files.events, None, None
        if log_ is not None:
            await log_.close()
        if events is not None:
            events.close()

    def adopt(self, h: RunHandle) -> None:
        """Register a run and open what it writes to: log, `events.log`, checkpoint; start its worker."""
        self.runs[h.run_id] = h
        files = h.files
        if files.log is None:
            files.log = self.ctx.logs.open_tail(h.folder)
        if files.checkpoint is None:
            files.checkpoint = self.checkpoints.open(h)
        if files.events is None:
            try:
                files.events = self.ctx.snapshots.open_events(h.folder)
            except OSError as exc:  # the run goes on; its events reach subscribers, not events.log
                self.ctx.storage.failed("events", exc)
                log.warning("run %s: events.log cannot be opened: %s", h.run_id, exc, extra={"run_id": h.run_id})
        self.worker.start(h)

    # -- lookups --------------------------------------------------------------------------------
    def handle(self, run_id: str) -> RunHandle:
        """The run's handle; NotFoundError (404) for a run the engine does not hold."""
        h = self.runs.get(run_id)
        if h is None:
            raise NotFoundError(f"unknown live run '{run_id}'", runId=run_id)
        return h

    def knows(self, run_id: str) -> bool:
        """Whether the engine holds the run."""
        return run_id in self.runs

    def ensure_open(self, run_id: str) -> RunHandle:
        """The handle of an open run; RunClosedError (409) otherwise."""
        h = self.handle(run_id)
        if not h.run.status.is_open or h.work.closing:
            raise self._closed(h)
        return h

    @staticmethod
    def _closed(h: RunHandle) -> RunClosedError:
        status = h.run.status.value if h.run.status.is_terminal else RunStatus.CLOSING.value
        details = {"reason": h.reason} if h.reason is not None else {}
        return RunClosedError(f"run '{h.run_id}' is {status}", runId=h.run_id, **details)

    def recovery_progress(self) -> RecoveryProgress:
        """How far recovery is (runs found, runs done, records replayed)."""
        return self.recovery.progress

    def kafka_offsets(self) -> dict[int, int]:
        """Per partition, the highest Kafka offset any run has logged: records at or below are skipped."""
        out: dict[int, int] = {}
        for h in self.runs.values():
            for part, offset in h.durable.kafka_offsets.items():
                out[part] = max(out.get(part, -1), offset)
        return out

    # -- operations -----------------------------------------------------------------------------
    async def create_run(self, body: dict[str, Any]) -> RunHandle:
        """Create a live run from a create request (SPEC §12.1); its handle once the create is logged."""
        model, options = parse_create(body)
        run_id = self._new_run_id(options.get("runId"))
        if sum(1 for h in self.runs.values() if h.run.status.is_open) >= self.settings.max_live_runs:
            raise ConflictError("too many live runs", limit=self.settings.max_live_runs)
        create = CreateRecord(
            run_id,
            secrets.token_hex(4),
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            model_text(model),
            options,
        )
        h = build_handle(self.ctx, create)
        series, keep = h.run.plan.n_rows, h.run.retention_bins + h.run.plan.lookback
        if keep * series * 8 > self.settings.max_live_bytes:
            raise ConflictError("run too large for memory", retainedBins=keep, series=series)
        # Atomic: the run exists (is registered, takes frames) only once its create record is
        # durable; a failure on the way removes the folder, so nothing is left behind.
        payload = self.ctx.logs.encode(create)
        try:
            log_ = self.ctx.logs.create(h.folder)  # ConflictError: the folder is another run's, kept
        except OSError as exc:
            self.ctx.logs.discard(h.folder)
            self.ctx.storage.failed("log", exc)
            raise StorageUnavailableError(f"the run's folder could not be created: {exc}", runId=run_id) from None
        try:
            offset = await log_.append(payload)
        except BaseException as exc:
            await asyncio.gather(log_.close(), return_exceptions=True)
            self.ctx.logs.discard(h.folder)
            if isinstance(exc, OSError):
                self.ctx.storage.failed("log", exc)
                raise StorageUnavailableError(f"the run's create record could not be written: {exc}") from None
            raise
        self.ctx.storage.succeeded("log")
        h.files.log = log_
        self.adopt(h)
        self.publisher.emit(h, h.run.start())
        h.durable.applied_offset = self.ctx.logs.record_end(offset, payload)
        return h

    def _new_run_id(self, requested: Any) -> str:
        if requested is None:
            return f"live_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(4)}"
        if not isinstance(requested, str) or not re.match(RUN_ID_PATTERN, requested):
            raise ModelError(f"options.runId: must match {RUN_ID_PATTERN}")
        if requested in self.runs or (self.settings.runs_dir / requested).exists():
            raise ConflictError(f"run '{requested}' already exists", runId=requested)
        return requested

    async def ingest(
        self, run_id: str, body: bytes, *, source: tuple[int, int] | None = None, media_type: str | None = None
    ) -> dict[str, Any]:
        """Validate, log and apply one ingest request (SPEC §12.1); the 202 answer once it is durable."""
        received = time.monotonic()  # metrics: ingest-to-publish latency starts at receipt
        h = self.ensure_open(run_id)
        queue = self.queue
        if queue.full:  # refuse before spending time on parsing
            raise BackpressureError(
                "the ingest queue is full; retry later", queued=queue.depth, capacity=queue.capacity
            )
        batch = h.model.frames.read(
            body, last_bin=h.run.last_bin, max_frames=self.settings.max_frames_per_request, media_type=media_type
        )
        values = len(batch)
        if values > queue.capacity:
            raise TooLargeError(
                f"{values} values exceed the ingest queue's capacity of {queue.capacity}", capacity=queue.capacity
            )
        if values and int(batch.bins.min()) < h.run.lowest_correctable:
            bad = int(batch.bins.min())
            raise OutsideRetentionError(
                f"bin {bad} is older than the retention window", bin=bad, lowestBin=h.run.lowest_correctable
            )
        if queue.depth + values > queue.capacity:
            raise BackpressureError(
                "the ingest queue is full; retry later", queued=queue.depth, capacity=queue.capacity
            )
        record = FramesRecord(batch, source)
        future = asyncio.get_running_loop().create_future()
        item = QueuedRecord(record, self.ctx.logs.encode(record), values, future, accepted=received)
        return await self.worker.submit(h, item)

    async def patch_model(self, run_id: str, body: Any) -> dict[str, Any]:
        """Adjust the model of an open run from a bin on (SPEC §12.8); logged like any record."""
        h = self.ensure_open(run_id)
        try:
            prepared = self.applier.prepare_patch(h, body)
        except FlowTimeError:
            raise
        except Exception as exc:  # validation missed it: refused before anything is logged, never a 500
            log.exception("run %s: a PATCH failed to compile", run_id, extra={"run_id": run_id})
            raise ModelError(f"patch: cannot be compiled ({type(exc).__name__}: {exc})", code="invalid_patch") from None
        record = PatchRecord(prepared[0].to_wire())
        future = asyncio.get_running_loop().create_future()
        item = QueuedRecord(record, self.ctx.logs.encode(record), 0, future, prepared=prepared)
        return await self.worker.submit(h, item)

    async def close_run(self, run_id: str) -> RunHandle:
        """Close the run (SPEC §12.7); a repeated close is a no-op."""
        h = self.handle(run_id)
        if not h.run.status.is_open or h.work.closing:
            return h
        h.work.closing = True
        record = CloseRecord()
        future = asyncio.get_running_loop().create_future()
        try:
            await self.worker.submit(h, QueuedRecord(record, self.ctx.logs.encode(record), 0, future))
        except StorageUnavailableError:
            if h.run.status.is_open:  # the close was not logged: the run takes frames again
                h.work.closing = False
            raise
        return h

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """POST /v1/runs/{id}/snapshots: a committed snapshot now, plus the full §4 artifacts."""
        return await self.checkpoints.snapshot_with_artifacts(self.ensure_open(run_id))

    async def request_snapshot(self, h: RunHandle) -> SnapshotMeta:
        """A snapshot of the run now; resolves with its metadata once committed."""
        return await self.checkpoints.request(h)

    async def delete_run(self, run_id: str) -> dict[str, Any] | None:
        """§12.9: stop a live run (status `failed`, reason `deleted`, WebSocket 1000) and remove its folder.

        None when the engine does not hold the run. New requests are refused at once (the run is
        closing); requests still waiting for the log are answered 409 `run_closed` (reason
        `deleted`) and nothing of them is written; the batch being written and applied finishes and
        gets its answers; a snapshot commit or artifact write in flight finishes. Then the folder
        goes as a whole (`LogStore.remove`: renamed to a tombstone first). When it cannot be
        removed it stays whole, the run stays listed as failed/deleted, and 503 answers: a repeated
        DELETE tries again (a restart would recover the run from it).
        """
        h = self.runs.get(run_id)
        if h is None:
            return None
        h.work.closing = True
        gone = RunClosedError(f"run '{run_id}' was deleted", runId=run_id, reason="deleted")
        self.worker.refuse_queued(h, gone)
        await self.worker.settle(h)
        await self._halt(h, gone)
        # nothing may write into the folder from here on: wait for a snapshot commit in flight and for
        # a close's artifact writer
        if h.files.checkpoint is not None:
            await h.files.checkpoint.drain()
        async with h.files.artifacts_lock:
            pass
        was = h.run.status
        if not was.is_terminal:  # not caused by a log record: repeats the current seq
            h.reason = "deleted"
            self.publisher.status(h, RunStatus.FAILED, "deleted")
        self.ctx.sink.drop_run(run_id, 1000, "deleted")
        await self._close_files(h)
        try:
            await asyncio.to_thread(self.ctx.logs.remove, h.folder)
        except OSError as exc:
            self.ctx.storage.failed("log", exc)
            raise StorageUnavailableError(
                f"run '{run_id}' is stopped but its folder could not be removed: {exc}; retry", runId=run_id
            ) from None
        self.runs.pop(run_id, None)
        log.info("run %s deleted", run_id, extra={"run_id": run_id})
        return {"runId": run_id, "deleted": True, "status": h.run.status.value, "previousStatus": was.value}
