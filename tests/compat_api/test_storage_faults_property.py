"""Property (issue 12 #1-#3): a live run on the real file stores (a tmp folder, every write through a
`FaultyFs`) driven through random ingests, injected storage failures (one call of any kind: log,
events.log, snapshot or CURRENT writes, fsyncs, renames, new segments; or a full disk), heals,
snapshots and restarts (a graceful stop or a crash; a restart is a new service on the same folder).

After every step:
- the run holds exactly the acknowledged (202) values — every one survives every restart, and
  nothing of a refused (503) request is applied;
- a client that resumes with its cursor after every step sees a gap-free seq stream (or, when the
  history cannot serve its cursor, a snapshot — never a partial replay), its cursor is never ahead
  of the run, and events regenerated after a restart are byte-identical to those it saw before;
- answers are 202 or 503 `storage_unavailable`, never anything else.
At the end the series equal a batch run of the acknowledged values.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compat_api.compose import build_live_service
from compat_api.settings import Settings
from engine_live.errors import StorageUnavailableError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.runtime.service import LiveService
from stream_hub.hub import Hub
from tests.fault_fs import FaultyFs

BINS = 10
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arrivals, kind: const, source: telemetry}}
  - {{id: served, kind: expr, expr: "MIN(arrivals, 5)"}}
  - {{id: backlog, kind: expr, expr: "MAX(0, SHIFT(backlog, 1) + arrivals - served)", initial: 0}}
"""
FAULT_OPS = ("write", "fsync", "open", "rename", "mkdir")
FAULT_PATHS = ("ingest.log", "events.log", "snapshots", "CURRENT", "segments", None)

codes = st.sampled_from((errno.ENOSPC, errno.EIO))
bins, values = st.integers(0, BINS - 1), st.integers(0, 12)
log_fault = st.tuples(  # (op, path filter, at the n-th call, torn write, errno): the next log write fails
    st.sampled_from(("write", "fsync")), st.sampled_from(("ingest.log", None)), st.just(1), st.booleans(), codes
)
any_fault = st.tuples(st.sampled_from(FAULT_OPS), st.sampled_from(FAULT_PATHS), st.integers(1, 3), st.booleans(), codes)
step = st.one_of(
    st.tuples(st.just("ingest"), bins, values, st.none()),
    st.tuples(st.just("ingest"), bins, values, st.none()),
    st.tuples(st.just("ingest"), bins, values, log_fault),
    st.tuples(st.just("ingest"), bins, values, log_fault),
    st.tuples(st.just("ingest"), bins, values, any_fault),
    st.tuples(st.just("fill")),
    st.tuples(st.just("heal")),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("restart"), st.booleans()),
)


class Clock:
    def __call__(self) -> float:
        return 1000.0


@dataclass
class Client:
    """A stream client that resumes with its cursor: a replay from history, or a snapshot."""

    epoch: str | None = None
    seq: int = 0
    seen: dict[tuple[str, int], bytes] = field(default_factory=dict)
    snapshots: int = 0

    def resume(self, svc: LiveService, hub: Hub) -> None:
        run = svc.runs["r1"].run
        head = hub.head("r1")
        assert head is not None and (head.epoch, head.seq) == (run.epoch, run.seq)
        for ev in hub.read_after("r1", head.epoch, 0, 1_000_000).events:  # regenerated = what was seen
            assert self.seen.get((ev.epoch, ev.seq), ev.data) == ev.data, ev.seq
        if self.epoch is None:  # the first subscription: from seq 0 of the run's epoch
            self.epoch = head.epoch
        if self.epoch == head.epoch:
            assert self.seq <= head.seq  # nothing it saw was taken back
            read = hub.read_after("r1", self.epoch, self.seq, 1_000_000)
            if read.lost == 0 and not read.epoch_changed:
                for i, ev in enumerate(read.events):
                    assert ev.seq == self.seq + 1 + i  # gap-free
                    self.seen[(ev.epoch, ev.seq)] = ev.data
                self.seq = head.seq
                return
        self.epoch, self.seq = head.epoch, head.seq  # a snapshot, then live from there
        self.snapshots += 1


