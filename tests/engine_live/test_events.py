"""Wire types: envelope builders, one-shot encoding, client messages, cursors, close codes."""

from __future__ import annotations

import math

import orjson
import pytest

from engine_live.errors import StreamError
from engine_live.protocol import (
    AuthMessage,
    CloseCode,
    PingMessage,
    RunStatus,
    SubscribeMessage,
    encode_event,
    parse_client_message,
    parse_cursor,
    progress_event,
    snapshot_written_event,
    status_event,
    validate_event,
    warning_event,
)


def test_builders_make_valid_envelopes_and_encode_non_finite_as_null() -> None:
    ev = status_event("r", "e", 3, RunStatus.FAILED, "deleted")
    assert ev == {
        "v": 1,
        "type": "status",
        "runId": "r",
        "epoch": "e",
        "seq": 3,
        "status": "failed",
        "reason": "deleted",
    }
    for e in (
        ev,
        warning_event("r", "e", 4, "add", {"code": "data_gap"}),
        snapshot_written_event("r", "e", 4, 10, "live/snapshots/4", "sha256:ab"),
        progress_event("r", "e", 4, 12, 10),
    ):
        validate_event(e)
    assert progress_event("r", "e", 4, 12, 10)["lagBins"] == 2
    assert orjson.loads(encode_event({"x": math.nan, "y": -math.inf})) == {"x": None, "y": None}


def test_client_messages_and_cursors() -> None:
    sub = parse_client_message(b'{"type": "subscribe", "since": {"epoch": "a:b", "seq": 7}, "nodes": ["S"]}')
    assert isinstance(sub, SubscribeMessage) and sub.since is not None and sub.since.seq == 7
    assert isinstance(parse_client_message('{"type": "subscribe", "since": null}'), SubscribeMessage)
    assert isinstance(parse_client_message('{"type": "auth", "token": "t"}'), AuthMessage)
    assert isinstance(parse_client_message('{"type": "ping"}'), PingMessage)
    for bad in ('{"type": "nope"}', '{"type": "auth"}', "not json", '{"type": "ping", "x": 1}'):
        with pytest.raises(StreamError):
            parse_client_message(bad)
    c = parse_cursor("ep:och:12")
    assert (c.epoch, c.seq) == ("ep:och", 12)
    for bad in ("12", ":3", "e:", "e:-1"):
        with pytest.raises(StreamError):
            parse_cursor(bad)


def test_close_codes_and_terminal_states() -> None:
    assert [int(c) for c in CloseCode] == [1000, 1001, 1009, 4008, 4401, 4403, 4404, 4408]
    assert RunStatus.LIVE.is_open and not RunStatus.CLOSING.is_open and RunStatus.FAILED.is_terminal
    assert all(s.can_become(RunStatus.FAILED) for s in RunStatus if not s.is_terminal)
