"""The snapshot writer of a live run: the one object that owns the commit order (SPEC §6 Snapshots).

Folder `runs/<id>/live/`: `snapshots/<name>/{state.json, create.json, retained.parquet[, hooks.bin]}`,
`CURRENT`,
`events.log`, the ingestion-log segments (`ingestion.log_segments`). `<name>` is the seq, or
`<seq>.<logOffset>` when a snapshot of that seq already exists (state changed without an event).

Commit order of `SnapshotWriter.commit(job)` (all of it in a worker thread):

1. `temp_written`    new immutable segments `segments/<from>-<to>.parquet` (each fsynced and renamed
                     into place, `snapshot_writer.segments`), then the files into
                     `snapshots/.tmp-<name>-<hex>/`, each fsynced, then the folder;
2. `renamed`         the folder renamed to `snapshots/<name>`, `snapshots/` fsynced;
3. `events_synced`   `events.log` fsynced (it holds every event up to the snapshot's seq);
4. `current_switched` `CURRENT` (`{"snapshot": name, "stateHash"}`) replaced atomically;
5. `pruned`          snapshots beyond the newest `keep` (and crash leftovers) removed, and segment
                     files CURRENT does not list (orphans of crashed commits);
6. `log_truncated`   log segments that end at or before the OLDEST kept snapshot's offset removed;
                     events.log's bytes before what a history refill from that snapshot reads are
                     released (`event_log.release_before`: a punched hole, offsets unchanged).

A failed write (ENOSPC, EIO, a failing fsync; every write goes through the injected `FsOps`) in
steps 1-4 fails the commit: CURRENT still names the previous snapshot, the temporary folder is
removed (best effort) and the caller retries later. Steps 5-6 only free space: their failure is
logged and the commit stands (the next commit prunes and truncates again).

Failure cases (a crash after step k; recovery always starts from what CURRENT names):
1-2: CURRENT still names the previous snapshot, whose log segments are all still there; the new
folder is an orphan that the next prune removes. 3: same, events.log is merely synced early.
4-6: recovery uses the new snapshot; anything not yet pruned or truncated is removed by the next
commit. Truncating only before the oldest kept snapshot keeps the fallback (a damaged CURRENT
snapshot → the previous one) lossless. `docs/checkpointing.md` has the long form.

Segments: a job carries `segment_to` (the run's `immutable_before` at capture) and the segments
committed so far; the writer keeps its own list (ahead of the job's while an earlier commit was in
flight) and writes bins [end of that list, segment_to) from the captured matrix as one new segment.
state.json lists every segment (`segments`, `persistedBefore`); committed segments are never
rewritten, so the older kept snapshot's list is a prefix of CURRENT's.

Folder names and CURRENT: `snapshot_writer.snapshot_files`; loading snapshots back (recovery):
`snapshot_writer.snapshot_loader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from engine_live.derived.hooks_state import split_cells
from engine_live.runtime.snapshot_types import Segment, SnapshotJob, SnapshotMeta, segments_end
from engine_live.runtime.storage import REAL_FS, FsOps
from snapshot_writer.atomic_files import Chunk, fsync_dir, fsync_file, json_bytes, write_file, write_json_atomic
from snapshot_writer.event_log import release_before
from snapshot_writer.retained_table import encode_cells, encode_retained
from snapshot_writer.segments import parse_segments, prune_segments, write_segment
from snapshot_writer.snapshot_files import (
    CREATE,
    CURRENT,
    EVENTS_LOG,
    HOOKS,
    RETAINED,
    SNAPSHOTS,
    STATE,
    order_key,
    read_current,
    sha256_digest,
    snapshot_names,
)

log = logging.getLogger("flowtime.snapshots")
STEPS = ("temp_written", "renamed", "events_synced", "current_switched", "pruned", "log_truncated")
# Snapshot commits of every run share these threads: a burst of commits never queues the runs'
# log writes, which use the default executor (`ingestion.ingest_log`).
COMMIT_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="snapshot-commit")


class SnapshotWriter:
    """Commits snapshots of one run, one at a time. `after_step` is the crash-injection seam."""

    def __init__(
        self,
        live_dir: Path,
        *,
        keep: int = 2,
        after_step: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
        events_keep: tuple[int, int] | None = None,
        truncate_log: Callable[[Path, int], object] | None = None,
        fs: FsOps = REAL_FS,
    ) -> None:
        self.live_dir, self.keep, self.fs = live_dir, max(1, keep), fs
        # drops ingestion-log segments a committed snapshot covers (injected: the log is `ingestion`'s)
        self.truncate_log = truncate_log or (lambda live_dir, offset: None)
        self.events_keep = events_keep  # (events, bytes) of events.log a history refill reads; None: keep all
        self.after_step = after_step or (lambda step: None)
        self.clock = clock
        self.lock = asyncio.Lock()
        self.segments: tuple[Segment, ...] | None = None  # committed by this writer (None: none yet)

    async def commit(self, job: SnapshotJob) -> SnapshotMeta:
        """Commit `job` in a worker thread, after any commit still in flight."""
        async with self.lock:  # on the commit threads, not the default pool the log's fsyncs use
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(COMMIT_THREADS, contextvars.copy_context().run, self.commit_sync, job)

    def commit_sync(self, job: SnapshotJob) -> SnapshotMeta:
        """The six commit steps (module docstring) for one job; the meta of the committed snapshot."""
        started = self.clock() if self.clock else 0.0
        if job.state.delta is not None:  # an incremental capture: the full matrix is rebuilt here, off the loop
            job = replace(job, state=job.state.delta.mirror.materialize(job.state))
        snaps = self.live_dir / SNAPSHOTS
        self.fs.mkdir(snaps, parents=True, exist_ok=True)
        name = self._name(job, snaps)
        if isinstance(name, SnapshotMeta):
            return name  # nothing happened since: the same state is already committed
        segments = self._write_segments(job)
        retained = encode_retained(job.state.V, job.state.P, job.state.base, job.state.names, job.state.telemetry_ids)
        create = json_bytes(job.create)
        hooks, cells = _hooks_parts(job.state.hooks)
        files: list[tuple[str, tuple[Chunk, ...]]] = [(RETAINED, (retained,)), (CREATE, (create,))]
        if cells is not None:
            files.append((HOOKS, cells))
        state = json_bytes(_state_body(job, hooks, files, segments))
        self._write_folder(snaps, name, [*files, (STATE, (state,))])
        events = self.live_dir / EVENTS_LOG
        if events.exists():
            fsync_file(events, fs=self.fs)
        self.after_step("events_synced")
        write_json_atomic(self.live_dir / CURRENT, {"snapshot": name, "stateHash": sha256_digest(state)}, fs=self.fs)
        self.segments = segments
        self.after_step("current_switched")
        self._free_space(name, job, segments)
        size = sum(memoryview(chunk).nbytes for _, chunks in files for chunk in chunks) + len(state)
        meta = self._meta(name, job, sha256_digest(state))
        took = (self.clock() - started) if self.clock else 0.0
        return replace(meta, duration_s=took, size_bytes=size, segments=segments)

    def _write_folder(self, snaps: Path, name: str, files: list[tuple[str, tuple[Chunk, ...]]]) -> None:
        """Steps 1-2: the files into a temporary folder (each fsynced), the folder fsynced and renamed
        to `snapshots/<name>`. On failure the temporary folder is removed (best effort)."""
        tmp = snaps / f".tmp-{name}-{secrets.token_hex(4)}"
        self.fs.mkdir(tmp)
        try:
            for file_name, chunks in files:
                write_file(tmp / file_name, chunks, fs=self.fs)
            fsync_dir(tmp, fs=self.fs)
            self.after_step("temp_written")
            self.fs.rename(tmp, snaps / name)
        except OSError:
            with contextlib.suppress(OSError):
                self.fs.rmtree(tmp)
            raise
        fsync_dir(snaps, fs=self.fs)
        self.after_step("renamed")

    def _free_space(self, name: str, job: SnapshotJob, segments: tuple[Segment, ...]) -> None:
        """Steps 5-6 after CURRENT switched: prune, truncate the log, release events.log. They only
        free space, so a failed write here is logged and the commit stands."""
        kept = self.kept(name)
        try:
            self.prune(kept)
            if job.segment_to is not None:
                prune_segments(self.live_dir, segments, fs=self.fs)
        except OSError as exc:
            log.warning("run folder %s: pruning after a snapshot failed: %s", self.live_dir, exc)
        self.after_step("pruned")
        metas = [m for m in (_read_meta(self.live_dir, n) for n in kept) if m is not None]
        try:
            self.truncate_log(self.live_dir, min([job.log_offset, *(m.log_offset for m in metas)]))
            if self.events_keep is not None and job.state.epoch == self._events_epoch(metas):
                n_events, n_bytes = self.events_keep
                release_before(
                    self.live_dir / EVENTS_LOG,
                    min([job.events_offset, *(m.events_offset for m in metas)]),
                    keep_events=n_events,
                    keep_bytes=n_bytes,
                )
        except OSError as exc:
            log.warning("run folder %s: truncating after a snapshot failed: %s", self.live_dir, exc)
        self.after_step("log_truncated")

    @staticmethod
    def _events_epoch(metas: list[SnapshotMeta]) -> str | None:
        """The epoch all kept snapshots share (events.log restarts with an epoch), else None."""
        epochs = {m.epoch for m in metas}
        return epochs.pop() if len(epochs) == 1 else None

    def _write_segments(self, job: SnapshotJob) -> tuple[Segment, ...]:
        """The committed segments plus, when the job has immutable bins past them, one new segment
        (written and fsynced here, before the snapshot folder: CURRENT never names a missing one)."""
        mine = self.segments
        held = mine if mine is not None and segments_end(mine) >= segments_end(job.segments) else job.segments
        state, end = job.state, job.segment_to
        start = segments_end(held)
        if end is None or end <= start:
            return held
        if start < state.base or end > state.held_to:
            raise ValueError(
                f"snapshot of seq {state.seq}: bins {start}..{end - 1} are not in the captured matrix "
                f"(held {state.base}..{state.held_to - 1})"
            )
        cols = slice(start - state.base, end - state.base)
        segment = write_segment(
            self.live_dir, state.V[:, cols], state.P[:, cols], start, state.names, state.telemetry_ids, fs=self.fs
        )
        return (*held, segment)

    def _name(self, job: SnapshotJob, snaps: Path) -> str | SnapshotMeta:
        """`<seq>`, else `<seq>.<logOffset>`; the committed meta when CURRENT already holds this state."""
        current = read_current(self.live_dir)
        for name in (str(job.state.seq), f"{job.state.seq}.{job.log_offset}"):
            if not (snaps / name).exists():
                return name
            held = _read_meta(self.live_dir, name)
            if (
                current is not None
                and current[0] == name
                and held is not None
                and (held.log_offset, held.epoch) == (job.log_offset, job.state.epoch)
            ):
                return held
        with contextlib.suppress(OSError):  # a leftover of a crashed commit (or another epoch)
            self.fs.rmtree(snaps / name)
        return name

    def _meta(self, name: str, job: SnapshotJob, state_hash: str) -> SnapshotMeta:
        return SnapshotMeta(
            name,
            self.live_dir / SNAPSHOTS / name,
            job.log_offset,
            job.events_offset,
            dict(job.kafka_offsets),
            job.create,
            state_hash,
            job.state.seq,
            job.state.last_bin,
            job.state.epoch,
        )

    def kept(self, current: str) -> list[str]:
        """`current` and the newest keep-1 older snapshots: what a commit of `current` keeps."""
        older = [name for name in snapshot_names(self.live_dir / SNAPSHOTS) if order_key(name) < order_key(current)]
        return [current, *older[: self.keep - 1]]

    def prune(self, kept: list[str]) -> None:
        """Remove every snapshot folder (and temp folder or stray file) `kept` does not name."""
        snaps = self.live_dir / SNAPSHOTS
        removed = False
        for entry in snaps.iterdir():
            if entry.name in kept:
                continue
            if entry.is_dir():
                self.fs.rmtree(entry)
            else:
                self.fs.unlink(entry, missing_ok=True)
            removed = True
        if removed:
            fsync_dir(snaps, fs=self.fs)


def _state_body(
    job: SnapshotJob, hooks: Any, files: list[tuple[str, tuple[Chunk, ...]]], segments: tuple[Segment, ...]
) -> dict[str, Any]:
    """state.json: the run's counters, offsets, retained range, file hashes and segments."""
    lo, hi = job.state.retained_range()
    return {
        **job.state.counters(hooks=False),
        "hooks": hooks,
        "logOffset": job.log_offset,
        "eventsOffset": job.events_offset,
        "kafkaOffsets": {str(k): v for k, v in sorted(job.kafka_offsets.items())},
        "retained": {"fromBin": lo, "toBin": hi - 1, "heldBins": [job.state.base, job.state.held_to]},
        "files": {file_name: sha256_digest(*chunks) for file_name, chunks in files},
        "segments": [segment.to_wire() for segment in segments],
        "persistedBefore": segments_end(segments)
        if job.segment_to is not None or segments
        else job.state.persisted_before,
    }


