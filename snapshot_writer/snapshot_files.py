"""The names inside a live run's folder `runs/<id>/live/` and reading its CURRENT pointer.

`snapshots/<name>/{state.json, create.json, retained.parquet[, hooks.bin]}`, `CURRENT`
(`{"snapshot": name, "stateHash"}`) and `events.log`. A snapshot's `<name>` is its seq, or
`<seq>.<logOffset>` when a snapshot of that seq already exists; `order_key` sorts names by both.
Hashes are `sha256:<hex>` of a file's exact bytes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson

from snapshot_writer.atomic_files import Chunk

SNAPSHOTS, CURRENT, EVENTS_LOG = "snapshots", "CURRENT", "events.log"
STATE, CREATE, RETAINED, HOOKS = "state.json", "create.json", "retained.parquet", "hooks.bin"
SNAPSHOT_NAME = re.compile(r"^(\d+)(?:\.(\d+))?$")


def sha256_digest(*chunks: Chunk) -> str:
    """`sha256:<hex>` of the chunks' bytes, in order."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def order_key(name: str) -> tuple[int, int]:
    """(seq, logOffset or -1) of a snapshot name; ValueError for anything else."""
    match = SNAPSHOT_NAME.match(name)
    if match is None:
        raise ValueError(name)
    return int(match.group(1)), int(match.group(2)) if match.group(2) else -1


def snapshot_names(snaps: Path) -> list[str]:
    """The snapshot folder names under `snaps`, newest first (temp folders and other files left out)."""
    return sorted(
        (entry.name for entry in snaps.iterdir() if SNAPSHOT_NAME.match(entry.name)), key=order_key, reverse=True
    )


def read_current(live_dir: Path) -> tuple[str, str] | None:
    """(snapshot name, state hash) from CURRENT, or None when missing or unreadable."""
    try:
        current = orjson.loads((live_dir / CURRENT).read_bytes())
        name, digest = current["snapshot"], current["stateHash"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not SNAPSHOT_NAME.match(name) or not isinstance(digest, str):
        return None
    return name, digest
