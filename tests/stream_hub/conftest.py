"""A real uvicorn server on loopback for the stream tests that need one (`test_ws_limits_server.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn


@contextlib.asynccontextmanager
async def serve_on_loopback(app: Any) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1:<free port> for the `async with`; yields 'host:port'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # bounded wait for the server's own start-up flag
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


@pytest.fixture
def loopback_server() -> Any:
    """The `serve_on_loopback` context manager (test modules cannot import a conftest)."""
    return serve_on_loopback
