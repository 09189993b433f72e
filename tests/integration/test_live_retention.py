"""A long run with a short retention window closes with every bin (SPEC §6 Retention, §12.7).

A `flowtime serve` subprocess takes `bins: 200, retentionBins: 10, snapshotEveryBins: 5`: all 200 bins
in order, with corrections inside the retention window. Bins leave memory only into segments
`live/segments/<from>-<to>.parquet`; at close the artifacts are assembled from them and the matrix
and must equal a batch run of the final inputs bit for bit (series.parquet and every series). The
second test kills the server with SIGKILL in the middle (right after a snapshot with segments was
committed, with acknowledged records past it), restarts it, feeds the rest and closes: same result,
and the segments written before the crash were never rewritten.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from live_server_models import GroupModel
from server_proc import ServerProcess
from websockets.asyncio.client import connect

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifact_reader import read_run_series
from snapshot_writer.artifacts import write_run_artifacts

pytestmark = pytest.mark.integration

BINS, RETENTION, EVERY = 200, 10, 5
RUN = "ret"
KILL_AT_BIN = 120
Frame = tuple[int, str, float]


def requests_for(model: GroupModel) -> tuple[list[list[Frame]], dict[str, np.ndarray]]:
    """One request per bin; every 7th bin also corrects bin b-4 (inside retention: lastBin is b)."""
    inputs = model.inputs(BINS, seed=11)
    ids = model.telemetry_ids()
    final = {sid: inputs[sid].copy() for sid in ids}
    reqs: list[list[Frame]] = []
    for b in range(BINS):
        reqs.append([(b, sid, float(inputs[sid][b])) for sid in ids])
        if b % 7 == 6:
            t, sid = b - 4, ids[b % len(ids)]
            final[sid][t] = round(final[sid][t] + 1.5, 3)
            reqs.append([(t, sid, float(final[sid][t]))])
    return reqs, final


def body_of(frames: list[Frame]) -> bytes:
    return b"\n".join(orjson.dumps({"bin": b, "series": s, "value": v}) for b, s, v in frames) + b"\n"


async def post_all(client: httpx.AsyncClient, server: ServerProcess, reqs: list[list[Frame]]) -> None:
    for frames in reqs:
        r = await client.post(
            f"{server.base_url}/v1/runs/{RUN}/bins",
            content=body_of(frames),
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 202, r.text


async def watch_snapshots(server: ServerProcess, min_last_bin: int, ready: asyncio.Event, seen: asyncio.Event) -> None:
    """Set `seen` when a `snapshot_written` at or past `min_last_bin` arrives (an event, not a timer).
    Subscribed before the bins are sent: `snapshot_written` is not seq'd, so it is not replayed."""
    async with connect(f"{server.ws_url}/v1/runs/{RUN}/stream", max_size=None) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "since": None, "nodes": []}).decode())
        async for raw in ws:
            msg = orjson.loads(raw)
            if msg.get("type") == "subscribed":
                ready.set()
            if msg.get("type") == "snapshot_written" and msg["lastBin"] >= min_last_bin:
                seen.set()
                return


def current_state(run_dir: Path) -> dict[str, Any]:
    live = run_dir / "live"
    name = orjson.loads((live / "CURRENT").read_bytes())["snapshot"]
    state: dict[str, Any] = orjson.loads((live / "snapshots" / name / "state.json").read_bytes())
    return state


def segment_digests(run_dir: Path) -> dict[str, str]:
    folder = run_dir / "live" / "segments"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def assert_equal_batch(run_dir: Path, model: GroupModel, final: dict[str, np.ndarray], tmp: Path) -> None:
    batch = run_model(model.live_text, telemetry=final, deterministic_run_id=True)
    write_run_artifacts(batch.result, tmp / "batch")
    live, want = read_run_series(run_dir), read_run_series(tmp / "batch")
    assert sorted(live) == sorted(want)
    differ = [s for s in want if live[s].tobytes() != want[s].tobytes()]
    assert not differ, f"{len(differ)} series differ from the batch run, e.g. {differ[:3]}"
    assert (run_dir / "series.parquet").read_bytes() == (tmp / "batch" / "series.parquet").read_bytes()


def scenario(tmp_path: Path, *, kill: bool) -> None:
    model = GroupModel(groups=2, bins=BINS, style="consts")
    reqs, final = requests_for(model)
    cut = next(k for k, r in enumerate(reqs) if r[0][0] == KILL_AT_BIN)
    with ServerProcess(tmp_path / "data") as server:
        run_dir = server.data_dir / "runs" / RUN

        async def main() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=30.0) as client:
                options = {"runId": RUN, "graceBins": 2, "retentionBins": RETENTION, "snapshotEveryBins": EVERY}
                r = await client.post(
                    f"{server.base_url}/v1/runs", json={"mode": "live", "model": model.live_text, "options": options}
                )
                assert r.status_code == 202, r.text
                ready, seen = asyncio.Event(), asyncio.Event()
                watcher = asyncio.create_task(watch_snapshots(server, KILL_AT_BIN - 2 * EVERY, ready, seen))
                async with asyncio.timeout(20):
                    await ready.wait()
                await post_all(client, server, reqs[:cut])
                if kill:
                    async with asyncio.timeout(20):
                        await seen.wait()
                    await watcher
                    await post_all(client, server, reqs[cut : cut + 3])  # acknowledged, past the snapshot
                    state = current_state(run_dir)
                    assert state["persistedBefore"] > 0 and state["base"] > 0, state  # bins left memory
                    on_disk = segment_digests(run_dir)  # may hold one more: a commit in flight writes it first
                    before = {s["file"]: on_disk[s["file"]] for s in state["segments"]}
                    assert before
                    await asyncio.to_thread(server.restart, crash=True)  # SIGKILL, then start again
                    await post_all(client, server, reqs[cut + 3 :])
                else:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                    await post_all(client, server, reqs[cut:])
                r = await client.post(f"{server.base_url}/v1/runs/{RUN}/close")
                assert r.status_code == 202, r.text
                detail: dict[str, Any] = r.json()
                if kill:
                    after = segment_digests(run_dir)
                    assert {k: after.get(k) for k in before} == before, "a committed segment was rewritten"
                return detail

        try:
            detail = asyncio.run(main())
        except BaseException:
            print(server.log_tail())
            raise
    assert detail["status"] == "completed" and detail["lastBin"] == BINS - 1, detail
    state = current_state(run_dir)
    assert state["base"] > 0 and state["persistedBefore"] >= state["base"]  # the close did need the segments
    assert state["columns"] < BINS // 2, state["columns"]  # memory stayed bounded
    assert_equal_batch(run_dir, model, final, tmp_path)


@pytest.mark.slow
def test_short_retention_run_closes_equal_to_batch(tmp_path: Path) -> None:
    scenario(tmp_path, kill=False)


@pytest.mark.slow
def test_short_retention_run_survives_kill_9_and_closes_equal_to_batch(tmp_path: Path) -> None:
    scenario(tmp_path, kill=True)
