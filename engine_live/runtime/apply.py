"""Applying logged records to a run and publishing what follows — one path for live and replay.

`Applier.apply(h, record, offset)` is called by the worker for each record right after it is
durable, and by recovery for each record of the log tail, in log order. Events go to the sink
and `events.log` encoded once (`Publisher.emit`); during a quiet replay (`LiveRun.quiet`) nothing
is published. A close writes the canonical artifacts; when they cannot be built the run is
`failed` (`RunFailures`) rather than staying `closing`; when storage refuses the write (OSError)
the run stays `closing` and `finish_close` is retried later with a backoff (`LiveService.tick`).
A failed write of `events.log` is reported to `StorageHealth` and never fails the record: the
ingestion log is the truth (`events.log` only serves cursors across restarts).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import ModelError, OutsideRetentionError
from engine_live.model.patch import Adjustment, compile_patched, parse_patch
from engine_live.model.text import parse_model_text
from engine_live.plan.compiler import Plan
from engine_live.protocol import Event, EventType, RunStatus, encode_event
from engine_live.runtime.artifacts import write_live_artifacts
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.failures import RunFailures, failure_reason
from engine_live.runtime.handle import RunHandle
from engine_live.runtime.records import CloseRecord, CreateRecord, FailRecord, FramesRecord, LogRecord, PatchRecord

log = logging.getLogger("flowtime.live")
CLOSE_RETRY_MAX_S = 30.0  # a close whose artifacts storage refused is retried after 1, 2, 4, ... 30 s
PreparedPatch = tuple[Adjustment, Plan, dict[str, Any]]


class Publisher:
    """Publishes a run's events: to the sink and `events.log`, each encoded once."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.recovering = False  # set while recovery replays logs (metrics count its bins apart)

    def emit(self, h: RunHandle, events: list[Event]) -> None:
        """Publish seq'd events of the run (nothing during a quiet replay)."""
        if h.run.quiet:
            return
        sink, events_log = self.ctx.sink, h.files.events
        for event in events:
            data = encode_event(event)
            sink.publish(h.run_id, event, data, seqd=True)
            if events_log is not None:
                events_log.write(len(data).to_bytes(4, "little") + data)
        if events_log is not None and events:
            try:
                events_log.flush()
            except OSError as exc:  # subscribers have the events; a refill after a restart sees the gap
                level = logging.WARNING if self.ctx.storage.failed("events", exc) else logging.DEBUG
                log.log(level, "run %s: events.log write failed: %s", h.run_id, exc, extra={"run_id": h.run_id})
            else:
                self.ctx.storage.succeeded("events")
        if events:
            self.ctx.metrics.observe_published(events, logged=events_log is not None, recovering=self.recovering)

    def status(self, h: RunHandle, status: RunStatus, reason: str) -> None:
        """A status change that is not a function of the log (not seq'd: it repeats the current seq)."""
        event = h.run.set_status(status, reason, seqd=False)
        self.ctx.sink.publish(h.run_id, event, encode_event(event), seqd=False)

    def observe_latency(self, h: RunHandle, events: list[Event]) -> None:
        """Metrics: now − acceptance for each bin whose run_update was just published.

        Bins at or below lastBin that got no run_update from this record (duplicates) are dropped,
        so `accepted_at` only ever holds bins still waiting for their evaluation.
        """
        waiting = h.work.accepted_at
        if not waiting:
            return
        now = time.monotonic()
        for event in events:
            if event.get("type") == EventType.RUN_UPDATE:
                at = waiting.pop(int(event["binIndex"]), None)
                if at is not None:
                    self.ctx.metrics.observe_ingest_to_publish(max(0.0, now - at))
        last, is_open = h.run.last_bin, h.run.status.is_open
        for bin_index in [b for b in waiting if b <= last or not is_open]:
            del waiting[bin_index]


