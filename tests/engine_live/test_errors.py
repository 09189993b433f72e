"""The error tree: one module, one table, and docs/errors.md agreeing with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from engine_live import errors
from engine_live.errors import ERROR_TABLE, FlowTimeError
from engine_live.protocol import CloseCode

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine_live", "ingestion", "stream_hub", "snapshot_writer", "compat_api")
ROW = re.compile(r"^\| `(?P<code>[a-z_]+)` \| (?:&nbsp;)*`(?P<name>\w+)` \| (?P<http>\d+) \| (?P<close>\d+|—) \|")


def error_classes() -> list[type[FlowTimeError]]:
    """Every FlowTimeError class defined in engine_live.errors."""
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, FlowTimeError) and value.__module__ == errors.__name__
    ]


def test_every_error_has_its_own_row_and_a_named_close_code() -> None:
    assert set(ERROR_TABLE) == set(error_classes())
    for cls, (status, close) in ERROR_TABLE.items():
        assert (cls.http_status, cls.ws_close_code) == (status, close)
        assert close is None or close in set(CloseCode), cls


def test_no_exception_class_outside_the_errors_module() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "engine_live" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and (base.id.endswith(("Error", "Exception"))) for base in node.bases
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert offenders == []


def test_docs_table_matches_the_error_table() -> None:
    rows = {}
    for line in (ROOT / "docs" / "errors.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            close = None if match["close"] == "—" else int(match["close"])
            rows[match["name"]] = (match["code"], int(match["http"]), close)
    assert rows == {cls.__name__: (cls.code, *ERROR_TABLE[cls]) for cls in ERROR_TABLE}
