"""The browser guard (SPEC §10, issue 12 #8; docs/security.md#browsers): with auth off a web page
cannot feed or read the service — foreign `Origin` 403, non-loopback `Host` 421, writes without a
JSON/NDJSON/YAML content type 415 — over HTTP and WebSocket; with auth on only what is configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from compat_api.app import create_app
from compat_api.browser_guard import parse_origin, split_host
from compat_api.compose import build_context
from compat_api.settings import Settings

BASE = "http://127.0.0.1:8080"
EVIL = {"origin": "http://evil.example"}
NDJSON = {"content-type": "application/x-ndjson"}
FRAME = b'{"bin": 0, "series": "demand", "value": 1}'
MODEL = """
grid: {bins: 8, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, 10)"}
"""
TOKEN = "tok-guard-admin-9e1f"


def make_client(tmp_path: Path, base_url: str = BASE, **values: Any) -> TestClient:
    values = {"allowed_hosts": [], "data_dir": tmp_path / "data", "fsync": False, **values}
    settings = Settings.model_validate(values)  # allowed_hosts given: the tests' testserver default is not used
    return TestClient(create_app(settings, build_context(settings)), base_url=base_url)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        assert c.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": "r1"}}).status_code == 202
        yield c


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == code and body["message"], body
    return body


# ---- auth off -----------------------------------------------------------------------------------------
def test_a_simple_cross_site_post_is_refused(client: TestClient) -> None:
    """The issue's exploit: a page POSTs `text/plain` frames with its own Origin."""
    r = client.post("/v1/runs/r1/bins", content=FRAME, headers={"content-type": "text/plain", **EVIL})
    assert refused(r, 403, "forbidden_origin")["origin"] == EVIL["origin"]
    r = client.post("/v1/runs/r1/bins", content=FRAME, headers={"content-type": "text/plain"})  # no Origin
    assert refused(r, 415, "unsupported_media_type")["contentType"] == "text/plain"
    assert client.get("/v1/runs/r1/state/live").json()["lastBin"] == -1  # nothing was ingested


