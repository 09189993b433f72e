"""The tables of docs/security.md as data: endpoints (method, path → scope, run check) and settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from starlette.routing import BaseRoute

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ENDPOINT_ROW = re.compile(
    r"^\| (?P<method>GET|POST|PUT|PATCH|DELETE|WS) \| `(?P<path>[^`]+)` \| (?P<scope>open|read|ingest|admin|metrics) "
    r"\| (?P<check>.+) \|$"
)
SETTING_ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<default>`[^`]*`|none) \| (?P<what>.+) \|$")


@dataclass(frozen=True)
class Row:
    scope: str | None  # None: open
    check: str


def endpoint_rows() -> dict[tuple[str, str], Row]:
    """(method, path template) → its row; duplicates fail."""
    rows: dict[tuple[str, str], Row] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ENDPOINT_ROW.match(line)
        if m:
            key = (m["method"], m["path"])
            assert key not in rows, f"docs/security.md lists {key} twice"
            rows[key] = Row(None if m["scope"] == "open" else m["scope"], m["check"])
    return rows


def setting_rows() -> dict[str, str]:
    """setting name → its default column (`value` or none)."""
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = SETTING_ROW.match(line)
        if m:
            out[m["name"]] = m["default"]
    return out


def flat_routes(app: FastAPI) -> list[tuple[BaseRoute, str, set[str]]]:
    """(route, full path, methods) of every route, through included routers (FastAPI ≥ 0.16x nests them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return [(r, str(getattr(r, "path", "")), set(getattr(r, "methods", None) or ())) for r in app.routes]
    return [(c.original_route, str(c.path), set(c.methods or ())) for c in iter_route_contexts(app.routes)]


def served_endpoints(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every OpenAPI operation and every WebSocket route (method `WS`)."""
    out = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    out |= {("WS", path) for route, path, _ in flat_routes(app) if isinstance(route, APIWebSocketRoute)}
    return out
