"""Crash-safe file writing: a temporary name in the same folder, fsync, rename into place, fsync of
the folder. Readers therefore see either the old file or the complete new one, never a torn one.

JSON is written with orjson, keys sorted and a 2-space indent plus a final newline, so the same
object always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

Chunk = bytes | bytearray | memoryview

_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
TEMP_MARK = ".tmp-"  # temporary names are ".<name>.tmp-<hex>"


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, 2-space indent, trailing newline (NaN/inf → null)."""
    return orjson.dumps(obj, option=_JSON_OPTIONS)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to `path`."""
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that renames and new entries in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunks: Iterable[Chunk]) -> None:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while view.nbytes:
            written = os.write(fd, view)
            view = view[written:]


def write_file(path: str | os.PathLike[str], chunks: Iterable[Chunk], *, fsync: bool = True) -> None:
    """Create `path` (which must not exist) from `chunks`; used inside a temporary folder that is
    itself renamed into place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, chunks)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync an existing file, so that its contents survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary name next to `path` for the caller to create; on success fsync it, rename
    it to `path` and fsync the folder (the fsyncs only when `fsync`); on error remove it."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: Chunk | Iterable[Chunk], *, fsync: bool = True) -> None:
    """Write `data` (bytes or an iterable of byte chunks) to `path` atomically (see `atomic_path`);
    on any error `path` is untouched."""
    chunks: Iterable[Chunk] = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    with atomic_path(path, fsync=fsync) as tmp:
        write_file(tmp, chunks, fsync=False)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, fsync: bool = True) -> bytes:
    """Write `obj` as deterministic JSON (see `json_bytes`) atomically; returns the bytes written."""
    data = json_bytes(obj)
    write_bytes_atomic(path, data, fsync=fsync)
    return data


def remove_file(path: str | os.PathLike[str], *, fsync: bool = True) -> bool:
    """Remove `path` if it exists (fsync of its folder when removed); True when something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if fsync:
        fsync_dir(Path(path).parent)
    return True
