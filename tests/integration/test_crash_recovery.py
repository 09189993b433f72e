"""`kill -9` loses nothing (SPEC §6 Durability, Recovery; §7 seq): a crash test against real processes.

A `flowtime serve` subprocess takes a long telemetry stream over HTTP (400 bins × 21 series as NDJSON
batches, with late values, corrections and verbatim duplicates) from a feeder that records every
acknowledged (202) frame and retries what was not acknowledged after a restart. A WebSocket client
records every event and reconnects with its cursor. The server is killed with SIGKILL at seeded
random moments (some right after a snapshot boundary, with `snapshotEveryBins` small, so that a
kill lands while a snapshot is being written once snapshots exist) and restarted each time.

At the end the run is closed and:
- every acknowledged frame is in the final artifacts (the last acknowledged value per (bin, series));
- every series equals a batch run of the acknowledged inputs, bit for bit;
- the client's seq stream, deduplicated by (epoch, seq) across reconnects, is 1..seq with no gap,
  an event seen twice is the same event both times, and the epoch never changed.

Seed: FLOWTIME_CRASH_SEED (printed on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from live_server_models import GroupModel
from server_proc import ServerProcess
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifact_reader import read_run_series

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("FLOWTIME_CRASH_SEED", "20251007"))
BINS = 400
GROUPS = 7  # 21 telemetry series
KILLS = 12
SNAPSHOT_EVERY = 10
RUN = "crash"
DEADLINE_S = 90.0  # the whole test; it normally takes 30-40 s

Frame = tuple[int, str, float]


def make_plan(model: GroupModel, rng: random.Random) -> list[list[Frame]]:
    """Requests in sending order: 1-3 bins each, some values held back to a later request (late data,
    often past the grace so it corrects a zero-filled placeholder), corrections of earlier bins, and
    verbatim repeats of earlier requests."""
    inputs = model.inputs(BINS, seed=rng.randrange(1 << 30))
    ids = model.telemetry_ids()
    plan: list[list[Frame]] = []
    held: list[tuple[int, list[Frame]]] = []  # (release at request index, frames)
    b = 0
    while b < BINS:
        span = rng.choice((1, 1, 2, 3))
        frames = [(t, sid, float(inputs[sid][t])) for t in range(b, min(b + span, BINS)) for sid in ids]
        rng.shuffle(frames)
        if rng.random() < 0.25:
            k = rng.randint(1, 4)
            held.append((len(plan) + rng.randint(1, 5), frames[-k:]))
            frames = frames[:-k]
        due = [f for at, fs in held if at <= len(plan) for f in fs]
        held = [(at, fs) for at, fs in held if at > len(plan)]
        plan.append(frames + due)
        b += span
        if rng.random() < 0.08 and b > 5:  # corrections of recent bins
            plan.append(
                [
                    (rng.randint(max(0, b - 40), b - 1), rng.choice(ids), round(rng.uniform(0, 200), 3))
                    for _ in range(rng.randint(1, 5))
                ]
            )
        if rng.random() < 0.05:  # a verbatim repeat: all duplicates
            plan.append(list(plan[rng.randrange(len(plan))]))
    plan.append([f for _, fs in held for f in fs])
    return [p for p in plan if p]


def body_of(frames: list[Frame]) -> bytes:
    return b"\n".join(orjson.dumps({"bin": b, "series": s, "value": v}) for b, s, v in frames) + b"\n"


@dataclass
class Crash:
    server: ServerProcess
    rng: random.Random
    up: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    generation: int = 0
    acked: list[tuple[int, list[Frame], dict[str, Any]]] = field(default_factory=list)
    kills: int = 0
    snapshot_kills: int = 0
    in_flight_kills: int = 0
    sending: bool = False
    retries: int = 0
    # the WebSocket client's view
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    epochs: set[str] = field(default_factory=set)
    last_seq: int = 0
    gaps: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    duplicates: int = 0
    connects: int = 0
    unexpected: list[str] = field(default_factory=list)
    completed: asyncio.Event = field(default_factory=asyncio.Event)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self.changed:
                await self.changed.wait_for(predicate)
        return predicate()


async def feeder(c: Crash, plan: list[list[Frame]]) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        for k, frames in enumerate(plan):
            body = body_of(frames)
            while True:
                await c.up.wait()
                gen = c.generation
                c.sending = True
                try:
                    r = await client.post(
                        f"{c.server.base_url}/v1/runs/{RUN}/bins",
                        content=body,
                        headers={"content-type": "application/x-ndjson"},
                    )
                except httpx.TransportError:
                    # the server died under the request: retry once it is back (bounded wait)
                    c.retries += 1
                    c.sending = False
                    await c.wait_for(lambda gen=gen: c.generation > gen, 30)  # type: ignore[misc]
                    continue
                finally:
                    c.sending = False
                if r.status_code in (429, 503):
                    c.retries += 1
                    await c.wait_for(lambda gen=gen: c.generation > gen, 0.05)  # type: ignore[misc]
                    continue
                assert r.status_code == 202, f"request {k}: {r.status_code} {r.text}"
                res = r.json()
                assert res["accepted"] + res["duplicates"] + res["corrected"] == len(frames), res
                c.acked.append((k, frames, res))
                await c.notify()
                break


async def killer(c: Crash, plan: list[list[Frame]]) -> None:
    """SIGKILL after seeded ack counts; half of them right after a snapshot boundary was acknowledged."""
    last_bin = [max(t for t, _, _ in frames) for frames in plan]
    boundaries = [k for k in range(1, len(plan)) if last_bin[k] // SNAPSHOT_EVERY > max(last_bin[:k]) // SNAPSHOT_EVERY]
    lo, hi = 3, len(plan) - 3
    snap_points = c.rng.sample([k for k in boundaries if lo <= k < hi], KILLS // 2)
    points = sorted(set(snap_points) | set(c.rng.sample(range(lo, hi), KILLS - KILLS // 2)))
    snap = set(snap_points)
    while len(points) < KILLS:  # collisions: top up with fresh points
        points = sorted(set(points) | {c.rng.randrange(lo, hi)})
    for p in points:
        assert await c.wait_for(lambda p=p: len(c.acked) > p, 30), f"feeder stuck before request {p}"  # type: ignore[misc]
        if p in snap:
            await asyncio.sleep(c.rng.uniform(0.0, 0.015))  # a random moment of the snapshot write
        elif c.rng.random() < 0.5:
            await asyncio.sleep(c.rng.uniform(0.0, 0.004))  # likely with a request in flight
        c.up.clear()
        c.in_flight_kills += c.sending
        await asyncio.to_thread(c.server.kill)
        c.kills += 1
        c.snapshot_kills += p in snap
        await asyncio.to_thread(c.server.start)
        c.generation += 1
        c.up.set()
        await c.notify()


def on_event(c: Crash, msg: dict[str, Any]) -> None:
    kind = msg.get("type")
    if kind in ("subscribed",):
        c.epochs.add(msg["epoch"])
        if not msg.get("recovered"):
            c.unexpected.append(f"subscribed without recovery: {msg}")
        return
    if kind in ("snapshot", "resync"):
        c.unexpected.append(f"{kind} at seq {msg.get('seq')}")
        return
    if kind in ("progress", "snapshot_written") or "seq" not in msg:
        return
    c.epochs.add(msg["epoch"])
    seq = int(msg["seq"])
    if seq <= c.last_seq:
        seen = c.events.get(seq)
        if kind == "status" and (seen is None or seen.get("type") != "status" or seen != msg):
            return  # a status that repeats the current seq (recovering / live after recovery)
        c.duplicates += 1
        if seen != msg:
            c.mismatches.append(f"seq {seq}: {seen} != {msg}")
        return
    if seq != c.last_seq + 1:
        c.gaps.append(f"{c.last_seq} -> {seq}")
    c.events[seq] = msg
    c.last_seq = seq
    if kind == "status" and msg.get("status") == "completed":
        c.completed.set()


async def watcher(c: Crash) -> None:
    url_path = f"/v1/runs/{RUN}/stream"
    while not c.completed.is_set():
        await c.up.wait()
        gen = c.generation
        try:
            async with connect(c.server.ws_url + url_path, open_timeout=5, max_size=None) as ws:
                c.connects += 1
                since = {"epoch": next(iter(c.epochs)), "seq": c.last_seq} if c.events else None
                await ws.send(orjson.dumps({"type": "subscribe", "since": since, "nodes": None}).decode())
                async for raw in ws:
                    on_event(c, orjson.loads(raw))
        except (OSError, TimeoutError, WebSocketException, InvalidHandshake):
            pass
        if not c.completed.is_set():
            await c.wait_for(lambda gen=gen: c.generation > gen, 1.0)  # type: ignore[misc]


async def close_run(c: Crash) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        r = await client.post(f"{c.server.base_url}/v1/runs/{RUN}/close")
        assert r.status_code == 202, r.text
        detail: dict[str, Any] = (await client.get(f"{c.server.base_url}/v1/runs/{RUN}")).json()
        return detail


async def crash_scenario(c: Crash, model: GroupModel, plan: list[list[Frame]]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        options = {"runId": RUN, "graceBins": 2, "snapshotEveryBins": SNAPSHOT_EVERY}
        body = {"mode": "live", "model": model.live_text, "options": options}
        r = await client.post(f"{c.server.base_url}/v1/runs", json=body)
        assert r.status_code == 202, r.text
    c.up.set()
    watch = asyncio.create_task(watcher(c))
    feed = asyncio.create_task(feeder(c, plan))
    try:
        await killer(c, plan)
        await feed
        detail = await close_run(c)
        async with asyncio.timeout(20):
            await c.completed.wait()
        await watch
        return detail
    finally:
        for t in (watch, feed):
            t.cancel()
        await asyncio.gather(watch, feed, return_exceptions=True)


@pytest.mark.slow
def test_kill_9_loses_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    model = GroupModel(groups=GROUPS, bins=BINS, style="consts")
    plan = make_plan(model, rng)
    with ServerProcess(tmp_path / "data") as server:
        c = Crash(server, rng)

        async def main() -> dict[str, Any]:
            async with asyncio.timeout(DEADLINE_S):
                return await crash_scenario(c, model, plan)

        try:
            detail = asyncio.run(main())
        except BaseException:
            print(f"FLOWTIME_CRASH_SEED={SEED}; kills {c.kills}; acked {len(c.acked)}/{len(plan)}\n{server.log_tail()}")
            raise
        run_dir = server.data_dir / "runs" / RUN
        had_snapshots = (run_dir / "live" / "snapshots").is_dir()
    note = (
        f"seed {SEED}: {len(plan)} requests, {c.kills} kills ({c.snapshot_kills} at snapshot boundaries, "
        f"{c.in_flight_kills} with a request in flight), {c.retries} retries, {c.connects} WS connects, "
        f"{c.duplicates} replayed events, snapshots on disk: {had_snapshots}, "
        f"{time.monotonic() - started:.1f} s"
    )
    print(note)
    assert c.kills >= 10, note
    assert detail["status"] == "completed" and detail["lastBin"] == BINS - 1, detail

    # every acknowledged frame is in the final state: the last acknowledged value per (bin, series)
    final: dict[str, np.ndarray] = {sid: np.zeros(BINS) for sid in model.telemetry_ids()}
    written: set[tuple[int, str]] = set()
    acked_order = [k for k, _, _ in c.acked]
    assert acked_order == list(range(len(plan))), "requests were not all acknowledged, in order"
    for _, frames, _ in c.acked:
        for b, sid, v in frames:
            final[sid][b] = v
            written.add((b, sid))
    assert len(written) == BINS * len(final), "the plan leaves (bin, series) cells unsent"
    live = read_run_series(run_dir)
    for sid, values in final.items():
        got = live[f"{sid}@{sid.upper()}@DEFAULT"]
        bad = np.flatnonzero(got.view(np.uint64) != values.view(np.uint64))
        assert not bad.size, f"{sid}: {bad.size} acknowledged values lost, e.g. bin {bad[0]}: {got[bad[0]]}"

    # the final series equal a batch run of the acknowledged inputs, bit for bit
    batch = run_model(model.live_text, telemetry=final)
    differ = [s.series_id for s in batch.result.series if live[s.series_id].tobytes() != s.values.tobytes()]
    assert not differ, f"{len(differ)} series differ from the batch run, e.g. {differ[:3]}"

    # the client's seq stream: 1..seq, no gap, no duplicate after dedupe, one epoch, replays identical
    assert not c.unexpected, c.unexpected[:5]
    assert len(c.epochs) == 1 and detail["epoch"] in c.epochs, c.epochs
    assert not c.gaps, f"seq gaps: {c.gaps[:10]}"
    assert not c.mismatches, f"an event changed across a restart: {c.mismatches[:2]}"
    assert sorted(c.events) == list(range(1, detail["seq"] + 1)), (len(c.events), detail["seq"])
    assert c.events[detail["seq"]]["status"] == "completed"

    # the client's view converged to the final state: the last run_update of every bin
    last_update: dict[int, dict[str, Any]] = {}
    for seq in sorted(c.events):
        ev = c.events[seq]
        if ev["type"] == "run_update":
            last_update[ev["binIndex"]] = ev
    assert sorted(last_update) == list(range(BINS))
    for b, ev in last_update.items():
        svc = next(d for d in ev["deltas"] if d["nodeId"] == "Svc_0")
        assert abs(svc["metrics"]["arrivals"] - final["arr_0"][b]) <= 1e-6, (b, svc, final["arr_0"][b])
