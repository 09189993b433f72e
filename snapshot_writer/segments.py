"""Immutable segments of a live run's evaluated bins (SPEC §6 Retention, Snapshots).

A bin leaves a run's memory only after a committed snapshot holds it in a segment
`live/segments/<from>-<to>.parquet` (bins `from..to`, both inclusive). A segment is written by the
snapshot commit (`SnapshotWriter`, step 1, before the snapshot folder and CURRENT) from the captured
matrix, in the same encoding as `retained.parquet` (`retained_table.encode_retained`: `bin_index`,
`v:<series>` float64 per row of V, `p:<series>` bool per telemetry series), so every bit survives.

Only bins no correction and no evaluation can change any more are written (below
`LiveRun.immutable_before`), hence a committed segment is never rewritten. Segments of one run
are contiguous from bin 0; `state.json` lists them (`segments: [{fromBin, toBin, file, sha256,
bytes}]`) with `persistedBefore` = one past the last segment bin. A segment file that CURRENT's
list does not name is an orphan of a crashed commit: the next commit overwrites or prunes it.

A segment carries its own row names (a PATCH may add series later): `read_segment` returns them and
`assemble` maps rows by name, a series a segment does not hold being 0 there (as PATCH defines).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from engine_live.errors import SegmentError
from engine_live.runtime.snapshot_types import Segment, segments_end
from engine_live.runtime.storage import REAL_FS, FsOps
from snapshot_writer.atomic_files import TEMP_MARK, fsync_dir, write_bytes_atomic
from snapshot_writer.retained_table import BIN_COLUMN, encode_retained

SEGMENTS = "segments"
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def parse_segments(items: Iterable[dict[str, Any]] | None) -> tuple[Segment, ...]:
    """The `segments` list of a state.json, checked to be contiguous from bin 0."""
    out = tuple(Segment.from_wire(w) for w in items or ())
    at = 0
    for s in out:
        if s.from_bin != at:
            raise SegmentError(f"segments are not contiguous at bin {at} ({s.file})")
        at = s.to_bin
    return out


def _sha(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_segment(
    live_dir: Path,
    V: FloatArray,
    P: BoolArray,
    from_bin: int,
    names: Sequence[str],
    telemetry_ids: Sequence[str],
    *,
    fs: FsOps = REAL_FS,
) -> Segment:
    """Write bins from_bin .. from_bin + V.shape[1] - 1 as one segment file: temp file, fsync,
    rename, folder fsync. An existing file of that name is an uncommitted orphan and is replaced."""
    n = int(V.shape[1])
    if n <= 0 or P.shape[1] != n:
        raise SegmentError("a segment needs at least one bin and matching V/P columns")
    folder = live_dir / SEGMENTS
    if not folder.is_dir():
        fs.mkdir(folder, parents=True, exist_ok=True)
        fsync_dir(live_dir, fs=fs)
    data = encode_retained(V, P, from_bin, names, telemetry_ids)
    seg = Segment(from_bin, from_bin + n, _sha(data), len(data))
    write_bytes_atomic(folder / seg.file, data, fs=fs)
    return seg


def decode_segment(data: bytes) -> tuple[int, list[str], list[str], FloatArray, BoolArray]:
    """(first bin, row names, telemetry ids, V, P) of a segment's bytes."""
    table = pq.read_table(pa.BufferReader(data))
    cols = table.column_names
    if not cols or cols[0] != BIN_COLUMN:
        raise SegmentError("segment has no bin_index column")
    names = [c[2:] for c in cols if c.startswith("v:")]
    tele = [c[2:] for c in cols if c.startswith("p:")]
    if len(names) + len(tele) + 1 != len(cols):
        raise SegmentError("segment has unexpected columns")
    bins = table.column(BIN_COLUMN).to_numpy()
    n = table.num_rows
    if n == 0 or not np.array_equal(bins, np.arange(bins[0], bins[0] + n)):
        raise SegmentError("segment bins are not a contiguous range")
    V = np.empty((len(names), n))
    for i, s in enumerate(names):
        V[i] = table.column(f"v:{s}").to_numpy()
    P = np.empty((len(tele), n), dtype=bool)
    for j, s in enumerate(tele):
        P[j] = table.column(f"p:{s}").to_numpy(zero_copy_only=False)
    return int(bins[0]), names, tele, V, P


