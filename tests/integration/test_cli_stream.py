"""`flowtime ingest` and `flowtime stream runs` against a real `flowtime serve` on loopback, and the
tail's reconnect-with-cursor logic against a server that drops the socket (SPEC §7, §9)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cli_support import Lines, Service, create_live_run, flowtime, popen, seqd
from websockets.asyncio.server import ServerConnection, serve

from compat_api.cli.stream import StreamTail
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from ingestion.bundle import iter_frames, load_bundle
from tests.loopback import free_port

pytestmark = pytest.mark.integration


def _check_contiguous(events: list[dict[str, Any]], bins: int) -> list[dict[str, Any]]:
    """Every seq from 1 exactly once and in order, every bin evaluated, completed at the end."""
    seq_events = seqd(events)
    assert [e["seq"] for e in seq_events] == list(range(1, len(seq_events) + 1))
    assert len({e["epoch"] for e in seq_events}) == 1
    assert {e["binIndex"] for e in seq_events if e["type"] == "run_update"} == set(range(bins))
    assert seq_events[-1]["type"] == "status" and seq_events[-1]["status"] == "completed"
    return seq_events


def test_ingest_then_stream_json_sees_every_seq_and_exits_0(service: Service) -> None:
    bundle = create_live_run(service, "r-ingest", bins=24)
    tail = popen("stream", "runs", "r-ingest", "--json", "--url", service.url)
    ingest = flowtime("ingest", "r-ingest", "--bundle", str(bundle), "--speed", "200", "--close", "--url", service.url)
    assert ingest.returncode == 0, ingest.stderr
    assert "ingested 24 bins" in ingest.stdout and "run closed" in ingest.stdout
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["type"] == "subscribed"
    seq_events = _check_contiguous(events, 24)
    detail = httpx.get(f"{service.url}/v1/runs/r-ingest", timeout=10).json()
    assert (detail["status"], detail["seq"], detail["lastBin"]) == ("completed", seq_events[-1]["seq"], 23)
    # the table view of the finished run: replays from its history and exits 0 at the close
    table = flowtime("stream", "runs", "r-ingest", "--url", service.url, "--nodes", "Gateway,OrderQueue")
    assert table.returncode == 0, table.stderr
    assert "Gateway" in table.stdout and "OrderQueue" in table.stdout and "completed" in table.stdout
    assert "CatalogService" not in table.stdout  # the node filter trims the deltas
    # from a cursor: only what follows it
    cursor = f"{seq_events[0]['epoch']}:{seq_events[-3]['seq']}"
    tail2 = flowtime("stream", "runs", "r-ingest", "--json", "--since", cursor, "--url", service.url)
    assert [e["seq"] for e in seqd([json.loads(x) for x in tail2.stdout.splitlines()])] == [
        e["seq"] for e in seq_events[-2:]
    ]


def test_client_errors_exit_2(service: Service, tmp_path: Path) -> None:
    bundle = create_live_run(service, "r-err", bins=4)
    r = flowtime("ingest", "nope", "--bundle", str(bundle), "--url", service.url)
    assert r.returncode == 2 and "404" in r.stderr and "Traceback" not in r.stderr
    r = flowtime("stream", "runs", "nope", "--json", "--url", service.url)
    assert r.returncode == 2 and "unknown run" in r.stderr
    r = flowtime("ingest", "r-err", "--bundle", str(tmp_path), "--url", service.url)
    assert r.returncode == 2 and "not a telemetry bundle" in r.stderr


def _frames(svc: Service, run_id: str, bundle: Path) -> list[list[dict[str, Any]]]:
    model = httpx.get(f"{svc.url}/v1/runs/{run_id}/model", timeout=10).text
    graph = build_model(load_model(model, base_dir=bundle, live=True))
    return list(iter_frames(load_bundle(bundle), graph))


def _post(svc: Service, run_id: str, frames: list[dict[str, Any]]) -> None:
    body = b"".join(orjson.dumps(f) + b"\n" for f in frames)
    resp = httpx.post(
        f"{svc.url}/v1/runs/{run_id}/bins", content=body, timeout=30, headers={"Content-Type": "application/x-ndjson"}
    )
    assert resp.status_code == 202, resp.text


def test_stream_reconnects_with_its_cursor_across_a_server_restart(service: Service) -> None:
    bundle = create_live_run(service, "r-restart", bins=16)
    per_bin = _frames(service, "r-restart", bundle)
    for frames in per_bin[:8]:
        _post(service, "r-restart", frames)
    with popen("stream", "runs", "r-restart", "--json", "--url", service.url) as tail:
        out = Lines(tail.stdout)
        out.wait_for(lambda line: '"binIndex":7' in line and '"run_update"' in line)
        service.stop()  # the server goes away mid-run (close 1001), comes back and recovers the run
        service.start()
        for frames in per_bin[8:]:
            _post(service, "r-restart", frames)
        assert httpx.post(f"{service.url}/v1/runs/r-restart/close", timeout=30).status_code == 202
        lines = out.rest(timeout_s=60)
        assert tail.wait(timeout=30) == 0
        err = tail.stderr.read() if tail.stderr else ""
    assert "connection lost" in err and "reconnected at" in err
    events = [json.loads(line) for line in lines]
    assert sum(1 for e in events if e.get("type") == "subscribed") == 2
    _check_contiguous(events, 16)


# -- reconnect logic against a server that drops the socket -------------------------------------
def _event(seq: int, kind: str = "run_update") -> str:
    body: dict[str, Any] = {"v": 1, "type": kind, "runId": "r1", "epoch": "e1", "seq": seq}
    body |= {"status": "completed"} if kind == "status" else {"binIndex": seq - 1, "deltas": []}
    return json.dumps(body)


async def test_tail_resumes_from_its_cursor_after_dropped_connections() -> None:
    subscribes: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        msg = json.loads(await ws.recv())
        subscribes.append(msg["since"])
        start = 1 if msg["since"] is None else msg["since"]["seq"] + 1
        await ws.send(json.dumps({"type": "subscribed", "epoch": "e1", "seq": start - 1, "recovered": True}))
        if len(subscribes) == 1:  # three events, then a server error close
            for seq in range(start, start + 3):
                await ws.send(_event(seq))
            await ws.close(1011, "boom")
        elif len(subscribes) == 2:  # two events, then the TCP connection just ends (1006)
            for seq in range(start, start + 2):
                await ws.send(_event(seq))
            ws.transport.abort()
        else:
            await ws.send(_event(start))
            await ws.send(_event(start + 1, "status"))
            await ws.close(1000)

    got: list[dict[str, Any]] = []
    notices: list[str] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        tail = StreamTail(
            f"http://127.0.0.1:{port}",
            "r1",
            on_message=lambda m, _: got.append(m),
            on_notice=notices.append,
            retry_seconds=10,
        )
        async with asyncio.timeout(20):
            assert await tail.run() == 0
    assert subscribes == [None, {"epoch": "e1", "seq": 3}, {"epoch": "e1", "seq": 5}]
    assert [m["seq"] for m in got if "v" in m] == list(range(1, 8))
    assert tail.cursor == ("e1", 7) and tail.gaps == []
    assert sum("connection lost" in n for n in notices) == 2
    assert "reconnected at e1:5 (replaying what was missed)" in notices


async def test_tail_gives_up_when_the_server_stays_away() -> None:
    from engine_live.errors import ServerError

    tail = StreamTail(f"http://127.0.0.1:{free_port()}", "r1", retry_seconds=0.3)
    async with asyncio.timeout(20):
        with pytest.raises(ServerError, match="cannot reach"):
            await tail.run()


async def test_tail_gives_up_on_a_server_that_keeps_closing_at_once() -> None:
    from engine_live.errors import ServerError

    async def handler(ws: ServerConnection) -> None:
        await ws.close(1011, "broken")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        tail = StreamTail(f"http://127.0.0.1:{port}", "r1", retry_seconds=0.5)
        async with asyncio.timeout(20):
            with pytest.raises(ServerError, match="close code 1011"):
                await tail.run()
    assert tail.connections >= 2  # it did retry before giving up
