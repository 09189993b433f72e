"""The wire protocol of the stream (SPEC §7), on one page: every message, cursor and close code.

Events: JSON with the envelope `{"v": 1, "type", "runId", "epoch", "seq"}`; seq +1 per log-caused event, else repeated.

    type               body                                                        consumes a seq
    run_update         binIndex binStartUtc binMinutes status watermark lastBin    yes
                       revision deltas[NodeDelta | SeriesDelta]
    warning_update     op (add|clear) warning{...}                                 yes
    status             status reason?                                              when log-caused
    snapshot_written   lastBin path manifestHash                                   no
    progress           watermark lagBins                                           no

Replies to one client carry no envelope: `subscribed` {epoch, seq, recovered}, `snapshot` {epoch, seq, state},
`resync`, `pong`, `error` {error}. Events are plain dicts built below, encoded once with `encode_event` (orjson;
NaN, ±inf → null); pydantic models validate their shapes at the edges. Client messages (`auth`, `subscribe` with
its `nodes`, `format` and `classes`: `engine_live.subscribe_options`, `ping`), cursors (`<epoch>:<seq>`, `{epoch,
seq}`), close codes (`CloseCode`; which error closes how: `engine_live.errors.ERROR_TABLE`; a violation raises
`StreamError`) and `RunStatus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from engine_live.errors import FlowTimeError, IllegalTransitionError, StreamError
from engine_live.subscribe_options import parse_classes, parse_format, parse_nodes

PROTOCOL_VERSION = 1

Event = dict[str, Any]


class EventType(StrEnum):
    """The `type` of every server → client message."""

    RUN_UPDATE = "run_update"
    WARNING_UPDATE = "warning_update"
    STATUS = "status"
    SNAPSHOT_WRITTEN = "snapshot_written"
    PROGRESS = "progress"
    SUBSCRIBED = "subscribed"
    SNAPSHOT = "snapshot"
    RESYNC = "resync"
    PONG = "pong"
    ERROR = "error"


# The event types whose seq moves a client's cursor (a `status` may repeat the current seq).
SEQD_TYPES: frozenset[str] = frozenset({EventType.RUN_UPDATE, EventType.WARNING_UPDATE, EventType.STATUS})


class CloseCode(IntEnum):
    """WebSocket close codes (SPEC §7, §10); errors map to them in `engine_live.errors.ERROR_TABLE`."""

    NORMAL = 1000  # run completed or deleted; the client left
    GOING_AWAY = 1001  # server shutting down
    ABNORMAL = 1006  # the connection ended without a close frame (seen by clients, never sent)
    POLICY_VIOLATION = 1008  # malformed message, `since` or `nodes` (StreamError)
    MESSAGE_TOO_BIG = 1009  # TooLargeError
    INTERNAL_ERROR = 1011  # RecoveryError
    TRY_AGAIN_LATER = 1013  # TooManyConnectionsError (and the recovery gate)
    TOO_SLOW = 4008  # SlowConsumerError
    UNAUTHENTICATED = 4401  # UnauthenticatedError
    FORBIDDEN = 4403  # ForbiddenError
    UNKNOWN_RUN = 4404  # NotFoundError
    AUTH_TIMEOUT = 4408  # AuthTimeoutError, IdleTimeoutError (no subscribe in time)


def close_code_for(error: FlowTimeError | type[FlowTimeError]) -> CloseCode:
    """The close code `ERROR_TABLE` gives an error (INTERNAL_ERROR for one it gives none)."""
    return CloseCode.INTERNAL_ERROR if error.ws_close_code is None else CloseCode(error.ws_close_code)


class RunStatus(StrEnum):
    """created → recovering → live → closing → completed | failed (failed from any open state)."""

    CREATED = "created"
    RECOVERING = "recovering"
    LIVE = "live"
    CLOSING = "closing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """Accepts frames."""
        return self in (RunStatus.CREATED, RunStatus.RECOVERING, RunStatus.LIVE)

    @property
    def is_terminal(self) -> bool:
        """Completed or failed: no transition leaves it."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED)

    def can_become(self, new: RunStatus) -> bool:
        """Whether `new` is a legal next status."""
        return new in _TRANSITIONS[self]

    def to(self, new: RunStatus) -> RunStatus:
        """The new status, or IllegalTransitionError."""
        if not self.can_become(new):
            raise IllegalTransitionError(
                f"run status cannot go from {self.value} to {new.value}", current=self.value, requested=new.value
            )
        return new


