"""One table from errors to HTTP responses: FlowTimeError → its status and `{"error", "message", ...}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine_live.errors import BackpressureError, FlowTimeError

log = logging.getLogger("flowtime.http")


def error_response(exc: FlowTimeError, retry_after: int = 1) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if isinstance(exc, BackpressureError) else None
    return JSONResponse(exc.to_body(), status_code=exc.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def flowtime_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FlowTimeError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"])
        return JSONResponse(
            {"error": "invalid_request", "message": f"{where}: {first['message']}" if where else first["message"],
             "errors": errors},
            status_code=422,
        )  # fmt: skip

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # fmt: skip

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal server error"}, status_code=500)

    app.add_exception_handler(FlowTimeError, flowtime_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
