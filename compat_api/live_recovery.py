"""Recovery at start: every unfinished run is rebuilt from its CURRENT snapshot and its log (SPEC §6).

Per run folder `runs/<id>/live/` (one with log segments, a CURRENT or snapshots):

1. `load_current` — CURRENT's snapshot, or (CURRENT missing/damaged) the newest other valid one.
   Without a usable snapshot the run is rebuilt from the create record at log offset 0 (the
   whole log), as before snapshots existed.
2. `scan_log` from the snapshot's log offset across the segments. A torn tail of the newest
   segment was never acknowledged: it is cut with a warning.
3. The run is restored (`restore`, adjustments re-applied to the plan first) together with the
   snapshot's segment list (`live/segments/`, the bins that already left memory: `load_current`
   checked they exist, close reads them back); the hub history is
   refilled from `events.log` up to the snapshot's seq, and anything past that (it may not have
   been fsynced) is cut — the replay regenerates it.
4. The log from the snapshot's offset is replayed through `service.apply`: events are a pure
   function of the log, so the run continues with the same epoch and seq numbering.

Only when acknowledged records cannot be read (a missing or corrupt older segment, a gap, no
segment at the snapshot's offset) does the run continue with a NEW epoch: `events.log` restarts,
the hub resets to the new epoch at the run's seq, the `status` event (reason
`recovered_with_data_loss: ...`) and an error log say so, and a fresh snapshot is committed at
once so the next start does not see the hole again. `/readyz` stays 503 until every run is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.protocol import RunStatus, encode_event, status_event
from engine_live.state.live_run import FrameColumns, LiveRun
from engine_live.state.live_state import CaptureMirror, RunState, restore
from ingestion.frames import FrameValidator
from ingestion.ingest_log import HEADER
from snapshot_writer.event_log import cut_event_log, read_event_log
from snapshot_writer.live_snapshot import CURRENT, EVENTS_LOG, SnapshotMeta, load_current
from snapshot_writer.log_segments import SegmentedLog, list_segments, scan_log
from snapshot_writer.segments import segments_end

if TYPE_CHECKING:
    from compat_api.live_service import LiveService, RunHandle

log = logging.getLogger("flowtime.recovery")
Record = tuple[int, int, bytes]  # (offset, end offset, the record's JSON)


def live_dirs(runs_dir: Path) -> list[Path]:
    def has_run(d: Path) -> bool:
        return d.is_dir() and bool(list_segments(d) or (d / CURRENT).exists() or (d / "snapshots").is_dir())

    return sorted(d for d in runs_dir.glob("*/live") if has_run(d))


async def recover_runs(service: LiveService, progress: dict[str, int]) -> None:
    dirs = live_dirs(service.runs_dir)
    progress["runs"] = len(dirs)
    for live_dir in dirs:
        try:
            await recover_run(service, live_dir, progress)
        except Exception:
            log.exception(
                "run %s: recovery failed; the run stays down",
                live_dir.parent.name,
                extra={"run_id": live_dir.parent.name},
            )
        progress["runsDone"] += 1


async def recover_run(service: LiveService, live_dir: Path, progress: dict[str, int]) -> RunHandle | None:
    name = live_dir.parent.name
    loaded = await asyncio.to_thread(load_current, live_dir, defer_matrix=True)
    scan = await asyncio.to_thread(scan_log, live_dir, loaded[1].log_offset if loaded else 0)
    if scan.torn_tail is not None:
        log.warning("run %s: cut a torn ingestion-log tail (%s)", name, scan.torn_tail, extra={"run_id": name})
    records: list[Record] = [(off, off + HEADER.size + len(p), p) for off, p in scan.records]  # decoded one by one
    lost = list(scan.lost)
    state: RunState | None = None
    meta: SnapshotMeta | None = None
    if loaded is not None:
        state, meta = loaded
        if meta.fell_back:
            log.warning(
                "run %s: using snapshot %s (%s)", name, meta.name, "; ".join(meta.problems), extra={"run_id": name}
            )
        h = handle_from_snapshot(service, state, meta)
        h.applied_offset = meta.log_offset
    else:
        create = orjson.loads(records[0][2]) if records and records[0][0] == 0 else {}
        if create.get("t") != "create":
            log.error("run %s: no usable snapshot and no create record; skipped", name, extra={"run_id": name})
            return None
        _, end, _ = records.pop(0)
        h = service.build_handle(
            create["runId"], create["epoch"], create["createdUtc"], create["model"], create.get("options") or {}
        )
        h.create_record, h.applied_offset = create, end
    h.folder.mkdir(parents=True, exist_ok=True)
    service.runs[h.run_id] = h
    events_path = h.folder / EVENTS_LOG
    quiet = quiet_records(service, records)
    if lost:
        h.run.epoch = secrets.token_hex(4)
        await asyncio.to_thread(cut_event_log, events_path, 0)
        reset = getattr(service.hub, "reset_epoch", None)
        if reset is not None:
            reset(h.run_id, h.run.epoch, h.run.seq)
        log.error(
            "run %s: ACKNOWLEDGED DATA IS UNREADABLE (%s); continuing with new epoch %s",
            name,
            "; ".join(lost),
            h.run.epoch,
            extra={"run_id": name},
        )
    elif quiet:
        pass  # no refill: the history and events.log restart after the quiet part (`_restart_history`)
    elif state is not None and meta is not None:
        await refill_history(service, h, state, meta)
    else:
        await asyncio.to_thread(cut_event_log, events_path, 0)
    h.events_fh = open(events_path, "ab")  # noqa: SIM115 - lives as long as the run
    if state is None:
        service.emit(h, h.run.start(), replay=True)
    await replay_records(service, h, records, progress, quiet=quiet)
    if h.run.status is RunStatus.LIVE:
        reason = "recovered" if not lost else "recovered_with_data_loss: " + "; ".join(lost)
        ev = status_event(h.run_id, h.run.epoch, h.run.seq, RunStatus.LIVE, reason)
        service.hub.publish(h.run_id, ev, encode_event(ev), seqd=False)
    h.log = SegmentedLog(h.folder, scan.append_base)
    service.attach(h)
    assert h.checkpoint is not None
    if meta is not None and state is not None:
        h.checkpoint.mark(meta.log_offset, state.last_bin)
    if lost and h.run.status.is_open:
        await service.request_snapshot(h)  # put the hole behind CURRENT
    elif quiet and h.run.status.is_open:
        h.checkpoint.make_due()  # a long replay: snapshot at the first chance, so a next start replays little
        h.wake.set()
    return h


def quiet_records(service: LiveService, records: list[Record]) -> int:
    """How many leading records replay quietly: all but the last `recovery_history_records`."""
    window = service.settings.recovery_history_records
    return max(0, len(records) - window) if window > 0 else 0


def handle_from_snapshot(service: LiveService, state: RunState, meta: SnapshotMeta) -> RunHandle:
    """A handle for the snapshot's run: model + logged adjustments → plan, then the restored run."""
    from engine_live.model.patch import Adjustment, compile_patched
    from engine_live.model.text import parse_model_text

    c = meta.create
    if c.get("runId") != state.run_id:
        raise ValueError(f"snapshot {meta.name}: create record is for run {c.get('runId')!r}")
    h = service.build_handle(state.run_id, state.epoch, c["createdUtc"], c["model"], c.get("options") or {})
    plan = h.run.plan
    for wire in c.get("adjustments") or []:
        adj = Adjustment(
            int(wire["modelRevision"]),
            int(wire["fromBin"]),
            list(wire["nodes"]),
            list((wire.get("topology") or {}).get("nodes") or []),
        )
        if h.model_data is None:
            data = parse_model_text(h.model_text)
            h.model_data = data if isinstance(data, dict) else {}
        h.model_data, plan = compile_patched(
            h.model_data, adj, h.graph, service.settings.data_dir / "inputs", live=True
        )
        h.graph = plan.graph
        h.adjustments.append(wire)
    if c.get("adjustments"):
        h.validator = FrameValidator(h.graph, h.run_id, max_bins_ahead=service.settings.max_bins_ahead)
    hooks = h.run.hooks  # the warning book is rebuilt while the matrix decodes in its thread
    if isinstance(hooks, DerivedHooks) and state.hooks is not None:
        hooks, state = DerivedHooks.from_state(plan, state.hooks), replace(state, hooks=None)
    if meta.matrix is not None:
        V, P = meta.matrix.result()
        state = replace(state, V=V, P=P)
    h.run = restore(plan, state, hooks, adopt=meta.reload is not None)  # takes the decoded matrices
    # the first snapshot after recovery is incremental: the mirror gets its own copy of the loaded
    # matrices by decoding retained.parquet again, in the commit thread
    h.seed_mirror = CaptureMirror.seeded(h.run, state, meta.reload)
    h.segments = meta.segments
    h.run.persisted_before = segments_end(meta.segments)  # persistence is tracked from here on in any case
    h.kafka_offsets = dict(meta.kafka_offsets)
    h.create_record = {k: v for k, v in c.items() if k != "adjustments"}
    return h


