"""Ingestion log: round trip, torn tails, CRC corruption, group commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ingestion.ingest_log import HEADER, IngestLog, cut_tail, encode_record, read_records


async def write(path: Path, payloads: list[bytes]) -> list[int]:
    log = IngestLog(path)
    offsets = [await log.append(p) for p in payloads]
    await log.close()
    return offsets


async def test_round_trip_and_offsets(tmp_path: Path) -> None:
    path = tmp_path / "ingest.log"
    payloads = [b"first", b"", b"x" * 1000, b'{"frames": []}']
    offsets = await write(path, payloads)
    assert offsets[0] == 0 and offsets[1] == HEADER.size + 5
    scan = read_records(path)
    assert list(scan) == list(zip(offsets, payloads, strict=True))
    assert scan.problem is None and scan.end_offset == path.stat().st_size and scan.records == 4
    assert list(read_records(path, offsets[2])) == [(offsets[2], payloads[2]), (offsets[3], payloads[3])]
    # reopening appends after the existing records
    more = await write(path, [b"again"])
    assert more == [scan.end_offset]


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 3])
async def test_torn_tail_is_detected_and_cut(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "ingest.log"
    offsets = await write(path, [b"one", b"two", b"three!"])
    with open(path, "r+b") as fh:
        fh.truncate(offsets[2] + cut)
    scan = read_records(path)
    assert [p for _, p in scan] == [b"one", b"two"]
    assert scan.end_offset == offsets[2] and scan.problem is not None and "torn" in scan.problem
    cut_tail(path, scan.end_offset)
    assert path.stat().st_size == offsets[2]
    assert await write(path, [b"four"]) == [offsets[2]]
    assert [p for _, p in read_records(path)] == [b"one", b"two", b"four"]


async def test_crc_corruption_stops_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "ingest.log"
    offsets = await write(path, [b"alpha", b"bravo", b"charlie"])
    with open(path, "r+b") as fh:
        fh.seek(offsets[1] + HEADER.size + 2)
        fh.write(b"X")
    scan = read_records(path)
    assert [p for _, p in scan] == [b"alpha"]
    assert scan.end_offset == offsets[1] and scan.problem == f"crc mismatch at offset {offsets[1]}"
    # an absurd length field is corruption too, not a 4 GiB read
    with open(path, "r+b") as fh:
        fh.seek(offsets[1])
        fh.write(HEADER.pack(0xFFFFFFFF, 0))
    scan = read_records(path)
    assert len(list(scan)) == 1 and scan.problem is not None and "length" in scan.problem


async def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    log = IngestLog(tmp_path / "ingest.log")
    monkeypatch.setattr(os, "fsync", counting_fsync)
    payloads = [f"record {i}".encode() for i in range(200)]
    offsets = await asyncio.gather(*(log.append(p) for p in payloads))
    await log.close()
    assert 1 <= len(calls) < len(payloads) // 10
    assert log.fsyncs == len(calls) and log.appends == 200
    assert sorted(offsets) == offsets and len(set(offsets)) == 200
    assert list(read_records(log.path)) == list(zip(offsets, payloads, strict=True))


async def test_a_failed_write_fails_the_batch_and_the_log_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = IngestLog(tmp_path / "ingest.log")
    first = await log.append(b"kept")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    results = await asyncio.gather(log.append(b"lost-1"), log.append(b"lost-2"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    monkeypatch.undo()
    second = await log.append(b"after")
    await log.close()
    assert second == first + len(encode_record(b"kept"))
    assert [p for _, p in read_records(log.path)] == [b"kept", b"after"]
    with pytest.raises(RuntimeError):
        await log.append(b"closed")
