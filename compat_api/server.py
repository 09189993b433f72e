"""Running the service: build the context (`compat_api.compose`), then uvicorn on one event loop."""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from compat_api.app import create_app
from compat_api.auth import check_bind
from compat_api.compose import build_context
from compat_api.logging_setup import configure_logging
from compat_api.settings import Settings

log = logging.getLogger("flowtime.server")


def server_config(settings: Settings, app: ASGIApp, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for the app: our logging (`log_config=None`), no per-message deflate."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_per_message_deflate=False,
        lifespan="on",
        log_config=None,
        **extra,
    )


def load_compiled_kernels() -> threading.Thread:
    """Compile the numba kernels in the background (`engine_live.plan.warmup`): a long-lived server
    then steps every run's queues with the compiled recurrence and no run waits for a compilation."""
    thread = threading.Thread(target=_warm_up, name="warm-up-kernels", daemon=True)
    thread.start()
    return thread


def _warm_up() -> None:
    try:
        importlib.import_module("engine_live.plan.warmup").warm_up()
    except Exception:  # the numpy paths still work: only slower
        log.warning("compiling the kernels failed; queues use the numpy recurrence", exc_info=True)


def run_server(settings: Settings) -> int:
    """`flowtime serve`: build, check the bind address against auth, serve until stopped."""
    configure_logging(settings.log_level)
    load_compiled_kernels()
    ctx = build_context(settings)
    log.info(check_bind(settings, ctx.auth))
    server = uvicorn.Server(server_config(settings, create_app(settings, ctx, freeze_gc=True)))
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal with the handler that was
    # installed before it ran: with the default one the process would die of it (exit −15) after a
    # clean shutdown. A no-op handler makes a SIGTERM'd `flowtime serve` exit 0, as supervisors expect.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0
