"""Upstream FlowTime forms read with upstream's meaning (SPEC §13): each is rewritten to the canonical form
the checks of `node_specs`, `topology_specs` and `document` know, with a warning where the form is legacy.

- nodes: `kind: backlog` is a serviceWithBuffer; `expression:` is `expr:` and `dependencies:` is ignored
  (info `legacy_field` each); `source: ""` or `null` means no source; a non-empty `source` wins over
  `values` or a pmf (info `source_overrides_values`); `file://path` is `file:path`.
- grid: legacy `binMinutes` is `binSize` minutes (info `legacy_field`); a template `window{start,
  timezone}` beside `grid` feeds `grid.start` (only UTC); `window` alone is the grid (engine fixtures).

The raw document is never changed (spec.yaml keeps what the user wrote); checks run on these copies.
"""

from __future__ import annotations

from typing import Any

from engine_live.model.checking import NODE_KIND_ALIASES, Problems

UTC_NAMES = frozenset({"utc", "etc/utc", "z", "gmt", "etc/gmt", "+00:00"})
WINDOW_KEYS = {"start", "timezone"}


def canonical_source(value: Any) -> Any:
    """`file://path` → `file:path`; anything else as given."""
    if isinstance(value, str) and value.startswith("file://"):
        return "file:" + value[len("file://") :]
    return value


def _expression(problems: Problems, where: str, node_id: str, out: dict[str, Any]) -> None:
    if "expression" not in out:
        return
    if "expr" in out:
        problems.error(where, "give expr: or expression:, not both (expression: is upstream's legacy spelling)")
    else:
        out["expr"] = out["expression"]
        problems.note("legacy_field", where, "expression: is read as expr: (write expr:)", node_id=node_id)
    del out["expression"]


def _source(problems: Problems, where: str, node_id: str, out: dict[str, Any]) -> None:
    if "source" not in out:
        return
    source = out["source"]
    if source is None or source == "":
        del out["source"]  # an empty template parameter: no source, the node's own values count
        return
    out["source"] = canonical_source(source)
    replaced = [key for key in ("values", "pmf", "profile") if key in out]
    if replaced:
        for key in replaced:
            del out[key]
        out["kind"] = "const"
        problems.note(
            "source_overrides_values",
            where,
            f"source {source!r} replaces the node's {', '.join(replaced)}",
            node_id=node_id,
        )


def canonical_node(problems: Problems, raw: dict[str, Any], where: str, node_id: str) -> dict[str, Any]:
    """A copy of one `nodes` entry in canonical form (see the module docstring)."""
    out = dict(raw)
    kind = out.get("kind")
    if isinstance(kind, str) and kind in NODE_KIND_ALIASES:
        out["kind"] = NODE_KIND_ALIASES[kind]
    if "dependencies" in out:
        del out["dependencies"]
        problems.note("legacy_field", where, "dependencies: is ignored (references come from expr)", node_id=node_id)
    if out.get("kind") == "expr":
        _expression(problems, where, node_id, out)
    if out.get("kind") in ("const", "pmf"):
        _source(problems, where, node_id, out)
    return out


def _bin_minutes(problems: Problems, grid: dict[str, Any]) -> None:
    if "binMinutes" not in grid:
        return
    minutes = grid.pop("binMinutes")
    if "binSize" in grid or "binUnit" in grid:
        problems.error("grid", "give binMinutes or binSize and binUnit, not both")
        return
    grid["binSize"], grid["binUnit"] = minutes, "minutes"
    problems.note("legacy_field", "grid", "binMinutes is read as binSize in minutes (write binSize and binUnit)")


def _window(problems: Problems, grid: dict[str, Any], window: Any) -> None:
    if not isinstance(window, dict):
        problems.error("window", "must be a mapping {start, timezone}")
        return
    problems.check_keys("window", window, WINDOW_KEYS)
    zone = window.get("timezone")
    if zone is not None and (not isinstance(zone, str) or zone.lower() not in UTC_NAMES):
        problems.error("window", f"timezone: only UTC is supported, got {zone!r} — write the start in UTC")
    start = window.get("start")
    if start is not None and "start" not in grid and "startTimeUtc" not in grid:
        grid["start"] = start


def canonical_grid(problems: Problems, data: dict[str, Any]) -> Any:
    """The grid mapping in canonical form, or what was given when it is not a mapping."""
    raw = data.get("grid", data.get("window"))
    if not isinstance(raw, dict):
        return raw
    grid = dict(raw)
    _bin_minutes(problems, grid)
    if "grid" in data and "window" in data:
        _window(problems, grid, data["window"])
    return grid


__all__ = ["canonical_grid", "canonical_node", "canonical_source"]
