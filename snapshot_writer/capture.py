"""Telemetry capture (SPEC §5): a finished run folder → a telemetry bundle that replays the run.

`capture_run(run_dir, output)` writes one CSV (`bin_index,classId,value`, classId `DEFAULT`) per
topology node × Gold metric the run holds, and `manifest.json` (schemaVersion 2: window, grid,
files[{nodeId, metric, path, hash, points, classId}], warnings, provenance{runId, scenarioHash,
capturedAtUtc}). Nothing depends on the clock or on chance, so the same run gives the same bytes.

Classes (SPEC §14 "bundles keep classId"), as upstream FlowTime's capture writes them: a node metric
whose series carries classes gets, after its DEFAULT file (the total), one file per class
`<nodeId>_<metric>_<classId>.csv` with that classId in every row and in its files[] entry; the class
files of a bin sum to the DEFAULT file. Such a manifest also carries upstream's `supportsClassMetrics:
true`, `classes` and `classCoverage` (`full` when every class of the run is captured); a class-less
bundle is unchanged. A gap entry applies to the node metric's class files too.

Decisions where the spec is silent:
- `capturedAtUtc` is the run's createdUtc (§12.10); provenance also carries modelHash.
- Gap injection (`gaps: [{nodeId, metric?, bins: [..] | {from, to}, fill: zero|nan}]`, `to`
  inclusive, no metric = every captured metric of the node, later entries win per bin): a `zero`
  gap leaves its rows out — a gap is missing data, which every reader zero-fills (§5) and a live
  replay leaves unsent — and is recorded as `data_gap`; a `nan` gap writes `NaN` (`nan_fill`).
- File names are `<nodeId>_<metric>.csv` with characters outside `[A-Za-z0-9_.-]` replaced by `_`
  (plus `_<k>` on a clash). The folder is built under a temporary name and renamed into place; an
  existing non-empty output is replaced only with `overwrite`, or left alone when its manifest is
  already byte-identical (a repeat capture is a no-op), else 409 `bundle_exists`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from engine_live.errors import CaptureError, ConflictError
from engine_live.model.bundle_format import METRICS, warning
from engine_live.model.grid import Grid
from snapshot_writer.atomic_files import fsync_dir, json_bytes, write_file
from snapshot_writer.number_format import CSV_HEADER, iter_csv_bodies
from snapshot_writer.run_view import RunView, read_run_view

BUNDLE_SCHEMA_VERSION = 2
BUNDLE_HEADER = b"bin_index,classId,value\n"
CLASS_ID = "DEFAULT"
FILLS = ("zero", "nan")
_IO_THREADS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Gap:
    """A requested gap: bins of one node (and metric, or all) to blank out with a fill rule."""

    node_id: str
    metric: str | None
    bins: npt.NDArray[np.int64]
    fill: str


def parse_gaps(source: Path | str | Mapping[str, Any] | Sequence[Any] | None, bins: int) -> list[Gap]:
    """Gap entries from a gaps.yaml path, YAML text, `{gaps: [...]}` or a bare list."""
    if source is None:
        return []
    data: Any = source
    try:
        if isinstance(source, Path | str):
            data = yaml.safe_load(source.read_text(encoding="utf-8") if isinstance(source, Path) else source)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CaptureError(f"gaps: {exc}", code="invalid_gaps") from None
    if isinstance(data, Mapping):
        data = data.get("gaps")
    if data is None:
        return []
    if not isinstance(data, list):
        raise CaptureError("gaps must be a list of {nodeId, metric?, bins, fill}", code="invalid_gaps")
    return [_gap(entry, i, bins) for i, entry in enumerate(data)]


def _gap(entry: Any, i: int, n: int) -> Gap:
    def bad(why: str) -> CaptureError:
        return CaptureError(f"gaps[{i}]: {why}", code="invalid_gaps", index=i)

    if not isinstance(entry, Mapping) or not isinstance(entry.get("nodeId"), str):
        raise bad("needs a nodeId")
    metric, fill, raw = entry.get("metric"), entry.get("fill", "zero"), entry.get("bins")
    if metric is not None and metric not in METRICS:
        raise bad(f"metric {metric!r} is not a Gold metric {list(METRICS)}")
    if fill not in FILLS:
        raise bad("fill must be zero or nan")
    if isinstance(raw, Mapping):
        lo, hi = raw.get("from"), raw.get("to")
        if not (isinstance(lo, int) and isinstance(hi, int)) or isinstance(lo, bool) or lo > hi:
            raise bad("bins {from, to} needs integers with from ≤ to")
        picked = np.arange(lo, hi + 1, dtype=np.int64)
    elif isinstance(raw, list) and raw and all(isinstance(b, int) and not isinstance(b, bool) for b in raw):
        picked = np.unique(np.asarray(raw, dtype=np.int64))
    else:
        raise bad("bins must be a non-empty list of integers or {from, to}")
    if picked.min() < 0 or picked.max() >= n:
        raise bad(f"bins must lie in 0..{n - 1}")
    return Gap(entry["nodeId"], metric, picked, str(fill))


@dataclass(frozen=True)
class CaptureResult:
    """What a capture wrote (or would write, for a dry run)."""

    output: Path
    manifest: dict[str, Any]
    manifest_bytes: bytes
    files: tuple[dict[str, Any], ...]  # {path, bytes, hash, points}
    dry_run: bool
    written: bool  # False for a dry run, or when an identical bundle was already there

    @property
    def total_bytes(self) -> int:
        """Bytes of the manifest and every file."""
        return len(self.manifest_bytes) + sum(int(f["bytes"]) for f in self.files)

    def to_body(self) -> dict[str, Any]:
        """The HTTP answer of a capture."""
        return {
            "dryRun": self.dry_run,
            "written": self.written,
            "bytes": self.total_bytes,
            "files": [{"path": f["path"], "bytes": f["bytes"]} for f in self.files],
            "manifest": self.manifest,
        }


@dataclass(frozen=True)
class _File:
    """One bundle file: a bound (node, metric)'s total (classId DEFAULT) or one of its classes."""

    node: str
    metric: str
    series: str  # model series id: the total, or the class row `<id>@<classId>`
    class_id: str
    binding: int  # index of its (node, metric) binding, whose gap state it shares