def read_segment(live_dir: Path, seg: Segment) -> tuple[list[str], list[str], FloatArray, BoolArray]:
    """(row names, telemetry ids, V, P) of a committed segment, checked against its hash and range."""
    try:
        data = (live_dir / SEGMENTS / seg.file).read_bytes()
    except OSError as exc:
        raise SegmentError(f"segment {seg.file} is unreadable: {exc}") from exc
    if _sha(data) != seg.sha256:
        raise SegmentError(f"segment {seg.file} does not match its hash")
    try:
        first, names, tele, V, P = decode_segment(data)
    except SegmentError:
        raise
    except Exception as exc:
        raise SegmentError(f"segment {seg.file} is damaged: {type(exc).__name__}: {exc}") from exc
    if first != seg.from_bin or V.shape[1] != seg.to_bin - seg.from_bin:
        raise SegmentError(f"segment {seg.file} holds other bins")
    return names, tele, V, P


def check_segments(live_dir: Path, segments: Sequence[Segment]) -> None:
    """Cheap validation at load: every listed segment exists with its recorded size."""
    for seg in segments:
        try:
            size = (live_dir / SEGMENTS / seg.file).stat().st_size
        except OSError as exc:
            raise SegmentError(f"segment {seg.file} is missing") from exc
        if size != seg.size:
            raise SegmentError(f"segment {seg.file} has {size} bytes, expected {seg.size}")


def prune_segments(live_dir: Path, keep: Sequence[Segment], *, fs: FsOps = REAL_FS) -> bool:
    """Remove segment files (and temp files) that `keep` does not name; True when any was removed."""
    folder = live_dir / SEGMENTS
    if not folder.is_dir():
        return False
    names = {s.file for s in keep}
    removed = False
    for p in folder.iterdir():
        if p.name not in names and (p.name.endswith(".parquet") or TEMP_MARK in p.name):
            fs.unlink(p, missing_ok=True)
            removed = True
    if removed:
        fsync_dir(folder, fs=fs)
    return removed


def assemble(
    live_dir: Path,
    segments: Sequence[Segment],
    names: Sequence[str],
    telemetry_ids: Sequence[str],
    first: int,
    V_tail: FloatArray,
    P_tail: BoolArray,
) -> tuple[FloatArray, BoolArray]:
    """Bins 0 .. first + tail - 1 in the row layout (names, telemetry_ids): segments for the bins
    below `first`, the in-memory tail (bins first..) for the rest. SegmentError when the segments
    do not reach `first` or one of them is damaged."""
    n = first + int(V_tail.shape[1])
    if segments_end(segments) < first:
        raise SegmentError(f"bins {segments_end(segments)}..{first - 1} are neither in a segment nor in memory")
    V = np.zeros((len(names), n))
    P = np.zeros((len(telemetry_ids), n), dtype=bool)
    row = {s: i for i, s in enumerate(names)}
    tele = {s: j for j, s in enumerate(telemetry_ids)}
    for seg in segments:
        if seg.from_bin >= first:
            break
        seg_names, seg_tele, sv, sp = read_segment(live_dir, seg)
        if set(seg_tele) != set(tele):
            raise SegmentError(f"segment {seg.file} has other telemetry series")
        k = min(seg.to_bin, first) - seg.from_bin
        cols = slice(seg.from_bin, seg.from_bin + k)
        for i, s in enumerate(seg_names):
            r = row.get(s)
            if r is not None:
                V[r, cols] = sv[i, :k]
        for j, s in enumerate(seg_tele):
            P[tele[s], cols] = sp[j, :k]
    V[:, first:] = V_tail
    P[:, first:] = P_tail
    return V, P


__all__ = [
    "SEGMENTS",
    "Segment",
    "assemble",
    "check_segments",
    "decode_segment",
    "parse_segments",
    "prune_segments",
    "read_segment",
    "segments_end",
    "write_segment",
]
