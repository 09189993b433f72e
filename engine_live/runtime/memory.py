"""In-memory versions of the runtime's ports, for unit tests of `engine_live.runtime`.

They keep everything in dicts (a "crash" is a new `LiveService` on the same stores) and are
deliberately simple: records are kept as objects (no byte format), frames arrive as a JSON list
of `[bin, series, value]`, a snapshot is a full state kept in memory, segments are never written
(the run keeps every bin), and artifacts are the `RunResult`s handed over. `RecordingSink` keeps
every published event. None of this touches a disk; the real adapters live in `ingestion`,
`snapshot_writer` and `stream_hub`. Storage faults are set per call: `MemoryLog.fail_next`,
`MemoryLogStore.fail_next_create` / `fail_remove` / `fail_probe`, `MemorySnapshotStore.fail_next_commit`
/ `fail_artifacts`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from engine_live.errors import ConflictError, IngestError, TooLargeError
from engine_live.model.series_defs import ModelGraph
from engine_live.plan.run_result import RunResult
from engine_live.protocol import Event
from engine_live.runtime.ports import (
    AppendLog,
    CheckpointPolicy,
    EventHistory,
    LoadedSnapshot,
    LogTail,
    OnCommit,
)
from engine_live.runtime.records import LogRecord
from engine_live.runtime.snapshot_types import Segment, SnapshotJob, SnapshotMeta
from engine_live.state.frame_batch import FrameBatch
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import CaptureMirror, RunState


class MemoryLog:
    """An append-only list of (offset, payload); offsets count records, each one unit wide."""

    def __init__(self, records: list[tuple[int, bytes]]) -> None:
        self.records = records
        self.fail_next: OSError | None = None  # tests: the next append fails with this
        self.gate: asyncio.Event | None = None  # tests: a slow disk, appends wait until it is set
        self.entered = asyncio.Event()  # set when an append waits at the gate

    async def append(self, payload: bytes) -> int:
        """Keep the payload; its offset."""
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        offset = len(self.records)
        self.records.append((offset, payload))
        return offset

    async def roll(self) -> int:
        """Nothing to roll: the end offset."""
        return len(self.records)

    async def close(self) -> None:
        """Nothing to close."""


class MemoryFrameReader:
    """Reads a JSON list of `[bin, series, value]`; every series must be telemetry-fed."""

    def __init__(self, graph: ModelGraph) -> None:
        self.telemetry = frozenset(graph.telemetry_ids())

    def read(self, body: bytes, *, last_bin: int, max_frames: int, media_type: str | None = None) -> FrameBatch:
        """The triples as a batch (IngestError for an unknown series)."""
        triples = [(int(b), str(s), float(v)) for b, s, v in orjson.loads(body)]
        if len(triples) > max_frames:
            raise TooLargeError(f"{len(triples)} frames exceed the limit of {max_frames}")
        for i, (_, series, _) in enumerate(triples):
            if series not in self.telemetry:
                raise IngestError(f"frame {i}: series '{series}' is not telemetry-fed", code="not_telemetry")
        return FrameBatch.from_frames(triples)


class MemoryLogStore:
    """`LogStore` in memory: one record list per run folder; records kept as objects."""

    def __init__(self) -> None:
        self.logs: dict[Path, list[tuple[int, bytes]]] = {}
        self.appenders: dict[Path, MemoryLog] = {}
        self._records: dict[bytes, LogRecord] = {}
        self.fail_next_create: OSError | None = None  # tests: the create record of the next run fails
        self.fail_remove: OSError | None = None  # tests: removing run folders fails
        self.fail_probe: OSError | None = None  # tests: probe writes fail
        self._keys = itertools.count()

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Folders with a log, under `runs_dir`."""
        return sorted(folder for folder, records in self.logs.items() if records and folder.parent.parent == runs_dir)

    def clean(self, runs_dir: Path) -> None:
        """No tombstones in memory."""

    def remove(self, live_dir: Path) -> None:
        """Forget the folder's log (OSError while `fail_remove` is set)."""
        if self.fail_remove is not None:
            raise self.fail_remove
        self.discard(live_dir)

    def probe(self, runs_dir: Path) -> None:
        """OSError while `fail_probe` is set."""
        if self.fail_probe is not None:
            raise self.fail_probe

    def open_tail(self, live_dir: Path) -> MemoryLog:
        """The folder's log (created empty)."""
        appender = MemoryLog(self.logs.setdefault(live_dir, []))
        self.appenders[live_dir] = appender
        return appender

    def create(self, live_dir: Path) -> MemoryLog:
        """A new, empty log for the folder (ConflictError when it has one)."""
        if self.logs.get(live_dir):
            raise ConflictError(f"run '{live_dir.parent.name}' already exists")
        self.logs[live_dir] = []
        appender = self.open_tail(live_dir)
        if self.fail_next_create is not None:
            appender.fail_next, self.fail_next_create = self.fail_next_create, None
        return appender

    def discard(self, live_dir: Path) -> None:
        """Forget the folder's log."""
        self.logs.pop(live_dir, None)
        self.appenders.pop(live_dir, None)

    def open_at(self, live_dir: Path, base: int) -> MemoryLog:
        """The folder's log."""
        return self.open_tail(live_dir)

    def scan(self, live_dir: Path, from_offset: int) -> LogTail:
        """The records from `from_offset` on."""
        records = [(offset, offset + 1, payload) for offset, payload in self.logs.get(live_dir, [])]
        return LogTail([r for r in records if r[0] >= from_offset], append_base=0)

    def record_end(self, offset: int, payload: bytes) -> int:
        """Records are one unit wide."""
        return offset + 1

    def encode(self, record: LogRecord) -> bytes:
        """A key under which the record is kept."""
        key = str(next(self._keys)).encode()
        self._records[key] = record
        return key

    def decode(self, payload: bytes) -> LogRecord:
        """The record kept under the key (ValueError for an unknown key)."""
        try:
            return self._records[payload]
        except KeyError:
            raise ValueError(f"no record {payload!r}") from None

    def frame_reader(self, graph: ModelGraph, run_id: str) -> MemoryFrameReader:
        """A reader of `[bin, series, value]` lists."""
        return MemoryFrameReader(graph)