async def start(data_dir: Path, fs: FaultyFs) -> tuple[LiveService, Hub]:
    settings = Settings(data_dir=data_dir, snapshot_every_bins=4, snapshot_every_seconds=1e9)
    hub = Hub()
    svc = build_live_service(settings, hub=hub, clock=Clock(), fs=fs)
    await svc.start()
    return svc, hub


async def crash(svc: LiveService) -> None:
    """Abandon the service as a killed process would: no drain, no final snapshot."""
    for h in svc.runs.values():
        if h.work.task is not None:
            h.work.task.cancel()
            await asyncio.gather(h.work.task, return_exceptions=True)
        if h.files.checkpoint is not None:
            await h.files.checkpoint.drain()
        if h.files.log is not None:
            await h.files.log.close()
        if h.files.events is not None:
            h.files.events.close()


def check_holds_acked(svc: LiveService, acked: dict[int, float]) -> None:
    run = svc.runs["r1"].run
    assert run.watermark == max(acked, default=-1)
    row, tele = run.plan.row["arrivals"], 0
    for b in range(run.last_bin + 1):
        col = b - run.base
        assert bool(run.P[tele, col]) == (b in acked), b
        if b in acked:
            assert run.V[row, col] == acked[b], b


async def ingest(svc: LiveService, b: int, value: float) -> bool:
    """True when acknowledged (202); False when refused with 503 storage_unavailable."""
    try:
        await svc.ingest("r1", orjson.dumps([{"bin": b, "series": "arrivals", "value": value}]))
    except StorageUnavailableError as exc:
        assert exc.http_status == 503
        return False
    checkpoint = svc.runs["r1"].files.checkpoint
    assert checkpoint is not None
    await checkpoint.drain()  # a snapshot commit started by this batch lands before the next step
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=4, max_size=20))
async def test_acknowledged_data_survives_storage_faults_and_restarts(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[Any, ...]]
) -> None:
    data_dir = tmp_path_factory.mktemp("faults")
    fs = FaultyFs()
    svc, hub = await start(data_dir, fs)
    await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    acked: dict[int, float] = {}
    client = Client()
    client.resume(svc, hub)
    for action, *args in steps:
        if action == "ingest":
            b, value, armed = args
            if armed is not None:
                op, path, at, torn, code = armed
                fs.arm(op, at=at, errno=code, path=path, torn=torn and op == "write")
            if await ingest(svc, b, float(value)):
                acked[b] = float(value)
            else:
                event("an ingest was refused with 503")
        elif action == "fill":
            fs.fill()
        elif action == "heal":
            fs.heal()
        elif action == "snapshot":
            with contextlib.suppress(OSError):  # a failed snapshot: CURRENT untouched, the run goes on
                await svc.request_snapshot(svc.runs["r1"])
        else:
            fs.heal()
            if args[0]:
                await crash(svc)
            else:
                await svc.stop()
            svc, hub = await start(data_dir, fs)
        check_holds_acked(svc, acked)
        client.resume(svc, hub)
    event(f"injected failures: {min(len(fs.failures), 3)}+")
    event(f"injected log failures: {min(sum('ingest.log' in path for _, path in fs.failures), 2)}+")
    event(f"client snapshots: {min(client.snapshots, 2)}+")
    fs.heal()
    await crash(svc)  # a crash, not a stop: no final snapshot hides what the log holds
    svc, hub = await start(data_dir, fs)
    check_holds_acked(svc, acked)
    client.resume(svc, hub)
    run = svc.runs["r1"].run
    plan = compile_model(load_graph(MODEL, live=True))
    inputs = np.zeros(BINS)
    for b, value in acked.items():
        inputs[b] = value
    batch = evaluate_batch(plan, {"arrivals": inputs})
    live = run.final_series()
    for name in ("served", "backlog"):
        assert live[name].tobytes() == batch[plan.row[name], : run.last_bin + 1].tobytes(), name
    await svc.stop()
