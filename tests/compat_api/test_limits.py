"""Request body limit (SPEC §10, §12.16): 413 `too_large` by Content-Length or by streamed size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from compat_api.limits import BodyLimitMiddleware
from compat_api.settings import Settings

LIMIT = 64


def make_client() -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    @app.post("/json")
    async def parsed(body: dict[str, Any]) -> dict[str, Any]:
        return {"keys": len(body)}

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=LIMIT)
    return TestClient(app)


TOO_LARGE = {"error": "too_large", "message": f"request body exceeds {LIMIT} bytes", "limit": LIMIT}


def chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 16):
        yield b"x" * 16


def test_bodies_within_the_limit_pass() -> None:
    client = make_client()
    assert client.post("/echo", content=b"x" * LIMIT).json() == {"size": LIMIT}
    assert client.get("/docs").status_code == 200


def test_declared_length_over_the_limit_is_413() -> None:
    r = make_client().post("/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.json() == TOO_LARGE


def test_streamed_body_over_the_limit_is_413() -> None:
    client = make_client()
    r = client.post("/echo", content=chunks(LIMIT * 4))  # chunked: no Content-Length
    assert r.status_code == 413 and r.json() == TOO_LARGE
    r = client.post("/json", content=chunks(LIMIT * 4), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json() == TOO_LARGE
    assert client.post("/echo", content=chunks(LIMIT)).json() == {"size": LIMIT}


def test_the_default_limit_is_16_mib() -> None:
    assert Settings(port=0).max_body_bytes == 16 * 1024 * 1024
