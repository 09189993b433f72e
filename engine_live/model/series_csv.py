"""Reading series CSV files: `bin_index,value`, `bin_index,classId,value`, or one bare value a line.

Rows with a classId are summed into one series per bin (DEFAULT). Missing bins are reported so the
caller can zero-fill them with a `data_gap` warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CsvSeries:
    values: np.ndarray  # float64, length = highest bin + 1 (bare lists: number of lines)
    present: np.ndarray  # bool per bin: a row was given
    classes: tuple[str, ...]


def _value(text: str, where: str) -> float:
    t = text.strip()
    if t in ("NaN", "nan"):
        return float("nan")
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None


def parse_series_csv(text: str, name: str = "csv") -> CsvSeries:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return CsvSeries(np.zeros(0), np.zeros(0, dtype=bool), ())
    header = [h.strip() for h in lines[0].split(",")]
    if header[0] != "bin_index":
        vals = np.array([_value(ln, f"{name} line {i + 1}") for i, ln in enumerate(lines)], dtype=np.float64)
        return CsvSeries(vals, np.ones(len(vals), dtype=bool), ())
    if header not in (["bin_index", "value"], ["bin_index", "classId", "value"]):
        raise ValueError(f"{name}: header must be bin_index,value or bin_index,classId,value")
    with_class = len(header) == 3
    acc: dict[int, float] = {}
    classes: set[str] = set()
    for i, ln in enumerate(lines[1:], start=2):
        parts = ln.split(",")
        if len(parts) != len(header):
            raise ValueError(f"{name} line {i}: expected {len(header)} columns")
        try:
            b = int(parts[0])
        except ValueError:
            raise ValueError(f"{name} line {i}: bin_index is not an integer: {parts[0]!r}") from None
        if b < 0:
            raise ValueError(f"{name} line {i}: negative bin_index {b}")
        if with_class:
            classes.add(parts[1].strip())
        acc[b] = acc.get(b, 0.0) + _value(parts[-1], f"{name} line {i}")
    n = max(acc) + 1 if acc else 0
    values = np.zeros(n, dtype=np.float64)
    present = np.zeros(n, dtype=bool)
    for b in sorted(acc):
        values[b] = acc[b]
        present[b] = True
    return CsvSeries(values, present, tuple(sorted(classes)))


def read_series_csv(path: Path) -> CsvSeries:
    return parse_series_csv(path.read_text(encoding="utf-8"), path.name)


def resolve_inside(base: Path, rel: str) -> Path:
    """Resolve `rel` under `base` (symlinks resolved); ValueError when it escapes `base`."""
    root = base.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {rel!r} leaves the model folder")
    return target
