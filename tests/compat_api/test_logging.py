"""Structured JSON-lines logs with run_id, and bearer tokens masked everywhere."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from compat_api.logging_setup import configure_logging, mask_secrets, parse_level

SECRET = "s3cr3t-Tok.en_42"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    configure_logging("debug", out)
    yield out
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line_with_the_fields(stream: io.StringIO) -> None:
    log = logging.getLogger("flowtime.test")
    log.info("bin %d closed", 12, extra={"run_id": "r1"})
    log.warning("no run here")
    first, second = lines(stream)
    assert first["msg"] == "bin 12 closed"
    assert first["run_id"] == "r1"
    assert first["level"] == "info"
    assert first["logger"] == "flowtime.test"
    assert str(first["ts"]).endswith("Z")
    assert second["level"] == "warning"
    assert "run_id" not in second


@pytest.mark.parametrize(
    "message",
    [
        f"Authorization: Bearer {SECRET}",
        f"header authorization=bearer {SECRET}, next",
        f'ws message {{"type": "auth", "token": "{SECRET}"}}',
        f"GET /v1/runs/r1/stream?token={SECRET}&since=e:1",
    ],
)
def test_tokens_never_appear(stream: io.StringIO, message: str) -> None:
    logging.getLogger("flowtime.test").info(message)
    logging.getLogger("flowtime.test").info("args %s", message)
    out = stream.getvalue()
    assert SECRET not in out
    assert "***" in out


def test_tokens_masked_in_extras_and_tracebacks(stream: io.StringIO) -> None:
    log = logging.getLogger("flowtime.test")
    try:
        raise RuntimeError(f"upstream said Bearer {SECRET}")
    except RuntimeError:
        log.exception("failed", extra={"run_id": "r1", "header": f"Bearer {SECRET}"})
    (record,) = lines(stream)
    assert SECRET not in stream.getvalue()
    assert "RuntimeError" in str(record["exc"])
    assert record["header"] == "Bearer ***"


def test_uvicorn_loggers_use_the_same_handler(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /v1/runs?token=%s HTTP/1.1" 200', SECRET)
    (record,) = lines(stream)
    assert record["logger"] == "uvicorn.access"
    assert SECRET not in stream.getvalue()


def test_level_is_configurable(stream: io.StringIO) -> None:
    configure_logging("warning", stream)
    logging.getLogger("flowtime.test").info("hidden")
    logging.getLogger("flowtime.test").error("shown")
    assert [r["msg"] for r in lines(stream)] == ["shown"]
    assert len([h for h in logging.getLogger().handlers if h.get_name() == "flowtime-json"]) == 1


def test_parse_level() -> None:
    assert parse_level("INFO") == logging.INFO
    assert parse_level(logging.DEBUG) == logging.DEBUG
    with pytest.raises(ValueError, match="log level"):
        parse_level("loud")


def test_mask_secrets_leaves_other_text_alone() -> None:
    assert mask_secrets("closed bin 12 for run r1") == "closed bin 12 for run r1"


def test_configure_resets_what_an_earlier_uvicorn_set() -> None:
    """An in-process uvicorn (the WebSocket tests) sets its loggers' level: a later configure must
    undo it, or uvicorn's records vanish depending on test order."""
    access = logging.getLogger("uvicorn.access")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access.setLevel(logging.WARNING)
    access.disabled = True
    try:
        out = io.StringIO()
        configure_logging("debug", out)
        access.info("GET /healthz 200")
        assert [r["logger"] for r in lines(out)] == ["uvicorn.access"]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_access_token_query_parameters_are_masked(stream: io.StringIO) -> None:
    """`?access_token=` (how browsers authenticate the WebSocket) must not reach the access log."""
    request_line = '127.0.0.1 - "GET /v1/runs/r1/stream?access_token=%s HTTP/1.1" 101'
    logging.getLogger("uvicorn.access").info(request_line, SECRET)
    assert SECRET not in stream.getvalue()
    assert mask_secrets(f"/x?a=1&access_token={SECRET}&b=2").endswith("&b=2")


def test_uvicorns_ansi_color_message_is_left_out(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
    )
    (record,) = lines(stream)
    assert record["msg"] == "Started server process [42]"
    assert "color_message" not in record and "\x1b" not in stream.getvalue()