@dataclass
class MemoryCheckpoint:
    """Snapshots only when requested (or `make_due`); commits at once, on the event loop."""

    live_dir: Path
    store: MemorySnapshotStore
    on_commit: OnCommit
    mirror: CaptureMirror = field(default_factory=CaptureMirror)
    on_error: Callable[[BaseException], None] | None = None
    requests: list[asyncio.Future[SnapshotMeta]] = field(default_factory=list)
    is_due: bool = False
    marked: tuple[int, int] | None = None

    def mark(self, log_offset: int, last_bin: int) -> None:
        """Remember what the last snapshot covers."""
        self.marked = (log_offset, last_bin)

    def make_due(self) -> None:
        """Snapshot at the next chance."""
        self.is_due = True

    def due(self, run: LiveRun, applied_offset: int) -> bool:
        """Only when made due."""
        return self.is_due

    def request(self) -> asyncio.Future[SnapshotMeta]:
        """A snapshot at the next batch."""
        future: asyncio.Future[SnapshotMeta] = asyncio.get_running_loop().create_future()
        self.requests.append(future)
        return future

    async def run_due(
        self, run: LiveRun, applied_offset: int, make_job: Callable[[], SnapshotJob], log: AppendLog | None
    ) -> None:
        """Take the job and keep it as the folder's snapshot."""
        requests, self.requests = self.requests, []
        if not requests and not self.is_due:
            return
        self.is_due = False
        failure, self.store.fail_next_commit = self.store.fail_next_commit, None
        try:
            job = make_job()
            if failure is not None:  # as a failed commit on disk: CURRENT (the kept snapshot) untouched
                raise failure
            state = job.state.delta.mirror.materialize(job.state) if job.state.delta is not None else job.state
        except Exception as exc:
            self.mirror.invalidate()  # the next capture is a full one
            if failure is not None and self.on_error is not None:
                self.on_error(exc)
            for future in requests:
                if not future.done():
                    future.set_exception(exc)
            if failure is None:
                raise
            return
        meta = SnapshotMeta(
            name=f"{state.seq:020d}",
            path=self.live_dir / "snapshots",
            log_offset=job.log_offset,
            events_offset=job.events_offset,
            kafka_offsets=dict(job.kafka_offsets),
            create=dict(job.create),
            state_hash="memory",
            seq=state.seq,
            last_bin=state.last_bin,
            epoch=state.epoch,
        )
        self.store.snapshots[self.live_dir] = LoadedSnapshot(state, meta)
        self.mark(job.log_offset, state.last_bin)
        self.on_commit(job, meta)
        for future in requests:
            if not future.done():
                future.set_result(meta)

    async def drain(self) -> None:
        """Commits are immediate: nothing to wait for."""


