"""The browser guard on a real `flowtime serve` with auth off (issue 12 #8, docs/security.md#browsers):
what a web page can make the browser send — a `text/plain` POST with its Origin, a WebSocket from a
foreign page, a DNS-rebound `Host` — is refused over real HTTP and WebSocket connections, and
nothing reaches the run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_proc import ServerProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.integration
MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""
FRAME = b'{"bin": 0, "series": "demand", "value": 1}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("guard") / "data") as proc:
        r = httpx.post(f"{proc.base_url}/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "g1"}})
        assert r.status_code == 202, r.text
        yield proc


def test_cross_site_http_is_refused_and_changes_nothing(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as c:
        r = c.post(
            "/v1/runs/g1/bins", content=FRAME, headers={"content-type": "text/plain", "origin": "http://evil.example"}
        )
        assert r.status_code == 403 and r.json()["error"] == "forbidden_origin", r.text
        r = c.post("/v1/runs/g1/bins", content=FRAME, headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", r.text
        r = c.get("/v1/runs/g1", headers={"host": "rebound.example"})
        assert r.status_code == 421 and r.json()["error"] == "bad_host", r.text
        assert c.get("/v1/runs/g1/state/live").json()["lastBin"] == -1
        own = {"content-type": "application/x-ndjson", "origin": server.base_url}
        assert c.post("/v1/runs/g1/bins", content=FRAME, headers=own).status_code == 202


async def close_code(url: str, **kw: Any) -> int | None:
    try:
        async with connect(url, open_timeout=10, **kw) as ws:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    return None


def test_cross_site_websockets_are_closed(server: ServerProcess) -> None:
    url = f"{server.ws_url}/v1/runs/g1/stream"
    assert asyncio.run(close_code(url, origin="http://evil.example")) == 4403
    rebound = f"ws://rebound.example:{server.port}/v1/runs/g1/stream"  # the name, connected to loopback
    assert asyncio.run(close_code(rebound, host="127.0.0.1", port=server.port)) == 1008
