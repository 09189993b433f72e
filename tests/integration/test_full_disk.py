"""A full disk for real (issue 12 #1, #4): a `flowtime serve` subprocess whose data folder is a small
tmpfs, filled until ENOSPC by a filler file.

While the disk is full, ingest answers 503 `storage_unavailable` with Retry-After (never a 500 or a
"400 internal") and `/readyz` answers 503 `storage_failing`, and `flowtime_storage_failing{kind="log"}`
is 1. Once the filler is deleted the service is ready again by itself and ingest answers 202; a
WebSocket subscriber gets every acknowledged bin with a gap-free seq and nothing of the refused
requests. After a crash (SIGKILL) and a restart every acknowledged bin is there.

Needs root (to mount the tmpfs); skipped otherwise. The tmpfs is unmounted in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from server_proc import ServerProcess
from websockets.asyncio.client import connect

pytestmark = pytest.mark.integration

TMPFS_SIZE = "16m"
BINS = 400
MODEL = f"""
grid: {{bins: {BINS}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: demand, kind: const, source: telemetry}}
  - {{id: served, kind: expr, expr: "MIN(demand, 10)"}}
"""
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted tmpfs of TMPFS_SIZE (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write `path` until the file system has no byte left; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = bytes(chunk)
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                written += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    return written


class Subscriber:
    """A WebSocket client recording every seq'd event of the run."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async with connect(self.url) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "since": None}).decode())
            async for message in ws:
                event = orjson.loads(message)
                if "seq" in event and event.get("type") in ("run_update", "warning_update", "status"):
                    self.events.append(event)
                    self.changed.set()

    async def until_bin(self, b: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(e["type"] == "run_update" and e["binIndex"] == b for e in self.events):
                self.changed.clear()
                await self.changed.wait()


async def post(http: httpx.AsyncClient, b: int, value: float) -> httpx.Response:
    return await http.post(
        "/v1/runs/r1/bins", content=orjson.dumps({"bin": b, "series": "demand", "value": value}), headers=NDJSON
    )


async def storage_failing_metric(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith('flowtime_storage_failing{kind="log"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("flowtime_storage_failing is missing")


async def full_disk_round(server: ServerProcess, filler: Path) -> dict[int, float]:
    """Ingest, fill the disk, get 503s, free it, ingest again; the acknowledged values by bin."""
    acked: dict[int, float] = {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        created = await http.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "r1"}})
        assert created.status_code == 202, created.text
        subscriber = Subscriber(f"{server.ws_url}/v1/runs/r1/stream")
        listening = asyncio.create_task(subscriber.run())
        try:
            b = 0
            for _ in range(10):
                assert (await post(http, b, float(b % 7))).status_code == 202
                acked[b], b = float(b % 7), b + 1
            assert fill(filler) > 0
            refused: set[tuple[int, float]] = set()
            while len(refused) < 3 and b < BINS - 20:  # the log's last page may take a few more records
                value = 100.0 + b + len(refused)  # a value only this request carries
                r = await post(http, b, value)
                if r.status_code == 202:
                    acked[b], b = value, b + 1
                    continue
                assert r.status_code == 503 and r.json()["error"] == "storage_unavailable", r.text
                assert r.headers["retry-after"] == "1"
                refused.add((b, value))
            assert len(refused) == 3, "the disk never filled up"
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "storage_failing", ready.text
            assert await storage_failing_metric(http) == 1.0
            filler.unlink()
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text  # ready again by itself (a probe write)
            for _ in range(5):
                r = await post(http, b, float(b % 5))
                assert r.status_code == 202, r.text
                acked[b], b = float(b % 5), b + 1
            assert await storage_failing_metric(http) == 0.0
            await subscriber.until_bin(b - 1)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening
    seqs = [e["seq"] for e in subscriber.events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # gap-free
    published = {(e["binIndex"], e["deltas"][0]["series"]["demand"]) for e in subscriber.events if "binIndex" in e}
    assert not published & refused  # nothing of a refused request ever reached a subscriber
    updates = {
        e["binIndex"]: e["deltas"][0]["series"]["demand"] for e in subscriber.events if e["type"] == "run_update"
    }
    assert updates == acked  # every acknowledged bin, and nothing of a refused request
    return acked


async def test_a_full_disk_answers_503_and_the_service_resumes_by_itself(tmpfs: Path, tmp_path: Path) -> None:
    server = ServerProcess(tmpfs, log_dir=tmp_path)
    try:
        await asyncio.to_thread(server.start)
        acked = await full_disk_round(server, tmpfs / "filler.bin")
        await asyncio.to_thread(server.restart)  # SIGKILL, then a new process on the same tmpfs
        last = max(acked)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            window = (await http.get(f"/v1/runs/r1/state_window?startBin=0&endBin={last}")).json()
        held = dict(enumerate(window["series"]["demand"]))
        assert {b: held[b] for b in acked} == acked and window["series"]["demand"][last] == acked[last]
        assert all(b in acked for b in range(last + 1))  # no refused bin was applied before `last`
    finally:
        server.kill()
    logs = "".join(path.read_text(errors="replace") for path in server.log_paths)
    assert "internal error" not in logs and "Traceback" not in logs, logs[-4000:]
