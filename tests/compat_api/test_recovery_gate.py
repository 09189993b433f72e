"""While recovery runs, /readyz answers 503 with progress and other requests wait for it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

import compat_api.live_recovery as live_recovery
from compat_api.app import create_app
from compat_api.server import build_context
from compat_api.settings import Settings


async def test_readyz_is_503_until_recovery_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    real = live_recovery.recover_runs

    async def slow_recovery(service: Any, progress: dict[str, int]) -> None:
        progress["runs"] = 3
        entered.set()
        await release.wait()
        await real(service, progress)

    monkeypatch.setattr(live_recovery, "recover_runs", slow_recovery)
    settings = Settings.model_validate({"data_dir": tmp_path / "data"})
    app = create_app(settings, build_context(settings))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await asyncio.wait_for(entered.wait(), 5)
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["progress"]["runs"] == 3
        assert (await c.get("/healthz")).status_code == 200
        waiting = asyncio.create_task(c.get("/v1/runs"))
        assert (await c.get("/readyz")).status_code == 503  # a full round trip later, still waiting
        assert not waiting.done()
        release.set()
        listed = await asyncio.wait_for(waiting, 10)
        assert listed.status_code == 200
        assert (await c.get("/readyz")).status_code == 200
