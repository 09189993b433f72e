"""The wire types of the stream protocol (SPEC §7), on one page.

Every server event is one JSON object with the envelope `{"v": 1, "type", "runId", "epoch",
"seq"}`. `seq` rises by exactly 1 per event caused by an ingestion-log record; `progress`,
`snapshot_written` and recovery `status` events repeat the current seq.

    type               body                                                        consumes a seq
    run_update         binIndex binStartUtc binMinutes status watermark lastBin    yes
                       revision deltas[NodeDelta]
    warning_update     op (add|clear) warning{...}                                 yes
    status             status reason?                                              when log-caused
    snapshot_written   lastBin path manifestHash                                   no
    progress           watermark lagBins                                           no
    subscribed         recovered                                                   (reply)
    snapshot           state                                                       (reply)
    resync             -                                                           (reply)

    NodeDelta = {nodeId, kind, metrics{field: value}, derived{...}}; a model without topology
    sends one delta `{"series": {id: value}}` instead.

Pydantic models describe the shapes for the edges (OpenAPI, clients, tests); the hot path builds
plain dicts with the `*_event` builders and encodes them once with `encode_event` (orjson; NaN and
±inf become null). Client messages (`auth`, `subscribe`, `ping`) are parsed with
`parse_client_message`. `RunStatus` is the run lifecycle with checked transitions.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from engine_live.errors import ConflictError, StreamError

PROTOCOL_VERSION = 1

Event = dict[str, Any]


class EventType(StrEnum):
    RUN_UPDATE = "run_update"
    WARNING_UPDATE = "warning_update"
    STATUS = "status"
    SNAPSHOT_WRITTEN = "snapshot_written"
    PROGRESS = "progress"
    SUBSCRIBED = "subscribed"
    SNAPSHOT = "snapshot"
    RESYNC = "resync"


class CloseCode(IntEnum):
    """WebSocket close codes (SPEC §7, §10)."""

    NORMAL = 1000  # run completed or deleted
    GOING_AWAY = 1001  # server shutting down
    MESSAGE_TOO_BIG = 1009
    TOO_SLOW = 4008
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    UNKNOWN_RUN = 4404
    AUTH_TIMEOUT = 4408


class IllegalTransitionError(ConflictError):
    code = "illegal_transition"


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
        return self in (RunStatus.COMPLETED, RunStatus.FAILED)

    def can_become(self, new: RunStatus) -> bool:
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
def envelope(type_: EventType, run_id: str, epoch: str, seq: int) -> Event:
    return {"v": PROTOCOL_VERSION, "type": type_.value, "runId": run_id, "epoch": epoch, "seq": seq}


def status_event(run_id: str, epoch: str, seq: int, status: RunStatus, reason: str | None = None) -> Event:
    ev = envelope(EventType.STATUS, run_id, epoch, seq)
    ev["status"] = status.value
    if reason is not None:
        ev["reason"] = reason
    return ev


def warning_event(run_id: str, epoch: str, seq: int, op: Literal["add", "clear"], warning: dict[str, Any]) -> Event:
    ev = envelope(EventType.WARNING_UPDATE, run_id, epoch, seq)
    ev["op"] = op
    ev["warning"] = warning
    return ev


def progress_event(run_id: str, epoch: str, seq: int, watermark: int, last_bin: int) -> Event:
    ev = envelope(EventType.PROGRESS, run_id, epoch, seq)
    ev["watermark"] = watermark
    ev["lagBins"] = max(0, watermark - last_bin)
    return ev


def snapshot_written_event(run_id: str, epoch: str, seq: int, last_bin: int, path: str, manifest_hash: str) -> Event:
    ev = envelope(EventType.SNAPSHOT_WRITTEN, run_id, epoch, seq)
    ev.update(lastBin=last_bin, path=path, manifestHash=manifest_hash)
    return ev


def subscribed_message(epoch: str, seq: int, recovered: bool) -> Event:
    return {"type": EventType.SUBSCRIBED.value, "epoch": epoch, "seq": seq, "recovered": recovered}


def snapshot_message(epoch: str, seq: int, state: dict[str, Any]) -> Event:
    return {"type": EventType.SNAPSHOT.value, "epoch": epoch, "seq": seq, "state": state}


def resync_message() -> Event:
    return {"type": EventType.RESYNC.value}


def encode_event(event: Event) -> bytes:
    """One JSON encoding per event (orjson: NaN/±inf → null, numpy scalars and arrays allowed)."""
    return orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_event(data: bytes | str) -> Event:
    out = orjson.loads(data)
    if not isinstance(out, dict):
        raise ValueError("an event is a JSON object")
    return out


# -- edge models: the same shapes, validated --------------------------------------------------------
class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Envelope(_Wire):
    v: Literal[1] = 1
    type: str
    runId: str
    epoch: str
    seq: int = Field(ge=0)


class NodeDelta(_Wire):
    nodeId: str
    kind: str
    metrics: dict[str, float | None]
    derived: dict[str, Any] = Field(default_factory=dict)


class SeriesDelta(_Wire):
    series: dict[str, float | None]


class RunUpdate(Envelope):
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
    type: Literal["warning_update"] = "warning_update"
    op: Literal["add", "clear"]
    warning: dict[str, Any]


class Status(Envelope):
    type: Literal["status"] = "status"
    status: RunStatus
    reason: str | None = None


class SnapshotWritten(Envelope):
    type: Literal["snapshot_written"] = "snapshot_written"
    lastBin: int
    path: str
    manifestHash: str


class Progress(Envelope):
    type: Literal["progress"] = "progress"
    watermark: int
    lagBins: int


class Subscribed(_Wire):
    type: Literal["subscribed"] = "subscribed"
    epoch: str
    seq: int
    recovered: bool


class Snapshot(_Wire):
    type: Literal["snapshot"] = "snapshot"
    epoch: str
    seq: int
    state: dict[str, Any]


class Resync(_Wire):
    type: Literal["resync"] = "resync"


ServerEvent = RunUpdate | WarningUpdate | Status | SnapshotWritten | Progress
_SERVER_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def validate_event(event: Event) -> ServerEvent:
    """Check a built event against its model (tests and clients; not the hot path)."""
    return _SERVER_EVENT.validate_python(event)


# -- client → server -------------------------------------------------------------------------------
class Cursor(_Wire):
    epoch: str
    seq: int = Field(ge=0)


class AuthMessage(_Wire):
    type: Literal["auth"]
    token: str


class SubscribeMessage(_Wire):
    type: Literal["subscribe"]
    since: Cursor | None = None
    nodes: list[str] | None = None


class PingMessage(_Wire):
    type: Literal["ping"]


ClientMessage = AuthMessage | SubscribeMessage | PingMessage
_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(data: bytes | str) -> ClientMessage:
    """A client message, or StreamError (code `bad_message`)."""
    try:
        return _CLIENT.validate_json(data)
    except ValidationError as exc:
        raise StreamError(f"bad client message: {exc.errors()[0]['msg']}", code="bad_message") from None


def parse_cursor(text: str) -> Cursor:
    """`<epoch>:<seq>` (the epoch may itself contain ':'); StreamError when malformed."""
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or not seq.isdigit():
        raise StreamError(f"cursor {text!r} must be <epoch>:<seq>", code="bad_cursor")
    return Cursor(epoch=epoch, seq=int(seq))


__all__ = [
    "PROTOCOL_VERSION",
    "AuthMessage",
    "ClientMessage",
    "CloseCode",
    "Cursor",
    "Envelope",
    "Event",
    "EventType",
    "IllegalTransitionError",
    "NodeDelta",
    "PingMessage",
    "Progress",
    "Resync",
    "RunStatus",
    "RunUpdate",
    "SeriesDelta",
    "ServerEvent",
    "Snapshot",
    "SnapshotWritten",
    "Status",
    "SubscribeMessage",
    "Subscribed",
    "WarningUpdate",
    "decode_event",
    "encode_event",
    "envelope",
    "parse_client_message",
    "parse_cursor",
    "progress_event",
    "resync_message",
    "snapshot_message",
    "snapshot_written_event",
    "status_event",
    "subscribed_message",
    "validate_event",
    "warning_event",
]
