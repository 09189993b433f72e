"""Reading telemetry bundle folders (SPEC §5): manifest checks, CSV files, hashes, gaps.

`load_bundle` validates `manifest.json` (schemaVersion 2: window, grid, files[{nodeId, metric,
path, hash, points, classId}], warnings, provenance), reads every CSV in any of the three formats,
refuses a file whose SHA-256 differs from its manifest hash, keeps a per-class file (its `classId`,
or the one class its rows name) apart from the total (`BundleSeries.class_id`; binding decides what
a class file feeds: `ingestion.bundle`), sums files of the same key and a file naming several classes
into one series (info `class_summed`), and zero-fills missing bins (`data_gap`, naming bins and times) and data that
ends early (`length_mismatch`). Paths never leave the bundle folder, symlinks included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine_live.errors import BundleError, BundlePathError, NotFoundError
from engine_live.model.bundle_format import METRICS, warning
from engine_live.model.grid import UNIT_MINUTES, Grid, parse_utc
from engine_live.model.series_csv import parse_series_csv, resolve_inside


@dataclass(frozen=True)
class BundleSeries:
    """One (node, metric) series of a bundle, on the bundle's grid."""

    node_id: str
    metric: str
    values: np.ndarray  # float64, length = bundle bins, zero-filled
    present: np.ndarray  # bool per bin: a value was given
    class_id: str = "DEFAULT"  # the class of a per-class file (SPEC §14); DEFAULT for a total


@dataclass(frozen=True)
class Bundle:
    """A read and checked bundle folder: grid, manifest, series and the warnings found."""

    folder: Path
    grid: Grid
    manifest: dict[str, Any]
    series: tuple[BundleSeries, ...]
    warnings: tuple[dict[str, Any], ...]

    @property
    def bins(self) -> int:
        """Bins of the bundle's grid."""
        return self.grid.bins or 0


def resolve_bundle(ref: str, data_dir: Path, *, artifacts: Mapping[str, Path] | None = None) -> Path:
    """The folder of an artifact id (it must lie in `data_dir`) or of a path under `<dataDir>/bundles/`."""
    try:
        if artifacts is not None and ref in artifacts:
            folder = resolve_inside(data_dir, str(artifacts[ref]))
        else:
            folder = resolve_inside(data_dir / "bundles", ref)
    except ValueError:
        raise BundlePathError(f"bundle '{ref}' is not a folder under <dataDir>/bundles/", bundle=ref) from None
    if not (folder / "manifest.json").is_file():
        raise NotFoundError(f"no telemetry bundle at '{ref}'", bundle=ref)
    return folder


def _grid(manifest: dict[str, Any]) -> Grid:
    raw, window = manifest.get("grid"), manifest.get("window") or {}
    if not isinstance(raw, dict):
        raise BundleError("manifest.json: grid is required")
    bins, size, unit = raw.get("bins"), raw.get("binSize"), raw.get("binUnit", "minutes")
    if not isinstance(bins, int) or bins < 1 or not isinstance(size, int) or size < 1 or unit not in UNIT_MINUTES:
        raise BundleError("manifest.json: grid needs bins ≥ 1, binSize ≥ 1 and a binUnit", grid=raw)
    start = raw.get("start", raw.get("startTimeUtc", window.get("startTimeUtc")))
    if start is not None:
        try:
            parse_utc(str(start))
        except ValueError:
            raise BundleError(f"manifest.json: start {start!r} is not a UTC timestamp") from None
    grid = Grid(bins, size, str(unit), str(start) if start is not None else None)
    capacity = grid.capacity()
    if capacity is not None and bins > capacity:
        raise BundleError("manifest.json: the grid runs past the year 9999", grid=raw)
    return grid


def _ranges(bins: list[int], grid: Grid) -> str:
    spans, first = [], bins[0]
    for prev, cur in zip(bins, [*bins[1:], None], strict=True):
        if cur != prev + 1:
            label = f"{first}" if first == prev else f"{first}-{prev}"
            when = grid.bin_start(first)
            spans.append(f"{label} ({when})" if when else label)
            first = cur if cur is not None else first
    return ", ".join(spans[:5]) + (" …" if len(spans) > 5 else "")


def _file_class(rows: tuple[str, ...] | list[str] | set[str], entry_class: Any) -> tuple[str, bool]:
    """(class of a file, summed): its manifest `classId` or the one class its rows name; a file whose
    rows name several classes is summed into DEFAULT."""
    named = {name for name in rows if name not in ("",)}
    if len(named) > 1:
        return "DEFAULT", True
    declared = {name for name in (*named, entry_class if isinstance(entry_class, str) else "") if name}
    declared.discard("DEFAULT")
    if len(declared) > 1:
        return "DEFAULT", True
    return (declared.pop() if declared else "DEFAULT"), False


FileRead = tuple[str, str, str, np.ndarray, np.ndarray, str, bool]  # node, metric, path, values, present, class


