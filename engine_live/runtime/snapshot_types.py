"""What a snapshot carries between the runtime and the snapshot store (SPEC §6 Snapshots, Retention).

`SnapshotJob` is the copy the runtime takes between two records; `SnapshotMeta` describes a
committed or loaded snapshot; `Segment` names a file of immutable bins that left memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_live.errors import SegmentError
from engine_live.state.live_state import RunState


@dataclass(frozen=True)
class Segment:
    """Bins [from_bin, to_bin) (to_bin exclusive here; the file name and the wire are inclusive)."""

    from_bin: int
    to_bin: int
    sha256: str
    size: int

    @property
    def file(self) -> str:
        """The segment's file name under `live/segments/`."""
        return f"{self.from_bin}-{self.to_bin - 1}.parquet"

    def to_wire(self) -> dict[str, Any]:
        """The segment as `state.json` lists it."""
        return {
            "fromBin": self.from_bin,
            "toBin": self.to_bin - 1,
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.size,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Segment:
        """A segment from its `state.json` entry (SegmentError when it is inconsistent)."""
        seg = cls(int(wire["fromBin"]), int(wire["toBin"]) + 1, str(wire["sha256"]), int(wire["bytes"]))
        if seg.to_bin <= seg.from_bin or wire.get("file", seg.file) != seg.file:
            raise SegmentError(f"bad segment entry {wire!r}")
        return seg


def segments_end(segments: Sequence[Segment]) -> int:
    """One past the last bin the segments hold (0 without segments)."""
    return segments[-1].to_bin if segments else 0


@dataclass(frozen=True)
class SnapshotJob:
    """What a capture hands to the writer (taken between two records)."""

    state: RunState
    log_offset: int  # end offset of the last applied record: replay starts here
    events_offset: int  # bytes of events.log holding events 1..state.seq
    create: dict[str, Any]  # the create record (runId, epoch, createdUtc, model, options) + adjustments
    kafka_offsets: dict[int, int] = field(default_factory=dict)
    segment_to: int | None = None  # write segments for the bins below this (None: the run is not persisted)
    segments: tuple[Segment, ...] = ()  # the segments committed when the job was captured


@dataclass(frozen=True)
class SnapshotMeta:
    """A committed (or loaded) snapshot: where it is, what it covers, how it was made."""

    name: str
    path: Path
    log_offset: int
    events_offset: int
    kafka_offsets: dict[int, int]
    create: dict[str, Any]
    state_hash: str
    seq: int = 0
    last_bin: int = -1
    epoch: str = ""
    fell_back: bool = False  # CURRENT was missing or its snapshot damaged
    problems: tuple[str, ...] = ()
    duration_s: float = 0.0
    size_bytes: int = 0
    segments: tuple[Segment, ...] = ()  # every segment this snapshot lists (contiguous from bin 0)
    # loaded snapshots: decodes retained.parquet again into fresh (V, P) (a mirror's own copy, later)
    reload: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)
    matrix: Future[tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)  # deferred (V, P)
