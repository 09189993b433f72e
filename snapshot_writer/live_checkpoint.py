"""When a live run snapshots, and how that stays off the ingestion path (SPEC §6 Snapshots).

`RunCheckpoint` belongs to one run's worker. After each applied batch the worker calls
`checkpoint.run_due(...)`: when a snapshot is due (`every_bins` evaluated bins or `every_seconds`
on the injected clock since the last capture, and the log moved) or was requested, it

1. builds the job on the event loop, between two log records (`mirror.capture` copies the counters
   and only the columns written since the previous capture; nothing else can interleave, so the
   copy is consistent; the commit thread rebuilds the full matrix from its mirror, `CaptureMirror`);
2. rolls the ingestion log to a new segment at the current end (no appends are in flight at that
   point), so the snapshot's log offset is a segment base and truncation only deletes files;
3. starts the commit (`SnapshotWriter.commit`, all file work in a thread) as a background task
   and returns: the worker goes back to ingesting while the snapshot is written. The job carries
   the run's immutable bins not yet in a segment (`segment_to`, the committed `segments`); the
   commit writes them as a segment, and `on_commit` (on the event loop) is where the service lets
   the run drop those columns (`LiveRun.mark_persisted`).

Time-based snapshots are staggered per run: the first one after the run starts (or is recovered) is
due `every_seconds` + phase after it, the phase in [0, `every_seconds`) fixed by the run id (CRC-32);
later ones `every_seconds` after the previous capture. Runs created or recovered together therefore
do not all snapshot in the same second (100 runs' commits at once stalled every run's log writes
for ~1 s, `bench/many_runs.py`), and no run snapshots sooner than it did before.

Commits are serialised by the writer's lock (FIFO). A periodic snapshot is skipped while another
commit is in flight; a requested one (`request()`, e.g. POST /snapshots) always gets its own
capture and resolves with the committed `SnapshotMeta`. A failed commit (a full disk: CURRENT is
untouched) is logged and reported to `on_error`, its requesters get the error, and the next due
check tries again (the log is only truncated by a committed snapshot, so a failure never loses
data).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from pathlib import Path

from engine_live.runtime.ports import AppendLog
from engine_live.runtime.snapshot_types import SnapshotJob, SnapshotMeta
from engine_live.runtime.storage import REAL_FS, FsOps
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import CaptureMirror
from snapshot_writer.live_snapshot import SnapshotWriter

log = logging.getLogger("flowtime.snapshots")
OnCommit = Callable[[SnapshotJob, SnapshotMeta], None]


class RunCheckpoint:
    """One live run's snapshot cadence and background commits (see the module docstring)."""

    def __init__(
        self,
        live_dir: Path,
        *,
        every_bins: int,
        every_seconds: float,
        clock: Callable[[], float],
        keep: int = 2,
        on_commit: OnCommit | None = None,
        after_step: Callable[[str], None] | None = None,
        events_keep: tuple[int, int] | None = None,
        mirror: CaptureMirror | None = None,
        truncate_log: Callable[[Path, int], object] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        fs: FsOps = REAL_FS,
    ) -> None:
        self.writer = SnapshotWriter(
            live_dir,
            keep=keep,
            after_step=after_step,
            clock=clock,
            events_keep=events_keep,
            truncate_log=truncate_log,
            fs=fs,
        )
        self.every_bins, self.every_seconds, self.clock = every_bins, every_seconds, clock
        # the first time-based snapshot waits this much longer: a fraction of `every_seconds` fixed by the run id
        self.phase = zlib.crc32(live_dir.parent.name.encode()) / 2**32 * every_seconds
        self._wait = every_seconds + self.phase  # until the next time-based snapshot, from `last_time`
        self.on_commit, self.on_error = on_commit, on_error
        self.last_offset, self.last_bin, self.last_time = -1, -1, clock()
        self.requests: list[asyncio.Future[SnapshotMeta]] = []
        self.task: asyncio.Task[None] | None = None
        self._capturing: asyncio.Future[None] | None = None  # set while a capture rolls the log
        self.last: SnapshotMeta | None = None
        self.failures = 0
        self.mirror = mirror or CaptureMirror()  # incremental capture: make_job may use `mirror.capture(run)`

    def mark(self, log_offset: int, last_bin: int) -> None:
        """Record a recovered snapshot (or a capture) as the cadence's starting point; the next
        time-based snapshot is staggered by the run's phase (a capture then resets it: `run_due`)."""
        self.last_offset, self.last_bin, self.last_time = log_offset, last_bin, self.clock()
        self._wait = self.every_seconds + self.phase

    def make_due(self) -> None:
        """The next `due` check after the log moved says yes (e.g. after a long recovery replay)."""
        self.last_bin = -(1 << 62)

    def due(self, run: LiveRun, applied_offset: int) -> bool:
        """True when the run is open, the log moved since the last capture, and since then `every_bins`
        bins were evaluated or `every_seconds` passed (the first time: plus the run's phase)."""
        if not run.status.is_open or applied_offset == self.last_offset:
            return False
        return run.last_bin - self.last_bin >= self.every_bins or self.clock() - self.last_time >= self._wait

    @property
    def busy(self) -> bool:
        """True while a commit task is running."""
        return self.task is not None and not self.task.done()

    def request(self) -> asyncio.Future[SnapshotMeta]:
        """Ask for a snapshot at the next `run_due`; the future resolves with its committed `SnapshotMeta`."""
        fut: asyncio.Future[SnapshotMeta] = asyncio.get_running_loop().create_future()
        self.requests.append(fut)
        return fut

    async def run_due(
        self, run: LiveRun, applied_offset: int, make_job: Callable[[], SnapshotJob], log_: AppendLog | None
    ) -> None:
        """Capture + roll + start the commit when due or requested; never waits for the commit."""
        requests, self.requests = self.requests, []
        if not requests and (self.busy or not self.due(run, applied_offset)):
            return
        capturing = self._capturing = asyncio.get_running_loop().create_future()
        try:
            job = make_job()
            self.mark(job.log_offset, job.state.last_bin)
            self._wait = self.every_seconds  # staggered once: the captures keep the runs apart
            if log_ is not None:
                await log_.roll()
        except asyncio.CancelledError:
            self.mirror.invalidate()
            raise
        except Exception as exc:
            self.mirror.invalidate()  # the job (maybe an incremental capture) is dropped: next capture is full
            for fut in requests:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        else:
            self.task = asyncio.create_task(self._commit(job, requests), name=f"snapshot-{job.state.run_id}")
        finally:
            self._capturing = None
            capturing.set_result(None)

    async def _commit(self, job: SnapshotJob, requests: list[asyncio.Future[SnapshotMeta]]) -> None:
        try:
            meta = await self.writer.commit(job)
        except asyncio.CancelledError:
            self.mirror.invalidate()
            raise
        except Exception as exc:
            self.mirror.invalidate()  # the mirror may not have taken this capture: the next one is full
            self.failures += 1
            self.last_offset = -1  # try again after the next batch
            run_id = job.state.run_id
            if isinstance(exc, OSError):  # storage: CURRENT untouched, tried again later
                log.warning(
                    "run %s: snapshot at seq %d failed: %s", run_id, job.state.seq, exc, extra={"run_id": run_id}
                )
            else:
                log.exception("run %s: snapshot at seq %d failed", run_id, job.state.seq, extra={"run_id": run_id})
            if self.on_error is not None:
                self.on_error(exc)
            for fut in requests:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.last = meta
        if self.on_commit is not None:
            self.on_commit(job, meta)
        for fut in requests:
            if not fut.done():
                fut.set_result(meta)

    async def drain(self) -> None:
        """Wait for a capture under way and the commit in flight (shutdown, tests)."""
        while self._capturing is not None or self.busy:
            if self._capturing is not None:
                await asyncio.shield(self._capturing)
            if self.task is not None:
                await asyncio.gather(self.task, return_exceptions=True)


__all__ = ["RunCheckpoint"]
