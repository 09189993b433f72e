"""Running the service: build the context (engine, auth, metrics), then uvicorn on one event loop."""

from __future__ import annotations

import logging

import uvicorn

from compat_api.app import create_app
from compat_api.auth import check_bind, load_authenticator
from compat_api.context import AppContext
from compat_api.live_service import LiveService
from compat_api.logging_setup import configure_logging
from compat_api.metrics import Metrics
from compat_api.metrics_wiring import wire_metrics
from compat_api.settings import Settings
from stream_hub.hub import Hub, HubLimits

log = logging.getLogger("flowtime.server")


def build_context(settings: Settings) -> AppContext:
    ctx = AppContext(settings)
    ctx.auth = load_authenticator(settings)
    ctx.metrics = Metrics()
    hub = Hub(HubLimits(settings.hub_history_events, settings.hub_history_bytes, settings.client_queue_events))
    ctx.extras["hub"] = hub
    ctx.live = LiveService(settings, metrics=ctx.metrics, hub=hub)
    ctx.live.ctx = ctx
    wire_metrics(ctx)  # scrape-time readers of queue, hub, runs, recovery and Kafka
    return ctx


def run_server(settings: Settings) -> int:
    configure_logging(settings.log_level)
    ctx = build_context(settings)
    log.info(check_bind(settings, ctx.auth))
    app = create_app(settings, ctx)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_per_message_deflate=False,
        lifespan="on",
        log_config=None,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0
