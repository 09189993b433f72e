"""The error tree of FlowTime Live, on one screen.

    FlowTimeError                     code               HTTP  WS close
    ├── ModelError                    invalid_model      422   -
    │   ├── ExprSyntaxError           expr_syntax        422   -
    │   └── CycleError                cycle              422   -
    ├── IngestError                   invalid_frame      422   -
    │   ├── BackpressureError         backpressure       429   -
    │   ├── RunClosedError            run_closed         409   -
    │   └── OutsideRetentionError     bin_outside_retention 409 -
    ├── NotFoundError                 not_found          404   4404
    ├── ConflictError                 conflict           409   -
    ├── TooLargeError                 too_large          413   1009
    ├── RecoveryError                 recovery_failed    500   1011
    └── StreamError                   stream_error       400   -
        ├── SlowConsumerError         too_slow           -     4008
        ├── UnauthenticatedError      unauthenticated    401   4401
        └── ForbiddenError            forbidden          403   4403

Every error carries a machine `code`, a human `message` and optional `details`; `to_body()` gives
the wire form `{"error": code, "message": ..., **details}`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlowTimeError(Exception):
    """Base of every error this project raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    ws_close_code: ClassVar[int | None] = None

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class ModelError(FlowTimeError):
    """A model that cannot be parsed, validated or compiled. `errors` lists every problem found."""

    code = "invalid_model"
    http_status = 422

    def __init__(self, message: str, *, errors: list[str] | None = None, **details: Any) -> None:
        self.errors = errors if errors is not None else [message]
        super().__init__(message, errors=self.errors, **details)


class ExprSyntaxError(ModelError):
    """An expression that does not parse; `position` is the 0-based character offset."""

    code = "expr_syntax"

    def __init__(self, message: str, position: int) -> None:
        self.position = position
        super().__init__(f"{message} at position {position}", position=position)


class CycleError(ModelError):
    code = "cycle"


class IngestError(FlowTimeError):
    """A frame or ingest request that cannot be accepted."""

    code = "invalid_frame"
    http_status = 422


class BackpressureError(IngestError):
    code = "backpressure"
    http_status = 429


class RunClosedError(IngestError):
    code = "run_closed"
    http_status = 409


class OutsideRetentionError(IngestError):
    code = "bin_outside_retention"
    http_status = 409


class NotFoundError(FlowTimeError):
    code = "not_found"
    http_status = 404
    ws_close_code = 4404


class ConflictError(FlowTimeError):
    code = "conflict"
    http_status = 409


class TooLargeError(FlowTimeError):
    code = "too_large"
    http_status = 413
    ws_close_code = 1009


class RecoveryError(FlowTimeError):
    """Acknowledged data that cannot be read back (corrupt snapshot, truncated log)."""

    code = "recovery_failed"
    http_status = 500
    ws_close_code = 1011


class StreamError(FlowTimeError):
    code = "stream_error"
    http_status = 400


class SlowConsumerError(StreamError):
    code = "too_slow"
    ws_close_code = 4008


class UnauthenticatedError(StreamError):
    code = "unauthenticated"
    http_status = 401
    ws_close_code = 4401


class ForbiddenError(StreamError):
    code = "forbidden"
    http_status = 403
    ws_close_code = 4403


__all__ = [
    "BackpressureError",
    "ConflictError",
    "CycleError",
    "ExprSyntaxError",
    "FlowTimeError",
    "ForbiddenError",
    "IngestError",
    "ModelError",
    "NotFoundError",
    "OutsideRetentionError",
    "RecoveryError",
    "RunClosedError",
    "SlowConsumerError",
    "StreamError",
    "TooLargeError",
    "UnauthenticatedError",
]