def test_writes_need_a_json_ndjson_or_yaml_content_type(client: TestClient) -> None:
    for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", None):
        headers = {"content-type": ctype} if ctype else {}
        refused(client.post("/v1/runs/r1/bins", content=FRAME, headers=headers), 415, "unsupported_media_type")
    refused(client.patch("/v1/runs/r1/model", content=b'{"nodes": []}'), 415, "unsupported_media_type")
    refused(
        client.post("/v1/validate", content=MODEL, headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert client.post("/v1/runs/r1/bins", content=FRAME, headers=NDJSON).status_code == 202
    json_type = {"content-type": "application/json; charset=utf-8"}
    assert client.post("/v1/runs/r1/bins", content=FRAME, headers=json_type).status_code == 202
    for ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
        assert client.post("/v1/validate", content=MODEL, headers={"content-type": ctype}).json()["valid"] is True
    assert client.post("/v1/runs/r1/snapshots").status_code == 201  # no body: no content type needed


def test_only_the_services_own_origin_is_accepted(client: TestClient) -> None:
    for origin in (BASE, "http://127.0.0.1:8080/"):
        r = client.post("/v1/runs/r1/bins", content=FRAME, headers={**NDJSON, "origin": origin})
        assert r.status_code == 202, (origin, r.text)
    for origin in (
        "http://evil.example",
        "null",
        "https://127.0.0.1:8080",
        "http://127.0.0.1:9999",
        "http://localhost:8080",
    ):
        refused(client.get("/v1/runs", headers={"origin": origin}), 403, "forbidden_origin")
    assert client.get("/v1/runs").status_code == 200  # no Origin: not a browser's cross-site request


def test_non_loopback_hosts_are_refused(tmp_path: Path) -> None:
    with make_client(tmp_path, base_url="http://evil.example:8080") as c:  # DNS rebinding
        body = refused(c.get("/v1/runs"), 421, "bad_host")
        assert body["host"] == "evil.example:8080"
        refused(c.get("/healthz"), 421, "bad_host")
    for base in ("http://localhost:8080", "http://127.0.0.1", "http://[::1]:8080", "http://127.0.0.2:8080"):
        with make_client(tmp_path, base_url=base) as c:
            assert c.get("/v1/runs").status_code == 200, base
            assert c.get("/v1/runs", headers={"origin": base}).status_code == 200, base


def test_configured_hosts_and_origins_are_accepted(tmp_path: Path) -> None:
    allowed = {"allowed_hosts": "flowtime.internal, other:9000", "allowed_origins": ["https://dash.example"]}
    with make_client(tmp_path, base_url="http://flowtime.internal:8080", **allowed) as c:
        assert c.get("/v1/runs", headers={"origin": "https://dash.example:443"}).status_code == 200
        assert c.get("/v1/runs", headers={"origin": "http://flowtime.internal:8080"}).status_code == 200
        refused(c.get("/v1/runs", headers=EVIL), 403, "forbidden_origin")
    with make_client(tmp_path, base_url="http://other:9001", **allowed) as c:
        refused(c.get("/v1/runs"), 421, "bad_host")  # the entry names port 9000
    with make_client(tmp_path, base_url="http://anything", allowed_hosts="*", allowed_origins="*") as c:
        assert c.get("/v1/runs", headers=EVIL).status_code == 200


def ws_close_code(c: TestClient, headers: dict[str, str], host: str = "127.0.0.1:8080", run: str = "r1") -> int:
    url = f"ws://{host}/v1/runs/{run}/stream"  # TestClient's websocket_connect ignores base_url
    with c.websocket_connect(url, headers=headers) as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value.code


def test_the_websocket_refuses_foreign_origins_and_hosts(client: TestClient, tmp_path: Path) -> None:
    assert ws_close_code(client, EVIL) == 4403
    assert ws_close_code(client, {"origin": BASE}, run="nope") == 4404  # past the guard: the stream's own answer
    with make_client(tmp_path / "other", base_url="http://evil.example:8080") as c:
        assert ws_close_code(c, {}, host="evil.example:8080") == 1008


# ---- auth on ------------------------------------------------------------------------------------------
def test_with_auth_on_nothing_is_checked_unless_configured(tmp_path: Path) -> None:
    """SPEC §10 asks the rules of auth-off mode; with tokens an upstream FlowTime client may still post
    its YAML model to `/v1/run` as `text/plain`, as upstream's API documents."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    model = b"grid: {bins: 2, binSize: 1, binUnit: minutes}\nnodes:\n  - {id: a, kind: const, values: [1, 2]}\n"
    with make_client(tmp_path, base_url="http://flowtime.example.com", tokens=f"{TOKEN}:admin") as c:
        assert c.get("/v1/runs", headers={**auth, **EVIL}).status_code == 200
        r = c.post("/v1/run", content=model, headers={**auth, "content-type": "text/plain"})
        assert r.status_code == 200 and r.json()["series"]["a"] == [1.0, 2.0], r.text
    configured = {
        "tokens": f"{TOKEN}:admin",
        "allowed_origins": "https://dash.example",
        "allowed_hosts": "flowtime.example.com",
    }
    with make_client(tmp_path, base_url="http://flowtime.example.com", **configured) as c:
        refused(c.get("/v1/runs", headers={**auth, **EVIL}), 403, "forbidden_origin")
        assert c.get("/v1/runs", headers={**auth, "origin": "https://dash.example"}).status_code == 200
    with make_client(tmp_path, base_url="http://elsewhere.example", **configured) as c:
        refused(c.get("/v1/runs", headers=auth), 421, "bad_host")


# ---- parsing --------------------------------------------------------------------------------------------
def test_host_and_origin_parsing() -> None:
    assert split_host("LocalHost:8080") == ("localhost", 8080)
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("example.com") == ("example.com", None)
    for bad in ("", "[::1", "[::1]x", "host:port", ":80"):
        assert split_host(bad) is None, bad
    assert parse_origin("https://Dash.Example") == ("https", "dash.example", 443)
    assert parse_origin("http://[::1]:8080") == ("http", "::1", 8080)
    for bad in ("null", "file://", "ftp://x", "http://x:99999", "*"):
        assert parse_origin(bad) is None, bad
