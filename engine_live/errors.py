"""The error tree of FlowTime Live, and the one table of HTTP statuses and WebSocket close codes.

The tree (indentation is inheritance) is drawn in `docs/errors.md` beside every code's status and close code.

Every error carries a machine `code` (the class default, or one given when raised), a human
`message` and optional `details`; `to_body()` gives the wire form `{"error": code, "message": ...,
**details}`. `ERROR_TABLE` at the end of this module is the only place that maps an error class to
its HTTP status (`http_status`) and WebSocket close code (`ws_close_code`, None: the stream never
closes for it); `docs/errors.md` is its readable copy.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final


class FlowTimeError(Exception):
    """Base of every error this project raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int]  # from ERROR_TABLE
    ws_close_code: ClassVar[int | None]  # from ERROR_TABLE

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: `{"error": code, "message": message, **details}`."""
        return {"error": self.code, "message": self.message, **self.details}


# -- models ---------------------------------------------------------------------------------------
class ModelError(FlowTimeError):
    """A model that cannot be parsed, validated or compiled. `errors` lists every problem found."""

    code = "invalid_model"

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
    """A dependency cycle outside the `shift`-broken ones the compiler allows."""

    code = "cycle"


# -- ingestion ------------------------------------------------------------------------------------
class IngestError(FlowTimeError):
    """A frame or ingest request that cannot be accepted."""

    code = "invalid_frame"


class MalformedBodyError(IngestError):
    """An ingest body that is not JSON / NDJSON at all."""

    code = "malformed_body"


class BackpressureError(IngestError):
    """The ingest queue is full; HTTP answers carry `Retry-After`."""

    code = "backpressure"


class RunClosedError(IngestError):
    """Frames or adjustments for a run that is closing or closed."""

    code = "run_closed"


class OutsideRetentionError(IngestError):
    """A bin older than the run's retained window."""

    code = "bin_outside_retention"


# -- requests, bundles, captures, templates -------------------------------------------------------
class InvalidRequestError(FlowTimeError):
    """A well-formed request asking for something impossible (bad bin, misaligned ts, bad mode)."""

    code = "invalid_request"


class CompareMismatchError(InvalidRequestError):
    """Two runs that cannot be compared (different binMinutes or start)."""

    code = "grid_mismatch"


class BundleError(FlowTimeError):
    """A bundle that cannot be read: bad manifest, missing file, wrong hash."""

    code = "invalid_bundle"


class BundlePathError(BundleError):
    """A bundle or output path outside `<dataDir>/bundles/`, or a file path leaving its bundle."""

    code = "invalid_bundle_path"


class GridMismatchError(BundleError):
    """A bundle whose binMinutes differ from the model's."""

    code = "grid_mismatch"


class CaptureError(FlowTimeError):
    """A capture request that cannot be carried out (bad gaps file, bad output)."""

    code = "invalid_capture"


class TemplateParameterError(FlowTimeError):
    """A parameter value a template cannot take (raised as one of the subclasses)."""

    code = "invalid_parameter"


class ParameterTypeMismatchError(TemplateParameterError):
    """A value of the wrong type for its parameter."""

    code = "parameter_type_mismatch"


class MissingParameterError(TemplateParameterError):
    """A required parameter without a value."""

    code = "missing_parameter"


class UnknownParameterError(TemplateParameterError):
    """A value for a parameter the template does not declare."""

    code = "unknown_parameter"


class OutOfRangeError(TemplateParameterError):
    """A value outside its parameter's bounds or choices."""

    code = "out_of_range"


class UnsafeParameterValueError(TemplateParameterError):
    """A string value that would not be safe to substitute into the model."""

    code = "unsafe_parameter_value"


# -- resources ------------------------------------------------------------------------------------
class NotFoundError(FlowTimeError):
    """An unknown run, artifact, series, template or file."""

    code = "not_found"


class ConflictError(FlowTimeError):
    """A request that conflicts with the resource's current state."""

    code = "conflict"


class IllegalTransitionError(ConflictError):
    """A run-status or stream-client transition that its state machine does not allow."""

    code = "illegal_transition"


class TooLargeError(FlowTimeError):
    """A body, model, window or WebSocket message over its limit."""

    code = "too_large"


class BodyTooLargeError(TooLargeError):
    """A request body over the limit (raised from `receive()` while the body streams in)."""


# -- stored state ---------------------------------------------------------------------------------
class RecoveryError(FlowTimeError):
    """Acknowledged data that cannot be read back (corrupt snapshot, truncated log)."""

    code = "recovery_failed"


class SegmentError(RecoveryError, ValueError):
    """A segment is missing or damaged, or segments miss bins (a ValueError too, for snapshot loading)."""

    code = "invalid_segment"


class StateMismatchError(FlowTimeError):
    """A snapshot state that does not fit the run it is restored into or the mirror it extends."""

    code = "snapshot_mismatch"


