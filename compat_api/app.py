"""FastAPI app composition: the one place that wires engine, ingestion, hub and snapshots together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from compat_api.context import AppContext
from compat_api.dashboard import ASSETS_DIR
from compat_api.http_errors import install_error_handlers
from compat_api.settings import Settings

ROUTERS = (
    "compat_api.routes.health",
    "compat_api.routes.live",
    "compat_api.stream_wiring",
    "compat_api.routes.templates",
    "compat_api.routes.runs",
    "compat_api.routes.state",
    "compat_api.routes.compare",
    "compat_api.routes.validate",
    "compat_api.routes.artifacts",
    "compat_api.routes.exports",
    "compat_api.routes.admin",
)


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> FastAPI:
    settings = settings or Settings()
    ctx = ctx or AppContext(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for sub in ("runs", "bundles", "inputs", "compares"):
            (settings.data_dir / sub).mkdir(parents=True, exist_ok=True)
        from compat_api.stream_wiring import KafkaWiring

        kafka = KafkaWiring(ctx)
        ctx.extras["kafka"] = kafka  # read by compat_api/metrics_wiring.py (Kafka sends and lag)
        startup: asyncio.Task[None] | None = None
        if ctx.live is not None:
            live = ctx.live

            async def recover_then_consume() -> None:
                await live.start()  # recovery: /readyz answers 503 with progress until it is done
                await kafka.start()

            startup = asyncio.create_task(recover_then_consume(), name="live-recovery")
        try:
            yield
        finally:
            if startup is not None and not startup.done():
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
            await kafka.stop()
            hub = ctx.extras.get("hub")
            if hub is not None:
                hub.close_all(1001)
            if ctx.live is not None:
                await ctx.live.stop()

    app = FastAPI(
        title="FlowTime Live",
        version="0.1.0",
        description="The live engine of FlowTime: telemetry bins in, per-bin updates out (SPEC §8).",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    from compat_api.recovery_gate import RecoveryGate

    app.add_middleware(RecoveryGate, ctx=ctx)
    from compat_api.limits import BodyLimitMiddleware

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    for name in ROUTERS:
        app.include_router(import_module(name).router)
    app.mount("/dashboard", StaticFiles(directory=ASSETS_DIR), name="dashboard")
    return app
