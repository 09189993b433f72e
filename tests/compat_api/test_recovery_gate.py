"""While recovery runs, /readyz answers 503 with progress and other requests wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings
from engine_live.runtime.recovery import RecoveredRun, Recovery


async def test_readyz_is_503_until_recovery_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    real = Recovery.recover_each

    async def slow_recovery(self: Recovery, dirs: list[Path]) -> AsyncIterator[RecoveredRun]:
        self.progress.runs = 3
        entered.set()
        await release.wait()
        async for recovered in real(self, dirs):
            yield recovered

    monkeypatch.setattr(Recovery, "recover_each", slow_recovery)
    settings = Settings.model_validate({"data_dir": tmp_path / "data"})
    app = create_app(settings, build_context(settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c,
    ):
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
