"""FlowTimeError → HTTP response: the status from `engine_live.errors.ERROR_TABLE` (`exc.http_status`)
and the body `exc.to_body()` = `{"error", "message", ...}`; 429 adds `Retry-After`. Framework errors
(validation, unknown route, method) get the same body shape."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine_live.errors import (
    BackpressureError,
    FlowTimeError,
    InvalidRequestError,
    NotFoundError,
    StorageUnavailableError,
    TooLargeError,
)

log = logging.getLogger("flowtime.http")

# The wire form of every error (SPEC §8): `{"error": code, "message", ...details}`.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. not_found, invalid_model"},
        "message": {"type": "string", "description": "what went wrong, for people"},
    },
    "additionalProperties": True,
}
ERROR_EXAMPLE = {"error": "not_found", "message": "run 'r9' not found", "runId": "r9"}


def error_doc(description: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response entry whose body is the error schema."""
    content = {"application/json": {"schema": ERROR_SCHEMA, "example": example or ERROR_EXAMPLE}}
    return {"description": description, "content": content}


# Router-level `responses=`: every 4xx answers the error schema. A `4XX` entry also replaces
# FastAPI's default 422 `HTTPValidationError`, which is not what this service sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": error_doc(
        "a client error: 400 malformed, 401/403 auth, 404 unknown, 409 conflict, 413 too large, "
        "422 invalid, 429 backpressure (with Retry-After)"
    ),
}


def error_response(exc: FlowTimeError, retry_after: int = 1) -> JSONResponse:
    """The response for an error: its table status and body (`Retry-After` on backpressure and storage failures)."""
    retry = isinstance(exc, BackpressureError | StorageUnavailableError)
    headers = {"Retry-After": str(retry_after)} if retry else None
    return JSONResponse(json_safe(exc.to_body()), status_code=exc.http_status, headers=headers)


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±inf — which JSON cannot carry) as its text, so an
    error naming a client's `NaN` can always be answered (issue 12 #9: it was a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


INTERNAL_BODY = b'{"error":"internal","message":"internal server error"}'


class InternalErrorGuard:
    """The innermost middleware: an exception no handler answered becomes the 500 error body here,
    and is *not* re-raised — Starlette's outer `ServerErrorMiddleware` re-raises after answering,
    which made uvicorn drop the client's keep-alive connection (issue 12 #9)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 500 (logged with its traceback) if it raises before responding."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(INTERNAL_BODY)).encode())]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": INTERNAL_BODY})


def install_error_handlers(app: FastAPI) -> None:
    """Answer FlowTimeErrors, validation and routing errors with the error body; anything else 500."""

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
        message = f"{where}: {first['message']}" if where else str(first["message"])
        return error_response(InvalidRequestError(message, errors=errors))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: NotFoundError.code, 405: "method_not_allowed", 413: TooLargeError.code}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal server error"}, status_code=500)

    app.add_exception_handler(FlowTimeError, flowtime_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(InternalErrorGuard)  # added first: the innermost middleware
