"""Snapshots for subscribers that history cannot serve: built once, off the event loop, shared.

A subscriber whose cursor history cannot serve (or who fell behind) gets one `{"type": "snapshot",
epoch, seq, state}` (SPEC §7). For a 1,000-node run that body is ~30 MB and took ~0.9 s of CPU on the
event loop, per subscriber: two clients looping connect → subscribe(`since: null`) → abort held the
loop nearly all the time (issue 12). Now:

- **single flight**: one build per run at a time; subscribers arriving meanwhile await the same one;
- **shared**: a snapshot serves every later subscriber for `max_age_s` after it was built while the
  hub history still holds every event after it — the subscriber then gets those events replayed
  from history (`Subscription.resume_after_snapshot`), exactly as if it had subscribed at the
  snapshot's seq;
- **off the loop**: the endpoint captures what the body needs on the loop (cheap copies, no await
  in between) and builds and encodes it in this cache's one worker thread, so builds for all runs
  queue behind each other instead of competing for the CPU;
- **bounded**: built snapshots stay in a `ByteLRU` (`snapshot_cache_bytes`, default 128 MiB);
- **derived once**: a `classes` filter's snapshot (its `byClass` trimmed) is made from the shared
  one in the same thread, once per (snapshot, filter), and shares the same cache (`derived`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from stream_hub.lru import ByteLRU, CacheStats

__all__ = ["DEFAULT_SNAPSHOT_CACHE_BYTES", "Snapshot", "SnapshotCache"]

DEFAULT_SNAPSHOT_CACHE_BYTES = 128 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One encoded snapshot message of a run at (epoch, seq), in the form the endpoint sends it."""

    epoch: str
    seq: int
    frame: bytes | str  # the whole `{"type": "snapshot", ...}` message: text or binary frame
    built_at: float  # the endpoint clock's monotonic time when the build finished

    def __len__(self) -> int:
        return len(self.frame)


class SnapshotCache:
    """The last snapshot of each run, built by one caller at a time and shared by the others."""

    def __init__(self, max_bytes: int = DEFAULT_SNAPSHOT_CACHE_BYTES) -> None:
        self._cache: ByteLRU[Snapshot] = ByteLRU(max_bytes)
        self._inflight: dict[Hashable, asyncio.Future[Snapshot]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.builds = 0

    async def get(
        self, run_id: str, usable: Callable[[Snapshot], bool], build: Callable[[], Awaitable[Snapshot]]
    ) -> Snapshot:
        """The cached snapshot when `usable`, else the one being built, else a new `build()`.

        A caller cancelled while waiting does not cancel a build the others wait for. The result
        may be unusable by the time it is ready (a new epoch meanwhile): the caller checks again."""
        cached = self._cache.get(run_id)
        if cached is not None and usable(cached):
            return cached
        return await self._single_flight(run_id, build, counted=True)

    async def derived(self, key: Hashable, build: Callable[[], Awaitable[Snapshot]]) -> Snapshot:
        """The snapshot under `key` (one derived from a shared snapshot, e.g. for a `classes` filter,
        keyed by that snapshot and the filter): cached, else built once like a shared one (not counted
        in `builds`)."""
        cached = self._cache.get(key)
        return cached if cached is not None else await self._single_flight(key, build, counted=False)

    async def _single_flight(self, key: Hashable, build: Callable[[], Awaitable[Snapshot]], counted: bool) -> Snapshot:
        future = self._inflight.get(key)
        if future is None:
            future = self._inflight[key] = asyncio.ensure_future(self._build(key, build, counted))
            future.add_done_callback(_retrieve)
        return await asyncio.shield(future)

    async def _build(self, key: Hashable, build: Callable[[], Awaitable[Snapshot]], counted: bool) -> Snapshot:
        try:
            snapshot = await build()
            self.builds += counted
            self._cache.put(key, snapshot)
            return snapshot
        finally:
            self._inflight.pop(key, None)

    async def in_thread(self, work: Callable[[], T]) -> T:
        """Run `work` in the snapshot thread (one for every run: builds wait for each other)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ws-snapshot")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def forget(self, run_id: str) -> None:
        """Drop a run's snapshot (new epoch, run dropped)."""
        self._cache.discard(run_id)

    def close(self) -> None:
        """Drop every snapshot and stop the thread (queued builds are cancelled; a new one restarts it)."""
        self._cache.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stats(self) -> CacheStats:
        """What the cache holds, and its hits, misses and evictions."""
        return self._cache.stats()


def _retrieve(future: asyncio.Future[Snapshot]) -> None:
    """Mark a failed build's exception as seen (its waiters may all have left)."""
    if not future.cancelled():
        future.exception()
