"""The FastAPI app: routes, middleware and error handlers around a context built by `compat_api.compose`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from compat_api.browser_guard import BrowserGuard
from compat_api.compose import Lifecycle
from compat_api.context import AppContext
from compat_api.dashboard import ASSETS_DIR
from compat_api.docs_ui import install_docs
from compat_api.http_errors import install_error_handlers
from compat_api.limits import BodyLimitMiddleware
from compat_api.openapi_links import add_links
from compat_api.recovery_gate import RecoveryGate
from compat_api.settings import Settings

ROUTERS = (
    "compat_api.routes.health",
    "compat_api.routes.live",
    "compat_api.routes.stream",
    "compat_api.routes.templates",
    "compat_api.routes.runs",
    "compat_api.routes.state",
    "compat_api.routes.compare",
    "compat_api.routes.validate",
    "compat_api.routes.artifacts",
    "compat_api.routes.exports",
    "compat_api.routes.admin",
)


def create_app(settings: Settings | None = None, ctx: AppContext | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """Build the FastAPI app: routers, middleware, error handlers and a lifespan that starts and stops the service."""
    settings = settings or Settings()
    ctx = ctx or AppContext(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle = Lifecycle(ctx, freeze_gc=freeze_gc)
        await lifecycle.start()
        try:
            yield
        finally:
            await lifecycle.stop()

    app = FastAPI(
        title="FlowTime Live",
        version="0.1.0",
        description="The live engine of FlowTime: telemetry bins in, per-bin updates out (SPEC §8).",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,  # FastAPI's pages load Swagger UI from a CDN: ours serve it from the package
        redoc_url=None,
    )
    install_docs(app, "FlowTime Live")
    app.state.ctx = ctx
    install_error_handlers(app)
    app.add_middleware(RecoveryGate, ctx=ctx)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BrowserGuard, ctx=ctx)  # added last: runs first (Host, Origin, content type)
    for name in ROUTERS:
        app.include_router(import_module(name).router)
    app.mount("/dashboard", StaticFiles(directory=ASSETS_DIR), name="dashboard")

    def openapi_with_links() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi_with_links  # type: ignore[method-assign]
    return app
