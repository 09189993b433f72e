"""`FaultyFs`: an `FsOps` that fails chosen storage calls with ENOSPC or EIO (the fault-injection seam).

The file stores make every write through an `FsOps` (`engine_live.runtime.storage`); hand them a
`FaultyFs` (fixture `faulty_fs` in `tests/conftest.py`, or `compose.build_live_service(fs=...)`)
and arm faults:

    fs = FaultyFs(fail_at={"fsync": 3}, errno=ENOSPC)   # the 3rd fsync from now fails
    fs.arm("write", path="ingest.log", torn=True)        # the next log write writes half, then fails
    fs.arm("rename", path="snapshots", times=None)       # every snapshot rename fails until healed
    fs.fill()                                            # a full disk: every write, fsync, mkdir fails
    fs.heal()                                            # storage works again

Operations: `open`, `write`, `fsync`, `ftruncate`, `rename`, `mkdir` (not for a folder that exists
with `exist_ok`: that allocates nothing), `unlink`, `rmtree`; `close` is counted, never failed.
`path` filters by a substring of the path (for fd operations, the path the fd was opened with).
Calls are counted per operation (`calls`) and every injected failure is recorded (`failures`).
Thread-safe: the stores call it from worker threads.
"""

from __future__ import annotations

import errno as errnos
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

from engine_live.runtime.storage import FsOps, StrPath

OPS = ("open", "write", "fsync", "ftruncate", "rename", "mkdir", "unlink", "rmtree")
FULL_DISK_OPS = ("write", "fsync", "mkdir")


@dataclass
class Fault:
    """Fail the `at`-th matching call of `op` from arming on, and the `times - 1` after it (None: all)."""

    op: str
    at: int = 1
    errno: int = errnos.ENOSPC
    times: int | None = 1
    path: str | None = None
    torn: bool = False  # write: write the first half for real, then fail (a torn tail)
    seen: int = field(default=0)
    fired: int = field(default=0)

    def matches(self, op: str, path: str) -> bool:
        return op == self.op and (self.path is None or self.path in path)

    def fires(self) -> bool:
        """Count one matching call; True when this one fails."""
        self.seen += 1
        if self.seen < self.at:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultyFs(FsOps):
    """Real file operations, except the armed ones, which raise OSError(errno)."""

    def __init__(
        self,
        fail_at: dict[str, int] | None = None,
        errno: int = errnos.ENOSPC,
        *,
        path: str | None = None,
        times: int | None = 1,
    ) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []  # (op, path) of every injected failure
        self._paths: dict[int, str] = {}
        for op, at in (fail_at or {}).items():
            self.arm(op, at=at, errno=errno, times=times, path=path)

    # -- arming ---------------------------------------------------------------------------------
    def arm(
        self,
        op: str,
        *,
        at: int = 1,
        errno: int = errnos.ENOSPC,
        times: int | None = 1,
        path: str | None = None,
        torn: bool = False,
    ) -> Fault:
        """Fail the `at`-th matching call of `op` from now on (and `times - 1` more; None: until healed)."""
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; known: {OPS}")
        fault = Fault(op, at, errno, times, path, torn)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fill(self, errno: int = errnos.ENOSPC, *, path: str | None = None) -> None:
        """A full disk: every write, fsync and mkdir fails until `heal()` (deletes and truncates work)."""
        for op in FULL_DISK_OPS:
            self.arm(op, errno=errno, times=None, path=path)

    def heal(self) -> None:
        """Storage works again: every armed fault is dropped."""
        with self._lock:
            self.faults.clear()

    @property
    def armed(self) -> bool:
        """Some fault may still fire."""
        with self._lock:
            return any(not f.spent for f in self.faults)

    def _fault(self, op: str, path: StrPath | int) -> Fault | None:
        where = self._paths.get(path, "") if isinstance(path, int) else os.fspath(path)
        with self._lock:
            self.calls[op] += 1
            for fault in self.faults:
                if fault.matches(op, where) and fault.fires():
                    self.failures.append((op, where))
                    return fault
        return None

    def _check(self, op: str, path: StrPath | int) -> None:
        fault = self._fault(op, path)
        if fault is not None:
            raise OSError(fault.errno, f"{os.strerror(fault.errno)} (injected: {op})")

    # -- the operations -------------------------------------------------------------------------
    def open(self, path: StrPath, flags: int, mode: int = 0o644) -> int:
        self._check("open", path)
        fd = super().open(path, flags, mode)
        with self._lock:
            self._paths[fd] = os.fspath(path)
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        fault = self._fault("write", fd)
        if fault is not None:
            if fault.torn and len(data) > 1:
                super().write(fd, memoryview(data)[: len(data) // 2])
            raise OSError(fault.errno, f"{os.strerror(fault.errno)} (injected: write)")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._check("fsync", fd)
        super().fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self._check("ftruncate", fd)
        super().ftruncate(fd, length)

    def close(self, fd: int) -> None:
        with self._lock:
            self.calls["close"] += 1
            self._paths.pop(fd, None)
        super().close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        self._check("rename", dst)
        super().rename(src, dst)

    def mkdir(self, path: StrPath, *, parents: bool = False, exist_ok: bool = False) -> None:
        if not (exist_ok and os.path.isdir(path)):
            self._check("mkdir", path)
        super().mkdir(path, parents=parents, exist_ok=exist_ok)

    def unlink(self, path: StrPath, *, missing_ok: bool = False) -> None:
        self._check("unlink", path)
        super().unlink(path, missing_ok=missing_ok)

    def rmtree(self, path: StrPath) -> None:
        self._check("rmtree", path)
        super().rmtree(path)


__all__ = ["FULL_DISK_OPS", "OPS", "Fault", "FaultyFs"]