_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.CREATED: frozenset({RunStatus.RECOVERING, RunStatus.LIVE, RunStatus.CLOSING, RunStatus.FAILED}),
    RunStatus.RECOVERING: frozenset({RunStatus.LIVE, RunStatus.CLOSING, RunStatus.FAILED}),
    RunStatus.LIVE: frozenset({RunStatus.RECOVERING, RunStatus.CLOSING, RunStatus.FAILED}),
    RunStatus.CLOSING: frozenset({RunStatus.RECOVERING, RunStatus.COMPLETED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
}


# -- hot path: plain dicts -----------------------------------------------------------------------
def envelope(type_: EventType, run_id: str, epoch: str | None, seq: int) -> Event:
    """`{"v", "type", "runId", "epoch", "seq"}`: the start of every server event."""
    return {"v": PROTOCOL_VERSION, "type": type_.value, "runId": run_id, "epoch": epoch, "seq": seq}


def status_event(run_id: str, epoch: str, seq: int, status: RunStatus, reason: str | None = None) -> Event:
    """A `status` event (`reason` only when given)."""
    ev = envelope(EventType.STATUS, run_id, epoch, seq)
    ev["status"] = status.value
    if reason is not None:
        ev["reason"] = reason
    return ev


def warning_event(run_id: str, epoch: str, seq: int, op: Literal["add", "clear"], warning: dict[str, Any]) -> Event:
    """A `warning_update` event."""
    return envelope(EventType.WARNING_UPDATE, run_id, epoch, seq) | {"op": op, "warning": warning}


def progress_event(run_id: str, epoch: str, seq: int, watermark: int, last_bin: int) -> Event:
    """A `progress` event of a run at `last_bin` with `watermark` (lagBins = watermark − lastBin ≥ 0)."""
    return heartbeat_event(run_id, epoch, seq, watermark, max(0, watermark - last_bin))


def heartbeat_event(run_id: str, epoch: str | None, seq: int, watermark: int | None, lag_bins: int) -> Event:
    """A `progress` event as a stream heartbeat: `seq` is the last one that client was sent."""
    return envelope(EventType.PROGRESS, run_id, epoch, seq) | {"watermark": watermark, "lagBins": lag_bins}


def snapshot_written_event(run_id: str, epoch: str, seq: int, last_bin: int, path: str, manifest_hash: str) -> Event:
    """A `snapshot_written` event (repeats the current seq)."""
    ev = envelope(EventType.SNAPSHOT_WRITTEN, run_id, epoch, seq)
    ev.update(lastBin=last_bin, path=path, manifestHash=manifest_hash)
    return ev


def subscribed_message(epoch: str | None, seq: int, recovered: bool) -> Event:
    """The reply to `subscribe`: where the client starts and whether a replay follows."""
    return {"type": EventType.SUBSCRIBED.value, "epoch": epoch, "seq": seq, "recovered": recovered}


def snapshot_message(epoch: str, seq: int, state: dict[str, Any]) -> Event:
    """The live state the client continues from (the GET .../state/live body)."""
    return {"type": EventType.SNAPSHOT.value, "epoch": epoch, "seq": seq, "state": state}


def resync_message() -> Event:
    """Sent to a client that fell behind, right before its snapshot."""
    return {"type": EventType.RESYNC.value}


def pong_message() -> Event:
    """The reply to `ping`."""
    return {"type": EventType.PONG.value}


def error_message(error: str) -> Event:
    """A client message the server does not act on: `subscribe_expected`, `already_subscribed`, ..."""
    return {"type": EventType.ERROR.value, "error": error}


def encode_event(event: Event) -> bytes:
    """One JSON encoding per event or message (orjson: NaN/±inf → null, numpy scalars and arrays allowed)."""
    return orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)