def _read_file(folder: Path, entry: dict[str, Any], index: int) -> FileRead:
    node, metric, rel = entry.get("nodeId"), entry.get("metric"), entry.get("path")
    if not isinstance(node, str) or not isinstance(metric, str) or not isinstance(rel, str):
        raise BundleError(f"manifest.json: files[{index}] needs nodeId, metric and path")
    try:
        path = resolve_inside(folder, rel)
        body = path.read_bytes()
    except ValueError:
        raise BundlePathError(f"files[{index}]: path '{rel}' leaves the bundle folder", path=rel) from None
    except OSError:
        raise BundleError(f"files[{index}]: cannot read '{rel}'", path=rel) from None
    expected = entry.get("hash")
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if expected is not None and str(expected) != actual:
        raise BundleError(
            f"files[{index}]: '{rel}' does not match its manifest hash",
            code="hash_mismatch",
            path=rel,
            expected=expected,
            actual=actual,
        )
    try:
        csv = parse_series_csv(body.decode("utf-8"), rel)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"files[{index}]: {exc}", path=rel) from None
    class_id, summed = _file_class(csv.classes, entry.get("classId"))
    return node, metric, rel, csv.values, csv.present, class_id, summed


def _read_manifest(folder: Path) -> dict[str, Any]:
    """manifest.json of a bundle folder (schemaVersion 1 or 2)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"no manifest.json in bundle '{folder.name}'") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"manifest.json: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") not in (1, 2):
        raise BundleError("manifest.json: schemaVersion must be 2")
    return manifest


def _sum_files(
    folder: Path, files: list[Any], bins: int, warnings: list[dict[str, Any]]
) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """(node, metric, classId) → (values, present) over the grid's bins, the files of one key summed."""
    sums: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    for index, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise BundleError(f"manifest.json: files[{index}] must be an object")
        node, metric, rel, values, present, class_id, summed = _read_file(folder, entry, index)
        if metric not in METRICS:
            warnings.append(
                warning(
                    "unknown_metric",
                    f"{rel}: metric '{metric}' is not a telemetry field; skipped",
                    node=node,
                    severity="info",
                    metric=metric,
                )
            )
            continue
        if len(values) > bins:
            warnings.append(
                warning(
                    "length_mismatch",
                    f"{node}.{metric}: {len(values)} bins for a {bins}-bin grid; truncated",
                    node=node,
                    metric=metric,
                    value=float(len(values)),
                )
            )
        grid_values, grid_present = np.zeros(bins), np.zeros(bins, dtype=bool)
        given = min(bins, len(values))
        grid_values[:given], grid_present[:given] = values[:given], present[:given]
        key = (node, metric, class_id)
        if key in sums or summed:
            warnings.append(
                warning(
                    "class_summed",
                    f"{node}.{metric}: classes summed into DEFAULT",
                    node=node,
                    severity="info",
                    metric=metric,
                )
            )
        if key in sums:
            grid_values, grid_present = sums[key][0] + grid_values, sums[key][1] | grid_present
        sums[key] = (grid_values, grid_present)
    return sums


def _gap_warnings(node: str, metric: str, present: np.ndarray, grid: Grid) -> list[dict[str, Any]]:
    """`data_gap` for missing bins before the last given one, `length_mismatch` for bins after it."""
    bins = grid.bins or 0
    warnings: list[dict[str, Any]] = []
    given = np.flatnonzero(present)
    last = int(given[-1]) + 1 if len(given) else 0
    gaps = [int(gap) for gap in np.flatnonzero(~present[:last])]
    if gaps:
        warnings.append(
            warning(
                "data_gap",
                f"{node}.{metric}: {len(gaps)} missing bins zero-filled: {_ranges(gaps, grid)}",
                node=node,
                bins=gaps,
                metric=metric,
                times=[grid.bin_start(gap) for gap in gaps[:5]],
            )
        )
    if last < bins:
        warnings.append(
            warning(
                "length_mismatch",
                f"{node}.{metric}: data ends at bin {last}; bins {last}-{bins - 1} zero-filled",
                node=node,
                bins=list(range(last, bins)),
                metric=metric,
                value=float(last),
            )
        )
    return warnings


def load_bundle(folder: Path) -> Bundle:
    """Read and check a bundle folder (no binding to a model yet). Raises BundleError / NotFoundError."""
    manifest = _read_manifest(folder)
    grid = _grid(manifest)
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BundleError("manifest.json: files must be a list")
    warnings: list[dict[str, Any]] = []
    sums = _sum_files(folder, files, grid.bins or 0, warnings)
    series = []
    any_present: dict[tuple[str, str], np.ndarray] = {}
    for (node, metric, class_id), (values, present) in sums.items():
        seen = any_present.get((node, metric))
        any_present[(node, metric)] = present if seen is None else seen | present
        series.append(BundleSeries(node, metric, values, present, class_id))
    for (node, metric), present in any_present.items():  # a total or any class given: not a gap
        warnings.extend(_gap_warnings(node, metric, present, grid))
    return Bundle(folder, grid, manifest, tuple(series), tuple(warnings))


__all__ = [
    "METRICS",
    "Bundle",
    "BundleSeries",
    "load_bundle",
    "resolve_bundle",
    "warning",
]
