"""The run's ingestion log as segment files with absolute offsets, so truncation never moves one.

Layout in `runs/<id>/live/`: `ingest.log` holds the records from absolute offset 0; every other
segment is `ingest.log.<base>`, whose first byte is absolute offset `<base>`. A record's offset is
`base + position in its file`, the same number the 202 answer (`logOffset`) and `state.json` carry.
Segments are contiguous: each one starts where the previous one ends.

- `SegmentedLog` is the appender (an `IngestLog` on the newest segment, offsets shifted by its
  base). `roll()` starts a new segment at the current end; the service rolls at every snapshot
  capture, between two records, so a snapshot's log offset is always a segment base. A roll that
  cannot create the new segment (a full disk) raises and leaves the appender on the old one.
- `truncate_log_before(live_dir, offset)` deletes whole segments that end at or before `offset`
  (never the newest one), then fsyncs the folder. Nothing is rewritten or renamed, so a crash
  in the middle leaves a prefix deleted and every remaining offset valid.
- `scan_log(live_dir, from_offset)` reads the records from `from_offset` on across segments. A torn
  tail of the newest segment is cut (it was never acknowledged; so is one an older segment holds
  just before the next segment's base); anything else that cannot be read
  (a missing segment, a gap, a corrupt record in an older segment, no segment holding
  `from_offset` — a committed snapshot's offset always is one, since the log rolls before the
  commit) is reported in `lost`: records there were acknowledged and are gone. Readable records
  after such a hole are still returned.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine_live.runtime.storage import REAL_FS, FsOps
from ingestion.ingest_log import IngestLog, cut_tail, read_records

FIRST_SEGMENT = "ingest.log"


def fsync_dir(path: Path, fs: FsOps = REAL_FS) -> None:
    """fsync a folder, so that deleted and new segment files stay so after a crash."""
    fs.fsync_dir(path)


def segment_path(live_dir: Path, base: int) -> Path:
    """The file of the segment whose first byte is absolute offset `base`."""
    return live_dir / (FIRST_SEGMENT if base == 0 else f"{FIRST_SEGMENT}.{base}")


def list_segments(live_dir: Path) -> list[tuple[int, Path]]:
    """(base, path) of every segment, ascending by base."""
    out: list[tuple[int, Path]] = []
    if not live_dir.is_dir():
        return out
    for p in live_dir.iterdir():
        if p.name == FIRST_SEGMENT:
            out.append((0, p))
        elif p.name.startswith(FIRST_SEGMENT + ".") and p.name[len(FIRST_SEGMENT) + 1 :].isdigit():
            out.append((int(p.name[len(FIRST_SEGMENT) + 1 :]), p))
    return sorted(out)


@dataclass
class SegmentScan:
    """What `scan_log` found: records by absolute offset, where appends go on, a cut torn tail and losses."""

    records: list[tuple[int, bytes]] = field(default_factory=list)  # (absolute offset, payload)
    end_offset: int = 0  # where the next record goes
    append_base: int = 0  # base of the segment appends continue in
    torn_tail: str | None = None  # an unacknowledged torn tail that was cut
    lost: list[str] = field(default_factory=list)  # acknowledged bytes that cannot be read


def scan_log(live_dir: Path, from_offset: int = 0, *, cut: bool = True, fs: FsOps = REAL_FS) -> SegmentScan:
    """Records at or after `from_offset`; see the module docstring for torn tails and losses."""
    segs = list_segments(live_dir)
    scan = SegmentScan(end_offset=from_offset, append_base=from_offset)
    pos, found = from_offset, False
    for i, (base, path) in enumerate(segs):
        last = i == len(segs) - 1
        seg_end = base + path.stat().st_size
        if seg_end < pos or (seg_end == pos and base < pos):
            continue  # wholly before the start (a snapshot's offset is always inside or at a segment)
        if base > pos:
            scan.lost.append(f"ingestion-log bytes {pos}..{base - 1} are missing")
            pos = base
        rs = read_records(path, pos - base)
        scan.records.extend((base + off, payload) for off, payload in rs)
        pos = base + rs.end_offset
        if rs.problem is not None:
            if last or pos == segs[i + 1][0]:  # the newest segment's, or a failed write's never cut
                scan.torn_tail = rs.problem
                if cut:
                    try:
                        cut_tail(path, rs.end_offset, fs)
                    except OSError as exc:  # the appender cuts it before its first write (`valid_size`)
                        scan.torn_tail += f" (not cut yet: {exc})"
            else:
                scan.lost.append(f"{path.name}: {rs.problem}; bytes {pos}..{seg_end - 1} unreadable")
                pos = seg_end
        scan.append_base, found = base, True
    if not found and (from_offset > 0 or segs):
        scan.lost.append(f"no ingestion-log segment holds offset {from_offset}")
    scan.end_offset = pos
    return scan


def truncate_log_before(live_dir: Path, offset: int, fs: FsOps = REAL_FS) -> list[Path]:
    """Delete every segment that ends at or before `offset` (never the newest); returns them."""
    segs = list_segments(live_dir)
    gone: list[Path] = []
    for (_, path), (next_base, _) in itertools.pairwise(segs):
        if next_base <= offset:
            fs.unlink(path, missing_ok=True)
            gone.append(path)
    if gone:
        fsync_dir(live_dir, fs)
    return gone


class SegmentedLog:
    """Appender on the newest segment; offsets are absolute. Create it inside its event loop."""

    def __init__(self, live_dir: Path, base: int = 0, fs: FsOps = REAL_FS, *, valid_end: int | None = None) -> None:
        self.live_dir, self.base, self.fs = live_dir, base, fs
        valid_size = None if valid_end is None else valid_end - base
        self._log = IngestLog(segment_path(live_dir, base), fs, valid_size=valid_size)

    @classmethod
    def open_tail(cls, live_dir: Path, fs: FsOps = REAL_FS) -> SegmentedLog:
        """An appender on the newest segment of `live_dir` (the first one when there is none)."""
        segs = list_segments(live_dir)
        return cls(live_dir, segs[-1][0] if segs else 0, fs)

    @property
    def path(self) -> Path:
        """The file of the segment being appended to."""
        return self._log.path

    @property
    def end_offset(self) -> int:
        """Absolute offset where the next record will start (including records not yet durable)."""
        return self.base + self._log.end_offset

    @property
    def durable_offset(self) -> int:
        """Absolute offset up to which the records are fsynced."""
        return self.base + self._log.durable_offset

    def statistics(self) -> dict[str, int]:
        """The current segment's counters, with absolute offsets and its `segmentBase`."""
        stats = self._log.statistics()
        stats.update(endOffset=self.end_offset, durableOffset=self.durable_offset, segmentBase=self.base)
        return stats

    async def append(self, payload: bytes) -> int:
        """Append one record; returns its absolute offset once it is durable."""
        return self.base + await self._log.append(payload)

    async def roll(self) -> int:
        """Start a new segment at the current end (call between two records); returns its base.

        The new segment is created first: when that fails (OSError) the appender stays on the old
        one, unchanged, and no empty segment is left behind (`IngestLog` removes what it created)."""
        end = self.end_offset
        if end == self.base:
            return end
        await self._log.settle()  # never leave a failed write's tail inside an older segment
        new = await asyncio.to_thread(IngestLog, segment_path(self.live_dir, end), self.fs)
        old, self._log, self.base = self._log, new, end
        await old.close()
        return end

    async def close(self) -> None:
        """Wait for queued appends, then close the current segment."""
        await self._log.close()


def log_size(live_dir: Path) -> int:
    """Bytes held by every segment (for metrics and tests)."""
    return sum(os.path.getsize(p) for _, p in list_segments(live_dir))


__all__ = [
    "FIRST_SEGMENT",
    "SegmentScan",
    "SegmentedLog",
    "list_segments",
    "scan_log",
    "segment_path",
    "truncate_log_before",
]