def kafka_envelope(run_id: str, epoch: str, seq: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Key and headers of an event's Kafka record (SPEC §7): key runId, headers `epoch` and `seq` as text."""
    return run_id.encode(), [("epoch", epoch.encode()), ("seq", str(seq).encode())]


def decode_event(data: bytes | str) -> Event:
    """An encoded event back as a dict (clients and tests)."""
    out = orjson.loads(data)
    if not isinstance(out, dict):
        raise ValueError("an event is a JSON object")
    return out


# -- edge models: the server events' shapes, validated (replies: the builders above) ----------------
class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Envelope(_Wire):
    """The fields every server event starts with."""

    v: Literal[1] = 1
    type: str
    runId: str
    epoch: str
    seq: int = Field(ge=0)


class NodeDelta(_Wire):
    """One node's values in a `run_update`: `metrics{field: value}`, `derived{...}`, and on a
    class-bearing node `byClass{classId: {field: value}}` (SPEC §14)."""

    nodeId: str
    kind: str
    metrics: dict[str, float | None]
    derived: dict[str, Any] = Field(default_factory=dict)
    byClass: dict[str, dict[str, float | None]] | None = None


class SeriesDelta(_Wire):
    """The one delta of a model without topology: `{"series": {id: value}}`."""

    series: dict[str, float | None]


class RunUpdate(Envelope):
    """One evaluated (or re-evaluated) bin."""

    type: Literal["run_update"] = "run_update"
    binIndex: int
    binStartUtc: str | None
    binMinutes: int
    status: RunStatus
    watermark: int
    lastBin: int
    revision: int
    deltas: list[NodeDelta | SeriesDelta]


class WarningUpdate(Envelope):
    """A warning raised (`add`) or cleared."""

    type: Literal["warning_update"] = "warning_update"
    op: Literal["add", "clear"]
    warning: dict[str, Any]


class Status(Envelope):
    """A run status change."""

    type: Literal["status"] = "status"
    status: RunStatus
    reason: str | None = None


class SnapshotWritten(Envelope):
    """A checkpoint committed (repeats the current seq)."""

    type: Literal["snapshot_written"] = "snapshot_written"
    lastBin: int
    path: str
    manifestHash: str


class Progress(Envelope):
    """A heartbeat (repeats the last seq)."""

    type: Literal["progress"] = "progress"
    watermark: int
    lagBins: int


ServerEvent = RunUpdate | WarningUpdate | Status | SnapshotWritten | Progress
_SERVER_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def validate_event(event: Event) -> ServerEvent:
    """Check a built event against its model (tests and clients; not the hot path)."""
    return _SERVER_EVENT.validate_python(event)


# -- client → server -------------------------------------------------------------------------------
class ClientMessageType(StrEnum):
    """The `type` of every client → server message."""

    AUTH = "auth"
    SUBSCRIBE = "subscribe"
    PING = "ping"


class Cursor(NamedTuple):
    """The last event a client has seen; a replay starts at `seq + 1`."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class AuthMessage:
    """`{"type": "auth", "token"}`: first, when auth is on and no bearer header was sent."""

    token: str


@dataclass(frozen=True, slots=True)
class SubscribeMessage:
    """`{"type": "subscribe", "since": {epoch, seq} | null, "nodes": [...] | null, "format"?, "classes"?}`."""

    since: Cursor | None = None
    nodes: list[str] | None = None
    format: str = "full"
    classes: list[str] | None = None  # only these classes in every `byClass` (None: all)


@dataclass(frozen=True, slots=True)
class PingMessage:
    """`{"type": "ping"}`, answered with `pong`."""


ClientMessage = AuthMessage | SubscribeMessage | PingMessage
_CLIENT_TYPES = frozenset(ClientMessageType)


def decode_client_message(data: bytes | str) -> dict[str, Any]:
    """A client message as a JSON object, or StreamError (`bad_message`)."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise StreamError("messages must be JSON objects", code="bad_message")
    return body


def client_message_type(body: Mapping[str, Any]) -> ClientMessageType | None:
    """A decoded message's `type` when the protocol defines it (its other fields unchecked), else None."""
    kind = body.get("type")
    return ClientMessageType(kind) if isinstance(kind, str) and kind in _CLIENT_TYPES else None


def parse_client_message(data: bytes | str | Mapping[str, Any]) -> ClientMessage:
    """A client message (raw, or decoded by `decode_client_message`), or StreamError.

    Codes: `bad_message` (not a JSON object, an `auth` without a token string, a malformed `since`
    or option), `unknown_message` (another `type`). Keys a message does not define are ignored."""
    body = data if isinstance(data, Mapping) else decode_client_message(data)
    kind = client_message_type(body)
    if kind is ClientMessageType.AUTH:
        token = body.get("token")
        if not isinstance(token, str):
            raise StreamError("auth needs a token", code="bad_message")
        return AuthMessage(token)
    if kind is ClientMessageType.SUBSCRIBE:
        return parse_subscribe(body)
    if kind is ClientMessageType.PING:
        return PingMessage()
    raise StreamError(f"unknown message type {body.get('type')!r}", code="unknown_message")


def parse_subscribe(body: Mapping[str, Any]) -> SubscribeMessage:
    """A decoded `subscribe` message; StreamError when its `since`, `nodes`, `format` or `classes` is malformed."""
    since, nodes = cursor_from_wire(body.get("since")), parse_nodes(body.get("nodes"))
    return SubscribeMessage(since, nodes, parse_format(body.get("format", "full")), parse_classes(body.get("classes")))


def subscribe_message(
    since: Cursor | None, nodes: list[str] | None, fmt: str = "full", classes: list[str] | None = None
) -> Event:
    """The `subscribe` message a client sends (`format` and `classes` only when not the default)."""
    body = {"type": ClientMessageType.SUBSCRIBE.value, "since": since._asdict() if since else None, "nodes": nodes}
    return body | ({} if fmt == "full" else {"format": fmt}) | ({} if classes is None else {"classes": classes})


def parse_cursor(text: str) -> Cursor:
    """`<epoch>:<seq>` (the epoch may itself contain ':'); StreamError (`bad_cursor`) when malformed."""
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or not (seq.isascii() and seq.isdigit()):
        raise StreamError("since must be <epoch>:<seq>", code="bad_cursor")
    return Cursor(epoch, int(seq))


def cursor_from_wire(value: Any) -> Cursor | None:
    """The `since` of a subscribe message: `{epoch, seq}` or null; StreamError (`bad_cursor`) otherwise.

    The epoch is taken as text; a negative seq or an unknown epoch is left to the hub (a snapshot)."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("seq"), int) and value.get("epoch") is not None:
        return Cursor(str(value["epoch"]), int(value["seq"]))
    raise StreamError("since must be {epoch, seq} or null", code="bad_cursor")
