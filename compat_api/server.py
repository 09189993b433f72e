"""Running the service: build the context (engine, auth, metrics), then uvicorn on one event loop."""

from __future__ import annotations

import logging

import uvicorn

from compat_api.app import create_app
from compat_api.context import AppContext
from compat_api.settings import Settings

log = logging.getLogger("flowtime.server")


def build_context(settings: Settings) -> AppContext:
    ctx = AppContext(settings)
    try:
        from compat_api.auth import check_bind, load_authenticator  # type: ignore[attr-defined]
    except ImportError:  # security module not installed yet
        pass
    else:
        ctx.auth = load_authenticator(settings)
        check_bind(settings)
    try:
        from compat_api.metrics import Metrics  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        ctx.metrics = Metrics()
    try:
        from compat_api.live_service import LiveService  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        ctx.live = LiveService(settings, metrics=ctx.metrics)
    return ctx


def run_server(settings: Settings) -> int:
    ctx = build_context(settings)
    app = create_app(settings, ctx)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on")
    server = uvicorn.Server(config)
    server.run()
    return 0
