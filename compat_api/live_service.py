"""The live service: owns every live run and the order things happen in (SPEC §6, §12.1, §12.7).

Per run, one worker task drains a queue of accepted requests: it appends their records to the
run's ingestion log (one group-committed fsync for the batch), then applies them in log order to
the LiveRun and publishes the events (encoded once) to the hub and `live/events.log`. A request is
answered only after its record is durable, so no event is ever published for data a crash could
lose. Because events are a pure function of the log, recovery replays the log and gets the same
epoch and seq numbering back.

Log records (orjson): `{"t": "create", runId, epoch, createdUtc, model, options}`,
`{"t": "cols", "b": bin | [bin, ...], "s": [series, ...], "v": [value, ...]}` (frames as columns, one
bin as a number when all share it; logs written before hold `{"t": "frames", "f": [[bin, series,
value], ...]}`, still replayed), `{"t": "close"}`.

Snapshots (`snapshot_writer.live_checkpoint`): after each applied batch the worker asks the run's
`RunCheckpoint` whether one is due (every `snapshotEveryBins` evaluated bins or
`snapshotEverySeconds` on the injected clock) or requested (`snapshot()`, POST /snapshots, stop);
the capture is a copy taken right there, between two records, and the commit runs in a thread
while ingestion goes on. The log is a set of segments with absolute offsets
(`snapshot_writer.log_segments`), rolled at every capture. `docs/checkpointing.md` has the order.

Retention (SPEC §6): every run tracks `persisted_before`; a snapshot job carries the run's immutable
bins not yet persisted, the commit writes them as segments `live/segments/<from>-<to>.parquet`, and
only after the commit (here, on the event loop) does the run let those columns leave memory. Close
and POST /snapshots assemble the full series from the segments and the matrix
(`compat_api.live_artifacts`); when that fails at close the run becomes `failed` (status event with
the reason, not seq'd: a failure is not a function of the log) instead of staying `closing`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from compat_api.live_artifacts import write_live_artifacts
from compat_api.live_reads import LiveReads
from compat_api.live_snapshots import LiveSnapshots
from compat_api.settings import Settings
from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import (
    BackpressureError,
    ConflictError,
    FlowTimeError,
    IngestError,
    ModelError,
    OutsideRetentionError,
    RunClosedError,
    TooLargeError,
)
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from engine_live.plan.compiler import compile_model
from engine_live.protocol import Event, RunStatus, encode_event
from engine_live.state.live_run import FrameColumns, LiveRun, ValidFrame
from ingestion.frames import FrameValidator, parse_body
from ingestion.ingest_log import HEADER
from snapshot_writer.log_segments import SegmentedLog

log = logging.getLogger("flowtime.live")


from compat_api.live_handle import (  # noqa: E402 - re-exported names
    RUN_ID_RE,
    EventPublisher,
    NullPublisher,
    QueuedRecord,
    RunHandle,
    parse_create,
)

_Item = QueuedRecord  # the name benches use


def frames_record(frames: list[ValidFrame]) -> dict[str, Any]:
    """The log record of validated frames: columns, the bin once when every frame has it."""
    bins = [f.bin for f in frames]
    one = bool(bins) and bins.count(bins[0]) == len(bins)
    return {"t": "cols", "b": bins[0] if one else bins, "s": [f.series for f in frames], "v": [f.value for f in frames]}


class LiveService(LiveReads, LiveSnapshots):
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Any = None,
        hub: EventPublisher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.metrics, self.clock = settings, metrics, clock
        self.hub: EventPublisher = hub or NullPublisher()
        self.runs: dict[str, RunHandle] = {}
        self.ready = False
        self.ready_event = asyncio.Event()  # set when recovery is done
        self.queued_frames = 0
        self._progress = {"runs": 0, "runsDone": 0, "records": 0}
        self.on_events: list[Callable[[RunHandle, list[Event]], None]] = []
        self.drained = asyncio.Event()  # set whenever the ingest queue has room again
        self.ctx: Any = None  # the AppContext, set by build_context (telemetry runs need its folders)
        self.snapshot_fault: Callable[[str], None] | None = None  # crash injection seam (tests)
        self._ticker: asyncio.Task[None] | None = None

    @property
    def runs_dir(self) -> Path:
        return self.settings.data_dir / "runs"

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        from compat_api.live_recovery import recover_runs

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        # Recovery builds large long-lived state (matrices, warning books, hub history): with the
        # collector on, every few thousand allocations would trigger full passes over all of it
        # (decoding the log alone took 10x longer). Nothing it makes is cyclic garbage worth chasing.
        enabled = gc.isenabled()
        gc.disable()
        try:
            await recover_runs(self, self._progress)
        finally:
            if enabled:
                gc.enable()
        self.ready = True
        self.ready_event.set()
        gc.freeze()  # recovered state is long-lived: keep it out of every later full collection
        self._ticker = asyncio.create_task(self._tick(), name="live-ticker")

    async def _tick(self) -> None:
        """Once a second: time-based snapshots of idle runs (the due check reads the injected clock)."""
        while True:
            await asyncio.sleep(1.0)
            self.snapshot_tick()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for h in list(self.runs.values()):
            await self._drain(h)
            if h.checkpoint is not None:
                if h.worker is not None and not h.worker.done() and h.run.status.is_open:
                    try:  # SIGTERM: a last snapshot, so the restart replays little
                        await self.request_snapshot(h)
                    except Exception:
                        log.exception("run %s: final snapshot failed", h.run_id, extra={"run_id": h.run_id})
                await h.checkpoint.drain()
            if h.worker is not None:
                h.worker.cancel()
            if h.log is not None:
                await h.log.close()
            if h.events_fh is not None:
                h.events_fh.close()

    def attach(self, h: RunHandle, *, log_ready: bool = True) -> None:
        self.runs[h.run_id] = h
        if log_ready and h.log is None:
            h.log = SegmentedLog.open_tail(h.folder)
        if h.checkpoint is None:
            h.checkpoint = self.make_checkpoint(h)
        if h.events_fh is None:
            h.events_fh = open(h.folder / "events.log", "ab")  # noqa: SIM115 - lives as long as the run
        if h.run.status.is_open:
            h.worker = asyncio.create_task(self._work(h), name=f"run-worker-{h.run_id}")

    # -- create ---------------------------------------------------------------------------------
    def build_handle(
        self, run_id: str, epoch: str, created: str, model: str | dict[str, Any], options: dict[str, Any]
    ) -> RunHandle:
        text = model if isinstance(model, str) else orjson.dumps(model).decode()
        if len(text.encode()) > self.settings.max_model_bytes:
            raise TooLargeError(f"model exceeds {self.settings.max_model_bytes} bytes")
        doc = load_model(text, base_dir=self.settings.data_dir / "inputs", live=True)
        graph = build_model(doc)
        plan = compile_model(graph)
        run = LiveRun(
            plan,
            run_id=run_id,
            epoch=epoch,
            grace_bins=int(options.get("graceBins", 2)),
            retention_bins=options.get("retentionBins"),
            hooks=DerivedHooks(plan),
            persisted_before=0,
        )
        folder = self.runs_dir / run_id / "live"
        validator = FrameValidator(graph, run_id, max_bins_ahead=self.settings.max_bins_ahead)
        return RunHandle(run_id, run, graph, text, options, created, folder, validator, provenance=doc.provenance)

    async def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        model, options = parse_create(body)
        run_id = options.get("runId")
        if run_id is not None:
            if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
                raise ModelError(f"options.runId: must match {RUN_ID_RE.pattern}")
            if run_id in self.runs or (self.runs_dir / run_id).exists():
                raise ConflictError(f"run '{run_id}' already exists", runId=run_id)
        else:
            run_id = f"live_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(4)}"
        if sum(1 for h in self.runs.values() if h.run.status.is_open) >= self.settings.max_live_runs:
            raise ConflictError("too many live runs", limit=self.settings.max_live_runs)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        epoch = secrets.token_hex(4)
        h = self.build_handle(run_id, epoch, created, model, options)
        series = h.run.plan.n_rows
        keep = h.run.retention_bins + h.run.plan.lookback
        if keep * series * 8 > self.settings.max_live_bytes:
            raise ConflictError("run too large for memory", retainedBins=keep, series=series)
        h.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "t": "create",
            "runId": run_id,
            "epoch": epoch,
            "createdUtc": created,
            "model": h.model_text,
            "options": options,
        }
        self.attach(h)
        assert h.log is not None
        h.create_record = record
        payload = orjson.dumps(record)
        offset = await h.log.append(payload)
        self.emit(h, h.run.start())
        h.applied_offset = offset + HEADER.size + len(payload)
        return self.detail(run_id)

    async def create_telemetry_run(self, body: dict[str, Any]) -> dict[str, Any]:
        from compat_api.telemetry_runs import create_telemetry_run

        return await create_telemetry_run(body, self.ctx)

    # -- ingest ---------------------------------------------------------------------------------
    async def ingest(self, run_id: str, body: bytes, *, source: tuple[int, int] | None = None) -> dict[str, Any]:
        received = time.monotonic()  # metrics: ingest-to-publish latency starts at receipt
        h = self.handle(run_id)
        if not h.run.status.is_open or h.closing:
            raise RunClosedError(f"run '{run_id}' is {h.run.status.value}", runId=run_id)
        capacity = self.settings.ingest_queue_frames
        if self.queued_frames >= capacity:  # refuse before spending time on parsing
            raise BackpressureError(
                "the ingest queue is full; retry later", queued=self.queued_frames, capacity=capacity
            )
        raw = parse_body(body)
        if len(raw) > self.settings.max_frames_per_request:
            raise TooLargeError(f"{len(raw)} frames exceed the limit of {self.settings.max_frames_per_request}")
        frames = h.validator.validate(raw, last_bin=h.run.last_bin)
        n = len(frames)
        if n > capacity:
            raise TooLargeError(f"{n} values exceed the ingest queue's capacity of {capacity}", capacity=capacity)
        if frames and min(f.bin for f in frames) < h.run.lowest_correctable:
            bad = min(f.bin for f in frames)
            raise OutsideRetentionError(
                f"bin {bad} is older than the retention window", bin=bad, lowestBin=h.run.lowest_correctable
            )
        if self.queued_frames + n > capacity:
            raise BackpressureError(
                "the ingest queue is full; retry later", queued=self.queued_frames, capacity=capacity
            )
        record = frames_record(frames)
        if source is not None:
            record["src"] = list(source)  # Kafka partition and offset the frames came from
        payload = orjson.dumps(record)
        item = QueuedRecord(payload, frames, n, asyncio.get_running_loop().create_future(), source, accepted=received)
        return await self._submit(h, item)

    def prepare_patch(self, h: RunHandle, body: Any) -> tuple[Any, Any, dict[str, Any]]:
        from engine_live.model.patch import compile_patched, parse_patch
        from engine_live.model.text import parse_model_text

        run = h.run
        adj = parse_patch(body, model_revision=run.model_revision + 1, default_from=run.last_bin + 1)
        if adj.from_bin > run.last_bin + 1:
            raise ModelError(f"patch.fromBin: at most the next bin ({run.last_bin + 1})", code="invalid_patch")
        if adj.from_bin < run.lowest_correctable:
            from engine_live.errors import OutsideRetentionError

            raise OutsideRetentionError(f"patch.fromBin {adj.from_bin} is older than the retention window")
        if h.model_data is None:
            data = parse_model_text(h.model_text)
            h.model_data = data if isinstance(data, dict) else {}
        new_data, plan = compile_patched(
            h.model_data, adj, run.plan.graph, self.settings.data_dir / "inputs", live=True
        )
        return adj, plan, new_data

    async def patch_model(self, run_id: str, body: Any) -> dict[str, Any]:
        h = self.ensure_open(run_id)
        adj, plan, new_data = self.prepare_patch(h, body)
        payload = orjson.dumps({"t": "patch", **adj.to_wire()})
        item = QueuedRecord(payload, None, 0, asyncio.get_running_loop().create_future(), patch=(adj, plan, new_data))
        return await self._submit(h, item)

    async def close_run(self, run_id: str) -> dict[str, Any]:
        h = self.handle(run_id)
        if not h.run.status.is_open or h.closing:
            return self.detail(run_id)  # a repeated close is a no-op
        h.closing = True
        await self._submit(h, QueuedRecord(b'{"t":"close"}', None, 0, asyncio.get_running_loop().create_future()))
        return self.detail(run_id)

    async def delete_run(self, run_id: str) -> dict[str, Any] | None:
        """§12.9: stop a live run (status `failed`, reason `deleted`, WebSocket 1000) and forget it.

        None when the engine does not hold the run. New ingest is refused at once (the run is
        closing); what is already queued drains first, as on shutdown. The caller removes the folder.
        """
        h = self.runs.get(run_id)
        if h is None:
            return None
        h.closing = True
        await self._drain(h)
        if h.worker is not None:
            h.worker.cancel()
            await asyncio.gather(h.worker, return_exceptions=True)
        was = h.run.status
        if not was.is_terminal:  # not caused by a log record: repeats the current seq
            ev = h.run.set_status(RunStatus.FAILED, "deleted", seqd=False)
            self.hub.publish(run_id, ev, encode_event(ev), seqd=False)
        drop = getattr(self.hub, "drop_run", None)
        if drop is not None:
            drop(run_id, 1000, "deleted")
        if h.log is not None:
            await h.log.close()
        if h.events_fh is not None:
            h.events_fh.close()
        del self.runs[run_id]
        log.info("run %s deleted", run_id, extra={"run_id": run_id})
        return {"runId": run_id, "deleted": True, "status": h.run.status.value, "previousStatus": was.value}

    @staticmethod
    async def _drain(h: RunHandle) -> None:
        """Wait until every request queued for the run has been logged and applied (or failed)."""
        pending = [it.future for it in h.queue]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _submit(self, h: RunHandle, item: QueuedRecord) -> dict[str, Any]:
        self.queued_frames += item.n
        h.queue.append(item)
        h.wake.set()
        return await item.future

    async def _work(self, h: RunHandle) -> None:
        assert h.log is not None
        while True:
            await h.wake.wait()
            h.wake.clear()
            while h.queue:
                batch = list(h.queue)
                h.queue.clear()
                try:
                    offsets = await asyncio.gather(*(h.log.append(it.payload) for it in batch))
                except OSError as exc:
                    for it in batch:
                        self.queued_frames -= it.n
                        it.future.set_exception(
                            FlowTimeError(f"ingestion log write failed: {exc}", code="log_unavailable")
                        )
                    continue
                for it, offset in zip(batch, offsets, strict=True):
                    self.queued_frames -= it.n
                    if self.queued_frames < self.settings.ingest_queue_frames:
                        self.drained.set()
                    if it.source is not None:
                        part, off = it.source
                        h.kafka_offsets[part] = max(h.kafka_offsets.get(part, -1), off)
                    try:
                        result = (
                            self.apply_patch(h, it.patch, offset)
                            if it.patch is not None
                            else await self.apply(h, it.frames, offset, accepted=it.accepted)
                        )
                    except FlowTimeError as exc:
                        it.future.set_exception(exc)
                    except Exception as exc:
                        log.exception(
                            "run %s: applying the record at %d failed", h.run_id, offset, extra={"run_id": h.run_id}
                        )
                        it.future.set_exception(FlowTimeError(f"internal error: {type(exc).__name__}", code="internal"))
                    else:
                        it.future.set_result(result)
                    h.applied_offset = offset + HEADER.size + len(it.payload)
                await self._checkpoint(h)
            await self._checkpoint(h)  # a requested snapshot while idle

    async def apply(
        self,
        h: RunHandle,
        frames: list[ValidFrame] | FrameColumns | None,
        offset: int,
        *,
        replay: bool = False,
        accepted: float | None = None,
    ) -> dict[str, Any]:
        """Apply one logged record (live or during recovery) and publish its events.

        `accepted` (live records only) is when ingest() accepted the request: it starts the
        ingest-to-publish latency of the record's bins (metrics only).
        """
        run = h.run
        if frames is None:
            events = run.close()
            self.emit(h, events, replay=replay)
            self._observe_latency(h, events, replay)
            if run.status is RunStatus.CLOSING:
                try:
                    async with h.artifacts_lock:
                        await write_live_artifacts(h)
                except Exception as exc:  # never leave the run stuck in `closing`
                    self._close_failed(h, exc)
                else:
                    self.emit(h, run.complete(), replay=replay)
                self.hub_close(h)
            return {"runId": h.run_id, "status": run.status.value, "logOffset": offset}
        if isinstance(frames, FrameColumns):  # replay: columns straight from the log record
            res = run.apply_columns(*frames)
            self.emit(h, res.events, replay=replay)
        else:
            if accepted is not None and not replay and self.metrics is not None:
                for f in frames:
                    h.accepted_at.setdefault(f.bin, accepted)
            res = run.apply_record(frames)
            self.emit(h, res.events, replay=replay)
            self._observe_latency(h, res.events, replay)
            if self.metrics is not None and not replay:
                self.metrics.observe_ingest(h.run_id, len(frames), res.events)
        return {
            "accepted": res.accepted,
            "duplicates": res.duplicates,
            "corrected": res.corrected,
            "logOffset": offset,
            "watermark": run.watermark,
            "lastBin": run.last_bin,
        }

    def _close_failed(self, h: RunHandle, exc: BaseException) -> None:
        """The close could not write the §4 artifacts: the run is `failed` (it cannot complete)."""
        reason = f"artifacts_failed: {type(exc).__name__}: {exc}"
        log.error(
            "run %s: close failed, the run is failed: %s", h.run_id, reason, exc_info=exc, extra={"run_id": h.run_id}
        )
        ev = h.run.set_status(RunStatus.FAILED, reason, seqd=False)
        self.hub.publish(h.run_id, ev, encode_event(ev), seqd=False)

    def apply_patch(self, h: RunHandle, patch: Any, offset: int, *, replay: bool = False) -> dict[str, Any]:
        adj, plan, new_data = patch
        old = h.run.hooks
        hooks = old.for_plan(plan) if isinstance(old, DerivedHooks) else None
        events = h.run.replace_plan(plan, adj.from_bin, hooks)
        h.graph, h.model_data = plan.graph, new_data
        h.validator = FrameValidator(plan.graph, h.run_id, max_bins_ahead=self.settings.max_bins_ahead)
        h.adjustments.append(adj.to_wire())
        self.emit(h, events, replay=replay)
        r = h.run
        return {
            "runId": h.run_id,
            "modelRevision": r.model_revision,
            "revision": r.revision,
            "fromBin": adj.from_bin,
            "logOffset": offset,
            "lastBin": r.last_bin,
        }

    def emit(self, h: RunHandle, events: list[Event], *, replay: bool = False) -> None:
        if h.run.quiet:  # a quiet replay publishes nothing (the history restarts after it)
            return
        fh = h.events_fh
        for ev in events:
            data = encode_event(ev)
            self.hub.publish(h.run_id, ev, data, seqd=True)
            if fh is not None:
                fh.write(len(data).to_bytes(4, "little") + data)
        if fh is not None:
            fh.flush()
        for cb in self.on_events:
            cb(h, events)

    def _observe_latency(self, h: RunHandle, events: list[Event], replay: bool) -> None:
        """Metrics: observe now − acceptance for each bin whose run_update was just published.

        Bins at or below lastBin that got no run_update from this record (duplicates) are dropped,
        so `accepted_at` only ever holds bins still waiting for their evaluation.
        """
        if replay or not h.accepted_at or self.metrics is None:
            return
        now = time.monotonic()
        for ev in events:
            if ev.get("type") == "run_update":
                at = h.accepted_at.pop(int(ev["binIndex"]), None)
                if at is not None:
                    self.metrics.ingest_to_publish_seconds.observe(max(0.0, now - at))
        last = h.run.last_bin
        for b in [b for b in h.accepted_at if b <= last or not h.run.status.is_open]:
            del h.accepted_at[b]

    # -- snapshots ------------------------------------------------------------------------------
    def hub_close(self, h: RunHandle) -> None:
        close = getattr(self.hub, "close_run", None)
        if close is not None:
            close(h.run_id, 1000)

    # -- reads ----------------------------------------------------------------------------------


__all__ = ["IngestError", "LiveService", "RunHandle"]