def _files_of(view: RunView, bindings: Sequence[tuple[str, str, str]]) -> list[_File]:
    """Each binding's DEFAULT file, followed by one file per class of a class-bearing series."""
    out = []
    for k, (node, metric, sid) in enumerate(bindings):
        out.append(_File(node, metric, sid, CLASS_ID, k))
        out += [_File(node, metric, f"{sid}@{c}", c, k) for c in view.classes.get(sid, ())]
    return out


def _file_names(files: Sequence[_File]) -> list[str]:
    names: list[str] = []
    taken: set[str] = set()
    for one in files:
        suffix = "" if one.class_id == CLASS_ID else f"_{one.class_id}"
        stem = _UNSAFE.sub("_", f"{one.node}_{one.metric}{suffix}")
        stem = "_" + stem[1:] if stem.startswith(".") else stem
        name, k = f"{stem}.csv", 1
        while name.lower() in taken:  # case-insensitive file systems too
            name, k = f"{stem}_{k}.csv", k + 1
        taken.add(name.lower())
        names.append(name)
    return names


def _bundle_csv(body: bytes, keep: npt.NDArray[np.bool_] | None, class_id: str = CLASS_ID) -> bytes:
    """`bin_index,value` CSV bytes → `bin_index,classId,value`, leaving out rows where not `keep`."""
    rows = body[len(CSV_HEADER) :]
    if keep is not None and not keep.all():
        ends = np.flatnonzero(np.frombuffer(rows, np.uint8) == 10) + 1
        lengths = np.diff(np.concatenate(([0], ends)))
        rows = np.frombuffer(rows, np.uint8)[np.repeat(keep, lengths)].tobytes()
    return BUNDLE_HEADER + rows.replace(b",", b"," + class_id.encode() + b",")


def _gap_warnings(grid: Grid, node: str, metric: str, state: npt.NDArray[np.int8]) -> list[dict[str, Any]]:
    out = []
    for code, mark, what in (("data_gap", 1, "left out (zero-filled on read)"), ("nan_fill", 2, "NaN")):
        bins = [int(b) for b in np.flatnonzero(state == mark)]
        if bins:
            out.append(
                warning(
                    code,
                    f"{node}.{metric}: {len(bins)} injected gap bins {what}",
                    node=node,
                    bins=bins,
                    metric=metric,
                    times=[grid.bin_start(b) for b in bins[:5]],
                )
            )
    return out


def _gap_states(bindings: Sequence[tuple[str, str, str]], gaps: Sequence[Gap], n: int) -> list[npt.NDArray[np.int8]]:
    """Per binding and bin: 0 kept, 1 zero gap (row left out), 2 NaN fill; later gaps win."""
    states = [np.zeros(n, np.int8) for _ in bindings]
    for i, gap in enumerate(gaps):
        hits = [
            k
            for k, (node, metric, _) in enumerate(bindings)
            if node == gap.node_id and (gap.metric is None or gap.metric == metric)
        ]
        if not hits:
            what = f"{gap.node_id}.{gap.metric}" if gap.metric else gap.node_id
            raise CaptureError(f"gaps[{i}]: the run has no captured series for {what}", code="invalid_gaps")
        for k in hits:
            states[k][gap.bins] = 1 if gap.fill == "zero" else 2
    return states


