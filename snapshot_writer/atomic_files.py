"""Crash-safe file writing: a temporary name in the same folder, fsync, rename into place, fsync of
the folder. Readers therefore see either the old file or the complete new one, never a torn one.

JSON is written with orjson, keys sorted and a 2-space indent plus a final newline, so the same
object always gives the same bytes. Every call that writes goes through an `FsOps` (`fs=`, default
the real `os` calls; tests inject failing ones).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from engine_live.runtime.storage import REAL_FS, FsOps

Chunk = bytes | bytearray | memoryview

_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
TEMP_MARK = ".tmp-"  # temporary names are ".<name>.tmp-<hex>"


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, 2-space indent, trailing newline (NaN/inf → null)."""
    return orjson.dumps(obj, option=_JSON_OPTIONS)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to `path`."""
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")


def fsync_dir(path: str | os.PathLike[str], *, fs: FsOps = REAL_FS) -> None:
    """fsync a directory, so that renames and new entries in it survive a crash."""
    fs.fsync_dir(path)


def _write_all(fd: int, chunks: Iterable[Chunk], fs: FsOps) -> None:
    for chunk in chunks:
        fs.write_all(fd, memoryview(chunk).cast("B"))


def write_file(
    path: str | os.PathLike[str], chunks: Iterable[Chunk], *, fsync: bool = True, fs: FsOps = REAL_FS
) -> None:
    """Create `path` (which must not exist) from `chunks`; used inside a temporary folder that is
    itself renamed into place."""
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, chunks, fs)
        if fsync:
            fs.fsync(fd)
    finally:
        fs.close(fd)


def fsync_file(path: str | os.PathLike[str], *, fs: FsOps = REAL_FS) -> None:
    """fsync an existing file, so that its contents survive a crash."""
    fd = fs.open(path, os.O_RDONLY)
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True, fs: FsOps = REAL_FS) -> Iterator[Path]:
    """Yield a temporary name next to `path` for the caller to create; on success fsync it, rename
    it to `path` and fsync the folder (the fsyncs only when `fsync`); on error remove it."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        yield tmp
        if fsync:
            fsync_file(tmp, fs=fs)
        fs.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent, fs=fs)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: Chunk | Iterable[Chunk], *, fsync: bool = True, fs: FsOps = REAL_FS
) -> None:
    """Write `data` (bytes or an iterable of byte chunks) to `path` atomically (see `atomic_path`);
    on any error `path` is untouched."""
    chunks: Iterable[Chunk] = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    with atomic_path(path, fsync=fsync, fs=fs) as tmp:
        write_file(tmp, chunks, fsync=False, fs=fs)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, fsync: bool = True, fs: FsOps = REAL_FS) -> bytes:
    """Write `obj` as deterministic JSON (see `json_bytes`) atomically; returns the bytes written."""
    data = json_bytes(obj)
    write_bytes_atomic(path, data, fsync=fsync, fs=fs)
    return data


def remove_file(path: str | os.PathLike[str], *, fsync: bool = True, fs: FsOps = REAL_FS) -> bool:
    """Remove `path` if it exists (fsync of its folder when removed); True when something was removed."""
    try:
        fs.unlink(path)
    except FileNotFoundError:
        return False
    if fsync:
        fsync_dir(Path(path).parent, fs=fs)
    return True
