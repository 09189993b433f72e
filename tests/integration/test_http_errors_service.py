"""Issue 12 #9 on a real uvicorn server: an unexpected exception is answered with the 500 error body
and the client's keep-alive connection survives it (Starlette's outer error middleware re-raised,
and uvicorn then dropped the connection: the client's next request got a reset)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, host: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return status, await reader.readexactly(length)


@pytest.mark.asyncio
async def test_a_500_keeps_the_connection_open(tmp_path: Path, uvicorn_server: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings, build_context(settings))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    async with app.router.lifespan_context(app), uvicorn_server(app) as addr:
        host, port = addr.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            status, body = await exchange(reader, writer, "/boom", addr)
            assert status == 500 and body == b'{"error":"internal","message":"internal server error"}'
            status, body = await exchange(reader, writer, "/healthz", addr)  # same connection
            assert status == 200 and b"ok" in body
        finally:
            writer.close()
