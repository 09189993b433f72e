"""Structured logs: one JSON object per line on stderr (SPEC §11), tokens masked (SPEC §10).

    {"ts": "2025-10-07T01:00:00.123Z", "level": "info", "logger": "stream_hub", "msg": "...",
     "run_id": "r1"}

`run_id` (and any other field) comes from `extra={...}`; an exception adds `exc`. The
`TokenMaskingFilter` sits on the handler, so it sees every record that reaches it — from our
loggers and from uvicorn's, which `configure_logging` routes through the same handler.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
MASK = "***"

# `Bearer <token>`, a JSON `"token": "<token>"` (the WebSocket auth message), and `token=<token>`.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"), rf"\g<1>{MASK}"),
    (re.compile(r"(?i)(\"token\"\s*:\s*\")[^\"]*(\")"), rf"\g<1>{MASK}\g<2>"),
    (re.compile(r"(?i)(\b(?:access_)?tokens?=)[^\s&\"',;]+"), rf"\g<1>{MASK}"),
)
# attributes every LogRecord has; anything else on a record came from `extra`
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# extras that are not data: uvicorn's `color_message` repeats `msg` with ANSI colour codes for its own
# console formatter
_DROPPED_EXTRAS = frozenset({"color_message"})


def mask_secrets(text: str) -> str:
    """`text` with every bearer token replaced by `***`."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class TokenMaskingFilter(logging.Filter):
    """Formats the message once and masks tokens in it, in string extras and in exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Format the message once and mask tokens in it and in string extras; never drops a record."""
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, mask_secrets(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, extras (run_id, ...), exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line: ts, level, logger, msg, extras and the masked exception text."""
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in out and key not in _DROPPED_EXTRAS:
                out[key] = value
        if record.exc_info:
            out["exc"] = mask_secrets(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


def parse_level(level: str | int) -> int:
    """A level name (`debug` … `critical`, any case) or number; ValueError otherwise."""
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}") from None


def configure_logging(level: str | int = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record (root and uvicorn) as JSON lines to `stream` (default stderr).

    Idempotent: a second call replaces the handler it installed before. Start uvicorn with
    `log_config=None` so it keeps this setup.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TokenMaskingFilter())
    handler.set_name("flowtime-json")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "flowtime-json"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
        uv.setLevel(logging.NOTSET)  # an in-process uvicorn may have set its own level: inherit root's
        uv.disabled = False
    return handler


__all__ = ["JsonFormatter", "TokenMaskingFilter", "configure_logging", "mask_secrets", "parse_level"]
