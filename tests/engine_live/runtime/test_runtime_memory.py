"""The live runtime on its in-memory ports: the same behaviour as on disk, without a disk.

Hand-computed: `served = MIN(arrivals, 5)`, `queue` accumulates `arrivals - served`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.errors import IngestError, ModelError, NotFoundError, RunClosedError, StorageUnavailableError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.protocol import RunStatus
from engine_live.runtime.context import RuntimeContext, RuntimeSettings
from engine_live.runtime.memory import MemoryLogStore, MemorySnapshotStore, RecordingSink
from engine_live.runtime.service import LiveService

BINS = 8
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arrivals, kind: const, source: telemetry}}
  - {{id: cap, kind: const, values: {[5.0] * BINS}}}
  - {{id: served, kind: expr, expr: "MIN(arrivals, cap)"}}
  - {{id: backlog, kind: expr, expr: "MAX(0, SHIFT(backlog, 1) + arrivals - served)", initial: 0}}
"""


class Stores:
    """One set of in-memory stores: services built on it share the "disk"."""

    def __init__(self, tmp: Path) -> None:
        self.settings = RuntimeSettings(data_dir=tmp, recovery_history_records=2)
        self.logs, self.snapshots, self.sink = MemoryLogStore(), MemorySnapshotStore(), RecordingSink()

    async def service(self) -> LiveService:
        """A service on these stores; a new process gets a new (empty) hub."""
        self.sink = RecordingSink()
        svc = LiveService(RuntimeContext(self.settings, self.logs, self.snapshots, sink=self.sink))
        await svc.start()
        return svc


def body(*frames: tuple[int, float]) -> bytes:
    return orjson.dumps([[b, "arrivals", v] for b, v in frames])


async def crash(svc: LiveService) -> None:
    for h in svc.runs.values():
        await svc.worker.stop(h)


async def test_ingest_evaluates_and_publishes_hand_computed_values(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    answer = await svc.ingest("r1", body((0, 7.0), (1, 3.0)))
    assert (answer["accepted"], answer["lastBin"], answer["logOffset"]) == (2, 1, 1)
    row = h.run.plan.row
    assert h.run.V[row["served"], :2].tolist() == [5.0, 3.0]
    assert h.run.V[row["backlog"], :2].tolist() == [2.0, 2.0]  # 0 + 7 - 5, then 2 + 3 - 3
    seqd = stores.sink.seqd("r1")
    assert [e["seq"] for e in seqd] == list(range(1, len(seqd) + 1))
    assert [e["binIndex"] for e in seqd if e["type"] == "run_update"] == [0, 1]
    await svc.close_run("r1")
    assert h.run.status is RunStatus.COMPLETED and stores.sink.closed["r1"] == 1000
    result = stores.snapshots.artifacts[tmp_path / "runs" / "r1"]
    assert result.status == "completed" and result.grid.bins == BINS  # a close evaluates a bounded grid to its end
    await svc.stop()


async def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    before = list(stores.logs.logs[tmp_path / "runs" / "r1" / "live"])
    with pytest.raises(IngestError):
        await svc.ingest("r1", orjson.dumps([[0, "served", 1.0]]))
    with pytest.raises(NotFoundError):
        await svc.ingest("nope", body((0, 1.0)))
    assert stores.logs.logs[tmp_path / "runs" / "r1" / "live"] == before
    await svc.close_run("r1")
    with pytest.raises(RunClosedError):
        await svc.ingest("r1", body((0, 1.0)))
    await svc.stop()


async def test_a_failed_log_write_is_not_applied(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    stores.logs.appenders[h.folder].fail_next = OSError(28, "No space left on device")
    with pytest.raises(Exception, match="ingestion log write failed"):
        await svc.ingest("r1", body((0, 7.0)))
    assert h.run.last_bin == -1 and svc.queue.depth == 0
    await svc.ingest("r1", body((0, 7.0)))
    assert h.run.last_bin == 0
    await svc.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.floats(0, 20, allow_nan=False), min_size=BINS, max_size=BINS),
    cut=st.integers(0, BINS),
    snapshot_at=st.one_of(st.none(), st.integers(0, BINS)),
)
async def test_crash_recovered_equals_batch(
    tmp_path_factory: pytest.TempPathFactory, values: list[float], cut: int, snapshot_at: int | None
) -> None:
    """Bin by bin, a crash after `cut` bins (maybe after a snapshot), recovery, the rest: the series
    equal a batch run of the same inputs bit for bit, and the seq stream has no gap."""
    stores = Stores(tmp_path_factory.mktemp("mem"))
    svc = await stores.service()
    await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    for b in range(cut):
        await svc.ingest("r1", body((b, values[b])))
        if snapshot_at == b:
            await svc.request_snapshot(svc.runs["r1"])
    await crash(svc)
    svc = await stores.service()
    h = svc.runs["r1"]
    for b in range(cut, BINS):
        await svc.ingest("r1", body((b, values[b])))
    plan = compile_model(load_graph(MODEL, live=True))
    batch = evaluate_batch(plan, {"arrivals": np.array(values)})
    live = h.run.final_series()
    for name in ("served", "backlog"):
        assert live[name].tobytes() == batch[plan.row[name]].tobytes()
    seqs = [e["seq"] for e in stores.sink.seqd("r1")]  # what the restarted process's hub holds
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] == h.run.seq
    await svc.stop()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("graceBins", 2**70),
        ("snapshotEveryBins", 2**70),
        ("retentionBins", 0),
        ("snapshotEverySeconds", 0),
        ("idleCloseSeconds", 1e12),
        ("graceBins", True),
    ],
)
async def test_create_options_are_bounded(tmp_path: Path, option: str, value: object) -> None:
    """Issue 12 #2: an unbounded option used to fail after the run was registered (a ghost run)."""
    stores = Stores(tmp_path)
    svc = await stores.service()
    with pytest.raises(ModelError) as info:
        await svc.create_run({"model": MODEL, "options": {"runId": "r1", option: value}})
    assert info.value.http_status == 422 and info.value.details["option"] == option
    assert not svc.runs and not stores.logs.logs
    await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})  # the id is still free
    await svc.stop()


async def test_a_create_that_cannot_be_logged_leaves_nothing(tmp_path: Path) -> None:
    """Issue 12 #2: a create during a full disk used to leave a run that took frames and was lost at restart."""
    stores = Stores(tmp_path)
    svc = await stores.service()
    stores.logs.fail_next_create = OSError(28, "No space left on device")
    with pytest.raises(StorageUnavailableError) as info:
        await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})
    assert info.value.http_status == 503
    assert "r1" not in svc.runs and not stores.logs.logs and not stores.sink.events
    with pytest.raises(NotFoundError):
        await svc.ingest("r1", body((0, 1.0)))
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1"}})  # the id is free again
    assert h.run.status is RunStatus.LIVE
    await svc.stop()


async def test_a_failed_log_write_answers_503_and_applies_nothing(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    svc = await stores.service()
    h = await svc.create_run({"model": MODEL, "options": {"runId": "r1", "graceBins": 0}})
    stores.logs.appenders[h.folder].fail_next = OSError(5, "Input/output error")
    with pytest.raises(StorageUnavailableError) as info:
        await svc.ingest("r1", body((0, 7.0)))
    assert info.value.http_status == 503 and h.run.last_bin == -1
    await svc.stop()
