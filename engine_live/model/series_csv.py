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
    """A parsed series CSV: values and presence per bin, and the classIds it named."""

    values: np.ndarray  # float64, length = highest bin + 1 (bare lists: number of lines)
    present: np.ndarray  # bool per bin: a row was given
    classes: tuple[str, ...]


def _value(text: str, where: str) -> float:
    stripped = text.strip()
    if stripped in ("NaN", "nan"):
        return float("nan")
    try:
        return float(stripped)
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None


def parse_series_csv(text: str, name: str = "csv") -> CsvSeries:
    """`bin_index,value`, `bin_index,classId,value` (classes summed) or a bare list of values."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return CsvSeries(np.zeros(0), np.zeros(0, dtype=bool), ())
    header = [column.strip() for column in lines[0].split(",")]
    if header[0] != "bin_index":
        vals = np.array([_value(line, f"{name} line {i + 1}") for i, line in enumerate(lines)], dtype=np.float64)
        return CsvSeries(vals, np.ones(len(vals), dtype=bool), ())
    if header not in (["bin_index", "value"], ["bin_index", "classId", "value"]):
        raise ValueError(f"{name}: header must be bin_index,value or bin_index,classId,value")
    with_class = len(header) == 3
    acc: dict[int, float] = {}
    classes: set[str] = set()
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        if len(parts) != len(header):
            raise ValueError(f"{name} line {i}: expected {len(header)} columns")
        try:
            bin_index = int(parts[0])
        except ValueError:
            raise ValueError(f"{name} line {i}: bin_index is not an integer: {parts[0]!r}") from None
        if bin_index < 0:
            raise ValueError(f"{name} line {i}: negative bin_index {bin_index}")
        if with_class:
            classes.add(parts[1].strip())
        acc[bin_index] = acc.get(bin_index, 0.0) + _value(parts[-1], f"{name} line {i}")
    n = max(acc) + 1 if acc else 0
    values = np.zeros(n, dtype=np.float64)
    present = np.zeros(n, dtype=bool)
    for bin_index in sorted(acc):
        values[bin_index] = acc[bin_index]
        present[bin_index] = True
    return CsvSeries(values, present, tuple(sorted(classes)))


def read_series_csv(path: Path) -> CsvSeries:
    """`parse_series_csv` of a UTF-8 regular file (a FIFO or device would block the reader: refused)."""
    if not path.is_file():
        raise ValueError(f"{path.name}: not a regular file")
    return parse_series_csv(path.read_text(encoding="utf-8"), path.name)


def resolve_inside(base: Path, rel: str) -> Path:
    """Resolve `rel` under `base` (symlinks resolved); ValueError when it escapes `base`."""
    root = base.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {rel!r} leaves the model folder")
    return target
