"""Recovery at start: every run with an ingestion log is rebuilt by replaying the log (SPEC §6).

Events are a pure function of the log, so the replay regenerates the same events with the same
epoch and seq; they refill the hub history (cursors keep working) and `events.log`. A torn last
record is cut off with a warning. `/readyz` stays 503 until every run is back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine_live.events import RunStatus, encode_event, status_event
from engine_live.live_run import ValidFrame

if TYPE_CHECKING:
    from compat_api.live_service import LiveService

log = logging.getLogger("flowtime.recovery")


async def recover_runs(service: LiveService, progress: dict[str, int]) -> None:
    from compat_api.live_service import replay_log

    logs = sorted(service.runs_dir.glob("*/live/ingest.log"))
    progress["runs"] = len(logs)
    for path in logs:
        records, problem, _ = replay_log(path)
        if problem is not None:
            log.warning("run %s: cut a torn ingestion-log tail (%s)", path.parent.parent.name, problem,
                        extra={"run_id": path.parent.parent.name})  # fmt: skip
        if not records or records[0][1].get("t") != "create":
            log.error("run %s: ingestion log has no create record; skipped", path.parent.parent.name)
            progress["runsDone"] += 1
            continue
        await _replay(service, records, progress)
        progress["runsDone"] += 1


async def _replay(service: LiveService, records: list[tuple[int, dict[str, Any]]], progress: dict[str, int]) -> None:
    _, create = records[0]
    h = service.build_handle(create["runId"], create["epoch"], create["createdUtc"], create["model"],
                             create.get("options") or {})  # fmt: skip
    h.folder.mkdir(parents=True, exist_ok=True)
    h.events_fh = open(h.folder / "events.log", "wb")  # noqa: SIM115 - rewritten from the replay
    service.runs[h.run_id] = h
    service.emit(h, h.run.start(), replay=True)
    for offset, rec in records[1:]:
        kind = rec.get("t")
        if kind == "frames":
            frames = [ValidFrame(int(b), str(s), float(v)) for b, s, v in rec["f"]]
            if "src" in rec:
                part, off = rec["src"]
                h.kafka_offsets[part] = max(h.kafka_offsets.get(part, -1), off)
            try:
                await service.apply(h, frames, offset, replay=True)
            except Exception as exc:  # noqa: BLE001 - a record rejected live is rejected again
                log.info("run %s: record at %d rejected again on replay: %s", h.run_id, offset, exc)
        elif kind == "patch":
            try:
                patch = service.prepare_patch(h, {k: v for k, v in rec.items() if k not in ("t", "modelRevision")})
                service.apply_patch(h, patch, offset, replay=True)
            except Exception as exc:  # noqa: BLE001 - a patch rejected live is rejected again
                log.info("run %s: patch at %d rejected again on replay: %s", h.run_id, offset, exc)
        elif kind == "close":
            h.closing = True
            await service.apply(h, None, offset, replay=True)
        progress["records"] = progress.get("records", 0) + 1
    if h.run.status is RunStatus.LIVE:
        ev = status_event(h.run_id, h.run.epoch, h.run.seq, RunStatus.LIVE, "recovered")
        service.hub.publish(h.run_id, ev, encode_event(ev), seqd=False)
    service.attach(h)
