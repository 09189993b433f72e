"""Classes (SPEC §14): `classes[]` and `traffic.arrivals[]` checked into a frozen `ClassSpec`.

A model with a non-empty `classes` list is class-bearing: every `traffic.arrivals` entry names a
declared class and a series id; the named series (a source) is split among its entries' classes in
proportion to their `ratePerBin` (or `rate`). Without `classes` both keys stay upstream keys this
engine does not use (info `unused_upstream_key`), so a class-less model is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine_live.model.checking import Problems

CLASS_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ClassSpec:
    """Declared classes, in order, and each source's rate per class (same order)."""

    ids: tuple[str, ...]
    sources: dict[str, tuple[float, ...]]  # series id -> rate per class (0 for classes without an entry)
    mix: tuple[float, ...]  # the model's class shares: all arrivals' rates summed per class, normalised

    def source_shares(self, series_id: str) -> tuple[float, ...]:
        """The shares a source is split into (its rates normalised; the model mix when they sum to 0)."""
        rates = self.sources[series_id]
        total = sum(rates)
        return tuple(rate / total for rate in rates) if total > 0 else self.mix


def _rate(problems: Problems, where: str, entry: dict[str, Any]) -> float:
    pattern = entry.get("pattern") or {}
    if not isinstance(pattern, dict):
        problems.error(where, "pattern: must be a mapping")
        return 0.0
    rate = pattern.get("ratePerBin", pattern.get("rate", 1.0))
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate >= 0:
        problems.error(where, f"pattern.ratePerBin: must be a number >= 0, got {rate!r}")
        return 0.0
    return float(rate)


def _ids(problems: Problems, raw: Any) -> list[str]:
    if not isinstance(raw, list):
        problems.error("classes", "must be a list of {id, displayName?, description?}")
        return []
    ids: list[str] = []
    for i, entry in enumerate(raw):
        where = f"classes[{i}]"
        if not isinstance(entry, dict):
            problems.error(where, "must be a mapping with an id")
            continue
        problems.check_keys(where, entry, {"id", "displayName", "description"})
        class_id = entry.get("id")
        if not isinstance(class_id, str) or not CLASS_ID.match(class_id):
            problems.error(where, f"id: must match ^[A-Za-z0-9_-]+$, got {class_id!r}")
        elif class_id in ids:
            problems.error(where, f"id: duplicate class '{class_id}'")
        else:
            ids.append(class_id)
    return ids


def _arrivals(data: dict[str, Any]) -> Any:
    traffic = data.get("traffic")
    return traffic.get("arrivals") if isinstance(traffic, dict) else None


def uses_classes(data: dict[str, Any]) -> bool:
    """Whether a model declares classes and arrivals (else both keys are upstream keys left unused)."""
    return bool(data.get("classes")) and bool(_arrivals(data))


def check_classes(problems: Problems, data: dict[str, Any]) -> ClassSpec | None:
    """The model's classes, or None for a class-less model (no `classes` or no `traffic.arrivals`)."""
    if not uses_classes(data):
        return None
    ids = _ids(problems, data["classes"])
    arrivals = _arrivals(data)
    if not isinstance(arrivals, list):
        problems.error("traffic", "arrivals: must be a list")
        return None
    sources: dict[str, list[float]] = {}
    for i, entry in enumerate(arrivals):
        where = f"traffic.arrivals[{i}]"
        if not isinstance(entry, dict):
            problems.error(where, "must be a mapping {nodeId, classId, pattern}")
            continue
        node_id, class_id = entry.get("nodeId"), entry.get("classId")
        if class_id not in ids:
            problems.error(where, f"classId: {class_id!r} is not a declared class")
            continue
        if not isinstance(node_id, str) or not node_id:
            problems.error(where, "nodeId: required")
            continue
        rates = sources.setdefault(node_id, [0.0] * len(ids))
        rates[ids.index(class_id)] += _rate(problems, where, entry)
    if problems.errors:
        return None
    totals = [sum(rates[c] for rates in sources.values()) for c in range(len(ids))]
    whole = sum(totals)
    mix = tuple(total / whole for total in totals) if whole > 0 else tuple(1.0 / len(ids) for _ in ids)
    return ClassSpec(tuple(ids), {node: tuple(rates) for node, rates in sources.items()}, mix)
