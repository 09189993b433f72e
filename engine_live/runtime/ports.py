"""The ports of the live runtime: what it needs from the log, the snapshot store, the hub and metrics.

The runtime (`engine_live.runtime`) never imports `ingestion`, `snapshot_writer`, `stream_hub` or
`compat_api`; the composition root (`compat_api.compose`) hands it objects that satisfy these
Protocols. `engine_live.runtime.memory` has an in-memory version of each for unit tests.

- `LogStore` (implemented in `ingestion.live_log`): the ingestion log of a run folder — the
  segmented write-ahead log, the record codec and the frame reader.
- `SnapshotStore` (`snapshot_writer.live_store`): snapshots and their checkpoint cadence,
  `events.log`, segments of bins that left memory, and the canonical artifacts.
- `EventSink` (`stream_hub.hub.Hub`): where encoded events go to subscribers.
- `RuntimeMetrics` (`compat_api.metrics.Metrics`): the few observations made on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from engine_live.model.series_defs import ModelGraph
from engine_live.plan.run_result import RunResult
from engine_live.protocol import Event
from engine_live.runtime.records import LogRecord
from engine_live.runtime.snapshot_types import Segment, SnapshotJob, SnapshotMeta
from engine_live.state.frame_batch import FrameBatch
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import CaptureMirror, RunState

OnCommit = Callable[[SnapshotJob, SnapshotMeta], None]


# -- the ingestion log ---------------------------------------------------------------------------
class AppendLog(Protocol):
    """The appender of one run's log: group-committed, durable when `append` returns."""

    async def append(self, payload: bytes) -> int:
        """Write one record; its absolute offset once it is durable (OSError when the write failed)."""

    async def roll(self) -> int:
        """Start a new segment at the current end (between two records); returns its base."""

    async def close(self) -> None:
        """Wait for queued appends and close the file."""


@dataclass
class LogTail:
    """The records of a log from an offset on, as recovery reads them."""

    records: list[tuple[int, int, bytes]] = field(default_factory=list)  # (offset, end offset, payload)
    append_base: int = 0  # base of the segment appends continue in
    torn_tail: str | None = None  # an unacknowledged torn tail that was cut
    lost: list[str] = field(default_factory=list)  # acknowledged bytes that cannot be read


class FrameReader(Protocol):
    """Parses and validates an ingest body against one run's model (rebuilt after a PATCH)."""

    def read(self, body: bytes, *, last_bin: int, max_frames: int, media_type: str | None = None) -> FrameBatch:
        """All-or-nothing: the body's values as columns, or an IngestError / TooLargeError naming the problem.
        `media_type` (the request's Content-Type) picks the body's form; None: JSON or NDJSON frames."""


class LogStore(Protocol):
    """Run folders' ingestion logs, their record codec and the frame reader."""

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Every `runs/<id>/live` folder holding an ingestion log."""

    def clean(self, runs_dir: Path) -> None:
        """At start: remove what deletes a crash interrupted left behind (tombstones)."""

    def remove(self, live_dir: Path) -> None:
        """Remove the run folder `live_dir.parent` as a whole; OSError when it stays (then untouched)."""

    def probe(self, runs_dir: Path) -> None:
        """Write, fsync and remove a small file under `runs_dir`; OSError while storage takes no writes."""

    def open_tail(self, live_dir: Path) -> AppendLog:
        """The appender on the newest segment of `live_dir` (a new log when there is none)."""

    def create(self, live_dir: Path) -> AppendLog:
        """A new run's folder and log; ConflictError when the folder exists already."""

    def discard(self, live_dir: Path) -> None:
        """Remove a run folder whose create never became durable (nothing in it was acknowledged)."""

    def open_at(self, live_dir: Path, base: int) -> AppendLog:
        """The appender on the segment starting at `base` (after recovery read the log)."""

    def scan(self, live_dir: Path, from_offset: int) -> LogTail:
        """Read the records from `from_offset` (a torn tail of the newest segment is cut)."""

    def record_end(self, offset: int, payload: bytes) -> int:
        """The offset just past the record `payload` written at `offset`."""

    def encode(self, record: LogRecord) -> bytes:
        """One log record as the bytes the log stores."""

    def decode(self, payload: bytes) -> LogRecord:
        """Stored bytes back into a record (ValueError when they are not one)."""

    def frame_reader(self, graph: ModelGraph, run_id: str) -> FrameReader:
        """A reader validating frames against `graph`."""


# -- snapshots, events.log, segments and artifacts -------------------------------------------------
class EventLogWriter(Protocol):
    """`live/events.log` of a run, appended to as events are published."""

    def write(self, data: bytes) -> None:
        """Append one encoded event (buffered until `flush`)."""

    def flush(self) -> None:
        """Hand what was written to the OS (OSError when that failed: those events are not in the file)."""

    def tell(self) -> int:
        """Bytes written so far (a snapshot records it)."""

    def close(self) -> None:
        """Close the file."""


@dataclass
class EventHistory:
    """The tail of `events.log` that a recovery hands back to the hub."""

    events: list[tuple[Event, bytes]]
    end_offset: int
    problem: str | None