# -- stream ---------------------------------------------------------------------------------------
class StorageUnavailableError(FlowTimeError):
    """A durable write failed (full disk, I/O error, failing fsync): nothing was acknowledged; retry later."""

    code = "storage_unavailable"


class StreamError(FlowTimeError):
    """A client message, `since` cursor or `nodes` filter that breaks the stream protocol."""

    code = "stream_error"


class SlowConsumerError(StreamError):
    """A stream client that still cannot keep up after a resync."""

    code = "too_slow"


class TooManyConnectionsError(StreamError):
    """A stream connection over the total or per-token (per-address with auth off) limit."""

    code = "too_many_connections"


class IdleTimeoutError(StreamError):
    """A stream connection that did not subscribe within the idle timeout."""

    code = "idle_timeout"


class UnauthenticatedError(StreamError):
    """A missing, unknown or expired token (HTTP and WebSocket alike)."""

    code = "unauthenticated"


class AuthTimeoutError(UnauthenticatedError):
    """No `auth` message within the stream's auth timeout."""

    code = "auth_timeout"


class ForbiddenError(StreamError):
    """A valid token without the scope or run pattern the request needs."""

    code = "forbidden"


# -- browser guard (compat_api/browser_guard.py; a foreign Origin is ForbiddenError `forbidden_origin`)
class BadHostError(FlowTimeError):
    """A `Host` header that is not a loopback name nor an allowed host (DNS rebinding)."""

    code = "bad_host"


class UnsupportedMediaTypeError(FlowTimeError):
    """A write whose body is not sent as JSON, NDJSON or YAML."""

    code = "unsupported_media_type"


# -- start-up and command line --------------------------------------------------------------------
class TokenConfigError(FlowTimeError):
    """A token file or `tokens` setting that cannot be read. Never quotes a token."""

    code = "invalid_tokens"


class InsecureBindError(FlowTimeError):
    """The service would listen beyond loopback without authentication."""

    code = "insecure_bind"


class BadInputError(FlowTimeError):
    """CLI: bad arguments or a 4xx answer from the service (exit 2)."""

    code = "bad_input"


class ServerError(FlowTimeError):
    """CLI: the service is unreachable or answered 5xx (exit 3)."""

    code = "server_error"


class OutputClosedError(FlowTimeError):
    """CLI: the reader of stdout went away (`| head`): the command ends quietly (exit 0)."""

    code = "output_closed"


# -- the one table ----------------------------------------------------------------------------------
# class → (HTTP status, WebSocket close code). Every class has its own row. Close codes are
# `engine_live.protocol.CloseCode` members: 1008 policy violation, 1009 message too big, 1011 internal
# error, 1013 try again later, 4008 too slow, 4401 unauthenticated, 4403 forbidden, 4404 unknown run,
# 4408 no auth (or no subscribe) in time.
ERROR_TABLE: Final[dict[type[FlowTimeError], tuple[int, int | None]]] = {
    FlowTimeError: (400, None),
    ModelError: (422, None),
    ExprSyntaxError: (422, None),
    CycleError: (422, None),
    IngestError: (422, None),
    MalformedBodyError: (400, None),
    BackpressureError: (429, None),
    RunClosedError: (409, None),
    OutsideRetentionError: (409, None),
    InvalidRequestError: (422, None),
    CompareMismatchError: (422, None),
    BundleError: (422, None),
    BundlePathError: (400, None),
    GridMismatchError: (422, None),
    CaptureError: (422, None),
    TemplateParameterError: (400, None),
    ParameterTypeMismatchError: (400, None),
    MissingParameterError: (400, None),
    UnknownParameterError: (400, None),
    OutOfRangeError: (400, None),
    UnsafeParameterValueError: (400, None),
    NotFoundError: (404, 4404),
    ConflictError: (409, None),
    IllegalTransitionError: (409, None),
    TooLargeError: (413, 1009),
    BodyTooLargeError: (413, 1009),
    RecoveryError: (500, 1011),
    SegmentError: (500, 1011),
    StateMismatchError: (400, None),
    StorageUnavailableError: (503, None),
    StreamError: (400, 1008),
    SlowConsumerError: (400, 4008),
    UnauthenticatedError: (401, 4401),
    AuthTimeoutError: (401, 4408),
    ForbiddenError: (403, 4403),
    TokenConfigError: (500, None),
    InsecureBindError: (500, None),
    BadInputError: (400, None),
    ServerError: (502, None),
    OutputClosedError: (400, None),
    BadHostError: (421, 1008),
    UnsupportedMediaTypeError: (415, None),
    TooManyConnectionsError: (429, 1013),
    IdleTimeoutError: (408, 4408),
}

for _error_class, (_status, _close_code) in ERROR_TABLE.items():
    _error_class.http_status = _status
    _error_class.ws_close_code = _close_code
