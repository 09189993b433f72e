"""`FileSnapshotStore`: the live runtime's `SnapshotStore` port over run folders on disk.

It puts together the checkpoint cadence and snapshot writer (`snapshot_writer.live_checkpoint`,
`snapshot_writer.live_snapshot`), `events.log` (`snapshot_writer.event_log`), segments of bins
that left memory (`snapshot_writer.segments`) and the canonical artifacts
(`snapshot_writer.artifacts`) for `engine_live.runtime`. Truncating the ingestion log after a
commit is not this package's business: the composition root injects it (`truncate_log`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine_live.plan.run_result import RunResult
from engine_live.runtime.ports import AppendLog, CheckpointPolicy, EventHistory, LoadedSnapshot, OnCommit
from engine_live.runtime.snapshot_types import Segment
from engine_live.state.live_state import CaptureMirror
from snapshot_writer.artifacts import ArtifactsInfo, write_run_artifacts
from snapshot_writer.event_log import cut_event_log, read_event_log
from snapshot_writer.live_checkpoint import RunCheckpoint
from snapshot_writer.segments import assemble
from snapshot_writer.snapshot_files import CURRENT, EVENTS_LOG, SNAPSHOTS
from snapshot_writer.snapshot_loader import load_current

TruncateLog = Callable[[Path, int], object]  # (live_dir, offset): drop log segments that end at or before offset


class EventLogFile:
    """`events.log` opened for appending."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the run

    def write(self, data: bytes) -> None:
        """Append bytes (buffered)."""
        self._file.write(data)

    def flush(self) -> None:
        """Hand the buffer to the OS."""
        self._file.flush()

    def tell(self) -> int:
        """Bytes in the file so far."""
        return self._file.tell()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class FileSnapshotStore:
    """Snapshots, `events.log`, segments and artifacts of `runs/<id>/live` folders."""

    def __init__(self, truncate_log: TruncateLog) -> None:
        self.truncate_log = truncate_log

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
        return EventLogFile(live_dir / EVENTS_LOG)

    def cut_events(self, live_dir: Path, size: int) -> None:
        """Cut `events.log` to `size` bytes."""
        cut_event_log(live_dir / EVENTS_LOG, size)

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
        return write_run_artifacts(result, run_folder)
