"""Wire types: envelope builders, one-shot encoding, client messages, cursors, close codes."""

from __future__ import annotations

import math

import orjson
import pytest

from engine_live.errors import ModelError, SlowConsumerError, StreamError
from engine_live.protocol import (
    AuthMessage,
    CloseCode,
    PingMessage,
    RunStatus,
    SubscribeMessage,
    close_code_for,
    cursor_from_wire,
    encode_event,
    error_message,
    kafka_envelope,
    parse_client_message,
    parse_cursor,
    pong_message,
    progress_event,
    resync_message,
    snapshot_written_event,
    status_event,
    subscribe_message,
    subscribed_message,
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
    assert isinstance(parse_client_message('{"type": "ping", "x": 1}'), PingMessage)  # unknown keys: ignored
    bad_messages = ('{"type": "nope"}', '{"type": "auth"}', "not json", "[1]", '{"type": "subscribe", "nodes": "S"}')
    for bad in (*bad_messages, '{"type": "subscribe", "since": {"seq": 1}}', '{"type": "subscribe", "since": 3}'):
        with pytest.raises(StreamError):
            parse_client_message(bad)
    c = parse_cursor("ep:och:12")
    assert (c.epoch, c.seq) == ("ep:och", 12) and c == ("ep:och", 12)
    for bad in ("12", ":3", "e:", "e:-1", "e:²"):
        with pytest.raises(StreamError):
            parse_cursor(bad)
    # the message form keeps what the hub decides on (a negative seq or odd epoch → a snapshot)
    assert cursor_from_wire({"epoch": 5, "seq": -1}) == ("5", -1) and cursor_from_wire(None) is None


def test_client_side_and_reply_bytes() -> None:
    since = parse_cursor("e1:41")
    assert (
        encode_event(subscribe_message(since, None))
        == b'{"type":"subscribe","since":{"epoch":"e1","seq":41},"nodes":null}'
    )
    assert encode_event(subscribe_message(None, ["A"])) == b'{"type":"subscribe","since":null,"nodes":["A"]}'
    assert encode_event(pong_message()) == b'{"type":"pong"}' and encode_event(resync_message()) == b'{"type":"resync"}'
    assert encode_event(error_message("unknown_message")) == b'{"type":"error","error":"unknown_message"}'
    assert (
        encode_event(subscribed_message("e", 3, True)) == b'{"type":"subscribed","epoch":"e","seq":3,"recovered":true}'
    )
    assert kafka_envelope("r1", "e1", 7) == (b"r1", [("epoch", b"e1"), ("seq", b"7")])


def test_close_codes_and_terminal_states() -> None:
    assert [int(c) for c in CloseCode] == [1000, 1001, 1006, 1008, 1009, 1011, 1013, 4008, 4401, 4403, 4404, 4408]
    assert close_code_for(StreamError("x")) is CloseCode.POLICY_VIOLATION
    assert close_code_for(SlowConsumerError) is CloseCode.TOO_SLOW
    assert close_code_for(ModelError("x")) is CloseCode.INTERNAL_ERROR  # no code of its own
    assert RunStatus.LIVE.is_open and not RunStatus.CLOSING.is_open and RunStatus.FAILED.is_terminal
    assert all(s.can_become(RunStatus.FAILED) for s in RunStatus if not s.is_terminal)
