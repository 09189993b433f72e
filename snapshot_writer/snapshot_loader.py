"""Loading a live run's snapshots back (SPEC §6 Snapshots): the recovery side of the writer.

`load_current(live_dir)` validates CURRENT's snapshot (state hash from CURRENT, file hashes from
state.json, shapes) and otherwise falls back to the newest other valid snapshot. `load_snapshot`
reads one snapshot folder into a `RunState` and its `SnapshotMeta`; a damaged one is a ValueError
naming the reason. V (values, one row per series) and P (present, one row per telemetry series)
are the two matrices of `retained.parquet`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine_live.derived.hooks_state import join_cells
from engine_live.runtime.snapshot_types import SnapshotMeta, segments_end
from engine_live.state.live_state import RunState
from snapshot_writer.retained_table import decode_cells, decode_retained
from snapshot_writer.segments import check_segments, parse_segments
from snapshot_writer.snapshot_files import (
    CREATE,
    CURRENT,
    HOOKS,
    RETAINED,
    SNAPSHOTS,
    STATE,
    read_current,
    sha256_digest,
    snapshot_names,
)

Matrices = tuple[Any, Any]  # (V, P)

_DECODER = ThreadPoolExecutor(1, thread_name_prefix="snapshot-decode")


def _check_hashes(files: dict[str, bytes], listed: dict[str, str]) -> None:
    for name, data in files.items():
        if sha256_digest(data) != listed[name]:
            raise ValueError(f"{name} does not match its hash in state.json")


def _decode_checked(files: dict[str, bytes], listed: dict[str, str], decode: Callable[[], Matrices]) -> Matrices:
    """Decode retained.parquet while another thread checks every file's hash; a hash error wins."""
    with ThreadPoolExecutor(1) as pool:  # hash (releases the GIL) while the table decodes
        digests = pool.submit(lambda: {name: sha256_digest(data) for name, data in files.items()})
        try:
            matrices: Matrices | Exception = decode()
        except Exception as exc:  # a damaged file: its hash says so first
            matrices = exc
        for name, digest in digests.result().items():
            if digest != listed[name]:
                raise ValueError(f"{name} does not match its hash in state.json")
    if isinstance(matrices, Exception):
        raise matrices
    return matrices


def _join_hooks(body: dict[str, Any], files: dict[str, bytes]) -> None:
    """Put hooks.bin's cells back into state.json's `hooks` (when it refers to the file)."""
    hooks: Any = body.get("hooks")
    ref = hooks.get("cells") if isinstance(hooks, dict) else None
    if isinstance(ref, dict) and ref.get("file") == HOOKS:
        if HOOKS not in files:
            raise ValueError(f"state.json lists no {HOOKS}")
        body["hooks"] = join_cells(hooks, decode_cells(files[HOOKS], int(ref["rows"])))


def _read_snapshot(
    live_dir: Path, name: str, state_hash: str | None, defer_matrix: bool
) -> tuple[RunState, SnapshotMeta]:
    folder = live_dir / SNAPSHOTS / name
    raw = (folder / STATE).read_bytes()
    if state_hash is not None and sha256_digest(raw) != state_hash:
        raise ValueError("state.json does not match the hash CURRENT recorded")
    body = orjson.loads(raw)
    files = {
        file_name: (folder / file_name).read_bytes()
        for file_name in (RETAINED, CREATE, HOOKS)
        if file_name in body["files"]
    }
    for required in (RETAINED, CREATE):
        if required not in files:
            raise ValueError(f"state.json lists no {required}")
    width = int(body["columns"])  # as wide as the run's window: a recovery adopts the arrays

    def decode() -> Matrices:
        return decode_retained(files[RETAINED], int(body["base"]), body["names"], body["telemetryIds"], width=width)

    matrix: Future[Matrices] | None = None
    if defer_matrix:
        _check_hashes(files, body["files"])
        matrix = _DECODER.submit(decode)
        V = np.zeros((len(body["names"]), 0))
        P = np.zeros((len(body["telemetryIds"]), 0), dtype=bool)
    else:
        V, P = _decode_checked(files, body["files"], decode)
    _join_hooks(body, files)
    state = RunState.from_counters(body, V, P)
    segments = parse_segments(body.get("segments"))
    if segments and state.persisted_before != segments_end(segments):
        raise ValueError("persistedBefore does not match the listed segments")
    check_segments(live_dir, segments)
    meta = SnapshotMeta(
        name,
        folder,
        int(body["logOffset"]),
        int(body["eventsOffset"]),
        {int(k): int(v) for k, v in body["kafkaOffsets"].items()},
        orjson.loads(files[CREATE]),
        sha256_digest(raw),
        state.seq,
        state.last_bin,
        state.epoch,
        segments=segments,
        reload=_reloader(files[RETAINED], state),
        matrix=matrix,
    )
    return state, meta


def load_snapshot(
    live_dir: Path, name: str, state_hash: str | None = None, *, defer_matrix: bool = False
) -> tuple[RunState, SnapshotMeta]:
    """Read and validate one snapshot folder; ValueError (with the reason) when it is damaged.

    With `defer_matrix` (recovery) every hash is checked here but retained.parquet is decoded in a
    background thread: the state's V/P are empty until `meta.matrix.result()` gives them, so the
    warning book can be rebuilt meanwhile. A file that matches its hash and still does not decode
    (a writer bug, not damage) then fails the run's recovery instead of falling back."""
    try:
        return _read_snapshot(live_dir, name, state_hash, defer_matrix)
    except ValueError:
        raise
    except Exception as exc:  # any unreadable part makes the snapshot unusable
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def _reloader(data: bytes, state: RunState) -> Callable[[], Matrices]:
    def reload() -> Matrices:
        return decode_retained(data, state.base, state.names, state.telemetry_ids)

    return reload


def load_current(live_dir: Path, *, defer_matrix: bool = False) -> tuple[RunState, SnapshotMeta] | None:
    """CURRENT's snapshot; when it is missing or damaged, the newest other valid one (meta.fell_back)."""
    problems: list[str] = []
    current = read_current(live_dir)
    if current is None:
        if (live_dir / CURRENT).exists():
            problems.append("CURRENT is unreadable")
        elif (live_dir / SNAPSHOTS).is_dir():
            problems.append("CURRENT is missing")
    else:
        try:
            return load_snapshot(live_dir, *current, defer_matrix=defer_matrix)
        except ValueError as exc:
            problems.append(f"snapshot {current[0]} is damaged: {exc}")
    snaps = live_dir / SNAPSHOTS
    names = snapshot_names(snaps) if snaps.is_dir() else []
    for name in names:
        if current is not None and name == current[0]:
            continue
        try:
            state, meta = load_snapshot(live_dir, name, defer_matrix=defer_matrix)
        except ValueError as exc:
            problems.append(f"snapshot {name} is damaged: {exc}")
            continue
        return state, replace(meta, fell_back=True, problems=tuple(problems))
    return None