def _hooks_parts(hooks: Any) -> tuple[Any, tuple[memoryview, ...] | None]:
    """(state.json's `hooks`, the hooks.bin bytes or None). Runs in the commit thread: a hooks
    capture (`HooksCapture`) is turned into its state here, off the event loop."""
    to_state = getattr(hooks, "to_state", None)
    if callable(to_state):
        hooks = to_state()
    if isinstance(hooks, dict) and isinstance(hooks.get("cells"), dict):
        part, cells = split_cells(hooks)
        data, rows = encode_cells(cells)
        return {**part, "cells": {"file": HOOKS, "rows": rows}}, data
    return hooks, None


def _read_meta(live_dir: Path, name: str) -> SnapshotMeta | None:
    """The meta of a committed snapshot from its state.json alone (None when unreadable)."""
    try:
        raw = (live_dir / SNAPSHOTS / name / STATE).read_bytes()
        body = orjson.loads(raw)
        return SnapshotMeta(
            name,
            live_dir / SNAPSHOTS / name,
            int(body["logOffset"]),
            int(body["eventsOffset"]),
            {int(k): int(v) for k, v in body["kafkaOffsets"].items()},
            {},
            sha256_digest(raw),
            int(body["seq"]),
            int(body["lastBin"]),
            str(body["epoch"]),
            segments=parse_segments(body.get("segments")),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
