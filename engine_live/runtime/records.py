"""The records of a live run's ingestion log, as the runtime sees them (SPEC §6 Durability).

A run's log starts with its create record; then frames, model patches and at most one close, in
the order they were acknowledged (and, after a record that could not be evaluated, a fail
record). Events are a pure function of this sequence, so replaying it
rebuilds the run with the same epoch and seq numbering. The bytes on disk are
`ingestion.log_records`' business (the one codec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine_live.state.frame_batch import FrameBatch


@dataclass(frozen=True)
class CreateRecord:
    """The run as created: id, epoch, creation time, model text and the create options."""

    run_id: str
    epoch: str
    created_utc: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record's fields under their wire names (snapshots carry them too)."""
        return {
            "t": "create",
            "runId": self.run_id,
            "epoch": self.epoch,
            "createdUtc": self.created_utc,
            "model": self.model,
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreateRecord:
        """The record from its wire fields (a log record or a snapshot's `create`)."""
        return cls(
            str(data["runId"]), str(data["epoch"]), str(data["createdUtc"]), data["model"], data.get("options") or {}
        )


@dataclass(frozen=True)
class FramesRecord:
    """Validated values, and the Kafka (partition, offset) they came from, if any."""

    batch: FrameBatch
    source: tuple[int, int] | None = None


@dataclass(frozen=True)
class PatchRecord:
    """A model adjustment (SPEC §12.8), as its wire body (`fromBin`, `nodes`, `topology`, ...)."""

    body: dict[str, Any]


@dataclass(frozen=True)
class CloseRecord:
    """The run was closed: no more values; the last bins evaluate and the artifacts are written."""


@dataclass(frozen=True)
class FailRecord:
    """The run failed (a record could not be evaluated): it stays `failed` with `reason` after a restart.

    Written after the record that failed, best effort; nothing after it is applied."""

    reason: str


LogRecord = CreateRecord | FramesRecord | PatchRecord | CloseRecord | FailRecord