async def refill_history(service: LiveService, h: RunHandle, state: RunState, meta: SnapshotMeta) -> None:
    """Publish events 1..state.seq from events.log to the hub; cut what lies past the snapshot."""
    path = h.folder / EVENTS_LOG
    limits = service.settings  # decode only what the hub's history keeps (events.log holds every event)
    scan = await asyncio.to_thread(
        read_event_log,
        path,
        meta.events_offset,
        tail_events=limits.hub_history_events,
        tail_bytes=limits.hub_history_bytes,
    )
    seqs = [int(ev.get("seq", -1)) for ev, _ in scan.events]
    ok = (
        scan.problem is None
        and scan.end_offset == meta.events_offset
        and all(ev.get("epoch") == state.epoch for ev, _ in scan.events)
        and seqs == list(range(state.seq - len(seqs) + 1, state.seq + 1))
    )
    if not ok:
        log.warning(
            "run %s: events.log does not hold the snapshot's events (%s); history starts at seq %d",
            h.run_id,
            scan.problem or "mismatch",
            state.seq,
            extra={"run_id": h.run_id},
        )
        await asyncio.to_thread(cut_event_log, path, 0)
        ensure = getattr(service.hub, "ensure_run", None)
        if ensure is not None:
            ensure(h.run_id, state.epoch, state.seq)
        return
    await asyncio.to_thread(cut_event_log, path, meta.events_offset)
    if not scan.events:
        ensure = getattr(service.hub, "ensure_run", None)
        if ensure is not None:
            ensure(h.run_id, state.epoch, state.seq)
    for ev, data in scan.events:
        service.hub.publish(h.run_id, ev, data, seqd=True)


