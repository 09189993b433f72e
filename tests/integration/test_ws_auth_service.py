"""The WebSocket `/v1/runs/{id}/stream` of the full service behind a real uvicorn, with auth on (SPEC §7, §10).

Close codes: 4401 for a missing, wrong or expired token, 4403 for a token that may not read the run
(the only way to be under-scoped for `read`, the lowest scope), 4408 when no auth message arrives
in time. `DELETE /v1/runs/{id}` (§12.9) ends the run for its subscribers: a `status` event
`failed`/`deleted`, then close 1000. Tokens do not appear in what the service logs.

The auth timeout (5 s by default) is not a service setting, so the test shortens it by patching the
`StreamSettings` the stream route builds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from compat_api.app import ROUTERS, create_app
from compat_api.compose import build_context
from compat_api.logging_setup import JsonFormatter, TokenMaskingFilter
from compat_api.settings import Settings
from stream_hub.ws_endpoint import StreamSettings

pytestmark = pytest.mark.integration

ADMIN_ROUTER = "compat_api.routes.admin"
READ, INGEST, ADMIN = "ws-read-31a7", "ws-ingest-88c2", "ws-admin-4be0"
RUN_LIMITED = "ws-read-a-only-0d19"  # read, runs a*
EXPIRED = "ws-expired-7c55"
WRONG = "ws-wrong-0000"
AUTH_TIMEOUT_S = 0.3
CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")  # this test's own clients (they send the tokens)
LIVE_MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: cap, kind: const, values: [10, 10, 10, 10, 10, 10, 10, 10]}
  - {id: served, kind: expr, expr: "MIN(demand, cap)"}
"""


def make_settings(tmp_path: Path) -> Settings:
    expired = [{"token": EXPIRED, "scopes": ["admin"], "expires": "2020-01-01T00:00:00Z"}]
    (tmp_path / "tokens.json").write_text(json.dumps(expired))
    tokens = f"{READ}:read;{INGEST}:ingest;{ADMIN}:admin;{RUN_LIMITED}:read:a*"
    values = {"data_dir": tmp_path / "data", "tokens": tokens, "tokens_file": tmp_path / "tokens.json", "fsync": False}
    return Settings.model_validate(values)


