"""Snapshots of live runs (SPEC §6): when they are due, the copy they are written from, the commit
callback, and POST /v1/runs/{id}/snapshots. The commit order itself is `snapshot_writer`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from compat_api.live_artifacts import write_live_artifacts
from compat_api.live_handle import EventPublisher, RunHandle
from compat_api.settings import Settings
from engine_live.errors import OutsideRetentionError
from engine_live.protocol import encode_event, snapshot_written_event
from engine_live.state.live_state import capture
from snapshot_writer.live_checkpoint import RunCheckpoint
from snapshot_writer.live_snapshot import SnapshotJob, SnapshotMeta
from snapshot_writer.segments import SegmentError, segments_end

log = logging.getLogger("flowtime.live")


class LiveSnapshots:
    settings: Settings
    runs: dict[str, RunHandle]
    hub: EventPublisher
    metrics: Any
    clock: Callable[[], float]
    snapshot_fault: Callable[[str], None] | None

    def ensure_open(self, run_id: str) -> RunHandle:  # provided by LiveReads
        raise NotImplementedError

    def make_checkpoint(self, h: RunHandle) -> RunCheckpoint:
        every_bins = h.options.get("snapshotEveryBins") or self.settings.snapshot_every_bins
        every_s = h.options.get("snapshotEverySeconds") or self.settings.snapshot_every_seconds
        return RunCheckpoint(
            h.folder,
            every_bins=int(every_bins),
            every_seconds=float(every_s),
            clock=self.clock,
            keep=self.settings.snapshots_kept,
            after_step=self.snapshot_fault,
            events_keep=(self.settings.hub_history_events, self.settings.hub_history_bytes),
            mirror=h.seed_mirror,
            on_commit=lambda job, meta: self._snapshot_committed(h, job, meta),
        )

    def snapshot_job(self, h: RunHandle) -> SnapshotJob:
        """The copy a snapshot is written from; call between two records (on the event loop)."""
        create = dict(h.create_record or {})
        create["adjustments"] = list(h.adjustments)
        events_offset = h.events_fh.tell() if h.events_fh is not None else 0
        run = h.run
        segment_to = run.immutable_before if run.persisted_before is not None else None
        state = h.checkpoint.mirror.capture(run) if h.checkpoint is not None else capture(run)
        return SnapshotJob(
            state,
            h.applied_offset,
            events_offset,
            create,
            dict(h.kafka_offsets),
            segment_to=segment_to,
            segments=h.segments,
        )

    async def _checkpoint(self, h: RunHandle) -> None:
        cp = h.checkpoint
        if cp is None or not (cp.requests or cp.due(h.run, h.applied_offset)):
            return
        try:
            await cp.run_due(h.run, h.applied_offset, lambda: self.snapshot_job(h), h.log)
        except Exception:
            log.exception("run %s: snapshot capture failed", h.run_id, extra={"run_id": h.run_id})

    def _snapshot_committed(self, h: RunHandle, job: SnapshotJob, meta: SnapshotMeta) -> None:
        if segments_end(meta.segments) > segments_end(h.segments):  # on the loop: the bins may leave memory now
            h.segments = meta.segments
            h.run.mark_persisted(segments_end(meta.segments))
        if self.metrics is not None and hasattr(self.metrics, "snapshot_committed"):
            self.metrics.snapshot_committed(h.run_id, meta.duration_s, meta.size_bytes)
        ev = snapshot_written_event(
            h.run_id, h.run.epoch, h.run.seq, job.state.last_bin, f"live/snapshots/{meta.name}", meta.state_hash
        )
        self.hub.publish(h.run_id, ev, encode_event(ev), seqd=False)  # repeats the current seq

    async def request_snapshot(self, h: RunHandle) -> SnapshotMeta:
        assert h.checkpoint is not None
        fut = h.checkpoint.request()
        h.wake.set()
        return await fut

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """POST /v1/runs/{id}/snapshots: a committed snapshot now, plus the full §4 artifacts."""
        h = self.ensure_open(run_id)
        meta = await self.request_snapshot(h)
        manifest_hash = meta.state_hash
        async with h.artifacts_lock:
            try:
                info = await write_live_artifacts(h)
                manifest_hash = getattr(info, "manifest_hash", manifest_hash)
            except (OutsideRetentionError, SegmentError) as exc:  # a segment is unreadable: only the snapshot
                log.warning("run %s: §4 artifacts skipped: %s", run_id, exc, extra={"run_id": run_id})
        return {
            "runId": run_id,
            "seq": meta.seq,
            "lastBin": meta.last_bin,
            "path": f"live/snapshots/{meta.name}",
            "manifestHash": manifest_hash,
        }

    def snapshot_tick(self) -> None:
        """Wake every run whose time-based snapshot is due (call periodically; reads the clock)."""
        for h in self.runs.values():
            if h.checkpoint is not None and h.checkpoint.due(h.run, h.applied_offset):
                h.wake.set()