async def replay_records(
    service: LiveService, h: RunHandle, records: list[Record], progress: dict[str, int], *, quiet: int = 0
) -> None:
    """Apply the logged records after the snapshot, in order, as the worker did.

    The first `quiet` records replay without building events (`LiveRun.quiet`: seq numbers, hooks
    and state advance exactly as when publishing); then the hub history and `events.log` restart
    at the seq reached (clients with an older cursor get a snapshot) and the rest replay normally.
    """
    run = h.run
    for i, (offset, end, payload) in enumerate(records):
        if i == quiet and quiet:
            run.quiet = False
            _restart_history(service, h)
        run.quiet = i < quiet
        rec = orjson.loads(payload)
        kind = rec.get("t")
        if kind == "create":
            if run.status is RunStatus.CREATED:  # a snapshot taken before the create was applied
                service.emit(h, run.start(), replay=True)
        elif kind in ("cols", "frames"):
            if "src" in rec:
                part, off = rec["src"]
                h.kafka_offsets[part] = max(h.kafka_offsets.get(part, -1), off)
            try:
                await service.apply(h, record_columns(run, rec), offset, replay=True)
            except Exception as exc:
                log.info("run %s: record at %d rejected again on replay: %s", h.run_id, offset, exc)
        elif kind == "patch":
            run.flush()  # a PATCH reads lastBin (its default and highest fromBin)
            try:
                patch = service.prepare_patch(h, {k: v for k, v in rec.items() if k not in ("t", "modelRevision")})
                service.apply_patch(h, patch, offset, replay=True)
            except Exception as exc:
                log.info("run %s: patch at %d rejected again on replay: %s", h.run_id, offset, exc)
        elif kind == "close":
            h.closing = True
            run.quiet = False  # the close's events (statuses, the last bins) are the run's end: publish them
            if quiet > i:
                _restart_history(service, h)
                quiet = i
            try:
                await service.apply(h, None, offset, replay=True)
            except Exception as exc:
                log.error(
                    "run %s: close at %d failed again on replay: %s", h.run_id, offset, exc, extra={"run_id": h.run_id}
                )
        h.applied_offset = end
        progress["records"] = progress.get("records", 0) + 1
        if i % 32 == 31:
            await asyncio.sleep(0)  # let /readyz, /healthz and the gate answer while a long log replays
    run.quiet = False


def _restart_history(service: LiveService, h: RunHandle) -> None:
    """After a quiet replay: the hub history and events.log start over at the run's current seq."""
    reset = getattr(service.hub, "reset_epoch", None)
    if reset is not None:
        reset(h.run_id, h.run.epoch, h.run.seq)
    if h.events_fh is not None:
        h.events_fh.close()
    cut_event_log(h.folder / EVENTS_LOG, 0)
    h.events_fh = open(h.folder / EVENTS_LOG, "ab")  # noqa: SIM115 - lives as long as the run


def record_columns(run: LiveRun, rec: dict[str, Any]) -> FrameColumns:
    """A logged frames record (`cols`, or `frames` of older logs) as columns for `LiveRun.apply_columns`."""
    if rec["t"] == "cols":
        series, values, b = rec["s"], rec["v"], rec["b"]
        bins = np.full(len(series), b, dtype=np.int64) if isinstance(b, int) else np.array(b, dtype=np.int64)
    elif rec["f"]:
        b, series, values = zip(*rec["f"], strict=True)
        bins = np.array(b, dtype=np.int64)
    else:
        series, values, bins = (), (), np.zeros(0, dtype=np.int64)
    if len(bins) != len(series) or len(values) != len(series):
        raise ValueError("a frames record with columns of different lengths")
    return FrameColumns(bins, run.series_index(series), np.array(values, dtype=np.float64))


__all__ = [
    "handle_from_snapshot",
    "live_dirs",
    "quiet_records",
    "record_columns",
    "recover_run",
    "recover_runs",
    "refill_history",
    "replay_records",
]
