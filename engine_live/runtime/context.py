"""`RuntimeSettings` and `RuntimeContext`: the limits and collaborators every runtime part shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine_live.runtime.ports import EventSink, LogStore, NullMetrics, NullSink, RuntimeMetrics, SnapshotStore
from engine_live.runtime.records import LogRecord
from engine_live.runtime.storage import StorageHealth


@dataclass(frozen=True)
class RuntimeSettings:
    """The limits and cadences of the live runtime (built from the service settings)."""

    data_dir: Path
    max_model_bytes: int = 8 * 1024 * 1024
    max_frames_per_request: int = 10_000
    ingest_queue_frames: int = 100_000
    max_live_runs: int = 100
    max_live_bytes: int = 1024**3
    max_bins_ahead: int = 1440
    snapshot_every_bins: int = 60
    snapshot_every_seconds: float = 30.0
    snapshots_kept: int = 2
    hub_history_events: int = 10_000
    hub_history_bytes: int = 64 * 1024 * 1024
    recovery_history_records: int = 64  # more records after the snapshot: the earlier ones replay quietly

    @property
    def runs_dir(self) -> Path:
        """`<dataDir>/runs`."""
        return self.data_dir / "runs"

    @property
    def inputs_dir(self) -> Path:
        """`<dataDir>/inputs`, where `file:` references of models resolve."""
        return self.data_dir / "inputs"


@dataclass
class RuntimeContext:
    """The collaborators of the runtime: storage ports, the event sink, metrics and the clock."""

    settings: RuntimeSettings
    logs: LogStore
    snapshots: SnapshotStore
    sink: EventSink = field(default_factory=NullSink)
    metrics: RuntimeMetrics = field(default_factory=NullMetrics)
    clock: Callable[[], float] = time.monotonic  # snapshot cadence, close retries; tests inject their own
    storage: StorageHealth = field(default_factory=StorageHealth)  # whether the stores' writes fail
    snapshot_fault: Callable[[str], None] | None = None  # crash injection seam after each commit step (tests)
    # fault seam (tests): called with (run id, record) right after a record changed the run, before its
    # events are published; raising stands for an evaluator that fails (SPEC §10: the run goes `failed`)
    evaluate_fault: Callable[[str, LogRecord], None] | None = None
