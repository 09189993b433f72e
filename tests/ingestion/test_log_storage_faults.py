"""The ingestion log on failing storage (issue 12 #1): a write, fsync or cut that fails (ENOSPC, EIO)
fails the appends it covers, leaves no torn bytes that a later append would follow, and the log
goes on by itself once writes succeed. Faults come from the `faulty_fs` fixture (tests/fault_fs.py)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from engine_live.runtime.records import FailRecord
from ingestion import log_records
from ingestion.ingest_log import IngestLog, encode_record, read_records
from ingestion.live_log import TOMBSTONES, FileLogStore
from ingestion.log_segments import SegmentedLog, list_segments, scan_log
from tests.fault_fs import FaultyFs


def records(path: Path) -> list[bytes]:
    scan = read_records(path)
    out = [payload for _, payload in scan]
    assert scan.problem is None, scan.problem
    return out


@pytest.mark.parametrize(("op", "torn"), [("fsync", False), ("write", False), ("write", True)])
async def test_a_failed_write_fails_its_batch_and_the_next_append_succeeds(
    tmp_path: Path, faulty_fs: FaultyFs, op: str, torn: bool
) -> None:
    path = tmp_path / "ingest.log"
    log = IngestLog(path, faulty_fs)
    assert await log.append(b"durable") == 0
    faulty_fs.arm(op, errno=errno.ENOSPC, torn=torn)
    failed = await asyncio.gather(log.append(b"a"), log.append(b"b"), return_exceptions=True)
    assert all(isinstance(r, OSError) and r.errno == errno.ENOSPC for r in failed), failed
    assert path.stat().st_size == log.durable_offset == log.end_offset  # cut back: nothing torn is left
    offset = await log.append(b"after")
    assert offset == len(encode_record(b"durable"))
    await log.close()
    assert records(path) == [b"durable", b"after"]


async def test_a_cut_that_fails_too_is_made_before_the_next_write(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    path = tmp_path / "ingest.log"
    log = IngestLog(path, faulty_fs)
    await log.append(b"durable")
    size = path.stat().st_size
    faulty_fs.arm("write", torn=True, errno=errno.EIO)
    faulty_fs.arm("ftruncate", times=3, errno=errno.EIO)  # the cut after the failure and both of the next try
    with pytest.raises(OSError):
        await log.append(b"torn")
    assert path.stat().st_size > size  # the torn half is still there
    with pytest.raises(OSError):  # the next write refuses to follow the torn bytes
        await log.append(b"refused")
    assert path.stat().st_size > size
    assert await log.append(b"after") == size  # the cut works now: written right after the durable record
    await log.close()
    assert records(path) == [b"durable", b"after"]


async def test_a_roll_that_cannot_create_the_segment_keeps_the_old_one(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    log = SegmentedLog(tmp_path, 0, faulty_fs)
    await log.append(b"one")
    faulty_fs.arm("open", path="ingest.log.", errno=errno.ENOSPC)
    with pytest.raises(OSError):
        await log.roll()
    assert [p.name for _, p in list_segments(tmp_path)] == ["ingest.log"] and log.base == 0
    await log.append(b"two")
    base = await log.roll()  # works once storage does
    await log.append(b"three")
    await log.close()
    assert base > 0 and [payload for _, payload in scan_log(tmp_path).records] == [b"one", b"two", b"three"]


async def test_a_torn_tail_recovery_cannot_cut_is_cut_before_the_first_append(
    tmp_path: Path, faulty_fs: FaultyFs
) -> None:
    live = tmp_path / "runs" / "r1" / "live"
    store = FileLogStore(fs=faulty_fs)
    log = store.create(live)
    await log.append(b"one")
    await log.close()
    with open(live / "ingest.log", "ab") as fh:
        fh.write(encode_record(b"unacknowledged")[:7])
    faulty_fs.arm("ftruncate", errno=errno.EIO)
    tail = store.scan(live, 0)
    assert tail.torn_tail is not None and "not cut yet" in tail.torn_tail and not tail.lost
    appender = store.open_at(live, tail.append_base)
    await appender.append(b"two")
    await appender.close()
    assert records(live / "ingest.log") == [b"one", b"two"]


async def test_a_torn_tail_left_in_an_older_segment_is_not_data_loss(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path, 0)
    await log.append(b"one")
    base = await log.roll()
    await log.append(b"two")
    await log.close()
    with open(tmp_path / "ingest.log", "ab") as fh:  # a failed write whose cut failed before the roll
        fh.write(b"\x05\x00")
    scan = scan_log(tmp_path)
    assert not scan.lost and [p for _, p in scan.records] == [b"one", b"two"] and base == 4 + 4 + 3
    assert (tmp_path / "ingest.log").stat().st_size == base  # cut


def test_remove_is_all_or_nothing(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    runs = tmp_path / "runs"
    store = FileLogStore(fs=faulty_fs)
    for run in ("r1", "r2"):
        (runs / run / "live" / "snapshots").mkdir(parents=True)
        (runs / run / "live" / "ingest.log").write_bytes(b"x")
    store.clean(runs)
    faulty_fs.arm("rename", errno=errno.EIO)
    with pytest.raises(OSError):
        store.remove(runs / "r1" / "live")
    assert (runs / "r1" / "live" / "ingest.log").read_bytes() == b"x"  # untouched
    faulty_fs.arm("rmtree", errno=errno.EIO)
    store.remove(runs / "r1" / "live")  # renamed away at once; the tombstone stays for now
    assert not (runs / "r1").exists() and len(list((runs / TOMBSTONES).iterdir())) == 1
    assert store.live_dirs(runs) == [runs / "r2" / "live"]  # a tombstone is never recovered
    store.clean(runs)
    assert list((runs / TOMBSTONES).iterdir()) == []


def test_probe_fails_while_the_disk_is_full(tmp_path: Path, faulty_fs: FaultyFs) -> None:
    store = FileLogStore(fs=faulty_fs)
    faulty_fs.fill()
    with pytest.raises(OSError):
        store.probe(tmp_path)
    faulty_fs.heal()
    store.probe(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_fail_record_round_trips() -> None:
    record = FailRecord("evaluation_failed: ZeroDivisionError: boom")
    assert log_records.decode(log_records.encode(record)) == record
