"""What the runtime keeps per live run, split by who owns it.

- `RunModel` — the model the run evaluates now, with the frame reader built for it (a PATCH
  replaces it as a whole);
- `RunDurability` — what the log and the snapshots know: the create record, how far the log is
  applied, Kafka offsets, committed segments;
- `RunWork` — the worker's queue of accepted requests, the batch in flight and its task;
- `RunFiles` — the open log appender, `events.log` writer and checkpoint.

`RunHandle` holds one of each plus the `LiveRun` itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_live.model.series_defs import ModelGraph
from engine_live.runtime.ports import AppendLog, Checkpoint, EventLogWriter, FrameReader
from engine_live.runtime.records import CreateRecord, LogRecord
from engine_live.runtime.snapshot_types import Segment
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import CaptureMirror


@dataclass
class RunModel:
    """The model as the run evaluates it now."""

    graph: ModelGraph
    text: str  # the model text of the create record
    frames: FrameReader
    provenance: dict[str, Any] | None = None  # the model's provenance block (templateId, ...)
    data: dict[str, Any] | None = None  # the model as parsed, with adjustments applied (after a PATCH)
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # wire form of every applied PATCH


@dataclass
class RunDurability:
    """Where the run stands in its log and its snapshots."""

    create: CreateRecord
    applied_offset: int = 0  # end offset of the last applied log record
    kafka_offsets: dict[int, int] = field(default_factory=dict)  # partition → highest logged offset
    segments: tuple[Segment, ...] = ()  # committed segments (bins 0..run.persisted_before-1)
    seed_mirror: CaptureMirror | None = None  # recovery: the restored snapshot, so the first capture is incremental

    def note_source(self, source: tuple[int, int] | None) -> None:
        """Remember the Kafka offset a logged record came from."""
        if source is not None:
            part, offset = source
            self.kafka_offsets[part] = max(self.kafka_offsets.get(part, -1), offset)


@dataclass
class QueuedRecord:
    """An accepted request waiting for the worker: its record, encoded, and the caller's future."""

    record: LogRecord
    payload: bytes
    values: int  # values it adds to the ingest queue
    future: asyncio.Future[dict[str, Any]]
    prepared: Any = None  # a PATCH: (Adjustment, Plan, model data), compiled before it was accepted
    accepted: float = 0.0  # metrics: when ingest() accepted the request (monotonic)


@dataclass
class RunWork:
    """The per-run worker: queued requests, its wake-up event and task."""

    queue: deque[QueuedRecord] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    inflight: list[QueuedRecord] = field(default_factory=list)  # the batch being logged and applied
    closing: bool = False  # a close (or delete) was accepted: no new ingest
    close_retry_at: float | None = None  # closing: when to retry artifacts a storage failure stopped (clock)
    close_retries: int = 0
    # metrics: per bin, when the oldest request with values for it whose run_update is not yet
    # published was accepted (see `Publisher.observe_latency`)
    accepted_at: dict[int, float] = field(default_factory=dict)


@dataclass
class RunFiles:
    """The run's open files: log appender, `events.log`, checkpoint."""

    log: AppendLog | None = None
    events: EventLogWriter | None = None
    checkpoint: Checkpoint | None = None
    artifacts_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one §4 writer per folder


@dataclass
class RunHandle:
    """One live run and everything the runtime keeps for it."""

    run: LiveRun
    model: RunModel
    durable: RunDurability
    folder: Path  # runs/<id>/live
    work: RunWork = field(default_factory=RunWork)
    files: RunFiles = field(default_factory=RunFiles)
    reason: str | None = None  # why the run is `failed` (or was deleted)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.durable.create.run_id

    @property
    def options(self) -> dict[str, Any]:
        """The create request's options."""
        return self.durable.create.options

    @property
    def created_utc(self) -> str:
        """When the run was created (UTC, second resolution)."""
        return self.durable.create.created_utc
