"""The per-run ingestion log (write-ahead log), group-committed with fsync (SPEC §6 Durability).

Record layout, little-endian: `[u32 payload length][u32 crc32(payload)][payload]`. A record's
offset is the byte position of its header; offsets are assigned in append order.

`IngestLog.append(payload)` returns the record's offset once it is durable. Appends that arrive
while a write is in flight are queued and written together, then share ONE `os.fsync`; the
write + fsync runs in a worker thread (`asyncio.to_thread`), so the event loop never blocks on
the disk. When a write or its fsync fails (a full disk, an I/O error), every queued append fails
with the OSError, the file is cut back to the last durable end and the log stays usable; if even
the cut fails, the torn tail is cut before the next write (which fails rather than append behind
it) or by recovery's scan. A cancelled append may still become durable (the caller cannot know;
recovery replays it like any record). Every call that writes goes through an injected `FsOps`
(`engine_live.runtime.storage`; tests fail chosen calls).

`read_records(path, from_offset)` iterates `(offset, payload)` and stops at the first torn or
corrupt record (short header, short payload, oversized length, CRC mismatch); afterwards the scan
reports `end_offset` (the end of the last valid record) and `problem`. `cut_tail(path, end)`
truncates a torn tail away before the log is reopened for appending.

Truncation works on whole segment files (`ingestion.log_segments`), so offsets stay absolute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine_live.runtime.storage import REAL_FS, FsOps

HEADER = struct.Struct("<II")
MAX_RECORD = 256 * 1024 * 1024  # a larger length field can only be corruption


def encode_record(payload: bytes) -> bytes:
    """`payload` as one log record (length and CRC32 header first); ValueError when it exceeds MAX_RECORD."""
    if len(payload) > MAX_RECORD:
        raise ValueError(f"log record of {len(payload)} bytes exceeds {MAX_RECORD}")
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class LogScan:
    """Iterate once for (offset, payload); then `end_offset` and `problem` (None = clean end)."""

    path: Path
    from_offset: int = 0
    end_offset: int = 0
    problem: str | None = None
    records: int = field(default=0)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        self.end_offset, self.problem, self.records = self.from_offset, None, 0
        with open(self.path, "rb") as fh:
            fh.seek(self.from_offset)
            pos = self.from_offset
            while True:
                head = fh.read(HEADER.size)
                if not head:
                    return
                if len(head) < HEADER.size:
                    self.problem = f"torn header at offset {pos}"
                    return
                length, crc = HEADER.unpack(head)
                if length > MAX_RECORD:
                    self.problem = f"corrupt length {length} at offset {pos}"
                    return
                payload = fh.read(length)
                if len(payload) < length:
                    self.problem = f"torn payload at offset {pos} ({len(payload)} of {length} bytes)"
                    return
                if zlib.crc32(payload) != crc:
                    self.problem = f"crc mismatch at offset {pos}"
                    return
                yield pos, payload
                pos += HEADER.size + length
                self.end_offset = pos
                self.records += 1


def read_records(path: str | os.PathLike[str], from_offset: int = 0) -> LogScan:
    """A scan of the records of `path` from `from_offset` on (iterate it once; see `LogScan`)."""
    return LogScan(Path(path), from_offset)


def cut_tail(path: str | os.PathLike[str], end_offset: int, fs: FsOps = REAL_FS) -> None:
    """Truncate the file to `end_offset` (a torn tail found by a scan) and make it durable."""
    fd = fs.open(path, os.O_WRONLY)
    try:
        fs.ftruncate(fd, end_offset)
        fs.fsync(fd)
    finally:
        fs.close(fd)


class IngestLog:
    """Append-only, group-committed log file. Create it inside the event loop that uses it."""

    def __init__(self, path: str | os.PathLike[str], fs: FsOps = REAL_FS, *, valid_size: int | None = None) -> None:
        """Open (or create) the log file. `valid_size`: where its records end when a scan found a torn
        tail it could not cut; the tail is cut before the first write."""
        self.path, self.fs = Path(path), fs
        created = not self.path.exists()
        self._fd = fs.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            try:
                fs.fsync_dir(self.path.parent)
            except OSError:  # the new file is not durably there: remove it, the caller sees the error
                fs.close(self._fd)
                with contextlib.suppress(OSError):
                    fs.unlink(self.path, missing_ok=True)
                raise
        size = os.fstat(self._fd).st_size
        self._durable = self._end = size if valid_size is None else min(size, valid_size)
        self._dirty = size > self._durable  # bytes past `_durable` are in the file (a failed write not yet cut)
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self.appends = self.fsyncs = 0

    @property
    def end_offset(self) -> int:
        """Where the next record will start (including records not yet durable)."""
        return self._end

    @property
    def durable_offset(self) -> int:
        """The end of the records already fsynced: everything before it survives a crash."""
        return self._durable

    def statistics(self) -> dict[str, int]:
        """Counters for metrics and tests: pending appends, appends, fsyncs, end and durable offsets."""
        return {
            "pending": len(self._pending),
            "appends": self.appends,
            "fsyncs": self.fsyncs,
            "endOffset": self._end,
            "durableOffset": self._durable,
        }

    async def append(self, payload: bytes) -> int:
        """Queue one record; returns its offset after the fsync that covers it."""
        if self._closed:
            raise RuntimeError(f"ingestion log {self.path} is closed")
        record = encode_record(payload)
        offset = self._end
        self._end += len(record)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((record, fut))
        self.appends += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await asyncio.shield(fut)
        return offset

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(rec for rec, _ in batch)
            try:
                await asyncio.to_thread(self._write_sync, data)
            except Exception as exc:  # nothing of the batch is durable: fail it and what queued behind
                failed = batch + self._pending
                self._pending = []
                self._end = self._durable
                await asyncio.to_thread(self._cut_sync)
                for _, fut in failed:
                    if not fut.done():
                        fut.set_exception(exc)
                continue  # appends queued during the cut are written next
            offset = self._durable
            self._durable += len(data)
            for rec, fut in batch:
                if not fut.done():
                    fut.set_result(offset)
                offset += len(rec)

    def _write_sync(self, data: bytes) -> None:
        if self._dirty:  # a failed write whose cut failed too: cut it now, or fail this write
            self._cut_or_raise()
        self._dirty = True  # until the fsync returns
        self.fs.write_all(self._fd, data)
        self.fs.fsync(self._fd)
        self._dirty = False
        self.fsyncs += 1

    def _cut_or_raise(self) -> None:
        self.fs.ftruncate(self._fd, self._durable)
        self._dirty = False

    async def settle(self) -> None:
        """Cut the tail a failed write left behind, if any (OSError when that still fails)."""
        if self._dirty:
            await asyncio.to_thread(self._cut_or_raise)

    def _cut_sync(self) -> None:
        """Cut what a failed write may have left past the durable end (kept dirty when that fails too)."""
        try:
            self._cut_or_raise()
        except OSError:
            self._dirty = True

    async def close(self) -> None:
        """Wait for queued appends, then close the file (cutting a failed write's tail first)."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        if self._dirty:
            await asyncio.to_thread(self._cut_sync)
        self.fs.close(self._fd)


__all__ = ["HEADER", "IngestLog", "LogScan", "cut_tail", "encode_record", "read_records"]
