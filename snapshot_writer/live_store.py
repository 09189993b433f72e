"""`FileSnapshotStore`: the live runtime's `SnapshotStore` port over run folders on disk.

It puts together the checkpoint cadence and snapshot writer (`snapshot_writer.live_checkpoint`,
`snapshot_writer.live_snapshot`), `events.log` (`snapshot_writer.event_log`), segments of bins
that left memory (`snapshot_writer.segments`) and the canonical artifacts
(`snapshot_writer.artifacts`) for `engine_live.runtime`. Truncating the ingestion log after a
commit is not this package's business: the composition root injects it (`truncate_log`). Every
write goes through the injected `FsOps` (`engine_live.runtime.storage`; tests fail chosen calls).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine_live.plan.run_result import RunResult
from engine_live.runtime.ports import AppendLog, CheckpointPolicy, EventHistory, LoadedSnapshot, OnCommit
from engine_live.runtime.snapshot_types import Segment
from engine_live.runtime.storage import REAL_FS, FsOps
from engine_live.state.live_state import CaptureMirror
from snapshot_writer.artifacts import ArtifactsInfo, write_run_artifacts
from snapshot_writer.event_log import cut_event_log, read_event_log
from snapshot_writer.live_checkpoint import RunCheckpoint
from snapshot_writer.segments import assemble
from snapshot_writer.snapshot_files import CURRENT, EVENTS_LOG, SNAPSHOTS
from snapshot_writer.snapshot_loader import load_current

TruncateLog = Callable[[Path, int], object]  # (live_dir, offset): drop log segments that end at or before offset


class EventLogFile:
    """`events.log` opened for appending: `write` buffers frames, `flush` writes them (one write).

    A flush that fails (ENOSPC, EIO) cuts the file back to its last good end — never a torn frame in
    the middle — drops the frames and raises the OSError. The ingestion log, not events.log, is the
    truth: a history refill that finds the gap starts the history at the snapshot's seq instead
    (clients with an older cursor get a snapshot, never a partial replay)."""

    def __init__(self, path: Path, fs: FsOps = REAL_FS) -> None:
        self.fs = fs
        self._fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._end = os.fstat(self._fd).st_size  # end of the frames written whole
        self._buffer = bytearray()
        self._dirty = False  # bytes past `_end` may be in the file (a failed write whose cut failed)

    def write(self, data: bytes) -> None:
        """Append bytes (buffered)."""
        self._buffer += data

    def flush(self) -> None:
        """Hand the buffer to the OS (OSError when the write failed; the buffer is dropped)."""
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            if self._dirty:
                self._cut()
            self._dirty = True
            self.fs.write_all(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):  # else cut before the next write
                self._cut()
            raise
        self._dirty = False
        self._end += len(data)

    def _cut(self) -> None:
        self.fs.ftruncate(self._fd, self._end)
        self._dirty = False

    def tell(self) -> int:
        """Bytes in the file so far (written and buffered)."""
        return self._end + len(self._buffer)

    def close(self) -> None:
        """Write what is buffered (best effort) and close the file."""
        try:
            with contextlib.suppress(OSError):
                self.flush()
        finally:
            self.fs.close(self._fd)


class FileSnapshotStore:
    """Snapshots, `events.log`, segments and artifacts of `runs/<id>/live` folders."""

    def __init__(self, truncate_log: TruncateLog, *, fs: FsOps = REAL_FS) -> None:
        self.truncate_log, self.fs = truncate_log, fs

    def checkpoint(
        self,
        live_dir: Path,
        policy: CheckpointPolicy,
        *,
        clock: Callable[[], float],
        log: AppendLog | None,
        mirror: CaptureMirror | None,
        on_commit: OnCommit,
        after_step: Callable[[str], None] | None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> RunCheckpoint:
        """The run's checkpoint (its commits truncate the log with the injected `truncate_log`)."""
        return RunCheckpoint(
            live_dir,
            every_bins=policy.every_bins,
            every_seconds=policy.every_seconds,
            clock=clock,
            keep=policy.keep,
            after_step=after_step,
            events_keep=policy.events_keep,
            mirror=mirror,
            on_commit=on_commit,
            truncate_log=self.truncate_log,
            on_error=on_error,
            fs=self.fs,
        )

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Every `runs/<id>/live` folder with a CURRENT pointer or a snapshots folder."""
        return sorted(
            folder for folder in runs_dir.glob("*/live") if (folder / CURRENT).exists() or (folder / SNAPSHOTS).is_dir()
        )

    def load(self, live_dir: Path) -> LoadedSnapshot | None:
        """CURRENT's snapshot (or the newest valid one); its matrix decodes in the background."""
        loaded = load_current(live_dir, defer_matrix=True)
        return None if loaded is None else LoadedSnapshot(*loaded)

    def open_events(self, live_dir: Path) -> EventLogFile:
        """`events.log` opened for appending."""
        return EventLogFile(live_dir / EVENTS_LOG, self.fs)

    def cut_events(self, live_dir: Path, size: int) -> None:
        """Cut `events.log` to `size` bytes."""
        cut_event_log(live_dir / EVENTS_LOG, size, self.fs)

    def read_events(self, live_dir: Path, end: int, *, tail_events: int, tail_bytes: int) -> EventHistory:
        """The newest events below byte `end` that fit the bounds."""
        scan = read_event_log(live_dir / EVENTS_LOG, end, tail_events=tail_events, tail_bytes=tail_bytes)
        return EventHistory(scan.events, scan.end_offset, scan.problem)

    def assemble(
        self,
        live_dir: Path,
        segments: Sequence[Segment],
        names: Sequence[str],
        telemetry_ids: Sequence[str],
        first: int,
        values: NDArray[np.float64],
        present: NDArray[np.bool_],
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Segments + the in-memory columns → the full series."""
        return assemble(live_dir, segments, names, telemetry_ids, first, values, present)

    def write_artifacts(self, result: RunResult, run_folder: Path) -> ArtifactsInfo:
        """The canonical artifacts (SPEC §4) of `result`."""
        return write_run_artifacts(result, run_folder, fs=self.fs)
