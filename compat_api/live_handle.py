"""What the live service keeps per run, and the shapes around it: the run handle, a queued log
record, the event publisher port, and the `options` of a live run's create request."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine_live.errors import ModelError
from engine_live.model.series_defs import ModelGraph
from engine_live.protocol import Event
from engine_live.state.live_run import LiveRun, ValidFrame
from engine_live.state.live_state import CaptureMirror
from ingestion.frames import FrameValidator
from snapshot_writer.live_checkpoint import RunCheckpoint
from snapshot_writer.log_segments import SegmentedLog
from snapshot_writer.segments import Segment

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
OPTION_KEYS = {"runId", "graceBins", "retentionBins", "snapshotEveryBins", "snapshotEverySeconds", "idleCloseSeconds"}


class EventPublisher(Protocol):
    def publish(self, run_id: str, event: Event, data: bytes, *, seqd: bool = True) -> object: ...


class NullPublisher:
    def publish(self, run_id: str, event: Event, data: bytes, *, seqd: bool = True) -> None:
        return None


@dataclass
class QueuedRecord:
    payload: bytes
    frames: list[ValidFrame] | None  # None: a close record
    n: int
    future: asyncio.Future[dict[str, Any]]
    source: tuple[int, int] | None = None
    patch: Any = None  # (Adjustment, Plan, model data) for a PATCH record
    accepted: float = 0.0  # metrics: time.monotonic() when ingest() accepted the request


@dataclass
class RunHandle:
    run_id: str
    run: LiveRun
    graph: ModelGraph
    model_text: str
    options: dict[str, Any]
    created_utc: str
    folder: Path
    validator: FrameValidator
    log: SegmentedLog | None = None
    queue: deque[QueuedRecord] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    events_fh: Any = None
    closing: bool = False
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] | None = None  # the model's provenance block (templateId, ...)
    model_data: dict[str, Any] | None = None  # the model as parsed, with adjustments applied
    kafka_offsets: dict[int, int] = field(default_factory=dict)
    applied_offset: int = 0  # end offset of the last applied log record
    create_record: dict[str, Any] | None = None  # the logged create record (snapshots carry it)
    checkpoint: RunCheckpoint | None = None
    seed_mirror: CaptureMirror | None = None  # recovery: the restored snapshot, so the first capture is incremental
    artifacts_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one §4 writer per folder
    segments: tuple[Segment, ...] = ()  # committed segments (bins 0..run.persisted_before-1)
    # metrics (ingest-to-publish latency): per bin, when the oldest request with frames for it whose
    # run_update is not yet published was accepted; see LiveService._observe_latency
    accepted_at: dict[int, float] = field(default_factory=dict)


def parse_create(body: dict[str, Any]) -> tuple[str | dict[str, Any], dict[str, Any]]:
    model = body.get("model")
    if not isinstance(model, str | dict):
        raise ModelError("model: required (YAML/JSON text or an object)")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ModelError("options: must be an object")
    unknown = set(options) - OPTION_KEYS - {"deterministicRunId", "async"}
    if unknown:
        raise ModelError(f"options: unknown key '{sorted(unknown)[0]}'")
    for key in ("graceBins", "retentionBins", "snapshotEveryBins"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "graceBins" else 1)):
            raise ModelError(f"options.{key}: must be a non-negative integer")
    return model, options