@contextlib.asynccontextmanager
async def service(tmp_path: Path, uvicorn_server: Callable[..., Any]) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The full app (lifespan run here, uvicorn with lifespan off) plus an admin HTTP client."""
    settings = make_settings(tmp_path)
    app: FastAPI = create_app(settings, build_context(settings))
    if ADMIN_ROUTER not in ROUTERS:  # until compat_api.app registers it
        app.include_router(import_module(ADMIN_ROUTER).router)
    async with app.router.lifespan_context(app), uvicorn_server(app) as addr:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=f"http://{addr}", headers=headers, timeout=10) as http:
            for rid in ("a1", "b1"):
                body = {"mode": "live", "model": LIVE_MODEL, "options": {"runId": rid}}
                assert (await http.post("/v1/runs", json=body)).status_code == 202
            yield addr, http


@pytest.fixture(autouse=True)
def short_auth_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "compat_api.routes.stream.StreamSettings", functools.partial(StreamSettings, auth_timeout_s=AUTH_TIMEOUT_S)
    )


async def close_code(ws: ClientConnection) -> int:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd is not None, "the client, not the server, ended the connection"
    return info.value.rcvd.code


async def subscribed(ws: ClientConnection) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "since": None, "nodes": None}).decode())
    msg: dict[str, Any] = orjson.loads(await ws.recv())
    assert msg["type"] == "subscribed", msg
    return msg


async def test_stream_refuses_bad_tokens_with_4401_and_4403(tmp_path: Path, uvicorn_server: Any) -> None:
    async with service(tmp_path, uvicorn_server) as (addr, _):
        url = f"ws://{addr}/v1/runs"
        cases: list[tuple[str, dict[str, Any] | None, dict[str, str], int]] = [
            ("a1", {"type": "subscribe", "since": None}, {}, 4401),  # missing: no auth message first
            ("a1", {"type": "auth"}, {}, 4401),  # missing: auth message without a token
            ("a1", {"type": "auth", "token": WRONG}, {}, 4401),
            ("a1", {"type": "auth", "token": EXPIRED}, {}, 4401),
            ("a1", None, {"Authorization": f"Bearer {WRONG}"}, 4401),
            ("a1", None, {"Authorization": f"Bearer {EXPIRED}"}, 4401),
            ("b1", {"type": "auth", "token": RUN_LIMITED}, {}, 4403),  # may read a* only
            ("b1", None, {"Authorization": f"Bearer {RUN_LIMITED}"}, 4403),
        ]
        for run, first, headers, want in cases:
            async with connect(f"{url}/{run}/stream", additional_headers=headers) as ws:
                if first is not None:
                    await ws.send(orjson.dumps(first).decode())
                assert await close_code(ws) == want, (run, first, headers)


async def test_stream_accepts_the_right_tokens(tmp_path: Path, uvicorn_server: Any) -> None:
    async with service(tmp_path, uvicorn_server) as (addr, _):
        for run, token in (("a1", READ), ("b1", READ), ("a1", INGEST), ("a1", ADMIN), ("a1", RUN_LIMITED)):
            async with connect(f"ws://{addr}/v1/runs/{run}/stream") as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                assert (await subscribed(ws))["epoch"]
            headers = {"Authorization": f"Bearer {token}"}
            async with connect(f"ws://{addr}/v1/runs/{run}/stream", additional_headers=headers) as ws:
                await subscribed(ws)


@pytest.mark.slow
async def test_stream_closes_4408_without_auth_in_time(tmp_path: Path, uvicorn_server: Any) -> None:
    async with service(tmp_path, uvicorn_server) as (addr, _), connect(f"ws://{addr}/v1/runs/a1/stream") as ws:
        assert await close_code(ws) == 4408


async def test_delete_fails_the_run_and_closes_its_clients_with_1000(tmp_path: Path, uvicorn_server: Any) -> None:
    async with service(tmp_path, uvicorn_server) as (addr, http):
        frames = [{"bin": b, "series": "demand", "value": v} for b, v in enumerate([4.0, 12.0])]
        assert (await http.post("/v1/runs/a1/bins", json=frames)).status_code == 202
        async with connect(f"ws://{addr}/v1/runs/a1/stream") as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": READ}).decode())
            await subscribed(ws)
            r = await http.delete("/v1/runs/a1")
            assert r.status_code == 200 and r.json()["status"] == "failed"
            events = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    events.append(orjson.loads(await ws.recv()))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1000
        status = [e for e in events if e.get("type") == "status"]
        assert status[-1]["status"] == "failed" and status[-1]["reason"] == "deleted"
        assert not (tmp_path / "data" / "runs" / "a1").exists()
        async with connect(f"ws://{addr}/v1/runs/a1/stream") as ws:  # the run is gone
            await ws.send(orjson.dumps({"type": "auth", "token": READ}).decode())
            assert await close_code(ws) == 4404


async def test_stream_tokens_never_reach_the_logs(
    tmp_path: Path, uvicorn_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with service(tmp_path, uvicorn_server) as (addr, http):
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn set them up (no propagation)
            caplog.set_level(logging.DEBUG, logger=name)
            logging.getLogger(name).addHandler(caplog.handler)
        for token in (READ, WRONG, EXPIRED, RUN_LIMITED):
            async with connect(f"ws://{addr}/v1/runs/b1/stream") as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                if token == READ:
                    await subscribed(ws)
                else:
                    await close_code(ws)
        await http.get("/v1/runs/nope", headers={"Authorization": f"Bearer {WRONG}"})
        for name in ("uvicorn", "uvicorn.access"):
            logging.getLogger(name).removeHandler(caplog.handler)
    server_side = [rec for rec in caplog.records if not rec.name.startswith(CLIENT_LOGGERS)]
    assert any("auth" in rec.getMessage() for rec in server_side), "expected uvicorn's frame debug logs"
    # What the service writes: each record through its handler's masking filter and JSON formatter.
    # (At DEBUG, uvicorn logs client frames — the auth message included — so the filter is what keeps
    # the token out.)
    mask, fmt = TokenMaskingFilter(), JsonFormatter()
    written = "\n".join(fmt.format(rec) for rec in server_side if mask.filter(rec))
    for token in (READ, INGEST, ADMIN, WRONG, EXPIRED, RUN_LIMITED):
        assert token not in written