def _class_keys(view: RunView, files: Sequence[_File]) -> dict[str, Any]:
    """Upstream's class keys of a bundle with class files (none for a class-less bundle)."""
    captured = list(dict.fromkeys(one.class_id for one in files if one.class_id != CLASS_ID))
    if not captured:
        return {}
    coverage = "full" if set(captured) == set(view.class_ids) else "partial"
    return {"supportsClassMetrics": True, "classes": captured, "classCoverage": coverage}


def build_bundle(view: RunView, gaps: Sequence[Gap] = ()) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The manifest and the (file name, bytes) of the bundle of a run, in manifest order."""
    bindings = view.bindings(METRICS)
    n, grid = view.bins, view.grid
    states = _gap_states(bindings, gaps, n)
    files = _files_of(view, bindings)
    arrays = []
    for one in files:
        values, state = view.series[one.series], states[one.binding]
        arrays.append(np.where(state == 2, np.nan, values) if (state == 2).any() else values)
    out: list[tuple[str, bytes]] = []
    entries = []
    for one, name, body in zip(files, _file_names(files), iter_csv_bodies(arrays), strict=True):
        keep = states[one.binding] != 1
        data = _bundle_csv(body.tobytes(), keep, one.class_id)
        out.append((name, data))
        entries.append(
            {
                "nodeId": one.node,
                "metric": one.metric,
                "path": name,
                "classId": one.class_id,
                "points": int(keep.sum()),
                "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
            }
        )
    warnings = [
        w
        for (node, metric, _), state in zip(bindings, states, strict=True)
        for w in _gap_warnings(grid, node, metric, state)
    ]
    wire = {**grid.to_wire(), "binMinutes": grid.bin_minutes}
    manifest = {
        "schemaVersion": BUNDLE_SCHEMA_VERSION,
        "window": {"startTimeUtc": grid.start, "durationMinutes": n * grid.bin_minutes},
        "grid": wire,
        "files": entries,
        "warnings": warnings,
        "provenance": {
            "runId": view.run_json.get("runId", view.run_dir.name),
            "scenarioHash": view.run_json.get("scenarioHash"),
            "modelHash": view.run_json.get("modelHash"),
            "capturedAtUtc": view.run_json.get("createdUtc"),
        },
        **_class_keys(view, files),
    }
    return manifest, out


def capture_run(
    run_dir: Path,
    output: Path,
    *,
    gaps: Path | str | Mapping[str, Any] | Sequence[Any] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    fsync: bool = True,
) -> CaptureResult:
    """Turn the finished run in `run_dir` into a telemetry bundle at `output` (see module doc)."""
    view = read_run_view(run_dir)
    manifest, files = build_bundle(view, parse_gaps(gaps, view.bins))
    mbytes = json_bytes(manifest)
    output = Path(output)
    listed = tuple(
        {"path": name, "bytes": len(data), "hash": entry["hash"], "points": entry["points"]}
        for (name, data), entry in zip(files, manifest["files"], strict=True)
    )
    result = CaptureResult(output, manifest, mbytes, listed, dry_run, written=False)
    exists = output.exists() and (not output.is_dir() or any(output.iterdir()))
    if exists:
        old = output / "manifest.json"
        if old.is_file() and old.read_bytes() == mbytes and not overwrite:
            return result
        if not overwrite or not output.is_dir():
            raise ConflictError(f"'{output.name}' already exists", code="bundle_exists", output=output.name)
    if dry_run:
        return result
    _write_folder(output, files, mbytes, fsync)
    return CaptureResult(output, manifest, mbytes, listed, dry_run, written=True)


def _write_folder(output: Path, files: Sequence[tuple[str, bytes]], manifest: bytes, fsync: bool) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{secrets.token_hex(6)}")
    old = output.with_name(f".{output.name}.old-{secrets.token_hex(6)}")
    tmp.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="capture") as pool:
            for job in [pool.submit(write_file, tmp / name, (data,), fsync=fsync) for name, data in files]:
                job.result()  # file creation and fsync release the GIL: overlap them
        write_file(tmp / "manifest.json", (manifest,), fsync=fsync)
        if fsync:
            fsync_dir(tmp)
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if fsync:
        fsync_dir(output.parent)
    shutil.rmtree(old, ignore_errors=True)
