"""`FileLogStore`: the live runtime's `LogStore` port over run folders on disk.

It puts together the segmented write-ahead log (`ingestion.log_segments`), the record codec
(`ingestion.log_records`) and the frame reader (`ingestion.frames`) for `engine_live.runtime`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine_live.errors import ConflictError
from engine_live.model.series_defs import ModelGraph
from engine_live.runtime.ports import LogTail
from engine_live.runtime.records import LogRecord
from ingestion import log_records
from ingestion.frames import MAX_BINS_AHEAD, FrameValidator
from ingestion.ingest_log import HEADER
from ingestion.log_segments import SegmentedLog, list_segments, scan_log


class FileLogStore:
    """Ingestion logs of `runs/<id>/live` folders (see the module docstring)."""

    def __init__(self, *, max_bins_ahead: int = MAX_BINS_AHEAD) -> None:
        self.max_bins_ahead = max_bins_ahead

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Every `runs/<id>/live` folder with ingestion-log segments."""
        return sorted(folder for folder in runs_dir.glob("*/live") if folder.is_dir() and list_segments(folder))

    def open_tail(self, live_dir: Path) -> SegmentedLog:
        """The appender on the newest segment."""
        return SegmentedLog.open_tail(live_dir)

    def create(self, live_dir: Path) -> SegmentedLog:
        """A new run's folder (`runs/<id>/live`, made here: a second create of the id gets ConflictError)."""
        try:
            live_dir.parent.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ConflictError(f"run '{live_dir.parent.name}' already exists", runId=live_dir.parent.name) from None
        live_dir.mkdir()
        return SegmentedLog(live_dir, 0)

    def discard(self, live_dir: Path) -> None:
        """Remove the run folder of a create that failed (best effort: what is left holds nothing acked)."""
        shutil.rmtree(live_dir.parent, ignore_errors=True)

    def open_at(self, live_dir: Path, base: int) -> SegmentedLog:
        """The appender on the segment starting at `base`."""
        return SegmentedLog(live_dir, base)

    def scan(self, live_dir: Path, from_offset: int) -> LogTail:
        """The records from `from_offset` on, with their end offsets."""
        scan = scan_log(live_dir, from_offset)
        records = [(offset, offset + HEADER.size + len(payload), payload) for offset, payload in scan.records]
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

    def frame_reader(self, graph: ModelGraph, run_id: str) -> FrameValidator:
        """A frame validator for the model."""
        return FrameValidator(graph, run_id, max_bins_ahead=self.max_bins_ahead)