class MemoryEvents:
    """`events.log` as a bytearray."""

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer

    def write(self, data: bytes) -> None:
        """Append."""
        self.buffer.extend(data)

    def flush(self) -> None:
        """Nothing buffered."""

    def tell(self) -> int:
        """Bytes so far."""
        return len(self.buffer)

    def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True)
class WrittenInMemory:
    """What `MemorySnapshotStore.write_artifacts` answers."""

    manifest_hash: str


class MemorySnapshotStore:
    """`SnapshotStore` in memory: one snapshot and one `events.log` per run folder, artifacts as results."""

    def __init__(self) -> None:
        self.snapshots: dict[Path, LoadedSnapshot] = {}
        self.events: dict[Path, bytearray] = {}
        self.artifacts: dict[Path, RunResult] = {}
        self.fail_next_commit: OSError | None = None  # tests: the next snapshot commit fails
        self.fail_artifacts: list[BaseException] = []  # tests: the next artifact writes fail with these

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
    ) -> MemoryCheckpoint:
        """A checkpoint that snapshots on request."""
        return MemoryCheckpoint(live_dir, self, on_commit, mirror or CaptureMirror(), on_error)

    def live_dirs(self, runs_dir: Path) -> list[Path]:
        """Folders with a snapshot, under `runs_dir`."""
        return sorted(folder for folder in self.snapshots if folder.parent.parent == runs_dir)

    def load(self, live_dir: Path) -> LoadedSnapshot | None:
        """The folder's last snapshot (a copy of its state, as a load from disk would give)."""
        loaded = self.snapshots.get(live_dir)
        if loaded is None:
            return None
        state = capture_copy(loaded)
        return LoadedSnapshot(state, loaded.meta)

    def open_events(self, live_dir: Path) -> MemoryEvents:
        """The folder's events buffer."""
        return MemoryEvents(self.events.setdefault(live_dir, bytearray()))

    def cut_events(self, live_dir: Path, size: int) -> None:
        """Cut the buffer to `size` bytes."""
        del self.events.setdefault(live_dir, bytearray())[size:]

    def read_events(self, live_dir: Path, end: int, *, tail_events: int, tail_bytes: int) -> EventHistory:
        """The events below byte `end` (all of them: the bounds are not applied)."""
        data = bytes(self.events.get(live_dir, b""))[:end]
        events: list[tuple[Event, bytes]] = []
        pos = 0
        while pos + 4 <= len(data):
            size = int.from_bytes(data[pos : pos + 4], "little")
            body = data[pos + 4 : pos + 4 + size]
            events.append((orjson.loads(body), body))
            pos += 4 + size
        return EventHistory(events, pos, None if pos == end else "short")

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
        """No segments are ever written: the columns must start at bin 0."""
        if first != 0 or segments:
            raise ValueError("the memory store keeps no segments")
        return values.copy(), present.copy()

    def write_artifacts(self, result: RunResult, run_folder: Path) -> WrittenInMemory:
        """Keep the result (or raise the next of `fail_artifacts`)."""
        if self.fail_artifacts:
            raise self.fail_artifacts.pop(0)
        self.artifacts[run_folder] = result
        return WrittenInMemory(f"memory:{result.run_id}")


def capture_copy(loaded: LoadedSnapshot) -> RunState:
    """A snapshot state with its own matrices."""
    state = loaded.state
    return replace(state, V=state.V.copy(), P=state.P.copy())


@dataclass
class RecordingSink:
    """An `EventSink` that keeps every published event, by run."""

    events: dict[str, list[tuple[Event, bool]]] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)

    def publish(self, run_id: str, event: Event, data: bytes, *, seqd: bool = True) -> None:
        """Keep the event (and whether it was seq'd)."""
        self.events.setdefault(run_id, []).append((event, seqd))

    def ensure_run(self, run_id: str, epoch: str, seq: int) -> None:
        """Make the run known."""
        self.events.setdefault(run_id, [])

    def reset_epoch(self, run_id: str, epoch: str, seq: int) -> None:
        """Forget the run's history."""
        self.events[run_id] = []

    def close_run(self, run_id: str, code: int) -> None:
        """Remember the close code."""
        self.closed[run_id] = code

    def drop_run(self, run_id: str, code: int, reason: str) -> None:
        """Remember the close code."""
        self.closed[run_id] = code

    def seqd(self, run_id: str) -> list[Event]:
        """The run's seq'd events, in order."""
        return [event for event, seqd in self.events.get(run_id, []) if seqd]


__all__ = ["MemoryLogStore", "MemorySnapshotStore", "RecordingSink"]
