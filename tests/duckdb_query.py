"""Run a duckdb query in a child process: duckdb's nanobind bindings print leak reports when the
interpreter that imported them exits, which would bury pytest's closing line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_SCRIPT = "import duckdb, json, sys; print(json.dumps(duckdb.sql(sys.argv[1]).fetchall(), default=str))"


def duckdb_fetchall(sql: str) -> list[list[Any]]:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, sql], capture_output=True, text=True, check=True, timeout=60)
    rows: list[list[Any]] = json.loads(done.stdout)
    return rows
