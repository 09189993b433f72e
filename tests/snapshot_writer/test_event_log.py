"""events.log: tail reads, cuts, and releasing the bytes no history refill can read any more."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from snapshot_writer.event_log import cut_event_log, frame, read_event_log, read_start, release_before, start_path

BODY = 5000  # bytes of padding per event: a few file-system blocks each


def write_events(path: Path, n: int) -> list[int]:
    """n events (seq 1..n); returns the end offset after each."""
    ends = []
    with open(path, "ab") as fh:
        for seq in range(1, n + 1):
            fh.write(frame(orjson.dumps({"seq": seq, "pad": "x" * BODY})))
            ends.append(fh.tell())
    return ends


def seqs(scan: object) -> list[int]:
    return [ev["seq"] for ev, _ in scan.events]  # type: ignore[attr-defined]


def test_release_keeps_what_a_refill_reads_and_gives_back_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    ends = write_events(path, 200)
    size, blocks = path.stat().st_size, path.stat().st_blocks
    snap = ends[149]  # a snapshot after event 150
    before = read_event_log(path, snap, tail_events=10, tail_bytes=10**9)
    start = release_before(path, snap, keep_events=10, keep_bytes=10**9)
    assert start == ends[138]  # event 140 (one more than the 10 a refill reads) is the first kept
    assert read_start(path, size) == start and path.stat().st_size == size  # offsets unchanged
    after = read_event_log(path, snap, tail_events=10, tail_bytes=10**9)
    assert seqs(after) == seqs(before) == list(range(141, 151)) and after.end_offset == snap
    assert seqs(read_event_log(path)) == list(range(140, 201))  # a full read starts at the sidecar
    if hasattr(os, "posix_fallocate"):  # Linux: the hole is punched (tmpfs, ext4, xfs, btrfs)
        assert path.stat().st_blocks < blocks // 2
    # the bytes bound: keep ≥ 20 KB before the offset
    start2 = release_before(path, ends[189], keep_events=10**6, keep_bytes=20_000)
    assert seqs(read_event_log(path, ends[189], tail_events=10**6, tail_bytes=20_000)) == [188, 189, 190]
    assert start2 == ends[185] and read_start(path, size) == start2
    # never moves back
    assert release_before(path, ends[189], keep_events=10**6, keep_bytes=10**9) == start2


def test_cut_below_the_start_forgets_the_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    ends = write_events(path, 30)
    release_before(path, ends[-1], keep_events=5, keep_bytes=10**9)
    assert start_path(path).exists()
    cut_event_log(path, ends[-1])  # a cut past the start keeps it
    assert start_path(path).exists()
    cut_event_log(path, 0)
    assert not start_path(path).exists() and read_event_log(path).events == []
    write_events(path, 3)
    assert seqs(read_event_log(path)) == [1, 2, 3]
