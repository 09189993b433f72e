"""The API docs pages without a CDN: `/docs` (Swagger UI) and `/redoc`, their assets served from the
`fastapi-offline` package (Swagger UI 5, which reads OpenAPI 3.1, and ReDoc), so they work on a
machine without internet access.

FastAPI's own pages load their scripts from a CDN and stay blank offline; `create_app` turns them off
(`docs_url=None, redoc_url=None`) and calls `install_docs`. The assets are plain starlette routes
under `/docs/assets/` (open like the pages; only the listed files are served, with a long cache).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

ASSETS_URL = "/docs/assets"
ASSETS = {  # file name → media type
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def assets_dir() -> Path:
    """The folder of the packaged Swagger UI and ReDoc files."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, title: str) -> None:
    """Add `/docs`, `/redoc` and `/docs/assets/{name}` to the app (no schema entries)."""
    openapi_url = app.openapi_url or "/openapi.json"
    folder = assets_dir()

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    async def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name not in ASSETS:
            return Response(status_code=404)
        headers = {"Cache-Control": "public, max-age=86400"}
        return FileResponse(folder / name, media_type=ASSETS[name], headers=headers)

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(ASSETS_URL + "/{name}", asset, include_in_schema=False)


__all__ = ["ASSETS", "ASSETS_URL", "assets_dir", "install_docs"]