class Checkpoint(Protocol):
    """When a run snapshots, and the commit in the background (`snapshot_writer.live_checkpoint`)."""

    requests: list[asyncio.Future[SnapshotMeta]]
    mirror: CaptureMirror

    def mark(self, log_offset: int, last_bin: int) -> None:
        """The run's state at (log_offset, last_bin) is already in a snapshot."""

    def make_due(self) -> None:
        """Snapshot at the next chance."""

    def due(self, run: LiveRun, applied_offset: int) -> bool:
        """Whether a periodic snapshot is due now."""

    def request(self) -> asyncio.Future[SnapshotMeta]:
        """Ask for a snapshot; the future resolves with it once committed."""

    async def run_due(
        self, run: LiveRun, applied_offset: int, make_job: Callable[[], SnapshotJob], log: AppendLog | None
    ) -> None:
        """Capture, roll the log and start the commit when due or requested."""

    async def drain(self) -> None:
        """Wait for the capture and commit under way."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often a run snapshots and how much is kept."""

    every_bins: int
    every_seconds: float
    keep: int
    events_keep: tuple[int, int]  # (events, bytes) of events.log a history refill may read


class ArtifactsWritten(Protocol):
    """What writing a run's artifacts tells: the hash of its manifest."""

    @property
    def manifest_hash(self) -> str:
        """sha256 of `manifest.json`'s bytes."""


@dataclass(frozen=True)
class LoadedSnapshot:
    """A snapshot read back at recovery: the run's state and its metadata."""

    state: RunState
    meta: SnapshotMeta


class SnapshotStore(Protocol):
    """Snapshots, `events.log`, segments and canonical artifacts of live runs."""

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
    ) -> Checkpoint:
        """The checkpoint of one run (commits truncate the log through the store's injected truncation;
        a commit that fails calls `on_error`, CURRENT untouched)."""

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Every `runs/<id>/live` folder holding a CURRENT pointer or snapshots."""

    def load(self, live_dir: Path) -> LoadedSnapshot | None:
        """CURRENT's snapshot, or the newest valid one; None without one (the matrix decodes in the background)."""

    def open_events(self, live_dir: Path) -> EventLogWriter:
        """`events.log` opened for appending."""

    def cut_events(self, live_dir: Path, size: int) -> None:
        """Cut `events.log` to `size` bytes (0: start it over)."""

    def read_events(self, live_dir: Path, end: int, *, tail_events: int, tail_bytes: int) -> EventHistory:
        """The newest events of `events.log` below byte `end` that fit the bounds."""

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
        """The full series of bins 0.. from the segments plus the columns still in memory."""

    def write_artifacts(self, result: RunResult, run_folder: Path) -> ArtifactsWritten:
        """Write the canonical artifacts (SPEC §4) of `result` into `run_folder`."""


# -- the hub and metrics ----------------------------------------------------------------------------
class EventSink(Protocol):
    """Where published events go (the stream hub): encoded once, fanned out by the sink."""

    def publish(self, run_id: str, event: Event, data: bytes, *, seqd: bool = True) -> object:
        """Hand one event and its encoded bytes to subscribers (and its history when `seqd`)."""

    def ensure_run(self, run_id: str, epoch: str, seq: int) -> None:
        """Make the run known at (epoch, seq) without an event."""

    def reset_epoch(self, run_id: str, epoch: str, seq: int) -> None:
        """Start the run's history over at (epoch, seq)."""

    def close_run(self, run_id: str, code: int) -> None:
        """The run ended: close its subscribers with `code` once they drained."""

    def drop_run(self, run_id: str, code: int, reason: str) -> None:
        """Forget the run: close its subscribers at once."""


class RuntimeMetrics(Protocol):
    """Observations the runtime makes as it works (everything else is read at scrape time)."""

    def observe_ingest(self, run_id: str, frames: int, events: Sequence[Event]) -> None:
        """A request's frames were applied and these events published."""

    def observe_ingest_to_publish(self, seconds: float) -> None:
        """A bin's run_update went out `seconds` after its oldest request was accepted."""

    def observe_published(self, events: Sequence[Event], *, logged: bool, recovering: bool) -> None:
        """Seq'd events were published (and written to `events.log` when `logged`), maybe by a recovery."""

    def snapshot_committed(self, run_id: str, seconds: float, size_bytes: int) -> None:
        """A snapshot of the run was committed."""


class NullSink:
    """An `EventSink` that drops everything (a service without a hub)."""

    def publish(self, run_id: str, event: Event, data: bytes, *, seqd: bool = True) -> None:
        """Drop the event."""

    def ensure_run(self, run_id: str, epoch: str, seq: int) -> None:
        """Nothing to make known."""

    def reset_epoch(self, run_id: str, epoch: str, seq: int) -> None:
        """No history to reset."""

    def close_run(self, run_id: str, code: int) -> None:
        """No subscribers to close."""

    def drop_run(self, run_id: str, code: int, reason: str) -> None:
        """No subscribers to drop."""


class NullMetrics:
    """`RuntimeMetrics` that records nothing."""

    def observe_ingest(self, run_id: str, frames: int, events: Sequence[Event]) -> None:
        """Nothing recorded."""

    def observe_ingest_to_publish(self, seconds: float) -> None:
        """Nothing recorded."""

    def observe_published(self, events: Sequence[Event], *, logged: bool, recovering: bool) -> None:
        """Nothing recorded."""

    def snapshot_committed(self, run_id: str, seconds: float, size_bytes: int) -> None:
        """Nothing recorded."""
