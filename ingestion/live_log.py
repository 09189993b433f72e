"""`FileLogStore`: the live runtime's `LogStore` port over run folders on disk.

It puts together the segmented write-ahead log (`ingestion.log_segments`), the record codec
(`ingestion.log_records`) and the frame reader (`ingestion.frames`) for `engine_live.runtime`, and
owns the life of a run folder: created with the run's log, removed as a whole (`remove`: renamed
to a tombstone `runs/.deleted/<id>.<hex>` first, so a failure midway leaves the run either fully
there or fully gone; tombstones a crash left are removed by `clean` at start). Every write goes
through the injected `FsOps` (`engine_live.runtime.storage`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from engine_live.errors import ConflictError
from engine_live.model.series_defs import ModelGraph
from engine_live.runtime.ports import LogTail
from engine_live.runtime.records import LogRecord
from engine_live.runtime.storage import REAL_FS, FsOps
from ingestion import log_records
from ingestion.columns import IngestReader
from ingestion.frames import MAX_BINS_AHEAD
from ingestion.ingest_log import HEADER
from ingestion.log_segments import SegmentedLog, list_segments, scan_log

TOMBSTONES = ".deleted"  # runs/.deleted/<id>.<hex>: run folders on their way out
PROBE_BYTES = 4096
log = logging.getLogger("flowtime.live")


class FileLogStore:
    """Ingestion logs of `runs/<id>/live` folders (see the module docstring)."""

    def __init__(self, *, max_bins_ahead: int = MAX_BINS_AHEAD, fs: FsOps = REAL_FS) -> None:
        self.max_bins_ahead = max_bins_ahead
        self.fs = fs
        self._valid_ends: dict[Path, int] = {}  # a scan's end where a torn tail could not be cut yet

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Every `runs/<id>/live` folder with ingestion-log segments."""
        return sorted(folder for folder in runs_dir.glob("*/live") if folder.is_dir() and list_segments(folder))

    def clean(self, runs_dir: Path) -> None:
        """Remove the tombstones of deletes a crash interrupted (best effort); make sure the tombstone
        folder exists, so that a delete on a full disk need not create it."""
        trash = runs_dir / TOMBSTONES
        for tomb in sorted(trash.iterdir()) if trash.is_dir() else ():
            try:
                self.fs.rmtree(tomb)
            except OSError as exc:
                log.warning("could not remove the deleted run folder %s yet: %s", tomb, exc)
        with contextlib.suppress(OSError):
            self.fs.mkdir(trash, exist_ok=True)

    def open_tail(self, live_dir: Path) -> SegmentedLog:
        """The appender on the newest segment."""
        return SegmentedLog.open_tail(live_dir, self.fs)

    def create(self, live_dir: Path) -> SegmentedLog:
        """A new run's folder (`runs/<id>/live`, made here: a second create of the id gets ConflictError)."""
        try:
            self.fs.mkdir(live_dir.parent, parents=True, exist_ok=False)
        except FileExistsError:
            raise ConflictError(f"run '{live_dir.parent.name}' already exists", runId=live_dir.parent.name) from None
        self.fs.mkdir(live_dir)
        return SegmentedLog(live_dir, 0, self.fs)

    def discard(self, live_dir: Path) -> None:
        """Remove the run folder of a create that failed (best effort: what is left holds nothing acked)."""
        with contextlib.suppress(OSError):
            self.remove(live_dir)

    def remove(self, live_dir: Path) -> None:
        """Remove the run folder `live_dir.parent` as a whole (OSError when it stays, untouched).

        The folder is renamed to a tombstone first — one atomic step after which the run is gone —
        then the tombstone is deleted; one that cannot be deleted now is removed by `clean`."""
        folder = live_dir.parent
        if not folder.exists():
            return
        trash = folder.parent / TOMBSTONES
        self.fs.mkdir(trash, exist_ok=True)
        tomb = trash / f"{folder.name}.{secrets.token_hex(4)}"
        self.fs.rename(folder, tomb)
        try:
            self.fs.fsync_dir(folder.parent)
            self.fs.rmtree(tomb)
        except OSError as exc:
            log.warning("run folder %s renamed to %s, not yet removed: %s", folder, tomb, exc)

    def probe(self, runs_dir: Path) -> None:
        """Write, fsync and remove a small file under `runs_dir` (OSError when storage takes no writes)."""
        path = runs_dir / f".probe-{secrets.token_hex(4)}"
        fd = self.fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self.fs.write_all(fd, bytes(PROBE_BYTES))
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
            with contextlib.suppress(OSError):
                self.fs.unlink(path, missing_ok=True)

    def open_at(self, live_dir: Path, base: int) -> SegmentedLog:
        """The appender on the segment starting at `base` (a torn tail the scan left is cut first)."""
        return SegmentedLog(live_dir, base, self.fs, valid_end=self._valid_ends.pop(live_dir, None))

    def scan(self, live_dir: Path, from_offset: int) -> LogTail:
        """The records from `from_offset` on, with their end offsets."""
        scan = scan_log(live_dir, from_offset, fs=self.fs)
        records = [(offset, offset + HEADER.size + len(payload), payload) for offset, payload in scan.records]
        self._valid_ends[live_dir] = scan.end_offset
        return LogTail(records, scan.append_base, scan.torn_tail, list(scan.lost))

    def record_end(self, offset: int, payload: bytes) -> int:
        """The offset just past a record."""
        return offset + HEADER.size + len(payload)

    def encode(self, record: LogRecord) -> bytes:
        """The record's bytes (`ingestion.log_records`)."""
        return log_records.encode(record)

    def decode(self, payload: bytes) -> LogRecord:
        """A stored record (`ingestion.log_records`)."""
        return log_records.decode(payload)

    def frame_reader(self, graph: ModelGraph, run_id: str) -> IngestReader:
        """A reader of ingest bodies (frames, column lines, Arrow) validating them against the model."""
        return IngestReader(graph, run_id, max_bins_ahead=self.max_bins_ahead)
