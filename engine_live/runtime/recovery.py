"""Recovery at start: every unfinished run is rebuilt from its CURRENT snapshot and its log (SPEC §6).

`Recovery.recover(live_dir)` loads the snapshot, replays the log tail and hands back the run; the
service adopts it (opens its files, starts its worker) and calls `after_adopt`. Per run folder
`runs/<id>/live/`:

1. `SnapshotStore.load` — CURRENT's snapshot, or (CURRENT missing/damaged) the newest other valid
   one. Without a usable snapshot the run is rebuilt from the create record at log offset 0.
2. `LogStore.scan` from the snapshot's log offset across the segments. A torn tail of the newest
   segment was never acknowledged: it is cut with a warning.
3. The run is restored (adjustments re-applied to the plan first) with the snapshot's segment
   list; the hub history is refilled from `events.log` up to the snapshot's seq, and anything past
   that is cut — the replay regenerates it.
4. The log from the snapshot's offset is replayed through `Applier.apply`: events are a pure
   function of the log, so the run continues with the same epoch and seq numbering. All but the
   last `recovery_history_records` records replay quietly (no events built; seq still counted),
   after which the history and `events.log` restart at the seq reached.

A record that fails to evaluate on replay (an exception other than a refusal the live path made
too) fails the run there (`RunFailures`, cause `recovery`): the records after it are not applied,
the run is adopted `failed` with the reason, and the other runs recover as usual.

Only when acknowledged records cannot be read (a missing or corrupt older segment, a gap) does the
run continue with a NEW epoch: `events.log` restarts, the hub resets to the new epoch at the run's
seq, the `status` event (reason `recovered_with_data_loss: ...`) and an error log say so, and a
fresh snapshot is committed at once so the next start does not see the hole again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import IngestError, ModelError
from engine_live.model.patch import Adjustment, compile_patched
from engine_live.model.text import parse_model_text
from engine_live.protocol import RunStatus, encode_event, status_event
from engine_live.runtime.apply import Applier
from engine_live.runtime.build import build_handle
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.failures import RunFailures, failure_reason
from engine_live.runtime.handle import RunHandle
from engine_live.runtime.ports import LoadedSnapshot
from engine_live.runtime.records import CloseRecord, CreateRecord, PatchRecord
from engine_live.runtime.snapshot_types import segments_end
from engine_live.state.live_state import CaptureMirror, restore

if TYPE_CHECKING:
    from engine_live.runtime.checkpoints import Checkpoints

log = logging.getLogger("flowtime.recovery")
YIELD_EVERY_RECORDS = 32  # let /readyz, /healthz and the gate answer while a long log replays


@dataclass
class RecoveryProgress:
    """How far recovery is: run folders found and done, log records replayed."""

    runs: int = 0
    runs_done: int = 0
    records: int = 0

    def to_wire(self) -> dict[str, int]:
        """As `/readyz` and the 503 `recovering` answer show it."""
        return {"runs": self.runs, "runsDone": self.runs_done, "records": self.records}


@dataclass
class RecoveredRun:
    """A run rebuilt by recovery, with what the service must do once it adopted it."""

    handle: RunHandle
    append_base: int  # the log segment appends continue in
    snapshot: tuple[int, int] | None = None  # (log offset, last bin) the loaded snapshot covers
    lost: list[str] = field(default_factory=list)  # acknowledged records that could not be read
    quiet: bool = False  # part of the tail replayed quietly: snapshot soon


class Recovery:
    """Rebuilds runs from their folders (see the module docstring)."""

    def __init__(self, ctx: RuntimeContext, applier: Applier, failures: RunFailures) -> None:
        self.ctx, self.applier, self.failures = ctx, applier, failures
        self.progress = RecoveryProgress()

    async def recover_each(self, dirs: list[Path]) -> AsyncIterator[RecoveredRun]:
        """Recover the runs of `dirs` one by one (a run that fails to recover is logged and stays down)."""
        self.progress.runs = len(dirs)
        for live_dir in dirs:
            try:
                recovered = await self.recover(live_dir)
            except Exception:
                name = live_dir.parent.name
                log.exception("run %s: recovery failed; the run stays down", name, extra={"run_id": name})
                recovered = None
            if recovered is not None:
                yield recovered
            self.progress.runs_done += 1

    async def recover(self, live_dir: Path) -> RecoveredRun | None:
        """Rebuild the run of `live_dir`; None (logged) when there is nothing to rebuild it from."""
        name = live_dir.parent.name
        loaded = await asyncio.to_thread(self.ctx.snapshots.load, live_dir)
        tail = await asyncio.to_thread(self.ctx.logs.scan, live_dir, loaded.meta.log_offset if loaded else 0)
        if tail.torn_tail is not None:
            log.warning("run %s: cut a torn ingestion-log tail (%s)", name, tail.torn_tail, extra={"run_id": name})
        records = tail.records
        if loaded is not None:
            if loaded.meta.fell_back:
                problems = "; ".join(loaded.meta.problems)
                log.warning("run %s: using snapshot %s (%s)", name, loaded.meta.name, problems, extra={"run_id": name})
            h = self.from_snapshot(loaded)
            h.durable.applied_offset = loaded.meta.log_offset
        else:
            create = self.ctx.logs.decode(records[0][2]) if records and records[0][0] == 0 else None
            if not isinstance(create, CreateRecord):
                log.error("run %s: no usable snapshot and no create record; skipped", name, extra={"run_id": name})
                return None
            _, end, _ = records.pop(0)
            h = build_handle(self.ctx, create)
            h.durable.applied_offset = end
        h.folder.mkdir(parents=True, exist_ok=True)
        recovered = RecoveredRun(h, tail.append_base, lost=list(tail.lost))
        if loaded is not None:
            recovered.snapshot = (loaded.meta.log_offset, loaded.state.last_bin)
        quiet = self.quiet_records(len(records))
        recovered.quiet = quiet > 0
        await self._prepare_history(h, loaded, recovered.lost, quiet)
        h.files.events = self.ctx.snapshots.open_events(h.folder)
        if loaded is None:
            self.applier.publisher.emit(h, h.run.start())
        await self.replay(h, records, quiet=quiet)
        if h.run.status is RunStatus.LIVE:
            reason = "recovered" if not recovered.lost else "recovered_with_data_loss: " + "; ".join(recovered.lost)
            event = status_event(h.run_id, h.run.epoch, h.run.seq, RunStatus.LIVE, reason)
            self.ctx.sink.publish(h.run_id, event, encode_event(event), seqd=False)
        h.files.log = self.ctx.logs.open_at(h.folder, tail.append_base)
        return recovered

    async def _prepare_history(self, h: RunHandle, loaded: LoadedSnapshot | None, lost: list[str], quiet: int) -> None:
        """Set up the hub history and `events.log` the replay continues."""
        if lost:
            h.run.epoch = secrets.token_hex(4)
            await asyncio.to_thread(self.ctx.snapshots.cut_events, h.folder, 0)
            self.ctx.sink.reset_epoch(h.run_id, h.run.epoch, h.run.seq)
            log.error(
                "run %s: ACKNOWLEDGED DATA IS UNREADABLE (%s); continuing with new epoch %s",
                h.run_id,
                "; ".join(lost),
                h.run.epoch,
                extra={"run_id": h.run_id},
            )
        elif quiet:
            pass  # no refill: the history and events.log restart after the quiet part (`_restart_history`)
        elif loaded is not None:
            await self.refill_history(h, loaded)
        else:
            await asyncio.to_thread(self.ctx.snapshots.cut_events, h.folder, 0)

    async def after_adopt(self, recovered: RecoveredRun, checkpoints: Checkpoints) -> None:
        """Once the service adopted the run: mark its snapshot; snapshot soon after a hole or a long replay."""
        h = recovered.handle
        checkpoint = h.files.checkpoint
        assert checkpoint is not None
        if recovered.snapshot is not None:
            checkpoint.mark(*recovered.snapshot)
        if recovered.lost and h.run.status.is_open:
            await checkpoints.request(h)  # put the hole behind CURRENT
        elif recovered.quiet and h.run.status.is_open:
            checkpoint.make_due()  # a long replay: snapshot at the first chance, so a next start replays little
            h.work.wake.set()

    def quiet_records(self, count: int) -> int:
        """How many leading records replay quietly: all but the last `recovery_history_records`."""
        window = self.ctx.settings.recovery_history_records
        return max(0, count - window) if window > 0 else 0

    def from_snapshot(self, loaded: LoadedSnapshot) -> RunHandle:
        """A handle for the snapshot's run: model + logged adjustments → plan, then the restored run."""
        state, meta = loaded.state, loaded.meta
        create_fields = meta.create
        if create_fields.get("runId") != state.run_id:
            raise ValueError(f"snapshot {meta.name}: create record is for run {create_fields.get('runId')!r}")
        create = CreateRecord.from_dict(create_fields)  # the run itself takes the epoch of the state
        h = build_handle(self.ctx, create)
        plan = h.run.plan
        adjustments: list[dict[str, Any]] = create_fields.get("adjustments") or []
        for wire in adjustments:
            adjustment = Adjustment(
                int(wire["modelRevision"]),
                int(wire["fromBin"]),
                list(wire["nodes"]),
                list((wire.get("topology") or {}).get("nodes") or []),
            )
            if h.model.data is None:
                data = parse_model_text(h.model.text)
                h.model.data = data if isinstance(data, dict) else {}
            h.model.data, plan = compile_patched(
                h.model.data, adjustment, h.model.graph, self.ctx.settings.inputs_dir, live=True
            )
            h.model.graph = plan.graph
            h.model.adjustments.append(wire)
        if adjustments:
            h.model.frames = self.ctx.logs.frame_reader(h.model.graph, h.run_id)
        hooks = h.run.hooks  # the warning book is rebuilt while the matrix decodes in its thread
        if isinstance(hooks, DerivedHooks) and state.hooks is not None:
            hooks, state = DerivedHooks.from_state(plan, state.hooks), replace(state, hooks=None)
        if meta.matrix is not None:
            values, present = meta.matrix.result()
            state = replace(state, V=values, P=present)
        h.run = restore(plan, state, hooks, adopt=meta.reload is not None)  # takes the decoded matrices
        # the first snapshot after recovery is incremental: the mirror gets its own copy of the loaded
        # matrices by decoding retained.parquet again, in the commit thread
        h.durable.seed_mirror = CaptureMirror.seeded(h.run, state, meta.reload)
        h.durable.segments = meta.segments
        h.run.persisted_before = segments_end(meta.segments)  # persistence is tracked from here on in any case
        h.durable.kafka_offsets = dict(meta.kafka_offsets)
        return h

    async def refill_history(self, h: RunHandle, loaded: LoadedSnapshot) -> None:
        """Publish events 1..state.seq from events.log to the hub; cut what lies past the snapshot."""
        state, meta, settings = loaded.state, loaded.meta, self.ctx.settings
        history = await asyncio.to_thread(  # decode only what the hub's history keeps
            self.ctx.snapshots.read_events,
            h.folder,
            meta.events_offset,
            tail_events=settings.hub_history_events,
            tail_bytes=settings.hub_history_bytes,
        )
        seqs = [int(event.get("seq", -1)) for event, _ in history.events]
        whole = (
            history.problem is None
            and history.end_offset == meta.events_offset
            and all(event.get("epoch") == state.epoch for event, _ in history.events)
            and seqs == list(range(state.seq - len(seqs) + 1, state.seq + 1))
        )
        if not whole:
            log.warning(
                "run %s: events.log does not hold the snapshot's events (%s); history starts at seq %d",
                h.run_id,
                history.problem or "mismatch",
                state.seq,
                extra={"run_id": h.run_id},
            )
            await asyncio.to_thread(self.ctx.snapshots.cut_events, h.folder, 0)
            self.ctx.sink.ensure_run(h.run_id, state.epoch, state.seq)
            return
        await asyncio.to_thread(self.ctx.snapshots.cut_events, h.folder, meta.events_offset)
        if not history.events:
            self.ctx.sink.ensure_run(h.run_id, state.epoch, state.seq)
        for event, data in history.events:
            self.ctx.sink.publish(h.run_id, event, data, seqd=True)

    async def replay(self, h: RunHandle, records: list[tuple[int, int, bytes]], *, quiet: int = 0) -> None:
        """Apply the logged records after the snapshot, in order, as the worker did.

        The first `quiet` records replay without building events (`LiveRun.quiet`: seq numbers, hooks
        and state advance exactly as when publishing); then the hub history and `events.log` restart
        at the seq reached (clients with an older cursor get a snapshot) and the rest replay normally.
        """
        for i, (offset, end, payload) in enumerate(records):
            try:
                quiet = await self._replay_one(h, i, offset, payload, quiet)
            except (IngestError, ModelError) as exc:  # refused live too, before it changed anything
                log.info("run %s: record at %d refused again on replay: %s", h.run_id, offset, exc)
            except OSError:
                raise  # storage, not the record: this run's recovery fails (it is tried at the next start)
            except Exception as exc:  # fails to evaluate: the run fails here; the others recover
                self.failures.fail(h, failure_reason("recovery_failed", exc), "recovery", exc)
                break
            h.durable.applied_offset = end
            self.progress.records += 1
            if i % YIELD_EVERY_RECORDS == YIELD_EVERY_RECORDS - 1:
                await asyncio.sleep(0)
        try:
            h.run.quiet = False
        except Exception as exc:  # evaluating what a quiet prefix left pending failed
            self.failures.fail(h, failure_reason("recovery_failed", exc), "recovery", exc)

    async def _replay_one(self, h: RunHandle, i: int, offset: int, payload: bytes, quiet: int) -> int:
        """Replay record `i`; the number of leading quiet records from here on (a close ends them)."""
        run = h.run
        if i == quiet and quiet:
            run.quiet = False
            self._restart_history(h)
        run.quiet = i < quiet
        try:
            record = self.ctx.logs.decode(payload)
        except ValueError as exc:
            log.error("run %s: record at %d cannot be decoded: %s", h.run_id, offset, exc, extra={"run_id": h.run_id})
            return quiet
        if isinstance(record, PatchRecord):
            run.flush()  # a PATCH reads lastBin (its default and highest fromBin)
            record = PatchRecord({k: v for k, v in record.body.items() if k != "modelRevision"})
        elif isinstance(record, CloseRecord):
            run.quiet = False  # the close's events (statuses, the last bins) are the run's end: publish them
            if quiet > i:
                self._restart_history(h)
                quiet = i
        await self.applier.apply(h, record, offset)
        return quiet

    def _restart_history(self, h: RunHandle) -> None:
        """After a quiet replay: the hub history and events.log start over at the run's current seq."""
        self.ctx.sink.reset_epoch(h.run_id, h.run.epoch, h.run.seq)
        if h.files.events is not None:
            h.files.events.close()
        self.ctx.snapshots.cut_events(h.folder, 0)
        h.files.events = self.ctx.snapshots.open_events(h.folder)
