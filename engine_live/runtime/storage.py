"""Storage as the runtime sees it: the file operations the stores make, and whether writes fail.

`FsOps` is the one seam through which the file-backed stores (`ingestion.live_log`,
`ingestion.ingest_log`, `ingestion.log_segments`, `snapshot_writer.*`) touch the disk for anything
that writes: open, write, fsync, truncate, rename, mkdir, unlink, rmtree. The default instance
(`REAL_FS`) makes the real `os` calls; tests hand the stores a subclass that fails the Nth call with
ENOSPC or EIO (`tests/fault_fs.py`, fixture `faulty_fs`). Reads are not routed through it.

`StorageHealth` is what the runtime knows about those writes (SPEC §10, §12.9): per kind of write
(`log`, `snapshot`, `events`, `artifacts`) whether the last one failed, how many failed so far and
the last error. `/readyz` answers 503 `storage_failing` while any kind's last write failed, and
`flowtime_storage_failing` / `flowtime_storage_failures_total` show it. A kind recovers with its
next successful write, or when a probe write (`LogStore.probe`, run by `/readyz` while failing)
succeeds — so an instance taken out of a load balancer by its own readiness comes back by itself.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("flowtime.storage")
StrPath = str | os.PathLike[str]
STORAGE_KINDS = ("log", "snapshot", "events", "artifacts")


class FsOps:
    """The writing file operations of the stores; this base makes the real `os` calls."""

    def open(self, path: StrPath, flags: int, mode: int = 0o644) -> int:
        """`os.open`."""
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """`os.write`: the bytes written (maybe fewer than given)."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        """`os.fsync`."""
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        """`os.ftruncate`."""
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        """`os.close`."""
        os.close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        """`os.replace` (atomic; replaces a file or an empty folder at `dst`)."""
        os.replace(src, dst)

    def mkdir(self, path: StrPath, *, parents: bool = False, exist_ok: bool = False) -> None:
        """`Path.mkdir`."""
        Path(path).mkdir(parents=parents, exist_ok=exist_ok)

    def unlink(self, path: StrPath, *, missing_ok: bool = False) -> None:
        """`os.unlink` (FileNotFoundError ignored when `missing_ok`)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self, path: StrPath) -> None:
        """`shutil.rmtree` (errors raised)."""
        shutil.rmtree(path)

    # -- helpers built on the operations above -------------------------------------------------------
    def write_all(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write every byte of `data` (a short write continues; a write of 0 bytes is ENOSPC)."""
        view = memoryview(data).cast("B")
        while view.nbytes:
            n = self.write(fd, view)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]

    def fsync_dir(self, path: StrPath) -> None:
        """fsync a folder, so that new, renamed and removed entries in it survive a crash."""
        fd = self.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            self.fsync(fd)
        finally:
            self.close(fd)


REAL_FS = FsOps()


@dataclass
class KindHealth:
    """One kind of write: whether the last one failed, failures so far, the last error."""

    failing: bool = False
    failures: int = 0
    last_error: str | None = None
    since: float | None = None  # wall-clock time of the first failure of the current streak


@dataclass
class StorageHealth:
    """Whether the stores' writes fail, per kind (see the module docstring)."""

    kinds: dict[str, KindHealth] = field(default_factory=lambda: {kind: KindHealth() for kind in STORAGE_KINDS})
    clock: Callable[[], float] = time.time

    @property
    def failing(self) -> bool:
        """True while the last write of any kind failed."""
        return any(k.failing for k in self.kinds.values())

    def failed(self, kind: str, exc: BaseException) -> bool:
        """A write of `kind` failed with `exc`; True when it is the first of a streak (log it loudly once)."""
        health = self.kinds.setdefault(kind, KindHealth())
        first = not health.failing
        if first:
            health.since = self.clock()
        health.failing = True
        health.failures += 1
        health.last_error = f"{type(exc).__name__}: {exc}"
        return first

    def succeeded(self, kind: str) -> None:
        """A write of `kind` succeeded."""
        health = self.kinds.get(kind)
        if health is not None and health.failing:
            health.failing, health.since = False, None
            log.warning("storage: %s writes succeed again", kind)

    def recovered(self) -> None:
        """A probe write succeeded: every kind is writable again (a failing one says so at its next write)."""
        for kind in list(self.kinds):
            self.succeeded(kind)

    def failure_counts(self) -> dict[str, int]:
        """Failed writes so far, per kind (cumulative; metrics turn them into a counter)."""
        return {kind: health.failures for kind, health in self.kinds.items()}

    def to_wire(self) -> dict[str, object]:
        """As `/readyz` shows it: the failing kinds, with their last error and since when."""
        failing = {kind: health for kind, health in self.kinds.items() if health.failing}
        return {
            "failing": sorted(failing),
            "errors": {kind: health.last_error for kind, health in sorted(failing.items())},
            "since": min((h.since for h in failing.values() if h.since is not None), default=None),
        }


__all__ = ["REAL_FS", "STORAGE_KINDS", "FsOps", "KindHealth", "StorageHealth"]