class Applier:
    """Applies log records to runs (see the module docstring)."""

    def __init__(self, ctx: RuntimeContext, publisher: Publisher, failures: RunFailures) -> None:
        self.ctx, self.publisher, self.failures = ctx, publisher, failures

    def _fault(self, h: RunHandle, record: LogRecord) -> None:
        """The evaluation fault seam (tests): may raise as a failing evaluator would."""
        fault = self.ctx.evaluate_fault
        if fault is not None:
            fault(h.run_id, record)

    async def apply(
        self,
        h: RunHandle,
        record: LogRecord,
        offset: int,
        *,
        prepared: PreparedPatch | None = None,
        accepted: float | None = None,
    ) -> dict[str, Any]:
        """Apply one logged record and publish its events; the answer a live request gets.

        `prepared` is a PATCH compiled when it was accepted; `accepted` (live values only) is when
        the request was accepted: it starts the ingest-to-publish latency of its bins (metrics).
        """
        if isinstance(record, FramesRecord):
            return self.apply_frames(h, record, offset, accepted=accepted)
        if isinstance(record, PatchRecord):
            return self.apply_patch(h, prepared or self.prepare_patch(h, record.body), offset)
        if isinstance(record, CloseRecord):
            return await self.apply_close(h, offset)
        if isinstance(record, FailRecord):  # replay: the run failed here before the restart
            self.failures.fail(h, record.reason, None)
            return {"runId": h.run_id, "status": h.run.status.value, "logOffset": offset}
        assert isinstance(record, CreateRecord)
        if h.run.status is RunStatus.CREATED:  # a snapshot taken before the create was applied
            self.publisher.emit(h, h.run.start())
        return {"runId": h.run_id, "status": h.run.status.value, "logOffset": offset}

    def apply_frames(
        self, h: RunHandle, record: FramesRecord, offset: int, *, accepted: float | None = None
    ) -> dict[str, Any]:
        """Values into the run; the bins they close are evaluated and published."""
        run = h.run
        h.durable.note_source(record.source)
        if accepted is not None and len(record.batch):
            one_bin = record.batch.one_bin
            bins = [one_bin] if one_bin is not None else np.unique(record.batch.bins).tolist()
            for bin_index in bins:
                h.work.accepted_at.setdefault(bin_index, accepted)
        result = run.apply(record.batch)
        self._fault(h, record)
        self.publisher.emit(h, result.events)
        if accepted is not None:
            self.publisher.observe_latency(h, result.events)
            frames = record.batch.frame_count
            self.ctx.metrics.observe_ingest(h.run_id, len(record.batch) if frames is None else frames, result.events)
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "corrected": result.corrected,
            "logOffset": offset,
            "watermark": run.watermark,
            "lastBin": run.last_bin,
        }

    async def apply_close(self, h: RunHandle, offset: int) -> dict[str, Any]:
        """Close the run: the last bins evaluate, the artifacts are written, subscribers are closed."""
        run = h.run
        h.work.closing = True
        events = run.close()
        self._fault(h, CloseRecord())
        self.publisher.emit(h, events)
        self.publisher.observe_latency(h, events)
        if run.status is RunStatus.CLOSING:
            await self.finish_close(h)
        return {"runId": h.run_id, "status": run.status.value, "logOffset": offset}

    async def finish_close(self, h: RunHandle) -> None:
        """A closing run's artifacts, then `completed`. Never leaves the run stuck: artifacts that cannot
        be built fail it; a storage failure keeps it `closing` with a retry scheduled (`close_retry_at`)."""
        run = h.run
        try:
            async with h.files.artifacts_lock:
                if run.status is not RunStatus.CLOSING:
                    return  # completed by an earlier attempt, or deleted meanwhile
                await write_live_artifacts(h, self.ctx.snapshots)
        except OSError as exc:
            self.ctx.storage.failed("artifacts", exc)
            delay = min(CLOSE_RETRY_MAX_S, 2.0**h.work.close_retries)
            h.work.close_retries += 1
            h.work.close_retry_at = self.ctx.clock() + delay
            log.warning(
                "run %s: writing the artifacts failed (%s); the run stays closing, retry in %.0f s",
                h.run_id,
                exc,
                delay,
                extra={"run_id": h.run_id},
            )
            return
        except Exception as exc:
            self.failures.fail(h, failure_reason("artifacts_failed", exc), "artifacts", exc)
            return
        self.ctx.storage.succeeded("artifacts")
        h.work.close_retry_at = None
        self.publisher.emit(h, run.complete())
        self.ctx.sink.close_run(h.run_id, 1000)

    def prepare_patch(self, h: RunHandle, body: Any) -> PreparedPatch:
        """Check and compile a PATCH against the run as it is now (ModelError / 422 when it cannot apply)."""
        run = h.run
        adjustment = parse_patch(body, model_revision=run.model_revision + 1, default_from=run.last_bin + 1)
        if adjustment.from_bin > run.last_bin + 1:
            raise ModelError(f"patch.fromBin: at most the next bin ({run.last_bin + 1})", code="invalid_patch")
        if adjustment.from_bin < run.lowest_correctable:
            raise OutsideRetentionError(f"patch.fromBin {adjustment.from_bin} is older than the retention window")
        if h.model.data is None:
            data = parse_model_text(h.model.text)
            h.model.data = data if isinstance(data, dict) else {}
        new_data, plan = compile_patched(
            h.model.data, adjustment, run.plan.graph, self.ctx.settings.inputs_dir, live=True
        )
        return adjustment, plan, new_data

    def apply_patch(self, h: RunHandle, prepared: PreparedPatch, offset: int) -> dict[str, Any]:
        """Switch the run to the patched plan from the adjustment's bin on, and publish the re-evaluation."""
        adjustment, plan, new_data = prepared
        old = h.run.hooks
        hooks = old.for_plan(plan) if isinstance(old, DerivedHooks) else None
        events = h.run.replace_plan(plan, adjustment.from_bin, hooks)
        self._fault(h, PatchRecord(adjustment.to_wire()))
        h.model.graph, h.model.data = plan.graph, new_data
        h.model.frames = self.ctx.logs.frame_reader(plan.graph, h.run_id)
        h.model.adjustments.append(adjustment.to_wire())
        self.publisher.emit(h, events)
        run = h.run
        return {
            "runId": h.run_id,
            "modelRevision": run.model_revision,
            "revision": run.revision,
            "fromBin": adjustment.from_bin,
            "logOffset": offset,
            "lastBin": run.last_bin,
        }
