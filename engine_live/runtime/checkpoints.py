"""Snapshots of live runs (SPEC §6): when they are due, the copy they are written from, and what
happens once one is committed. The commit order itself is the snapshot store's.

After each applied batch the worker calls `after_batch`: when the run's checkpoint says a snapshot
is due (every `snapshotEveryBins` evaluated bins or `snapshotEverySeconds` on the injected clock)
or one was requested (`request`, POST /snapshots, shutdown), the job is copied right there,
between two records, and the commit runs in a thread while ingestion goes on. Once committed (on
the event loop) the run lets the bins the commit wrote as segments leave memory.

Storage failures: a commit that fails leaves CURRENT as it was (the store's commit order) and is
reported to `StorageHealth` (`snapshot`); the run goes on and the next due check tries again. A
capture whose log roll fails is reported as a `log` failure. POST /snapshots answers 503
`storage_unavailable` when the snapshot or the artifacts could not be written.
"""

from __future__ import annotations

import logging
from typing import Any

from engine_live.errors import OutsideRetentionError, SegmentError, StorageUnavailableError
from engine_live.protocol import encode_event, snapshot_written_event
from engine_live.runtime.artifacts import write_live_artifacts
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.handle import RunHandle
from engine_live.runtime.ports import Checkpoint, CheckpointPolicy
from engine_live.runtime.snapshot_types import SnapshotJob, SnapshotMeta, segments_end
from engine_live.state.live_state import capture

log = logging.getLogger("flowtime.live")


class Checkpoints:
    """Snapshot cadence, capture and commit callbacks for every live run."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    def open(self, h: RunHandle) -> Checkpoint:
        """The run's checkpoint, with the cadence of its options (or the service defaults)."""
        settings = self.ctx.settings
        every_bins = h.options.get("snapshotEveryBins") or settings.snapshot_every_bins
        every_seconds = h.options.get("snapshotEverySeconds") or settings.snapshot_every_seconds
        policy = CheckpointPolicy(
            every_bins=int(every_bins),
            every_seconds=float(every_seconds),
            keep=settings.snapshots_kept,
            events_keep=(settings.hub_history_events, settings.hub_history_bytes),
        )
        return self.ctx.snapshots.checkpoint(
            h.folder,
            policy,
            clock=self.ctx.clock,
            log=h.files.log,
            mirror=h.durable.seed_mirror,
            on_commit=lambda job, meta: self._committed(h, job, meta),
            after_step=self.ctx.snapshot_fault,
            on_error=self._failed,
        )

    def _failed(self, exc: BaseException) -> None:
        """A commit failed (CURRENT untouched; the checkpoint tries again later)."""
        self.ctx.storage.failed("snapshot", exc)

    def job(self, h: RunHandle) -> SnapshotJob:
        """The copy a snapshot is written from; call between two records (on the event loop)."""
        create = h.durable.create.to_dict()
        create["adjustments"] = list(h.model.adjustments)
        events_offset = h.files.events.tell() if h.files.events is not None else 0
        run = h.run
        segment_to = run.immutable_before if run.persisted_before is not None else None
        checkpoint = h.files.checkpoint
        state = checkpoint.mirror.capture(run) if checkpoint is not None else capture(run)
        return SnapshotJob(
            state,
            h.durable.applied_offset,
            events_offset,
            create,
            dict(h.durable.kafka_offsets),
            segment_to=segment_to,
            segments=h.durable.segments,
        )

    async def after_batch(self, h: RunHandle) -> None:
        """Capture and start a commit when one is due or requested (never waits for the commit)."""
        checkpoint = h.files.checkpoint
        if checkpoint is None or not (checkpoint.requests or checkpoint.due(h.run, h.durable.applied_offset)):
            return
        try:
            await checkpoint.run_due(h.run, h.durable.applied_offset, lambda: self.job(h), h.files.log)
        except OSError as exc:  # the log could not roll to a new segment: it stays on the old one
            self.ctx.storage.failed("log", exc)
            log.warning("run %s: snapshot capture failed: %s", h.run_id, exc, extra={"run_id": h.run_id})
        except Exception:
            log.exception("run %s: snapshot capture failed", h.run_id, extra={"run_id": h.run_id})

    def _committed(self, h: RunHandle, job: SnapshotJob, meta: SnapshotMeta) -> None:
        self.ctx.storage.succeeded("snapshot")
        if segments_end(meta.segments) > segments_end(h.durable.segments):  # the bins may leave memory now
            h.durable.segments = meta.segments
            h.run.mark_persisted(segments_end(meta.segments))
        self.ctx.metrics.snapshot_committed(h.run_id, meta.duration_s, meta.size_bytes)
        event = snapshot_written_event(
            h.run_id, h.run.epoch, h.run.seq, job.state.last_bin, f"live/snapshots/{meta.name}", meta.state_hash
        )
        self.ctx.sink.publish(h.run_id, event, encode_event(event), seqd=False)  # repeats the current seq

    async def request(self, h: RunHandle) -> SnapshotMeta:
        """A snapshot now: resolves once it is committed."""
        assert h.files.checkpoint is not None
        future = h.files.checkpoint.request()
        h.work.wake.set()
        return await future

    async def snapshot_with_artifacts(self, h: RunHandle) -> dict[str, Any]:
        """POST /v1/runs/{id}/snapshots: a committed snapshot now, plus the full §4 artifacts."""
        try:
            meta = await self.request(h)
        except OSError as exc:
            raise StorageUnavailableError(f"the snapshot could not be written: {exc}", runId=h.run_id) from None
        manifest_hash = meta.state_hash
        async with h.files.artifacts_lock:
            try:
                info = await write_live_artifacts(h, self.ctx.snapshots)
                manifest_hash = info.manifest_hash
            except (OutsideRetentionError, SegmentError) as exc:  # a segment is unreadable: only the snapshot
                log.warning("run %s: §4 artifacts skipped: %s", h.run_id, exc, extra={"run_id": h.run_id})
            except OSError as exc:
                self.ctx.storage.failed("artifacts", exc)
                raise StorageUnavailableError(
                    f"the snapshot was committed, the artifacts could not be written: {exc}", runId=h.run_id
                ) from None
            else:
                self.ctx.storage.succeeded("artifacts")
        return {
            "runId": h.run_id,
            "seq": meta.seq,
            "lastBin": meta.last_bin,
            "path": f"live/snapshots/{meta.name}",
            "manifestHash": manifest_hash,
        }

    def tick(self, handles: list[RunHandle]) -> None:
        """Wake every run whose time-based snapshot is due (call periodically; reads the clock)."""
        for h in handles:
            checkpoint = h.files.checkpoint
            if checkpoint is not None and checkpoint.due(h.run, h.durable.applied_offset):
                h.work.wake.set()
