"""The snapshot writer of a live run: the one object that owns the commit order (SPEC §6 Snapshots).

Folder `runs/<id>/live/`: `snapshots/<name>/{state.json, create.json, retained.parquet[, hooks.bin]}`,
`CURRENT`,
`events.log`, the ingestion-log segments (`snapshot_writer.log_segments`). `<name>` is the seq, or
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

`load_current(live_dir)` validates CURRENT's snapshot (state hash from CURRENT, file hashes from
state.json, shapes) and otherwise falls back to the newest other valid snapshot.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine_live.derived.hooks_state import join_cells, split_cells
from engine_live.state.live_state import RunState
from snapshot_writer.atomic_files import Chunk, fsync_dir, fsync_file, json_bytes, write_file, write_json_atomic
from snapshot_writer.event_log import release_before
from snapshot_writer.log_segments import truncate_log_before
from snapshot_writer.retained_table import decode_cells, decode_retained, encode_cells, encode_retained
from snapshot_writer.segments import (
    Segment,
    check_segments,
    parse_segments,
    prune_segments,
    segments_end,
    write_segment,
)

STEPS = ("temp_written", "renamed", "events_synced", "current_switched", "pruned", "log_truncated")
SNAPSHOTS, CURRENT, EVENTS_LOG = "snapshots", "CURRENT", "events.log"
STATE, CREATE, RETAINED, HOOKS = "state.json", "create.json", "retained.parquet", "hooks.bin"
_NAME = re.compile(r"^(\d+)(?:\.(\d+))?$")


def _sha(*chunks: Chunk) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return "sha256:" + h.hexdigest()


def order_key(name: str) -> tuple[int, int]:
    m = _NAME.match(name)
    if m is None:
        raise ValueError(name)
    return int(m.group(1)), int(m.group(2)) if m.group(2) else -1


@dataclass(frozen=True)
class SnapshotJob:
    """What a capture hands to the writer (taken between two records)."""

    state: RunState
    log_offset: int  # end offset of the last applied record: replay starts here
    events_offset: int  # bytes of events.log holding events 1..state.seq
    create: dict[str, Any]  # the create record (runId, epoch, createdUtc, model, options)
    kafka_offsets: dict[int, int] = field(default_factory=dict)
    segment_to: int | None = None  # write segments for the bins below this (None: the run is not persisted)
    segments: tuple[Segment, ...] = ()  # the segments committed when the job was captured


@dataclass(frozen=True)
class SnapshotMeta:
    name: str
    path: Path
    log_offset: int
    events_offset: int
    kafka_offsets: dict[int, int]
    create: dict[str, Any]
    state_hash: str
    seq: int = 0
    last_bin: int = -1
    epoch: str = ""
    fell_back: bool = False  # CURRENT was missing or its snapshot damaged
    problems: tuple[str, ...] = ()
    duration_s: float = 0.0
    size_bytes: int = 0
    segments: tuple[Segment, ...] = ()  # every segment this snapshot lists (contiguous from bin 0)
    # loaded snapshots: decodes retained.parquet again into fresh (V, P) (a mirror's own copy, later)
    reload: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)
    matrix: Future[tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)  # deferred (V, P)


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
    ) -> None:
        self.live_dir, self.keep = live_dir, max(1, keep)
        self.events_keep = events_keep  # (events, bytes) of events.log a history refill reads; None: keep all
        self.after_step = after_step or (lambda step: None)
        self.clock = clock
        self.lock = asyncio.Lock()
        self.commits = 0
        self.segments: tuple[Segment, ...] | None = None  # committed by this writer (None: none yet)

    async def commit(self, job: SnapshotJob) -> SnapshotMeta:
        async with self.lock:
            return await asyncio.to_thread(self.commit_sync, job)

    def commit_sync(self, job: SnapshotJob) -> SnapshotMeta:
        t0 = self.clock() if self.clock else 0.0
        if job.state.delta is not None:  # an incremental capture: the full matrix is rebuilt here, off the loop
            job = replace(job, state=job.state.delta.mirror.materialize(job.state))
        snaps = self.live_dir / SNAPSHOTS
        snaps.mkdir(parents=True, exist_ok=True)
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
        lo, hi = job.state.retained_range()
        body = {
            **job.state.counters(hooks=False),
            "hooks": hooks,
            "logOffset": job.log_offset,
            "eventsOffset": job.events_offset,
            "kafkaOffsets": {str(k): v for k, v in sorted(job.kafka_offsets.items())},
            "retained": {"fromBin": lo, "toBin": hi - 1, "heldBins": [job.state.base, job.state.held_to]},
            "files": {f: _sha(*chunks) for f, chunks in files},
            "segments": [seg.to_wire() for seg in segments],
            "persistedBefore": segments_end(segments)
            if job.segment_to is not None or segments
            else job.state.persisted_before,
        }
        state = json_bytes(body)
        tmp = snaps / f".tmp-{name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        for fname, chunks in (*files, (STATE, (state,))):
            write_file(tmp / fname, chunks)
        fsync_dir(tmp)
        self.after_step("temp_written")
        tmp.rename(snaps / name)
        fsync_dir(snaps)
        self.after_step("renamed")
        events = self.live_dir / EVENTS_LOG
        if events.exists():
            fsync_file(events)
        self.after_step("events_synced")
        write_json_atomic(self.live_dir / CURRENT, {"snapshot": name, "stateHash": _sha(state)})
        self.segments = segments
        self.after_step("current_switched")
        kept = self.prune(name)
        if job.segment_to is not None:
            prune_segments(self.live_dir, segments)
        self.after_step("pruned")
        metas = [m for m in (_read_meta(self.live_dir, n) for n in kept) if m is not None]
        truncate_log_before(self.live_dir, min([job.log_offset, *(m.log_offset for m in metas)]))
        if self.events_keep is not None and job.state.epoch == self._events_epoch(metas):
            n_events, n_bytes = self.events_keep
            release_before(
                events,
                min([job.events_offset, *(m.events_offset for m in metas)]),
                keep_events=n_events,
                keep_bytes=n_bytes,
            )
        self.after_step("log_truncated")
        self.commits += 1
        size = sum(memoryview(c).nbytes for _, chunks in files for c in chunks) + len(state)
        meta = self._meta(name, job, _sha(state))
        took = (self.clock() - t0) if self.clock else 0.0
        return replace(meta, duration_s=took, size_bytes=size, segments=segments)

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
        st, to = job.state, job.segment_to
        start = segments_end(held)
        if to is None or to <= start:
            return held
        if start < st.base or to > st.held_to:
            raise ValueError(
                f"snapshot of seq {st.seq}: bins {start}..{to - 1} are not in the captured matrix "
                f"(held {st.base}..{st.held_to - 1})"
            )
        cols = slice(start - st.base, to - st.base)
        seg = write_segment(self.live_dir, st.V[:, cols], st.P[:, cols], start, st.names, st.telemetry_ids)
        return (*held, seg)

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
        shutil.rmtree(snaps / name, ignore_errors=True)  # a leftover of a crashed commit (or another epoch)
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

    def prune(self, current: str) -> list[str]:
        """Keep `current` and the newest keep-1 older snapshots; remove the rest and temp folders."""
        snaps = self.live_dir / SNAPSHOTS
        named = sorted((p.name for p in snaps.iterdir() if _NAME.match(p.name)), key=order_key, reverse=True)
        older = [n for n in named if order_key(n) < order_key(current)]
        kept = [current, *older[: self.keep - 1]]
        removed = False
        for p in snaps.iterdir():
            if p.name in kept:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed = True
        if removed:
            fsync_dir(snaps)
        return kept


def _hooks_parts(hooks: Any) -> tuple[Any, tuple[memoryview, ...] | None]:
    """(state.json's `hooks`, the hooks.bin bytes or None). Runs in the commit thread: a hooks
    capture (`HooksCapture`) is turned into its state here, off the event loop."""
    to_state = getattr(hooks, "to_state", None)
    if callable(to_state):
        hooks = to_state()
    if isinstance(hooks, dict) and isinstance(hooks.get("cells"), dict):
        part, cells = split_cells(hooks)
        data, n = encode_cells(cells)
        return {**part, "cells": {"file": HOOKS, "rows": n}}, data
    return hooks, None


def read_current(live_dir: Path) -> tuple[str, str] | None:
    """(snapshot name, state hash) from CURRENT, or None when missing or unreadable."""
    try:
        cur = orjson.loads((live_dir / CURRENT).read_bytes())
        name, digest = cur["snapshot"], cur["stateHash"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not _NAME.match(name) or not isinstance(digest, str):
        return None
    return name, digest


def _read_meta(live_dir: Path, name: str) -> SnapshotMeta | None:
    try:
        raw = (live_dir / SNAPSHOTS / name / STATE).read_bytes()
        s = orjson.loads(raw)
        return SnapshotMeta(
            name,
            live_dir / SNAPSHOTS / name,
            int(s["logOffset"]),
            int(s["eventsOffset"]),
            {int(k): int(v) for k, v in s["kafkaOffsets"].items()},
            {},
            _sha(raw),
            int(s["seq"]),
            int(s["lastBin"]),
            str(s["epoch"]),
            segments=parse_segments(s.get("segments")),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def load_snapshot(
    live_dir: Path, name: str, state_hash: str | None = None, *, defer_matrix: bool = False
) -> tuple[RunState, SnapshotMeta]:
    """Read and validate one snapshot folder; ValueError (with the reason) when it is damaged.

    With `defer_matrix` (recovery) every hash is checked here but retained.parquet is decoded in a
    background thread: the state's V/P are empty until `meta.matrix.result()` gives them, so the
    warning book can be rebuilt meanwhile. A file that matches its hash and still does not decode
    (a writer bug, not damage) then fails the run's recovery instead of falling back."""
    folder = live_dir / SNAPSHOTS / name
    try:
        raw = (folder / STATE).read_bytes()
        if state_hash is not None and _sha(raw) != state_hash:
            raise ValueError("state.json does not match the hash CURRENT recorded")
        s = orjson.loads(raw)
        files = {f: (folder / f).read_bytes() for f in (RETAINED, CREATE, HOOKS) if f in s["files"]}
        for f in (RETAINED, CREATE):
            if f not in files:
                raise ValueError(f"state.json lists no {f}")
        width = int(s["columns"])  # as wide as the run's window: a recovery adopts the arrays

        def decode() -> tuple[Any, Any]:
            return decode_retained(files[RETAINED], int(s["base"]), s["names"], s["telemetryIds"], width=width)

        matrix: Future[tuple[Any, Any]] | None = None
        if defer_matrix:
            for f, data in files.items():
                if _sha(data) != s["files"][f]:
                    raise ValueError(f"{f} does not match its hash in state.json")
            matrix = _DECODER.submit(decode)
            V = np.zeros((len(s["names"]), 0))
            P = np.zeros((len(s["telemetryIds"]), 0), dtype=bool)
        else:
            with ThreadPoolExecutor(1) as pool:  # hash (releases the GIL) while the table decodes
                digests = pool.submit(lambda: {f: _sha(data) for f, data in files.items()})
                try:
                    VP: tuple[Any, Any] | Exception = decode()
                except Exception as exc:  # a damaged file: its hash says so first
                    VP = exc
                for f, digest in digests.result().items():
                    if digest != s["files"][f]:
                        raise ValueError(f"{f} does not match its hash in state.json")
            if isinstance(VP, Exception):
                raise VP
            V, P = VP
        hooks = s.get("hooks")
        ref = hooks.get("cells") if isinstance(hooks, dict) else None
        if isinstance(ref, dict) and ref.get("file") == HOOKS:
            if HOOKS not in files:
                raise ValueError(f"state.json lists no {HOOKS}")
            s["hooks"] = join_cells(hooks, decode_cells(files[HOOKS], int(ref["rows"])))
        state = RunState.from_counters(s, V, P)
        segments = parse_segments(s.get("segments"))
        if segments and state.persisted_before != segments_end(segments):
            raise ValueError("persistedBefore does not match the listed segments")
        check_segments(live_dir, segments)
        meta = SnapshotMeta(
            name,
            folder,
            int(s["logOffset"]),
            int(s["eventsOffset"]),
            {int(k): int(v) for k, v in s["kafkaOffsets"].items()},
            orjson.loads(files[CREATE]),
            _sha(raw),
            state.seq,
            state.last_bin,
            state.epoch,
            segments=segments,
            reload=_reloader(files[RETAINED], state),
            matrix=matrix,
        )
    except ValueError:
        raise
    except Exception as exc:  # any unreadable part makes the snapshot unusable
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    return state, meta


def _reloader(data: bytes, state: RunState) -> Callable[[], tuple[Any, Any]]:
    def reload() -> tuple[Any, Any]:
        return decode_retained(data, state.base, state.names, state.telemetry_ids)

    return reload


_DECODER = ThreadPoolExecutor(1, thread_name_prefix="snapshot-decode")


def load_current(live_dir: Path, *, defer_matrix: bool = False) -> tuple[RunState, SnapshotMeta] | None:
    """CURRENT's snapshot; when it is missing or damaged, the newest other valid one (meta.fell_back)."""
    problems: list[str] = []
    current = read_current(live_dir)
    if current is None:
        if (live_dir / CURRENT).exists():
            problems.append("CURRENT is unreadable")
        elif (live_dir / SNAPSHOTS).is_dir():
            problems.append("CURRENT is missing")
    else:
        try:
            return load_snapshot(live_dir, *current, defer_matrix=defer_matrix)
        except ValueError as exc:
            problems.append(f"snapshot {current[0]} is damaged: {exc}")
    snaps = live_dir / SNAPSHOTS
    names = (
        sorted((p.name for p in snaps.iterdir() if _NAME.match(p.name)), key=order_key, reverse=True)
        if snaps.is_dir()
        else []
    )
    for name in names:
        if current is not None and name == current[0]:
            continue
        try:
            state, meta = load_snapshot(live_dir, name, defer_matrix=defer_matrix)
        except ValueError as exc:
            problems.append(f"snapshot {name} is damaged: {exc}")
            continue
        return state, replace(meta, fell_back=True, problems=tuple(problems))
    return None


__all__ = [
    "CURRENT",
    "EVENTS_LOG",
    "STEPS",
    "SnapshotJob",
    "SnapshotMeta",
    "SnapshotWriter",
    "load_current",
    "load_snapshot",
    "read_current",
]
